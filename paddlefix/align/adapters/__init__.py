"""One adapter per framework with the same surface, so framework-neutral code talks to neither directly.

:func:`adapter_for` decides by type without importing a framework that is not already imported:
an object can only be a torch module (or tensor) if ``torch`` is in ``sys.modules``.
"""

from __future__ import annotations

import sys
from typing import Any, ContextManager, Protocol

__all__ = ["Adapter", "adapter_for", "framework_of", "paddle_adapter", "torch_adapter"]


class Adapter(Protocol):
    """What align code may ask of a framework (see the module docstrings of ``_paddle`` / ``_torch``)."""

    framework: str

    def is_model(self, obj: Any) -> bool: ...
    def is_tensor(self, obj: Any) -> bool: ...
    def named_layers(self, model: Any) -> list[tuple[str, Any]]: ...
    def children(self, layer: Any) -> list[tuple[str, Any]]: ...
    def type_name(self, layer: Any) -> str: ...
    def qualified_type(self, layer: Any) -> str: ...
    def own_params(self, layer: Any) -> list[tuple[str, Any]]: ...
    def own_buffers(self, layer: Any) -> list[tuple[str, Any]]: ...
    def state_dict(self, model: Any) -> dict[str, Any]: ...
    def to_numpy(self, tensor: Any) -> Any: ...
    def numpy_view(self, tensor: Any) -> Any: ...
    def assign(self, tensor: Any, array: Any, temporary: bool = True) -> None: ...
    def batched(self) -> ContextManager[None]: ...
    def shape(self, tensor: Any) -> tuple[int, ...]: ...
    def dtype_name(self, tensor: Any) -> str: ...
    def register_forward_hook(self, layer: Any, fn: Any) -> Any: ...
    def register_forward_pre_hook(self, layer: Any, fn: Any) -> Any: ...
    def register_tensor_grad_hook(self, tensor: Any, fn: Any) -> Any: ...
    def grad(self, param: Any) -> Any: ...
    def train(self, model: Any, mode: bool) -> None: ...
    def is_training(self, layer: Any) -> bool: ...
    def from_numpy(self, array: Any) -> Any: ...


_ADAPTERS: dict[str, Adapter] = {}


def paddle_adapter() -> Adapter:
    """The (shared) Paddle adapter; imports paddle."""
    if "paddle" not in _ADAPTERS:
        from ._paddle import PaddleAdapter

        _ADAPTERS["paddle"] = PaddleAdapter()
    return _ADAPTERS["paddle"]


def torch_adapter() -> Adapter:
    """The (shared) torch adapter; imports torch."""
    if "torch" not in _ADAPTERS:
        from ._torch import TorchAdapter

        _ADAPTERS["torch"] = TorchAdapter()
    return _ADAPTERS["torch"]


def framework_of(obj: Any) -> str | None:
    """``"paddle"`` / ``"torch"`` for a model (layer) or tensor of that framework, else None.

    Never imports a framework: only those already in ``sys.modules`` are asked.
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, (torch.nn.Module, torch.Tensor)):
        return "torch"
    paddle = sys.modules.get("paddle")
    if paddle is not None:
        layer_cls = getattr(getattr(paddle, "nn", None), "Layer", None)
        tensor_cls = getattr(paddle, "Tensor", None)
        if layer_cls is not None and isinstance(obj, layer_cls):
            return "paddle"
        if tensor_cls is not None and isinstance(obj, tensor_cls):
            return "paddle"
        base = getattr(paddle, "base", None) or getattr(paddle, "fluid", None)
        eager = getattr(getattr(base, "framework", None), "EagerParamBase", None)
        if eager is not None and isinstance(obj, eager):
            return "paddle"
    return None


def adapter_for(obj: Any) -> Adapter:
    """The adapter for a torch / Paddle model or tensor; ``TypeError`` naming the type otherwise."""
    fw = framework_of(obj)
    if fw == "torch":
        return torch_adapter()
    if fw == "paddle":
        return paddle_adapter()
    raise TypeError(
        f"expected a torch.nn.Module / torch.Tensor or a paddle.nn.Layer / paddle.Tensor, "
        f"got {type(obj).__module__}.{type(obj).__qualname__}"
    )
