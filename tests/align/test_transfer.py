"""align.transfer and align.pair against real Hugging Face / paddlenlp / torch / Paddle models.

Every rule is proved by outputs: after a transfer the two models compute the same thing
(within 1e-5), and a round trip torch -> Paddle -> torch gives back the same bits.
"""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import warnings

import numpy as np
import pytest

from paddlefix import align
from paddlefix.align import TransferError

from .conftest import (
    TINY,
    make_hf,
    make_paddle_cnn,
    make_pd,
    make_square_pair,
    make_torch_cnn,
    to_numpy,
)

paddle = pytest.importorskip("paddle")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("paddlenlp")

ATOL = 1e-5


def _hf_out(model, inputs):
    with torch.no_grad():
        return model(**{k: torch.tensor(v) for k, v in inputs.items()})


def _pd_out(model, inputs):
    with paddle.no_grad():
        return model(**{k: paddle.to_tensor(v) for k, v in inputs.items()})


def _state(model) -> dict[str, np.ndarray]:
    """A copy of every state entry as NumPy (torch or Paddle)."""
    if isinstance(model, torch.nn.Module):
        return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    return {k: np.array(v.numpy()) for k, v in model.state_dict().items()}


def _assert_same_state(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def _lines_fit(text: str, width: int = 100) -> None:
    assert text and all(len(line) <= width for line in text.splitlines()), max(text.splitlines(), key=len)


# -- BERT family ------------------------------------------------------------------------------
def test_bert_model_outputs_equal_and_report(hf_bert_pair, bert_inputs) -> None:
    hf, pd = hf_bert_pair  # aligned by align.transfer in the fixture
    a = _hf_out(hf, bert_inputs)
    b = _pd_out(pd, bert_inputs)
    np.testing.assert_allclose(to_numpy(b[0]), a.last_hidden_state.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(to_numpy(b[1]), a.pooler_output.numpy(), atol=ATOL, rtol=0)

    fresh = make_pd("BertModel", seed=7)
    report = align.transfer(hf, fresh)
    assert report.ok and report.src == "torch" and report.dst == "paddle"
    hows = {c.dst: c.how for c in report.copied}
    # every square projection is transposed: decided by the layer types, not the shapes
    for i in range(TINY["num_hidden_layers"]):
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            assert hows[f"encoder.layers.{i}.self_attn.{proj}.weight"] == "transpose"
    assert hows["embeddings.word_embeddings.weight"] == "copy"
    assert len(report.copied) == len(fresh.state_dict())
    _lines_fit(str(report))
    data = report.to_dict()
    json.dumps(data)
    assert data["ok"] is True and len(data["copied"]) == len(report.copied)


def test_bert_round_trip_bit_exact() -> None:
    hf = make_hf("BertModel", seed=11)
    pd = make_pd("BertModel", seed=12)
    back = make_hf("BertModel", seed=13)
    align.transfer(hf, pd)
    report = align.transfer(pd, back)
    assert report.ok, str(report)
    _assert_same_state(_state(hf), _state(back))
    for c in report.copied:  # bit for bit after the layout transform
        src = pd.state_dict()[c.src].numpy()
        dst = back.state_dict()[c.dst].numpy()
        assert np.array_equal(src.T if c.how == "transpose" else src, dst), c


def test_bert_pairing_pairs_containers_and_parameterless_leaves(hf_bert_pair) -> None:
    hf, pd = hf_bert_pair
    pairing = align.pair(pd, hf)  # argument order free
    by_paddle = {p.paddle_path: p for p in pairing.pairs}
    assert by_paddle[""].torch_path == ""
    assert by_paddle["encoder.layers.0"].torch_path == "encoder.layer.0"
    assert by_paddle["encoder.layers"].torch_path == "encoder.layer"
    assert by_paddle["encoder.layers.1.self_attn.q_proj"].torch_path == "encoder.layer.1.attention.self.query"
    assert by_paddle["encoder.layers.1.self_attn.q_proj"].rule == "linear"
    assert by_paddle["embeddings.layer_norm"].how == "hf-names"
    assert by_paddle["embeddings.dropout"].torch_path == "embeddings.dropout"
    assert by_paddle["pooler.activation"].torch_path == "pooler.activation"
    order = [n for n, _ in pd.named_sublayers(include_self=True)]
    assert [p.paddle_path for p in pairing.pairs] == [n for n in order if n in by_paddle]
    assert pairing.for_torch("encoder.layer.0") == by_paddle["encoder.layers.0"]
    assert pairing.for_paddle("nope") is None
    assert pairing.torch_name_of("pooler.dense.weight") == "pooler.dense.weight"
    assert not pairing.missing and not pairing.unused and pairing.ok
    _lines_fit(str(pairing))
    json.dumps(pairing.to_dict())
    with pytest.raises(TransferError, match="both torch"):
        align.pair(hf, make_hf("BertModel"))
    # transfer's pairing computes the layer pairs only when asked, and then the same ones
    report, same = align.transfer(hf, pd), align.pair(hf, pd)  # the same direction: the same step order
    assert report.pairing._finish is not None
    assert report.to_dict()["pairs"] == [p._asdict() for p in same.pairs]
    assert report.pairing._finish is None and report.pairing.params == same.params
    assert report.pairing.unpaired_paddle == same.unpaired_paddle == []


def test_bert_masked_lm_tied_decoder(hf_bert_mlm_pair, bert_inputs) -> None:
    hf, pd = hf_bert_mlm_pair
    a = _hf_out(hf, bert_inputs).logits.numpy()
    b = to_numpy(_pd_out(pd, bert_inputs))
    np.testing.assert_allclose(b, a, atol=ATOL, rtol=0)
    # the decoder is still tied to the word embeddings on both sides
    assert hf.cls.predictions.decoder.weight is hf.bert.embeddings.word_embeddings.weight
    fresh = make_pd("BertForMaskedLM", seed=21)
    with pytest.raises(TransferError, match="bert.pooler.dense.weight"):
        align.transfer(hf, fresh)  # paddlenlp's masked-LM model has a pooler, HF's has not
    report = align.transfer(hf, fresh, strict=False)
    assert [m.name for m in report.missing] == ["bert.pooler.dense.weight", "bert.pooler.dense.bias"]
    assert ("cls.predictions.decoder.bias", "cls.predictions.decoder_bias") in report.tied
    assert not report.unused
    # and back: every HF entry is set, the Paddle pooler is listed as unused
    back = make_hf("BertForMaskedLM", seed=22)
    report = align.transfer(pd, back)
    assert set(report.unused) == {"bert.pooler.dense.weight", "bert.pooler.dense.bias"}
    np.testing.assert_array_equal(back.cls.predictions.bias.detach().numpy(), hf.cls.predictions.bias.detach().numpy())
    np.testing.assert_allclose(_hf_out(back, bert_inputs).logits.numpy(), a, atol=ATOL, rtol=0)


def test_bert_question_answering(hf_bert_qa_pair, bert_inputs) -> None:
    hf, pd = hf_bert_qa_pair
    a = _hf_out(hf, bert_inputs)
    start, end = _pd_out(pd, bert_inputs)
    np.testing.assert_allclose(start.numpy(), a.start_logits.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(end.numpy(), a.end_logits.numpy(), atol=ATOL, rtol=0)
    pairing = align.pair(hf, pd)
    assert pairing.for_paddle("classifier").torch_path == "qa_outputs"


@pytest.mark.parametrize("family,cls", [("roberta", "RobertaModel"), ("ernie", "ErnieModel"), ("electra", "ElectraModel")])
def test_bert_family_models(family: str, cls: str, bert_inputs) -> None:
    if family == "roberta":
        hf, pd = make_hf(cls, family), make_pd(cls, family)
    else:
        transformers = pytest.importorskip("transformers")
        if not hasattr(transformers, cls):
            pytest.skip(f"transformers has no {cls}")
        hf, pd = make_hf(cls, family), make_pd(cls, family)
    report = align.transfer(hf, pd)
    assert report.ok, str(report)
    inputs = dict(bert_inputs)
    if family == "roberta":
        inputs["input_ids"] = np.where(inputs["attention_mask"] == 1, inputs["input_ids"], 1)
    a = to_numpy(_hf_out(hf, inputs))
    b = to_numpy(_pd_out(pd, inputs))
    np.testing.assert_allclose(b, a, atol=ATOL, rtol=0)


def test_roberta_fixture_is_aligned(hf_roberta_pair) -> None:
    hf, pd = hf_roberta_pair
    inputs = {"input_ids": np.array([[0, 5, 6, 7, 2]], dtype="int64"), "attention_mask": np.ones((1, 5), dtype="int64")}
    np.testing.assert_allclose(to_numpy(_pd_out(pd, inputs)), to_numpy(_hf_out(hf, inputs)), atol=ATOL, rtol=0)


def test_user_mapping_reuses_the_bert_rules(tmp_path: pathlib.Path, bert_inputs) -> None:
    hf = make_hf("BertForQuestionAnswering", seed=31)
    sd = {("splinter." + k[len("bert."):] if k.startswith("bert.") else k): v for k, v in hf.state_dict().items()}
    path = tmp_path / "pytorch_model.bin"
    torch.save(sd, path)
    pd = make_pd("BertForQuestionAnswering", seed=32)
    with pytest.raises(TransferError, match="unused source entries: splinter"):
        align.transfer(str(path), pd)  # unmapped: lists the unused splinter.* entries
    report = align.transfer(str(path), pd, mapping={r"^splinter\.": "bert."}, strict=False)
    assert [m.name for m in report.missing] == ["bert.pooler.dense.weight", "bert.pooler.dense.bias"]
    assert not report.unused
    assert {p.how for p in report.pairing.pairs if p.paddle_path == "bert.embeddings.word_embeddings"} == {"mapping"}
    a = _hf_out(hf, bert_inputs)
    np.testing.assert_allclose(_pd_out(pd, bert_inputs)[0].numpy(), a.start_logits.numpy(), atol=ATOL, rtol=0)


def test_mapping_callable_drop_and_conflict(hf_bert_pair) -> None:
    hf, _ = hf_bert_pair
    pd = make_pd("BertModel", seed=41)
    report = align.transfer(
        hf, pd, mapping=lambda n: None if n.startswith("pooler.") else n, strict=False
    )
    assert report.dropped == ["pooler.dense.weight", "pooler.dense.bias"]
    assert [m.name for m in report.missing] == ["pooler.dense.weight", "pooler.dense.bias"]
    assert not report.ok
    report = align.transfer(hf, pd, mapping={r"^pooler\.": None}, strict=False)
    assert report.dropped == ["pooler.dense.weight", "pooler.dense.bias"]
    before = _state(pd)
    with pytest.raises(TransferError, match="both mapped to"):
        align.transfer(hf, pd, mapping={r"\.(weight|bias)$": ".x"})
    _assert_same_state(before, _state(pd))
    with pytest.raises(TransferError, match="mapping: expected"):
        align.transfer(hf, pd, mapping=42)  # type: ignore[arg-type]
    with pytest.raises(TransferError, match="not a valid regular expression"):
        align.transfer(hf, pd, mapping={"(": "x"})


# -- vision layers: Conv, ConvTranspose, BatchNorm, PReLU, GroupNorm, InstanceNorm, LayerNorm -----
def test_cnn_eval_and_train_mode_batchnorm(cnn_pair) -> None:
    t, p = cnn_pair
    x = np.random.default_rng(1).normal(size=(4, 3, 6, 6)).astype("float32")
    with torch.no_grad():
        a = t(torch.tensor(x)).numpy()
    b = p(paddle.to_tensor(x)).numpy()
    np.testing.assert_allclose(b, a, atol=ATOL, rtol=0)
    # train mode: BatchNorm normalises with the batch statistics on both sides
    t2, p2 = make_torch_cnn(seed=51), make_paddle_cnn(seed=52)
    report = align.transfer(t2, p2)
    assert {c.dst: c.how for c in report.copied}["bn._mean"] == "rename"
    assert "bn.num_batches_tracked" not in report.unused  # dropped by the batchnorm rule
    t2.train()
    p2.train()
    a = t2(torch.tensor(x)).detach().numpy()
    b = p2(paddle.to_tensor(x)).numpy()
    np.testing.assert_allclose(b, a, atol=ATOL, rtol=0)


def test_cnn_round_trip_bit_exact() -> None:
    t, p, back = make_torch_cnn(seed=61), make_paddle_cnn(seed=62), make_torch_cnn(seed=63)
    with torch.no_grad():
        back.bn.num_batches_tracked.fill_(5)
    align.transfer(t, p)
    report = align.transfer(p, back)
    assert report.ok, str(report)
    got, want = _state(back), _state(t)
    got.pop("bn.num_batches_tracked")  # no Paddle counterpart: left as it was
    want.pop("bn.num_batches_tracked")
    _assert_same_state(want, got)


def test_square_linear_layers_are_transposed_never_loaded_as_is() -> None:
    t, p = make_square_pair()
    x = np.random.default_rng(2).normal(size=(3, 8)).astype("float32")
    # the bug this prevents: loading torch's [out, in] matrices as they are passes every shape check
    naive = {k: v.detach().numpy() for k, v in t.state_dict().items()}
    p.set_state_dict(naive)
    wrong = p(paddle.to_tensor(x)).numpy()
    with torch.no_grad():
        want = t(torch.tensor(x)).numpy()
    assert np.abs(wrong - want).max() > 1e-2
    # a bare state dict of NumPy arrays does not say its layout: square weights fit both, refused
    with pytest.raises(TransferError, match="pass src_framework='torch' or src_framework='paddle'"):
        align.transfer(naive, p)
    # told the layout, the transform comes from the destination layer types
    report = align.transfer(naive, p, src_framework="torch")
    assert [c.how for c in report.copied if c.dst.endswith("weight")] == ["transpose"] * 3
    np.testing.assert_allclose(p(paddle.to_tensor(x)).numpy(), want, atol=ATOL, rtol=0)
    # and from the torch model itself
    t2, p2 = make_square_pair(seed=6)
    align.transfer(t2, p2)
    with torch.no_grad():
        want2 = t2(torch.tensor(x)).numpy()
    np.testing.assert_allclose(p2(paddle.to_tensor(x)).numpy(), want2, atol=ATOL, rtol=0)


def test_paddle_compat_linear_keeps_torch_layout() -> None:
    compat = getattr(getattr(paddle, "compat", None), "nn", None)
    if compat is None or not hasattr(compat, "Linear"):
        pytest.skip("this Paddle has no paddle.compat.nn.Linear")
    torch.manual_seed(0)
    t = torch.nn.Linear(4, 4)
    p = compat.Linear(4, 4)
    report = align.transfer(t, p)
    assert [c.how for c in report.copied] == ["copy", "copy"]
    assert report.pairing.pairs[0].rule == "linear-torch-layout"
    x = np.random.default_rng(3).normal(size=(2, 4)).astype("float32")
    np.testing.assert_allclose(p(paddle.to_tensor(x)).numpy(), t(torch.tensor(x)).detach().numpy(), atol=ATOL)


# -- structure fallback -------------------------------------------------------------------------
class _TorchNet(torch.nn.Module):
    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(4, widths[0])
        for i, w in enumerate(widths[1:]):
            setattr(self, f"hidden_{i}", torch.nn.Linear(widths[i], w))
        self.norm = torch.nn.LayerNorm(widths[-1])

    def forward(self, x):
        for m in self.children():
            x = m(x)
        return x


class _PaddleNet(paddle.nn.Layer):
    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.first = paddle.nn.Linear(4, widths[0])
        for i, w in enumerate(widths[1:]):
            setattr(self, f"block{i}", paddle.nn.Linear(widths[i], w))
        self.ln = paddle.nn.LayerNorm(widths[-1])

    def forward(self, x):
        for m in self.children():
            x = m(x)
        return x


def test_structure_fallback_when_unambiguous() -> None:
    torch.manual_seed(0)
    t, p = _TorchNet((6, 6, 6)), _PaddleNet((6, 6, 6))
    report = align.transfer(t, p)
    assert report.ok
    pairs = {x.paddle_path: (x.torch_path, x.how) for x in report.pairing.pairs}
    assert pairs["first"] == ("inp", "structure")
    assert pairs["block0"] == ("hidden_0", "structure") and pairs["block1"] == ("hidden_1", "structure")
    assert pairs["ln"] == ("norm", "structure")
    x = np.random.default_rng(4).normal(size=(2, 4)).astype("float32")
    np.testing.assert_allclose(p(paddle.to_tensor(x)).numpy(), t(torch.tensor(x)).detach().numpy(), atol=ATOL)


def test_structure_fallback_stops_when_ambiguous() -> None:
    t, p = _TorchNet((6, 6, 6, 6)), _PaddleNet((6, 6, 6))  # three 6x6 candidates for two layers
    before = _state(p)
    with pytest.raises(TransferError) as info:
        align.transfer(t, p)
    msg = str(info.value)
    assert "block0.weight" in msg and "hidden_0" in msg and "hidden_2" in msg and "candidates" in msg
    assert "nothing was changed" in msg
    _assert_same_state(before, _state(p))


# -- state dicts and checkpoint files -------------------------------------------------------------
def test_state_dicts_of_each_kind(bert_inputs) -> None:
    hf = make_hf("BertModel", seed=71)
    want = _hf_out(hf, bert_inputs).last_hidden_state.numpy()
    sds = {
        "torch": hf.state_dict(),
        "numpy": {k: v.numpy() for k, v in hf.state_dict().items()},
    }
    for kind, sd in sds.items():
        pd = make_pd("BertModel", seed=72)
        report = align.transfer(sd, pd)
        assert report.ok, (kind, str(report))
        np.testing.assert_allclose(_pd_out(pd, bert_inputs)[0].numpy(), want, atol=ATOL, rtol=0)
    # a Paddle state dict (Paddle tensors) into an HF model
    pd_sd = pd.state_dict()
    back = make_hf("BertModel", seed=73)
    assert align.transfer(pd_sd, back).ok
    _assert_same_state(_state(hf), _state(back))


def test_checkpoints_torch_save_safetensors_pdparams(tmp_path: pathlib.Path, bert_inputs) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    hf = make_hf("BertForMaskedLM", seed=81)
    want = _hf_out(hf, bert_inputs).logits.numpy()
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    torch.save({"state_dict": hf.state_dict()}, tmp_path / "model.pth")
    hf.save_pretrained(tmp_path / "st", safe_serialization=True)  # ties removed, as HF writes them
    for path in (tmp_path / "pytorch_model.bin", tmp_path / "model.pth", tmp_path / "st" / "model.safetensors"):
        pd = make_pd("BertForMaskedLM", seed=82)
        report = align.transfer(path, pd, strict=False)
        assert [m.name for m in report.missing] == ["bert.pooler.dense.weight", "bert.pooler.dense.bias"], path
        assert not report.unused, (path, report.unused)
        np.testing.assert_allclose(to_numpy(_pd_out(pd, bert_inputs)), want, atol=ATOL, rtol=0)
    del safetensors_torch
    # Paddle's own format into torch
    paddle.save(pd.state_dict(), str(tmp_path / "model_state.pdparams"))
    back = make_hf("BertForMaskedLM", seed=83)
    report = align.transfer(tmp_path / "model_state.pdparams", back)
    assert set(report.unused) == {"bert.pooler.dense.weight", "bert.pooler.dense.bias"}
    np.testing.assert_allclose(_hf_out(back, bert_inputs).logits.numpy(), want, atol=ATOL, rtol=0)


class _Payload:
    """Unpickling this touches a file: proof of execution when it happens."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pdparams"])
def test_malicious_pickle_is_refused_without_running(tmp_path: pathlib.Path, suffix: str) -> None:
    marker = tmp_path / "executed"
    payload = {"weight": _Payload(marker)}
    path = tmp_path / f"evil{suffix}"
    if suffix == ".pdparams":
        with open(path, "wb") as fh:
            pickle.dump(payload, fh, protocol=4)
    else:
        torch.save(payload, path)
    p = paddle.nn.Linear(2, 2)
    with pytest.raises(TransferError, match="refused without executing"):
        align.transfer(path, p)
    assert not marker.exists()
    pickle.loads(pickle.dumps(_Payload(marker)))  # the payload is real: plain unpickling runs it
    assert marker.exists()


def test_unreadable_truncated_and_odd_checkpoints(tmp_path: pathlib.Path) -> None:
    torch.manual_seed(0)
    t = torch.nn.Linear(3, 3)
    good = tmp_path / "good.bin"
    torch.save(t.state_dict(), good)
    data = good.read_bytes()
    for name, payload in (("cut.bin", data[: len(data) // 2]), ("noise.pt", b"\x00garbage" * 10)):
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(TransferError, match=f"{name}.*(unreadable or truncated|not a plain tensor)"):
            align.transfer(tmp_path / name, paddle.nn.Linear(3, 3))
    st = pytest.importorskip("safetensors.numpy")
    st.save_file({"weight": np.ones((3, 3), dtype="float32")}, str(tmp_path / "w.safetensors"))
    cut = (tmp_path / "w.safetensors").read_bytes()[:-7]
    (tmp_path / "cut.safetensors").write_bytes(cut)
    with pytest.raises(TransferError, match="cut.safetensors.*unreadable or truncated"):
        align.transfer(tmp_path / "cut.safetensors", paddle.nn.Linear(3, 3))
    torch.save({"weight": t.weight, "epoch": 3}, tmp_path / "mixed.bin")
    with pytest.raises(TransferError, match="'epoch' is a int, not a tensor"):
        align.transfer(tmp_path / "mixed.bin", paddle.nn.Linear(3, 3))
    with pytest.raises(TransferError, match="does not exist"):
        align.transfer(tmp_path / "absent.bin", paddle.nn.Linear(3, 3))
    with pytest.raises(TransferError, match="unknown checkpoint suffix '.ckpt'"):
        align.transfer(tmp_path / "x.ckpt", paddle.nn.Linear(3, 3))


# -- strictness, dtypes, bad arguments ------------------------------------------------------------
def test_strict_errors_name_each_entry_and_leave_dst_unchanged() -> None:
    hf = make_hf("BertModel", seed=91)
    pd = make_pd("BertModel", seed=92)
    before = _state(pd)
    sd = dict(hf.state_dict())
    sd.pop("encoder.layer.1.attention.self.key.weight")
    sd["encoder.layer.1.attention.self.kee.weight"] = hf.state_dict()["encoder.layer.1.attention.self.key.weight"]
    with pytest.raises(TransferError) as info:
        align.transfer(sd, pd)
    msg = str(info.value)
    assert "encoder.layers.1.self_attn.k_proj.weight" in msg
    assert "candidates: encoder.layer.1.attention.self.kee.weight" in msg
    assert "nothing was changed in dst" in msg
    _assert_same_state(before, _state(pd))
    # a shape that cannot be reconciled (other widths): named, dst unchanged
    other = make_hf("BertModel", seed=93, intermediate_size=24)
    with pytest.raises(TransferError, match=r"linear1.weight: shape \(16, 32\) but .*intermediate.dense.weight gives \(16, 24\)"):
        align.transfer(other, pd)
    _assert_same_state(before, _state(pd))
    # strict=False copies what pairs and reports the rest
    report = align.transfer(sd, pd, strict=False)
    assert [m.name for m in report.missing] == ["encoder.layers.1.self_attn.k_proj.weight"]
    assert report.unused == ["encoder.layer.1.attention.self.kee.weight"]
    assert "missing: encoder.layers.1.self_attn.k_proj.weight" in str(report)


def test_dtype_of_dst_is_kept_and_the_change_reported() -> None:
    torch.manual_seed(0)
    t = torch.nn.Linear(3, 2).double()
    p = paddle.nn.Linear(3, 2)
    report = align.transfer(t, p)
    assert [c.dtype for c in report.copied] == ["float64 -> float32"] * 2
    assert len(report.dtype_changes) == 2 and "float64 -> float32" in str(report)
    assert p.weight.dtype == paddle.float32
    np.testing.assert_array_equal(p.weight.numpy(), t.weight.detach().numpy().T.astype("float32"))


def test_bad_arguments_are_named() -> None:
    p = paddle.nn.Linear(2, 2)
    with pytest.raises(TransferError, match="dst: expected a torch.nn.Module or a paddle.nn.Layer"):
        align.transfer(p, {"weight": np.zeros((2, 2))})
    with pytest.raises(TransferError, match="src: expected a torch.nn.Module, a paddle.nn.Layer or a state dict"):
        align.transfer(3.5, p)
    with pytest.raises(TransferError, match="'weight' is a str, not a tensor"):
        align.transfer({"weight": "x"}, p)
    with pytest.raises(TransferError, match="strict: expected True or False"):
        align.transfer(torch.nn.Linear(2, 2), p, strict="yes")  # type: ignore[arg-type]
    assert issubclass(TransferError, ValueError)


def test_same_framework_copies_by_name() -> None:
    a, b = paddle.nn.Linear(3, 4), paddle.nn.Linear(3, 4)
    report = align.transfer(a, b)
    assert [c.how for c in report.copied] == ["copy", "copy"]
    np.testing.assert_array_equal(a.weight.numpy(), b.weight.numpy())


def test_readme_example_runs(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worked example of README "Aligning a port", as written there."""
    monkeypatch.chdir(tmp_path)
    readme = pathlib.Path(__file__).resolve().parents[2] / "README.md"
    text = readme.read_text(encoding="utf-8")
    start = text.index("<!-- align-transfer-example -->")
    block = text[start:].split("```python\n", 1)[1].split("```", 1)[0]
    env: dict[str, object] = {}
    exec(compile(block, "README.md (Aligning a port)", "exec"), env)  # noqa: S102  (our own README)
    assert env["report"].ok  # type: ignore[attr-defined]


def test_env_does_not_leak_threads_or_files(tmp_path: pathlib.Path) -> None:
    """transfer leaves no temporary files next to the checkpoint it read."""
    torch.manual_seed(0)
    t = torch.nn.Linear(3, 3)
    torch.save(t.state_dict(), tmp_path / "w.bin")
    align.transfer(tmp_path / "w.bin", paddle.nn.Linear(3, 3))
    assert sorted(os.listdir(tmp_path)) == ["w.bin"]


# -- layer-level converters (the mechanism the recurrent / attention rules use) --------------------
class PackedQKV(torch.nn.Module):
    def __init__(self, h: int) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(h, 3 * h)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return q * k + v


class SplitQKV(paddle.nn.Layer):
    def __init__(self, h: int) -> None:
        super().__init__()
        self.q, self.k, self.v = paddle.nn.Linear(h, h), paddle.nn.Linear(h, h), paddle.nn.Linear(h, h)

    def forward(self, x):
        return self.q(x) * self.k(x) + self.v(x)


def _qkv_to_paddle(arrays, torch_layer, paddle_layer):
    w, b = arrays["qkv.weight"], arrays["qkv.bias"]
    out = {}
    for part, wi, bi in zip("qkv", np.split(w, 3, axis=0), np.split(b, 3)):
        out[f"{part}.weight"], out[f"{part}.bias"] = wi.T, bi
    return out


def _qkv_to_torch(arrays, torch_layer, paddle_layer):
    return {
        "qkv.weight": np.concatenate([arrays[f"{p}.weight"].T for p in "qkv"], axis=0),
        "qkv.bias": np.concatenate([arrays[f"{p}.bias"] for p in "qkv"]),
    }


def _qkv_names(torch_layer, paddle_layer):
    return [(f"{p}.{n}", f"qkv.{n}", "split") for p in "qkv" for n in ("weight", "bias")]


def test_layer_level_converter_rule(monkeypatch) -> None:
    from paddlefix.align import rules

    rule = rules.LayerRule(
        "packed-qkv", ("PackedQKV",), ("SplitQKV",),
        to_paddle=_qkv_to_paddle, to_torch=_qkv_to_torch, name_pairs=_qkv_names,
    )
    monkeypatch.setattr(rules, "RULES", (rule,) + rules.RULES)
    torch.manual_seed(0)
    t = torch.nn.Sequential(PackedQKV(4), torch.nn.Linear(4, 2))
    p = paddle.nn.Sequential(SplitQKV(4), paddle.nn.Linear(4, 2))
    report = align.transfer(t, p)
    assert report.ok, str(report)
    assert {c.dst: c.how for c in report.copied}["0.q.weight"] == "split"
    pairing = report.pairing
    assert pairing.for_paddle("0") is not None and pairing.for_paddle("0").rule == "packed-qkv"
    assert ("0.k.bias", "0.qkv.bias", "split") in [(x.paddle_name, x.torch_name, x.how) for x in pairing.params]
    assert not pairing.unpaired_paddle and not pairing.unpaired_torch
    x = np.random.default_rng(5).normal(size=(3, 4)).astype("float32")
    np.testing.assert_allclose(p(paddle.to_tensor(x)).numpy(), t(torch.tensor(x)).detach().numpy(), atol=ATOL)
    back = torch.nn.Sequential(PackedQKV(4), torch.nn.Linear(4, 2))
    assert align.transfer(p, back).ok
    _assert_same_state(_state(t), _state(back))
    # from a bare state dict the destination's layer type picks the converter
    p2 = paddle.nn.Sequential(SplitQKV(4), paddle.nn.Linear(4, 2))
    assert align.transfer(t.state_dict(), p2).ok
    np.testing.assert_array_equal(p2[0].v.weight.numpy(), p[0].v.weight.numpy())
    # a converter producing the wrong shape is caught before anything changes
    bad = rule._replace(to_paddle=lambda a, tl, pl: {k: v[:1] for k, v in _qkv_to_paddle(a, tl, pl).items()})
    monkeypatch.setattr(rules, "RULES", (bad,) + rules.RULES[1:])
    p3 = paddle.nn.Sequential(SplitQKV(4), paddle.nn.Linear(4, 2))
    before = _state(p3)
    with pytest.raises(TransferError, match="cannot be reconciled"):
        align.transfer(t, p3)
    _assert_same_state(before, _state(p3))


def test_readme_rules_table_lists_every_rule() -> None:
    from paddlefix.align import rules

    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Aligning a port"):]
    for rule in rules._BASE_RULES:
        assert f"`{rule.name}`" in section, rule.name


def test_name_rules_come_from_paddlenlp_where_it_ships_them(hf_bert_pair) -> None:
    from paddlefix.align._names import BUILTIN_RULES, hf_to_paddle_paths, name_rules

    _, pd = hf_bert_pair
    rules = name_rules(pd)
    from_paddlenlp = [r for r in rules if r.family == "paddlenlp:BertModel"]
    assert ("encoder.layer.N.attention.self.query", "encoder.layers.N.self_attn.q_proj") in [
        (r.hf, r.paddle) for r in from_paddlenlp
    ]
    # the built-in table only adds what paddlenlp's table lacks (heads), never a duplicate
    assert len({(r.hf, r.paddle) for r in rules}) == len(rules)
    assert any(r.hf == "qa_outputs" for r in BUILTIN_RULES)
    # rules match anywhere after a dot, keeping any prefix, and whole index components only
    got = hf_to_paddle_paths("splinter.encoder.layer.11.output.LayerNorm", rules)
    assert got[0][0] == "splinter.encoder.layers.11.norm2"
    assert hf_to_paddle_paths("encoder.layerX.1.output.LayerNorm", rules) == []


def test_pairing_from_a_state_dict_uses_the_destination_types() -> None:
    t, p = make_square_pair(width=4, depth=2)
    pairing = align.pair({k: v.detach().numpy() for k, v in t.state_dict().items()}, p, src_framework="torch")
    assert [(x.paddle_path, x.torch_path, x.rule, x.torch_type) for x in pairing.pairs] == [
        ("0", "0", "linear", ""), ("2", "2", "linear", "")
    ]
    assert [x.how for x in pairing.params] == ["transpose", "copy", "transpose", "copy"]


def test_matrices_of_layers_without_a_rule_are_copied_with_a_warning() -> None:
    from paddlefix import PaddlefixWarning

    class TorchScale(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(3, 3))
            self.b = torch.nn.Parameter(torch.randn(3))

    class PaddleScale(paddle.nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.w = self.create_parameter([3, 3])
            self.b = self.create_parameter([3], is_bias=True)

    t, p = TorchScale(), PaddleScale()
    with pytest.warns(PaddlefixWarning, match="no layer rule for <root>"):
        report = align.transfer(t, p)
    assert report.pairing.pairs[0].rule == "same-names"
    np.testing.assert_array_equal(p.w.numpy(), t.w.detach().numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        align.transfer(make_square_pair()[0], make_square_pair()[1])  # known layers: no warning


@pytest.mark.parametrize("fused", [True, False], ids=["views", "copies"])
def test_round_trip_bit_exact_through_views_and_through_copies(fused: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from paddlefix.align._transfer import _as_numpy
    from paddlefix.align.adapters._paddle import PaddleAdapter

    monkeypatch.setattr(PaddleAdapter, "fused_copy", fused)
    hf, pd, back = make_hf("BertModel", seed=21), make_pd("BertModel", seed=22), make_hf("BertModel", seed=23)
    assert align.transfer(hf, pd).ok
    report = align.transfer(pd, back)
    assert report.ok, str(report)
    _assert_same_state(_state(hf), _state(back))
    w = pd.state_dict()[report.copied[-1].src]
    arr = _as_numpy(w, share=True)[0]  # a Paddle source read in place only on the view path
    assert np.array_equal(arr, w.numpy())
    assert np.shares_memory(arr, _as_numpy(w, share=True)[0]) == fused
