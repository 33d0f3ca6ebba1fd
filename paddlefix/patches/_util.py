"""Helpers shared by several patch modules (kept free of heavy imports: ``import paddlefix`` stays cheap)."""

from __future__ import annotations

from typing import Any, Callable


def signature(fn: Callable[..., Any]) -> Any:
    """``inspect.signature(fn)``, importing :mod:`inspect` only when a patch is applied."""
    import inspect

    return inspect.signature(fn)


def grad_enabled(paddle: Any) -> Any:
    """A context manager that turns autograd on for a probe, whatever the caller's mode.

    ``paddle.enable_grad`` (2.5+), else ``paddle.set_grad_enabled(True)``, else a no-op.
    """
    enable = getattr(paddle, "enable_grad", None)
    if enable is not None:
        return enable()
    setter = getattr(paddle, "set_grad_enabled", None)
    if setter is not None:
        return setter(True)
    import contextlib

    return contextlib.nullcontext()


def bind_arguments(sig: Any, args: tuple, kwargs: dict) -> Any:
    """The call's arguments by name with defaults filled in, or None if the call does not bind."""
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    return bound.arguments


def paddlenlp_subclasses(base: Any) -> list[Any]:
    """Every class below ``base`` (each once, ``base`` itself left out) defined in a paddlenlp module.

    Walks ``__subclasses__()``, so only classes already imported are found; imports nothing.
    """
    out: list[Any] = []
    stack = [base]
    seen: set[Any] = set()
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        stack.extend(cls.__subclasses__())
        if cls is not base and cls.__module__.startswith("paddlenlp."):
            out.append(cls)
    return out
