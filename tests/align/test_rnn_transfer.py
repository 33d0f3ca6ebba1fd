"""align.transfer on models with recurrent layers and multi-head attention, both directions.

Real torch models and their Paddle ports written here: a bidirectional 2-layer LSTM classifier,
a GRU classifier (Embedding + RNN + Linear each) and a small self-attention model. After
``transfer`` the two models' outputs agree within 1e-5; torch -> Paddle -> torch is bit-exact.
"""

from __future__ import annotations

import numpy as np
import pytest

from paddlefix import align

paddle = pytest.importorskip("paddle")
torch = pytest.importorskip("torch")

TOL = 1e-5
VOCAB, EMB, HID, CLASSES, B, T = 20, 8, 16, 3, 4, 7


class TorchLSTMClassifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, EMB)
        self.rnn = torch.nn.LSTM(EMB, HID, num_layers=2, bidirectional=True, batch_first=True)
        self.head = torch.nn.Linear(2 * HID, CLASSES)

    def forward(self, ids):
        out, (h, _) = self.rnn(self.embed(ids))
        return self.head(out.mean(1)) + self.head(torch.cat([h[-2], h[-1]], -1))


class PaddleLSTMClassifier(paddle.nn.Layer):
    def __init__(self) -> None:
        super().__init__()
        self.embed = paddle.nn.Embedding(VOCAB, EMB)
        self.rnn = paddle.nn.LSTM(EMB, HID, num_layers=2, direction="bidirect")
        self.head = paddle.nn.Linear(2 * HID, CLASSES)

    def forward(self, ids):
        out, (h, _) = self.rnn(self.embed(ids))
        return self.head(out.mean(1)) + self.head(paddle.concat([h[-2], h[-1]], -1))


class TorchGRUClassifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, EMB)
        self.rnn = torch.nn.GRU(EMB, HID, batch_first=True)
        self.head = torch.nn.Linear(HID, CLASSES)

    def forward(self, ids):
        _, h = self.rnn(self.embed(ids))
        return self.head(h[-1])


class PaddleGRUClassifier(paddle.nn.Layer):
    def __init__(self) -> None:
        super().__init__()
        self.embed = paddle.nn.Embedding(VOCAB, EMB)
        self.rnn = paddle.nn.GRU(EMB, HID)
        self.head = paddle.nn.Linear(HID, CLASSES)

    def forward(self, ids):
        _, h = self.rnn(self.embed(ids))
        return self.head(h[-1])


class TorchAttention(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, HID)
        self.attn = torch.nn.MultiheadAttention(HID, 2, batch_first=True)
        self.head = torch.nn.Linear(HID, CLASSES)

    def forward(self, ids):
        x = self.embed(ids)
        out, _ = self.attn(x, x, x, need_weights=False)
        return self.head(out)


class PaddleAttention(paddle.nn.Layer):
    def __init__(self) -> None:
        super().__init__()
        self.embed = paddle.nn.Embedding(VOCAB, HID)
        self.attn = paddle.nn.MultiHeadAttention(HID, 2)
        self.head = paddle.nn.Linear(HID, CLASSES)

    def forward(self, ids):
        x = self.embed(ids)
        return self.head(self.attn(x, x, x))


MODELS = {
    "lstm-bi-2": (TorchLSTMClassifier, PaddleLSTMClassifier),
    "gru": (TorchGRUClassifier, PaddleGRUClassifier),
    "attention": (TorchAttention, PaddleAttention),
}


def _torch_model(cls, seed: int):
    torch.manual_seed(seed)
    model = cls().eval()
    with torch.no_grad():  # no parameter left at a constant (MHA biases start at zero)
        for p in model.parameters():
            p.add_(torch.empty_like(p).uniform_(-0.1, 0.1))
    return model


def _paddle_model(cls, seed: int):
    paddle.seed(seed)
    model = cls()
    model.eval()
    return model


def _outputs(t_model, p_model) -> float:
    ids = np.random.default_rng(0).integers(0, VOCAB, (B, T))
    with torch.no_grad():
        t_out = t_model(torch.from_numpy(ids)).numpy()
    p_out = p_model(paddle.to_tensor(ids)).numpy()
    assert t_out.shape == p_out.shape
    return float(np.abs(t_out - p_out).max())


def _torch_state(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", list(MODELS))
def test_torch_to_paddle_and_back(name: str) -> None:
    t_cls, p_cls = MODELS[name]
    t_model, p_model = _torch_model(t_cls, 0), _paddle_model(p_cls, 0)
    assert _outputs(t_model, p_model) > 1e-3  # different weights to begin with

    report = align.transfer(t_model, p_model)
    assert report.ok and not report.unused and not report.missing, str(report)
    diff = _outputs(t_model, p_model)
    assert diff <= TOL, diff

    t_back = _torch_model(t_cls, 1)
    report = align.transfer(p_model, t_back)
    assert report.ok and not report.missing, str(report)
    original, back = _torch_state(t_model), _torch_state(t_back)
    assert set(original) == set(back)
    for key in original:
        assert np.array_equal(original[key], back[key]), key


@pytest.mark.parametrize("name", list(MODELS))
def test_paddle_to_torch(name: str) -> None:
    t_cls, p_cls = MODELS[name]
    p_model, t_model = _paddle_model(p_cls, 2), _torch_model(t_cls, 2)
    report = align.transfer(p_model, t_model)
    assert report.ok and not report.missing, str(report)
    diff = _outputs(t_model, p_model)
    assert diff <= TOL, diff


@pytest.mark.parametrize("name", list(MODELS))
def test_from_torch_state_dict(name: str) -> None:
    t_cls, p_cls = MODELS[name]
    t_model, p_model = _torch_model(t_cls, 3), _paddle_model(p_cls, 3)
    report = align.transfer(t_model.state_dict(), p_model)
    assert report.ok and not report.unused and not report.missing, str(report)
    assert _outputs(t_model, p_model) <= TOL


def test_report_says_how() -> None:
    """Every Paddle projection is set from torch's packed in_proj, split and transposed; the
    pairing (what compare uses) says which torch entry feeds which Paddle entry, both ways."""
    t_model, p_model = _torch_model(TorchAttention, 4), _paddle_model(PaddleAttention, 4)
    report = align.transfer(t_model, p_model)
    assert {c[1] for c in report.copied} >= {f"attn.{p}_proj.{w}" for p in ("q", "k", "v", "out") for w in ("weight", "bias")}
    expected = {
        ("attn.q_proj.weight", "attn.in_proj_weight", "split+transpose"),
        ("attn.k_proj.bias", "attn.in_proj_bias", "split"),
        ("attn.v_proj.weight", "attn.in_proj_weight", "split+transpose"),
        ("attn.out_proj.weight", "attn.out_proj.weight", "transpose"),
    }
    for pairing in (report.pairing, align.pair(p_model, t_model)):
        assert expected <= {(x.paddle_name, x.torch_name, x.how) for x in pairing.params}


def test_from_paddle_state_dict_and_torch_checkpoint(tmp_path) -> None:
    """Bare Paddle state dicts hold both the cell names and the flat aliases: both are used."""
    paddle.seed(5)
    p_rnn = paddle.nn.GRU(EMB, HID, num_layers=2, direction="bidirect")
    torch.manual_seed(5)
    t_rnn = torch.nn.GRU(EMB, HID, num_layers=2, bidirectional=True, batch_first=True)
    state = p_rnn.state_dict()
    assert "weight_ih_l0" in state and "0.cell_fw.weight_ih" in state
    report = align.transfer(state, t_rnn)
    assert report.ok and not report.unused and not report.missing, str(report)
    x = np.random.default_rng(5).standard_normal((B, T, EMB)).astype("float32")
    t_out, t_h = t_rnn(torch.from_numpy(x))
    p_out, p_h = p_rnn(paddle.to_tensor(x))
    assert np.abs(t_out.detach().numpy() - p_out.numpy()).max() <= TOL
    assert np.abs(t_h.detach().numpy() - p_h.numpy()).max() <= TOL

    p_model = _paddle_model(PaddleLSTMClassifier, 5)

    pdparams = tmp_path / "gru.pdparams"
    paddle.save(p_rnn.state_dict(), str(pdparams))
    t_rnn2 = torch.nn.GRU(EMB, HID, num_layers=2, bidirectional=True, batch_first=True)
    report = align.transfer(str(pdparams), t_rnn2)
    assert report.ok and not report.unused and not report.missing, str(report)
    assert all(np.array_equal(a, b) for a, b in zip(_torch_state(t_rnn).values(), _torch_state(t_rnn2).values()))

    path = tmp_path / "lstm.pt"
    torch.save(_torch_model(TorchLSTMClassifier, 6).state_dict(), path)
    report = align.transfer(str(path), p_model)
    assert report.ok and not report.unused, str(report)
    assert _outputs(_torch_model(TorchLSTMClassifier, 6), p_model) <= TOL


def test_refusal_leaves_destination_unchanged() -> None:
    class TorchKV(TorchAttention):
        def __init__(self) -> None:
            super().__init__()
            self.attn = torch.nn.MultiheadAttention(HID, 2, batch_first=True, add_bias_kv=True)

    p_model = _paddle_model(PaddleAttention, 7)
    before = {k: v.numpy().copy() for k, v in p_model.state_dict().items()}
    with pytest.raises(align.TransferError, match="add_bias_kv=True has no equivalent in paddle.nn.MultiHeadAttention"):
        align.transfer(_torch_model(TorchKV, 7), p_model)
    after = p_model.state_dict()
    assert all(np.array_equal(before[k], after[k].numpy()) for k in before)


class TorchProjLSTM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, EMB)
        self.rnn = torch.nn.LSTM(EMB, HID, num_layers=2, bidirectional=True, batch_first=True, proj_size=4)
        self.head = torch.nn.Linear(8, CLASSES)

    def forward(self, ids):
        out, _ = self.rnn(self.embed(ids))
        return self.head(out[:, -1])


def _paddle_proj_lstm():
    class PaddleProjLSTM(paddle.nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.embed = paddle.nn.Embedding(VOCAB, EMB)
            self.rnn = paddle.nn.LSTM(EMB, HID, num_layers=2, direction="bidirect", proj_size=4)
            self.head = paddle.nn.Linear(8, CLASSES)

        def forward(self, ids):
            out, _ = self.rnn(self.embed(ids))
            return self.head(out[:, -1])

    return PaddleProjLSTM


@pytest.mark.skipif(
    "proj_size" not in __import__("inspect").signature(paddle.nn.LSTM.__init__).parameters,
    reason="this Paddle's LSTM has no proj_size",
)
def test_lstm_projection_both_directions() -> None:
    """Paddle's flat names are wrong here (weight_ih_l0_reverse is 0.cell_fw.weight_ho): by identity."""
    p_cls = _paddle_proj_lstm()
    t_model, p_model = _torch_model(TorchProjLSTM, 8), _paddle_model(p_cls, 8)
    report = align.transfer(t_model, p_model)
    assert report.ok and not report.unused and not report.missing, str(report)
    assert _outputs(t_model, p_model) <= TOL
    t_back = _torch_model(TorchProjLSTM, 9)
    align.transfer(p_model, t_back)
    assert all(np.array_equal(a, b) for a, b in zip(_torch_state(t_model).values(), _torch_state(t_back).values()))


COMPAT_MHA = getattr(getattr(getattr(paddle, "compat", None), "nn", None), "MultiheadAttention", None)


@pytest.mark.skipif(COMPAT_MHA is None, reason="this Paddle has no paddle.compat.nn.MultiheadAttention")
def test_compat_attention_with_bias_kv() -> None:
    class TorchKV(TorchAttention):
        def __init__(self) -> None:
            super().__init__()
            self.attn = torch.nn.MultiheadAttention(HID, 2, batch_first=True, add_bias_kv=True)

    class PaddleKV(PaddleAttention):
        def __init__(self) -> None:
            super().__init__()
            self.attn = COMPAT_MHA(HID, 2, batch_first=True, add_bias_kv=True)

        def forward(self, ids):
            x = self.embed(ids)
            return self.head(self.attn(x, x, x)[0])

    t_model, p_model = _torch_model(TorchKV, 10), _paddle_model(PaddleKV, 10)
    report = align.transfer(t_model, p_model)
    assert report.ok and not report.unused and not report.missing, str(report)
    assert _outputs(t_model, p_model) <= TOL
    t_back = _torch_model(TorchKV, 11)
    align.transfer(p_model, t_back)
    original, back = _torch_state(t_model), _torch_state(t_back)
    assert all(np.array_equal(original[k], back[k]) for k in original)


def test_user_models_named_like_framework_layers() -> None:
    """A model class called ``RNN`` / ``LSTM`` is a container, not torch.nn.RNN / paddle.nn.LSTM."""

    class RNN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.GRU(EMB, HID, batch_first=True)
            self.head = torch.nn.Linear(HID, HID)  # square: a missed transpose shows only in outputs

        def forward(self, x):
            return self.head(self.rnn(x)[0])

    class LSTM(paddle.nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = paddle.nn.GRU(EMB, HID)
            self.head = paddle.nn.Linear(HID, HID)

        def forward(self, x):
            return self.head(self.rnn(x)[0])

    t_model, p_model = _torch_model(RNN, 12), _paddle_model(LSTM, 12)
    for src, dst in ((t_model, p_model), (p_model, _torch_model(RNN, 13))):
        report = align.transfer(src, dst)
        assert report.ok and not report.unused, str(report)
        t_dst = dst if isinstance(dst, torch.nn.Module) else t_model
        x = np.random.default_rng(1).standard_normal((B, T, EMB)).astype("float32")
        with torch.no_grad():
            t_out = t_dst(torch.from_numpy(x)).numpy()
        assert np.abs(t_out - p_model(paddle.to_tensor(x)).numpy()).max() <= TOL


def test_attention_built_from_linears_pairs_layer_by_layer() -> None:
    """paddle.nn.MultiHeadAttention against a torch attention made of four Linear layers (as
    paddlenlp's BERT against Hugging Face's): no attention rule, its projections pair one by one."""

    class TorchLinears(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q_proj, self.k_proj, self.v_proj, self.out_proj = (torch.nn.Linear(HID, HID) for _ in range(4))

    class TorchModel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = TorchLinears()

    class PaddleModel(paddle.nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.attn = paddle.nn.MultiHeadAttention(HID, 2)

    t_model, p_model = _torch_model(TorchModel, 14), _paddle_model(PaddleModel, 14)
    report = align.transfer(t_model, p_model)
    assert report.ok and not report.unused, str(report)
    assert {c[2] for c in report.copied} == {"transpose", "copy"}
    assert np.array_equal(p_model.attn.k_proj.weight.numpy(), t_model.attn.k_proj.weight.detach().numpy().T)
    assert not align.pair(p_model, t_model).unpaired_paddle
    # the same from a bare state dict (no torch layer types to go by: the entry names decide)
    p_fresh = _paddle_model(PaddleModel, 15)
    report = align.transfer(t_model.state_dict(), p_fresh)
    assert report.ok and not report.unused, str(report)
    assert np.array_equal(p_fresh.attn.k_proj.weight.numpy(), t_model.attn.k_proj.weight.detach().numpy().T)


def test_bias_free_torch_rnn() -> None:
    """torch bias=False: the Paddle biases become zeros (same outputs); back, zeros are required."""

    class TorchNoBias(TorchGRUClassifier):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.GRU(EMB, HID, batch_first=True, bias=False)

    t_model, p_model = _torch_model(TorchNoBias, 16), _paddle_model(PaddleGRUClassifier, 16)
    report = align.transfer(t_model, p_model)
    assert report.ok and not report.unused and not report.missing, str(report)
    assert not p_model.rnn.bias_ih_l0.numpy().any() and not p_model.rnn.bias_hh_l0.numpy().any()
    assert _outputs(t_model, p_model) <= TOL
    assert all("None" not in x.torch_name for x in report.pairing.params)
    t_back = _torch_model(TorchNoBias, 17)
    align.transfer(p_model, t_back)
    assert all(np.array_equal(a, b) for a, b in zip(_torch_state(t_model).values(), _torch_state(t_back).values()))
    with pytest.raises(align.TransferError, match="bias=False but the Paddle biases"):
        align.transfer(_paddle_model(PaddleGRUClassifier, 18), t_back)
    assert all(np.array_equal(a, b) for a, b in zip(_torch_state(t_model).values(), _torch_state(t_back).values()))


def test_transformer_encoder_both_directions() -> None:
    """torch nn.TransformerEncoder <-> paddle.nn.TransformerEncoder: self_attn by the attention
    rule, the feed-forward Linear and LayerNorm layers by theirs."""
    torch.manual_seed(19)
    layer = torch.nn.TransformerEncoderLayer(HID, 2, 32, dropout=0.0, batch_first=True)
    t_model = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    paddle.seed(19)
    p_model = paddle.nn.TransformerEncoder(paddle.nn.TransformerEncoderLayer(HID, 2, 32, dropout=0.0), 2)
    p_model.eval()
    x = np.random.default_rng(2).standard_normal((B, T, HID)).astype("float32")

    def diff() -> float:
        with torch.no_grad():
            t_out = t_model(torch.from_numpy(x)).numpy()
        return float(np.abs(t_out - p_model(paddle.to_tensor(x)).numpy()).max())

    assert diff() > 1e-3
    report = align.transfer(t_model, p_model)
    assert report.ok and not report.unused and not report.missing, str(report)
    assert diff() <= TOL
    original = _torch_state(t_model)
    with torch.no_grad():
        for p in t_model.parameters():
            p.add_(1.0)
    align.transfer(p_model, t_model)
    assert all(np.array_equal(original[k], v) for k, v in _torch_state(t_model).items())
