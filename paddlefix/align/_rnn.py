"""Weight conversion for recurrent layers and multi-head attention, PyTorch <-> Paddle.

Covered pairs (each proved by running both layers on the same input after conversion,
tests/align/test_rnn_rules.py):

* ``torch.nn.LSTM`` <-> ``paddle.nn.LSTM``, ``torch.nn.GRU`` <-> ``paddle.nn.GRU``,
  ``torch.nn.RNN`` (tanh / relu) <-> ``paddle.nn.SimpleRNN`` (same activation).
  Measured on paddle 2.6.2 and 3.3.1: the gate order is the same on both sides (LSTM i, f, g, o;
  GRU r, z, n with the reset gate applied to ``W_hn h + b_hn`` on both), so every matrix is copied
  unchanged; only the names differ. torch ``weight_ih_l{k}[_reverse]`` is paddle
  ``{k}.cell[_fw|_bw].weight_ih``. The LSTM projection (``proj_size``, paddle >= 3.0 only) is
  torch ``weight_hr_l{k}`` ``[proj, hidden]`` = paddle ``weight_ho`` ``[hidden, proj]`` transposed.
* ``torch.nn.MultiheadAttention`` <-> ``paddle.nn.MultiHeadAttention``: torch's packed
  ``in_proj_weight`` ``[3E, E]`` (or ``q/k/v_proj_weight`` when ``kdim`` / ``vdim`` differ) and
  ``in_proj_bias`` are split into paddle's ``q_proj`` / ``k_proj`` / ``v_proj`` Linear layers,
  which store ``[in, out]`` (transposed); ``out_proj`` is a transposed Linear.
* ``torch.nn.MultiheadAttention`` <-> ``paddle.compat.nn.MultiheadAttention`` (Paddle 3.x): the same
  tensors unchanged, ``bias_k`` / ``bias_v`` included; only with ``kdim`` / ``vdim`` different from
  ``embed_dim`` is torch's ``in_proj_bias`` split into ``q/k/v_proj_bias``.

Paddle's RNN layers register every parameter twice: once on the cell
(``0.cell_fw.weight_ih``, always right) and once as a flat alias on the RNN layer
(``weight_ih_l0``), both in ``state_dict()``. Measured on paddle 3.3.1: with ``proj_size`` the flat
aliases point at the wrong tensors (``weight_ih_l0_reverse`` is ``0.cell_fw.weight_ho``), so the
cell names are the ones used here; flat aliases are accepted from a bare state dict only where
their shapes prove them right.

Not convertible, refused with :class:`~paddlefix.align.TransferError`: torch
``MultiheadAttention(add_bias_kv=True)`` / ``add_zero_attn=True`` into ``paddle.nn.MultiHeadAttention``
(no equivalent there), an
LSTM ``proj_size`` on a Paddle without it, a Paddle RNN with non-zero biases into a torch layer
built with ``bias=False``. A torch ``bias=False`` RNN goes into a Paddle RNN with biases set to
zero (same outputs): Paddle's own ``bias_ih_attr=False`` RNNs do not run (measured, 2.6.2 and
3.3.1: one layer segfaults in forward, two layers fail in the constructor).

Upstream: https://github.com/PaddlePaddle/Paddle/issues/70231 (bias-free LSTM does not run),
https://github.com/PaddlePaddle/Paddle/issues/70245 (wrong flat names with ``proj_size``).

NumPy only; nothing here imports paddle or torch (layers are read through their attributes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping, NamedTuple

from ._errors import TransferError

if TYPE_CHECKING:
    import numpy as np

# ``RULES`` (the layer rules for rules.py) is made on first access, see ``__getattr__``.
__all__ = [
    "RnnSpec",
    "MhaSpec",
    "torch_rnn_spec",
    "paddle_rnn_spec",
    "rnn_param_pairs",
    "paddle_rnn_aliases",
    "rnn_arrays_to_paddle",
    "rnn_arrays_to_torch",
    "rnn_to_paddle",
    "rnn_to_torch",
    "torch_mha_spec",
    "paddle_mha_spec",
    "mha_param_pairs",
    "mha_arrays_to_paddle",
    "mha_arrays_to_torch",
    "mha_to_paddle",
    "mha_to_torch",
    "compat_mha_spec",
    "compat_mha_param_pairs",
    "compat_mha_arrays_to_paddle",
    "compat_mha_arrays_to_torch",
    "compat_mha_to_paddle",
    "compat_mha_to_torch",
]

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
_TORCH_TYPE = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN", "RNN_RELU": "RNN"}
_PADDLE_TYPE = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "SimpleRNN", "RNN_RELU": "SimpleRNN"}


# --------------------------------------------------------------------------------------------
# Recurrent layers
# --------------------------------------------------------------------------------------------


class RnnSpec(NamedTuple):
    """What decides a recurrent layer's parameters (and, for compare, its behaviour)."""

    mode: str  # "LSTM" | "GRU" | "RNN_TANH" | "RNN_RELU"
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    bias: bool  # torch: the layer has biases; paddle: the biases are trainable
    proj_size: int  # 0 = none
    batch_first: bool  # torch batch_first; paddle: not time_major
    dropout: float

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def describe(self) -> str:
        rnn = _TORCH_TYPE[self.mode]
        act = f", {self.mode[4:].lower()}" if rnn == "RNN" else ""
        direction = "bidirectional" if self.bidirectional else "forward"
        proj = f", proj_size={self.proj_size}" if self.proj_size else ""
        return (
            f"{rnn}({self.input_size}, {self.hidden_size}{act}, num_layers={self.num_layers}, "
            f"{direction}{proj})"
        )


def torch_rnn_spec(layer: Any) -> RnnSpec:
    """The :class:`RnnSpec` of a ``torch.nn.LSTM`` / ``GRU`` / ``RNN``."""
    mode = str(getattr(layer, "mode", ""))
    if mode not in _GATES:
        raise TransferError(
            f"layer: expected a torch.nn.LSTM, GRU or RNN, got {type(layer).__name__} "
            f"(mode={mode!r})"
        )
    return RnnSpec(
        mode=mode,
        input_size=int(layer.input_size),
        hidden_size=int(layer.hidden_size),
        num_layers=int(layer.num_layers),
        bidirectional=bool(layer.bidirectional),
        bias=bool(layer.bias),
        proj_size=int(getattr(layer, "proj_size", 0) or 0),
        batch_first=bool(layer.batch_first),
        dropout=float(layer.dropout),
    )


def _paddle_cells(layer: Any) -> list[tuple[str, Any]]:
    """(cell path relative to the RNN layer, cell) in layer / direction order."""
    cells = []
    for index, sub in enumerate(layer):
        if hasattr(sub, "cell_fw"):
            cells.append((f"{index}.cell_fw", sub.cell_fw))
            cells.append((f"{index}.cell_bw", sub.cell_bw))
        else:
            cells.append((f"{index}.cell", sub.cell))
    return cells


def paddle_rnn_spec(layer: Any) -> RnnSpec:
    """The :class:`RnnSpec` of a ``paddle.nn.LSTM`` / ``GRU`` / ``SimpleRNN``.

    ``bias`` is False when every bias is frozen (``stop_gradient``), which is what Paddle builds
    for ``bias_ih_attr=False`` / ``bias_hh_attr=False``.
    """
    mode = str(getattr(layer, "mode", ""))
    if mode not in _GATES:
        raise TransferError(
            f"layer: expected a paddle.nn.LSTM, GRU or SimpleRNN, got {type(layer).__name__} "
            f"(mode={mode!r})"
        )
    cells = _paddle_cells(layer)
    trainable_bias = any(
        not getattr(cell, name).stop_gradient
        for _, cell in cells
        for name in ("bias_ih", "bias_hh")
        if getattr(cell, name, None) is not None
    )
    return RnnSpec(
        mode=mode,
        input_size=int(layer.input_size),
        hidden_size=int(layer.hidden_size),
        num_layers=int(layer.num_layers),
        bidirectional=int(layer.num_directions) == 2,
        bias=trainable_bias,
        proj_size=int(getattr(layer, "proj_size", 0) or 0),
        batch_first=not bool(layer.time_major),
        dropout=float(layer.dropout),
    )


def _torch_shapes(spec: RnnSpec) -> dict[str, tuple[int, ...]]:
    gates = _GATES[spec.mode] * spec.hidden_size
    out = spec.proj_size or spec.hidden_size
    shapes: dict[str, tuple[int, ...]] = {}
    for k in range(spec.num_layers):
        in_size = spec.input_size if k == 0 else out * spec.directions
        for d in range(spec.directions):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            shapes["weight_ih" + sfx] = (gates, in_size)
            shapes["weight_hh" + sfx] = (gates, out)
            if spec.bias:
                shapes["bias_ih" + sfx] = (gates,)
                shapes["bias_hh" + sfx] = (gates,)
            if spec.proj_size:
                shapes["weight_hr" + sfx] = (spec.proj_size, spec.hidden_size)
    return shapes


def _cell_name(spec: RnnSpec, k: int, d: int) -> str:
    if not spec.bidirectional:
        return f"{k}.cell"
    return f"{k}.cell_bw" if d else f"{k}.cell_fw"


def rnn_param_pairs(spec: RnnSpec) -> list[tuple[str | None, str, str]]:
    """``(torch name, paddle name, how)`` for every Paddle parameter, local to the layer.

    ``how``: ``"copy"`` (same layout, other name), ``"transpose"`` (LSTM projection) or
    ``"zeros"`` (torch ``bias=False``: the Paddle bias is set to zero; the torch name is None).
    """
    pairs: list[tuple[str | None, str, str]] = []
    for k in range(spec.num_layers):
        for d in range(spec.directions):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            cell = _cell_name(spec, k, d)
            pairs.append(("weight_ih" + sfx, f"{cell}.weight_ih", "copy"))
            pairs.append(("weight_hh" + sfx, f"{cell}.weight_hh", "copy"))
            for b in ("bias_ih", "bias_hh"):
                if spec.bias:
                    pairs.append((b + sfx, f"{cell}.{b}", "copy"))
                else:
                    pairs.append((None, f"{cell}.{b}", "zeros"))
            if spec.proj_size:
                pairs.append(("weight_hr" + sfx, f"{cell}.weight_ho", "transpose"))
    return pairs


def paddle_rnn_aliases(spec: RnnSpec) -> dict[str, str]:
    """Paddle's flat alias names on the RNN layer -> the cell parameter each one really is.

    Paddle zips the names ``weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k}``
    (``_reverse`` for the backward cell; bias names left out when a bias attr is False) with the
    layer's parameters in cell order. Where a cell has other than those four parameters
    (``proj_size``) the two sequences drift apart; this reproduces Paddle's own pairing.
    """
    names: list[str] = []
    for k in range(spec.num_layers):
        for d in range(spec.directions):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            names += ["weight_ih" + sfx, "weight_hh" + sfx, "bias_ih" + sfx, "bias_hh" + sfx]
    params = [paddle for _, paddle, _ in rnn_param_pairs(spec._replace(bias=True))]
    return dict(zip(names, params))


def _arr(value: Any) -> "np.ndarray":
    """A NumPy view of an array or a (torch / paddle) tensor."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):  # torch (paddle tensors have detach too; both have numpy)
        value = value.detach()
    if hasattr(value, "cpu") and not hasattr(value, "place"):
        value = value.cpu()
    if hasattr(value, "numpy"):
        return np.asarray(value.numpy())
    return np.asarray(value)


def _check_names(
    what: str, arrays: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]], spec: RnnSpec | MhaSpec
) -> None:
    missing = [n for n in expected if n not in arrays]
    wrong = [
        f"{n} {tuple(_arr(arrays[n]).shape)} (expected {expected[n]})"
        for n in expected
        if n in arrays and tuple(_arr(arrays[n]).shape) != expected[n]
    ]
    if missing or wrong:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing))
        if wrong:
            parts.append("wrong shape " + "; ".join(wrong))
        raise TransferError(
            f"{what} do not fit {spec.describe()}: " + "; ".join(parts)
            + f". Present: {', '.join(sorted(arrays)) or 'nothing'}"
        )


def _check_exact(
    what: str,
    side: str,
    arrays: Mapping[str, Any],
    expected: Mapping[str, tuple[int, ...]],
    spec: RnnSpec | MhaSpec,
    also: Iterable[str] = (),
) -> None:
    """:func:`_check_names`, then refuse entries of ``arrays`` that are neither expected nor in ``also``.

    ``side`` (``"torch"`` / ``"Paddle"``) names the source in the error, so nothing is dropped silently.
    """
    _check_names(what, arrays, expected, spec)
    extra = set(arrays) - set(expected) - set(also)
    if extra:
        raise TransferError(f"{side} parameters not part of {spec.describe()}: {', '.join(sorted(extra))}")


def rnn_arrays_to_paddle(arrays: Mapping[str, Any], spec: RnnSpec) -> dict[str, "np.ndarray"]:
    """torch parameters (local names, as in the torch layer's ``state_dict()``) -> Paddle's.

    ``spec`` describes the torch layer (its ``bias`` decides whether torch biases are read or
    Paddle biases are set to zero). Returns Paddle cell names -> arrays; matrices are the
    source arrays themselves where the layout is the same (callers copy into the destination).
    Extra source entries are refused, so nothing is dropped silently.
    """
    import numpy as np

    expected = _torch_shapes(spec)
    _check_exact("torch parameters", "torch", arrays, expected, spec)
    gates = _GATES[spec.mode] * spec.hidden_size
    out: dict[str, np.ndarray] = {}
    for torch_name, paddle_name, how in rnn_param_pairs(spec):
        if torch_name is None:  # "zeros": torch has no biases
            dtype = _arr(arrays["weight_ih_l0"]).dtype
            out[paddle_name] = np.zeros((gates,), dtype=dtype)
        elif how == "transpose":
            out[paddle_name] = np.ascontiguousarray(_arr(arrays[torch_name]).T)
        else:
            out[paddle_name] = _arr(arrays[torch_name])
    return out


def _paddle_shapes(spec: RnnSpec) -> dict[str, tuple[int, ...]]:
    torch_shapes = _torch_shapes(spec._replace(bias=True))
    shapes: dict[str, tuple[int, ...]] = {}
    for torch_name, paddle_name, how in rnn_param_pairs(spec._replace(bias=True)):
        assert torch_name is not None
        shape = torch_shapes[torch_name]
        shapes[paddle_name] = shape[::-1] if how == "transpose" else shape
    return shapes


def _paddle_cell_arrays(arrays: Mapping[str, Any], spec: RnnSpec) -> dict[str, Any]:
    """Paddle arrays by cell name, from cell names or (where provably right) flat aliases."""
    shapes = _paddle_shapes(spec)
    aliases = paddle_rnn_aliases(spec)
    if any(name in arrays for name in shapes) or not any(a in arrays for a in aliases):
        _check_exact("Paddle parameters", "Paddle", arrays, shapes, spec, also=aliases)
        return {name: arrays[name] for name in shapes}
    # Only the flat aliases: right only where every cell has exactly its four parameters.
    if spec.proj_size:
        raise TransferError(
            f"Paddle parameters for {spec.describe()} are given only by the flat names "
            f"({', '.join(sorted(a for a in aliases if a in arrays))}); with proj_size Paddle's "
            "flat names point at other tensors. Use the layer's full state_dict() (it has the "
            "'0.cell_fw.weight_ih' style names)"
        )
    _check_exact("Paddle parameters (flat names)", "Paddle", arrays,
                 {a: shapes[c] for a, c in aliases.items()}, spec)
    return {c: arrays[a] for a, c in aliases.items()}


def rnn_arrays_to_torch(arrays: Mapping[str, Any], spec: RnnSpec) -> dict[str, "np.ndarray"]:
    """Paddle parameters (local names) -> torch's, for a torch layer described by ``spec``.

    Accepts the Paddle layer's ``state_dict()`` (cell names plus flat aliases). When the torch
    layer has ``bias=False`` the Paddle biases must all be zero, otherwise :class:`TransferError`.
    """
    import numpy as np

    cells = _paddle_cell_arrays(arrays, spec)
    out: dict[str, np.ndarray] = {}
    nonzero = []
    for torch_name, paddle_name, how in rnn_param_pairs(spec):
        value = _arr(cells[paddle_name])
        if how == "zeros":
            if np.any(value != 0):
                nonzero.append(paddle_name)
        elif how == "transpose":
            assert torch_name is not None
            out[torch_name] = np.ascontiguousarray(value.T)
        else:
            assert torch_name is not None
            out[torch_name] = value
    if nonzero:
        raise TransferError(
            f"the torch layer {spec.describe()} has bias=False but the Paddle biases "
            f"{', '.join(nonzero)} are not zero: build the torch layer with bias=True"
        )
    return out


def _check_same_fields(
    torch_spec: RnnSpec | MhaSpec, other: RnnSpec | MhaSpec, fields: tuple[str, ...],
    other_label: str = "paddle", hint: str = "",
) -> None:
    """Refuse a torch / Paddle pair whose ``fields`` differ, naming each difference."""
    diffs = [
        f"{field}: torch {getattr(torch_spec, field)!r}, paddle {getattr(other, field)!r}"
        for field in fields
        if getattr(torch_spec, field) != getattr(other, field)
    ]
    if diffs:
        raise TransferError(
            f"torch {torch_spec.describe()} and {other_label} {other.describe()} cannot be "
            f"converted into each other: {'; '.join(diffs)}{hint}"
        )


def _check_rnn_pair(torch_spec: RnnSpec, paddle_spec: RnnSpec) -> None:
    hint = ""
    if torch_spec.proj_size and not paddle_spec.proj_size:
        hint = " (paddle.nn.LSTM has proj_size from Paddle 3.0; the installed one may not)"
    fields = ("mode", "input_size", "hidden_size", "num_layers", "bidirectional", "proj_size")
    _check_same_fields(torch_spec, paddle_spec, fields, hint=hint)


def rnn_to_paddle(
    arrays: Mapping[str, Any], paddle_layer: Any, torch_layer: Any = None
) -> dict[str, "np.ndarray"]:
    """Layer-level conversion torch -> Paddle: the Paddle layer's local names -> arrays.

    Every Paddle parameter is given under its cell name (``0.cell_fw.weight_ih``) and, where the
    layer has one, its flat alias (``weight_ih_l0``), both naming the same tensor.

    ``arrays`` are the torch layer's parameters by local name (``weight_ih_l0``, ...). Without
    ``torch_layer`` (a bare state dict) the torch layout is taken from the Paddle layer, with
    ``bias`` read from whether bias entries are present.
    """
    paddle_spec = paddle_rnn_spec(paddle_layer)
    if torch_layer is not None:
        torch_spec = torch_rnn_spec(torch_layer)
        _check_rnn_pair(torch_spec, paddle_spec)
    else:
        torch_spec = paddle_spec._replace(bias=any(n.startswith("bias_") for n in arrays))
    out = rnn_arrays_to_paddle(arrays, torch_spec)
    # The same tensors under the layer's flat alias names, found by identity (not by name:
    # with proj_size Paddle's flat names point at other tensors than their names say).
    for flat, cell_name in _flat_to_cell(paddle_layer).items():
        if cell_name in out:
            out[flat] = out[cell_name]
    return out


def rnn_to_torch(
    arrays: Mapping[str, Any], torch_layer: Any, paddle_layer: Any = None
) -> dict[str, "np.ndarray"]:
    """Layer-level conversion Paddle -> torch: returns the torch layer's local names -> arrays.

    With ``paddle_layer``, entries under its flat alias names are read as the cell parameters
    they really are (by identity), so the flat names alone are enough, even with ``proj_size``.
    """
    torch_spec = torch_rnn_spec(torch_layer)
    if paddle_layer is not None:
        _check_rnn_pair(torch_spec, paddle_rnn_spec(paddle_layer))
        cells = _flat_to_cell(paddle_layer)
        renamed = {cells.get(name, name): value for name, value in arrays.items()}
        arrays = {**renamed, **{n: v for n, v in arrays.items() if n in renamed}}  # cell names win
    return rnn_arrays_to_torch(arrays, torch_spec)


def _flat_to_cell(paddle_layer: Any) -> dict[str, str]:
    """The Paddle RNN layer's flat alias names -> the cell parameter each one is (by identity)."""
    by_id = {
        id(getattr(cell, local)): f"{path}.{local}"
        for path, cell in _paddle_cells(paddle_layer)
        for local in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_ho")
        if getattr(cell, local, None) is not None
    }
    return {
        flat: by_id[id(param)]
        for flat, param in paddle_layer.named_parameters(include_sublayers=False)
        if id(param) in by_id
    }


# --------------------------------------------------------------------------------------------
# Multi-head attention
# --------------------------------------------------------------------------------------------


class MhaSpec(NamedTuple):
    """What decides a multi-head attention layer's parameters (and, for compare, behaviour)."""

    embed_dim: int
    num_heads: int
    kdim: int
    vdim: int
    bias: bool
    packed: bool  # torch: one in_proj_weight (kdim == vdim == embed_dim); paddle: always False
    add_bias_kv: bool
    add_zero_attn: bool
    dropout: float
    batch_first: bool

    def describe(self) -> str:
        extra = "" if (self.kdim, self.vdim) == (self.embed_dim,) * 2 else (
            f", kdim={self.kdim}, vdim={self.vdim}"
        )
        return f"MultiheadAttention({self.embed_dim}, {self.num_heads}{extra}, bias={self.bias})"


def torch_mha_spec(layer: Any) -> MhaSpec:
    """The :class:`MhaSpec` of a ``torch.nn.MultiheadAttention``."""
    if not hasattr(layer, "_qkv_same_embed_dim"):
        raise TransferError(
            f"layer: expected a torch.nn.MultiheadAttention, got {type(layer).__name__}"
        )
    return MhaSpec(
        embed_dim=int(layer.embed_dim),
        num_heads=int(layer.num_heads),
        kdim=int(layer.kdim),
        vdim=int(layer.vdim),
        bias=layer.in_proj_bias is not None,
        packed=bool(layer._qkv_same_embed_dim),
        add_bias_kv=layer.bias_k is not None,
        add_zero_attn=bool(layer.add_zero_attn),
        dropout=float(layer.dropout),
        batch_first=bool(layer.batch_first),
    )


def paddle_mha_spec(layer: Any) -> MhaSpec:
    """The :class:`MhaSpec` of a ``paddle.nn.MultiHeadAttention`` (always batch-first)."""
    if not all(hasattr(layer, n) for n in ("q_proj", "k_proj", "v_proj", "out_proj", "num_heads")):
        raise TransferError(
            f"layer: expected a paddle.nn.MultiHeadAttention, got {type(layer).__name__}"
        )
    return MhaSpec(
        embed_dim=int(layer.embed_dim),
        num_heads=int(layer.num_heads),
        kdim=int(layer.kdim),
        vdim=int(layer.vdim),
        bias=layer.q_proj.bias is not None,
        packed=False,
        add_bias_kv=False,
        add_zero_attn=False,
        dropout=float(layer.dropout),
        batch_first=True,
    )


def _refuse_torch_only(spec: MhaSpec) -> None:
    if spec.add_bias_kv or spec.add_zero_attn:
        used = [n for n, on in (("add_bias_kv=True", spec.add_bias_kv),
                                ("add_zero_attn=True", spec.add_zero_attn)) if on]
        raise TransferError(
            f"torch MultiheadAttention with {' and '.join(used)} has no equivalent in "
            "paddle.nn.MultiHeadAttention (no bias_k / bias_v, no zero attention row): "
            "it cannot be converted exactly; paddle.compat.nn.MultiheadAttention (Paddle 3.x) "
            "has both"
        )


def mha_param_pairs(spec: MhaSpec) -> list[tuple[str, str, str]]:
    """``(torch name, paddle name, how)``, local to the layer, for a torch layer ``spec``.

    ``how``: ``"split+transpose"`` (a third of ``in_proj_weight``, transposed),
    ``"split"`` (a third of ``in_proj_bias``), ``"transpose"``, ``"copy"``.
    """
    pairs: list[tuple[str, str, str]] = []
    for p in "qkv":
        if spec.packed:
            pairs.append(("in_proj_weight", f"{p}_proj.weight", "split+transpose"))
        else:
            pairs.append((f"{p}_proj_weight", f"{p}_proj.weight", "transpose"))
        if spec.bias:
            pairs.append(("in_proj_bias", f"{p}_proj.bias", "split"))
    pairs.append(("out_proj.weight", "out_proj.weight", "transpose"))
    if spec.bias:
        pairs.append(("out_proj.bias", "out_proj.bias", "copy"))
    return pairs


def _mha_torch_shapes(spec: MhaSpec) -> dict[str, tuple[int, ...]]:
    e = spec.embed_dim
    shapes: dict[str, tuple[int, ...]] = {}
    if spec.packed:
        shapes["in_proj_weight"] = (3 * e, e)
    else:
        shapes.update(q_proj_weight=(e, e), k_proj_weight=(e, spec.kdim), v_proj_weight=(e, spec.vdim))
    shapes["out_proj.weight"] = (e, e)
    if spec.bias:
        shapes["in_proj_bias"] = (3 * e,)
        shapes["out_proj.bias"] = (e,)
    return shapes


def _mha_paddle_shapes(spec: MhaSpec) -> dict[str, tuple[int, ...]]:
    e = spec.embed_dim
    shapes: dict[str, tuple[int, ...]] = {
        "q_proj.weight": (e, e), "k_proj.weight": (spec.kdim, e), "v_proj.weight": (spec.vdim, e),
        "out_proj.weight": (e, e),
    }
    if spec.bias:
        shapes.update({f"{p}_proj.bias": (e,) for p in ("q", "k", "v", "out")})
    return shapes


def mha_arrays_to_paddle(arrays: Mapping[str, Any], spec: MhaSpec) -> dict[str, "np.ndarray"]:
    """torch ``MultiheadAttention`` parameters (local names) -> Paddle's (``q_proj.weight``, ...)."""
    import numpy as np

    _refuse_torch_only(spec)
    expected = _mha_torch_shapes(spec)
    _check_exact("torch MultiheadAttention parameters", "torch", arrays, expected, spec)
    e = spec.embed_dim
    out: dict[str, np.ndarray] = {}
    for torch_name, paddle_name, how in mha_param_pairs(spec):
        value = _arr(arrays[torch_name])
        if how.startswith("split"):
            value = value["qkv".index(paddle_name[0]) * e:("qkv".index(paddle_name[0]) + 1) * e]
        if how.endswith("transpose"):
            value = np.ascontiguousarray(value.T)
        out[paddle_name] = value
    return out


def mha_arrays_to_torch(arrays: Mapping[str, Any], spec: MhaSpec) -> dict[str, "np.ndarray"]:
    """Paddle ``MultiHeadAttention`` parameters -> torch's, for a torch layer described by ``spec``."""
    import numpy as np

    _refuse_torch_only(spec)
    expected = _mha_paddle_shapes(spec)
    _check_exact("Paddle MultiHeadAttention parameters", "Paddle", arrays, expected, spec)
    parts: dict[str, list[np.ndarray]] = {}
    out: dict[str, np.ndarray] = {}
    for torch_name, paddle_name, how in mha_param_pairs(spec):
        value = _arr(arrays[paddle_name])
        if how.endswith("transpose"):
            value = value.T
        if how.startswith("split"):
            parts.setdefault(torch_name, []).append(value)
        else:
            out[torch_name] = np.ascontiguousarray(value)
    for torch_name, values in parts.items():
        out[torch_name] = np.concatenate(values, axis=0)
    return out


def _check_mha_pair(torch_spec: MhaSpec, paddle_spec: MhaSpec) -> None:
    _refuse_torch_only(torch_spec)
    _check_same_fields(torch_spec, paddle_spec, ("embed_dim", "num_heads", "kdim", "vdim", "bias"))


def mha_to_paddle(
    arrays: Mapping[str, Any], paddle_layer: Any, torch_layer: Any = None
) -> dict[str, "np.ndarray"]:
    """Layer-level conversion torch -> Paddle for multi-head attention.

    ``arrays``: the torch layer's ``state_dict()`` (local names, ``out_proj.*`` included).
    Without ``torch_layer`` the torch layout (packed or not, bias_k / bias_v) is read from the names.
    """
    paddle_spec = paddle_mha_spec(paddle_layer)
    if torch_layer is not None:
        torch_spec = torch_mha_spec(torch_layer)
        _check_mha_pair(torch_spec, paddle_spec)
    else:
        torch_spec = paddle_spec._replace(
            packed="in_proj_weight" in arrays,
            add_bias_kv="bias_k" in arrays or "bias_v" in arrays,
            batch_first=False,
        )
    return mha_arrays_to_paddle(arrays, torch_spec)


def mha_to_torch(
    arrays: Mapping[str, Any], torch_layer: Any, paddle_layer: Any = None
) -> dict[str, "np.ndarray"]:
    """Layer-level conversion Paddle -> torch for multi-head attention."""
    torch_spec = torch_mha_spec(torch_layer)
    if paddle_layer is not None:
        _check_mha_pair(torch_spec, paddle_mha_spec(paddle_layer))
    return mha_arrays_to_torch(arrays, torch_spec)


# paddle.compat.nn.MultiheadAttention (Paddle 3.x): torch's layout and options. Measured on 3.3.1:
# every tensor is torch's, unchanged (out_proj is a compat Linear, [out, in]), except that with
# kdim / vdim different from embed_dim the packed in_proj_bias is kept as q/k/v_proj_bias.


def compat_mha_spec(layer: Any) -> MhaSpec:
    """The :class:`MhaSpec` of a ``paddle.compat.nn.MultiheadAttention``."""
    if not hasattr(layer, "_qkv_same_embed_dim") or not hasattr(layer, "q_proj_bias"):
        raise TransferError(
            f"layer: expected a paddle.compat.nn.MultiheadAttention, got {type(layer).__name__}"
        )
    return MhaSpec(
        embed_dim=int(layer.embed_dim),
        num_heads=int(layer.num_heads),
        kdim=int(layer.kdim),
        vdim=int(layer.vdim),
        bias=layer.in_proj_bias is not None or layer.q_proj_bias is not None,
        packed=bool(layer._qkv_same_embed_dim),
        add_bias_kv=getattr(layer, "bias_k", None) is not None,
        add_zero_attn=bool(layer.add_zero_attn),
        dropout=float(layer.dropout),
        batch_first=bool(layer.batch_first),
    )


def compat_mha_param_pairs(spec: MhaSpec) -> list[tuple[str, str, str]]:
    """``(torch name, paddle.compat name, how)`` for a torch layer ``spec``: ``"copy"`` or ``"split"``."""
    pairs: list[tuple[str, str, str]] = []
    if spec.packed:
        pairs.append(("in_proj_weight", "in_proj_weight", "copy"))
        if spec.bias:
            pairs.append(("in_proj_bias", "in_proj_bias", "copy"))
    else:
        pairs += [(f"{p}_proj_weight", f"{p}_proj_weight", "copy") for p in "qkv"]
        if spec.bias:
            pairs += [("in_proj_bias", f"{p}_proj_bias", "split") for p in "qkv"]
    if spec.add_bias_kv:
        pairs += [("bias_k", "bias_k", "copy"), ("bias_v", "bias_v", "copy")]
    pairs.append(("out_proj.weight", "out_proj.weight", "copy"))
    if spec.bias:
        pairs.append(("out_proj.bias", "out_proj.bias", "copy"))
    return pairs


def _compat_shapes(spec: MhaSpec) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    torch_shapes = _mha_torch_shapes(spec)
    e = spec.embed_dim
    if spec.add_bias_kv:
        torch_shapes.update(bias_k=(1, 1, e), bias_v=(1, 1, e))
    compat: dict[str, tuple[int, ...]] = {}
    for torch_name, name, how in compat_mha_param_pairs(spec):
        compat[name] = (e,) if how == "split" else torch_shapes[torch_name]
    return torch_shapes, compat


def compat_mha_arrays_to_paddle(arrays: Mapping[str, Any], spec: MhaSpec) -> dict[str, "np.ndarray"]:
    """torch ``MultiheadAttention`` parameters -> ``paddle.compat.nn.MultiheadAttention``'s."""
    torch_shapes, _ = _compat_shapes(spec)
    _check_exact("torch MultiheadAttention parameters", "torch", arrays, torch_shapes, spec)
    e = spec.embed_dim
    out = {}
    for torch_name, name, how in compat_mha_param_pairs(spec):
        value = _arr(arrays[torch_name])
        if how == "split":
            i = "qkv".index(name[0])
            value = value[i * e:(i + 1) * e]
        out[name] = value
    return out


def compat_mha_arrays_to_torch(arrays: Mapping[str, Any], spec: MhaSpec) -> dict[str, "np.ndarray"]:
    """``paddle.compat.nn.MultiheadAttention`` parameters -> torch's, for a torch layer ``spec``."""
    import numpy as np

    _, compat = _compat_shapes(spec)
    _check_exact("paddle.compat MultiheadAttention parameters", "Paddle", arrays, compat, spec)
    out: dict[str, np.ndarray] = {}
    parts: list[np.ndarray] = []
    for torch_name, name, how in compat_mha_param_pairs(spec):
        if how == "split":
            parts.append(_arr(arrays[name]))
        else:
            out[torch_name] = _arr(arrays[name])
    if parts:
        out["in_proj_bias"] = np.concatenate(parts)
    return out


def _check_compat_pair(torch_spec: MhaSpec, compat_spec: MhaSpec) -> None:
    fields = ("embed_dim", "num_heads", "kdim", "vdim", "bias", "add_bias_kv")
    _check_same_fields(torch_spec, compat_spec, fields, other_label="paddle.compat")


def compat_mha_to_paddle(
    arrays: Mapping[str, Any], paddle_layer: Any, torch_layer: Any = None
) -> dict[str, "np.ndarray"]:
    """Layer-level conversion torch -> ``paddle.compat.nn.MultiheadAttention``."""
    compat_spec = compat_mha_spec(paddle_layer)
    if torch_layer is not None:
        torch_spec = torch_mha_spec(torch_layer)
        _check_compat_pair(torch_spec, compat_spec)
    else:
        torch_spec = compat_spec
    return compat_mha_arrays_to_paddle(arrays, torch_spec)


def compat_mha_to_torch(
    arrays: Mapping[str, Any], torch_layer: Any, paddle_layer: Any = None
) -> dict[str, "np.ndarray"]:
    """Layer-level conversion ``paddle.compat.nn.MultiheadAttention`` -> torch."""
    torch_spec = torch_mha_spec(torch_layer)
    if paddle_layer is not None:
        _check_compat_pair(torch_spec, compat_mha_spec(paddle_layer))
    return compat_mha_arrays_to_torch(arrays, torch_spec)


# --------------------------------------------------------------------------------------------
# Layer rules (rules.py includes ``RULES``; built on first access so that importing this module
# never imports rules.py, which imports this one)
# --------------------------------------------------------------------------------------------


def _need(layer: Any, what: str) -> Any:
    if layer is None:
        raise TransferError(f"{what}: the destination layer is needed to convert these weights")
    return layer


def _rnn_rule_to_paddle(arrays: dict, torch_layer: Any, paddle_layer: Any) -> dict:
    return rnn_to_paddle(arrays, _need(paddle_layer, "paddle layer"), torch_layer)


def _rnn_rule_to_torch(arrays: dict, torch_layer: Any, paddle_layer: Any) -> dict:
    return rnn_to_torch(arrays, _need(torch_layer, "torch layer"), paddle_layer)


def _rnn_rule_pairs(torch_layer: Any, paddle_layer: Any) -> list:
    spec = torch_rnn_spec(torch_layer) if torch_layer is not None else paddle_rnn_spec(_need(paddle_layer, "layers"))
    # Paddle biases set to zero for a bias-free torch layer have no torch entry: not listed.
    return [(p, t, how) for t, p, how in rnn_param_pairs(spec) if t is not None]


def _mha_rule_to_paddle(arrays: dict, torch_layer: Any, paddle_layer: Any) -> dict:
    return mha_to_paddle(arrays, _need(paddle_layer, "paddle layer"), torch_layer)


def _mha_rule_to_torch(arrays: dict, torch_layer: Any, paddle_layer: Any) -> dict:
    return mha_to_torch(arrays, _need(torch_layer, "torch layer"), paddle_layer)


def _mha_spec_of(torch_layer: Any, paddle_layer: Any, paddle_spec: Any) -> MhaSpec:
    if torch_layer is not None:
        return torch_mha_spec(torch_layer)
    return paddle_spec(_need(paddle_layer, "layers"))


def _mha_rule_pairs(torch_layer: Any, paddle_layer: Any) -> list:
    spec = _mha_spec_of(torch_layer, paddle_layer, paddle_mha_spec)
    if torch_layer is None:  # a bare torch state dict: assume the packed layout where it applies
        spec = spec._replace(packed=(spec.kdim, spec.vdim) == (spec.embed_dim,) * 2)
    return [(p, t, how) for t, p, how in mha_param_pairs(spec)]


def _compat_rule_to_paddle(arrays: dict, torch_layer: Any, paddle_layer: Any) -> dict:
    return compat_mha_to_paddle(arrays, _need(paddle_layer, "paddle layer"), torch_layer)


def _compat_rule_to_torch(arrays: dict, torch_layer: Any, paddle_layer: Any) -> dict:
    return compat_mha_to_torch(arrays, _need(torch_layer, "torch layer"), paddle_layer)


def _compat_rule_pairs(torch_layer: Any, paddle_layer: Any) -> list:
    spec = _mha_spec_of(torch_layer, paddle_layer, compat_mha_spec)
    return [(p, t, how) for t, p, how in compat_mha_param_pairs(spec)]


def _field(spec_fn: Any, name: str) -> Any:
    def get(layer: Any) -> Any:
        return getattr(spec_fn(layer), name)

    get.__name__ = f"get_{name}"
    return get


def _round(v: Any) -> Any:
    return round(float(v), 9) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def _activation(spec_fn: Any) -> Any:
    def get(layer: Any) -> Any:
        mode = spec_fn(layer).mode
        return mode[4:].lower() if mode.startswith("RNN_") else None

    return get


def _build_rules() -> tuple:
    from .rules import ConfigRule, LayerRule

    def rnn_config(*extra: Any) -> tuple:
        def c(label: str, field: str, normalise: Any = None) -> Any:
            return ConfigRule(label, _field(torch_rnn_spec, field), _field(paddle_rnn_spec, field), normalise)

        return (
            c("input_size", "input_size"),
            c("hidden_size", "hidden_size"),
            c("num_layers", "num_layers"),
            c("bidirectional", "bidirectional"),
            c("dropout between layers", "dropout", _round),
            c("batch_first (paddle: not time_major)", "batch_first"),
            c("bias (paddle: trainable biases)", "bias"),
        ) + extra

    def mha_config(paddle_spec: Any) -> tuple:
        def c(label: str, field: str, normalise: Any = None) -> Any:
            return ConfigRule(label, _field(torch_mha_spec, field), _field(paddle_spec, field), normalise)

        return (
            c("embed_dim", "embed_dim"),
            c("num_heads", "num_heads"),
            c("kdim", "kdim"),
            c("vdim", "vdim"),
            c("bias", "bias"),
            c("dropout (attention weights)", "dropout", _round),
            c("batch_first (paddle.nn.MultiHeadAttention: always)", "batch_first"),
            c("add_bias_kv", "add_bias_kv"),
            c("add_zero_attn", "add_zero_attn"),
        )

    proj = ConfigRule("proj_size", _field(torch_rnn_spec, "proj_size"), _field(paddle_rnn_spec, "proj_size"))
    act = ConfigRule("nonlinearity", _activation(torch_rnn_spec), _activation(paddle_rnn_spec))

    # Qualified type names: a user's own ``class RNN(nn.Module)`` or ``class LSTM(nn.Layer)`` model
    # must not be taken for the framework's layer (these rules convert whole subtrees).
    def rnn_rule(name: str, torch_type: str, paddle_type: str, config: tuple) -> Any:
        return LayerRule(
            name, (f"torch.nn.modules.rnn.{torch_type}",), (f"paddle.nn.layer.rnn.{paddle_type}",), config=config,
            to_paddle=_rnn_rule_to_paddle, to_torch=_rnn_rule_to_torch, name_pairs=_rnn_rule_pairs,
        )

    return (
        rnn_rule("lstm", "LSTM", "LSTM", rnn_config(proj)),
        rnn_rule("gru", "GRU", "GRU", rnn_config()),
        rnn_rule("simple-rnn", "RNN", "SimpleRNN", rnn_config(act)),
        LayerRule(
            "multihead-attention-compat",
            ("torch.nn.modules.activation.MultiheadAttention",),
            ("paddle.compat.nn.transformer.MultiheadAttention", "paddle.compat.nn.MultiheadAttention"),
            config=mha_config(compat_mha_spec),
            to_paddle=_compat_rule_to_paddle,
            to_torch=_compat_rule_to_torch,
            name_pairs=_compat_rule_pairs,
        ),
        LayerRule(
            "multihead-attention",
            ("torch.nn.modules.activation.MultiheadAttention",),
            ("paddle.nn.layer.transformer.MultiHeadAttention",),
            config=mha_config(paddle_mha_spec),
            to_paddle=_mha_rule_to_paddle,
            to_torch=_mha_rule_to_torch,
            name_pairs=_mha_rule_pairs,
        ),
    )


def __getattr__(name: str) -> Any:
    if name == "RULES":
        rules = _build_rules()
        globals()["RULES"] = rules
        return rules
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
