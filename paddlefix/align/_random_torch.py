"""same_randomness, the torch side: dropout kernels, SDPA, random tensors, settings.

Dropout is taken where every torch dropout flavour ends: the ``torch._VF`` kernels
(``dropout``, ``feature_dropout``, ``alpha_dropout``, ``feature_alpha_dropout`` and their
in-place ``_`` forms) that ``torch.nn.functional.dropout`` / ``dropout1d`` / ``dropout2d`` /
``dropout3d`` / ``alpha_dropout`` / ``feature_alpha_dropout`` call, plus the same kernels as
``torch.dropout`` etc. So torch's own argument checks, warnings and batch handling stay as
they are, and references to ``F.dropout`` taken before the context are covered too. The
arithmetic is ATen's (``Dropout.cpp``): ``x * (mask / (1 - p))``; alpha dropout
``x * (mask * a) + ((mask - 1) * alpha * a + alpha * a * p)``.

``scaled_dot_product_attention`` with ``dropout_p > 0`` runs the documented math path
(``softmax(q k^T * scale + bias)``, dropout with the shared mask, ``@ v``); with
``dropout_p == 0`` it is the stock function.
"""

from __future__ import annotations

import functools
import math
import sys
from typing import Any, Callable

from . import _random_stream as S
from ._errors import RandomnessError
from ._randomness import Replacement, SameRandomness, Setting, current

FW = "torch"

_KERNELS = (
    # name, feature (channel) mask, alpha, in place
    ("dropout", False, False, False),
    ("dropout_", False, False, True),
    ("feature_dropout", True, False, False),
    ("feature_dropout_", True, False, True),
    ("alpha_dropout", False, True, False),
    ("alpha_dropout_", False, True, True),
    ("feature_alpha_dropout", True, True, False),
    ("feature_alpha_dropout_", True, True, True),
)


def _label(kernel: str) -> str:
    """The torch.nn.functional function that called the kernel, if it was one."""
    frame = sys._getframe(2)
    if frame.f_code.co_filename.endswith("functional.py") and "torch" in frame.f_code.co_filename:
        return f"torch.nn.functional.{frame.f_code.co_name}"
    return f"torch.{kernel.rstrip('_')}"


def _apply_dropout(ctx: SameRandomness, input: Any, p: float, feature: bool, alpha: bool, inplace: bool, label: str) -> Any:
    import numpy as np
    import torch

    shape = tuple(input.shape[:2]) + (1,) * (input.dim() - 2) if feature else tuple(input.shape)
    if getattr(torch._C, "_current_autograd_node", lambda: None)() is not None:
        raise RandomnessError(
            f"same_randomness: {label} was called during backward: a forward recomputed for the "
            "backward pass (torch.utils.checkpoint, Hugging Face gradient checkpointing) would draw a "
            "new mask instead of the forward's. Turn recomputation off inside the context "
            "(model.gradient_checkpointing_disable())."
        )
    rng = ctx.draw(FW, "dropout", label, shape, (("p", round(float(p), 7)),))
    keep = S.keep_mask(rng, shape, p).astype(np.float32)
    if not alpha:
        noise = keep / np.float32(1.0 - p)
        mask = torch.from_numpy(noise).to(device=input.device, dtype=input.dtype)
        return input.mul_(mask) if inplace else input * mask
    a = 1.0 / math.sqrt((S.TORCH_ALPHA * S.TORCH_ALPHA * p + 1) * (1 - p))
    b = (keep - np.float32(1.0)) * np.float32(S.TORCH_ALPHA * a) + np.float32(S.TORCH_ALPHA * a * p)
    noise = keep * np.float32(a)
    mul = torch.from_numpy(noise).to(device=input.device, dtype=input.dtype)
    add = torch.from_numpy(b).to(device=input.device, dtype=input.dtype)
    return input.mul_(mul).add_(add) if inplace else (input * mul).add_(add)


def _make_kernel(name: str, original: Callable[..., Any], feature: bool, alpha: bool, inplace: bool) -> Callable[..., Any]:
    def kernel(input: Any, p: float, train: bool) -> Any:
        ctx = current()
        if ctx is None:
            return original(input, p, train)
        if not train or p == 0 or p == 1:
            ctx.skip(FW)
            return original(input, p, train)
        if not 0 < p < 1 or not input.is_floating_point() or input.numel() == 0 or (feature and input.dim() < 2):
            return original(input, p, train)  # torch's own error, or nothing random to share
        return _apply_dropout(ctx, input, p, feature, alpha, inplace, _label(name))

    kernel.__name__ = kernel.__qualname__ = name
    kernel.__doc__ = f"torch {name} drawing its mask from paddlefix.align.same_randomness's stream."
    return kernel


def _make_sdpa(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def scaled_dot_product_attention(
        query: Any,
        key: Any,
        value: Any,
        attn_mask: Any = None,
        dropout_p: float = 0.0,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ) -> Any:
        ctx = current()
        kwargs: dict[str, Any] = {"attn_mask": attn_mask, "dropout_p": dropout_p, "is_causal": is_causal, "scale": scale}
        if enable_gqa:
            kwargs["enable_gqa"] = enable_gqa
        if ctx is None or not dropout_p > 0:
            return original(query, key, value, **kwargs)
        import torch

        if is_causal and attn_mask is not None:
            return original(query, key, value, **kwargs)  # torch's own error
        length, source = query.size(-2), key.size(-2)
        factor = 1 / math.sqrt(query.size(-1)) if scale is None else scale
        if enable_gqa:
            key = key.repeat_interleave(query.size(-3) // key.size(-3), -3)
            value = value.repeat_interleave(query.size(-3) // value.size(-3), -3)
        weights = query @ key.transpose(-2, -1) * factor
        if is_causal:
            causal = torch.ones(length, source, dtype=torch.bool, device=query.device).tril()
            weights = weights.masked_fill(causal.logical_not(), float("-inf"))
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                weights = weights.masked_fill(attn_mask.logical_not(), float("-inf"))
            else:
                weights = weights + attn_mask
        weights = torch.softmax(weights, dim=-1)
        if dropout_p >= 1:
            weights = weights * 0.0
        else:
            label = f"torch.nn.functional.scaled_dot_product_attention(dropout_p={dropout_p})"
            weights = _apply_dropout(ctx, weights, dropout_p, False, False, False, label)
        return weights @ value

    return scaled_dot_product_attention


# -- random tensors ----------------------------------------------------------------------
def _size(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, ...]:
    import torch

    if "size" in kwargs:
        size = kwargs.pop("size")
    elif len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
        size = args[0]
    else:
        size = args
    return tuple(int(s) for s in size)


def _finish(array: Any, kwargs: dict[str, Any], default_dtype: Any, fn: str) -> Any:
    import torch

    out = kwargs.pop("out", None)
    dtype = kwargs.pop("dtype", None) or (out.dtype if out is not None else default_dtype)
    device = kwargs.pop("device", None)
    requires_grad = kwargs.pop("requires_grad", False)
    kwargs.pop("layout", None)
    kwargs.pop("pin_memory", None)
    if kwargs:
        raise TypeError(f"torch.{fn}: same_randomness does not cover the argument(s) {sorted(kwargs)}")
    tensor = torch.from_numpy(array).to(device=device if device is not None else "cpu", dtype=dtype)
    if out is not None:
        out.resize_(tensor.shape)
        out.copy_(tensor)
        return out
    if requires_grad:
        tensor.requires_grad_(True)
    return tensor


def _numpy(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    return value


def _param(value: Any) -> Any:
    import torch

    return "tensor" if isinstance(value, torch.Tensor) else float(value)


def _take_named(names: tuple[str, ...], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``names`` bound to the positional ``args`` in order, then those in ``kwargs`` (popped from it)."""
    bound = dict(zip(names, args))
    for arg in names:
        if arg in kwargs:
            bound[arg] = kwargs.pop(arg)
    return bound


def _make_tensor_fn(fn: str, original: Callable[..., Any]) -> Callable[..., Any]:
    def own_generator(kwargs: dict[str, Any]) -> bool:
        return kwargs.get("generator") is not None

    @functools.wraps(original)
    def replacement(*args: Any, **kwargs: Any) -> Any:
        ctx = current()
        if ctx is None or own_generator(kwargs):
            return original(*args, **kwargs)  # an explicit generator keeps its own stream
        kwargs.pop("generator", None)
        import torch

        if fn in ("rand", "randn"):
            shape = _size(args, kwargs)
            rng = ctx.draw(FW, fn, f"torch.{fn}", shape, ())
            values = S.uniform(rng, shape) if fn == "rand" else S.standard_normal(rng, shape)
            return _finish(values, kwargs, torch.get_default_dtype(), fn)
        if fn == "randint":
            ints = [a for a in args if not isinstance(a, (tuple, list, torch.Size))]
            sizes = [a for a in args if isinstance(a, (tuple, list, torch.Size))]
            low = kwargs.pop("low", None)
            high = kwargs.pop("high", None)
            if len(ints) == 2:
                low, high = ints
            elif len(ints) == 1:
                if high is None:
                    high = ints[0]
                else:
                    low = ints[0]
            low = 0 if low is None else int(low)
            if high is None:
                raise TypeError("torch.randint: missing the argument 'high'")
            shape = _size(tuple(sizes[0]) if sizes else (), kwargs)
            rng = ctx.draw(FW, fn, "torch.randint", shape, (("low", low), ("high", int(high))))
            return _finish(S.integers(rng, low, int(high), shape), kwargs, torch.int64, fn)
        if fn == "normal":
            bound = _take_named(("mean", "std", "size"), args, kwargs)
            mean, std = bound.get("mean", 0.0), bound.get("std", 1.0)
            tensors = [v for v in (mean, std) if isinstance(v, torch.Tensor)]
            if "size" in bound:
                shape = tuple(int(s) for s in bound["size"])
            elif tensors:
                shape = tuple(torch.broadcast_shapes(*(t.shape for t in tensors)))
            else:
                raise TypeError("torch.normal: give size= when mean and std are numbers")
            rng = ctx.draw(FW, fn, "torch.normal", shape, (("mean", _param(mean)), ("std", _param(std))))
            values = S.normal(rng, _numpy(mean), _numpy(std), shape)
            dtype = tensors[0].dtype if tensors else torch.get_default_dtype()
            if tensors and "device" not in kwargs:
                kwargs["device"] = tensors[0].device
            return _finish(values, kwargs, dtype, fn)
        if fn == "bernoulli":
            input = args[0] if args else kwargs.pop("input")
            p = args[1] if len(args) > 1 else kwargs.pop("p", None)
            probs = _numpy(input) if p is None else float(p) + 0 * _numpy(input)
            rng = ctx.draw(FW, fn, "torch.bernoulli", tuple(input.shape), (("p", "tensor" if p is None else float(p)),))
            kwargs.setdefault("device", input.device)
            return _finish(S.bernoulli(rng, probs), kwargs, input.dtype, fn)
        if fn == "randperm":
            n = int(args[0] if args else kwargs.pop("n"))
            rng = ctx.draw(FW, fn, "torch.randperm", (n,), ())
            return _finish(S.permutation(rng, n), kwargs, torch.int64, fn)
        if fn == "multinomial":
            bound = _take_named(("input", "num_samples", "replacement"), args, kwargs)
            input, num, replacement = bound["input"], int(bound["num_samples"]), bool(bound.get("replacement", False))
            params = (("num_samples", num), ("replacement", replacement))
            rng = ctx.draw(FW, fn, "torch.multinomial", tuple(input.shape), params)
            kwargs.setdefault("device", input.device)
            return _finish(S.multinomial(rng, _numpy(input), num, replacement), kwargs, torch.int64, fn)
        raise AssertionError(fn)  # pragma: no cover - every name in TENSOR_FNS is handled above

    return replacement


TENSOR_FNS = ("rand", "randn", "randint", "normal", "bernoulli", "randperm", "multinomial")


# -- the framework hooks used by _randomness ---------------------------------------------
def replacements(*, tensors: bool) -> list[Replacement]:
    """What the context replaces on the torch side."""
    import torch
    import torch.nn.functional as F

    vf = sys.modules["torch._VF"]
    out = []
    for name, feature, alpha, inplace in _KERNELS:
        original = getattr(vf, name, None)
        if original is not None:
            out.append(Replacement(original, _make_kernel(name, original, feature, alpha, inplace), extra=((vf, name),)))
    sdpa = getattr(F, "scaled_dot_product_attention", None)
    if sdpa is not None:
        out.append(Replacement(sdpa, _make_sdpa(sdpa), skip_prefixes=("torch._C",)))
    if tensors:
        for fn in TENSOR_FNS:
            original = getattr(torch, fn)
            out.append(Replacement(original, _make_tensor_fn(fn, original), skip_prefixes=("torch.",)))
    return out


def enter_settings(seed: int, deterministic: bool, settings: list[Setting]) -> Callable[[], None]:
    """Seed torch's generators and turn on its deterministic settings; returns the undo."""
    import os

    import torch

    undo: list[Callable[[], None]] = []
    cpu_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    torch.manual_seed(seed)

    def restore_rng() -> None:
        torch.set_rng_state(cpu_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)

    undo.append(restore_rng)
    settings.append(Setting("torch.manual_seed", "(generator state saved)", seed, "for random ops not covered"))
    if deterministic:
        before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
        torch.use_deterministic_algorithms(True, warn_only=True)
        undo.append(lambda: torch.use_deterministic_algorithms(before[0], warn_only=before[1]))
        settings.append(
            Setting(
                "torch.use_deterministic_algorithms",
                {"mode": before[0], "warn_only": before[1]},
                {"mode": True, "warn_only": True},
                "an op without a deterministic implementation warns",
            )
        )
        cudnn = torch.backends.cudnn
        det, bench = cudnn.deterministic, cudnn.benchmark
        cudnn.deterministic, cudnn.benchmark = True, False

        def restore_cudnn() -> None:
            cudnn.deterministic, cudnn.benchmark = det, bench

        undo.append(restore_cudnn)
        settings.append(Setting("torch.backends.cudnn.deterministic", det, True))
        settings.append(Setting("torch.backends.cudnn.benchmark", bench, False))
        if torch.cuda.is_available() and not os.environ.get("CUBLAS_WORKSPACE_CONFIG"):
            settings.append(
                Setting("CUBLAS_WORKSPACE_CONFIG", None, None, "not set: export CUBLAS_WORKSPACE_CONFIG=:4096:8 for deterministic cuBLAS")
            )
    tf32 = torch.backends.cuda.matmul.allow_tf32
    settings.append(Setting("torch.backends.cuda.matmul.allow_tf32", tf32, tf32, "TF32 left as it is (matmul_precision)"))

    def restore() -> None:
        for fn in reversed(undo):
            fn()

    return restore
