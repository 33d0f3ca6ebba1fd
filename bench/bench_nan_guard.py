"""nan_guard overhead: one optimizer step on a ~10M-parameter model, guarded / unguarded.

Both sides step the same optimizer over the same (finite) gradients, interleaved; the
unguarded side calls the saved original ``step``. The guard costs one ``sum`` per gradient
tensor, an ``add_n`` and one host read, so its share is largest for the cheapest optimizer.
"""

from __future__ import annotations

from _common import Row, compare

import paddlefix

GOAL = 1.05


def _model(paddle, width: int = 1024, depth: int = 10):
    paddle.seed(0)
    layers = [paddle.nn.Linear(width, width) for _ in range(depth)]  # 10 x 1,049,600 = 10.5M params
    x = paddle.randn([8, width])
    h = x
    for layer in layers:
        h = paddle.tanh(layer(h))
    h.mean().backward()
    return [p for layer in layers for p in layer.parameters()]


def rows() -> list[Row]:
    import paddle

    was_applied = paddlefix.status()["nan_guard"].state == "applied"
    if not was_applied:
        st = paddlefix.apply("nan_guard")["nan_guard"]
        if st.state != "applied":
            return [Row("nan_guard: optimizer step, 10M params, guarded / unguarded", float("nan"), GOAL, st.reason)]
    try:
        params = _model(paddle)
        n = sum(int(p.numel()) for p in params)
        out = []
        for name, make, number, repeat in (
            ("Adam", lambda: paddle.optimizer.Adam(learning_rate=0.0, parameters=params), 5, 7),
            ("SGD", lambda: paddle.optimizer.SGD(learning_rate=0.0, parameters=params), 10, 5),
        ):
            opt = make()
            cls = type(opt)
            owner = cls if "step" in vars(cls) else paddle.optimizer.Optimizer
            original = paddlefix.get_original(owner, "step")
            guarded, stock = compare(opt.step, lambda: original(opt), number=number, repeat=repeat)
            out.append(
                Row(
                    f"nan_guard: {name}.step(), {n / 1e6:.1f}M params in {len(params)} tensors, guarded / unguarded",
                    guarded / stock,
                    GOAL,
                    f"guarded {guarded * 1e3:.2f} ms, unguarded {stock * 1e3:.2f} ms",
                )
            )
        return out
    finally:
        if not was_applied:
            paddlefix.revert("nan_guard")
            paddlefix.nan_guard_stats(reset=True)
