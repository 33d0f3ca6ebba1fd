"""The Paddle side of the adapter surface (imports paddle)."""

from __future__ import annotations

import sys
import warnings
from typing import Any, Callable

import numpy as np
import paddle

from ._common import LayerAdapterBase
from ._fastcopy import copy_array_later, copy_later

__all__ = ["PaddleAdapter"]

_DTYPE_NAMES = {
    "bool": "bool", "float16": "float16", "bfloat16": "bfloat16", "float32": "float32",
    "float64": "float64", "int8": "int8", "uint8": "uint8", "int16": "int16", "int32": "int32",
    "int64": "int64", "complex64": "complex64", "complex128": "complex128",
}


_NAMES_SEEN: dict[Any, str] = {}
"""dtype object -> name, as ``dtype_name`` computed it."""


def _contiguous(arr: np.ndarray) -> np.ndarray:
    """A C-contiguous copy; fast for transposed 2-D views (NumPy's own copy is ~10x slower there).

    torch's copy (vectorised for transposes, ``_fastcopy``) is used when torch is already imported,
    else a tiled NumPy copy. Values are copied, never computed: bit-exact.
    """
    if arr.ndim != 2 or not arr.T.flags.c_contiguous or arr.size < 1 << 16:
        return np.ascontiguousarray(arr)
    torch = sys.modules.get("torch")
    if torch is not None and arr.dtype.kind in "fiub" and arr.dtype.itemsize in (1, 2, 4, 8):
        try:
            src = torch.from_numpy(arr)
        except (TypeError, RuntimeError):  # a dtype torch cannot view: fall through
            pass
        else:
            from ._fastcopy import copy_

            out_t = torch.empty(src.shape, dtype=src.dtype)
            with torch.no_grad():
                copy_(out_t, src)
            return out_t.numpy()
    out = np.empty(arr.shape, arr.dtype)
    bs = 64
    for i in range(0, arr.shape[0], bs):
        for j in range(0, arr.shape[1], bs):
            out[i : i + bs, j : j + bs] = arr[i : i + bs, j : j + bs]
    return out


def _dense_cpu(tensor: Any) -> bool:
    """Whether ``tensor`` is an initialised, contiguous CPU tensor (its memory can be written as is)."""
    try:
        return bool(tensor.place.is_cpu_place() and tensor._is_initialized()
                    and (not hasattr(tensor, "is_contiguous") or tensor.is_contiguous()))
    except Exception:  # a tensor that cannot say (a distributed tensor, an old Paddle): not written as is
        return False


def torch_view(tensor: Any) -> Any:
    """A torch tensor sharing ``tensor``'s memory (DLPack), or None where that is not possible.

    Only for a dense, contiguous, initialised CPU tensor of a dtype both frameworks share, and only
    when torch is already imported (it is never imported here). Writes through the view change the
    Paddle tensor in place, like ``set_value`` does: same allocation, no autograd record.
    """
    torch = sys.modules.get("torch")
    if torch is None or not _dense_cpu(tensor):
        return None
    try:
        view = torch.utils.dlpack.from_dlpack(paddle.utils.dlpack.to_dlpack(tensor))
    except Exception:  # any refusal (device, dtype, distributed tensor, old Paddle): the other path
        return None
    if view.device.type != "cpu" or not view.is_contiguous() or list(view.shape) != list(tensor.shape):
        return None
    return view


def _copy_into_view(tensor: Any, arr: np.ndarray, dtype: str, temporary: bool = True) -> bool:
    """Copy ``arr`` into ``tensor``'s memory, in one pass; False if not possible.

    A contiguous ``arr`` or a transposed matrix (a weight in the other layout) is written straight
    into the memory of a dense CPU tensor (a vectorised transposing copy, ``_fastcopy``); other
    layouts go through a torch view of that memory. No contiguous temporary either way. Values
    are copied, never computed (same dtype only): bit-exact.
    """
    if dtype == "bfloat16" or arr.dtype != np.dtype(dtype) or arr.dtype.kind not in "biuf" or arr.size == 0:
        return False
    torch = sys.modules.get("torch")
    if torch is None or not _dense_cpu(tensor):
        return False
    if copy_array_later(int(tensor.data_ptr()), arr, temporary):
        return True  # straight into the tensor's memory (no torch view made: the common case)
    try:
        if arr.flags.writeable:
            src = torch.from_numpy(arr)
        else:
            with warnings.catch_warnings():  # a read-only array (a loaded checkpoint) is only read here
                warnings.simplefilter("ignore", UserWarning)
                src = torch.from_numpy(arr)
    except (TypeError, ValueError, RuntimeError):  # negative or odd strides, unsupported dtype
        return False
    view = torch_view(tensor)
    if view is None or view.dtype != src.dtype or np.may_share_memory(view.numpy(), arr):
        return False  # an overlapping source is copied first, by the other path
    # Neither side requires grad (a DLPack view, an array): no autograd record, in any grad mode.
    copy_later(view, src, temporary=temporary)  # on a worker thread inside ``PaddleAdapter.batched()``
    return True


class PaddleAdapter(LayerAdapterBase):
    """Adapter for ``paddle.nn.Layer`` models and ``paddle.Tensor`` values."""

    framework = "paddle"
    _non_persistent_attr = "_non_persistable_buffer_names_set"
    fused_copy = True
    """Write CPU tensors through a torch view of their memory when torch is imported (one pass)."""

    def is_model(self, obj: Any) -> bool:
        return isinstance(obj, paddle.nn.Layer)

    def is_tensor(self, obj: Any) -> bool:
        return isinstance(obj, paddle.Tensor)

    def named_layers(self, model: Any) -> list[tuple[str, Any]]:
        """(path, layer) in registration order, the root as ``""``, each layer once."""
        return [(n or "", layer) for n, layer in model.named_sublayers(include_self=True)]

    def state_dict(self, model: Any) -> dict[str, Any]:
        return dict(model.state_dict())

    def to_numpy(self, tensor: Any) -> np.ndarray:
        """A CPU NumPy copy; bfloat16 becomes float32 (NumPy has no bfloat16)."""
        if self.dtype_name(tensor) == "bfloat16":
            tensor = tensor.astype("float32")
        return tensor.numpy()

    def numpy_view(self, tensor: Any) -> np.ndarray | None:
        """A NumPy array sharing ``tensor``'s memory (through a torch view), or None."""
        if self.dtype_name(tensor) == "bfloat16" or not self.fused_copy:
            return None
        view = torch_view(tensor)
        return None if view is None else view.numpy()

    def assign(self, tensor: Any, array: Any, temporary: bool = True) -> None:
        """Copy ``array`` into ``tensor`` in place, keeping its dtype and place; no autograd record.

        Inside ``batched()`` the copy may wait for the block's end; ``temporary=False`` says
        ``array`` borrows memory kept alive elsewhere, so waiting costs nothing.
        """
        arr = np.asarray(array)
        shape = tuple(int(d) for d in tensor.shape)
        if tuple(arr.shape) != shape:
            raise ValueError(f"shape {tuple(arr.shape)} cannot be assigned to a tensor of shape {shape}")
        dtype = self.dtype_name(tensor)
        if self.fused_copy and _copy_into_view(tensor, arr, dtype, temporary):
            return
        if dtype != "bfloat16" and arr.dtype != np.dtype(dtype):
            arr = arr.astype(dtype)
        if not arr.flags.c_contiguous:
            arr = _contiguous(arr)
        with paddle.no_grad():
            if dtype == "bfloat16":
                tensor.set_value(paddle.to_tensor(arr.astype("float32")).astype("bfloat16"))
            else:
                tensor.set_value(arr)

    def dtype_name(self, tensor: Any) -> str:
        dtype = tensor.dtype
        try:
            return _NAMES_SEEN[dtype]
        except (KeyError, TypeError):
            pass
        name = str(dtype).replace("paddle.", "").lower()
        name = name.replace("vartype.", "").replace("fp", "float").replace("bf16", "bfloat16")
        name = _DTYPE_NAMES.get(name, name)
        try:
            _NAMES_SEEN[dtype] = name
        except TypeError:  # an unhashable dtype object
            pass
        return name

    def register_forward_hook(self, layer: Any, fn: Callable[..., Any]) -> Any:
        def hook(lay: Any, inputs: Any, output: Any) -> None:
            fn(lay, tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,), output)

        return layer.register_forward_post_hook(hook)

    def register_forward_pre_hook(self, layer: Any, fn: Callable[..., Any]) -> Any:
        def hook(lay: Any, inputs: Any) -> None:
            fn(lay, tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,))

        return layer.register_forward_pre_hook(hook)

    def train(self, model: Any, mode: bool) -> None:
        if mode:
            model.train()
        else:
            model.eval()

    def from_numpy(self, array: Any) -> Any:
        return paddle.to_tensor(np.ascontiguousarray(array))
