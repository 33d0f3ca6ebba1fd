"""The adapter methods that read the same on both frameworks (imports neither).

``torch.nn.Module`` and ``paddle.nn.Layer`` keep their own parameters and buffers in ``_parameters``
/ ``_buffers`` dicts, list children with ``named_children()``, hold ``training`` and take a gradient
hook with ``Tensor.register_hook``; only the attribute naming non-persistent buffers differs.
"""

from __future__ import annotations

from typing import Any, Callable, ContextManager

__all__ = ["LayerAdapterBase"]


class LayerAdapterBase:
    """Framework-neutral part of an adapter; a subclass names ``_non_persistent_attr``."""

    _non_persistent_attr: str = ""
    """The layer attribute holding the names of buffers left out of the state dict."""

    def children(self, layer: Any) -> list[tuple[str, Any]]:
        return list(layer.named_children())

    def type_name(self, layer: Any) -> str:
        return type(layer).__name__

    def qualified_type(self, layer: Any) -> str:
        return f"{type(layer).__module__}.{type(layer).__qualname__}"

    def own_params(self, layer: Any) -> list[tuple[str, Any]]:
        return [(n, p) for n, p in layer._parameters.items() if p is not None]

    def own_buffers(self, layer: Any) -> list[tuple[str, Any]]:
        skip: set[str] = getattr(layer, self._non_persistent_attr, set())
        return [(n, b) for n, b in layer._buffers.items() if b is not None and n not in skip]

    def shape(self, tensor: Any) -> tuple[int, ...]:
        return tuple(int(d) for d in tensor.shape)

    def batched(self) -> ContextManager[None]:
        """A block in which ``assign`` may copy on worker threads; all copies are done at its end.

        The arrays given to ``assign`` must stay unchanged until then.
        """
        from ._fastcopy import deferred

        return deferred()

    def register_tensor_grad_hook(self, tensor: Any, fn: Callable[[Any], None]) -> Any:
        def hook(grad: Any) -> None:
            fn(grad)

        return tensor.register_hook(hook)

    def grad(self, param: Any) -> Any:
        return param.grad

    def is_training(self, layer: Any) -> bool:
        return bool(layer.training)
