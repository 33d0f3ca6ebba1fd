"""Save and load a :class:`~paddlefix.align._trace.Trace`: one pickle-free file (``align.record``).

**Format**: an ordinary ``.npz`` like ``paddlefix.fakedata``'s: one member per array (``a0``,
``a1``, ...) and a JSON manifest (member ``__paddlefix_align_trace__``, UTF-8 bytes as ``uint8``)
holding everything else (framework, versions, modules with their configuration, the optimizer's
hyper-parameters, the structure of every step) and the dtype and shape of every array.
``numpy.load(path, allow_pickle=False)`` reads it; :func:`load_trace` reads it exactly so, checks
every member against the manifest, and refuses foreign, truncated or newer files with a
``ValueError`` naming the file. Writing is atomic (a temporary file, then ``os.replace``).

Values round-trip exactly: arrays keep dtype, shape and bits (``ml_dtypes.bfloat16`` is stored as
its ``uint16`` bits and comes back as ``ml_dtypes.bfloat16`` where that package is importable, as
float32 otherwise); configuration and optimizer values keep tuples, NaN and infinities.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

from .._files import open_npz
from ..fakedata import _member, _read_manifest, _write_atomic
from ._trace import ForwardEvent, GradEvent, ModuleInfo, StepTrace, Trace

__all__ = ["save_trace", "load_trace", "FORMAT", "FORMAT_VERSION"]

FORMAT = "paddlefix.align.trace"
FORMAT_VERSION = 1
_MANIFEST = "__paddlefix_align_trace__"
_NATIVE = frozenset("bool int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64 "
                    "complex64 complex128".split())


class _Bad(Exception):
    pass


class _Writer:
    def __init__(self) -> None:
        self.arrays: list[np.ndarray] = []
        self.specs: list[list[Any]] = []

    def add(self, array: Any, where: str) -> str | None:
        if array is None:
            return None
        a = np.asarray(array)
        name = a.dtype.name
        if name == "bfloat16" and a.dtype.itemsize == 2:
            a = a.view(np.uint16)
        elif name not in _NATIVE or a.dtype.names is not None:
            raise TypeError(f"save_trace: unsupported array dtype {a.dtype} at {where}")
        a = np.array(a, dtype=a.dtype.newbyteorder("="), copy=True)
        key = f"a{len(self.arrays)}"
        self.arrays.append(a)
        self.specs.append([name, list(a.shape)])
        return key


def _enc(v: Any, where: str) -> Any:
    """JSON-able form of a config / optimizer value (tuples, non-finite floats tagged)."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else {"__float__": repr(v)}
    if isinstance(v, np.generic):
        return _enc(v.item(), where)
    if isinstance(v, tuple):
        return {"__tuple__": [_enc(x, where) for x in v]}
    if isinstance(v, list):
        return [_enc(x, where) for x in v]
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise TypeError(f"save_trace: {where} has a non-string key {k!r}")
            out[k] = _enc(x, f"{where}[{k!r}]")
        return {"__dict__": out}
    raise TypeError(f"save_trace: {where} holds {type(v).__name__} {v!r}; allowed: None, bool, int, float, "
                    "str and tuples / lists / dicts of them")


def _dec(v: Any) -> Any:
    if isinstance(v, list):
        return [_dec(x) for x in v]
    if isinstance(v, dict):
        if "__float__" in v:
            return float(v["__float__"])
        if "__tuple__" in v:
            return tuple(_dec(x) for x in v["__tuple__"])
        if "__dict__" in v:
            return {k: _dec(x) for k, x in v["__dict__"].items()}
        raise _Bad(f"unknown tagged value {sorted(v)}")
    return v


def save_trace(trace: Trace, path: str | os.PathLike, *, overwrite: bool = True) -> None:
    """Write ``trace`` to ``path`` (atomically; no suffix added, ``.npz`` is the natural one).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite=False`` was passed (the default replaces it).
        TypeError: ``trace`` is not a Trace, or holds a value that cannot be stored.
    """
    if not isinstance(trace, Trace):
        raise TypeError(f"save_trace(trace): expected a paddlefix.align Trace, got {type(trace).__name__}")
    path = os.fspath(path)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    w = _Writer()
    steps = []
    for s, st in enumerate(trace.steps):
        steps.append({
            "forward": [[e.path, e.call, [w.add(x, f"step {s} {e.path} input") for x in e.inputs],
                         [w.add(x, f"step {s} {e.path} output") for x in e.outputs]] for e in st.forward],
            "output": [w.add(x, f"step {s} output") for x in st.output],
            "loss": _enc(st.loss, "loss"),
            "grads": [[g.path, g.call, [w.add(x, f"step {s} {g.path} grad") for x in g.grads]] for g in st.grads],
            "param_grads": [[n, w.add(x, f"step {s} grad of {n}")] for n, x in st.param_grads.items()],
            "params_after": [[n, w.add(x, f"step {s} {n}")] for n, x in st.params_after.items()],
        })
    manifest = {
        "format": FORMAT, "version": FORMAT_VERSION, "framework": trace.framework,
        "versions": _enc(dict(trace.versions), "versions"),
        "modules": [[m.path, m.type, _enc(dict(m.config), f"config of {m.path!r}")] for m in trace.modules],
        "params_before": [[n, w.add(x, n)] for n, x in trace.params_before.items()],
        "optimizer": _enc(dict(trace.optimizer), "optimizer"),
        "steps": steps, "n_arrays": len(w.arrays), "arrays": w.specs,
    }
    text = json.dumps(manifest, allow_nan=False, separators=(",", ":"))
    members = {_MANIFEST: np.frombuffer(text.encode("utf-8"), dtype=np.uint8)}
    members.update((f"a{i}", a) for i, a in enumerate(w.arrays))
    _write_atomic(path, members, overwrite=overwrite, compress=False)


def load_trace(path: str | os.PathLike) -> Trace:
    """Read a file written by :func:`save_trace` (never unpickles anything).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a paddlefix align trace (another ``.npz``, a fakedata file, truncated,
            members not matching the manifest, written by a newer paddlefix).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such align trace file: {path}")
    try:
        return _load(path)
    except _Bad as exc:
        raise ValueError(f"{path} is not a valid paddlefix align trace file: {exc}") from None


def _load(path: str) -> Trace:
    if os.path.isdir(path):
        raise _Bad("it is a directory")
    with open_npz(path, _Bad) as archive:
        names = set(archive.files)
        if _MANIFEST not in names:
            hint = " (it is a fakedata batches file)" if "__paddlefix_fakedata__" in names else ""
            raise _Bad(f"no {_MANIFEST} manifest{hint}")
        try:
            raw = _member(archive, _MANIFEST)
        except Exception as exc:  # fakedata's _BadFile
            raise _Bad(str(exc)) from None
        manifest = _read_manifest(raw, FORMAT, FORMAT_VERSION, _Bad)
        n = manifest.get("n_arrays")
        specs = manifest.get("arrays")
        if type(n) is not int or not isinstance(specs, list) or len(specs) != n:
            raise _Bad("the manifest's array list is invalid")
        expected = {_MANIFEST} | {f"a{i}" for i in range(n)}
        if names != expected:
            raise _Bad(f"members do not match the manifest (missing {sorted(expected - names)[:5]}, "
                       f"unexpected {sorted(names - expected)[:5]}); truncated?")
        arrays: dict[str, np.ndarray] = {}
        for i, spec in enumerate(specs):
            key = f"a{i}"
            try:
                a = _member(archive, key)
            except Exception as exc:
                raise _Bad(str(exc)) from None
            arrays[key] = _check_array(a, spec, key)
    try:
        return _build(manifest, arrays)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise _Bad(f"the manifest is malformed ({type(exc).__name__}: {exc})") from None


def _check_array(a: np.ndarray, spec: Any, key: str) -> np.ndarray:
    if not (isinstance(spec, list) and len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], list)):
        raise _Bad(f"array spec of {key} is invalid")
    name, shape = spec
    storage = "uint16" if name == "bfloat16" else name
    if storage not in _NATIVE:
        raise _Bad(f"array {key} has unsupported dtype {name!r}")
    if a.dtype != np.dtype(storage) or list(a.shape) != shape:
        raise _Bad(f"array {key} is {a.dtype}{list(a.shape)}, the manifest says {storage}{shape}")
    if name == "bfloat16":
        try:
            import ml_dtypes

            return a.view(ml_dtypes.bfloat16)
        except ImportError:
            return (a.astype(np.uint32) << 16).view(np.float32)
    return a


def _build(m: dict, arrays: dict[str, np.ndarray]) -> Trace:
    def arr(key: Any) -> np.ndarray | None:
        if key is None:
            return None
        if key not in arrays:
            raise _Bad(f"the manifest refers to a missing array {key!r}")
        return arrays[key]

    def strict(key: Any) -> np.ndarray:
        a = arr(key)
        if a is None:
            raise _Bad("a required array is null")
        return a

    if m.get("framework") not in ("paddle", "torch"):
        raise _Bad(f"framework {m.get('framework')!r} is neither 'paddle' nor 'torch'")
    steps = []
    for st in m["steps"]:
        steps.append(StepTrace(
            forward=[ForwardEvent(str(p), int(c), [strict(k) for k in ins], [strict(k) for k in outs])
                     for p, c, ins, outs in st["forward"]],
            output=[strict(k) for k in st["output"]],
            loss=_dec(st["loss"]),
            grads=[GradEvent(str(p), int(c), [arr(k) for k in gs]) for p, c, gs in st["grads"]],
            param_grads={str(n): arr(k) for n, k in st["param_grads"]},
            params_after={str(n): strict(k) for n, k in st["params_after"]},
        ))
    return Trace(
        framework=m["framework"], versions=_dec(m["versions"]),
        modules=[ModuleInfo(str(p), str(t), _dec(c)) for p, t, c in m["modules"]],
        params_before={str(n): strict(k) for n, k in m["params_before"]},
        optimizer=_dec(m["optimizer"]), steps=steps,
    )
