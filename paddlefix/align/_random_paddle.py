"""same_randomness, the Paddle side: dropout functions, random tensors, settings.

``paddle.nn.functional.dropout`` (so ``nn.Dropout``, ``dropout1d/2d/3d``, which call it with
``axis=``, ``nn.Dropout2D/3D`` and the attention-weights dropout of ``nn.MultiHeadAttention``),
``alpha_dropout`` and ``feature_alpha_dropout`` are replaced in every loaded module that holds
them. The arithmetic is Paddle's own:

- ``upscale_in_train``, train: ``x * (mask * float32(1 / (1 - p)))`` -- the ``axis=`` path's
  ``scale(x, 1 / keep_prob) * keep_mask``, bit for bit (the fused kernel of the ``axis=None``
  path divides instead: the same value within one float32 rounding);
- ``downscale_in_infer``, train: ``x * mask`` (no scaling); eval: the stock function, which
  scales by ``1 - p``;
- alpha dropout: ``scale(x * keep + scale(drop, alpha_p), a) + b`` with Paddle's constants.

Calls in eval mode, with ``p == 0`` or ``p == 1`` (nothing random) or in static-graph mode go
to the stock function and draw nothing.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from typing import Any, Callable

from .._errors import PaddlefixWarning
from . import _random_stream as S
from ._randomness import Replacement, Setting, current

FW = "paddle"

_MODES = ("upscale_in_train", "downscale_in_infer")


def _bind(sig: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any], first: str) -> dict[str, Any] | None:
    if "input" in kwargs and first not in kwargs and "input" not in sig.parameters:
        kwargs = dict(kwargs)
        kwargs[first] = kwargs.pop("input")
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    return dict(bound.arguments)


def _mask_tensor(array: Any, x: Any) -> Any:
    import paddle

    tensor = paddle.to_tensor(array, place=x.place)
    return tensor if tensor.dtype == x.dtype else tensor.astype(x.dtype)


def _number(p: Any) -> float | None:
    import paddle

    if isinstance(p, bool):
        return None
    if isinstance(p, (int, float)):
        return float(p)
    if isinstance(p, paddle.Tensor) and p.size == 1:
        return float(p.numpy().reshape(-1)[0])
    return None


def _static_warning(fn: str) -> None:
    warnings.warn(
        f"same_randomness: {fn} in static-graph mode is not covered; its masks come from Paddle's generator",
        PaddlefixWarning,
        stacklevel=4,
    )


def _make_dropout(original: Callable[..., Any]) -> Callable[..., Any]:
    sig = inspect.signature(original)

    @functools.wraps(original)
    def dropout(*args: Any, **kwargs: Any) -> Any:
        ctx = current()
        if ctx is None:
            return original(*args, **kwargs)
        import numpy as np
        import paddle

        a = _bind(sig, args, kwargs, "x")
        if a is None:
            return original(*args, **kwargs)  # Paddle's own error
        x, axis, mode = a["x"], a.get("axis"), a.get("mode", "upscale_in_train")
        p = _number(a.get("p", 0.5))
        if not paddle.in_dynamic_mode():
            _static_warning("paddle.nn.functional.dropout")
            return original(*args, **kwargs)
        if p is not None and (not a.get("training", True) or p == 0 or p == 1) and mode in _MODES:
            ctx.skip(FW)
            return original(*args, **kwargs)
        if p is None or not 0 < p < 1 or mode not in _MODES:
            return original(*args, **kwargs)
        shape = [int(s) for s in x.shape]
        label = "paddle.nn.functional.dropout"
        if axis is not None:
            axes = [axis] if isinstance(axis, int) else list(axis) if isinstance(axis, (list, tuple)) else None
            if not axes or min(axes) < 0 or max(axes) > len(shape) - 1 or len(axes) > len(shape):
                return original(*args, **kwargs)
            if a.get("inplace"):
                return original(*args, **kwargs)  # Paddle's NotImplementedError
            shape = [s if i in axes else 1 for i, s in enumerate(shape)]
            label += f"(axis={axes})"
        if mode != "upscale_in_train":
            label += f"(mode={mode!r})"
        rng = ctx.draw(FW, "dropout", label, tuple(shape), (("p", round(p, 7)),))
        keep = S.keep_mask(rng, tuple(shape), p).astype(np.float32)
        if mode == "upscale_in_train":
            keep *= np.float32(1 / (1 - p))
        mask = _mask_tensor(keep, x)
        if a.get("inplace"):
            return x.multiply_(mask)
        return paddle.multiply(x, mask)

    return dropout


def _make_alpha(original: Callable[..., Any], feature: bool, fn: str) -> Callable[..., Any]:
    sig = inspect.signature(original)

    @functools.wraps(original)
    def alpha_dropout(*args: Any, **kwargs: Any) -> Any:
        ctx = current()
        if ctx is None:
            return original(*args, **kwargs)
        import numpy as np
        import paddle

        a = _bind(sig, args, kwargs, "x")
        if a is None:
            return original(*args, **kwargs)
        x, training = a["x"], a.get("training", True)
        p = a.get("p", 0.5)
        if not paddle.in_dynamic_mode():
            _static_warning(f"paddle.nn.functional.{fn}")
            return original(*args, **kwargs)
        if isinstance(p, (int, float)) and not isinstance(p, bool) and (not training or p == 0 or p == 1):
            ctx.skip(FW)
            return original(*args, **kwargs)
        if not isinstance(p, (int, float)) or not 0 < p < 1 or (feature and x.ndim < 2):
            return original(*args, **kwargs)  # Paddle's own error
        p = float(p)
        shape = [int(s) for s in x.shape]
        if feature:
            shape = shape[:2] + [1] * (len(shape) - 2)
        rng = ctx.draw(FW, "dropout", f"paddle.nn.functional.{fn}", tuple(shape), (("p", round(p, 7)),))
        keep = S.keep_mask(rng, tuple(shape), p).astype(np.float32)
        alpha_p = -S.PADDLE_SELU_ALPHA * S.PADDLE_SELU_SCALE
        scale_a = ((1 - p) * (1 + p * alpha_p**2)) ** -0.5
        b = -scale_a * alpha_p * p
        keep_t = _mask_tensor(keep, x)
        drop_t = _mask_tensor(np.float32(1.0) - keep, x)
        y = paddle.add(paddle.multiply(x, keep_t), paddle.scale(drop_t, scale=alpha_p))
        return paddle.add(paddle.scale(y, scale=scale_a), paddle.full(shape, b, dtype=x.dtype))

    return alpha_dropout


# -- random tensors ----------------------------------------------------------------------
def _shape(shape: Any) -> tuple[int, ...]:
    import paddle

    if isinstance(shape, paddle.Tensor):
        return tuple(int(s) for s in shape.numpy().reshape(-1))
    if isinstance(shape, int):
        return (shape,)
    return tuple(int(s) for s in shape)


def _numpy(value: Any) -> Any:
    import paddle

    if isinstance(value, paddle.Tensor):
        return value.numpy().astype("float64")
    return value


def _finish(array: Any, a: dict[str, Any], dtype: Any, fn: str) -> Any:
    import paddle

    device = a.get("device")
    tensor = paddle.to_tensor(array, place=device).astype(dtype or paddle.get_default_dtype())
    if a.get("requires_grad"):
        tensor.stop_gradient = False
    out = a.get("out")
    if out is not None:
        paddle.assign(tensor, out)
        return out
    return tensor


def _make_tensor_fn(fn: str, original: Callable[..., Any]) -> Callable[..., Any]:
    sig = inspect.signature(original)
    kind = "randn" if fn == "standard_normal" else fn
    first = next(iter(sig.parameters), "x")

    @functools.wraps(original)
    def replacement(*args: Any, **kwargs: Any) -> Any:
        ctx = current()
        if ctx is None:
            return original(*args, **kwargs)
        import paddle

        if not paddle.in_dynamic_mode():
            _static_warning(f"paddle.{fn}")
            return original(*args, **kwargs)
        a = _bind(sig, args, kwargs, first)
        if a is None:
            return original(*args, **kwargs)  # Paddle's own error
        if fn in ("rand", "randn", "standard_normal"):
            shape = _shape(a["shape"])
            rng = ctx.draw(FW, kind, f"paddle.{fn}", shape, ())
            values = S.uniform(rng, shape) if fn == "rand" else S.standard_normal(rng, shape)
            return _finish(values, a, a.get("dtype"), fn)
        if fn == "randint":
            low, high = a.get("low", 0), a.get("high")
            if high is None:
                low, high = 0, low
            shape = _shape(a.get("shape", [1]))
            rng = ctx.draw(FW, kind, "paddle.randint", shape, (("low", int(low)), ("high", int(high))))
            return _finish(S.integers(rng, int(low), int(high), shape), a, a.get("dtype") or "int64", fn)
        if fn == "normal":
            mean, std = a.get("mean", 0.0), a.get("std", 1.0)
            tensors = [v for v in (mean, std) if isinstance(v, paddle.Tensor)]
            if any(isinstance(v, complex) for v in (mean, std)):
                raise TypeError("paddle.normal: same_randomness does not cover complex mean")
            if tensors:
                import numpy as np

                shape = tuple(np.broadcast_shapes(*(tuple(t.shape) for t in tensors)))
            elif a.get("shape") is not None:
                shape = _shape(a["shape"])
            else:
                raise ValueError("paddle.normal: shape is required when mean and std are numbers")

            def param(v: Any) -> Any:
                return "tensor" if isinstance(v, paddle.Tensor) else float(v)

            rng = ctx.draw(FW, kind, "paddle.normal", shape, (("mean", param(mean)), ("std", param(std))))
            values = S.normal(rng, _numpy(mean), _numpy(std), shape)
            return _finish(values, a, tensors[0].dtype if tensors else None, fn)
        if fn == "bernoulli":
            x, p = a["x"], a.get("p")
            probs = _numpy(x) if p is None else float(p) + 0 * _numpy(x)
            rng = ctx.draw(FW, kind, "paddle.bernoulli", tuple(int(s) for s in x.shape), (("p", "tensor" if p is None else float(p)),))
            return _finish(S.bernoulli(rng, probs), a, x.dtype, fn)
        if fn == "randperm":
            n = int(a["n"])
            rng = ctx.draw(FW, kind, "paddle.randperm", (n,), ())
            return _finish(S.permutation(rng, n), a, a.get("dtype") or "int64", fn)
        if fn == "multinomial":
            x, num, replacement_ = a["x"], int(a.get("num_samples", 1)), bool(a.get("replacement", False))
            params = (("num_samples", num), ("replacement", replacement_))
            rng = ctx.draw(FW, kind, "paddle.multinomial", tuple(int(s) for s in x.shape), params)
            return _finish(S.multinomial(rng, _numpy(x), num, replacement_), a, "int64", fn)
        raise AssertionError(fn)  # pragma: no cover - every name in TENSOR_FNS is handled above

    return replacement


TENSOR_FNS = ("rand", "randn", "standard_normal", "randint", "normal", "bernoulli", "randperm", "multinomial")
_PUBLIC = ("paddle", "paddle.tensor", "paddle.tensor.random")


# -- the framework hooks used by _randomness ---------------------------------------------
def replacements(*, tensors: bool) -> list[Replacement]:
    """What the context replaces on the Paddle side."""
    import paddle
    import paddle.nn.functional as F

    out = [Replacement(F.dropout, _make_dropout(F.dropout))]
    for fn, feature in (("alpha_dropout", False), ("feature_alpha_dropout", True)):
        original = getattr(F, fn, None)
        if original is not None:
            out.append(Replacement(original, _make_alpha(original, feature, fn)))
    if tensors:
        import sys

        for fn in TENSOR_FNS:
            original = getattr(paddle, fn, None)
            if original is None:
                continue
            extra = tuple(
                (sys.modules[m], a)
                for m in _PUBLIC
                if m in sys.modules
                for a, v in list(vars(sys.modules[m]).items())
                if v is original and m != "paddle"
            )
            out.append(Replacement(original, _make_tensor_fn(fn, original), skip_prefixes=("paddle.",), extra=extra))
    return out


def _flag(name: str) -> tuple[bool, Any]:
    import paddle

    try:
        return True, paddle.get_flags([name])[name]
    except Exception:
        return False, None


def enter_settings(seed: int, deterministic: bool, settings: list[Setting]) -> Callable[[], None]:
    """Seed Paddle's generator and set its deterministic flags where they exist; returns the undo."""
    import paddle

    undo: list[Callable[[], None]] = []
    state = paddle.get_rng_state()
    cpu_state = paddle.get_rng_state("cpu") if paddle.is_compiled_with_cuda() else None
    paddle.seed(seed)

    def restore_rng() -> None:
        paddle.set_rng_state(state)
        if cpu_state is not None:
            paddle.set_rng_state(cpu_state, "cpu")

    undo.append(restore_rng)
    settings.append(Setting("paddle.seed", "(generator state saved)", seed, "for random ops not covered"))
    if deterministic:
        for name in ("FLAGS_cudnn_deterministic", "FLAGS_cpu_deterministic", "FLAGS_embedding_deterministic"):
            present, before = _flag(name)
            if not present:
                settings.append(Setting(name, None, None, "not on this build"))
                continue
            during: Any = 1 if isinstance(before, int) and not isinstance(before, bool) else True
            paddle.set_flags({name: during})
            undo.append(functools.partial(paddle.set_flags, {name: before}))
            settings.append(Setting(name, before, during))
    from ..patches.matmul_precision import get_float32_matmul_precision

    mode = get_float32_matmul_precision()
    settings.append(Setting("paddle TF32 / float32 matmul precision", mode, mode, "left to paddlefix.set_float32_matmul_precision"))

    def restore() -> None:
        for fn in reversed(undo):
            fn()

    return restore
