"""torch_defaults cost: layer construction and BatchNorm train-mode forward, patched / stock.

Rounds alternate between stock and patched (the patch is applied and reverted between rounds,
outside the timed region); the best round of each side is kept.

- construction: ``Linear(768, 768)``, ``Conv2D(64, 64, 3)``, ``MultiHeadAttention(256, 4)``,
  ``Embedding(8000, 256)``, each row alone, then their sum. Every parameter receives torch's
  initializer at creation (one draw, as stock); Embedding's N(0, 1) is Box-Muller on NumPy's
  uniforms (seeded from Paddle's generator), cheaper than Paddle's CPU Gaussian kernel.
- BatchNorm: ``BatchNorm2D(64)`` forward in train mode on ``[16, 64, 32, 32]``, patched forward
  and the saved original called interleaved; the patch zeroes the running variance (64 values,
  through a NumPy view of its memory) for Paddle's update and writes torch's update back
  (float64, one rounding).
"""

from __future__ import annotations

import warnings

from _common import Row, best_of, compare

import paddlefix

GOAL_BUILD = 1.5
GOAL_BN = 1.10


def _alternate(fn, number: int, repeat: int) -> tuple[float, float]:
    """(best patched, best stock) seconds per call, rounds alternating."""
    best_patched = best_stock = float("inf")
    for _ in range(repeat):
        paddlefix.revert("torch_defaults")
        best_stock = min(best_stock, best_of(fn, number, 1))
        paddlefix.apply("torch_defaults")
        best_patched = min(best_patched, best_of(fn, number, 1))
    return best_patched, best_stock


def rows() -> list[Row]:
    import paddle
    from paddle.nn.layer import norm

    was_applied = paddlefix.status()["torch_defaults"].state == "applied"
    st = paddlefix.apply("torch_defaults")["torch_defaults"]
    if st.state != "applied":
        return [Row("torch_defaults: layer construction, patched / stock", float("nan"), GOAL_BUILD, st.reason)]
    try:
        out = []
        builds = {
            "Linear(768,768)": lambda: paddle.nn.Linear(768, 768),
            "Conv2D(64,64,3)": lambda: paddle.nn.Conv2D(64, 64, 3),
            "MultiHeadAttention(256,4)": lambda: paddle.nn.MultiHeadAttention(256, 4),
            "Embedding(8000,256)": lambda: paddle.nn.Embedding(8000, 256),
        }
        total_p = total_s = 0.0
        for name, build in builds.items():
            patched, stock = _alternate(build, number=3, repeat=9)
            total_p, total_s = total_p + patched, total_s + stock
            note = " (torch's N(0,1) by Box-Muller on NumPy's uniforms, against Xavier's uniform)" if "Emb" in name else ""
            out.append(Row(f"torch_defaults: construct {name}, patched / stock", patched / stock, GOAL_BUILD,
                           f"patched {patched * 1e3:.2f} ms, stock {stock * 1e3:.2f} ms{note}"))
        out.append(Row("torch_defaults: construct all four, patched / stock", total_p / total_s, GOAL_BUILD,
                       f"patched {total_p * 1e3:.1f} ms, stock {total_s * 1e3:.1f} ms"))
        paddle.seed(0)
        bn = paddle.nn.BatchNorm2D(64)
        x = paddle.randn([16, 64, 32, 32])
        forward = vars(norm._BatchNormBase)["forward"]
        original = paddlefix.get_original(norm._BatchNormBase, "forward")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Paddle warns on every train-mode forward
            patched, stock = compare(lambda: forward(bn, x), lambda: original(bn, x), number=10, repeat=15)
        out.append(
            Row(
                "torch_defaults: BatchNorm2D(64) train forward [16,64,32,32], patched / stock",
                patched / stock,
                GOAL_BN,
                f"patched {patched * 1e3:.3f} ms, stock {stock * 1e3:.3f} ms (interleaved calls)",
            )
        )
        return out
    finally:
        if not was_applied:
            paddlefix.revert("torch_defaults")
