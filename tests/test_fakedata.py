"""paddlefix.fakedata: capture real batches, replay them bit-exactly to paddle, numpy and torch."""

from __future__ import annotations

import json
import os
import pickle
import struct
import warnings
import zipfile
from collections import OrderedDict, UserDict

import numpy as np
import paddle
import pytest
import torch

from paddlefix import PaddlefixWarning, fakedata

from .conftest import run_python

TARGETS = ("numpy", "paddle", "torch")
NATIVE = [
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128",
]
PADDLE_DTYPES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64",
                 "complex64", "complex128", "bfloat16"]
TORCH_DTYPES = PADDLE_DTYPES + ["uint16", "uint32", "uint64"]


# ----------------------------------------------------------------------------- helpers


def random_bits(dtype: str, shape=(3, 4), seed: int = 0) -> np.ndarray:
    """An array whose bytes are random (NaN payloads, -0.0, subnormals included for floats)."""
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(bool)
    dt = np.dtype(dtype)
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * dt.itemsize, dtype=np.uint8)
    return raw.view(dt).reshape(shape)


def bf16_bits(shape=(3, 4), seed: int = 1) -> np.ndarray:
    """bfloat16 bit patterns: finite values, NaN, +-inf, -0.0 and a subnormal."""
    bits = random_bits("uint16", shape, seed)
    flat = bits.reshape(-1)
    flat[:5] = [0x7FC0, 0x7F80, 0xFF80, 0x8000, 0x0001]
    return bits


def as_bits(x) -> tuple[str, list, bytes]:
    """(logical dtype, shape, raw bytes) of a numpy array or paddle / torch tensor."""
    if isinstance(x, torch.Tensor):
        name = str(x.dtype).split(".")[-1]
        if x.dtype == torch.bfloat16:
            x = x.view(torch.int16)
        arr = x.numpy()
    elif isinstance(x, paddle.Tensor):
        name = str(x.dtype).split(".")[-1]
        arr = x.numpy()  # bfloat16 -> uint16 bits
    else:
        arr = np.asarray(x)
        name = arr.dtype.name
    return name, list(arr.shape), np.ascontiguousarray(arr).tobytes()


def assert_same(a, b, path="batch") -> None:
    """Same nesting, containers, keys (order too), python values, and array bits."""
    if isinstance(a, (np.ndarray, np.generic, torch.Tensor, paddle.Tensor)):
        assert as_bits(a) == as_bits(b), path
        return
    assert type(a) is type(b), f"{path}: {type(a)} vs {type(b)}"
    if isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b), path
    else:
        assert a == b, path


def target_type(to):
    return {"numpy": np.ndarray, "paddle": paddle.Tensor, "torch": torch.Tensor}[to]


@pytest.fixture
def npz(tmp_path):
    return str(tmp_path / "batches.npz")


# ----------------------------------------------------------------------------- import


def test_import_loads_neither_framework(tmp_path):
    path = str(tmp_path / "np.npz")
    proc = run_python(
        "import sys, numpy, paddlefix.fakedata as f\n"
        f"f.capture([{{'x': numpy.arange(3)}}], 1, {path!r})\n"
        f"f.load({path!r}); f.describe({path!r})\n"
        "print(sorted(m for m in ('paddle', 'torch') if m in sys.modules))"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", NATIVE)
def test_numpy_dtypes_roundtrip_bit_exact(npz, dtype):
    arr = random_bits(dtype)
    fakedata.capture([{"x": arr, "scalar": arr.reshape(-1)[0]}], 1, npz)
    for to in TARGETS:
        if to == "paddle" and dtype in ("uint16", "uint32", "uint64"):
            with pytest.raises(TypeError, match=rf"paddle has no {dtype}.*batch\[0\]\['x'\]"):
                fakedata.load(npz, to=to)
            continue
        out = fakedata.load(npz, to=to)[0]
        assert isinstance(out["x"], target_type(to))
        assert as_bits(out["x"]) == (dtype, [3, 4], arr.tobytes())
        assert as_bits(out["scalar"]) == (dtype, [], arr.reshape(-1)[:1].tobytes())
        if to == "numpy":
            assert isinstance(out["scalar"], np.generic) and out["scalar"].dtype == arr.dtype


@pytest.mark.parametrize("dtype", PADDLE_DTYPES)
def test_paddle_tensor_dtypes_roundtrip(npz, dtype):
    if dtype == "bfloat16":
        src = paddle.to_tensor(bf16_bits())
        assert str(src.dtype) == "paddle.bfloat16"
    else:
        src = paddle.to_tensor(random_bits(dtype, seed=3))
    fakedata.capture([[src]], 1, npz)
    for to in TARGETS:
        out = fakedata.load(npz, to=to)[0][0]
        assert isinstance(out, target_type(to))
        expected_name = "uint16" if (to == "numpy" and dtype == "bfloat16") else dtype
        assert as_bits(out) == (expected_name, [3, 4], as_bits(src)[2])


@pytest.mark.parametrize("dtype", TORCH_DTYPES)
def test_torch_tensor_dtypes_roundtrip(npz, dtype):
    if dtype == "bfloat16":
        src = torch.from_numpy(bf16_bits().view(np.int16)).view(torch.bfloat16)
    else:
        src = torch.from_numpy(random_bits(dtype, seed=4))
    src = src.t()  # non-contiguous
    fakedata.capture([(src,)], 1, npz)
    for to in TARGETS:
        if to == "paddle" and dtype.startswith("uint") and dtype != "uint8":
            with pytest.raises(TypeError, match="to='numpy'"):
                fakedata.load(npz, to=to)
            continue
        out = fakedata.load(npz, to=to)[0][0]
        assert isinstance(out, target_type(to))
        expected_name = "uint16" if (to == "numpy" and dtype == "bfloat16") else dtype
        assert as_bits(out) == (expected_name, [4, 3], as_bits(src)[2])


def test_bfloat16_values_across_frameworks(npz):
    """bf16 from paddle comes back as the same bf16 numbers in torch, and vice versa."""
    values = [1.5, -2.25, 1.5 * 2.0**127, 2.0**-133, float("inf"), -0.0]  # exact in bf16
    fakedata.capture(
        [{"p": paddle.to_tensor(values, dtype="bfloat16"), "t": torch.tensor(values, dtype=torch.bfloat16)}], 1, npz
    )
    t = fakedata.load(npz, to="torch")[0]
    p = fakedata.load(npz, to="paddle")[0]
    n = fakedata.load(npz, to="numpy")[0]
    assert t["p"].dtype == torch.bfloat16 and torch.equal(t["p"], t["t"])
    assert str(p["t"].dtype) == "paddle.bfloat16"
    assert p["t"].astype("float32").numpy().tolist() == t["t"].float().tolist()
    assert n["p"].dtype == np.uint16
    assert (n["p"].astype(np.uint32) << 16).view(np.float32).tolist() == t["p"].float().tolist()
    assert [d["dtype"] for _, d in fakedata.describe(npz)["batches"][0]["items"]] == ["bfloat16", "bfloat16"]


def test_ml_dtypes_bfloat16_array_is_captured_as_bfloat16(npz):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    arr = np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16)
    fakedata.capture([arr], 1, npz)
    assert fakedata.load(npz, to="torch")[0].tolist() == [1.5, -2.0]


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_unsupported_dtypes_name_the_key_path(npz):
    for bad, what in [
        (np.array([object()], dtype=object), "object"),
        (np.array(["2020-01-01"], dtype="datetime64[D]"), "datetime64"),
        (np.zeros(2, dtype=[("a", "i4")]), "unsupported numpy dtype"),
        (torch.zeros(2, dtype=torch.complex32), "complex32"),
        (torch.zeros(2, 2).to_sparse(), "layout"),
    ]:
        with pytest.raises(TypeError, match=rf"{what}.*batch\[0\]\['k'\]|batch\[0\]\['k'\].*{what}"):
            fakedata.capture([{"k": bad}], 1, npz)
    assert not os.path.exists(npz)


# ----------------------------------------------------------------------------- structures


def rich_batch():
    return {
        "zeta": np.arange(6, dtype=np.int64).reshape(2, 3),  # keys deliberately not sorted
        "alpha": [np.zeros((0, 3), np.float32), (np.float16(1.5), np.array(7, np.int32))],
        7: {"nested": ({"deep": [[np.asfortranarray(np.arange(6.0).reshape(2, 3))]]},)},
        None: [],
        True: (),
        2.5: {},
        "py": [0, -(2**70), 1.0 / 3, -0.0, float("nan"), float("inf"), float("-inf"), True, False, None],
        "text": ["plain", "ünïcödé ✓", "", "\ud800 lone surrogate", 'quote " and \\ backslash'],
        "big_endian": np.arange(4, dtype=">i4"),
        "strided": np.arange(20, dtype=np.float64)[::3],
        "strings": np.array(["ab", "cde"]),
        "bytes": np.array([b"x", b"yz"]),
    }


def test_nested_structures_keys_and_python_values(npz):
    batches = [rich_batch(), ("tuple", "batch", 1), [np.array(True)], 42, "just a string", None]
    fakedata.capture(batches, len(batches), npz)
    out = fakedata.load(npz, to="numpy")
    expected = [rich_batch(), ("tuple", "batch", 1), [np.array(True)], 42, "just a string", None]
    expected[0]["big_endian"] = expected[0]["big_endian"].astype("<i4")  # stored native, same values
    assert_same(expected, out)
    assert list(out[0]) == ["zeta", "alpha", 7, None, True, 2.5, "py", "text", "big_endian", "strided",
                            "strings", "bytes"]
    assert out[0]["big_endian"].tolist() == [0, 1, 2, 3]
    assert isinstance(out[0]["alpha"][1], tuple) and isinstance(out[0][7]["nested"], tuple)


@pytest.mark.parametrize("to", ["paddle", "torch"])
def test_nested_structures_to_frameworks(npz, to):
    fakedata.capture([rich_batch()], 1, npz)
    out = fakedata.load(npz, to=to)[0]
    ref = fakedata.load(npz, to="numpy")[0]
    T = target_type(to)
    assert isinstance(out["zeta"], T) and isinstance(out[7]["nested"][0]["deep"][0][0], T)
    assert isinstance(out["alpha"][1][0], T) and list(out["alpha"][1][0].shape) == []  # numpy scalar -> 0-d
    assert list(out["alpha"][0].shape) == [0, 3]
    assert isinstance(out["strings"], np.ndarray) and out["strings"].tolist() == ["ab", "cde"]
    assert out["text"] == ref["text"] and out[None] == [] and out[True] == () and out[2.5] == {}
    assert as_bits(out["strided"]) == as_bits(ref["strided"])


def test_mapping_and_tuple_subclasses_come_back_plain(npz):
    from collections import namedtuple

    Pair = namedtuple("Pair", "a b")
    fakedata.capture([OrderedDict(b=1, a=2), UserDict({"x": np.ones(1)}), Pair(1, 2)], 3, npz)
    od, ud, pair = fakedata.load(npz)
    assert type(od) is dict and list(od.items()) == [("b", 1), ("a", 2)]
    assert type(ud) is dict and ud["x"].tolist() == [1.0]
    assert type(pair) is tuple and pair == (1, 2)


def test_compressed_file_roundtrips(npz):
    arr = np.zeros((64, 64), np.int64)
    fakedata.capture([arr], 1, npz, compress=True)
    with zipfile.ZipFile(npz) as z:
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in z.infolist())
    assert np.array_equal(fakedata.load(npz)[0], arr)


# ----------------------------------------------------------------------------- sources


class _PaddleSet(paddle.io.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        rng = np.random.default_rng(i)
        return {
            "input_ids": rng.integers(0, 100, 8).astype(np.int64),
            "attention_mask": (np.arange(8) < 4 + i % 4).astype(np.int64),
            "label": i % 3,
            "text": f"sample {i}",
        }


@pytest.mark.parametrize("num_workers", [0, 2])
def test_capture_from_paddle_dataloader(npz, num_workers):
    loader = paddle.io.DataLoader(_PaddleSet(), batch_size=4, shuffle=False, num_workers=num_workers)
    assert fakedata.capture(loader, 2, npz) == 2
    expected = [b for _, b in zip(range(2), loader)]
    for to in TARGETS:
        got = fakedata.load(npz, to=to)
        if to == "paddle":
            assert_same(expected, got)
        for e, g in zip(expected, got):
            assert list(g) == ["input_ids", "attention_mask", "label", "text"]
            assert g["text"] == e["text"]
            for k in ("input_ids", "attention_mask", "label"):
                assert isinstance(g[k], target_type(to))
                assert as_bits(g[k]) == as_bits(e[k])
    info = fakedata.describe(npz)
    assert info["source"].startswith("paddle.") and info["source"].endswith(".DataLoader")
    assert info["n_batches"] == 2


def test_capture_from_torch_dataloader(npz):
    class TorchSet(torch.utils.data.Dataset):
        def __len__(self):
            return 9

        def __getitem__(self, i):
            return {"x": torch.full((3,), float(i)), "y": (torch.tensor(i), f"t{i}")}

    loader = torch.utils.data.DataLoader(TorchSet(), batch_size=2)
    fakedata.capture(loader, 3, npz)
    expected = [b for _, b in zip(range(3), loader)]
    got = fakedata.load(npz, to="torch")
    assert len(got) == 3
    for e, g in zip(expected, got):
        assert torch.equal(g["x"], e["x"]) and g["x"].dtype == torch.float32
        assert torch.equal(g["y"][0], e["y"][0]) and g["y"][0].dtype == torch.int64
        assert g["y"][1] == e["y"][1] and type(g["y"]) is list  # default_collate returns a list


def test_capture_from_generator_draws_only_n(npz):
    def gen():
        for i in range(100):
            yield np.full(2, i, np.int32), i

    g = gen()
    assert fakedata.capture(g, 3, npz) == 3
    assert next(g)[1] == 3  # nothing beyond the third batch was consumed
    out = fakedata.load(npz)
    assert [b[1] for b in out] == [0, 1, 2] and out[2][0].tolist() == [2, 2]


def test_reused_buffers_are_copied_at_capture(npz):
    """Generators and loaders may refill one buffer per batch; each batch keeps its values."""
    buf = np.zeros(3, np.int64)
    tbuf = torch.zeros(3)

    def gen():
        for i in range(3):
            buf[:] = i
            tbuf[:] = i
            yield {"np": buf, "torch": tbuf}

    fakedata.capture(gen(), 3, npz)
    got = fakedata.load(npz)
    assert [b["np"].tolist() for b in got] == [[0, 0, 0], [1, 1, 1], [2, 2, 2]]
    assert [b["torch"].tolist() for b in got] == [[0, 0, 0], [1, 1, 1], [2, 2, 2]]


# ----------------------------------------------------------------------------- no pickle


def test_files_are_plain_npz_without_pickle(npz):
    fakedata.capture([rich_batch(), {"p": paddle.ones([2]), "t": torch.ones(2, dtype=torch.bfloat16)}], 2, npz)
    with np.load(npz, allow_pickle=False) as z:
        members = {name: z[name] for name in z.files}
    manifest = json.loads(members.pop("__paddlefix_fakedata__").tobytes())
    assert manifest["format"] == "paddlefix.fakedata" and manifest["n_arrays"] == len(members)
    assert all(a.dtype != object for a in members.values())


class _Boom:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_load_refuses_pickled_object_arrays(tmp_path):
    """A file whose array member is a pickled object array: refused, and nothing runs."""
    good = str(tmp_path / "good.npz")
    fakedata.capture([{"x": np.arange(3)}], 1, good)
    with np.load(good, allow_pickle=False) as z:
        manifest = z["__paddlefix_fakedata__"]
    marker = tmp_path / "executed"
    evil = np.empty(3, dtype=object)
    evil[0] = _Boom(str(marker))
    bad = str(tmp_path / "evil.npz")
    with open(bad, "wb") as f:
        np.savez(f, __paddlefix_fakedata__=manifest, a0=evil)
    for call in (lambda: fakedata.load(bad), lambda: fakedata.load(bad, to="torch"), lambda: fakedata.describe(bad)):
        with pytest.raises(ValueError, match=r"evil\.npz.*pickle"):
            call()
    assert not marker.exists()
    assert fakedata.inspect_command(bad) == 1
    assert not marker.exists()


def test_load_refuses_a_plain_pickle_file(tmp_path):
    marker = tmp_path / "executed"
    bad = tmp_path / "batches.pkl"
    bad.write_bytes(pickle.dumps([_Boom(str(marker))]))
    with pytest.raises(ValueError, match=r"batches\.pkl is not a valid paddlefix fakedata file"):
        fakedata.load(str(bad))
    assert not marker.exists()


# ----------------------------------------------------------------------------- bad input


def test_unsupported_object_names_its_key_path(npz):
    batches = [{"input_ids": [1, 2]}] * 3 + [{"input_ids": [np.arange(2), object()]}]
    with pytest.raises(TypeError, match=r"^unsupported object at batch\[3\]\['input_ids'\]\[1\]: object"):
        fakedata.capture(batches, 4, npz)
    assert not os.path.exists(npz) and os.listdir(os.path.dirname(npz)) == []


@pytest.mark.parametrize(
    "batch, where",
    [
        ({("tuple", "key"): 1}, r"dict key \('tuple', 'key'\).*batch\[0\]"),
        ({float("nan"): 1}, r"dict key nan"),
        ({"b": b"bytes"}, r"batch\[0\]\['b'\]: bytes"),
        ({"s": {1, 2}}, r"batch\[0\]\['s'\]: set"),
        ({"p": paddle.nn.Linear(2, 2)}, r"batch\[0\]\['p'\]: paddle\.nn.*Linear"),
    ],
)
def test_unsupported_values(npz, batch, where):
    with pytest.raises(TypeError, match=where):
        fakedata.capture([batch], 1, npz)


def test_reference_cycle_is_refused(npz):
    loop: list = [1]
    loop.append(loop)
    with pytest.raises(TypeError, match=r"batch\[0\]\[1\] contains itself"):
        fakedata.capture([loop], 1, npz)


@pytest.mark.parametrize("n", [0, -1, 1.5, True, "2", None])
def test_bad_n_batches(npz, n):
    with pytest.raises(ValueError, match=r"n_batches must be an int >= 1, got"):
        fakedata.capture([np.ones(1)], n, npz)


def test_fewer_batches_warns_and_writes_what_was_captured(npz):
    with pytest.warns(PaddlefixWarning, match=r"ended after 2 of the 5 batches asked; writing those 2 to .*batches\.npz"):
        assert fakedata.capture(iter([np.ones(1), np.zeros(1)]), 5, npz) == 2
    assert [b.tolist() for b in fakedata.load(npz)] == [[1.0], [0.0]]
    info = fakedata.describe(npz)
    assert (info["n_batches"], info["requested"]) == (2, 5)


def test_exact_count_does_not_warn(npz):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fakedata.capture([1, 2], 2, npz)


def test_empty_iterable_is_an_error(npz):
    with pytest.raises(ValueError, match="yielded no batch"):
        fakedata.capture(iter([]), 2, npz)
    assert not os.path.exists(npz)


def test_file_mode_follows_umask(tmp_path):
    """The temporary file must not leave the result private (mkstemp's 0600)."""
    ref = tmp_path / "ref"
    ref.write_bytes(b"")
    fakedata.capture([1], 1, str(tmp_path / "b.npz"))
    assert os.stat(tmp_path / "b.npz").st_mode & 0o777 == os.stat(ref).st_mode & 0o777


def test_existing_path_refused_unless_overwrite(npz):
    fakedata.capture([np.arange(2)], 1, npz)
    before = open(npz, "rb").read()
    consumed = []

    def gen():
        consumed.append(True)
        yield np.arange(5)

    with pytest.raises(FileExistsError, match=r"batches\.npz already exists; pass overwrite=True"):
        fakedata.capture(gen(), 1, npz)
    assert consumed == [] and open(npz, "rb").read() == before
    fakedata.capture(gen(), 1, npz, overwrite=True)
    assert fakedata.load(npz)[0].tolist() == [0, 1, 2, 3, 4]
    assert os.listdir(os.path.dirname(npz)) == ["batches.npz"]  # no temp file left


def test_bad_target(npz):
    fakedata.capture([1], 1, npz)
    with pytest.raises(ValueError, match=r"to must be one of 'paddle', 'numpy', 'torch'; got 'jax'"):
        fakedata.load(npz, to="jax")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        fakedata.load(str(tmp_path / "nope.npz"))


def test_truncated_file(npz):
    fakedata.capture([{"x": np.arange(1000)}], 1, npz)
    data = open(npz, "rb").read()
    for cut in (len(data) // 2, len(data) - 10, 10):
        with open(npz, "wb") as f:
            f.write(data[:cut])
        with pytest.raises(ValueError, match=r"batches\.npz is not a valid paddlefix fakedata file"):
            fakedata.load(npz)


def test_corrupted_member_detected(npz):
    fakedata.capture([{"x": np.zeros(1000, np.int64)}], 1, npz)
    data = bytearray(open(npz, "rb").read())
    pos = data.index(b"\x00" * 800) + 400  # inside the array's bytes
    data[pos] = 1
    open(npz, "wb").write(bytes(data))
    with pytest.raises(ValueError, match=r"batches\.npz .*member 'a0' is unreadable"):
        fakedata.load(npz)


def test_foreign_files(tmp_path):
    np.savez(str(tmp_path / "plain.npz"), x=np.arange(3))
    np.save(str(tmp_path / "single.npy"), np.arange(3))
    (tmp_path / "text.npz").write_text("hello")
    (tmp_path / "empty.npz").write_bytes(b"")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("__paddlefix_fakedata__", "not npy")
    for name in ("plain.npz", "single.npy", "text.npz", "empty.npz", "other.zip"):
        with pytest.raises(ValueError, match=rf"{name} is not a valid paddlefix fakedata file"):
            fakedata.load(str(tmp_path / name))
    with pytest.raises(ValueError, match="is a directory"):
        fakedata.load(str(tmp_path))


def _rewrite(path, manifest_edit=None, arrays_edit=None):
    with np.load(path, allow_pickle=False) as z:
        members = {n: z[n] for n in z.files}
    manifest = json.loads(members["__paddlefix_fakedata__"].tobytes())
    if manifest_edit:
        manifest_edit(manifest)
    if arrays_edit:
        arrays_edit(members)
    members["__paddlefix_fakedata__"] = np.frombuffer(json.dumps(manifest).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **members)


@pytest.mark.parametrize(
    "manifest_edit, arrays_edit, message",
    [
        (lambda m: m.update(version=99), None, "newer paddlefix"),
        (lambda m: m.update(format="other"), None, "format is not"),
        (lambda m: m["batches"][0].update(dtype="float64"), None, "dtype int64, manifest says 'float64'"),
        (lambda m: m["batches"][0].update(shape=[4]), None, "shape"),
        (lambda m: m["batches"][0].update(dtype="object"), None, "manifest says 'object'"),
        (lambda m: m["batches"][0].update(t="eval"), None, "unknown type 'eval'"),
        (None, lambda a: a.pop("a0"), "missing"),
        (None, lambda a: a.update(extra=np.ones(1)), "unexpected"),
        (lambda m: m.update(n_batches=5), None, "n_batches"),
    ],
)
def test_tampered_files(npz, manifest_edit, arrays_edit, message):
    fakedata.capture([np.arange(3)], 1, npz)
    _rewrite(npz, manifest_edit, arrays_edit)
    with pytest.raises(ValueError, match=r"batches\.npz is not a valid paddlefix fakedata file: .*" + message):
        fakedata.load(npz)


# ----------------------------------------------------------------------------- inspect


def test_inspect_text_and_json(npz, capsys):
    fakedata.capture(
        [{"input_ids": paddle.to_tensor([[1, 2, 3]]), "mask": torch.ones(1, 3, dtype=torch.bool),
          "pair": (np.float32(0.5), "txt", None)}],
        1,
        npz,
    )
    assert fakedata.inspect_command(npz) == 0
    text = capsys.readouterr().out
    assert "1 batch from list" in text
    assert "['input_ids']: int64 [1, 3]  (paddle)" in text
    assert "['mask']: bool [1, 3]  (torch)" in text
    assert "['pair']: tuple of 3" in text and "[0]: float32 []  (numpy scalar)" in text
    assert "[1]: str 'txt'" in text and "[2]: None" in text
    assert fakedata.inspect_command(npz, as_json=True) == 0
    info = json.loads(capsys.readouterr().out)
    assert info == fakedata.describe(npz)
    assert info["batches"][0]["items"][0] == ["input_ids", {"type": "array", "dtype": "int64", "shape": [1, 3],
                                                             "origin": "paddle"}]


def test_inspect_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    assert fakedata.inspect_command(str(bad)) == 1
    err = capsys.readouterr().err
    assert "bad.npz is not a valid paddlefix fakedata file" in err
    assert fakedata.inspect_command(str(tmp_path / "missing.npz"), as_json=True) == 1
    assert "missing.npz" in capsys.readouterr().err


# ----------------------------------------------------------------------------- alignment example


def test_alignment_example_paddle_loader_to_paddle_and_torch_models(npz):
    """The README example: one captured Paddle batch drives a Paddle and a torch MLP with the
    same weights; outputs and gradients agree (Linear weights are [in, out] in Paddle,
    [out, in] in torch)."""
    loader = paddle.io.DataLoader(_PaddleSet(), batch_size=4, shuffle=False)
    fakedata.capture(loader, 2, npz)

    paddle.seed(0)
    pd_model = paddle.nn.Sequential(
        paddle.nn.Embedding(100, 16), paddle.nn.Linear(16, 32), paddle.nn.GELU(), paddle.nn.Linear(32, 3)
    )
    pt_model = torch.nn.Sequential(
        torch.nn.Embedding(100, 16), torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 3)
    )
    with torch.no_grad():
        for pd_layer, pt_layer in zip(pd_model, pt_model):
            if isinstance(pd_layer, paddle.nn.Embedding):
                pt_layer.weight.copy_(torch.from_numpy(pd_layer.weight.numpy()))
            elif isinstance(pd_layer, paddle.nn.Linear):
                pt_layer.weight.copy_(torch.from_numpy(pd_layer.weight.numpy().T))  # [in,out] -> [out,in]
                pt_layer.bias.copy_(torch.from_numpy(pd_layer.bias.numpy()))

    def pd_forward(b):
        mask = b["attention_mask"].astype("float32").unsqueeze(-1)
        h = pd_model[0](b["input_ids"])
        pooled = (h * mask).sum(axis=1) / mask.sum(axis=1)
        logits = pd_model[3](pd_model[2](pd_model[1](pooled)))
        return logits, paddle.nn.functional.cross_entropy(logits, b["label"])

    def pt_forward(b):
        mask = b["attention_mask"].float().unsqueeze(-1)
        h = pt_model[0](b["input_ids"])
        pooled = (h * mask).sum(dim=1) / mask.sum(dim=1)
        logits = pt_model[3](pt_model[2](pt_model[1](pooled)))
        return logits, torch.nn.functional.cross_entropy(logits, b["label"])

    pd_batches = fakedata.load(npz, to="paddle")
    pt_batches = fakedata.load(npz, to="torch")
    for pb, tb in zip(pd_batches, pt_batches):
        pd_logits, pd_loss = pd_forward(pb)
        pt_logits, pt_loss = pt_forward(tb)
        np.testing.assert_allclose(pd_logits.numpy(), pt_logits.detach().numpy(), rtol=0, atol=1e-6)
        np.testing.assert_allclose(float(pd_loss), pt_loss.item(), rtol=0, atol=1e-6)
        pd_model.clear_gradients()
        pt_model.zero_grad()
        pd_loss.backward()
        pt_loss.backward()
        np.testing.assert_allclose(pd_model[1].weight.grad.numpy(), pt_model[1].weight.grad.numpy().T, atol=1e-6)
        np.testing.assert_allclose(pd_model[0].weight.grad.numpy(), pt_model[0].weight.grad.numpy(), atol=1e-6)
