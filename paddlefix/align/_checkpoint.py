"""Reading weight files without executing them.

- ``.bin`` / ``.pt`` / ``.pth``: ``torch.load(..., weights_only=True)`` (torch's restricted unpickler:
  tensors, containers and primitive values only; anything else is refused before it runs).
- ``.safetensors``: the ``safetensors`` package (no code in the format at all).
- ``.pdparams``: Paddle's pickle of NumPy arrays, read with a restricted unpickler that admits
  only the NumPy array reconstruction functions and plain containers.

A file that is missing, unreadable, truncated, or holds anything other than a flat mapping of
names to tensors raises :class:`TransferError` naming the file.
"""

from __future__ import annotations

import io
import os
import pickle
from typing import Any, Mapping

from ._errors import TransferError

__all__ = ["load_checkpoint", "CHECKPOINT_SUFFIXES"]

CHECKPOINT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".pdparams")

# Paddle's own bookkeeping entries in a saved state dict (not weights).
_PADDLE_META = ("StructuredToParameterName@@",)

_NUMPY_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays in dicts / lists; refuses every other global (nothing runs)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed (only NumPy arrays are)")


def _refuse(path: str, exc: BaseException) -> TransferError:
    return TransferError(
        f"src: {path!r} is not a plain tensor checkpoint and was refused without executing it: "
        f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    )


def _unreadable(path: str, exc: BaseException) -> TransferError:
    first = str(exc).splitlines()[0][:300] if str(exc) else ""
    return TransferError(f"src: cannot read checkpoint {path!r} (unreadable or truncated): {type(exc).__name__}: {first}")


def _flat(path: str, obj: Any) -> dict[str, Any]:
    """A flat ``{name: tensor}``; unwraps a single ``state_dict`` / ``model`` entry."""
    if isinstance(obj, Mapping) and len(obj) == 1:
        (key, inner), = obj.items()
        if key in ("state_dict", "model", "module") and isinstance(inner, Mapping):
            obj = inner
    if not isinstance(obj, Mapping):
        raise TransferError(f"src: {path!r} holds a {type(obj).__name__}, not a mapping of names to tensors")
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if k in _PADDLE_META:
            continue
        if not isinstance(k, str) or not hasattr(v, "shape") or not hasattr(v, "dtype"):
            raise TransferError(
                f"src: {path!r} entry {k!r} is a {type(v).__name__}, not a tensor; "
                "only flat mappings of names to tensors are read"
            )
        out[k] = v
    return out


def _load_torch(path: str) -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        raise TransferError(f"src: reading {path!r} needs torch (pip install torch), or convert it to .safetensors") from None
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc) and "zip" not in str(exc):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Unsupported" in str(exc) or "global" in str(exc).lower():
            raise _refuse(path, exc) from None
        raise _unreadable(path, exc) from None
    except (EOFError, RuntimeError, OSError, ValueError, KeyError, AttributeError, IndexError) as exc:
        raise _unreadable(path, exc) from None
    return _flat(path, obj)


def _load_safetensors(path: str) -> dict[str, Any]:
    try:
        from safetensors import safe_open
    except ImportError:
        raise TransferError(f"src: reading {path!r} needs safetensors (pip install safetensors)") from None
    out: dict[str, Any] = {}
    try:
        try:
            with safe_open(path, framework="np") as f:
                for k in f.keys():
                    out[k] = f.get_tensor(k)
        except TypeError:  # bfloat16 has no NumPy dtype: read through torch when present
            import torch  # noqa: F401

            out = {}
            with safe_open(path, framework="pt") as f:
                for k in f.keys():
                    out[k] = f.get_tensor(k)
    except ImportError:
        raise TransferError(f"src: {path!r} holds bfloat16 tensors; reading them needs torch") from None
    except Exception as exc:  # safetensors raises its own SafetensorError (and OSError) for bad files
        raise _unreadable(path, exc) from None
    return out


def _load_pdparams(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise _unreadable(path, exc) from None
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as exc:
        if "not allowed" in str(exc):
            raise _refuse(path, exc) from None
        raise _unreadable(path, exc) from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as exc:
        raise _unreadable(path, exc) from None
    return _flat(path, obj)


def load_checkpoint(path: "str | os.PathLike[str]") -> tuple[dict[str, Any], str | None]:
    """``({name: tensor or ndarray}, framework naming convention)`` from a checkpoint file.

    The convention is ``"torch"`` for torch / safetensors files (Hugging Face checkpoints) and
    ``"paddle"`` for ``.pdparams``.
    """
    p = os.fspath(path)
    suffix = os.path.splitext(p)[1].lower()
    if suffix not in CHECKPOINT_SUFFIXES:
        raise TransferError(f"src: {p!r}: unknown checkpoint suffix {suffix!r}; accepted: {', '.join(CHECKPOINT_SUFFIXES)}")
    if not os.path.isfile(p):
        raise TransferError(f"src: checkpoint file {p!r} does not exist")
    if suffix == ".safetensors":
        return _load_safetensors(p), "torch"
    if suffix == ".pdparams":
        return _load_pdparams(p), "paddle"
    return _load_torch(p), "torch"
