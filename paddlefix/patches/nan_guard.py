"""nan_guard (opt-in): never apply a non-finite gradient.

Why: Paddle#36665 -- one batch of a single sample produced a NaN loss on GPU and every weight
became NaN after the next ``optimizer.step()``; no root cause was found. Whatever produces the
NaN / Inf, a stock optimizer applies it (the probe checks this on the installed version).

What: ``step()`` and ``minimize()`` of every optimizer in ``paddle.optimizer`` (``Optimizer``
and each subclass that defines its own ``step`` -- ``Adam``, ``AdamW``) first check every
gradient the step would apply. On a non-finite gradient the update is skipped entirely:
weights, moments, beta-power accumulators and other optimizer state stay as they are, and
the gradients are left untouched (``clear_grad()`` stays the caller's business). A
:class:`~paddlefix.PaddlefixWarning` names the first parameters with non-finite gradients
and the step number, and :func:`nan_guard_stats` counts the skips. With
``PADDLEFIX_NAN_GUARD=raise`` a ``FloatingPointError`` with the same text is raised instead.

Cost: one ``sum`` per gradient, their ``add_n`` and ONE host read per step. A sum is finite
only if every element is (NaN propagates, ``inf - inf`` is NaN); when the fast sum is not
finite, an exact per-tensor ``isfinite`` pass confirms it and names the parameters (so a sum
that merely overflowed does not skip a valid step).

``paddle.amp.GradScaler``: an *enabled* scaler (GPU/XPU) already checks the gradients with
one fused kernel (``check_finite_and_unscale``), hands ``found_inf`` to the optimizer and the
stock ``step`` / ``minimize`` then skip every update. nan_guard adds no second check there and
counts those skips as ``scaler_skipped`` (overflow is routine in dynamic loss scaling: no
warning, no raise). A disabled scaler (CPU, ``enable=False``) calls ``optimizer.step()`` /
``minimize()`` directly and gets the full guard.

Not covered: ``LBFGS`` (its ``step(closure)`` computes the gradients itself), static-graph /
``to_static`` programs, and sharded optimizers whose ranks hold different gradients.
"""

from __future__ import annotations

import functools
import math
import threading
import warnings
import weakref
from typing import Any, Callable, NamedTuple

from .._errors import PaddlefixWarning
from ..registry import Finding, Patch, Patcher
from ..settings import EnvVar, env_choice
from ._util import grad_enabled

__all__ = ["SPEC", "NanGuardStats", "nan_guard_stats", "ENV_NAN_GUARD"]

ENV_NAN_GUARD = "PADDLEFIX_NAN_GUARD"
_MODES = ("skip", "raise")
_SHOWN = 5  # parameters named in a message


class NanGuardStats(NamedTuple):
    """Counters of the nan_guard patch (process-wide, every optimizer)."""

    steps: int
    """Guarded ``step()`` / ``minimize()`` calls seen."""
    skipped: int
    """Updates nan_guard refused because of a non-finite gradient (skipped or raised)."""
    last_skipped_step: int | None
    """Step number of the last skip (per optimizer, counted from 1: its first guarded step since
    the process started or the last ``nan_guard_stats(reset=True)``)."""
    last_skipped_params: tuple[str, ...]
    """Names of the parameters with non-finite gradients at the last skip (first few)."""
    scaler_skipped: int
    """Updates an enabled ``paddle.amp.GradScaler`` skipped itself (``found_inf``)."""


class _Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.skipped = 0
        self.last_skipped_step: int | None = None
        self.last_skipped_params: tuple[str, ...] = ()
        self.scaler_skipped = 0

    def snapshot(self) -> NanGuardStats:
        return NanGuardStats(
            self.steps, self.skipped, self.last_skipped_step, self.last_skipped_params, self.scaler_skipped
        )


_counters = _Counters()
_step_numbers: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()
_local = threading.local()


def nan_guard_stats(reset: bool = False) -> NanGuardStats:
    """Counters of the nan_guard patch: steps seen, skipped, last skipped step and parameters.

    With ``reset=True`` the counters (and the per-optimizer step numbers) are zeroed after
    the snapshot is taken. The counters only move while nan_guard is applied
    (``paddlefix.apply("nan_guard")``).
    """
    if not isinstance(reset, bool):
        raise ValueError(f"nan_guard_stats(reset=): expected True or False, got {reset!r}")
    with _counters.lock:
        snap = _counters.snapshot()
        if reset:
            _counters.reset()
            _step_numbers.clear()
    return snap


def _mode() -> str:
    return env_choice(ENV_NAN_GUARD, _MODES, "skip")


# -- the check ---------------------------------------------------------------------------


def _params(opt: Any, parameters: Any = None) -> list[Any]:
    """The parameters ``step()`` would update (flattening parameter groups)."""
    source = parameters if parameters else (getattr(opt, "_param_groups", None) or getattr(opt, "_parameter_list", None) or [])
    out, seen = [], set()
    for item in source:
        group = item["params"] if isinstance(item, dict) else [item]
        for p in group:
            if isinstance(p, str) or id(p) in seen:
                continue
            seen.add(id(p))
            out.append(p)
    return out


def _grads(params: list[Any]) -> list[tuple[Any, Any]]:
    pairs = []
    for p in params:
        if getattr(p, "stop_gradient", False):
            continue
        g = getattr(p, "main_grad", None)
        if g is None:
            g = p._grad_ivar()
        if g is None:
            continue
        is_rows = getattr(g, "is_selected_rows", None)
        if is_rows is not None and is_rows():  # sparse (SelectedRows) gradient: check its values
            values = getattr(g, "_get_tensor_from_selected_rows", None)
            if values is None:
                continue
            g = values()
        pairs.append((p, g))
    return pairs


def _nonfinite(paddle: Any, pairs: list[tuple[Any, Any]]) -> list[Any]:
    """Parameters whose gradient holds a NaN or Inf; one host read when all are finite.

    Fast path: one ``sum`` per gradient (a single read of it, the cheapest reduction),
    ``add_n`` of the float32 sums and one host read. A sum is finite only if every element
    is (NaN propagates, ``inf - inf`` is NaN); for complex gradients the real and imaginary
    parts are checked as a real tensor (``as_real``), so a NaN/Inf in either part shows. Only when that total is not finite
    does an exact per-tensor ``isfinite`` pass name the parameters (and rule out a finite
    gradient whose sum merely overflowed).
    """
    if not pairs:
        return []
    low = tuple(getattr(paddle, n) for n in ("float16", "bfloat16") if hasattr(paddle, n))
    complex_ = tuple(getattr(paddle, n) for n in ("complex64", "complex128") if hasattr(paddle, n))
    if any(g.dtype in complex_ for _, g in pairs):  # astype(float32) would drop the imaginary part
        pairs = [(p, paddle.as_real(g) if g.dtype in complex_ else g) for p, g in pairs]
    sums = []
    for _, g in pairs:
        s = paddle.sum(g, dtype="float32") if g.dtype in low else paddle.sum(g)
        if s.dtype != paddle.float32:
            s = s.astype("float32")
        sums.append(s)
    total = sums[0] if len(sums) == 1 else paddle.add_n(sums)
    if math.isfinite(float(total.item())):  # the one host read
        return []
    # Slow path, only on trouble: which tensors? (and rule out a sum that merely overflowed)
    flags = paddle.stack([paddle.isfinite(g).all() for _, g in pairs]).numpy()
    return [p for (p, _), ok in zip(pairs, flags) if not ok]


def _name(p: Any) -> str:
    return str(getattr(p, "name", None) or f"<parameter shape={list(p.shape)}>")


def _refuse(opt: Any, step: int, bad: list[Any], total: int, via: str) -> None:
    names = tuple(_name(p) for p in bad[:_SHOWN])
    shown = ", ".join(names) + (f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else "")
    detail = (
        f"non-finite gradient (NaN/Inf) at step {step} of {type(opt).__name__}.{via}(): "
        f"{shown} ({len(bad)} of {total} parameters with gradients)"
    )
    with _counters.lock:
        _counters.skipped += 1
        _counters.last_skipped_step = step
        _counters.last_skipped_params = names
    if _mode() == "raise":
        raise FloatingPointError(f"paddlefix nan_guard: {detail}; update not applied")
    warnings.warn(
        f"paddlefix nan_guard: {detail}; update skipped (weights and optimizer state unchanged, "
        "gradients left as they are)",
        PaddlefixWarning,
        stacklevel=3,
    )


def _dynamic(paddle: Any) -> bool:
    if not paddle.in_dynamic_mode():
        return False
    try:
        from paddle.base.dygraph.base import in_to_static_mode
    except ImportError:  # pragma: no cover - layout of older versions
        return True
    return not in_to_static_mode()


def _guard(original: Callable[..., Any], via: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        import paddle

        if getattr(_local, "active", False) or not _dynamic(paddle):
            return original(self, *args, **kwargs)
        _local.active = True
        try:
            with _counters.lock:
                _counters.steps += 1
                step = _step_numbers.get(self, 0) + 1
                _step_numbers[self] = step
            getter = getattr(self, "_get_auxiliary_var", None)
            found_inf = getter("found_inf") if getter is not None else None
            if isinstance(found_inf, paddle.Tensor):
                # An enabled GradScaler checked these gradients; stock skips on found_inf.
                result = original(self, *args, **kwargs)
                if getter is not None and getter("found_inf") is True:
                    with _counters.lock:
                        _counters.scaler_skipped += 1
                return result
            parameters = kwargs.get("parameters", args[2] if len(args) > 2 else None) if via == "minimize" else None
            pairs = _grads(_params(self, parameters))
            bad = _nonfinite(paddle, pairs)
            if not bad:
                return original(self, *args, **kwargs)
            _refuse(self, step, bad, len(pairs), via)
            if via == "minimize":  # stock returns (optimize_ops, params_grads)
                return [], [(p, p._grad_ivar()) for p, _ in pairs]
            return None
        finally:
            _local.active = False

    return guarded


# -- probe and apply -----------------------------------------------------------------------


def problem_present() -> Finding:
    """Does a stock SGD step apply a NaN gradient? (It does, on every version seen.)"""
    import paddle

    if not paddle.in_dynamic_mode():
        return Finding(True, "static graph mode: not probed (stock optimizers apply any gradient)")
    from paddle.utils import unique_name

    with unique_name.guard():
        p = paddle.create_parameter([2], "float32", default_initializer=paddle.nn.initializer.Constant(1.0))
        opt = paddle.optimizer.SGD(learning_rate=0.1, parameters=[p])
        with grad_enabled(paddle):
            (p * paddle.to_tensor([float("nan"), 1.0])).sum().backward()
        opt.step()
        value = p.numpy()
    if math.isnan(float(value[0])):
        return Finding(True, "a stock SGD step writes a NaN gradient into the weights")
    return Finding(False, f"a stock SGD step left the weight at {float(value[0])} for a NaN gradient")


_EXCLUDED = frozenset({"LBFGS"})  # step(closure) computes its own gradients


def _targets(paddle: Any) -> list[tuple[type, str]]:
    """(class, method) for every optimizer class in paddle.optimizer defining step/minimize."""
    base = paddle.optimizer.Optimizer
    classes = [base]
    todo = [base]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in classes:
                classes.append(sub)
                todo.append(sub)
    out = []
    for cls in classes:
        if not cls.__module__.startswith("paddle.optimizer") or cls.__name__ in _EXCLUDED:
            continue
        for attr in ("step", "minimize"):
            if attr in vars(cls):
                out.append((cls, attr))
    return out


def apply(patcher: Patcher) -> None:
    """Wrap ``step`` / ``minimize`` of every optimizer class in ``paddle.optimizer`` that defines them."""
    import paddle

    _mode()  # validate PADDLEFIX_NAN_GUARD now, not at the first step
    for cls, attr in _targets(paddle):
        patcher.replace(cls, attr, _guard(vars(cls)[attr], attr))


SPEC = Patch(
    name="nan_guard",
    summary="optimizer steps with a NaN/Inf gradient are skipped (or raise), never applied",
    requires={"paddlepaddle|paddlepaddle-gpu": ">=0"},
    module="paddle",
    probe=problem_present,
    apply=apply,
    default=False,
    links=("Paddle#36665",),
    env=(
        EnvVar(
            ENV_NAN_GUARD,
            _MODES,
            "skip",
            "what nan_guard does on a non-finite gradient: skip the update and warn, or raise FloatingPointError",
        ),
    ),
)
