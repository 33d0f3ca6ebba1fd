"""The original report's alignment story, end to end: a BERT-style QA model ported to Paddle.

One script does what the reproduction needed: tokenizers built directly from a vocab file
(special tokens touching text), a 3D attention mask, real batches captured once and
replayed into both frameworks, an eval-mode backward, one optimizer step under nan_guard.
Paddle (patched) and PyTorch / Hugging Face must agree at every stage.
"""

from __future__ import annotations

import numpy as np
import pytest

import paddlefix
from paddlefix import align, fakedata

paddle = pytest.importorskip("paddle")
T = pytest.importorskip("paddlenlp.transformers")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tests.patches.test_attention_mask import _hf_copy  # noqa: E402  (HF model built from a paddle config)

WORDS = "the a what is where who capital city river of paris france rome italy ##s ##ing , . ?".split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAIRS = [
    ("what is the capital of france?", "paris is the capital[MASK]of france."),
    ("where is rome?", "rome is in italy,[MASK][MASK] the city of rome."),
    ("who is[MASK]?", "[MASK] is the river of paris"),
    ("what city?", "the city[UNK]rome"),
]


@pytest.fixture
def vocab_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(SPECIAL + WORDS) + "\n", encoding="utf-8")
    return str(path)


def _batch(encode, n: int = len(PAIRS)) -> dict[str, np.ndarray]:
    rows = [encode(q, c) for q, c in PAIRS[:n]]
    length = max(len(r["input_ids"]) for r in rows)
    ids = np.zeros((n, length), dtype="int64")
    types = np.zeros((n, length), dtype="int64")
    for i, r in enumerate(rows):
        ids[i, : len(r["input_ids"])] = r["input_ids"]
        types[i, : len(r["token_type_ids"])] = r["token_type_ids"]
    keep = (ids != 0).astype("int64")
    rng = np.random.default_rng(0)
    lengths = keep.sum(1)
    return {
        "input_ids": ids,
        "token_type_ids": types,
        "attention_mask": keep[:, None, :] * keep[:, :, None],  # 3D [batch, seq, seq], as HF takes
        "start_positions": (rng.integers(0, 1 << 30, n) % lengths).astype("int64"),
        "end_positions": (rng.integers(0, 1 << 30, n) % lengths).astype("int64"),
    }


def test_bert_qa_port_aligns_with_pytorch_end_to_end(paddlefix_clean, vocab_file, tmp_path):
    report = paddlefix.apply("default", "nan_guard")
    for name in ("tokenizer_special_tokens", "attention_mask", "nan_guard"):
        assert report[name].state == "applied", (name, report[name].reason)

    # 1. Tokenizers built directly from the vocab file agree with Hugging Face.
    pd_tok = T.BertTokenizer(vocab_file)
    hf_tok = transformers.BertTokenizer(vocab_file)
    for question, context in PAIRS:
        assert pd_tok.tokenize(context) == hf_tok.tokenize(context)
    pd_enc = _batch(lambda q, c: pd_tok(q, c))
    hf_enc = _batch(lambda q, c: hf_tok(q, c))
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        np.testing.assert_array_equal(pd_enc[key], hf_enc[key])
    mask_id = pd_tok.convert_tokens_to_ids("[MASK]")
    assert (pd_enc["input_ids"] == mask_id).sum() == 5  # every [MASK] kept whole

    # 2. Capture the batch once, replay it into both frameworks.
    path = str(tmp_path / "qa_batch.npz")
    fakedata.capture(iter([pd_enc]), 1, path)
    (pb,) = fakedata.load(path, to="paddle")
    (tb,) = fakedata.load(path, to="torch")

    # 3. The same QA model in both frameworks (a BertModel plus a start/end head).
    paddle.seed(3)
    config = T.BertConfig(
        vocab_size=len(SPECIAL) + len(WORDS), hidden_size=16, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=32, max_position_embeddings=64,
        initializer_range=0.2, pad_token_id=0,
    )
    pd_bert = T.BertModel(config)
    pd_head = paddle.nn.Linear(16, 2)
    hf_bert = _hf_copy(pd_bert)
    hf_head = torch.nn.Linear(16, 2)
    align.transfer(pd_head, hf_head)

    # 4. Eval mode (deterministic), forward, loss, backward: in both.
    pd_bert.eval()
    hf_bert.eval()
    seq = pd_bert(pb["input_ids"], token_type_ids=pb["token_type_ids"], attention_mask=pb["attention_mask"])[0]
    pd_logits = pd_head(seq)
    pd_loss = (
        paddle.nn.functional.cross_entropy(pd_logits[:, :, 0], pb["start_positions"])
        + paddle.nn.functional.cross_entropy(pd_logits[:, :, 1], pb["end_positions"])
    ) / 2
    hf_seq = hf_bert(tb["input_ids"], token_type_ids=tb["token_type_ids"], attention_mask=tb["attention_mask"])[0]
    hf_logits = hf_head(hf_seq)
    hf_loss = (
        torch.nn.functional.cross_entropy(hf_logits[:, :, 0], tb["start_positions"])
        + torch.nn.functional.cross_entropy(hf_logits[:, :, 1], tb["end_positions"])
    ) / 2
    real = pd_enc["input_ids"] != 0
    np.testing.assert_allclose(pd_logits.numpy()[real], hf_logits.detach().numpy()[real], atol=2e-5)
    np.testing.assert_allclose(float(pd_loss), float(hf_loss), atol=2e-5)
    pd_loss.backward()
    hf_loss.backward()
    np.testing.assert_allclose(pd_head.weight.grad.numpy(), hf_head.weight.grad.numpy().T, atol=2e-5)
    q_grad = pd_bert.encoder.layers[0].self_attn.q_proj.weight.grad.numpy()
    np.testing.assert_allclose(q_grad, hf_bert.encoder.layer[0].attention.self.query.weight.grad.numpy().T, atol=2e-5)

    # 5. One optimizer step (nan_guard on: finite gradients pass), same weights after it.
    params = pd_bert.parameters() + pd_head.parameters()
    pd_opt = paddle.optimizer.SGD(learning_rate=0.5, parameters=params)
    hf_opt = torch.optim.SGD(list(hf_bert.parameters()) + list(hf_head.parameters()), lr=0.5)
    pd_opt.step()
    hf_opt.step()
    assert paddlefix.nan_guard_stats().skipped == 0
    np.testing.assert_allclose(pd_head.weight.numpy(), hf_head.weight.detach().numpy().T, atol=2e-5)
    np.testing.assert_allclose(
        pd_bert.encoder.layers[0].self_attn.q_proj.weight.numpy(),
        hf_bert.encoder.layer[0].attention.self.query.weight.detach().numpy().T,
        atol=2e-5,
    )
