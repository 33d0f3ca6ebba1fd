"""``paddlefix.torch_init(layer)``: re-initialise a Paddle model as PyTorch initialises it.

A port trained from scratch (or given new heads) starts from other weights than its PyTorch
original wherever Paddle's default initialisation differs from torch's ``reset_parameters()``:

==============================  ==========================================  ===========================================
layer                           Paddle default                              torch (what ``torch_init`` does)
==============================  ==========================================  ===========================================
Linear                          weight Xavier uniform, bias 0               weight ``kaiming_uniform_(a=√5)`` =
                                                                            U(±1/√in), bias U(±1/√in)
Bilinear                        weight Xavier, bias 0                       weight and bias U(±1/√in1)
Conv1D/2D/3D                    weight N(0, √(2/fan_in)), bias 0            weight and bias U(±1/√fan_in),
                                                                            fan_in = in/groups·∏k
Conv1D/2D/3DTranspose           (same)                                      U(±1/√fan_in), fan_in = out/groups·∏k
                                                                            (torch reads size(1) of the
                                                                            ``[in, out/groups, *k]`` weight)
Embedding                       Xavier uniform                              N(0, 1), ``padding_idx`` row zeroed
MultiHeadAttention              Xavier per projection, bias 0               Xavier uniform over the packed
                                                                            ``[3d, d]`` in_proj (per projection when
                                                                            kdim/vdim differ), in_proj bias 0,
                                                                            out_proj weight U(±1/√d), bias 0
LayerNorm/GroupNorm/            ones / zeros (and running stats 0 / 1)      the same, running statistics reset
InstanceNorm/BatchNorm
SimpleRNN/LSTM/GRU (+ cells)    U(±1/√hidden)                               the same
PReLU                           Constant(init=0.25)                         the same
==============================  ==========================================  ===========================================

Paddle's ``Linear`` weight is ``[in, out]`` (torch: ``[out, in]``); the fans above are torch's
meaning, read off Paddle's layout. Every draw uses Paddle's global generator, so
``paddle.seed(n)`` makes the result reproducible (the numbers are not torch's: only the
distributions are).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

__all__ = ["torch_init", "InitRecord"]

_SQRT5 = math.sqrt(5.0)


class InitRecord(NamedTuple):
    """What :func:`torch_init` did to one layer."""

    path: str
    """The layer's path in the model (``""`` for the model itself)."""
    type: str
    """The layer's class name."""
    status: str
    """``"initialised"`` or ``"skipped"`` (a layer type torch_init does not know)."""
    detail: str
    """Per parameter, the distribution used (or, when skipped, the parameters left as they are)."""


# -- torch's formulas -------------------------------------------------------------------------


def kaiming_uniform_bound(fan_in: int, a: float = _SQRT5) -> float:
    """torch ``kaiming_uniform_(w, a)`` bound: gain·√(3/fan_in), gain = √(2/(1+a²))."""
    if fan_in <= 0:
        return 0.0
    gain = math.sqrt(2.0 / (1 + a**2))
    return math.sqrt(3.0) * (gain / math.sqrt(fan_in))


def bias_bound(fan_in: int) -> float:
    """torch's bias bound in ``Linear`` / ``_ConvNd.reset_parameters``: 1/√fan_in (0 if fan_in is 0)."""
    return 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0


def xavier_uniform_bound(fan_in: int, fan_out: int) -> float:
    """torch ``xavier_uniform_`` bound (gain 1): √(6/(fan_in+fan_out))."""
    return math.sqrt(6.0 / float(fan_in + fan_out))


def fan_in(kind: str, shape: Any) -> int:
    """torch's fan_in of a weight of ``kind`` given Paddle's weight ``shape``.

    - ``linear``: Paddle ``[in, out]`` -> ``in`` (torch's ``[out, in]``.size(1)).
    - ``bilinear``: ``[out, in1, in2]`` -> ``in1`` (torch's ``Bilinear`` uses ``weight.size(1)``).
    - ``conv`` (convolutions and transposed convolutions, same layout in both libraries):
      ``shape[1]·∏shape[2:]``, torch's ``_calculate_fan_in_and_fan_out`` (for a transposed
      convolution ``[in, out/groups, *k]``, that is ``out/groups·∏k``).
    """
    dims = [int(d) for d in shape]
    if kind == "linear":
        return dims[0]
    if kind == "bilinear":
        return dims[1]
    if kind == "conv":
        return dims[1] * math.prod(dims[2:])
    raise ValueError(f"fan_in(): kind {kind!r} is not supported; valid choices: 'linear', 'bilinear', 'conv'")


def weight_initializer(kind: str, shape: Any) -> tuple[Any, str]:
    """(Paddle initializer, description) for the weight of a ``kind`` layer, as torch initialises it."""
    import paddle

    I = paddle.nn.initializer
    if kind == "embedding":
        return standard_normal(), "N(0, 1)"
    fan = fan_in(kind, shape)
    if kind == "bilinear":
        bound = bias_bound(fan)
        return I.Uniform(-bound, bound), f"U(±{bound:.4g}) [1/√in1, in1={fan}]"
    bound = kaiming_uniform_bound(fan)
    return I.Uniform(-bound, bound), f"U(±{bound:.4g}) [kaiming_uniform_(a=√5), fan_in={fan}]"


_normal_class: Any = None


def _box_muller(rng: Any, n: int, dtype: Any) -> Any:
    """``n`` N(0, 1) draws of ``dtype`` by Box–Muller on ``rng``'s uniforms, as torch's CPU
    ``normal_`` computes them (in the tensor's own precision: float32 draws reach ±5.7σ, as torch's)."""
    import numpy as np

    m = (n + 1) // 2
    u = rng.random(2 * m, dtype=dtype)
    r, theta = u[:m], u[m:]
    np.subtract(1.0, r, out=r)  # (0, 1]: log is finite
    np.log(r, out=r)
    r *= -2.0
    np.sqrt(r, out=r)
    theta *= dtype(2.0 * math.pi)
    cos = np.cos(theta)
    np.sin(theta, out=theta)
    theta *= r
    r *= cos
    return u[:n]


def standard_normal(mean: float = 0.0, std: float = 1.0) -> Any:
    """A Paddle initializer drawing N(mean, std²), as ``paddle.nn.initializer.Normal``.

    On CPU in dynamic mode (float32 / float64; half precision drawn in float32 and rounded, where
    Paddle 2.6's CPU kernel has none), the draw is Box–Muller on NumPy's uniforms
    (SFC64 seeded by integers drawn from Paddle's global generator, so ``paddle.seed`` still
    decides it), computed as torch's CPU ``normal_`` does: about 2.5x faster than Paddle's CPU
    Gaussian kernel, whose cost over Paddle's uniform Xavier was torch's ``Embedding`` init's.
    Elsewhere (GPU, static graph, other dtypes) Paddle's own kernel.
    """
    global _normal_class
    if _normal_class is None:
        import paddle

        class TorchNormal(paddle.nn.initializer.Normal):  # type: ignore[misc]
            """N(mean, std²); NumPy's generator on CPU, seeded from Paddle's (see standard_normal)."""

            def forward(self, var: Any, block: Any = None) -> Any:
                import numpy as np

                dtype = {paddle.float32: np.float32, paddle.float64: np.float64,
                         paddle.float16: np.float32, paddle.bfloat16: np.float32}.get(var.dtype)
                if dtype is None or not paddle.in_dynamic_mode() or not _expected_cpu(paddle) or (
                    getattr(var, "is_dist", None) is not None and var.is_dist()
                ):
                    return super().forward(var, block)
                seed = paddle.randint(0, 2**31 - 1, [4], dtype="int64").numpy().tolist()  # 124 bits
                shape = tuple(int(d) for d in var.shape)
                arr = _box_muller(np.random.Generator(np.random.SFC64(seed)), math.prod(shape), dtype)
                if self._std_dev != 1.0:
                    arr *= dtype(self._std_dev)
                if self._mean != 0.0:
                    arr += dtype(self._mean)
                out = paddle.to_tensor(arr.reshape(shape), place=paddle.CPUPlace())
                if out.dtype != var.dtype:  # half precision: drawn in float32, rounded once
                    out = out.astype(var.dtype)
                out._share_underline_tensor_to(var)
                return None

        _normal_class = TorchNormal
    return _normal_class(mean, std)


def _expected_cpu(paddle: Any) -> bool:
    try:
        from paddle.base.framework import _current_expected_place
    except ImportError:  # pragma: no cover - a Paddle without paddle.base
        return False
    place = _current_expected_place()
    if isinstance(place, paddle.CPUPlace):  # Paddle 2.6 returns the specific place type
        return True
    is_cpu = getattr(place, "is_cpu_place", None)
    return bool(is_cpu()) if is_cpu is not None else False


def bias_initializer(kind: str, weight_shape: Any) -> tuple[Any, str]:
    """(Paddle initializer, description) for the bias of a ``kind`` layer with this weight shape."""
    import paddle

    bound = bias_bound(fan_in(kind, weight_shape))
    return paddle.nn.initializer.Uniform(-bound, bound), f"U(±{bound:.4g})"


# -- per layer --------------------------------------------------------------------------------


def _init(param: Any, initializer: Any) -> None:
    initializer(param)


def _uniform(paddle: Any, param: Any, bound: float) -> None:
    _init(param, paddle.nn.initializer.Uniform(-bound, bound))


def _constant(paddle: Any, param: Any, value: float) -> None:
    _init(param, paddle.nn.initializer.Constant(value))


def _padding_row(layer: Any) -> int | None:
    raw = getattr(layer, "_padding_idx", None)
    if raw is None:
        return None
    num = int(layer.weight.shape[0])
    idx = int(raw)
    idx = idx if idx >= 0 else num + idx
    return idx if 0 <= idx < num else None


def zero_padding_row(paddle: Any, layer: Any) -> int | None:
    """Zero ``layer.weight[padding_idx]`` as torch's ``Embedding`` does; return the row (or None)."""
    row = _padding_row(layer)
    if row is not None:
        with paddle.no_grad():
            layer.weight[row] = 0.0
    return row


def _own(layer: Any) -> dict[str, Any]:
    return {n: p for n, p in layer._parameters.items() if p is not None}


def _init_fan_layer(paddle: Any, layer: Any, kind: str) -> tuple[list[str], list[str]]:
    params = _own(layer)
    done = []
    weight = params.get("weight")
    if weight is not None:
        init, text = weight_initializer(kind, weight.shape)
        _init(weight, init)
        done.append(f"weight {text}")
        bias = params.get("bias")
        if bias is not None:
            init, text = bias_initializer(kind, weight.shape)
            _init(bias, init)
            done.append(f"bias {text}")
    return done, ["weight", "bias"]


def _init_embedding(paddle: Any, layer: Any) -> tuple[list[str], list[str]]:
    weight = _own(layer).get("weight")
    if weight is None:
        return [], ["weight"]
    init, text = weight_initializer("embedding", weight.shape)
    _init(weight, init)
    row = zero_padding_row(paddle, layer)
    return [f"weight {text}" + (f", padding_idx row {row} zeroed" if row is not None else "")], ["weight"]


_NORM_VALUES = {"weight": 1.0, "scale": 1.0, "bias": 0.0, "_mean": 0.0, "_variance": 1.0}


def _init_norm(paddle: Any, layer: Any) -> tuple[list[str], list[str]]:
    done = []
    for name, p in _own(layer).items():
        if name in _NORM_VALUES:
            _constant(paddle, p, _NORM_VALUES[name])
            what = "running " + ("mean" if name == "_mean" else "var") if name.startswith("_") else name
            done.append(f"{what} {_NORM_VALUES[name]:g}")
    for name, buf in layer._buffers.items():  # running statistics kept as buffers (if any)
        if buf is not None and name in ("_mean", "_variance"):
            paddle.assign(paddle.full(buf.shape, _NORM_VALUES[name], buf.dtype), output=buf)
            done.append(f"running {'mean' if name == '_mean' else 'var'} {_NORM_VALUES[name]:g}")
    return done, list(_NORM_VALUES)


def _init_rnn(paddle: Any, layer: Any) -> tuple[list[str], list[str]]:
    hidden = int(layer.hidden_size)
    bound = 1.0 / math.sqrt(hidden) if hidden > 0 else 0.0
    names = []
    seen: set[int] = set()
    for name, p in layer.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        _uniform(paddle, p, bound)
        names.append(name)
    return [f"{len(names)} parameters U(±{bound:.4g}) [1/√hidden, hidden={hidden}]"], []


def _init_prelu(paddle: Any, layer: Any) -> tuple[list[str], list[str]]:
    own = _own(layer)
    weight = own.get("_weight", own.get("weight"))  # Paddle names it ``_weight``
    value = float(getattr(layer, "_init", 0.25))
    if weight is None:
        return [], ["_weight", "weight"]
    _constant(paddle, weight, value)
    return [f"weight {value:g}"], ["_weight", "weight"]


def init_multi_head_attention(paddle: Any, layer: Any, weights: bool = True, biases: bool = True) -> list[str]:
    """torch ``MultiheadAttention._reset_parameters`` on Paddle's four projections."""
    d = int(layer.embed_dim)
    kdim, vdim = int(layer.kdim), int(layer.vdim)
    done = []
    if weights:
        if kdim == d and vdim == d:  # torch packs q, k, v into one [3d, d] in_proj_weight
            bound = xavier_uniform_bound(d, 3 * d)
            for proj in ("q_proj", "k_proj", "v_proj"):
                _uniform(paddle, getattr(layer, proj).weight, bound)
            done.append(f"q/k/v_proj.weight U(±{bound:.4g}) [xavier_uniform_ over packed [3d, d], d={d}]")
        else:  # separate q/k/v_proj_weight, each xavier_uniform_
            for proj, fan in (("q_proj", d), ("k_proj", kdim), ("v_proj", vdim)):
                bound = xavier_uniform_bound(fan, d)
                _uniform(paddle, getattr(layer, proj).weight, bound)
                done.append(f"{proj}.weight U(±{bound:.4g}) [xavier_uniform_]")
        out = layer.out_proj.weight
        init, text = weight_initializer("linear", out.shape)
        _init(out, init)
        done.append(f"out_proj.weight {text}")
    if biases:
        zeroed = []
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            bias = getattr(getattr(layer, proj), "bias", None)
            if bias is not None:
                _constant(paddle, bias, 0.0)
                zeroed.append(proj)
        if zeroed:
            done.append(f"{'/'.join(zeroed)}.bias 0")
    return done


def _init_mha(paddle: Any, layer: Any) -> tuple[list[str], list[str]]:
    return init_multi_head_attention(paddle, layer), []


def _kinds(paddle: Any) -> list[tuple[tuple[type, ...], str, Callable[..., tuple[list[str], list[str]]], bool]]:
    """(classes, name, initialiser, covers its sublayers), first match wins."""
    import importlib

    nn = paddle.nn
    conv = importlib.import_module("paddle.nn.layer.conv")
    norm = importlib.import_module("paddle.nn.layer.norm")
    rnn = importlib.import_module("paddle.nn.layer.rnn")

    def classes(*objs: Any) -> tuple[type, ...]:
        return tuple(o for o in objs if isinstance(o, type))

    norms = classes(
        getattr(norm, "_BatchNormBase", None),
        getattr(nn, "BatchNorm", None),
        getattr(norm, "_InstanceNormBase", None),
        nn.LayerNorm,
        nn.GroupNorm,
        getattr(nn, "SyncBatchNorm", None),
    )
    return [
        ((nn.MultiHeadAttention,), "MultiHeadAttention", _init_mha, True),
        ((nn.Linear,), "Linear", lambda p, l: _init_fan_layer(p, l, "linear"), False),
        ((nn.Bilinear,), "Bilinear", lambda p, l: _init_fan_layer(p, l, "bilinear"), False),
        (classes(conv._ConvNd), "Conv", lambda p, l: _init_fan_layer(p, l, "conv"), False),
        ((nn.Embedding,), "Embedding", _init_embedding, False),
        (norms, "Norm", _init_norm, False),
        (classes(rnn.RNNBase, rnn.RNNCellBase), "RNN", _init_rnn, True),
        ((nn.PReLU,), "PReLU", _init_prelu, False),
    ]


def torch_init(layer: Any) -> list[InitRecord]:
    """Re-initialise every parameter of ``layer`` (recursively) as torch's ``reset_parameters()``.

    Covers Linear, Bilinear, Conv1D/2D/3D and their Transpose versions, Embedding (the
    ``padding_idx`` row zeroed), LayerNorm / GroupNorm / InstanceNorm / BatchNorm (running
    statistics reset), MultiHeadAttention, SimpleRNN / LSTM / GRU and their cells, PReLU; see
    the module docstring for each formula. Random draws come from Paddle's global generator
    (``paddle.seed``). Works with or without :func:`paddlefix.apply`.

    Args:
        layer: a ``paddle.nn.Layer``.

    Returns:
        One :class:`InitRecord` per layer that owns parameters, in ``named_sublayers`` order:
        ``status="initialised"`` with what was drawn per parameter, or ``status="skipped"``
        for a layer type torch_init does not know (its parameters are named and left as they
        are; a ``paddlefix`` log warning says so too). Parameters of a known layer that torch
        does not have (e.g. a LoRA adapter added to a Linear subclass) are listed as skipped.

    Raises:
        TypeError: ``layer`` is not a ``paddle.nn.Layer``.
        RuntimeError: Paddle is in static graph mode (initialise in dynamic mode).
    """
    import paddle

    if not isinstance(layer, paddle.nn.Layer):
        raise TypeError(f"torch_init(): layer must be a paddle.nn.Layer, got {type(layer).__name__}")
    if not paddle.in_dynamic_mode():
        raise RuntimeError(
            "torch_init(): Paddle is in static graph mode; call it in dynamic mode "
            "(paddle.disable_static()) on the built Layer"
        )
    import logging

    log = logging.getLogger("paddlefix")
    kinds = _kinds(paddle)
    records: list[InitRecord] = []
    covered: list[str] = []
    with paddle.no_grad():
        for path, sub in layer.named_sublayers(include_self=True):
            if any(path == c or path.startswith(c + ".") for c in covered if c) or (
                "" in covered and path
            ):
                continue
            kind = next(((name, fn, cov) for classes, name, fn, cov in kinds if isinstance(sub, classes)), None)
            own = _own(sub)
            if kind is None:
                if own:
                    text = "unknown layer type; parameters left as they are: " + ", ".join(own)
                    records.append(InitRecord(path, type(sub).__name__, "skipped", text))
                    log.warning("torch_init: skipped %s (%s): %s", path or "<root>", type(sub).__name__, text)
                continue
            _, fn, covers = kind
            done, handled = fn(paddle, sub)
            if covers:
                covered.append(path)
            extra = [n for n in own if n not in handled] if not covers else []
            detail = "; ".join(done)
            status = "initialised"
            if extra:
                detail += ("; " if detail else "") + "not a torch parameter, left as it is: " + ", ".join(extra)
                log.warning("torch_init: %s (%s): parameters left as they are: %s", path or "<root>",
                            type(sub).__name__, ", ".join(extra))
            if not done:
                status = "skipped"
                detail = detail or "no parameters"
                if not own:
                    continue
            records.append(InitRecord(path, type(sub).__name__, status, detail))
    return records
