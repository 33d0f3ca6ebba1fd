"""cross_entropy: cost of the patched mean over non-ignored labels (patched / stock).

``F.cross_entropy`` forward, float32 logits ``[32 * 128, 30522]`` (BERT's vocabulary, batch 32 x
seq 128), 25% of the labels ``-100``, ``reduction="mean"``. On Paddle 3.x this takes the fixed
path (the stock ``reduction="sum"`` divided by the count of valid labels); where the defect is
absent (2.6) the patch is forced so the same path is timed. Both sides run on the same tensors,
interleaved; the stock side calls the saved original.
"""

from __future__ import annotations

import warnings

from _common import Row, compare

import paddlefix

GOAL = 1.05
ROWS, CLASSES = 32 * 128, 30522


def rows() -> list[Row]:
    import numpy as np
    import paddle

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", paddlefix.PaddlefixWarning)
        was_applied = paddlefix.status()["cross_entropy"].state == "applied"
        if not was_applied:
            st = paddlefix.apply("cross_entropy", force=("cross_entropy",))["cross_entropy"]
            if st.state != "applied":
                return [Row("cross_entropy: F.cross_entropy, patched / stock", float("nan"), GOAL, st.reason)]
    try:
        F = paddle.nn.functional
        stock = paddlefix.get_original(F, "cross_entropy")
        patched = F.cross_entropy
        rng = np.random.default_rng(0)
        logits = paddle.to_tensor(rng.standard_normal((ROWS, CLASSES), dtype=np.float32))
        labels = rng.integers(0, CLASSES, ROWS)
        labels[rng.random(ROWS) < 0.25] = -100
        label = paddle.to_tensor(labels)
        with paddle.no_grad():
            a, b = compare(lambda: float(patched(logits, label)), lambda: float(stock(logits, label)), number=2, repeat=5)
        return [
            Row(
                f"cross_entropy: F.cross_entropy [{ROWS}, {CLASSES}] float32, 25% ignored, mean, patched / stock",
                a / b,
                GOAL,
                f"patched {a * 1e3:.1f} ms, stock {b * 1e3:.1f} ms",
            )
        ]
    finally:
        if not was_applied:
            paddlefix.revert("cross_entropy")
