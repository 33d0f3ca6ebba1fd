"""kaiming_init: torch's Kaiming options, gains and ``paddle.nn.init`` functions on every Paddle.

What
    PyTorch code initialises weights with ``torch.nn.init.kaiming_normal_(w, a, mode,
    nonlinearity)``. Paddle grew the same options over time: ``negative_slope`` and
    ``nonlinearity`` on ``KaimingNormal`` / ``KaimingUniform`` in 2.3.1, ``mode`` in 3.1.0,
    torch's ``conv_transpose1d/2d/3d`` names in ``calculate_gain`` and the torch-style
    ``paddle.nn.init`` module in 3.2.0. On older Paddle (2.6.2 here) a torch user's
    ``KaimingNormal(nonlinearity="leaky_relu", negative_slope=0.2, mode="fan_out")`` raises
    ``TypeError`` and ``paddle.nn.init`` does not exist.

Features (each one probed separately; only the missing ones are patched, all of them when forced)
    ``mode``
        ``mode="fan_in"|"fan_out"`` on ``KaimingNormal`` / ``KaimingUniform`` (and their base
        ``MSRAInitializer``), with torch's meaning and Paddle 3.1's rules (``fan_in=`` may only
        be given with ``mode="fan_in"``).
    ``gains``
        ``calculate_gain`` accepts every name ``torch.nn.init.calculate_gain`` does, with the
        same values; an unknown name raises ``ValueError`` listing the valid choices.
    ``init``
        ``paddle.nn.init`` with ``kaiming_normal_``, ``kaiming_uniform_`` (torch's signatures
        and defaults: ``a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None``) and
        ``calculate_gain``. Created (module object, ``sys.modules`` entry and ``paddle.nn.init``
        attribute) where Paddle has no such module; revert removes it again.

Fans, as Paddle computes them for each weight layout (``_compute_fans``)::

    layer              Paddle weight           torch weight            fan_in             fan_out
    Linear             [in, out]               [out, in]               in                 out
    Conv{1,2,3}D       [out, in/g, *k]         [out, in/g, *k]         in/g * prod(k)     out * prod(k)
    Conv{1,2,3}DTrans. [in, out/g, *k]         [in, out/g, *k]         out/g * prod(k)    in * prod(k)

So for Paddle's own layers ``mode`` means what it means in torch (for transposed
convolutions both libraries read the fans off the same layout, including torch's
convention that "fan_in" counts the output channels there). For a raw 2-D tensor Paddle
takes ``shape[0]`` as fan_in where torch takes ``shape[1]``; Paddle also accepts 0-D and
1-D tensors (fan = size) where torch raises.

Default arguments are untouched: with the same seed, ``KaimingNormal()`` / ``KaimingUniform()``
give the same numbers patched or not.
"""

from __future__ import annotations

import functools
import math
import sys
import types
import warnings
from typing import Any, Callable

from .._errors import PaddlefixWarning
from ..registry import Finding, Patch, Patcher, _log

__all__ = ["SPEC", "kaiming_normal_", "kaiming_uniform_", "NONLINEARITIES", "MODES"]

#: Modes of ``KaimingNormal`` / ``KaimingUniform`` and ``kaiming_*_``, as in torch.
MODES = ("fan_in", "fan_out")

#: torch.nn.init.calculate_gain's names, in torch's order.
NONLINEARITIES = (
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "selu",
)

# torch's name -> Paddle's own spelling (accepted by every Paddle since 2.3).
_PADDLE_SPELLING = {
    "conv_transpose1d": "conv1d_transpose",
    "conv_transpose2d": "conv2d_transpose",
    "conv_transpose3d": "conv3d_transpose",
}
# Every name accepted once patched: torch's plus Paddle's own spellings.
_VALID_NAMES = NONLINEARITIES + tuple(_PADDLE_SPELLING.values())

_FEATURES = ("gains", "mode", "init")
_INIT_NAMES = ("kaiming_normal_", "kaiming_uniform_", "calculate_gain")
_MODULE = "paddle.nn.init"


def _torch_gain(nonlinearity: str, param: float | None = None) -> float:
    """torch.nn.init.calculate_gain's value (used by the probe, which may not import torch)."""
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    return 1.0


def _choices(values: tuple[str, ...]) -> str:
    return ", ".join(repr(v) for v in values)


# -- probe ---------------------------------------------------------------------------------


def _mode_missing(initializer: Any) -> bool:
    for cls in (initializer.KaimingNormal, initializer.KaimingUniform):
        try:
            cls(mode="fan_out")
        except TypeError:
            return True
    return False


def _gains_missing(calculate_gain: Callable[..., float]) -> list[str]:
    """torch names that ``calculate_gain`` rejects or answers differently from torch."""
    bad = []
    cases = [(n, None) for n in NONLINEARITIES] + [("leaky_relu", 0.2)]
    for name, param in cases:
        try:
            value = calculate_gain(name, param)
        except (ValueError, TypeError, AssertionError):
            bad.append(name)
            continue
        if not math.isclose(float(value), _torch_gain(name, param), rel_tol=1e-12):
            bad.append(name if param is None else f"{name}({param})")
    return bad


def _init_module(paddle: Any) -> types.ModuleType | None:
    module = getattr(paddle.nn, "init", None)
    if isinstance(module, types.ModuleType):
        return module
    module = sys.modules.get(_MODULE)
    return module if isinstance(module, types.ModuleType) else None


def _init_native_unimported() -> bool:
    """A ``paddle/nn/init.py`` exists but is not imported (not expected; then leave it alone)."""
    import importlib.util

    try:
        return importlib.util.find_spec(_MODULE) is not None
    except (ImportError, ValueError):
        return False


def _missing() -> dict[str, str]:
    """{feature: what is missing} for the installed Paddle (empty: everything is native)."""
    import paddle

    initializer = paddle.nn.initializer
    out: dict[str, str] = {}
    if _mode_missing(initializer):
        out["mode"] = "KaimingNormal/KaimingUniform(mode=...)"
    bad = _gains_missing(initializer.calculate_gain)
    if bad:
        out["gains"] = f"calculate_gain({', '.join(repr(b) for b in bad)})"
    module = _init_module(paddle)
    if module is None:
        if not _init_native_unimported():
            out["init"] = "paddle.nn.init"
    else:
        absent = [n for n in _INIT_NAMES if not hasattr(module, n)]
        if absent:
            out["init"] = ", ".join(f"paddle.nn.init.{n}" for n in absent)
    return out


def problem_present() -> Finding:
    """Which of torch's Kaiming features the installed Paddle lacks."""
    missing = _missing()
    if missing:
        return Finding(True, "missing: " + "; ".join(missing[f] for f in _FEATURES if f in missing))
    return Finding(False, "mode=, torch's gain names and paddle.nn.init kaiming functions are native")


# -- gains ---------------------------------------------------------------------------------


def _make_calculate_gain(original: Callable[..., float]) -> Callable[..., float]:
    @functools.wraps(original)
    def calculate_gain(nonlinearity: str, param: bool | float | None = None) -> float:
        try:
            return original(nonlinearity, param)
        except ValueError:
            pass
        spelling = _PADDLE_SPELLING.get(nonlinearity) if isinstance(nonlinearity, str) else None
        if spelling is not None:
            return original(spelling, param)
        raise ValueError(
            f"calculate_gain(): unsupported nonlinearity {nonlinearity!r}; "
            f"valid choices: {_choices(_VALID_NAMES)}"
        ) from None

    calculate_gain.__doc__ = (original.__doc__ or "") + (
        "\n    paddlefix (kaiming_init): also accepts torch's names conv_transpose1d/2d/3d, and an\n"
        "    unknown name raises ValueError listing the valid choices.\n"
    )
    return calculate_gain


def _apply_gains(patcher: Patcher, initializer: Any) -> list[str]:
    original = patcher.original(initializer, "calculate_gain")
    return patcher.replace_everywhere(original, _make_calculate_gain(original), packages=("paddle",))


# -- mode ----------------------------------------------------------------------------------


def _check_mode(owner: str, mode: Any, fan_in: Any) -> None:
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"{owner}: mode {mode!r} is not supported; valid choices: {_choices(MODES)}")
    if mode == "fan_out" and fan_in is not None:
        raise ValueError(
            f"{owner}: fan_in={fan_in!r} is only used with mode='fan_in'; "
            "with mode='fan_out' leave fan_in=None (the fan is read from the weight's shape)"
        )


def _make_init_with_mode(cls: type, original: Callable[..., None]) -> Callable[..., None]:
    """``cls.__init__`` that also takes ``mode`` (after the original parameters)."""
    import inspect  # lazily: keeps ``import paddlefix`` cheap

    sig = inspect.signature(original)
    if "mode" not in sig.parameters:
        params = list(sig.parameters.values())
        kinds = [p.kind for p in params]
        P = inspect.Parameter
        if P.VAR_KEYWORD in kinds:
            params.insert(kinds.index(P.VAR_KEYWORD), P("mode", P.KEYWORD_ONLY, default="fan_in"))
        elif P.VAR_POSITIONAL in kinds or P.KEYWORD_ONLY in kinds:
            params.append(P("mode", P.KEYWORD_ONLY, default="fan_in"))
        else:
            params.append(P("mode", P.POSITIONAL_OR_KEYWORD, default="fan_in"))
        sig = sig.replace(parameters=params)
    owner = cls.__name__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = sig.bind(self, *args, **kwargs)
        mode = bound.arguments.pop("mode", "fan_in")
        _check_mode(owner, mode, bound.arguments.get("fan_in"))
        original(*bound.args, **bound.kwargs)
        self._mode = mode

    functools.update_wrapper(__init__, original)
    __init__.__signature__ = sig  # type: ignore[attr-defined]
    __init__.__doc__ = (original.__doc__ or "") + (
        "\n        paddlefix (kaiming_init): mode ('fan_in' default, or 'fan_out') as in torch;"
        "\n        fan_in= may only be given with mode='fan_in'.\n"
    )
    return __init__


def _make_compute_fans(original: Callable[..., tuple[Any, Any]]) -> Callable[..., tuple[Any, Any]]:
    def _compute_fans(self: Any, var: Any) -> tuple[Any, Any]:
        """Paddle's (fan_in, fan_out); with ``mode='fan_out'`` the first entry is fan_out.

        ``MSRAInitializer.forward`` scales by the first entry (unless ``fan_in=`` is given,
        which ``mode='fan_out'`` forbids), so this is how ``mode`` reaches it.
        """
        fan_in, fan_out = original(self, var)
        if getattr(self, "_mode", "fan_in") == "fan_out":
            return fan_out, fan_out
        return fan_in, fan_out

    _compute_fans.__qualname__ = "MSRAInitializer._compute_fans"
    return _compute_fans


def _apply_mode(patcher: Patcher, initializer: Any) -> None:
    normal, uniform = initializer.KaimingNormal, initializer.KaimingUniform
    msra = getattr(sys.modules[normal.__module__], "MSRAInitializer", None)
    if msra is None or not issubclass(normal, msra) or not issubclass(uniform, msra):
        raise RuntimeError("MSRAInitializer, base of KaimingNormal/KaimingUniform, not found")
    for cls in (msra, normal, uniform):
        original = patcher.original(cls, "__init__")
        patcher.replace(cls, "__init__", _make_init_with_mode(cls, original))
    patcher.replace(msra, "_compute_fans", _make_compute_fans(getattr(msra, "_compute_fans")))


# -- paddle.nn.init ------------------------------------------------------------------------


def _kaiming(
    fn: str, uniform: bool, tensor: Any, a: float, mode: str, nonlinearity: str, generator: Any
) -> Any:
    import numbers

    import paddle

    if generator is not None:
        raise ValueError(
            f"{fn}(): generator={generator!r} is not supported (Paddle has no torch.Generator); "
            "valid choices: None (seed with paddle.seed())"
        )
    mode_l = mode.lower() if isinstance(mode, str) else mode
    if mode_l not in MODES:
        raise ValueError(f"{fn}(): mode {mode!r} is not supported; valid choices: {_choices(MODES)}")
    if not isinstance(nonlinearity, str) or nonlinearity not in _VALID_NAMES:
        raise ValueError(
            f"{fn}(): unsupported nonlinearity {nonlinearity!r}; valid choices: {_choices(_VALID_NAMES)}"
        )
    if isinstance(a, bool) or not isinstance(a, numbers.Real):
        raise ValueError(f"{fn}(): a={a!r} is not a valid negative slope; expected an int or float")
    if 0 in list(tensor.shape):
        warnings.warn("Initializing zero-element tensors is a no-op", PaddlefixWarning, stacklevel=3)
        return tensor
    initializer = paddle.nn.initializer
    cls = initializer.KaimingUniform if uniform else initializer.KaimingNormal
    init = cls(negative_slope=float(a), nonlinearity=nonlinearity, mode=mode_l)
    init(tensor)  # in static graph mode this returns the init Operator: torch returns the tensor
    return tensor


def kaiming_normal_(
    tensor: Any,
    a: float = 0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: None = None,
) -> Any:
    """Fill ``tensor`` in place from N(0, std^2), std = gain / sqrt(fan), as torch's ``kaiming_normal_``.

    Args:
        tensor: a Paddle Tensor or Parameter.
        a: negative slope of the rectifier after this layer (used with ``'leaky_relu'``).
        mode: ``'fan_in'`` (default) or ``'fan_out'``; fans are computed as Paddle does for its
            layouts (Linear weight ``[in, out]``: fan_in = ``shape[0]``).
        nonlinearity: a ``calculate_gain`` name; default ``'leaky_relu'`` (with ``a=0``: sqrt(2)).
        generator: only ``None`` (Paddle draws from its global generator; use ``paddle.seed``).

    Returns:
        ``tensor`` (in static graph mode too, as Paddle >= 3.2 and torch do).

    Raises:
        ValueError: unknown ``mode`` or ``nonlinearity``, a non-number ``a``, or a ``generator``.
    """
    return _kaiming("kaiming_normal_", False, tensor, a, mode, nonlinearity, generator)


def kaiming_uniform_(
    tensor: Any,
    a: float = 0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: None = None,
) -> Any:
    """Fill ``tensor`` in place from U(-bound, bound), bound = gain * sqrt(3 / fan), as torch's
    ``kaiming_uniform_``.

    Args:
        tensor: a Paddle Tensor or Parameter.
        a: negative slope of the rectifier after this layer (used with ``'leaky_relu'``).
        mode: ``'fan_in'`` (default) or ``'fan_out'``; fans are computed as Paddle does for its
            layouts (Linear weight ``[in, out]``: fan_in = ``shape[0]``).
        nonlinearity: a ``calculate_gain`` name; default ``'leaky_relu'`` (with ``a=0``: sqrt(2)).
        generator: only ``None`` (Paddle draws from its global generator; use ``paddle.seed``).

    Returns:
        ``tensor`` (in static graph mode too, as Paddle >= 3.2 and torch do).

    Raises:
        ValueError: unknown ``mode`` or ``nonlinearity``, a non-number ``a``, or a ``generator``.
    """
    return _kaiming("kaiming_uniform_", True, tensor, a, mode, nonlinearity, generator)


def _module_getattr(name: str) -> Any:
    raise AttributeError(
        f"module {_MODULE!r} has no attribute {name!r} (paddlefix's kaiming_init provides "
        f"{', '.join(_INIT_NAMES)} on this Paddle; paddlepaddle>=3.2 has the full module)"
    )


def _apply_init(patcher: Patcher, paddle: Any) -> None:
    calculate_gain = paddle.nn.initializer.calculate_gain  # patched if the gains feature was
    ours = {"kaiming_normal_": kaiming_normal_, "kaiming_uniform_": kaiming_uniform_}
    module = _init_module(paddle)
    if module is None:
        import importlib.machinery

        module = types.ModuleType(
            _MODULE,
            "torch-style weight initialisation (paddlefix kaiming_init backport): "
            + ", ".join(_INIT_NAMES)
            + ".",
        )
        module.__spec__ = importlib.machinery.ModuleSpec(_MODULE, None)
        module.__dict__.update(ours, calculate_gain=calculate_gain, __getattr__=_module_getattr)
        module.__all__ = list(_INIT_NAMES)  # type: ignore[attr-defined]
        patcher.replace(paddle.nn, "init", module)
        previous = sys.modules.get(_MODULE)
        sys.modules[_MODULE] = module

        def unregister() -> None:
            if sys.modules.get(_MODULE) is module:
                if previous is None:
                    del sys.modules[_MODULE]
                else:
                    sys.modules[_MODULE] = previous

        patcher.on_revert(unregister, f"sys.modules[{_MODULE!r}]")
        return
    for name, fn in ours.items():
        if patcher.forced or not hasattr(module, name):
            patcher.replace(module, name, fn)
    if not hasattr(module, "calculate_gain"):
        patcher.replace(module, "calculate_gain", calculate_gain)


# -- apply ---------------------------------------------------------------------------------


def apply(patcher: Patcher) -> None:
    """Patch the missing features (all of them when forced)."""
    import paddle

    initializer = paddle.nn.initializer
    missing = _missing()
    features = _FEATURES if patcher.forced else tuple(f for f in _FEATURES if f in missing)
    if "gains" in features:  # first: the init module picks up the patched calculate_gain
        _apply_gains(patcher, initializer)
    if "mode" in features:
        _apply_mode(patcher, initializer)
    if "init" in features:
        _apply_init(patcher, paddle)
    native = [f for f in _FEATURES if f not in missing]
    _log().debug(
        "kaiming_init: patched %s; native: %s",
        ", ".join(features) or "nothing",
        ", ".join(native) or "nothing",
    )


SPEC = Patch(
    name="kaiming_init",
    summary="torch's Kaiming options (mode, nonlinearity, a), gains and paddle.nn.init functions",
    requires={"paddlepaddle|paddlepaddle-gpu": "<3.2"},
    module="paddle",
    probe=problem_present,
    apply=apply,
    fixed_in="3.2.0",
    links=("Paddle#73347", "Paddle#35074", "Paddle#37041"),
)
