"""align.same_randomness overhead: BERT-base-sized train-mode forward + backward, inside / outside.

BERT-base shape (hidden 768, 12 layers, 12 heads, intermediate 3072, dropout 0.1 everywhere),
batch 2 x 64 tokens, on CPU, for the Hugging Face model (torch) and the paddlenlp one (Paddle).
The inside side enters a fresh context for every forward + backward (the module scan, the
settings, the layer hooks of ``models=`` all counted) and draws its 37 masks per forward
(2.1M mask elements) from NumPy; the outside side is the stock framework with its own
dropout. Interleaved, best of N, torch on one intra-op thread: the machine's two cores are
shared, and multi-threaded timings there swing by +-50% between identical runs.
"""

from __future__ import annotations

from _common import BERT_BASE, Row, best_of, compare

import paddlefix  # noqa: F401  (zlib before paddle)

GOAL = 1.5
CONFIG = dict(
    BERT_BASE,
    type_vocab_size=2,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
)
BATCH, SEQ = 2, 64


def rows() -> list[Row]:
    import numpy as np
    import paddle
    import torch
    import transformers
    from paddlenlp import transformers as pnlp

    from paddlefix import align

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _rows(np, paddle, torch, transformers, pnlp, align)
    finally:
        torch.set_num_threads(threads)


def _rows(np, paddle, torch, transformers, pnlp, align) -> list[Row]:  # type: ignore[no-untyped-def]
    ids = np.random.default_rng(0).integers(1, CONFIG["vocab_size"], size=(BATCH, SEQ)).astype("int64")
    torch.manual_seed(0)
    hf_cfg = transformers.BertConfig(**CONFIG)
    hf_cfg._attn_implementation = "eager"
    hf = transformers.BertModel(hf_cfg).train()
    paddle.seed(0)
    pd = pnlp.BertModel(pnlp.BertConfig(**CONFIG))
    pd.train()
    pt_ids, pd_ids = torch.from_numpy(ids), paddle.to_tensor(ids)

    def torch_step() -> None:
        hf(input_ids=pt_ids).last_hidden_state.sum().backward()
        hf.zero_grad(set_to_none=True)

    def paddle_step() -> None:
        pd(pd_ids)[0].sum().backward()
        pd.clear_gradients()

    out = []
    for label, model, step in (("torch HF", hf, torch_step), ("paddlenlp", pd, paddle_step)):

        def inside(step=step, model=model) -> None:
            with align.same_randomness(seed=0, models=(model,)):
                step()

        def enter_exit(model=model) -> None:
            with align.same_randomness(seed=0, models=(model,)):
                pass

        step()  # warm up both paths once
        inside()
        t_in, t_out = compare(inside, step, number=1, repeat=3)
        t_enter = best_of(enter_exit, number=1, repeat=3)
        out.append(
            Row(
                f"same_randomness: BERT-base train fwd+bwd ({label}), inside / outside",
                t_in / t_out,
                GOAL,
                f"{t_in * 1e3:.0f} ms / {t_out * 1e3:.0f} ms, batch {BATCH}x{SEQ}, CPU; "
                f"entering + leaving the context {t_enter * 1e3:.0f} ms",
            )
        )
    return out


if __name__ == "__main__":
    for row in rows():
        print(f"{row.name:<70} {row.ratio:6.3f}  goal {row.goal}  {row.detail}")
