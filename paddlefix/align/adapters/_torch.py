"""The torch side of the adapter surface (imports torch)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from ._common import LayerAdapterBase

__all__ = ["TorchAdapter"]


class TorchAdapter(LayerAdapterBase):
    """Adapter for ``torch.nn.Module`` models and ``torch.Tensor`` values."""

    framework = "torch"
    _non_persistent_attr = "_non_persistent_buffers_set"

    def is_model(self, obj: Any) -> bool:
        return isinstance(obj, torch.nn.Module)

    def is_tensor(self, obj: Any) -> bool:
        return isinstance(obj, torch.Tensor)

    def named_layers(self, model: Any) -> list[tuple[str, Any]]:
        """(path, module) in registration order, the root as ``""``, each module once."""
        return list(model.named_modules())

    def state_dict(self, model: Any) -> dict[str, Any]:
        return dict(model.state_dict(keep_vars=True))

    def to_numpy(self, tensor: Any) -> np.ndarray:
        """Detached CPU array; shares memory with a CPU tensor (no copy). bfloat16 becomes float32."""
        t = tensor.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()
        return t.numpy()

    def numpy_view(self, tensor: Any) -> np.ndarray | None:
        """A NumPy array sharing a CPU tensor's memory, or None (other devices, bfloat16)."""
        t = tensor.detach()
        if t.device.type != "cpu" or t.dtype == torch.bfloat16:
            return None
        try:
            return t.numpy()
        except (RuntimeError, TypeError):  # conjugate / negative bits, or a dtype NumPy lacks
            return None

    def assign(self, tensor: Any, array: Any, temporary: bool = True) -> None:
        """Copy ``array`` into ``tensor`` in place (destination dtype and device kept).

        Inside ``batched()`` the copy may wait for the block's end; ``temporary=False`` says
        ``array`` borrows memory kept alive elsewhere, so waiting costs nothing.
        """
        arr = np.asarray(array)
        src = torch.from_numpy(arr)
        if tuple(src.shape) != tuple(tensor.shape):
            raise ValueError(f"shape {tuple(src.shape)} cannot be assigned to a tensor of shape {tuple(tensor.shape)}")
        from ._fastcopy import copy_later

        with torch.no_grad():
            copy_later(tensor, src, temporary=temporary)  # on a worker thread inside ``batched()``

    def dtype_name(self, tensor: Any) -> str:
        return str(tensor.dtype).replace("torch.", "")

    def register_forward_hook(self, layer: Any, fn: Callable[..., Any]) -> Any:
        def hook(module: Any, inputs: Any, output: Any) -> None:
            fn(module, tuple(inputs), output)

        return layer.register_forward_hook(hook)

    def register_forward_pre_hook(self, layer: Any, fn: Callable[..., Any]) -> Any:
        def hook(module: Any, inputs: Any) -> None:
            fn(module, tuple(inputs))

        return layer.register_forward_pre_hook(hook)

    def train(self, model: Any, mode: bool) -> None:
        model.train(mode)

    def from_numpy(self, array: Any) -> Any:
        return torch.from_numpy(np.ascontiguousarray(array)).clone()
