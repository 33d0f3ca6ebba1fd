"""align.transfer from bare state dicts: the layout comes from the destination layer's type and the
framework the entries come from; NumPy arrays, which do not say, are never guessed at.

Also the report's rows for whole-layer rules (one row per destination entry) and Paddle RNN flat
names (aliases, not tied weights).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

from paddlefix import align
from paddlefix.align import TransferError, rules

paddle = pytest.importorskip("paddle")
torch = pytest.importorskip("torch")

ATOL = 1e-5


def _linear() -> tuple[Any, Any]:
    return torch.nn.Linear(8, 8), paddle.nn.Linear(8, 8)


def _mha() -> tuple[Any, Any]:
    return torch.nn.MultiheadAttention(8, 2, batch_first=True), paddle.nn.MultiHeadAttention(8, 2)


def _lstm() -> tuple[Any, Any]:
    return (torch.nn.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True),
            paddle.nn.LSTM(4, 6, num_layers=2, direction="bidirect"))


MODELS: dict[str, tuple[Callable[[], tuple[Any, Any]], tuple[int, ...]]] = {
    "linear": (_linear, (3, 8)),
    "mha": (_mha, (2, 5, 8)),
    "lstm": (_lstm, (2, 5, 4)),
}


def _make(name: str, seed: int) -> tuple[Any, Any]:
    torch.manual_seed(seed)
    paddle.seed(seed)
    t, p = MODELS[name][0]()
    t.eval()
    p.eval()
    return t, p


def _torch_out(m: Any, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        xt = torch.from_numpy(x)
        out = m(xt, xt, xt) if isinstance(m, torch.nn.MultiheadAttention) else m(xt)
    return (out[0] if isinstance(out, tuple) else out).numpy()


def _paddle_out(m: Any, x: np.ndarray) -> np.ndarray:
    xp = paddle.to_tensor(x)
    out = m(xp, xp, xp) if isinstance(m, paddle.nn.MultiHeadAttention) else m(xp)
    return (out[0] if isinstance(out, tuple) else out).numpy()


def _x(name: str) -> np.ndarray:
    return np.random.default_rng(3).normal(size=MODELS[name][1]).astype("float32")


def _outputs_differ_before(t: Any, p: Any, x: np.ndarray) -> None:
    assert np.abs(_torch_out(t, x) - _paddle_out(p, x)).max() > 1e-3  # the transfer below matters


@pytest.mark.parametrize("src", ["paddle", "torch"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_bare_state_dict_into_the_other_framework(name: str, src: str) -> None:
    t, p = _make(name, 11 if src == "paddle" else 12)
    x = _x(name)
    _outputs_differ_before(t, p, x)
    source, dst = (p, t) if src == "paddle" else (t, p)
    report = align.transfer(source.state_dict(), dst)
    assert report.ok and report.src == src, str(report)
    np.testing.assert_allclose(_torch_out(t, x), _paddle_out(p, x), atol=ATOL, rtol=0)


def test_square_linear_from_each_framework_transposes() -> None:
    t, p = _make("linear", 13)
    report = align.transfer(p.state_dict(), t)
    assert [(c.dst, c.how) for c in report.copied] == [("weight", "transpose"), ("bias", "copy")]
    np.testing.assert_array_equal(t.weight.detach().numpy(), p.weight.numpy().T)
    t2, p2 = _make("linear", 14)
    report = align.transfer(t2.state_dict(), p2)
    assert [(c.dst, c.how) for c in report.copied] == [("weight", "transpose"), ("bias", "copy")]
    np.testing.assert_array_equal(p2.weight.numpy(), t2.weight.detach().numpy().T)


@pytest.mark.parametrize("direction", ["paddle->torch", "torch->paddle"])
def test_numpy_square_linear_is_refused_until_the_framework_is_named(direction: str) -> None:
    t, p = _make("linear", 15)
    src_model, dst = (p, t) if direction == "paddle->torch" else (t, p)
    src_fw = "paddle" if src_model is p else "torch"
    arrays = {k: np.array(v.detach().numpy() if src_fw == "torch" else v.numpy()) for k, v in src_model.state_dict().items()}
    before = {k: np.array(v.detach().numpy() if src_fw == "paddle" else v.numpy()) for k, v in dst.state_dict().items()}
    with pytest.raises(TransferError, match=r"src_framework='(torch|paddle)' or src_framework='(torch|paddle)'") as exc:
        align.transfer(arrays, dst)
    assert "weight" in str(exc.value) and "Nothing was changed in dst" in str(exc.value)
    after = {k: np.array(v.detach().numpy() if src_fw == "paddle" else v.numpy()) for k, v in dst.state_dict().items()}
    assert all(np.array_equal(before[k], after[k]) for k in before)
    # named: the arrays are read in that framework's layout
    report = align.transfer(arrays, dst, src_framework=src_fw)
    assert report.src == src_fw and [c.how for c in report.copied] == ["transpose", "copy"]
    x = _x("linear")
    np.testing.assert_allclose(_torch_out(t, x), _paddle_out(p, x), atol=ATOL, rtol=0)
    # named as the destination's own framework: copied by name, as they are
    own = "torch" if src_fw == "paddle" else "paddle"
    report = align.transfer(arrays, dst, src_framework=own)
    assert report.src == own and [c.how for c in report.copied] == ["copy", "copy"]
    got = dst.weight.detach().numpy() if own == "torch" else dst.weight.numpy()
    np.testing.assert_array_equal(got, arrays["weight"])


def test_numpy_entries_that_fit_one_layout_only_need_no_framework() -> None:
    torch.manual_seed(16)
    paddle.seed(16)
    t, p = torch.nn.Linear(4, 6), paddle.nn.Linear(4, 6)
    x = np.random.default_rng(4).normal(size=(3, 4)).astype("float32")
    # torch arrays into Paddle: only the torch reading fits the shapes
    report = align.transfer({k: v.detach().numpy() for k, v in t.state_dict().items()}, p)
    assert report.src == "torch" and report.copied[0].how == "transpose"
    np.testing.assert_allclose(_paddle_out(p, x), _torch_out(t, x), atol=ATOL, rtol=0)
    # Paddle's own arrays into another Paddle layer: only the Paddle reading fits
    p2 = paddle.nn.Linear(4, 6)
    report = align.transfer({k: v.numpy() for k, v in p.state_dict().items()}, p2)
    assert report.src == "paddle" and [c.how for c in report.copied] == ["copy", "copy"]
    np.testing.assert_array_equal(p2.weight.numpy(), p.weight.numpy())
    # an MHA and an LSTM: names (in_proj_weight / q_proj.weight, 0.cell_fw...) tell the layouts apart
    for name in ("mha", "lstm"):
        tm, pm = _make(name, 17)
        align.transfer({k: v.detach().numpy() for k, v in tm.state_dict().items()}, pm)
        np.testing.assert_allclose(_paddle_out(pm, _x(name)), _torch_out(tm, _x(name)), atol=ATOL, rtol=0)


def test_src_framework_is_checked() -> None:
    t, p = _make("linear", 18)
    with pytest.raises(TransferError, match=r"src_framework: expected 'torch', 'paddle' or None, got 'pt'"):
        align.transfer(t.state_dict(), p, src_framework="pt")
    with pytest.raises(TransferError, match=r"src_framework='paddle', but src is a torch state dict"):
        align.transfer(t.state_dict(), p, src_framework="paddle")
    with pytest.raises(TransferError, match=r"src_framework='paddle', but src is a torch model"):
        align.transfer(t, p, src_framework="paddle")


def _qualified(n: str) -> tuple[str, str]:
    return n.rpartition(".")[2], (n if "." in n and not n.startswith(".") else "x." + n.lstrip("."))


def test_no_rule_ties_with_another_for_an_unknown_source() -> None:
    """For every layer type a rule names, with the other side unknown (a bare state dict), the best
    rule is unique, or every rule sharing the best score is a whole-layer rule whose entry names
    decide (``_pairing`` tries each)."""
    checked = 0
    for rule in rules.RULES:
        for side in ("torch", "paddle"):
            for n in getattr(rule, f"{side}_types"):
                tname, qual = _qualified(n)
                kw = {f"{side}_qualified": qual}
                args = (tname, None) if side == "torch" else (None, tname)
                found = rules.find_rules(*args, **kw)
                assert found, (rule.name, n)
                best = [r for r in found if _score(r, side, tname, qual) == _score(found[0], side, tname, qual)]
                if len(best) > 1:
                    assert all(r.name_pairs is not None for r in best), (n, [r.name for r in best])
                checked += 1
    assert checked > 40
    # the standard layers first: a bare Paddle state dict holds paddle.nn.Linear weights
    assert rules.find_rule("Linear", None, torch_qualified="torch.nn.modules.linear.Linear").name == "linear"
    assert rules.find_rule(None, "Linear", paddle_qualified="paddle.nn.layer.common.Linear").name == "linear"
    assert rules.find_rule(None, "Linear", paddle_qualified="paddle.compat.nn.Linear").name == "linear-torch-layout"


def _score(rule: Any, side: str, tname: str, qual: str) -> tuple[int, int]:
    t = rules._match_side(rule.torch_types, tname if side == "torch" else None, qual if side == "torch" else None)
    p = rules._match_side(rule.paddle_types, tname if side == "paddle" else None, qual if side == "paddle" else None)
    return (max(p, 0) + max(t, 0), p + t)


# -- the report -----------------------------------------------------------------------------------
def test_whole_layer_rows_name_their_own_sources() -> None:
    t, p = _make("mha", 19)
    report = align.transfer(t, p)
    rows = {c.dst: (c.src, c.how) for c in report.copied}
    assert rows == {
        "q_proj.weight": ("in_proj_weight", "split+transpose"),
        "q_proj.bias": ("in_proj_bias", "split"),
        "k_proj.weight": ("in_proj_weight", "split+transpose"),
        "k_proj.bias": ("in_proj_bias", "split"),
        "v_proj.weight": ("in_proj_weight", "split+transpose"),
        "v_proj.bias": ("in_proj_bias", "split"),
        "out_proj.weight": ("out_proj.weight", "transpose"),
        "out_proj.bias": ("out_proj.bias", "copy"),
    }
    back = align.transfer(p, _make("mha", 20)[0])
    rows = {c.dst: (c.src, c.how) for c in back.copied}
    assert rows == {
        "in_proj_weight": ("q_proj.weight+k_proj.weight+v_proj.weight", "transpose+join"),
        "in_proj_bias": ("q_proj.bias+k_proj.bias+v_proj.bias", "join"),
        "out_proj.weight": ("out_proj.weight", "transpose"),
        "out_proj.bias": ("out_proj.bias", "copy"),
    }
    assert "in_proj_weight+in_proj_bias" not in str(report) and "copy+split" not in str(report)
    # every row is a destination entry that exists, with one row each
    assert sorted(c.dst for c in report.copied) == sorted(p.state_dict())


def test_rnn_flat_names_are_aliases_not_tied() -> None:
    t, p = _make("lstm", 21)
    report = align.transfer(t, p)
    assert report.tied == [] and "tied:" not in str(report)
    flat = {n for n in p.state_dict() if ".cell" not in n}
    assert len(flat) == 16 and {a for pair in report.aliases for a in pair} >= flat
    assert len(report.aliases) == 16 and "16 aliases" in str(report)
    rows = {c.dst: c.src for c in report.copied}  # destination rows by cell name, own source each
    assert rows["0.cell_fw.weight_ih"] == "weight_ih_l0" and rows["1.cell_bw.bias_hh"] == "bias_hh_l1_reverse"
    assert len(rows) == 16
    assert report.to_dict()["aliases"] and not report.to_dict()["tied"]


# -- safetensors files: the layout their metadata names, else unknown ------------------------------
def test_safetensors_layout_from_metadata(tmp_path) -> None:
    st = pytest.importorskip("safetensors.numpy")
    t, p = _make("linear", 22)
    x = _x("linear")
    paddle_arrays = {k: v.numpy() for k, v in p.state_dict().items()}
    torch_arrays = {k: v.detach().numpy() for k, v in t.state_dict().items()}
    st.save_file(paddle_arrays, str(tmp_path / "pd.safetensors"), metadata={"format": "np"})  # as paddlenlp
    st.save_file(torch_arrays, str(tmp_path / "hf.safetensors"), metadata={"format": "pt"})  # as HF
    # Paddle-layout square weights in a file that only says "np": refused, then read as told
    t2 = _make("linear", 23)[0]
    with pytest.raises(TransferError, match="pass src_framework="):
        align.transfer(tmp_path / "pd.safetensors", t2)
    report = align.transfer(tmp_path / "pd.safetensors", t2, src_framework="paddle")
    assert report.copied[0].how == "transpose"
    np.testing.assert_allclose(_torch_out(t2, x), _paddle_out(p, x), atol=ATOL, rtol=0)
    # a "pt" file is torch's layout
    p2 = _make("linear", 24)[1]
    report = align.transfer(tmp_path / "hf.safetensors", p2)
    assert report.src == "torch" and report.copied[0].how == "transpose"
    np.testing.assert_allclose(_paddle_out(p2, x), _torch_out(t, x), atol=ATOL, rtol=0)


def test_paddlenlp_safetensors_checkpoint_into_paddlenlp_and_hf(tmp_path, bert_inputs) -> None:
    """paddlenlp writes Paddle-layout safetensors with format "np": read as Torch's layout, every
    square matrix would be transposed by mistake. The non-square ones tell the layouts apart."""
    from .conftest import make_hf, make_pd, to_numpy

    pd = make_pd("BertModel", seed=25)
    pd.save_pretrained(str(tmp_path / "pd"), safe_serialization=True)
    files = sorted((tmp_path / "pd").glob("*.safetensors"))
    assert len(files) == 1, files
    with paddle.no_grad():
        want = to_numpy(pd(**{k: paddle.to_tensor(v) for k, v in bert_inputs.items()}))
    fresh = make_pd("BertModel", seed=26)
    report = align.transfer(files[0], fresh)
    assert report.ok and report.src == "paddle" and {c.how for c in report.copied} == {"copy"}, str(report)
    with paddle.no_grad():
        got = to_numpy(fresh(**{k: paddle.to_tensor(v) for k, v in bert_inputs.items()}))
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    hf = make_hf("BertModel", seed=27)
    report = align.transfer(files[0], hf)
    assert report.ok and report.src == "paddle" and "transpose" in {c.how for c in report.copied}, str(report)
    with torch.no_grad():
        got = to_numpy(hf(**{k: torch.tensor(v) for k, v in bert_inputs.items()}))
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def test_partial_numpy_state_dict_with_square_weights_is_refused_too() -> None:
    torch.manual_seed(28)
    paddle.seed(28)
    t = torch.nn.Sequential(torch.nn.Linear(8, 8))
    p = paddle.nn.Sequential(paddle.nn.Linear(8, 8), paddle.nn.Linear(8, 8))
    arrays = {k: v.detach().numpy() for k, v in t.state_dict().items()}  # sets layer 0 only
    with pytest.raises(TransferError, match="different values for 0.weight"):
        align.transfer(arrays, p, strict=False)
    report = align.transfer(arrays, p, strict=False, src_framework="torch")
    assert [m.name for m in report.missing] == ["1.weight", "1.bias"]
    np.testing.assert_array_equal(p[0].weight.numpy(), arrays["0.weight"].T)


def test_zero_biases_of_a_bias_free_torch_rnn_have_rows_of_their_own() -> None:
    torch.manual_seed(29)
    paddle.seed(29)
    t, p = torch.nn.GRU(4, 4, bias=False, batch_first=True), paddle.nn.GRU(4, 4)
    report = align.transfer(t, p)
    rows = {c.dst: (c.src, c.how) for c in report.copied}
    assert rows == {
        "0.cell.weight_ih": ("weight_ih_l0", "copy"),
        "0.cell.weight_hh": ("weight_hh_l0", "copy"),
        "0.cell.bias_ih": ("-", "zeros"),
        "0.cell.bias_hh": ("-", "zeros"),
    }
    assert not p.state_dict()["0.cell.bias_ih"].numpy().any()
