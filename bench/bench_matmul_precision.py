"""matmul_precision: cost of the default mode and of the float64 mode, side by side with stock."""

from __future__ import annotations

import gc
from typing import Callable

import paddlefix  # noqa: F401  (before paddle: zlib first on Paddle 2.6.2)
from _common import Row, best_of, compare


def rows() -> list[Row]:
    import numpy as np
    import paddle

    from paddlefix.patches import matmul_precision as mp

    saved_mode = mp._mode
    was_applied = paddlefix.status()["matmul_precision"].state == "applied"
    paddlefix.revert("matmul_precision")
    rng = np.random.default_rng(0)
    small = [paddle.to_tensor(rng.standard_normal((64, 64)).astype("float32")) for _ in range(2)]
    big = [paddle.to_tensor(rng.standard_normal((1024, 1024)).astype("float32")) for _ in range(2)]
    # Stock float32 kernel for the float64-mode rows: the C operator itself (on 3.x the patch
    # wraps ``paddle._C_ops.matmul`` too, since ``paddle.linalg.matmul`` is that object).
    raw_op = paddlefix.get_original(paddle._C_ops, "matmul")

    def raw(x: object, y: object) -> object:
        return raw_op(x, y, False, False)

    paddle.seed(0)
    layer = paddle.nn.Linear(64, 64)
    out: list[Row] = []
    try:
        mp._mode = None
        mode = mp.get_float32_matmul_precision()

        def applied_vs_stock(fn: Callable[[], object], number: int, repeat: int) -> tuple[float, float, str]:
            """Same call, alternately with the patch applied and reverted; best of each."""
            gc.collect()
            gc.disable()  # as timeit: apply()'s garbage is not collected inside a timing
            try:
                return _alternate(fn, number, repeat)
            finally:
                gc.enable()

        def _alternate(fn: Callable[[], object], number: int, repeat: int) -> tuple[float, float, str]:
            best_applied = best_stock = float("inf")
            state = ""
            for i in range(repeat):
                for applied in (True, False) if i % 2 else (False, True):  # alternate who goes first
                    if applied:
                        state = paddlefix.apply("matmul_precision", strict=False)["matmul_precision"].state
                        best_applied = min(best_applied, best_of(fn, number, 1))
                        paddlefix.revert("matmul_precision")
                    else:
                        best_stock = min(best_stock, best_of(fn, number, 1))
            return best_applied, best_stock, state

        for _ in range(50):  # warm up
            paddle.matmul(*small), layer(small[0])
        patched, stock, state = applied_vs_stock(lambda: paddle.matmul(*small), 300, 40)
        label = f"applied({mode}, {state})"
        out.append(Row("matmul_precision: eager 64x64 matmul, " + label + " / stock", patched / stock, 1.03,
                       f"{patched * 1e6:.1f} us vs {stock * 1e6:.1f} us"))
        patched, stock, state = applied_vs_stock(lambda: layer(small[0]), 300, 40)
        out.append(Row("matmul_precision: nn.Linear(64, 64) forward, " + label + " / stock", patched / stock, 1.03,
                       f"{patched * 1e6:.1f} us vs {stock * 1e6:.1f} us"))

        paddlefix.set_float32_matmul_precision("float64")
        wide, stock = compare(lambda: paddle.matmul(*big), lambda: raw(*big), 1, 5)
        out.append(Row("matmul_precision: float64 mode / stock float32, 1024x1024 matmul (CPU)", wide / stock, 2.5,
                       f"{wide * 1e3:.1f} ms vs {stock * 1e3:.1f} ms"))
        wide, stock = compare(lambda: paddle.matmul(*small), lambda: raw(*small), 1000, 5)
        out.append(Row("matmul_precision: float64 mode / stock float32, eager 64x64 matmul", wide / stock, None,
                       f"{wide * 1e6:.1f} us vs {stock * 1e6:.1f} us (C op; two casts in, one out)"))
    finally:
        paddlefix.revert("matmul_precision")
        mp._mode = saved_mode
        if was_applied:  # leave the patch as we found it
            paddlefix.apply("matmul_precision", strict=False)
    return out


if __name__ == "__main__":
    for row in rows():
        print(row)
