"""Recurrent layers and multi-head attention: weight conversion PyTorch <-> Paddle, by outputs.

Oracle: the real layers on both sides. After converting one layer's weights into the other,
both run on the same input (and the same initial states); outputs and final states must agree
within 1e-5, and converting back must give the original arrays bit for bit.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from paddlefix.align import TransferError
from paddlefix.align import _rnn

paddle = pytest.importorskip("paddle")
torch = pytest.importorskip("torch")

TOL = 1e-5
B, T, IN, HID = 3, 5, 6, 8
PADDLE_HAS_PROJ = "proj_size" in inspect.signature(paddle.nn.LSTM.__init__).parameters


# -- helpers ---------------------------------------------------------------------------
def _torch_arrays(layer: "torch.nn.Module") -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in layer.state_dict().items()}


def _paddle_arrays(layer: "paddle.nn.Layer") -> dict[str, np.ndarray]:
    return {k: v.numpy().copy() for k, v in layer.state_dict().items()}


def _load_paddle(layer: "paddle.nn.Layer", arrays: dict[str, np.ndarray]) -> None:
    state = layer.state_dict()
    for name, value in arrays.items():
        assert tuple(state[name].shape) == value.shape, name
        state[name].set_value(np.ascontiguousarray(value))


def _load_torch(layer: "torch.nn.Module", arrays: dict[str, np.ndarray]) -> None:
    assert set(arrays) == set(layer.state_dict()), (sorted(arrays), sorted(layer.state_dict()))
    layer.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()})


def _max(a: object, b: object) -> float:
    a = a.detach().numpy() if hasattr(a, "detach") and not hasattr(a, "place") else a.numpy()
    b = b.detach().numpy() if hasattr(b, "detach") and not hasattr(b, "place") else b.numpy()
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


def _torch_rnn(mode: str, layers: int, bidi: bool, bias: bool, batch_first: bool, proj: int = 0):
    kw = dict(num_layers=layers, bidirectional=bidi, bias=bias, batch_first=batch_first)
    if mode == "LSTM":
        return torch.nn.LSTM(IN, HID, proj_size=proj, **kw)
    if mode == "GRU":
        return torch.nn.GRU(IN, HID, **kw)
    return torch.nn.RNN(IN, HID, nonlinearity=mode[4:].lower(), **kw)


def _paddle_rnn(mode: str, layers: int, bidi: bool, batch_first: bool, proj: int = 0):
    kw = dict(num_layers=layers, direction="bidirect" if bidi else "forward", time_major=not batch_first)
    if mode == "LSTM":
        return paddle.nn.LSTM(IN, HID, **kw, **({"proj_size": proj} if proj else {}))
    if mode == "GRU":
        return paddle.nn.GRU(IN, HID, **kw)
    return paddle.nn.SimpleRNN(IN, HID, activation=mode[4:].lower(), **kw)


def _run_both(mode, t_layer, p_layer, layers, bidi, batch_first, proj=0, seed=0) -> list[float]:
    """Max |torch - paddle| of the output and each final state, with random initial states."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, IN) if batch_first else (T, B, IN)).astype("float32")
    d = 2 if bidi else 1
    h0 = rng.standard_normal((layers * d, B, proj or HID)).astype("float32")
    c0 = rng.standard_normal((layers * d, B, HID)).astype("float32")
    if mode == "LSTM":
        t_out, t_state = t_layer(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
        p_out, p_state = p_layer(paddle.to_tensor(x), (paddle.to_tensor(h0), paddle.to_tensor(c0)))
    else:
        t_out, t_state = t_layer(torch.from_numpy(x), torch.from_numpy(h0))
        p_out, p_state = p_layer(paddle.to_tensor(x), paddle.to_tensor(h0))
        t_state, p_state = (t_state,), (p_state,)
    return [_max(t_out, p_out)] + [_max(a, b) for a, b in zip(t_state, p_state)]


RNN_CASES = [
    # mode, num_layers, bidirectional, bias, batch_first
    ("LSTM", 1, False, True, True),
    ("LSTM", 2, True, True, True),
    ("LSTM", 2, True, True, False),
    ("LSTM", 2, False, False, True),
    ("GRU", 1, False, True, True),
    ("GRU", 2, True, True, True),
    ("GRU", 1, True, False, False),
    ("RNN_TANH", 1, False, True, True),
    ("RNN_TANH", 2, True, False, True),
    ("RNN_RELU", 2, True, True, True),
    ("RNN_RELU", 1, False, True, False),
]


def _ids(case: tuple) -> str:
    mode, layers, bidi, bias, bf = case
    return f"{mode}-L{layers}-{'bi' if bidi else 'fw'}-{'bias' if bias else 'nobias'}-{'bf' if bf else 'tm'}"


# -- recurrent layers ------------------------------------------------------------------
@pytest.mark.parametrize("case", RNN_CASES, ids=_ids)
def test_rnn_torch_to_paddle_outputs_and_round_trip(case: tuple) -> None:
    mode, layers, bidi, bias, bf = case
    torch.manual_seed(0)
    t_layer = _torch_rnn(mode, layers, bidi, bias, bf)
    p_layer = _paddle_rnn(mode, layers, bidi, bf)
    source = _torch_arrays(t_layer)

    converted = _rnn.rnn_to_paddle(source, p_layer, t_layer)
    cells = {p for _, p, _ in _rnn.rnn_param_pairs(_rnn.torch_rnn_spec(t_layer))}
    assert set(converted) == set(p_layer.state_dict()) and cells <= set(converted)  # + flat aliases
    _load_paddle(p_layer, converted)
    diffs = _run_both(mode, t_layer, p_layer, layers, bidi, bf)
    assert max(diffs) <= TOL, diffs
    if not bias:  # torch has no biases: Paddle's are zero
        assert all(not v.any() for k, v in converted.items() if ".bias_" in k)

    # back, from the Paddle layer's full state_dict (cell names and flat aliases)
    back = _rnn.rnn_to_torch(_paddle_arrays(p_layer), t_layer, p_layer)
    assert set(back) == set(source)
    for name in source:
        assert back[name].dtype == source[name].dtype and np.array_equal(back[name], source[name]), name


@pytest.mark.parametrize("case", [c for c in RNN_CASES if c[3]], ids=_ids)
def test_rnn_paddle_to_torch_outputs(case: tuple) -> None:
    mode, layers, bidi, _, bf = case
    paddle.seed(1)
    p_layer = _paddle_rnn(mode, layers, bidi, bf)
    t_layer = _torch_rnn(mode, layers, bidi, True, bf)
    source = _paddle_arrays(p_layer)
    _load_torch(t_layer, _rnn.rnn_to_torch(source, t_layer, p_layer))
    diffs = _run_both(mode, t_layer, p_layer, layers, bidi, bf, seed=1)
    assert max(diffs) <= TOL, diffs
    again = _rnn.rnn_to_paddle(_torch_arrays(t_layer), p_layer, t_layer)
    for name, value in again.items():
        assert np.array_equal(value, source[name]), name


def test_rnn_gate_order_matters() -> None:
    """The identity copy is proved, not assumed: swapping two LSTM gates breaks the outputs."""
    torch.manual_seed(0)
    t_layer, p_layer = _torch_rnn("LSTM", 1, False, True, True), _paddle_rnn("LSTM", 1, False, True)
    converted = _rnn.rnn_to_paddle(_torch_arrays(t_layer), p_layer, t_layer)
    swapped = {k: v for k, v in converted.items() if ".cell" in k}  # not the flat aliases
    w = converted["0.cell.weight_ih"]
    swapped["0.cell.weight_ih"] = np.concatenate([w[HID:2 * HID], w[:HID], w[2 * HID:]])
    _load_paddle(p_layer, swapped)
    assert max(_run_both("LSTM", t_layer, p_layer, 1, False, True)) > 1e-3


def test_rnn_bare_state_dicts() -> None:
    """Without the source layer: torch names to Paddle; Paddle's flat names alone back to torch."""
    torch.manual_seed(2)
    t_layer, p_layer = _torch_rnn("GRU", 2, True, True, True), _paddle_rnn("GRU", 2, True, True)
    source = _torch_arrays(t_layer)
    _load_paddle(p_layer, _rnn.rnn_to_paddle(source, p_layer))
    assert max(_run_both("GRU", t_layer, p_layer, 2, True, True)) <= TOL
    flat = {k: v for k, v in _paddle_arrays(p_layer).items() if ".cell" not in k}
    assert sorted(flat) == sorted(source)  # with biases and no projection they are right
    back = _rnn.rnn_to_torch(flat, t_layer)
    assert all(np.array_equal(back[k], source[k]) for k in source)

    t_nobias = _torch_rnn("LSTM", 1, False, False, True)
    p_layer = _paddle_rnn("LSTM", 1, False, True)
    converted = _rnn.rnn_to_paddle(_torch_arrays(t_nobias), p_layer)  # no bias names: zeros
    assert not converted["0.cell.bias_ih"].any() and not converted["0.cell.bias_hh"].any()


def test_rnn_refusals() -> None:
    torch.manual_seed(3)
    t_layer = _torch_rnn("LSTM", 2, True, True, True)
    with pytest.raises(TransferError, match="num_layers: torch 2, paddle 1"):
        _rnn.rnn_to_paddle(_torch_arrays(t_layer), _paddle_rnn("LSTM", 1, True, True), t_layer)
    with pytest.raises(TransferError, match="mode: torch 'LSTM', paddle 'GRU'"):
        _rnn.rnn_to_paddle(_torch_arrays(t_layer), _paddle_rnn("GRU", 2, True, True), t_layer)
    with pytest.raises(TransferError, match="mode: torch 'RNN_TANH', paddle 'RNN_RELU'"):
        _rnn.rnn_to_paddle({}, _paddle_rnn("RNN_RELU", 1, False, True), _torch_rnn("RNN_TANH", 1, False, True, True))
    p_layer = _paddle_rnn("LSTM", 2, True, True)
    bad = _torch_arrays(t_layer)
    bad["weight_hh_l1"] = bad["weight_hh_l1"][:, :-1]
    del bad["bias_ih_l0_reverse"]
    with pytest.raises(TransferError, match=r"missing bias_ih_l0_reverse.*weight_hh_l1 \(32, 7\)"):
        _rnn.rnn_to_paddle(bad, p_layer)
    extra = dict(_torch_arrays(t_layer), weight_ih_l2=np.zeros((32, 16), "float32"))
    with pytest.raises(TransferError, match="not part of LSTM.*weight_ih_l2"):
        _rnn.rnn_to_paddle(extra, p_layer)
    # Paddle biases that are not zero cannot go into a torch layer without biases
    with pytest.raises(TransferError, match="bias=False but the Paddle biases 0.cell_fw.bias_ih"):
        _rnn.rnn_to_torch(_paddle_arrays(p_layer), _torch_rnn("LSTM", 2, True, False, True), p_layer)
    with pytest.raises(TransferError, match="expected a torch.nn.LSTM, GRU or RNN, got Linear"):
        _rnn.rnn_to_torch({}, torch.nn.Linear(2, 2))
    with pytest.raises(TransferError, match="expected a paddle.nn.LSTM, GRU or SimpleRNN, got Linear"):
        _rnn.rnn_to_paddle({}, paddle.nn.Linear(2, 2))


def test_paddle_bias_attr_false_rnn_does_not_build() -> None:
    """Why a torch bias=False RNN goes into a Paddle RNN with zero biases (2.6.2 and 3.3.1)."""
    with pytest.raises(IndexError):
        paddle.nn.GRU(IN, HID, num_layers=2, bias_ih_attr=False, bias_hh_attr=False)


@pytest.mark.skipif(not PADDLE_HAS_PROJ, reason="this Paddle's LSTM has no proj_size")
@pytest.mark.parametrize("layers,bidi", [(1, False), (2, True)])
def test_lstm_projection(layers: int, bidi: bool) -> None:
    torch.manual_seed(4)
    t_layer = _torch_rnn("LSTM", layers, bidi, True, True, proj=3)
    p_layer = _paddle_rnn("LSTM", layers, bidi, True, proj=3)
    source = _torch_arrays(t_layer)
    converted = _rnn.rnn_to_paddle(source, p_layer, t_layer)
    assert converted["0.cell" + ("_fw" if bidi else "") + ".weight_ho"].shape == (HID, 3)
    _load_paddle(p_layer, converted)
    assert max(_run_both("LSTM", t_layer, p_layer, layers, bidi, True, proj=3)) <= TOL
    # Paddle's full state_dict has flat aliases that point at other tensors here; cell names win
    full = _paddle_arrays(p_layer)
    if bidi:
        assert full["weight_ih_l0_reverse"].shape == (HID, 3)  # it is 0.cell_fw.weight_ho
    back = _rnn.rnn_to_torch(full, t_layer, p_layer)
    assert all(np.array_equal(back[k], source[k]) for k in source)
    if bidi:
        flat = {k: v for k, v in full.items() if ".cell" not in k}
        with pytest.raises(TransferError, match="with proj_size Paddle's flat names point at other"):
            _rnn.rnn_to_torch(flat, t_layer)


@pytest.mark.skipif(PADDLE_HAS_PROJ, reason="this Paddle's LSTM has proj_size")
def test_lstm_projection_refused_without_paddle_support() -> None:
    t_layer = _torch_rnn("LSTM", 1, False, True, True, proj=3)
    with pytest.raises(TransferError, match="proj_size: torch 3, paddle 0.*has proj_size from Paddle 3"):
        _rnn.rnn_to_paddle(_torch_arrays(t_layer), _paddle_rnn("LSTM", 1, False, True), t_layer)


# -- multi-head attention --------------------------------------------------------------
E, HEADS, L, S = 8, 2, 4, 5


def _torch_mha(kdim=None, vdim=None, bias=True, batch_first=True, **kw):
    torch.manual_seed(5)
    layer = torch.nn.MultiheadAttention(E, HEADS, kdim=kdim, vdim=vdim, bias=bias, batch_first=batch_first, **kw)
    if bias:  # torch starts these at zero: make them count
        with torch.no_grad():
            layer.in_proj_bias.uniform_(-0.5, 0.5)
            layer.out_proj.bias.uniform_(-0.5, 0.5)
    return layer.eval()


def _mha_diff(t_layer, p_layer, kdim=None, vdim=None, mask=None, seed=0) -> float:
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, L, E)).astype("float32")
    k = rng.standard_normal((B, S, kdim or E)).astype("float32")
    v = rng.standard_normal((B, S, vdim or E)).astype("float32")
    t_mask = p_mask = None
    if mask == "bool":  # torch: True = masked out; paddle: True = kept
        keep = rng.random((L, S)) > 0.4
        keep[:, 0] = True
        t_mask, p_mask = torch.from_numpy(~keep), paddle.to_tensor(keep)
    elif mask == "float":
        add = np.where(rng.random((L, S)) > 0.4, 0.0, -1e9).astype("float32")
        add[:, 0] = 0.0
        t_mask, p_mask = torch.from_numpy(add), paddle.to_tensor(add)
    tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))
    if not t_layer.batch_first:
        tq, tk, tv = (a.transpose(0, 1) for a in (tq, tk, tv))
    t_out, _ = t_layer(tq, tk, tv, attn_mask=t_mask, need_weights=False)
    if not t_layer.batch_first:
        t_out = t_out.transpose(0, 1)
    p_out = p_layer(paddle.to_tensor(q), paddle.to_tensor(k), paddle.to_tensor(v), attn_mask=p_mask)
    return _max(t_out, p_out)


MHA_CASES = [
    dict(),
    dict(bias=False),
    dict(kdim=4, vdim=6),
    dict(kdim=4, vdim=6, bias=False),
    dict(batch_first=False),
    dict(mask="bool"),
    dict(mask="float"),
]


@pytest.mark.parametrize("case", MHA_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()) or "packed")
def test_mha_both_directions(case: dict) -> None:
    case = dict(case)
    mask = case.pop("mask", None)
    t_layer = _torch_mha(**case)
    paddle.seed(6)
    p_layer = paddle.nn.MultiHeadAttention(
        E, HEADS, kdim=case.get("kdim"), vdim=case.get("vdim"), bias_attr=None if case.get("bias", True) else False
    )
    p_layer.eval()
    source = _torch_arrays(t_layer)
    assert ("in_proj_weight" in source) == ("kdim" not in case)

    _load_paddle(p_layer, _rnn.mha_to_paddle(source, p_layer, t_layer))
    diff = _mha_diff(t_layer, p_layer, case.get("kdim"), case.get("vdim"), mask)
    assert diff <= TOL, diff
    back = _rnn.mha_to_torch(_paddle_arrays(p_layer), t_layer, p_layer)
    assert set(back) == set(source) and all(np.array_equal(back[k], source[k]) for k in source)
    # bare torch state dict: same result
    bare = _rnn.mha_to_paddle(source, p_layer)
    assert all(np.array_equal(bare[k], v) for k, v in _paddle_arrays(p_layer).items())

    # Paddle -> torch from Paddle's own (different) weights
    p_fresh = paddle.nn.MultiHeadAttention(
        E, HEADS, kdim=case.get("kdim"), vdim=case.get("vdim"), bias_attr=None if case.get("bias", True) else False
    )
    p_fresh.eval()
    if case.get("bias", True):
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            bias = getattr(p_fresh, name).bias
            bias.set_value(np.random.default_rng(7).uniform(-0.5, 0.5, bias.shape).astype("float32"))
    _load_torch(t_layer, _rnn.mha_to_torch(_paddle_arrays(p_fresh), t_layer, p_fresh))
    diff = _mha_diff(t_layer, p_fresh, case.get("kdim"), case.get("vdim"), mask, seed=1)
    assert diff <= TOL, diff


def test_mha_split_order_matters() -> None:
    """q / k / v thirds in that order: swapping q and k is caught by the outputs."""
    t_layer = _torch_mha()
    p_layer = paddle.nn.MultiHeadAttention(E, HEADS)
    converted = _rnn.mha_to_paddle(_torch_arrays(t_layer), p_layer, t_layer)
    converted["q_proj.weight"], converted["k_proj.weight"] = converted["k_proj.weight"], converted["q_proj.weight"]
    _load_paddle(p_layer, converted)
    assert _mha_diff(t_layer, p_layer) > 1e-3


def test_mha_refusals() -> None:
    p_layer = paddle.nn.MultiHeadAttention(E, HEADS)
    for kw, what in ((dict(add_bias_kv=True), "add_bias_kv=True"), (dict(add_zero_attn=True), "add_zero_attn=True")):
        t_layer = _torch_mha(**kw)
        with pytest.raises(TransferError, match=f"{what} has no equivalent in paddle.nn.MultiHeadAttention"):
            _rnn.mha_to_paddle(_torch_arrays(t_layer), p_layer, t_layer)
        with pytest.raises(TransferError, match=f"{what} has no equivalent"):
            _rnn.mha_to_torch(_paddle_arrays(p_layer), t_layer, p_layer)
    with pytest.raises(TransferError, match="add_bias_kv=True has no equivalent"):  # bare state dict
        _rnn.mha_to_paddle(_torch_arrays(_torch_mha(add_bias_kv=True)), p_layer)
    t_layer = _torch_mha()
    with pytest.raises(TransferError, match="num_heads: torch 2, paddle 4"):
        _rnn.mha_to_paddle(_torch_arrays(t_layer), paddle.nn.MultiHeadAttention(E, 4), t_layer)
    with pytest.raises(TransferError, match="bias: torch True, paddle False"):
        _rnn.mha_to_paddle(_torch_arrays(t_layer), paddle.nn.MultiHeadAttention(E, HEADS, bias_attr=False), t_layer)
    with pytest.raises(TransferError, match="kdim: torch 8, paddle 4"):
        _rnn.mha_to_torch({}, t_layer, paddle.nn.MultiHeadAttention(E, HEADS, kdim=4))
    with pytest.raises(TransferError, match=r"missing in_proj_bias.*wrong shape out_proj.weight \(8, 7\)"):
        bad = _torch_arrays(t_layer)
        del bad["in_proj_bias"]
        bad["out_proj.weight"] = bad["out_proj.weight"][:, :7]
        _rnn.mha_to_paddle(bad, p_layer, t_layer)
    with pytest.raises(TransferError, match="expected a torch.nn.MultiheadAttention, got Linear"):
        _rnn.mha_to_torch({}, torch.nn.Linear(2, 2))


# -- paddle.compat.nn.MultiheadAttention (Paddle 3.x): torch's layout and options -----------
COMPAT_MHA = getattr(getattr(getattr(paddle, "compat", None), "nn", None), "MultiheadAttention", None)


@pytest.mark.skipif(COMPAT_MHA is None, reason="this Paddle has no paddle.compat.nn.MultiheadAttention")
@pytest.mark.parametrize(
    "case",
    [dict(), dict(bias=False), dict(kdim=4, vdim=6), dict(add_bias_kv=True, add_zero_attn=True, batch_first=False),
     dict(kdim=4, vdim=6, add_bias_kv=True, bias=False)],
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()) or "packed",
)
def test_compat_mha_both_directions(case: dict) -> None:
    t_layer = _torch_mha(**case)
    if case.get("add_bias_kv"):
        with torch.no_grad():
            t_layer.bias_k.uniform_(-0.5, 0.5)
            t_layer.bias_v.uniform_(-0.5, 0.5)
    p_layer = COMPAT_MHA(E, HEADS, **{"batch_first": True, **case})
    p_layer.eval()
    source = _torch_arrays(t_layer)
    converted = _rnn.compat_mha_to_paddle(source, p_layer, t_layer)
    _load_paddle(p_layer, converted)
    assert set(converted) == set(p_layer.state_dict())

    rng = np.random.default_rng(0)
    q = rng.standard_normal((B, L, E)).astype("float32")
    k = rng.standard_normal((B, S, case.get("kdim", E))).astype("float32")
    v = rng.standard_normal((B, S, case.get("vdim", E))).astype("float32")
    if not case.get("batch_first", True):
        q, k, v = (a.transpose(1, 0, 2).copy() for a in (q, k, v))
    masked = rng.random((L, S)) > 0.6  # both: True = masked out
    masked[:, 0] = False
    t_out, t_w = t_layer(*(torch.from_numpy(a) for a in (q, k, v)), attn_mask=torch.from_numpy(masked))
    p_out, p_w = p_layer(*(paddle.to_tensor(a) for a in (q, k, v)), attn_mask=paddle.to_tensor(masked))
    assert _max(t_out, p_out) <= TOL and _max(t_w, p_w) <= TOL

    back = _rnn.compat_mha_to_torch(_paddle_arrays(p_layer), t_layer, p_layer)
    assert set(back) == set(source) and all(np.array_equal(back[n], source[n]) for n in source)


@pytest.mark.skipif(COMPAT_MHA is None, reason="this Paddle has no paddle.compat.nn.MultiheadAttention")
def test_compat_mha_refusals() -> None:
    t_layer = _torch_mha(add_bias_kv=True)
    with pytest.raises(TransferError, match="add_bias_kv: torch True, paddle False"):
        _rnn.compat_mha_to_paddle(_torch_arrays(t_layer), COMPAT_MHA(E, HEADS), t_layer)
    with pytest.raises(TransferError, match="missing bias_k, bias_v"):  # bare state dict
        _rnn.compat_mha_to_paddle(_torch_arrays(_torch_mha()), COMPAT_MHA(E, HEADS, add_bias_kv=True))


# -- the entries in the rules table ------------------------------------------------------------
def _config_diffs(rule, t_layer, p_layer) -> list[str]:
    out = []
    for c in rule.config:
        norm = c.normalise or (lambda v: v)
        if norm(c.torch_get(t_layer)) != norm(c.paddle_get(p_layer)):
            out.append(c.label)
    return out


def test_rules_table_entries() -> None:
    from paddlefix.align import rules

    def find(t_cls, p_cls):
        q = lambda c: None if c is None else f"{c.__module__}.{c.__qualname__}"  # noqa: E731
        return rules.find_rule(
            t_cls and t_cls.__name__, p_cls and p_cls.__name__, torch_qualified=q(t_cls), paddle_qualified=q(p_cls)
        )

    assert find(torch.nn.LSTM, paddle.nn.LSTM).name == "lstm" and find(torch.nn.GRU, paddle.nn.GRU).name == "gru"
    assert find(torch.nn.RNN, paddle.nn.SimpleRNN).name == "simple-rnn"
    assert find(torch.nn.MultiheadAttention, paddle.nn.MultiHeadAttention).name == "multihead-attention"
    assert find(None, paddle.nn.SimpleRNN).name == "simple-rnn"  # a bare torch state dict
    assert find(torch.nn.LSTM, None).name == "lstm"
    if COMPAT_MHA is not None:
        assert find(torch.nn.MultiheadAttention, COMPAT_MHA).name == "multihead-attention-compat"

    class RNN(torch.nn.Module):  # a user's model of that name is not torch.nn.RNN
        pass

    class LSTM(paddle.nn.Layer):
        pass

    assert find(RNN, paddle.nn.SimpleRNN) is None and find(torch.nn.LSTM, LSTM) is None

    torch.manual_seed(0)
    t_layer = _torch_rnn("LSTM", 2, True, True, True)
    p_layer = _paddle_rnn("LSTM", 2, True, True)
    rule = rules.rule_by_name("lstm")
    _load_paddle(p_layer, rule.to_paddle(_torch_arrays(t_layer), t_layer, p_layer))
    assert max(_run_both("LSTM", t_layer, p_layer, 2, True, True)) <= TOL
    back = rule.to_torch(_paddle_arrays(p_layer), t_layer, None)
    assert all(np.array_equal(back[k], v) for k, v in _torch_arrays(t_layer).items())
    assert ("1.cell_bw.weight_ih", "weight_ih_l1_reverse", "copy") in rule.name_pairs(t_layer, p_layer)
    assert rule.name_pairs(None, p_layer) == rule.name_pairs(t_layer, None)
    assert _config_diffs(rule, t_layer, p_layer) == []

    other = _paddle_rnn("LSTM", 1, False, False)
    assert _config_diffs(rule, t_layer, other) == ["num_layers", "bidirectional", "batch_first (paddle: not time_major)"]
    assert _config_diffs(
        rules.rule_by_name("simple-rnn"), _torch_rnn("RNN_TANH", 1, False, True, True), _paddle_rnn("RNN_RELU", 1, False, True)
    ) == ["nonlinearity"]
    nobias = _torch_rnn("GRU", 1, False, False, True)
    assert _config_diffs(rules.rule_by_name("gru"), nobias, _paddle_rnn("GRU", 1, False, True)) == [
        "bias (paddle: trainable biases)"
    ]

    mha = rules.rule_by_name("multihead-attention")
    t_mha, p_mha = _torch_mha(), paddle.nn.MultiHeadAttention(E, HEADS)
    p_mha.eval()
    _load_paddle(p_mha, mha.to_paddle(_torch_arrays(t_mha), t_mha, p_mha))
    assert _mha_diff(t_mha, p_mha) <= TOL
    assert ("k_proj.weight", "in_proj_weight", "split+transpose") in mha.name_pairs(t_mha, p_mha)
    assert _config_diffs(mha, t_mha, p_mha) == []
    assert _config_diffs(mha, _torch_mha(add_zero_attn=True, batch_first=False), paddle.nn.MultiHeadAttention(E, 4, dropout=0.1)) == [
        "num_heads", "dropout (attention weights)", "batch_first (paddle.nn.MultiHeadAttention: always)", "add_zero_attn"
    ]
