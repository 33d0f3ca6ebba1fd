"""matmul_precision: PyTorch's float32 matmul precision API for Paddle.

What: ``paddlefix.set_float32_matmul_precision(mode)`` / ``get_float32_matmul_precision()``,
also set by ``PADDLEFIX_MATMUL_PRECISION``. Modes:

- ``"highest"`` (default): full float32. On GPU builds cuBLAS TF32 is turned off, as
  PyTorch does by default since 1.12. On CPU builds there is no TF32 and nothing is
  wrapped: stock Paddle, bit for bit, at no cost.
- ``"high"`` / ``"medium"``: TF32 allowed for float32 cuBLAS matmuls (Paddle has no
  bfloat16-internal mode, so ``"medium"`` behaves like ``"high"``).
- ``"float64"``: float32 matmuls (``paddle.matmul`` / ``mm`` / ``bmm`` / ``einsum``,
  ``Tensor.matmul`` / ``mm`` / ``bmm``, ``@``, ``paddle.nn.functional.linear`` and so
  ``nn.Linear``) are computed in float64 and rounded once to float32: the correctly
  rounded product on almost every element, on any device. float16 / bfloat16 inputs are
  computed in float32 and rounded once. Other dtypes are left alone; autograd works.

Why: Paddle GPU builds run float32 matmuls with TF32 allowed by default (10 mantissa
bits, relative errors near 1e-3) while PyTorch does not; on CPU both are plain float32
with different summation orders, so results never agree bit for bit and absolute
differences grow with the magnitude of the values. See Paddle#35123, #54208, #75041.

The TF32 switch per Paddle version: ``core.set_cublas_switch`` / ``get_cublas_switch``
(Paddle#28732, 2.0+; ``paddle.fluid.core`` up to 2.5, ``paddle.base.core`` from 2.6; the
2.6.2 CPU build does not bind it, the 3.3.1 CPU build does and reports False), and the
``FLAGS_cublas_allow_tf32`` flag where a build registers it (Paddle#77781, "since 3.3.0",
default off; no CPU build registers it). Each control present is set, and restored on revert. The TF32 part
runs only on CUDA / ROCm builds.

Where the float64 wrappers go: every place (module attribute, ``paddle.Tensor`` method,
the ``paddle.tensor`` proxy of 3.x) holding one of the entry-point functions. On 3.x
``paddle.linalg.matmul`` *is* the C operator ``paddle._C_ops.matmul`` (``paddle.matmul``
is a thin Python function around it), so the operator is wrapped where it lives as well
and Paddle code calling it directly is widened too; on 2.x the operator is a separate
object and stays stock.

Switching modes: the patch's apply reads the current mode. ``set_float32_matmul_precision``
stores the mode and then re-applies this patch through the public API
(``paddlefix.revert("matmul_precision")`` then ``paddlefix.apply("matmul_precision")``), so
wrappers exist only while the mode is ``"float64"`` and every change goes through the
Patcher (revert is exact).
"""

from __future__ import annotations

import functools
import sys
import threading
import types
import warnings
from typing import Any, Callable, NamedTuple

from .. import settings as _settings
from .._errors import PaddlefixWarning
from ..registry import Finding, Patch, Patcher, _log

__all__ = ["SPEC", "MODES", "set_float32_matmul_precision", "get_float32_matmul_precision"]


NAME = "matmul_precision"
ENV = "PADDLEFIX_MATMUL_PRECISION"
MODES: tuple[str, ...] = ("highest", "high", "medium", "float64")
"""Accepted modes, in the order of PyTorch's, plus ``float64``."""
DEFAULT = "highest"
TF32_FLAG = "FLAGS_cublas_allow_tf32"

_mode: str | None = None
"""Mode chosen by ``set_float32_matmul_precision`` (None: environment, else default)."""
_lock = threading.RLock()


# -- public API ---------------------------------------------------------------------------
def get_float32_matmul_precision() -> str:
    """The float32 matmul precision mode paddlefix applies.

    The last :func:`set_float32_matmul_precision` value, else ``PADDLEFIX_MATMUL_PRECISION``,
    else ``"highest"``. It is in effect while the ``matmul_precision`` patch is applied
    (see ``paddlefix.status()``).
    """
    if _mode is not None:
        return _mode
    return _settings.env_choice(ENV, MODES, DEFAULT)


def set_float32_matmul_precision(mode: str) -> None:
    """Choose how float32 matmuls are computed, as ``torch.set_float32_matmul_precision``.

    ``mode`` is one of ``"highest"`` (full float32; TF32 off on GPU), ``"high"`` or
    ``"medium"`` (TF32 allowed on GPU), or ``"float64"`` (float32 matmuls computed in
    float64 and rounded once: the correctly rounded result, on any device).

    The mode takes effect at once: the ``matmul_precision`` patch is (re-)applied, or
    applies when ``paddle`` is imported. A ``PADDLEFIX_DISABLE`` naming the patch wins
    (the mode is recorded, with a warning). Raises ``ValueError`` for an unknown mode.
    """
    if not isinstance(mode, str) or mode.strip().lower() not in MODES:
        raise ValueError(
            f"set_float32_matmul_precision(mode): invalid value {mode!r}; valid choices: {', '.join(MODES)}"
        )
    import paddlefix

    global _mode
    with _lock:
        record = paddlefix.status()[NAME]
        forced = record.forced and record.state in ("applied", "pending")
        if record.state == "applied":
            paddlefix.revert(NAME)  # restores originals and the TF32 switch exactly
        _mode = mode.strip().lower()
        if record.state == "pending":
            return  # applies with this mode when paddle is imported
        report = paddlefix.apply(NAME, force=(NAME,) if forced else (), strict=False)[NAME]
    if report.state == "disabled":
        warnings.warn(
            f"set_float32_matmul_precision({_mode!r}) recorded but not in effect: {report.reason}",
            PaddlefixWarning,
            stacklevel=2,
        )
    elif report.state == "failed":
        warnings.warn(
            f"set_float32_matmul_precision({_mode!r}): {NAME} failed: {report.reason}",
            PaddlefixWarning,
            stacklevel=2,
        )


# -- the cuBLAS TF32 switch ---------------------------------------------------------------
class Control(NamedTuple):
    """One way a Paddle build lets Python allow or forbid TF32 in cuBLAS."""

    name: str
    get: Callable[[], bool]
    set: Callable[[bool], None]


def _core(paddle: Any) -> Any:
    """``paddle.base.core`` (2.6+) or ``paddle.fluid.core`` (up to 2.5), whichever is loaded."""
    for name in ("paddle.base.core", "paddle.fluid.core"):
        module = sys.modules.get(name)
        if module is not None:
            return module
    return None


def tf32_controls(
    core: Any, get_flags: Callable[..., Any] | None = None, set_flags: Callable[..., Any] | None = None
) -> list[Control]:
    """The TF32 controls this build exposes: the cuBLAS switch and/or the flag.

    ``core`` is Paddle's core module; ``get_flags`` / ``set_flags`` are ``paddle.get_flags`` /
    ``paddle.set_flags`` (the flag counts only if ``get_flags`` accepts its name).
    """
    out: list[Control] = []
    getter = getattr(core, "get_cublas_switch", None)
    setter = getattr(core, "set_cublas_switch", None)
    if callable(getter) and callable(setter):
        out.append(Control("core.set_cublas_switch", lambda: bool(getter()), lambda on: setter(bool(on))))
    if get_flags is not None and set_flags is not None:
        try:
            get_flags([TF32_FLAG])
        except Exception:  # not registered in this build (no CPU build has it)
            pass
        else:
            out.append(
                Control(
                    TF32_FLAG,
                    lambda: bool(get_flags([TF32_FLAG])[TF32_FLAG]),
                    lambda on: set_flags({TF32_FLAG: bool(on)}),
                )
            )
    return out


def set_tf32(
    controls: list[Control], allow: bool, on_revert: Callable[[Callable[[], None], str], None]
) -> list[str]:
    """Set every control to ``allow``; register a restore of each one changed. Returns what changed."""
    changed = []
    for control in controls:
        before = control.get()
        if before == allow:
            continue
        control.set(allow)
        on_revert(functools.partial(control.set, before), f"{control.name}({before})")
        changed.append(f"{control.name}({allow})")
    return changed


def _gpu_build(paddle: Any) -> bool:
    return bool(paddle.is_compiled_with_cuda()) or bool(getattr(paddle, "is_compiled_with_rocm", lambda: False)())


def _controls(paddle: Any) -> list[Control]:
    return tf32_controls(_core(paddle), getattr(paddle, "get_flags", None), getattr(paddle, "set_flags", None))


# -- float64 mode: the wrappers -------------------------------------------------------------
_PASSIVE = (bool, str, int, type(None))


def _compute_dtype(paddle: Any, values: list[Any]) -> tuple[Any, Any] | None:
    """(compute dtype, result dtype) if every operand is a Tensor of one float dtype we widen."""
    dtype = None
    for value in values:
        if isinstance(value, paddle.Tensor):
            if dtype is None:
                dtype = value.dtype
            elif value.dtype != dtype:
                return None  # mixed dtypes: Paddle decides (usually an error), untouched
        elif not isinstance(value, _PASSIVE):
            return None  # ndarray, list, float ...: left to Paddle
    if dtype is None:
        return None
    if dtype == paddle.float32:
        return paddle.float64, dtype
    if dtype == paddle.float16 or dtype == paddle.bfloat16:
        return paddle.float32, dtype
    return None


def _widened(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a matmul-like function: float32 operands computed in float64, rounded once."""
    import paddle

    cast = paddle.cast

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("out") is not None:
            return original(*args, **kwargs)  # in-place output: left to Paddle
        dtypes = _compute_dtype(paddle, [*args, *(v for k, v in kwargs.items() if k != "name")])
        if dtypes is None:
            return original(*args, **kwargs)
        wide, narrow = dtypes
        args = tuple(cast(a, wide) if isinstance(a, paddle.Tensor) else a for a in args)
        kwargs = {k: cast(v, wide) if isinstance(v, paddle.Tensor) else v for k, v in kwargs.items()}
        result = original(*args, **kwargs)
        return cast(result, narrow) if isinstance(result, paddle.Tensor) else result

    wrapper.__paddlefix_original__ = original  # type: ignore[attr-defined]
    return wrapper


def _widened_operator(original: Callable[..., Any]) -> Callable[..., Any]:
    """``Tensor.__matmul__`` / ``__rmatmul__``: as :func:`_widened`, NumPy operands converted."""
    import paddle

    inner = _widened(original)

    @functools.wraps(original)
    def operator(self: Any, other: Any) -> Any:
        numpy = sys.modules.get("numpy")
        if (
            numpy is not None
            and isinstance(other, numpy.ndarray)
            and other.dtype == numpy.float32
            and self.dtype == paddle.float32
        ):  # float32 ndarray with a float32 Tensor; anything else is Paddle's business
            other = paddle.to_tensor(other, place=self.place)
        return inner(self, other)

    operator.__paddlefix_original__ = original  # type: ignore[attr-defined]
    return operator


def _entry_points(paddle: Any) -> list[Any]:
    """The distinct function objects behind every matmul entry point of this Paddle."""
    found: dict[int, Any] = {}
    holders = [
        (paddle, ("matmul", "mm", "bmm", "einsum")),
        (getattr(paddle, "tensor", None), ("matmul", "mm", "bmm", "einsum")),
        (sys.modules.get("paddle.tensor.linalg"), ("matmul", "bmm")),
        (sys.modules.get("paddle.tensor.math"), ("mm",)),
        (getattr(paddle, "linalg", None), ("matmul",)),
        (paddle.nn.functional, ("linear",)),
    ]
    for owner, attrs in holders:
        for attr in attrs:
            value = getattr(owner, attr, None) if owner is not None else None
            if callable(value):
                found.setdefault(id(value), value)
    return list(found.values())


_TENSOR_METHODS = ("matmul", "mm", "bmm")
_TENSOR_OPERATORS = ("__matmul__", "__rmatmul__")


def _install_float64(paddle: Any, patcher: Patcher) -> list[str]:
    tensor = paddle.Tensor
    own = vars(tensor)
    done: list[str] = []
    packages = ("paddle", "paddlenlp")
    # Paddle 3.x: ``paddle.tensor`` is a callable proxy (factory function + module), and
    # ``matmul`` / ``bmm`` ... are also set on it as instance attributes.
    namespaces = [
        ns
        for ns in (vars(paddle).get("tensor"),)
        if ns is not None and not isinstance(ns, types.ModuleType) and hasattr(ns, "__dict__")
    ]
    for original in _entry_points(paddle):
        new = _widened(original)
        extra = []
        for attr in _TENSOR_METHODS:
            if own.get(attr) is original and isinstance(original, types.FunctionType):
                extra.append((tensor, attr))
        for ns in namespaces:
            extra += [(ns, attr) for attr, value in list(vars(ns).items()) if value is original]
        done += patcher.replace_everywhere(original, new, packages=packages, extra=extra)
    for attr in _TENSOR_METHODS:  # Tensor methods that are not one of the functions above
        original = own.get(attr)
        if callable(original) and not hasattr(original, "__paddlefix_original__"):
            new = _widened(original)
            # a builtin function in a class dict does not bind ``self``: keep it that way
            patcher.replace(tensor, attr, staticmethod(new) if isinstance(original, types.BuiltinFunctionType) else new)
            done.append(f"paddle.Tensor.{attr}")
    for attr in _TENSOR_OPERATORS:  # only where this Paddle defines them (2.6 has no __rmatmul__)
        if attr in own:
            patcher.replace(tensor, attr, _widened_operator(own[attr]))
            done.append(f"paddle.Tensor.{attr}")
    return done


# -- probe and apply -----------------------------------------------------------------------
def _tf32_state(paddle: Any) -> tuple[list[Control], bool | None]:
    """(controls, TF32 currently allowed?) on a GPU build; None when no control answers."""
    controls = _controls(paddle)
    states = []
    for control in controls:
        try:
            states.append(control.get())
        except Exception:
            pass
    return controls, (any(states) if states else None)


def describe(mode: str, gpu_build: bool, tf32: bool | None, controls: list[str]) -> Finding:
    """The probe's verdict from what it read: build kind, TF32 state (None: unknown), controls."""
    want_tf32 = mode in ("high", "medium")
    if not gpu_build:
        if mode == "float64":
            return Finding(True, "mode 'float64': float32 matmuls to compute in float64 (CPU build: no TF32)")
        return Finding(False, f"CPU build: no TF32; float32 matmul already full precision (mode {mode!r})")
    if tf32 is None:
        tf32_text = "GPU build without a cuBLAS TF32 switch (TF32 state unknown)"
        mismatch = False
    else:
        tf32_text = f"cuBLAS TF32 {'on' if tf32 else 'off'} ({', '.join(controls)})"
        mismatch = tf32 != want_tf32
    if mode == "float64":
        return Finding(True, f"mode 'float64': float32 matmuls to compute in float64; {tf32_text}")
    if mismatch:
        return Finding(True, f"{tf32_text}; mode {mode!r} wants it {'on' if want_tf32 else 'off'}")
    return Finding(False, f"{tf32_text}; nothing to change for mode {mode!r}")


def problem_present() -> Finding:
    """Does this build need anything for the current mode? Reads the switch; changes nothing."""
    import paddle

    mode = get_float32_matmul_precision()
    if not _gpu_build(paddle):
        return describe(mode, False, None, [])
    controls, tf32 = _tf32_state(paddle)
    return describe(mode, True, tf32, [c.name for c in controls])


def apply(patcher: Patcher) -> None:
    """Set TF32 for the current mode (GPU builds); in ``float64`` mode install the wrappers."""
    import paddle

    mode = get_float32_matmul_precision()
    if _gpu_build(paddle):
        changed = set_tf32(_controls(paddle), mode in ("high", "medium"), patcher.on_revert)
        if changed:
            _log().info("matmul_precision: mode %r: %s", mode, ", ".join(changed))
    if mode == "float64":
        places = _install_float64(paddle, patcher)
        _log().info("matmul_precision: float64 mode wraps %s", ", ".join(places))


SPEC = Patch(
    name=NAME,
    summary="float32 matmul precision as in PyTorch: TF32 off by default, optional float64 accumulation",
    # GPU builds allow TF32 in cuBLAS by default since 2.0 (Paddle#28732); the float64 mode is
    # useful on every version and device. The probe decides what this build needs.
    requires={"paddlepaddle|paddlepaddle-gpu": ">=2.0"},
    module="paddle",
    probe=problem_present,
    apply=apply,
    links=("Paddle#35123", "Paddle#54208", "Paddle#75041", "Paddle#28732", "Paddle#77781"),
    env=(
        _settings.EnvVar(
            ENV,
            MODES,
            DEFAULT,
            "float32 matmul precision: highest (TF32 off), high / medium (TF32 allowed), "
            "float64 (computed in float64, rounded once to float32)",
        ),
    ),
)
