"""eval_grad: backward through Dropout and BatchNorm layers in eval mode.

What: ``model.eval()`` then ``loss.backward()`` -- the deterministic backward pass people use
to align a port with PyTorch -- failed on Paddle <= 2.2.0: the dropout grad kernel refused
``is_test`` ("GradOp is only callable when is_test is false", Paddle#30938, #33277, #34293) and
batch norm's did too (Paddle#32399). Fixed for 2.2.1 (Paddle#37305, #37331).

How: on affected versions the eval-mode outputs are computed with ordinary differentiable
ops instead of the ``is_test`` kernels, so gradients flow; train mode is untouched.

- ``paddle.nn.functional.dropout`` (and so ``nn.Dropout``, ``dropout2d/3d``, ``nn.Dropout2D/3D``)
  with ``training=False``: a copy of ``x`` (``upscale_in_train``) or ``x * (1 - p)``
  (``downscale_in_infer``, ``1 - p`` rounded in float32 as the kernel does). The ``axis=``
  form already used differentiable ops and is passed through.
- ``alpha_dropout`` / ``nn.AlphaDropout``: identity in eval on every version; passed through.
- ``paddle.nn.functional.batch_norm`` (``nn.BatchNorm1D/2D/3D``) and ``nn.BatchNorm`` in eval
  (running statistics): ``x * s + t`` with ``s = weight / sqrt(var + eps)`` and
  ``t = bias - mean * s``, broadcast on the channel axis, which is the inference kernel's
  own arithmetic: outputs and input gradients are bit-identical to the stock kernels, the
  weight / bias gradients equal them up to summation order (float rounding).

The probe runs eval-mode Dropout + BatchNorm1D forward and backward on the real library.
"""

from __future__ import annotations

import functools
from typing import Any

from ..registry import Finding, Patch, Patcher
from ._util import bind_arguments, grad_enabled, signature

__all__ = ["SPEC"]


def problem_present() -> Finding:
    """Eval-mode Dropout and BatchNorm1D, forward and backward, on the real library."""
    import paddle

    if not paddle.in_dynamic_mode():
        return Finding(True, "static graph mode: not probed (assumed affected in the version range)")
    from paddle.utils import unique_name

    with unique_name.guard(), grad_enabled(paddle):
        drop = paddle.nn.Dropout(0.5)
        norm = paddle.nn.BatchNorm1D(3)
        # Set the flags directly: Layer.eval() would also flip the tracer's global train mode.
        drop.training = False
        norm.training = False
        x = paddle.to_tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], stop_gradient=False)
        try:
            norm(drop(x)).sum().backward()
        except Exception as exc:  # the failure mode on affected versions
            return Finding(True, f"backward in eval mode raised {type(exc).__name__}: {str(exc)[:120]}")
        weight: Any = norm.weight
        missing = [n for n, t in (("input", x), ("BatchNorm weight", weight)) if t.grad is None]
    if missing:
        return Finding(True, f"eval-mode backward left no gradient for: {', '.join(missing)}")
    return Finding(False, "eval-mode Dropout + BatchNorm1D backward gives gradients")


# -- replacements ----------------------------------------------------------------------


def _keep_prob(p: float) -> float:
    """``1 - p`` rounded as the dropout kernel computes it (``1.0f - (float)p``)."""
    import numpy as np

    return float(np.float32(1.0) - np.float32(p))


def _eval_dropout(paddle: Any, x: Any, p: float, mode: str) -> Any:
    if mode == "downscale_in_infer":
        return paddle.multiply(x, paddle.full([1], _keep_prob(p), x.dtype))
    return paddle.assign(x)  # the is_test kernel returns a copy, not x itself


def _make_dropout(original: Any) -> Any:
    sig = signature(original)

    @functools.wraps(original)
    def dropout(*args: Any, **kwargs: Any) -> Any:
        import paddle

        a = bind_arguments(sig, args, kwargs)
        if a is None:
            return original(*args, **kwargs)  # let the stock function raise its own error
        p = a.get("p", 0.5)
        if (
            a.get("training", True)
            or a.get("axis") is not None  # the axis form already uses differentiable ops
            or a.get("inplace", False)
            or not paddle.in_dynamic_mode()
            or isinstance(p, bool)
            or not isinstance(p, (int, float))
            or not 0 < p <= 1
            or a.get("mode", "upscale_in_train") not in ("upscale_in_train", "downscale_in_infer")
        ):
            return original(*args, **kwargs)  # including every error the stock function raises
        return _eval_dropout(paddle, a["x"], float(p), a.get("mode", "upscale_in_train"))

    return dropout


def _channel_shape(ndim: int, channels: int, channels_last: bool) -> list[int]:
    shape = [1] * ndim
    shape[ndim - 1 if channels_last else 1] = channels
    return shape


def _eval_batch_norm(paddle: Any, x: Any, mean: Any, var: Any, weight: Any, bias: Any, eps: float, channels_last: bool) -> Any:
    """The inference kernel's arithmetic with differentiable ops."""
    inv_std = 1.0 / paddle.sqrt(var + eps)
    if weight is None:  # the kernel then uses ones / zeros
        weight = paddle.ones_like(mean)
    if bias is None:
        bias = paddle.zeros_like(mean)
    scale = inv_std * weight
    shift = bias - mean * inv_std * weight
    shape = _channel_shape(len(x.shape), int(mean.shape[0]), channels_last)
    scale = scale.reshape(shape)
    shift = shift.reshape(shape)
    if x.dtype != scale.dtype:  # float16 / bfloat16 inputs: the kernel computes in float32
        return (x.astype(scale.dtype) * scale + shift).astype(x.dtype)
    return x * scale + shift


def _make_batch_norm(original: Any) -> Any:
    sig = signature(original)

    @functools.wraps(original)
    def batch_norm(*args: Any, **kwargs: Any) -> Any:
        import paddle

        a = bind_arguments(sig, args, kwargs)
        if a is None:
            return original(*args, **kwargs)  # let the stock function raise its own error
        fmt = a.get("data_format", "NCHW")
        x = a.get("x")
        if (
            a.get("training", False)
            or a.get("use_global_stats") is False  # "trainable statistics": batch statistics
            or not paddle.in_dynamic_mode()
            or not isinstance(fmt, str)
            or fmt not in ("NC", "NCL", "NCHW", "NCDHW", "NLC", "NHWC", "NDHWC")
            or x is None
            or len(x.shape) < 2
        ):
            return original(*args, **kwargs)
        return _eval_batch_norm(
            paddle,
            x,
            a["running_mean"],
            a["running_var"],
            a.get("weight"),
            a.get("bias"),
            float(a.get("epsilon", 1e-5)),
            channels_last=fmt[1] != "C",
        )

    return batch_norm


def _make_legacy_batch_norm_forward(original: Any) -> Any:
    """``paddle.nn.BatchNorm`` (the fluid-style layer) calls the kernel directly."""

    @functools.wraps(original)
    def forward(self: Any, input: Any) -> Any:
        import paddle

        if (
            self.training
            or getattr(self, "_trainable_statistics", False)
            or not paddle.in_dynamic_mode()
            or len(input.shape) < 2
        ):
            return original(self, input)
        layout = getattr(self, "_data_layout", "NCHW")
        out = _eval_batch_norm(
            paddle, input, self._mean, self._variance, self.weight, self.bias, float(self._epsilon), layout == "NHWC"
        )
        act = getattr(self, "_act", None)
        if act:
            helper = getattr(original.__globals__.get("dygraph_utils"), "_append_activation_in_dygraph", None)
            out = helper(out, act=act) if helper is not None else getattr(paddle.nn.functional, act)(out)
        return out

    return forward


def apply(patcher: Patcher) -> None:
    import paddle
    import paddle.nn.functional as F

    original = patcher.original(F, "dropout")
    patcher.replace_everywhere(original, _make_dropout(original), packages=("paddle",))
    original = patcher.original(F, "batch_norm")
    patcher.replace_everywhere(original, _make_batch_norm(original), packages=("paddle",))
    legacy = getattr(paddle.nn, "BatchNorm", None)
    if legacy is not None and "forward" in vars(legacy):
        patcher.replace(legacy, "forward", _make_legacy_batch_norm_forward(vars(legacy)["forward"]))


SPEC = Patch(
    name="eval_grad",
    summary="backward works in eval mode (dropout / batch norm grad kernels refused is_test)",
    requires={"paddlepaddle|paddlepaddle-gpu": "<2.2.1"},
    module="paddle",
    probe=problem_present,
    apply=apply,
    fixed_in="2.2.1",
    links=("Paddle#30938", "Paddle#33277", "Paddle#34293", "Paddle#32399", "Paddle#37305", "Paddle#37331"),
)
