"""align.compare on planted bugs: the exact module (both sides), phase and step, with the right hint.

Real models only: a tiny Hugging Face ``BertModel`` (eager attention, no dropout) against the
paddlenlp ``BertModel`` after ``align.transfer``; a torch CNN with BatchNorm against its Paddle
port. The correct port passes forward, backward and three AdamW steps; each bug is planted in a
different layer of the same models and removed again after its test.
"""

from __future__ import annotations

import functools
import types
from typing import Any

import numpy as np
import pytest

from paddlefix import align
from paddlefix.align import AlignError

from .conftest import make_hf, make_pd

paddle = pytest.importorskip("paddle")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("paddlenlp")
F = paddle.nn.functional

KW = dict(num_hidden_layers=4, hidden_size=32, intermediate_size=64)
B, S, H = 2, 8, 32
NO_DECAY = ("bias", "LayerNorm.weight")  # the usual Hugging Face filter


def _batches(n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    out = []
    for _ in range(n):
        ids = rng.integers(2, 40, (B, S))
        mask = np.ones((B, S), np.int64)
        ids[1, 6:], mask[1, 6:] = 0, 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


TARGET = np.random.default_rng(8).standard_normal((B, S, H)).astype(np.float32)


def pt_loss(out: Any, batch: Any) -> Any:
    return ((out.last_hidden_state - torch.from_numpy(TARGET)) ** 2).mean() + out.pooler_output.sum()


def pd_loss(out: Any, batch: Any) -> Any:
    return ((out[0] - paddle.to_tensor(TARGET)) ** 2).mean() + out[1].sum()


@pytest.fixture(scope="module")
def bert() -> tuple[Any, Any, dict]:
    # pad_token_id=None: no padding_idx on the Hugging Face embeddings, as in paddlenlp's (the
    # difference itself is test_padding_idx_difference_found_in_the_embedding_gradient)
    hf, pd = make_hf("BertModel", pad_token_id=None, **KW), make_pd("BertModel", **KW)
    return pd, hf, {k: v.clone() for k, v in hf.state_dict().items()}


@pytest.fixture
def models(bert: tuple[Any, Any, dict]) -> Any:
    """The BERT pair with equal weights (restored after each test that steps or plants a bug)."""
    pd, hf, state = bert
    hf.load_state_dict(state)
    align.transfer(hf, pd)
    yield pd, hf
    hf.load_state_dict(state)
    align.transfer(hf, pd)


def _optimizers(pd: Any, hf: Any, *, pd_eps: float = 1e-8, pd_filter: Any = "structured") -> tuple[Any, Any]:
    groups = [
        {"params": [p for n, p in hf.named_parameters() if not any(k in n for k in NO_DECAY)], "weight_decay": 0.01},
        {"params": [p for n, p in hf.named_parameters() if any(k in n for k in NO_DECAY)], "weight_decay": 0.0},
    ]
    pt_opt = torch.optim.AdamW(groups, lr=1e-3, eps=1e-8)
    if pd_filter == "structured":  # the right way: decide on the structured name, look up by param.name
        decay = {p.name for n, p in pd.named_parameters() if not any(k in n for k in ("bias", "norm"))}
        pd_filter = decay.__contains__
    pd_opt = paddle.optimizer.AdamW(learning_rate=1e-3, parameters=pd.parameters(), epsilon=pd_eps,
                                    weight_decay=0.01, apply_decay_param_fun=pd_filter)
    return pd_opt, pt_opt


def _where(result: Any) -> tuple:
    d = result.first_divergence
    assert d is not None, str(result)
    return d.phase, d.step, d.paddle_module, d.torch_module, d.kind


# --------------------------------------------------------------------------- the correct port


def test_correct_port_passes_forward_backward_and_three_adamw_steps(models):
    pd, hf = models
    assert align.compare(pd, hf, _batches(1)[0]).ok
    pd_opt, pt_opt = _optimizers(pd, hf)
    result = align.compare(pd, hf, _batches(3), loss=(pd_loss, pt_loss), optimizers=(pd_opt, pt_opt), steps=3)
    assert result.ok, str(result)
    assert result.first_divergence is None and not result.findings
    phases = {(r.phase, r.step) for r in result.rows}
    for s in range(3):
        assert {("forward", s), ("loss", s), ("backward", s), ("param_grad", s), ("step", s)} <= phases
    stepped = [r for r in result.rows if r.phase == "step"]
    assert len(stepped) == 3 * 71 and all(r.status in ("ok", "noise") for r in stepped)
    # AdamW magnifies rounding-level gradient differences (the key bias's gradient is ~0 in exact
    # arithmetic): out of tolerance, explained, and said so
    if any(r.status == "noise" for r in stepped):
        assert any("explained" in n for n in result.notes)
    # the model really trained
    assert result.losses["paddle"][0] != result.losses["paddle"][2]


def test_padding_idx_difference_found_in_the_embedding_gradient():
    # Hugging Face's BertEmbeddings has padding_idx=pad_token_id (the padding row gets no gradient);
    # paddlenlp's has none: equal forward, different word-embedding gradient in the padding row.
    hf, pd = make_hf("BertModel"), make_pd("BertModel")
    align.transfer(hf, pd)
    batch = {"input_ids": np.array([[5, 6, 7, 0, 0]]), "attention_mask": np.array([[1, 1, 1, 0, 0]])}
    w = np.random.default_rng(11).standard_normal((1, 5, 16)).astype(np.float32)
    loss = (lambda o, b: (o[0] * paddle.to_tensor(w)).sum(), lambda o, b: (o.last_hidden_state * torch.from_numpy(w)).sum())
    result = align.compare(pd, hf, batch, loss=loss)
    assert [(f.paddle, f.label, f.paddle_value, f.torch_value) for f in result.findings] == \
        [("embeddings.word_embeddings", "padding_idx", None, 0)]
    assert _where(result) == ("param_grad", 0, "embeddings.word_embeddings.weight",
                              "embeddings.word_embeddings.weight", "param")
    assert result.first_divergence.metrics.worst_index[0] == 0  # the padding row
    assert "padding_idx differs" in result.first_divergence.hint


# --------------------------------------------------------------------------- forward bugs


def test_square_linear_loaded_untransposed_layer0(models):
    pd, hf = models
    w = hf.encoder.layer[0].attention.self.query.weight.detach().numpy()
    pd.encoder.layers[0].self_attn.q_proj.weight.set_value(w)  # [out, in] into [in, out]: shapes fit
    result = align.compare(pd, hf, _batches(1)[0])
    assert _where(result) == ("forward", 0, "encoder.layers.0.self_attn.q_proj",
                              "encoder.layer.0.attention.self.query", "module")
    assert "untransposed" in result.first_divergence.hint


def test_gelu_with_tanh_approximation_layer1(models):
    pd, hf = models
    layer = pd.encoder.layers[1]
    layer.activation = functools.partial(F.gelu, approximate=True)  # a functional activation: no Layer to hook
    try:
        result = align.compare(pd, hf, _batches(1)[0])
    finally:
        layer.activation = F.gelu
    d = result.first_divergence
    # located between two paired modules, inside their container
    assert _where(result) == ("forward", 0, "encoder.layers.1.linear2", "encoder.layer.1.output.dense", "between")
    assert d.candidates == [["encoder.layers.1.linear1", "encoder.layer.1.intermediate.dense"]]
    assert "inside encoder.layers.1" in d.detail
    assert "Paddle applies gelu (tanh approximation) and torch gelu (exact, erf)" in d.hint
    assert "approximate=True" in d.hint
    assert "encoder.layer.1.intermediate.intermediate_act_fn (GELUActivation)" in d.hint
    text = str(result)
    assert "encoder.layers.1.linear2" in text and max(len(line) for line in text.splitlines()) <= 100


def test_layernorm_epsilon_mismatch_embeddings(models):
    pd, hf = models
    ln = pd.embeddings.layer_norm
    ln._epsilon = 1e-5  # Paddle's default; Hugging Face BERT uses 1e-12
    try:
        result = align.compare(pd, hf, _batches(1)[0])
    finally:
        ln._epsilon = 1e-12
    assert _where(result) == ("forward", 0, "embeddings.layer_norm", "embeddings.LayerNorm", "module")
    assert "eps paddle 1e-05 vs torch 1e-12" in result.first_divergence.hint
    [finding] = result.findings
    assert (finding.kind, finding.paddle, finding.torch, finding.label) == \
        ("config", "embeddings.layer_norm", "embeddings.LayerNorm", "eps")


def test_configuration_mismatch_reported_when_the_numbers_agree(models):
    pd, hf = models
    norm = pd.encoder.layers[3].norm2
    norm._epsilon = 1e-11  # numerically invisible next to a variance of ~1
    try:
        result = align.compare(pd, hf, _batches(1)[0])
    finally:
        norm._epsilon = 1e-12
    assert result.first_divergence is None
    assert not result.ok
    assert [(f.paddle, f.label, f.paddle_value, f.torch_value) for f in result.findings] == \
        [("encoder.layers.3.norm2", "eps", 1e-11, 1e-12)]


# --------------------------------------------------------------------------- backward bug


def _forward_with_detached_residual(self: Any, src: Any, src_mask: Any = None, cache: Any = None) -> Any:
    """paddle.nn.TransformerEncoderLayer.forward (post-norm) with the attention residual detached."""
    from paddle.nn.layer.transformer import _convert_attention_mask

    src_mask = _convert_attention_mask(src_mask, src.dtype)
    residual = src
    src = self.self_attn(src, src, src, src_mask)
    src = residual.detach() + self.dropout1(src)  # the planted bug
    src = self.norm1(src)
    residual = src
    src = self.linear2(self.dropout(self.activation(self.linear1(src))))
    src = residual + self.dropout2(src)
    return self.norm2(src)


def test_detach_in_one_residual_branch_layer2(models):
    pd, hf = models
    layer = pd.encoder.layers[2]
    layer.forward = types.MethodType(_forward_with_detached_residual, layer)
    try:
        result = align.compare(pd, hf, _batches(1)[0], loss=(pd_loss, pt_loss))
    finally:
        del layer.forward
    assert not [r for r in result.rows if r.phase == "forward" and r.status != "ok"]  # forward equal
    assert _where(result) == ("backward", 0, "encoder.layers.2", "encoder.layer.2", "module")
    assert "detach()" in result.first_divergence.hint
    assert "encoder.layers.1" in result.first_divergence.what  # the gradient it passes back


# --------------------------------------------------------------------------- optimizer bugs


def _equal_first_step(result: Any) -> None:
    """Step 0's forward, loss, backward and parameter gradients agree; the divergence is the update."""
    bad = [r for r in result.rows if r.step == 0 and r.phase != "step" and r.status not in ("ok", "skipped")]
    assert not bad, str(result)
    assert {r.status for r in result.rows if r.step == 1 and r.phase in ("forward", "loss")} <= {"ok", "follows"}
    assert any(r.status == "follows" for r in result.rows if r.step == 1)


def test_optimizer_epsilon_difference(models):
    pd, hf = models
    pd_opt, pt_opt = _optimizers(pd, hf, pd_eps=1e-6)
    result = align.compare(pd, hf, _batches(2), loss=(pd_loss, pt_loss), optimizers=(pd_opt, pt_opt), steps=2)
    assert _where(result)[:2] == ("step", 0) and result.first_divergence.kind == "param"
    _equal_first_step(result)
    [finding] = result.findings
    assert (finding.kind, finding.label, finding.paddle_value, finding.torch_value) == ("optimizer", "eps", 1e-6, 1e-8)
    assert "Optimizer eps: paddle 1e-06 vs torch 1e-08" in result.first_divergence.hint


def test_weight_decay_filter_on_structured_names(models):
    pd, hf = models
    # Hugging Face style: Paddle calls the filter with param.name ("layer_norm_0.w_0"), so it matches
    # nothing and every parameter is decayed, LayerNorm weights and biases included.
    pd_opt, pt_opt = _optimizers(pd, hf, pd_filter=lambda name: not any(k in name for k in NO_DECAY))
    result = align.compare(pd, hf, _batches(2), loss=(pd_loss, pt_loss), optimizers=(pd_opt, pt_opt), steps=2)
    assert _where(result) == ("step", 0, "embeddings.layer_norm.weight", "embeddings.LayerNorm.weight", "param")
    _equal_first_step(result)
    hint = result.first_divergence.hint
    assert "apply_decay_param_fun receives param.name" in hint
    assert "proportional to the parameter" in hint
    decayed = next(f for f in result.findings if f.label == "decayed parameters")
    assert "embeddings.layer_norm.weight" in decayed.paddle_value


# --------------------------------------------------------------------------- CNN with BatchNorm


class _TorchCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.act = torch.nn.ReLU()
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: Any) -> Any:
        return self.fc(self.pool(self.act(self.bn(self.conv(x)))).flatten(1))


class _PaddleCNN(paddle.nn.Layer):
    def __init__(self, momentum: float) -> None:
        super().__init__()
        self.conv = paddle.nn.Conv2D(3, 4, 3, padding=1)
        self.bn = paddle.nn.BatchNorm2D(4, momentum=momentum)
        self.act = paddle.nn.ReLU()
        self.pool = paddle.nn.AdaptiveAvgPool2D(1)
        self.fc = paddle.nn.Linear(4, 3)

    def forward(self, x: Any) -> Any:
        return self.fc(self.pool(self.act(self.bn(self.conv(x)))).flatten(1))


LABELS = np.random.default_rng(9).integers(0, 3, (4,))


def _cnn_run(momentum: float) -> Any:
    pt, pd = _TorchCNN(), _PaddleCNN(momentum)
    rng = np.random.default_rng(10)
    batches = [(rng.standard_normal((4, 3, 6, 6)).astype(np.float32),) for _ in range(2)]
    optimizers = (paddle.optimizer.SGD(0.1, parameters=pd.parameters()), torch.optim.SGD(pt.parameters(), lr=0.1))
    loss = (lambda o, b: F.cross_entropy(o, paddle.to_tensor(LABELS)),
            lambda o, b: torch.nn.functional.cross_entropy(o, torch.from_numpy(LABELS)))
    return align.compare(pd, pt, batches, loss=loss, optimizers=optimizers, steps=2, train=True, transfer=True)


def test_batchnorm_train_mode_momentum_copied_unconverted():
    result = _cnn_run(momentum=0.1)  # torch's 0.1 copied: Paddle's momentum weighs the old statistics
    assert _where(result) == ("step", 0, "bn._mean", "bn.running_mean", "buffer")
    assert "these two add up to 1" in result.first_divergence.hint
    [finding] = result.findings
    assert (finding.paddle, finding.label, finding.paddle_value, finding.torch_value) == \
        ("bn", "momentum (torch convention)", 0.9, 0.1)
    # train mode normalises with the batch statistics: the forward of both steps agrees
    assert all(r.status == "ok" for r in result.rows if r.phase in ("forward", "backward") and r.step == 0)


def test_batchnorm_train_mode_correct_momentum_only_the_running_variance_differs():
    result = _cnn_run(momentum=0.9)
    assert not result.findings
    assert all(r.status in ("ok", "skipped") for r in result.rows
               if r.phase in ("forward", "loss", "backward", "param_grad"))
    assert _where(result) == ("step", 0, "bn._variance", "bn.running_var", "buffer")
    assert "biased batch variance" in result.first_divergence.hint
    mean_rows = [r for r in result.rows if r.paddle == "bn._mean" and r.phase == "step"]
    assert [r.status for r in mean_rows] == ["ok", "ok"]


# --------------------------------------------------------------------------- arguments


def test_bad_arguments_name_the_argument(models):
    pd, hf = models
    batch = _batches(1)[0]
    with pytest.raises(AlignError, match="paddle_model must be a paddle.nn.Layer.*swapped"):
        align.compare(hf, pd, batch)
    with pytest.raises(AlignError, match="torch_model must be a torch.nn.Module"):
        align.compare(pd, object(), batch)
    with pytest.raises(AlignError, match=r"steps=2 needs optimizers=\(paddle_optimizer, torch_optimizer\)"):
        align.compare(pd, hf, batch, steps=2)
    with pytest.raises(AlignError, match="loss must be a pair"):
        align.compare(pd, hf, batch, loss=pd_loss)
    with pytest.raises(AlignError, match=r"loss: the paddle loss function must return a scalar tensor; got shape"):
        align.compare(pd, hf, batch, loss=(lambda o, b: o[0], pt_loss))
    with pytest.raises(AlignError, match="inputs holds 2 batches for steps=3"):
        pd_opt, pt_opt = _optimizers(pd, hf)
        align.compare(pd, hf, _batches(2), loss=(pd_loss, pt_loss), optimizers=(pd_opt, pt_opt), steps=3)
    with pytest.raises(AlignError, match="tolerance"):
        align.compare(pd, hf, batch, tolerance="loose")
    with pytest.raises(AlignError, match=r"the paddle model raised inside forward, in module 'embeddings"):
        align.compare(pd, hf, {"input_ids": np.full((B, S), 999)})  # ids beyond the vocabulary


def test_assert_aligned(models):
    pd, hf = models
    batch = _batches(1)[0]
    assert align.assert_aligned(pd, hf, batch).ok
    pd.encoder.layers[0].linear1.bias.set_value(np.ones(64, np.float32))
    with pytest.raises(AssertionError) as info:
        align.assert_aligned(pd, hf, batch)
    assert "encoder.layers.0.linear1" in str(info.value) and "first divergence" in str(info.value)
