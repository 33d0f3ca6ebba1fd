"""Tiny model pairs shared by the align tests (module / session scoped: build once, reuse).

Each ``*_pair`` fixture returns a (torch model, Paddle model) pair with the same configuration
and equal weights (copied by ``align.transfer``), in eval mode. They are shared across a test
module: tests that change weights or modes build their own with the ``make_*`` factories.
"""

from __future__ import annotations

from typing import Any

import numpy as np  # noqa: F401  (zlib/numpy loaded before paddle: FACTS.md, paddle 2.6.2 hazard)
import pytest

paddle = pytest.importorskip("paddle")
torch = pytest.importorskip("torch")

TINY = dict(
    vocab_size=40,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=24,
    type_vocab_size=2,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    initializer_range=0.2,
    pad_token_id=0,
)


def _family_kwargs(family: str, overrides: dict[str, Any]) -> dict[str, Any]:
    kw = dict(TINY, **overrides)
    if family == "roberta":  # position ids start after the padding index
        kw["pad_token_id"] = overrides.get("pad_token_id", 1)
        kw["max_position_embeddings"] = kw["max_position_embeddings"] + 2
    if family == "electra":  # embeddings smaller than hidden: the projection layer exists on both sides
        kw.setdefault("embedding_size", 8)
    return kw


def hf_config(family: str = "bert", **overrides: Any) -> Any:
    """A small Hugging Face config (eager attention, no dropout) for ``family``."""
    transformers = pytest.importorskip("transformers")
    cls = {"bert": transformers.BertConfig, "roberta": transformers.RobertaConfig,
           "electra": transformers.ElectraConfig, "ernie": transformers.ErnieConfig}[family]
    kw = _family_kwargs(family, overrides)
    cfg = cls(**kw)
    cfg._attn_implementation = "eager"
    return cfg


def pd_config(family: str = "bert", **overrides: Any) -> Any:
    """The matching paddlenlp config."""
    T = pytest.importorskip("paddlenlp.transformers")
    cls = {"bert": T.BertConfig, "roberta": T.RobertaConfig, "electra": T.ElectraConfig,
           "ernie": T.ErnieConfig}[family]
    kw = _family_kwargs(family, overrides)
    return cls(**kw)


def make_hf(cls_name: str, family: str = "bert", seed: int = 1, **overrides: Any) -> Any:
    """A Hugging Face model (eval mode) of class ``cls_name`` built from the tiny config."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(hf_config(family, **overrides))
    return model.eval()


def make_pd(cls_name: str, family: str = "bert", seed: int = 2, **overrides: Any) -> Any:
    """A paddlenlp model (eval mode) of class ``cls_name`` built from the tiny config."""
    T = pytest.importorskip("paddlenlp.transformers")
    paddle.seed(seed)
    model = getattr(T, cls_name)(pd_config(family, **overrides))
    model.eval()
    return model


def aligned(torch_model: Any, paddle_model: Any, strict: bool = True) -> tuple[Any, Any]:
    """The pair with the torch weights copied into the Paddle model (``align.transfer``)."""
    from paddlefix import align

    align.transfer(torch_model, paddle_model, strict=strict)
    return torch_model, paddle_model


@pytest.fixture(scope="module")
def hf_bert_pair() -> tuple[Any, Any]:
    """(HF ``BertModel``, paddlenlp ``BertModel``): same tiny config, equal weights (eval mode)."""
    return aligned(make_hf("BertModel"), make_pd("BertModel"))


@pytest.fixture(scope="module")
def hf_bert_mlm_pair() -> tuple[Any, Any]:
    """(HF ``BertForMaskedLM``, paddlenlp ``BertForMaskedLM``), tied decoders, equal weights.

    paddlenlp's masked-LM model has a pooler HF's has not; it keeps its own random weights.
    """
    from paddlefix import align

    hf, pd = make_hf("BertForMaskedLM"), make_pd("BertForMaskedLM")
    align.transfer(hf, pd, strict=False)
    return hf, pd


@pytest.fixture(scope="module")
def hf_bert_qa_pair() -> tuple[Any, Any]:
    """(HF ``BertForQuestionAnswering``, paddlenlp ``BertForQuestionAnswering``), equal weights.

    paddlenlp's model has a pooler (unused by the QA head) HF's has not; it keeps its own weights.
    """
    return aligned(make_hf("BertForQuestionAnswering"), make_pd("BertForQuestionAnswering"), strict=False)


@pytest.fixture(scope="module")
def hf_roberta_pair() -> tuple[Any, Any]:
    """(HF ``RobertaModel``, paddlenlp ``RobertaModel``), equal weights."""
    return aligned(make_hf("RobertaModel", "roberta"), make_pd("RobertaModel", "roberta"))


@pytest.fixture(scope="module")
def bert_inputs() -> dict[str, np.ndarray]:
    """A batch of 2 sequences of 7 token ids (second one padded) as NumPy arrays."""
    rng = np.random.default_rng(0)
    ids = rng.integers(2, TINY["vocab_size"], size=(2, 7)).astype("int64")
    mask = np.ones((2, 7), dtype="int64")
    ids[1, 5:] = 0
    mask[1, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


# -- a small CNN with BatchNorm and PReLU, written in both frameworks ---------------------------
def make_torch_cnn(seed: int = 3) -> Any:
    """torch CNN: conv -> BatchNorm2d -> PReLU -> conv-transpose -> GroupNorm -> pool -> LayerNorm -> Linear."""
    torch.manual_seed(seed)
    nn = torch.nn

    class TorchCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.act = nn.PReLU(8)
            self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
            self.gn = nn.GroupNorm(2, 4)
            self.inorm = nn.InstanceNorm2d(4, affine=True)
            self.norm = nn.LayerNorm(4)
            self.fc = nn.Linear(4, 5)
            self.head = nn.Linear(5, 5)

        def forward(self, x: Any) -> Any:
            x = self.act(self.bn(self.conv(x)))
            x = self.inorm(self.gn(self.up(x)))
            x = x.mean(dim=(2, 3))
            return self.head(self.fc(self.norm(x)))

    model = TorchCNN().eval()
    with torch.no_grad():  # non-trivial running statistics and affine terms
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 1.5)
        for p in model.parameters():
            p.add_(torch.rand_like(p) * 0.1)
    return model


def make_paddle_cnn(seed: int = 4) -> Any:
    """The Paddle port of :func:`make_torch_cnn` (attribute names differ on purpose for some layers)."""
    paddle.seed(seed)
    nn = paddle.nn

    class PaddleCNN(nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2D(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2D(8)
            self.act = nn.PReLU(8)
            self.up = nn.Conv2DTranspose(8, 4, 2, stride=2)
            self.gn = nn.GroupNorm(2, 4)
            self.inorm = nn.InstanceNorm2D(4)
            self.norm = nn.LayerNorm(4)
            self.fc = nn.Linear(4, 5)
            self.head = nn.Linear(5, 5)

        def forward(self, x: Any) -> Any:
            x = self.act(self.bn(self.conv(x)))
            x = self.inorm(self.gn(self.up(x)))
            x = x.mean(axis=(2, 3))
            return self.head(self.fc(self.norm(x)))

    model = PaddleCNN()
    model.eval()
    return model


@pytest.fixture(scope="module")
def cnn_pair() -> tuple[Any, Any]:
    """(torch CNN, Paddle CNN) with BatchNorm, PReLU, ConvTranspose, GroupNorm, InstanceNorm, LayerNorm; equal weights."""
    return aligned(make_torch_cnn(), make_paddle_cnn())


def make_square_pair(width: int = 8, depth: int = 3, seed: int = 5) -> tuple[Any, Any]:
    """torch / Paddle MLPs of square Linear layers only (the untransposed-load bug passes every shape check)."""
    torch.manual_seed(seed)
    paddle.seed(seed)
    t = torch.nn.Sequential(*[m for _ in range(depth) for m in (torch.nn.Linear(width, width), torch.nn.Tanh())])
    p = paddle.nn.Sequential(*[m for _ in range(depth) for m in (paddle.nn.Linear(width, width), paddle.nn.Tanh())])
    t.eval()
    p.eval()
    return t, p


def to_numpy(x: Any) -> np.ndarray:
    """A torch or Paddle tensor (or a model output holding one first) as a NumPy array."""
    if hasattr(x, "last_hidden_state"):
        x = x.last_hidden_state
    elif isinstance(x, (tuple, list)):
        x = x[0]
    elif hasattr(x, "logits"):
        x = x.logits
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x.numpy())

