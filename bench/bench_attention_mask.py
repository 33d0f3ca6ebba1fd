"""attention_mask: cost of normalising the mask in BertModel.forward (patched / stock).

BertModel forward, batch 8 x seq 128, 2D int64 padding mask, eval + no_grad, on a small
config (hidden 256, 4 layers, 4 heads, intermediate 1024; random weights). One model: the
stock side shadows the patched class ``forward`` with the saved original on the instance, so
both go through the same ``Layer.__call__`` path, weights and memory, timed interleaved.
"""

from __future__ import annotations

import types
import warnings

from _common import Row, compare

import paddlefix

CONFIG = dict(
    vocab_size=1000,
    hidden_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=1024,
    max_position_embeddings=128,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def rows() -> list[Row]:
    import numpy as np
    import paddle
    from paddlenlp.transformers.bert.modeling import BertConfig, BertModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", paddlefix.PaddlefixWarning)
        was_applied = paddlefix.status()["attention_mask"].state == "applied"
        if not was_applied:
            paddlefix.apply("attention_mask", force=("attention_mask",))
    try:
        paddle.seed(0)
        model = BertModel(BertConfig(**CONFIG))
        model.eval()
        stock_forward = types.MethodType(paddlefix.get_original(BertModel, "forward"), model)

        rng = np.random.default_rng(0)
        ids = rng.integers(1, 1000, (8, 128))
        keep = np.ones((8, 128), dtype="int64")
        for i, n in enumerate(rng.integers(32, 129, 8)):
            keep[i, n:] = 0
            ids[i, n:] = 0
        ids_t, mask_t = paddle.to_tensor(ids), paddle.to_tensor(keep)

        def patched() -> None:
            with paddle.no_grad():
                model(ids_t, attention_mask=mask_t)[0].numpy()  # .numpy(): wait for the result

        def stock() -> None:
            model.__dict__["forward"] = stock_forward  # the instance attribute wins over the class
            try:
                with paddle.no_grad():
                    model(ids_t, attention_mask=mask_t)[0].numpy()
            finally:
                del model.__dict__["forward"]

        model.__dict__["forward"] = stock_forward
        assert model.forward is stock_forward  # Layer.__call__ will run the original
        del model.__dict__["forward"]
        patched()
        stock()
        t_patched, t_stock = compare(patched, stock, number=3, repeat=7)
    finally:
        if not was_applied:
            paddlefix.revert("attention_mask")
    return [
        Row(
            "attention_mask: BertModel forward 8x128, 2D mask, patched / stock",
            t_patched / t_stock,
            1.03,
            f"{t_patched * 1e3:.1f} ms vs {t_stock * 1e3:.1f} ms (hidden 256, 4 layers, 4 heads; paddle {paddle.__version__})",
        )
    ]
