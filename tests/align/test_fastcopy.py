"""The copy path under ``align.transfer``: fbgemm's vectorised transpose and deferred parallel copies.

The oracle is torch itself: every copy must equal ``dst.copy_(src)`` bit for bit, for each element
size the vectorised kernel handles, for shapes that are not multiples of any vector width, for
padded (sliced) sources, and for the cases it must leave to ``copy_`` (overlap, float64, complex,
a leaf that requires grad with grad enabled).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from typing import Any

import numpy as np  # noqa: F401  (before paddle: FACTS.md)
import pytest

torch = pytest.importorskip("torch")
paddle = pytest.importorskip("paddle")

from paddlefix.align.adapters import _fastcopy as F  # noqa: E402

LINUX_WHEEL = sys.platform.startswith("linux") and os.uname().machine in ("x86_64", "AMD64")


def _source(shape: tuple[int, int], dtype: Any, pad: int = 0) -> Any:
    """A (rows, cols + pad) tensor sliced to (rows, cols), transposed: a (cols, rows) view, stride (1, cols + pad)."""
    rows, cols = shape
    g = torch.Generator().manual_seed(rows * 7919 + cols)
    if dtype == torch.bool:
        base = torch.rand(rows, cols + pad, generator=g) > 0.5
    elif dtype.is_floating_point:
        base = (torch.randn(rows, cols + pad, generator=g, dtype=torch.float64) * 1e3).to(dtype)
    else:
        base = torch.randint(-100 if dtype != torch.uint8 else 0, 100, (rows, cols + pad), generator=g).to(dtype)
    return base[:, :cols].t()


@pytest.mark.skipif(not LINUX_WHEEL, reason="the PyPI torch wheel for Linux x86-64 exports fbgemm's transpose")
@pytest.mark.parametrize("size", [1, 2, 4])
def test_the_vectorised_kernel_is_found_and_checked(size: int) -> None:
    assert F.fast_transpose_available(size)
    src = _source((300, 200), {1: torch.uint8, 2: torch.float16, 4: torch.float32}[size])
    dst = torch.empty(src.shape, dtype=src.dtype)
    assert F._transpose_plan(torch, dst, src) is not None


def test_a_kernel_that_does_not_transpose_is_refused() -> None:
    calls = []

    def wrong(m: int, n: int, src: int, ld: int, dst: int, ld_dst: int) -> None:
        calls.append((m, n))  # writes nothing

    assert F._check(torch, 4, wrong) is False
    assert calls == [(37, 53)]


DTYPES = [torch.float32, torch.int32, torch.float16, torch.bfloat16, torch.int16, torch.uint8, torch.int8,
          torch.bool, torch.float64, torch.int64]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,pad", [((768, 3072), 0), ((300, 77), 0), ((129, 1031), 5), ((17, 9), 0), ((513, 257), 3)])
def test_copy_equals_torch_bit_for_bit(dtype: Any, shape: tuple[int, int], pad: int) -> None:
    src = _source(shape, dtype, pad)
    want = torch.empty(src.shape, dtype=dtype)
    want.copy_(src)
    got = torch.full(src.shape, 3, dtype=dtype)
    with torch.no_grad():
        F.copy_(got, src)
    assert torch.equal(got.view(torch.uint8) if dtype != torch.bool else got, want.view(torch.uint8) if dtype != torch.bool else want)


def test_nan_payloads_and_signed_zeros_are_moved_unchanged() -> None:
    bits = torch.randint(-(2**31), 2**31 - 1, (640, 384), dtype=torch.int64).to(torch.int32)
    bits[::7, ::5] = 0x7FA00001  # a signalling NaN payload
    bits[1::9, ::3] = -(2**31)  # -0.0
    src = bits.view(torch.float32).t()
    got = torch.empty(src.shape, dtype=torch.float32)
    F.copy_(got, src)
    assert torch.equal(got.view(torch.int32), src.contiguous().view(torch.int32))


def test_cases_left_to_copy_are_still_right() -> None:
    # overlapping source and destination (a square matrix transposed onto itself): not vectorised
    a = torch.arange(128 * 128, dtype=torch.float32).view(128, 128)
    assert F._transpose_plan(torch, a, a.t()) is None
    # complex, and a leaf requiring grad with grad enabled: copy_'s own behaviour (here: its error)
    c = torch.randn(100, 80, dtype=torch.complex64).t()
    got = torch.empty(c.shape, dtype=c.dtype)
    F.copy_(got, c)
    assert torch.equal(got, c)
    leaf = torch.zeros(200, 300, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        F.copy_(leaf, torch.randn(300, 200).t())
    src = torch.randn(300, 200)
    with torch.no_grad():  # under no_grad the same leaf is written, as copy_ would
        F.copy_(leaf, src.t())
    assert torch.equal(leaf.detach(), src.t()) and leaf.requires_grad


def test_the_version_counter_moves_as_with_copy_() -> None:
    dst = torch.zeros(300, 200)
    before = dst._version
    with torch.no_grad():
        F.copy_(dst, torch.randn(200, 300).t())
    assert dst._version > before


def test_deferred_copies_land_when_the_block_ends_and_keep_their_order() -> None:
    a = _source((400, 300), torch.float32)  # (300, 400) view
    b = torch.zeros(300, 400)
    c = torch.zeros(400, 300)
    with torch.no_grad(), F.deferred():
        F.copy_later(b, a, temporary=False)
        F.copy_later(c, b.t(), temporary=False)  # reads what the first copy writes: must run after it
    assert torch.equal(b, a.contiguous())
    assert torch.equal(c, a.t().contiguous())


def test_deferred_copies_run_over_threads_and_equal_copy_() -> None:
    pairs = [(torch.empty(s[1], s[0]), _source(s, torch.float32)) for s in [(768, 768), (3072, 768), (768, 3072)] * 3]
    plain = [(torch.empty(5000, 7), torch.randn(5000, 7)) for _ in range(3)]
    with torch.no_grad(), F.deferred():
        for dst, src in pairs + plain:
            F.copy_later(dst, src, temporary=False)
    for dst, src in pairs + plain:
        assert torch.equal(dst, src)


def test_temporaries_are_copied_before_they_pile_up(monkeypatch: pytest.MonkeyPatch) -> None:
    if F._workers(torch) < 2:
        pytest.skip("one thread: copies are immediate")
    monkeypatch.setattr(F, "_PENDING_BYTES", 1 << 20)
    first, second = torch.zeros(600, 500), torch.zeros(600, 500)  # 1.2 MB each
    with torch.no_grad(), F.deferred():
        F.copy_later(first, torch.ones(500, 600).t(), temporary=True)
        assert torch.equal(first, torch.ones(600, 500))  # over the limit: already copied
        F.copy_later(second, torch.ones(500, 600).t(), temporary=False)
        assert not second.any()  # a view of kept memory: waits for the end of the block
    assert torch.equal(second, torch.ones(600, 500))


def test_a_failing_copy_is_raised_after_the_others_finish() -> None:
    ok = torch.zeros(300, 200)
    with pytest.raises(RuntimeError):
        with torch.no_grad(), F.deferred():
            F.copy_later(torch.zeros(3, 4), torch.zeros(5, 6), temporary=False)  # copy_ cannot broadcast
            F.copy_later(ok, torch.ones(200, 300).t(), temporary=False)
    assert torch.equal(ok, torch.ones(300, 200))


def test_an_error_in_the_block_still_lands_what_was_collected() -> None:
    dst = torch.zeros(300, 200)
    with pytest.raises(KeyError):
        with torch.no_grad(), F.deferred():
            F.copy_later(dst, torch.ones(200, 300).t(), temporary=False)
            raise KeyError("boom")
    assert torch.equal(dst, torch.ones(300, 200))


def _child(q: Any) -> None:
    # small tensors: torch's own OpenMP pool does not survive fork, its parallel ops would hang
    dst = torch.zeros(120, 90)
    with torch.no_grad(), F.deferred():
        F.copy_later(dst, torch.ones(90, 120).t(), temporary=False)
        F.copy_later(torch.zeros(120, 90), torch.ones(90, 120).t(), temporary=False)
    q.put(bool(torch.equal(dst, torch.ones(120, 90))))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_gets_its_own_threads() -> None:
    if F._workers(torch) < 2:
        pytest.skip("one thread: no pool")
    dst = torch.zeros(120, 90)
    with torch.no_grad(), F.deferred():  # the parent's pool exists now
        F.copy_later(dst, torch.ones(90, 120).t(), temporary=False)
        F.copy_later(torch.zeros(120, 90), torch.ones(90, 120).t(), temporary=False)
    assert F._pool is not None and F._pool[0] == os.getpid()
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q,))
    p.start()
    p.join(60)
    if p.exitcode is None:
        p.kill()
    assert p.exitcode == 0, "the child hung or died"
    assert q.get(timeout=5) is True


def test_transfer_of_wide_layers_is_bit_exact_both_ways() -> None:
    """Layers big enough for the vectorised, threaded path (the tiny test models are not)."""
    from paddlefix import align

    torch.manual_seed(0)
    tm = torch.nn.Sequential(torch.nn.Linear(96, 320), torch.nn.GELU(), torch.nn.Linear(320, 96),
                             torch.nn.Embedding(3000, 96)).to(torch.float32)
    pm = paddle.nn.Sequential(paddle.nn.Linear(96, 320), paddle.nn.GELU(), paddle.nn.Linear(320, 96),
                              paddle.nn.Embedding(3000, 96))
    align.transfer(tm, pm)
    for (tn, tp), (pn, pp) in zip(tm.state_dict().items(), pm.state_dict().items()):
        want = tp.numpy().T if tp.dim() == 2 and "3" not in tn else tp.numpy()
        assert np.array_equal(pp.numpy().view(np.uint32), np.ascontiguousarray(want).view(np.uint32)), (tn, pn)
    back = torch.nn.Sequential(torch.nn.Linear(96, 320), torch.nn.GELU(), torch.nn.Linear(320, 96),
                               torch.nn.Embedding(3000, 96))
    align.transfer(pm, back)
    for (n, a), b in zip(tm.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a.view(torch.int32), b.view(torch.int32)), n


# -- NumPy arrays written into raw memory (a Paddle tensor's) -------------------------------------

NP_DTYPES = [np.float32, np.int32, np.float16, np.int16, np.uint8, np.int8, np.bool_, np.float64, np.int64]


def _np_source(shape: tuple[int, int], dtype: Any, pad: int = 0) -> np.ndarray:
    """A (rows, cols + pad) array sliced to (rows, cols), transposed: a (cols, rows) view."""
    rows, cols = shape
    rng = np.random.default_rng(rows * 7919 + cols)
    base = rng.integers(0, 2**8 if dtype in (np.uint8, np.bool_) else 2**15, (rows, cols + pad))
    return base.astype(dtype)[:, :cols].T


@pytest.mark.parametrize("dtype", NP_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "padded"])
def test_arrays_written_into_raw_memory_equal_their_source(dtype: Any, layout: str) -> None:
    src = _np_source((300, 77), dtype, pad=5 if layout == "padded" else 0)
    if layout == "contiguous":
        src = np.ascontiguousarray(src)
    out = np.full(src.shape, 3, dtype=dtype)
    handled = F.copy_array_later(out.ctypes.data, src)
    transposes = np.dtype(dtype).itemsize in (1, 2, 4) and F.fast_transpose_available(np.dtype(dtype).itemsize)
    assert handled is (layout == "contiguous" or transposes)
    if handled:
        assert np.array_equal(out.view(np.uint8), np.ascontiguousarray(src).view(np.uint8))
    else:
        assert (out == 3).all()  # nothing written: the caller takes another path


def test_layouts_and_memory_it_does_not_handle_are_left_to_the_caller() -> None:
    a = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    before = a.copy()
    assert F.copy_array_later(a.ctypes.data, a.T) is False  # the destination is the source's memory
    assert F.copy_array_later(a.ctypes.data, a[::-1]) is False  # negative strides
    cube = np.ones((4, 8, 16), np.float32).transpose(2, 0, 1)
    assert F.copy_array_later(np.empty(cube.shape, np.float32).ctypes.data, cube) is False  # a 3-D permutation
    assert F.copy_array_later(a.ctypes.data, np.empty((0, 3), np.float32)) is False  # nothing to copy
    c = np.ones((30, 20), np.complex64)
    assert F.copy_array_later(np.empty_like(c).ctypes.data, c) is False
    assert np.array_equal(a, before)


def test_raw_copies_wait_for_the_block_keep_their_source_alive_and_their_order() -> None:
    first = np.zeros((300, 200), np.float32)
    second = np.zeros((200, 300), np.float32)
    with F.deferred():
        temp = np.ones((200, 300), np.float32) * 7
        assert F.copy_array_later(first.ctypes.data, temp.T, temporary=True)
        del temp  # the block keeps it until the copy ran
        assert F.copy_array_later(second.ctypes.data, first.T, temporary=False)  # reads what the first writes
        if F._workers(torch) >= 2:
            assert not first.any()  # not yet: at the end of the block
    assert (first == 7).all() and (second == 7).all()


def test_raw_and_tensor_copies_run_together() -> None:
    big = [(np.empty((s[1], s[0]), np.float32), _np_source(s, np.float32)) for s in [(768, 768), (3072, 768)] * 2]
    tensors = [(torch.empty(s[1], s[0]), _source(s, torch.float32)) for s in [(768, 768), (513, 257)]]
    with torch.no_grad(), F.deferred():
        for out, src in big:
            assert F.copy_array_later(out.ctypes.data, src, temporary=False)
        for dst, tsrc in tensors:
            F.copy_later(dst, tsrc, temporary=False)
    for out, src in big:
        assert np.array_equal(out, src)
    for dst, tsrc in tensors:
        assert torch.equal(dst, tsrc)


def test_a_paddle_tensor_is_written_through_its_own_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from paddlefix.align.adapters import _paddle as P

    t = paddle.zeros([3072, 768], dtype="float32")
    view = P.torch_view(t)
    assert view is not None and int(t.data_ptr()) == view.data_ptr()  # the address written is the tensor's
    src = _np_source((768, 3072), np.float32)
    made: list[Any] = []
    real_view = P.torch_view
    monkeypatch.setattr(P, "torch_view", lambda tensor: made.append(tensor) or real_view(tensor))
    with F.deferred():
        assert P._copy_into_view(t, src, "float32", temporary=False)
    assert made == []  # no torch view was needed
    assert np.array_equal(t.numpy(), src)
    cube = np.arange(4 * 8 * 16, dtype=np.float32).reshape(4, 8, 16).transpose(2, 0, 1)
    c = paddle.zeros([16, 4, 8], dtype="float32")
    assert P._copy_into_view(c, cube, "float32")  # a layout only torch copies: through a torch view
    assert len(made) == 1 and np.array_equal(c.numpy(), cube)
