"""torch_defaults (opt-in): PyTorch's defaults where Paddle's silently differ.

What (each item probed on the installed Paddle and patched only where it differs; all of them
when forced, except ``truncated_normal`` where Paddle already has the bounds)
    ``init``
        ``Linear``, ``Bilinear``, ``Conv1D/2D/3D``, ``Conv1D/2D/3DTranspose``, ``Embedding`` and
        ``MultiHeadAttention`` constructed while the patch is applied get torch's
        ``reset_parameters()`` initialisation (the formulas of :func:`paddlefix.torch_init`,
        which this reuses) for every parameter whose ``weight_attr`` / ``bias_attr`` is not given
        (``None``). A given attribute, a global initializer
        (``paddle.nn.initializer.set_global_initializer``) and ``Embedding(_weight=...)`` win.
        Each parameter receives the torch initializer at creation (no second draw), in dynamic
        and static graph mode.
    ``batch_norm``
        ``BatchNorm1D/2D/3D`` in training mode update the running variance with the *unbiased*
        batch variance (n/(n-1)), as torch does; Paddle uses the biased one. torch's update is
        computed in float64 from the old value and rounded once (within 1-2 float32 ulp of
        torch's own). (The layers' ``forward`` is patched; ``F.batch_norm`` called directly
        keeps Paddle's update.)
    ``clear_grad``
        ``optimizer.clear_grad()`` with no argument leaves gradients ``None``
        (``set_to_zero=False``), torch's ``zero_grad()`` default since 2.0, so a step skips
        parameters that received no gradient (no weight decay, no momentum on them).
        ``clear_grad(set_to_zero=...)`` and ``zero_grad(...)`` keep what they are given.
    ``avg_pool``
        ``AvgPool1D/2D/3D`` and ``F.avg_pool1d/2d/3d`` called without ``exclusive`` use
        ``exclusive=False`` (torch's ``count_include_pad=True``).
    ``align_corners``
        ``F.grid_sample`` / ``F.affine_grid`` called without ``align_corners`` use ``False``
        (torch's default since 1.3); Paddle's is ``True``.
    ``truncated_normal``
        ``TruncatedNormal(mean, std, a=-2.0, b=2.0)`` on Paddle < 3.0 cuts at the absolute bounds
        ``[a, b]`` as Paddle 3.x and ``torch.nn.init.trunc_normal_`` do; 2.6 cuts at mean ± 2·std
        (``TruncatedNormal(std=0.02)`` at ±0.04). Dynamic mode; where the two agree (bounds at
        mean ± 2·std) Paddle's own kernel runs unchanged.

Only omitted arguments change: code that passes the argument keeps it.

Risk (why it is opt-in): these are process-wide defaults. While applied they also change
Paddle-native code that relies on Paddle's defaults -- paddlenlp's own layers get torch's
initialisation, its pooling and ``grid_sample`` calls without the argument change meaning,
its training loops' ``clear_grad()`` leave ``None`` gradients. Apply it for a port of torch
code, not under a Paddle-native recipe whose numbers you want to reproduce.

Versions: every Paddle (2.6.2 and 3.3.1 measured: all items but ``truncated_normal`` differ on
both; ``truncated_normal`` only before 3.0).

Not covered: ``F.batch_norm`` called directly, ``paddle.nn.BatchNorm`` (the legacy layer calls
the kernel directly) and ``SyncBatchNorm`` keep the biased variance; ``Layer.clear_gradients()``
keeps zeroing (torch's ``Module.zero_grad()`` sets ``None``: use ``optimizer.clear_grad()``);
static-graph programs get ``init``, ``avg_pool`` and ``align_corners`` only.

Links: the Paddle issues on initialisation differences (Paddle#44751, #40547, #36717, #68695,
#44565, #33421); torch's ``reset_parameters()`` of each layer, ``torch.optim.Optimizer.zero_grad``.
"""

from __future__ import annotations

import functools
import math
import struct
import weakref
import warnings
from typing import Any, Callable

from .._errors import PaddlefixWarning
from ..registry import Finding, Patch, Patcher, _log
from ._util import grad_enabled, signature

__all__ = ["SPEC", "ITEMS"]

#: The items, in the order they are probed, patched and reported.
ITEMS = ("init", "batch_norm", "clear_grad", "avg_pool", "align_corners", "truncated_normal")

_FAN_LAYERS = {
    "Linear": "linear",
    "Bilinear": "bilinear",
    "Conv1D": "conv",
    "Conv2D": "conv",
    "Conv3D": "conv",
    "Conv1DTranspose": "conv",
    "Conv2DTranspose": "conv",
    "Conv3DTranspose": "conv",
    "Embedding": "embedding",
}
_POOL_LAYERS = ("AvgPool1D", "AvgPool2D", "AvgPool3D")
_POOL_FUNCS = ("avg_pool1d", "avg_pool2d", "avg_pool3d")
_GRID_FUNCS = ("grid_sample", "affine_grid")


class _RngKept:
    """Keep the global generator's state: a probe must not shift the user's random numbers."""

    def __init__(self, paddle: Any) -> None:
        self.paddle = paddle

    def __enter__(self) -> None:
        self.state = self.paddle.get_rng_state()

    def __exit__(self, *exc: Any) -> None:
        self.paddle.set_rng_state(self.state)


# -- probe -------------------------------------------------------------------------------------


def _probe_init(paddle: Any) -> str | None:
    if not paddle.in_dynamic_mode():
        return None
    from paddle.utils import unique_name

    with unique_name.guard(), _RngKept(paddle):
        layer = paddle.nn.Linear(4, 3)
        if layer.bias is not None and float(paddle.abs(layer.bias).sum()) == 0.0:
            return "Linear bias initialised to 0 (torch: U(±1/√in))"
    return None


def _probe_batch_norm(paddle: Any) -> str | None:
    if not paddle.in_dynamic_mode():
        return None
    import warnings as w

    from paddle.utils import unique_name

    with unique_name.guard(), w.catch_warnings():
        w.simplefilter("ignore")  # Paddle warns on every train-mode BatchNorm forward
        layer = paddle.nn.BatchNorm1D(1, momentum=0.9)
        layer.training = True  # not train(): that would flip the tracer's global mode
        layer(paddle.to_tensor([[0.0], [2.0]]))
        got = float(layer._variance.numpy()[0])
    if abs(got - 1.1) > 1e-6:  # unbiased batch variance 2.0: 0.9 * 1 + 0.1 * 2
        return f"running var {got:.4g} after one BatchNorm step with batch variance 1 (biased), torch 1.1 (unbiased)"
    return None


def _probe_clear_grad(paddle: Any) -> str | None:
    if not paddle.in_dynamic_mode():
        return None
    from paddle.utils import unique_name

    with unique_name.guard(), grad_enabled(paddle):
        p = paddle.create_parameter([1], "float32", default_initializer=paddle.nn.initializer.Constant(1.0))
        opt = paddle.optimizer.SGD(learning_rate=0.1, parameters=[p])
        (p * 2.0).sum().backward()
        opt.clear_grad()
        if p.grad is not None:
            return "optimizer.clear_grad() sets gradients to 0 (torch zero_grad(): None)"
    return None


def _probe_avg_pool(paddle: Any) -> str | None:
    F = paddle.nn.functional
    if not paddle.in_dynamic_mode():
        return None
    x = paddle.ones([1, 1, 2])
    out = [float(v) for v in F.avg_pool1d(x, 2, 1, 1).numpy().ravel()]
    layer = [float(v) for v in paddle.nn.AvgPool1D(2, 1, 1)(x).numpy().ravel()]
    bad = []
    if out[0] != 0.5:
        bad.append("avg_pool1d")
    if layer[0] != 0.5:
        bad.append("AvgPool1D")
    if bad:
        return f"{'/'.join(bad)} exclude padding by default (torch count_include_pad=True)"
    return None


def _probe_align_corners(paddle: Any) -> str | None:
    if not paddle.in_dynamic_mode():
        return None
    F = paddle.nn.functional
    theta = paddle.to_tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    grid = F.affine_grid(theta, [1, 1, 2, 2])
    bad = []
    if abs(float(grid.numpy().max()) - 0.5) > 1e-6:
        bad.append("affine_grid")
    x = paddle.ones([1, 1, 2, 2])
    sample = float(F.grid_sample(x, paddle.full([1, 1, 1, 2], -1.0)).numpy().ravel()[0])
    if abs(sample - 0.25) > 1e-6:
        bad.append("grid_sample")
    if bad:
        return f"{'/'.join(bad)} default align_corners=True (torch False)"
    return None


def _probe_truncated_normal(paddle: Any) -> str | None:
    if not paddle.in_dynamic_mode():
        return None
    with _RngKept(paddle):
        t = paddle.zeros([2000])
        paddle.nn.initializer.TruncatedNormal(mean=0.0, std=0.5)(t)
        top = float(paddle.abs(t).max())
    if top <= 1.0:  # absolute bounds [-2, 2]: about 4.5% of the draws lie beyond 2·std = 1
        return "TruncatedNormal(std=s) cuts at ±2s (torch, Paddle 3.x: absolute a=-2, b=2)"
    return None


_PROBES: dict[str, Callable[[Any], str | None]] = {
    "init": _probe_init,
    "batch_norm": _probe_batch_norm,
    "clear_grad": _probe_clear_grad,
    "avg_pool": _probe_avg_pool,
    "align_corners": _probe_align_corners,
    "truncated_normal": _probe_truncated_normal,
}


def present() -> dict[str, str]:
    """{item: what differs from torch} on the installed Paddle (empty: everything as torch)."""
    import paddle

    with paddle.no_grad():
        found = {}
        for item in ITEMS:
            detail = _PROBES[item](paddle)
            if detail is not None:
                found[item] = detail
    return found


def problem_present() -> Finding:
    """Which of torch's defaults the installed Paddle does not follow."""
    import paddle

    if not paddle.in_dynamic_mode():
        return Finding(True, "static graph mode: not probed (assumed: every item differs)")
    found = present()
    native = [i for i in ITEMS if i not in found]
    if found:
        text = "differ: " + "; ".join(f"{i} ({d})" for i, d in found.items())
        if native:
            text += "; as torch already: " + ", ".join(native)
        return Finding(True, text)
    return Finding(False, "every item already as torch: " + ", ".join(ITEMS))


# -- shared --------------------------------------------------------------------------------------


def _bind(sig: Any, args: tuple, kwargs: dict) -> Any:
    try:
        return sig.bind(*args, **kwargs)
    except TypeError:
        return None


def _with_default(original: Callable[..., Any], name: str, value: Any, note: str) -> Callable[..., Any]:
    """``original`` called with ``name=value`` when the caller did not pass ``name``."""
    sig = signature(original)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = _bind(sig, args, kwargs)
        if bound is not None and name not in bound.arguments:
            bound.arguments[name] = value
            return original(*bound.args, **bound.kwargs)
        return original(*args, **kwargs)

    wrapper.__doc__ = (original.__doc__ or "") + f"\n    paddlefix (torch_defaults): {note}\n"
    return wrapper


# -- init --------------------------------------------------------------------------------------

_deferred_class: Any = None


def _deferred(make: Callable[[Any], Any]) -> Any:
    """A Paddle initializer that asks ``make(var)`` for the real one when the parameter is created."""
    global _deferred_class
    if _deferred_class is None:
        import paddle

        class TorchDefaultInitializer(paddle.nn.initializer.Initializer):
            """torch's initialisation, decided from the parameter's shape when it is created."""

            def __init__(self, make: Callable[[Any], Any]) -> None:
                super().__init__()
                self._make = make

            def forward(self, var: Any, block: Any = None) -> Any:
                return self._make(var).forward(var, block)

        _deferred_class = TorchDefaultInitializer
    return _deferred_class(make)


def _global_initializer_set() -> bool:
    import paddle

    init = paddle.base.initializer
    return init._global_weight_initializer() is not None or init._global_bias_initializer() is not None


def _make_fan_init(original: Callable[..., None], kind: str) -> Callable[..., None]:
    import paddle

    from .. import _torch_init as T

    sig = signature(original)
    ParamAttr = paddle.ParamAttr

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = _bind(sig, (self, *args), kwargs)
        if bound is None or _global_initializer_set() or bound.arguments.get("_weight") is not None:
            return original(self, *args, **kwargs)
        ours = []
        if bound.arguments.get("weight_attr") is None:
            attr = ParamAttr(initializer=_deferred(lambda var: T.weight_initializer(kind, var.shape)[0]))
            bound.arguments["weight_attr"] = attr
            ours.append(attr)
        if kind != "embedding" and "bias_attr" in sig.parameters and bound.arguments.get("bias_attr") is None:
            attr = ParamAttr(initializer=_deferred(lambda var: T.bias_initializer(kind, self.weight.shape)[0]))
            bound.arguments["bias_attr"] = attr
            ours.append(attr)
        original(*bound.args, **bound.kwargs)
        for key, value in list(vars(self).items()):  # the layer keeps the user's None, not ours
            if any(value is a for a in ours):
                setattr(self, key, None)

    functools.update_wrapper(__init__, original)
    __init__.__doc__ = (original.__doc__ or "") + (
        "\n        paddlefix (torch_defaults): weight/bias not given get torch's reset_parameters() init.\n"
    )
    return __init__


def _make_mha_init(original: Callable[..., None]) -> Callable[..., None]:
    import paddle

    from .. import _torch_init as T

    sig = signature(original)
    ParamAttr = paddle.ParamAttr
    I = paddle.nn.initializer

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = _bind(sig, (self, *args), kwargs)
        if bound is None or _global_initializer_set():
            return original(self, *args, **kwargs)
        a = bound.arguments
        ours = []
        if a.get("weight_attr") is None:
            d = int(a["embed_dim"])
            fans = {"q_proj": d, "k_proj": int(a.get("kdim") or d), "v_proj": int(a.get("vdim") or d)}
            packed = fans["k_proj"] == d and fans["v_proj"] == d
            # Paddle creates q_proj, k_proj, v_proj, out_proj in this order, each with weight_attr.
            order = iter(("q_proj", "k_proj", "v_proj"))

            def make(var: Any) -> Any:
                proj = next(order, "out_proj")
                if proj == "out_proj":  # torch's NonDynamicallyQuantizableLinear: kaiming_uniform_(a=√5)
                    return T.weight_initializer("linear", var.shape)[0]
                b = T.xavier_uniform_bound(d, 3 * d) if packed else T.xavier_uniform_bound(fans[proj], d)
                return I.Uniform(-b, b)

            attr = ParamAttr(initializer=_deferred(make))
            a["weight_attr"] = attr
            ours.append(attr)
        if a.get("bias_attr") is None:  # torch: in_proj_bias and out_proj.bias 0
            attr = ParamAttr(initializer=I.Constant(0.0))
            a["bias_attr"] = attr
            ours.append(attr)
        original(*bound.args, **bound.kwargs)
        for layer in [self, *self.sublayers()]:  # the layers keep the user's None, not ours
            for key, value in list(vars(layer).items()):
                if any(value is o for o in ours):
                    setattr(layer, key, None)

    functools.update_wrapper(__init__, original)
    __init__.__doc__ = (original.__doc__ or "") + (
        "\n        paddlefix (torch_defaults): torch's MultiheadAttention initialisation where not given.\n"
    )
    return __init__


def _apply_init(patcher: Patcher, paddle: Any) -> None:
    nn = paddle.nn
    for name, kind in _FAN_LAYERS.items():
        cls = getattr(nn, name)
        patcher.replace(cls, "__init__", _make_fan_init(vars(cls)["__init__"], kind))
    mha = nn.MultiHeadAttention
    patcher.replace(mha, "__init__", _make_mha_init(vars(mha)["__init__"]))


# -- batch_norm --------------------------------------------------------------------------------


def _f32(value: float) -> float:
    """``value`` rounded to float32."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


def _make_batch_norm_forward(original: Callable[..., Any]) -> Callable[..., Any]:
    import ctypes

    import numpy as np
    import paddle

    in_dynamic_mode = paddle.in_dynamic_mode
    c_types = {paddle.float32: ctypes.c_float, paddle.float64: ctypes.c_double}
    array_types: dict[tuple[Any, int], tuple[Any, Any]] = {}  # (dtype, channels) -> (ctypes array, NumPy dtype)
    views: weakref.WeakKeyDictionary[Any, tuple[Any, int, Any]] = weakref.WeakKeyDictionary()
    factors: dict[tuple[float, int], float | None] = {}

    def factor_for(m: float, n: int) -> float | None:
        """What the kernel's (1-m)·biased is multiplied by to give torch's (1-m)·unbiased."""
        got = factors.get((m, n), 0.0)
        if got != 0.0:
            return got
        kept = _f32(1.0 - _f32(m))  # the float32 (1 - momentum) Paddle's kernel multiplies by
        value = None if kept <= 0.0 else (1.0 - m) * (n / (n - 1.0)) / kept
        if len(factors) < 1024:
            factors[(m, n)] = value
        return value

    def cpu_view(layer: Any, var: Any, channels: int) -> Any:
        """A NumPy array on the variance's own memory (the kernel updates it in place), or None.

        Kept per layer (weakly: nothing is added to the layer) with the tensor and address it was
        made for: while both are the same, so is the memory (and its place), and it is reused.
        """
        cached = views.get(layer)
        ptr = var.data_ptr()
        if cached is not None and cached[0] is var and cached[1] == ptr:
            return cached[2]
        dtype = var.dtype
        kind = array_types.get((dtype, channels))
        if kind is None:
            ctype = c_types.get(dtype)
            if ctype is None:
                return None
            kind = array_types[(dtype, channels)] = (ctype * channels, np.float32 if ctype is ctypes.c_float else np.float64)
        if not var.place.is_cpu_place() or not ptr:
            return None
        memory: Any = kind[0].from_address(ptr)  # a ctypes array over the variance (buffer protocol)
        view = np.frombuffer(memory, dtype=kind[1])
        views[layer] = (var, ptr, view)
        return view

    @functools.wraps(original)
    def forward(self: Any, input: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.training or not in_dynamic_mode():
            return original(self, input, *args, **kwargs)
        params = getattr(self, "_parameters", None)  # an instance attribute: no Layer.__getattr__
        var = params.get("_variance") if isinstance(params, dict) else None
        if var is None:
            var = getattr(self, "_variance", None)
        momentum = getattr(self, "_momentum", None)
        if (
            getattr(self, "_use_global_stats", None) is True
            or var is None
            or len(var.shape) != 1
            or isinstance(momentum, bool)
            or not isinstance(momentum, (int, float))
            or not hasattr(input, "shape")
        ):
            return original(self, input, *args, **kwargs)
        channels = int(var.shape[0])
        n = int(math.prod(input.shape)) // max(channels, 1)
        if n <= 1:
            return original(self, input, *args, **kwargs)
        # Paddle: new = m*old + (1-m)*biased, in float32.  Run it on a zeroed running variance:
        # it returns (1-m)*biased (one rounding), from which torch's update
        # m*old + (1-m)*biased*n/(n-1) is computed in float64 from the untouched old value
        # (torch computes it in double on the CPU), then rounded once to the variance's dtype.
        m = float(momentum)
        factor = factor_for(m, n)
        if factor is None:
            return original(self, input, *args, **kwargs)
        view = cpu_view(self, var, channels)
        if view is not None:  # CPU: a handful of values, updated in place (no Paddle op dispatch)
            ptr = views[self][1]
            before = view.copy()
            scaled = np.multiply(before, m, dtype=np.float64)
            view.fill(0)
            try:
                out = original(self, input, *args, **kwargs)
            except BaseException:
                view[...] = before
                raise
            if var.data_ptr() == ptr:
                np.add(np.multiply(view, factor, dtype=np.float64), scaled, out=view, casting="same_kind")
            else:  # the forward gave the variance new memory: write through Paddle
                got = var.numpy().astype(np.float64)
                var.get_tensor().set((scaled + got * factor).astype(before.dtype), paddle.CPUPlace())
            return out
        with paddle.no_grad():
            old = var.astype("float64")
            var.zero_()
        try:
            out = original(self, input, *args, **kwargs)
        except BaseException:
            with paddle.no_grad():
                paddle.assign(old.astype(var.dtype), output=var)
            raise
        with paddle.no_grad():
            paddle.assign((old * m + var.astype("float64") * factor).astype(var.dtype), output=var)
        return out

    forward.__doc__ = (original.__doc__ or "") + (
        "\n        paddlefix (torch_defaults): training mode updates the running variance with the unbiased\n"
        "        batch variance, as torch.\n"
    )
    return forward


def _apply_batch_norm(patcher: Patcher, paddle: Any) -> None:
    import importlib

    base = importlib.import_module("paddle.nn.layer.norm")._BatchNormBase
    patcher.replace(base, "forward", _make_batch_norm_forward(vars(base)["forward"]))


# -- clear_grad --------------------------------------------------------------------------------


def _make_clear_grad(original: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(original)
    def clear_grad(self: Any, *args: Any, **kwargs: Any) -> None:
        if not args and not kwargs:
            return original(self, set_to_zero=False)
        return original(self, *args, **kwargs)

    clear_grad.__doc__ = (original.__doc__ or "") + (
        "\n        paddlefix (torch_defaults): with no argument, gradients become None (set_to_zero=False),\n"
        "        as torch's zero_grad().\n"
    )
    return clear_grad


def _apply_clear_grad(patcher: Patcher, paddle: Any) -> None:
    import inspect

    base = paddle.optimizer.Optimizer
    if "set_to_zero" not in signature(vars(base)["clear_grad"]).parameters:
        raise RuntimeError("Optimizer.clear_grad has no set_to_zero parameter on this Paddle")
    owners = [base] + [
        cls
        for _, cls in inspect.getmembers(paddle.optimizer, inspect.isclass)
        if issubclass(cls, base) and cls is not base and "clear_grad" in vars(cls)
    ]
    for cls in owners:
        patcher.replace(cls, "clear_grad", _make_clear_grad(vars(cls)["clear_grad"]))


# -- avg_pool / align_corners ------------------------------------------------------------------


def _make_pool_init(original: Callable[..., None]) -> Callable[..., None]:
    sig = signature(original)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = _bind(sig, (self, *args), kwargs)
        if bound is not None and "exclusive" not in bound.arguments:
            bound.arguments["exclusive"] = False
            return original(*bound.args, **bound.kwargs)
        return original(self, *args, **kwargs)

    functools.update_wrapper(__init__, original)
    __init__.__doc__ = (original.__doc__ or "") + (
        "\n        paddlefix (torch_defaults): exclusive=False when not given (torch count_include_pad=True).\n"
    )
    return __init__


def _replace_functions(patcher: Patcher, replacements: dict[int, tuple[Any, Any]]) -> None:
    """Replace each original (``{id: (original, new)}``) in every ``paddle`` module holding it, in one
    pass over the loaded modules (``Patcher.replace_everywhere`` scans once per function)."""
    import sys
    import types

    places = []
    for modname, module in list(sys.modules.items()):
        if not isinstance(module, types.ModuleType) or not (modname == "paddle" or modname.startswith("paddle.")):
            continue
        for attr, value in list(vars(module).items()):
            hit = replacements.get(id(value))
            if hit is not None and hit[0] is value:
                places.append((module, attr, hit[1]))
    for module, attr, new in places:
        patcher.replace(module, attr, new)


def _apply_avg_pool(patcher: Patcher, paddle: Any) -> None:
    F = paddle.nn.functional
    note = "exclusive=False when not given (torch count_include_pad=True)"
    originals = [getattr(F, name) for name in _POOL_FUNCS]
    _replace_functions(patcher, {id(f): (f, _with_default(f, "exclusive", False, note)) for f in originals})
    for name in _POOL_LAYERS:
        cls = getattr(paddle.nn, name)
        patcher.replace(cls, "__init__", _make_pool_init(vars(cls)["__init__"]))


def _apply_align_corners(patcher: Patcher, paddle: Any) -> None:
    F = paddle.nn.functional
    note = "align_corners=False when not given (torch's default)"
    originals = [getattr(F, name) for name in _GRID_FUNCS]
    _replace_functions(patcher, {id(f): (f, _with_default(f, "align_corners", False, note)) for f in originals})


# -- truncated_normal --------------------------------------------------------------------------


def _truncated_normal_native(paddle: Any) -> bool:
    return "a" in signature(paddle.nn.initializer.TruncatedNormal.__init__).parameters


def _make_tn_init(original: Callable[..., None]) -> Callable[..., None]:
    def __init__(self: Any, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0, name: Any = None) -> None:
        if not float(a) < float(b):
            raise ValueError(f"TruncatedNormal: a={a!r} must be smaller than b={b!r}")
        original(self, mean=mean, std=std, name=name)
        self._paddlefix_bounds = (float(a), float(b))

    functools.update_wrapper(__init__, original)
    __init__.__doc__ = (original.__doc__ or "") + (
        "\n        paddlefix (torch_defaults): a, b are absolute bounds (default -2, 2) as in Paddle 3.x and torch.\n"
    )
    return __init__


def _make_tn_forward(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def forward(self: Any, var: Any, block: Any = None) -> Any:
        import paddle

        bounds = getattr(self, "_paddlefix_bounds", None)
        mean, std = float(self._mean), float(self._std_dev)
        if bounds is None or std <= 0:
            return original(self, var, block)
        a, b = bounds
        if math.isclose(a, mean - 2 * std, rel_tol=0, abs_tol=1e-12) and math.isclose(
            b, mean + 2 * std, rel_tol=0, abs_tol=1e-12
        ):
            return original(self, var, block)  # the same bounds: Paddle's own kernel
        if not paddle.in_dynamic_mode():
            warnings.warn(
                "paddlefix torch_defaults: TruncatedNormal in static graph mode cuts at mean ± 2·std "
                f"(Paddle 2.x), not at the absolute bounds [{a}, {b}]",
                PaddlefixWarning,
                stacklevel=3,
            )
            return original(self, var, block)
        # torch.nn.init.trunc_normal_: inverse-CDF sampling of N(mean, std) restricted to [a, b].
        def cdf(z: float) -> float:
            return (1.0 + math.erf(z / math.sqrt(2.0))) / 2.0

        lo, hi = cdf((a - mean) / std), cdf((b - mean) / std)
        with paddle.no_grad():
            u = paddle.uniform(var.shape, dtype="float32", min=2 * lo - 1, max=2 * hi - 1)
            out = paddle.erfinv(u) * (std * math.sqrt(2.0)) + mean
            out = paddle.clip(out, a, b).astype(var.dtype)
            out._share_underline_tensor_to(var)
        return None

    return forward


def _apply_truncated_normal(patcher: Patcher, paddle: Any) -> None:
    tn = paddle.nn.initializer.TruncatedNormal
    base = next(c for c in tn.__mro__[1:] if "forward" in vars(c))
    patcher.replace(tn, "__init__", _make_tn_init(vars(tn)["__init__"]))
    patcher.replace(base, "forward", _make_tn_forward(vars(base)["forward"]))


# -- apply -------------------------------------------------------------------------------------

_APPLY: dict[str, Callable[[Patcher, Any], None]] = {
    "init": _apply_init,
    "batch_norm": _apply_batch_norm,
    "clear_grad": _apply_clear_grad,
    "avg_pool": _apply_avg_pool,
    "align_corners": _apply_align_corners,
    "truncated_normal": _apply_truncated_normal,
}


def apply(patcher: Patcher) -> None:
    """Patch the items that differ (all applicable ones when forced)."""
    import paddle

    if patcher.forced:
        items = [i for i in ITEMS if not (i == "truncated_normal" and _truncated_normal_native(paddle))]
        found = {i: "forced" for i in items}
    else:
        found = present() if paddle.in_dynamic_mode() else {i: "static graph mode" for i in ITEMS}
        items = [i for i in ITEMS if i in found]
    for item in items:
        _APPLY[item](patcher, paddle)
    _log().debug(
        "torch_defaults: patched %s; as torch already: %s",
        ", ".join(items) or "nothing",
        ", ".join(i for i in ITEMS if i not in found) or "nothing",
    )


SPEC = Patch(
    name="torch_defaults",
    summary="PyTorch's defaults: init, BatchNorm unbiased running var, clear_grad to None, "
    "avg_pool count_include_pad, align_corners=False, absolute TruncatedNormal bounds",
    requires={"paddlepaddle|paddlepaddle-gpu": ">=2.0"},
    module="paddle",
    probe=problem_present,
    apply=apply,
    default=False,
    links=("Paddle#44751", "Paddle#40547", "Paddle#36717", "Paddle#68695", "Paddle#44565", "Paddle#33421"),
)
