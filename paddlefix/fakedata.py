"""Capture a few real batches once; replay them bit-exactly to Paddle, NumPy or PyTorch.

Aligning a port compares the two frameworks on identical inputs. Inventing those inputs is
hard for NLP (token ids, masks and span labels must agree), so capture real ones::

    from paddlefix import fakedata
    fakedata.capture(train_loader, 2, "batches.npz")        # any iterable of batches
    batches = fakedata.load("batches.npz", to="torch")       # or "paddle", "numpy"

**What a batch may hold**: NumPy arrays and NumPy scalars, Paddle and PyTorch tensors,
``int`` / ``float`` / ``bool`` / ``str`` / ``None``, and dicts (any mapping), lists and
tuples nesting them. Dict keys may be ``str``, ``int``, ``float``, ``bool`` or ``None``.

**What comes back**: the same nesting (dict key order, list vs tuple), and every array or
tensor as the target's type with the same dtype, shape and bits:

- ``to="paddle"``: ``paddle.Tensor`` (``paddle.to_tensor``, default place);
  ``to="torch"``: CPU ``torch.Tensor``; ``to="numpy"``: ``numpy.ndarray`` (a captured NumPy
  scalar comes back as a NumPy scalar for ``numpy``, as a 0-d tensor otherwise).
- ``bfloat16`` (NumPy has no such dtype) is stored as its raw ``uint16`` bits. Paddle and
  torch get ``bfloat16`` tensors. NumPy gets the ``uint16`` bit pattern, the same array
  ``paddle.Tensor.numpy()`` returns for a bfloat16 tensor (``describe`` still says
  ``bfloat16``); view it with ``ml_dtypes.bfloat16`` if you have that package.
- Python scalars, strings and ``None`` come back as themselves for every target. NumPy
  string arrays (``<U``, ``|S``) come back as NumPy arrays for every target.
- Mapping subclasses (``OrderedDict``, ``BatchEncoding``) come back as ``dict``; tuple
  subclasses (named tuples) as ``tuple``: no class is ever rebuilt from a file.
- Paddle has no ``uint16`` / ``uint32`` / ``uint64`` tensors: loading such an array with
  ``to="paddle"`` raises ``TypeError`` (use ``to="numpy"``).

**File format**: an ordinary ``.npz`` (uncompressed unless ``compress=True``) holding one
member per array (``a0``, ``a1``, ...) and a JSON manifest (member ``__paddlefix_fakedata__``,
a ``uint8`` array of UTF-8 bytes) that describes the structure, dtypes and shapes.
``numpy.load(path, allow_pickle=False)`` reads it; :func:`load` reads it exactly so and
checks every array against the manifest, so loading never unpickles or runs anything.

Importing this module imports neither paddle nor torch: a tensor is recognised through the
framework already loaded in ``sys.modules``, and a framework is imported only to build the
tensors ``load(..., to=...)`` asks for.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import warnings
from collections.abc import Mapping
from typing import Any, Iterable

import numpy as np

from ._errors import PaddlefixWarning
from ._files import open_npz, write_atomic

__all__ = ["capture", "load", "describe", "inspect_command", "TARGETS", "FORMAT", "FORMAT_VERSION"]

#: Accepted values of ``load(..., to=...)``.
TARGETS = ("paddle", "numpy", "torch")
#: The ``format`` field of every manifest.
FORMAT = "paddlefix.fakedata"
#: Manifest version written by this module; files of a newer version are refused.
FORMAT_VERSION = 1

_MANIFEST = "__paddlefix_fakedata__"
# Dtypes stored as themselves (NumPy's ``dtype.name``).
_NATIVE = frozenset(
    "bool int8 int16 int32 int64 uint8 uint16 uint32 uint64 "
    "float16 float32 float64 complex64 complex128".split()
)
_PADDLE_NATIVE = _NATIVE - {"uint16", "uint32", "uint64"}
# Dtypes stored as raw bits: logical name -> storage dtype.
_BITS = {"bfloat16": "uint16"}
_SCALARS = (bool, int, float, str, type(None))
_KEY_TYPES = (str, int, float, bool, type(None))


# --------------------------------------------------------------------------- capture


class _Encoder:
    """Turns batches into (JSON-able node tree, list of arrays)."""

    def __init__(self) -> None:
        self.arrays: list[np.ndarray] = []
        self._active: set[int] = set()

    def node(self, obj: Any, path: str) -> dict:
        # Exact types only for Python values (bool before int: bool is an int).
        if type(obj) in _SCALARS:
            if type(obj) is float and not math.isfinite(obj):
                return {"t": "float", "v": repr(obj)}  # 'nan', 'inf', '-inf'
            return {"t": "value", "v": obj}
        if isinstance(obj, np.generic):
            return self._array(np.asarray(obj), path, "numpy_scalar", None)
        if isinstance(obj, np.ndarray):
            return self._array(obj, path, "numpy", None)
        framework = _framework_of(obj)
        if framework == "paddle":
            return self._paddle(obj, path)
        if framework == "torch":
            return self._torch(obj, path)
        if isinstance(obj, (Mapping, list, tuple)):
            if id(obj) in self._active:
                raise TypeError(f"{path} contains itself (a reference cycle); batches must be trees")
            self._active.add(id(obj))
            try:
                if isinstance(obj, Mapping):
                    items = []
                    for key, value in obj.items():
                        if type(key) not in _KEY_TYPES:
                            raise TypeError(
                                f"unsupported dict key {key!r} ({_type_name(key)}) in {path}; "
                                "keys must be str, int, float, bool or None"
                            )
                        if type(key) is float and not math.isfinite(key):
                            raise TypeError(f"unsupported dict key {key!r} in {path}; keys must be finite")
                        items.append([key, self.node(value, f"{path}[{key!r}]")])
                    return {"t": "dict", "items": items}
                kind = "list" if isinstance(obj, list) else "tuple"
                return {"t": kind, "items": [self.node(v, f"{path}[{i}]") for i, v in enumerate(obj)]}
            finally:
                self._active.discard(id(obj))
        raise TypeError(
            f"unsupported object at {path}: {_type_name(obj)}; a batch may hold numpy arrays, "
            "paddle or torch tensors, int/float/bool/str/None, and dicts/lists/tuples of them"
        )

    def _paddle(self, tensor: Any, path: str) -> dict:
        name = str(tensor.dtype).rsplit(".", 1)[-1]  # 'paddle.int64' -> 'int64'
        if name not in _PADDLE_NATIVE and name not in _BITS:
            raise TypeError(f"unsupported paddle dtype {name} at {path}")
        try:
            array = np.asarray(tensor.numpy())
        except Exception as exc:  # e.g. an uninitialised or distributed tensor
            raise TypeError(f"cannot read the paddle tensor at {path}: {exc}") from exc
        if name in _BITS:
            # Tensor.numpy() of a bfloat16 tensor is its uint16 bit pattern.
            if array.dtype != np.dtype(_BITS[name]):
                raise TypeError(f"paddle {name} tensor at {path} gave numpy dtype {array.dtype}")
            return self._array(array, path, "paddle", name)
        return self._array(array, path, "paddle", None)

    def _torch(self, tensor: Any, path: str) -> dict:
        torch = sys.modules["torch"]
        if tensor.layout != torch.strided:
            raise TypeError(f"unsupported torch tensor layout {tensor.layout} at {path} (dense tensors only)")
        name = str(tensor.dtype).rsplit(".", 1)[-1]  # 'torch.int64' -> 'int64'
        if name not in _NATIVE and name not in _BITS:
            raise TypeError(f"unsupported torch dtype {name} at {path}")
        try:
            t = tensor.detach().cpu().resolve_conj().resolve_neg()
            if name == "bfloat16":
                return self._array(t.view(torch.int16).numpy().view(np.uint16), path, "torch", name)
            array = t.numpy()
        except (RuntimeError, TypeError, NotImplementedError) as exc:  # e.g. a meta tensor
            raise TypeError(f"cannot read the torch tensor at {path}: {exc}") from exc
        return self._array(array, path, "torch", None)

    def _array(self, array: np.ndarray, path: str, origin: str, logical: str | None) -> dict:
        dtype = array.dtype
        if logical is None:
            if dtype.names is None and dtype.kind in "US":
                logical = dtype.str.lstrip("<>|=")  # e.g. 'U5', 'S3'
            elif dtype.name == "bfloat16" and dtype.itemsize == 2:  # ml_dtypes.bfloat16
                array, logical = array.view(np.uint16), "bfloat16"
            elif dtype.name in _NATIVE and dtype.names is None:
                logical = dtype.name
            else:
                raise TypeError(
                    f"unsupported numpy dtype {dtype} at {path}; supported: "
                    f"{', '.join(sorted(_NATIVE | set(_BITS)))}, and str/bytes arrays"
                )
        # A copy now: loaders and generators may reuse (and torch's .numpy() shares) buffers.
        # Native byte order, so that every framework can read it (values unchanged).
        array = np.array(array, dtype=array.dtype.newbyteorder("="), copy=True)
        key = f"a{len(self.arrays)}"
        self.arrays.append(array)
        return {"t": "array", "key": key, "dtype": logical, "shape": list(array.shape), "origin": origin}


def _framework_of(obj: Any) -> str | None:
    """'paddle' / 'torch' for their tensors, without importing either framework.

    An object can only be a framework's tensor if that framework is already imported, so
    the check looks in ``sys.modules`` and never imports anything.
    """
    for name in ("paddle", "torch"):
        module = sys.modules.get(name)
        tensor_type = getattr(module, "Tensor", None) if module is not None else None
        if isinstance(tensor_type, type) and isinstance(obj, tensor_type):
            return name
    return None


def _type_name(obj: Any) -> str:
    t = type(obj)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def capture(
    iterable: Iterable[Any],
    n_batches: int,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    compress: bool = False,
) -> int:
    """Write the first ``n_batches`` batches of ``iterable`` to the file ``path``; return how many.

    ``iterable``: a ``paddle.io.DataLoader``, a torch ``DataLoader``, a generator, a list...
    Only ``n_batches`` items are drawn from it (a generator can be consumed further
    afterwards). The file is written to exactly ``path`` (no suffix added; ``.npz`` is the
    natural one), atomically: a temporary file in the same folder, then ``os.replace``.

    Raises:
        ValueError: ``n_batches`` is not an int >= 1, or the iterable yielded no batch.
        FileExistsError: ``path`` exists and ``overwrite`` is False (checked before drawing
            any batch).
        TypeError: a batch holds something unsupported; the message names its key path,
            e.g. ``batch[3]['input_ids'][1]``.

    Warns:
        PaddlefixWarning: the iterable ended before ``n_batches``; what was captured is written.
    """
    if type(n_batches) is not int and not isinstance(n_batches, np.integer) or n_batches < 1:
        raise ValueError(f"n_batches must be an int >= 1, got {n_batches!r}")
    n_batches = int(n_batches)
    path = os.fspath(path)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")

    encoder = _Encoder()
    nodes = []
    iterator = iter(iterable)
    for index in range(n_batches):
        try:
            batch = next(iterator)
        except StopIteration:
            break
        nodes.append(encoder.node(batch, f"batch[{index}]"))
    source = _type_name(iterable)
    if not nodes:
        raise ValueError(f"{source} yielded no batch (is it an exhausted iterator?); nothing written to {path}")
    if len(nodes) < n_batches:
        warnings.warn(
            f"fakedata.capture: {source} ended after {len(nodes)} of the {n_batches} batches asked; "
            f"writing those {len(nodes)} to {path}",
            PaddlefixWarning,
            stacklevel=2,
        )

    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "n_batches": len(nodes),
        "requested": n_batches,
        "source": source,
        "n_arrays": len(encoder.arrays),
        "batches": nodes,
    }
    text = json.dumps(manifest, allow_nan=False, separators=(",", ":"))
    members = {_MANIFEST: np.frombuffer(text.encode("utf-8"), dtype=np.uint8)}
    members.update((f"a{i}", a) for i, a in enumerate(encoder.arrays))
    _write_atomic(path, members, overwrite=overwrite, compress=compress)
    return len(nodes)


def _write_atomic(path: str, members: dict[str, np.ndarray], *, overwrite: bool, compress: bool) -> None:
    save = np.savez_compressed if compress else np.savez
    write_atomic(path, lambda f: save(f, **members), overwrite=overwrite)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- load


class _BadFile(Exception):
    """Internal: a reason the file is not a valid fakedata file."""


def _read(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify a file: (manifest, arrays). ValueError naming the file if invalid."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such fakedata file: {path}")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory, not a paddlefix fakedata file")
    try:
        with open_npz(path, _BadFile) as archive:
            names = set(archive.files)
            if _MANIFEST not in names:
                raise _BadFile(f"no {_MANIFEST} manifest (an .npz written by something else)")
            manifest = _parse_manifest(_member(archive, _MANIFEST))
            n_arrays = manifest["n_arrays"]
            expected = {_MANIFEST} | {f"a{i}" for i in range(n_arrays)}
            if names != expected:
                missing = sorted(expected - names)
                extra = sorted(names - expected)
                raise _BadFile(f"members do not match the manifest (missing {missing}, unexpected {extra})")
            arrays = {f"a{i}": _member(archive, f"a{i}") for i in range(n_arrays)}
        _check_tree(manifest, arrays)
    except _BadFile as exc:
        raise ValueError(f"{path} is not a valid paddlefix fakedata file: {exc}") from None
    return manifest, arrays


def _member(archive: Any, name: str) -> np.ndarray:
    try:
        value = archive[name]
        if not isinstance(value, np.ndarray):  # a zip entry that is not an .npy file
            raise _BadFile(f"member {name!r} is not a .npy array")
        return value
    except _BadFile:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise _BadFile(f"member {name!r} holds pickled objects, which are never loaded") from exc
        raise _BadFile(f"member {name!r} is unreadable ({exc})") from exc
    except Exception as exc:  # BadZipFile (bad CRC, truncated), EOFError, OSError, ...
        raise _BadFile(f"member {name!r} is unreadable ({type(exc).__name__}: {exc}); truncated?") from exc


def _read_manifest(raw: np.ndarray, fmt: str, newest: int, bad: type[Exception]) -> dict:
    """The JSON manifest stored as a 1-d uint8 member, checked for format ``fmt`` and a version
    this paddlefix reads (1 to ``newest``); ``bad(reason)`` raised otherwise (shared with align's trace files)."""
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise bad(f"manifest has dtype {raw.dtype} and shape {raw.shape}, expected 1-d uint8")
    try:
        manifest = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad(f"manifest is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        raise bad(f"manifest format is not {fmt!r}")
    version = manifest.get("version")
    if type(version) is not int or version < 1:
        raise bad(f"manifest version {version!r} is invalid")
    if version > newest:
        raise bad(f"written by a newer paddlefix (format version {version}; this one reads up to {newest})")
    return manifest


def _parse_manifest(raw: np.ndarray) -> dict:
    manifest = _read_manifest(raw, FORMAT, FORMAT_VERSION, _BadFile)
    for field in ("n_batches", "requested", "n_arrays"):
        if type(manifest.get(field)) is not int or manifest[field] < 0:
            raise _BadFile(f"manifest field {field!r} is missing or invalid")
    batches = manifest.get("batches")
    if not isinstance(batches, list) or len(batches) != manifest["n_batches"]:
        raise _BadFile("manifest 'batches' does not hold n_batches entries")
    if not isinstance(manifest.get("source", ""), str):
        raise _BadFile("manifest field 'source' is invalid")
    return manifest


def _check_tree(manifest: dict, arrays: dict[str, np.ndarray]) -> None:
    """Validate every node; each array must match its manifest dtype and shape."""
    seen: set[str] = set()

    def check(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            raise _BadFile(f"manifest node at {path} is not an object")
        kind = node.get("t")
        if kind == "value":
            if type(node.get("v")) not in _SCALARS or "v" not in node:
                raise _BadFile(f"manifest value at {path} is invalid")
        elif kind == "float":
            if node.get("v") not in ("nan", "inf", "-inf"):
                raise _BadFile(f"manifest float at {path} is invalid")
        elif kind in ("list", "tuple"):
            items = node.get("items")
            if not isinstance(items, list):
                raise _BadFile(f"manifest {kind} at {path} has no items")
            for i, item in enumerate(items):
                check(item, f"{path}[{i}]")
        elif kind == "dict":
            items = node.get("items")
            if not isinstance(items, list):
                raise _BadFile(f"manifest dict at {path} has no items")
            for item in items:
                if not (isinstance(item, list) and len(item) == 2 and type(item[0]) in _KEY_TYPES):
                    raise _BadFile(f"manifest dict item at {path} is invalid")
                check(item[1], f"{path}[{item[0]!r}]")
        elif kind == "array":
            key, dtype, shape = node.get("key"), node.get("dtype"), node.get("shape")
            if key not in arrays or key in seen:
                raise _BadFile(f"manifest array at {path} names member {key!r}, missing or used twice")
            seen.add(key)
            if node.get("origin") not in ("numpy", "numpy_scalar", "paddle", "torch"):
                raise _BadFile(f"manifest array at {path} has an invalid origin")
            array = arrays[key]
            stored = _storage_dtype(dtype)
            if stored is None or array.dtype != stored:
                raise _BadFile(f"member {key!r} at {path} has dtype {array.dtype}, manifest says {dtype!r}")
            if not isinstance(shape, list) or list(array.shape) != shape:
                raise _BadFile(f"member {key!r} at {path} has shape {list(array.shape)}, manifest says {shape!r}")
            if node["origin"] == "numpy_scalar" and array.ndim != 0:
                raise _BadFile(f"member {key!r} at {path} is a scalar with shape {shape}")
        else:
            raise _BadFile(f"manifest node at {path} has unknown type {kind!r}")

    try:
        for i, batch in enumerate(manifest["batches"]):
            check(batch, f"batch[{i}]")
    except RecursionError:
        raise _BadFile("manifest nests too deeply") from None
    if len(seen) != len(arrays):
        raise _BadFile(f"{len(arrays) - len(seen)} array member(s) are not referenced by the manifest")


def _storage_dtype(logical: Any) -> np.dtype | None:
    """The NumPy dtype a logical dtype name is stored as (None if the name is invalid)."""
    if not isinstance(logical, str):
        return None
    if logical in _NATIVE:
        return np.dtype(logical)
    if logical in _BITS:
        return np.dtype(_BITS[logical])
    if len(logical) > 1 and logical[0] in "US" and logical[1:].isdigit():
        return np.dtype(("<" if logical[0] == "U" else "|") + logical)
    return None


def load(path: str | os.PathLike, to: str = "numpy") -> list[Any]:
    """The batches written by :func:`capture`, as a list, with arrays made for ``to``.

    ``to``: ``"numpy"`` (default; imports no framework), ``"paddle"`` or ``"torch"``. Same
    nesting, dict keys and key order, list vs tuple, dtypes, shapes and bits as captured
    (see the module docstring for bfloat16 with ``numpy`` and the few conversion rules).

    Raises:
        ValueError: ``to`` is not one of :data:`TARGETS`; or the file is truncated, foreign,
            tampered with, or holds pickled objects (the message names the file).
        FileNotFoundError: ``path`` does not exist.
        TypeError: ``to="paddle"`` and an array has a dtype Paddle lacks (uint16/32/64).
    """
    if to not in TARGETS:
        raise ValueError(f"to must be one of {', '.join(repr(t) for t in TARGETS)}; got {to!r}")
    manifest, arrays = _read(path)
    make = _MAKERS[to]()

    def build(node: dict, where: str) -> Any:
        kind = node["t"]
        if kind == "value":
            return node["v"]
        if kind == "float":
            return float(node["v"])
        if kind == "list":
            return [build(n, f"{where}[{i}]") for i, n in enumerate(node["items"])]
        if kind == "tuple":
            return tuple(build(n, f"{where}[{i}]") for i, n in enumerate(node["items"]))
        if kind == "dict":
            return {k: build(n, f"{where}[{k!r}]") for k, n in node["items"]}
        return make(arrays[node["key"]], node["dtype"], node["origin"], where)

    return [build(node, f"batch[{i}]") for i, node in enumerate(manifest["batches"])]


def _numpy_maker() -> Any:
    def make(array: np.ndarray, dtype: str, origin: str, where: str) -> Any:
        return array[()] if origin == "numpy_scalar" else array

    return make


def _paddle_maker() -> Any:
    import paddle

    def make(array: np.ndarray, dtype: str, origin: str, where: str) -> Any:
        if array.dtype.kind in "US":
            return array
        if dtype == "bfloat16":
            # paddle reads a uint16 array as bfloat16 bits (the inverse of Tensor.numpy()).
            tensor = paddle.to_tensor(array)
            if str(tensor.dtype) != "paddle.bfloat16":
                raise RuntimeError(f"paddle {paddle.__version__} did not read uint16 bits as bfloat16 ({where})")
            return tensor
        if dtype not in _PADDLE_NATIVE:
            raise TypeError(f"paddle has no {dtype} tensors ({where}); load this file with to='numpy' or to='torch'")
        return paddle.to_tensor(array)

    return make


def _torch_maker() -> Any:
    import torch

    def make(array: np.ndarray, dtype: str, origin: str, where: str) -> Any:
        if array.dtype.kind in "US":
            return array
        if not array.flags.writeable:
            array = array.copy()
        if dtype == "bfloat16":
            return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(array)

    return make


_MAKERS = {"numpy": _numpy_maker, "paddle": _paddle_maker, "torch": _torch_maker}


# --------------------------------------------------------------------------- inspect


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """Summary of a fakedata file as JSON-able data (verifies the file as :func:`load` does).

    Returns ``{"path", "format", "version", "n_batches", "requested", "source", "bytes",
    "batches"}`` where each batch is a tree of nodes: ``{"type": "dict", "items": [[key, node],
    ...]}``, ``{"type": "list" | "tuple", "items": [node, ...]}``, ``{"type": "array",
    "dtype", "shape", "origin"}`` (origin: numpy, numpy_scalar, paddle or torch) or
    ``{"type": "int" | "float" | "bool" | "str" | "None", "value"}`` (non-finite floats as
    the strings ``"nan"``, ``"inf"``, ``"-inf"``).

    Raises ValueError naming the file if it is not a valid fakedata file.
    """
    manifest, _ = _read(path)

    def summary(node: dict) -> dict:
        kind = node["t"]
        if kind == "value":
            value = node["v"]
            return {"type": "None" if value is None else type(value).__name__, "value": value}
        if kind == "float":
            return {"type": "float", "value": node["v"]}
        if kind == "dict":
            return {"type": "dict", "items": [[k, summary(n)] for k, n in node["items"]]}
        if kind in ("list", "tuple"):
            return {"type": kind, "items": [summary(n) for n in node["items"]]}
        return {"type": "array", "dtype": node["dtype"], "shape": list(node["shape"]), "origin": node["origin"]}

    return {
        "path": os.fspath(path),
        "format": manifest["format"],
        "version": manifest["version"],
        "n_batches": manifest["n_batches"],
        "requested": manifest["requested"],
        "source": manifest.get("source", ""),
        "bytes": os.path.getsize(path),
        "batches": [summary(b) for b in manifest["batches"]],
    }


def format_description(info: dict[str, Any]) -> str:
    """Human-readable text for :func:`describe`'s result (what ``paddlefix fakedata inspect`` prints)."""
    out = io.StringIO()
    captured = f"{info['n_batches']} batch{'es' if info['n_batches'] != 1 else ''}"
    if info["requested"] != info["n_batches"]:
        captured += f" (of {info['requested']} requested)"
    out.write(f"{info['path']}: paddlefix fakedata v{info['version']}, {captured}")
    out.write(f" from {info['source']}, {info['bytes']} bytes\n")

    def line(label: str, node: dict, indent: int) -> None:
        pad = "  " * indent
        kind = node["type"]
        if kind == "array":
            shape = "[" + ", ".join(str(d) for d in node["shape"]) + "]"
            origin = {"numpy": "numpy", "numpy_scalar": "numpy scalar", "paddle": "paddle", "torch": "torch"}
            out.write(f"{pad}{label}: {node['dtype']} {shape}  ({origin[node['origin']]})\n")
        elif kind in ("dict", "list", "tuple"):
            items = node["items"]
            out.write(f"{pad}{label}: {kind} of {len(items)}\n")
            for i, item in enumerate(items):
                if kind == "dict":
                    line(f"[{item[0]!r}]", item[1], indent + 1)
                else:
                    line(f"[{i}]", item, indent + 1)
        else:
            value = node["value"]
            value = value if isinstance(value, str) and kind == "float" else repr(value)
            if kind == "None":
                out.write(f"{pad}{label}: None\n")
                return
            if len(value) > 60:
                value = value[:57] + "..."
            out.write(f"{pad}{label}: {kind} {value}\n")

    for i, batch in enumerate(info["batches"]):
        line(f"batch[{i}]", batch, 0)
    return out.getvalue()


def inspect_command(path: str, as_json: bool = False) -> int:
    """``paddlefix fakedata inspect FILE [--json]``: print a file's structure, shapes and dtypes.

    Returns the exit code: 0 on success; 1 (message on stderr) for a missing or invalid file.
    """
    try:
        info = describe(path)
    except (ValueError, OSError) as exc:
        print(f"paddlefix fakedata inspect: error: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        sys.stdout.write(format_description(info))
    return 0
