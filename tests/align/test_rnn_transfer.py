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
    """Every Paddle projection is set, from torch's packed in_proj, split and transposed."""
    t_model, p_model = _torch_model(TorchAttention, 4), _paddle_model(PaddleAttention, 4)
    report = align.transfer(t_model, p_model)
    by_dst = {c[1]: c for c in report.copied}
    for name in ("q_proj.weight", "k_proj.bias", "v_proj.weight", "out_proj.weight"):
        src, _, how = by_dst[f"attn.{name}"][:3]
        assert "attn.in_proj_weight" in src and "split" in how and "transpose" in how, (name, src, how)
