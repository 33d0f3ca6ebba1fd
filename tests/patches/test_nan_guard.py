"""nan_guard: a non-finite gradient never reaches the weights (real optimizers, real Paddle).

Scenario of Paddle#36665: one batch of a single sample yields a non-finite loss; a stock
optimizer step then writes NaN/Inf into the weights. nan_guard is opt-in and applies on
every version (the probe confirms the stock behaviour).
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import paddle
import pytest

import paddlefix
from paddlefix import ConfigError, PaddlefixWarning

from ..conftest import run_python

nan_guard = importlib.import_module("paddlefix.patches.nan_guard")

pytestmark = pytest.mark.usefixtures("paddlefix_clean")

OPTIMIZERS = {
    "SGD": lambda params: paddle.optimizer.SGD(learning_rate=0.1, parameters=params),
    "Momentum": lambda params: paddle.optimizer.Momentum(learning_rate=0.1, momentum=0.9, parameters=params),
    "Adam": lambda params: paddle.optimizer.Adam(learning_rate=0.01, parameters=params),
    "AdamW": lambda params: paddle.optimizer.AdamW(learning_rate=0.01, weight_decay=0.1, parameters=params),
}


def _guard() -> None:
    st = paddlefix.apply("nan_guard")["nan_guard"]
    assert st.state == "applied", st.reason
    nan_guard.nan_guard_stats(reset=True)


def _model(seed: int = 0) -> paddle.nn.Layer:
    paddle.seed(seed)
    return paddle.nn.Sequential(paddle.nn.Linear(4, 8), paddle.nn.Tanh(), paddle.nn.Linear(8, 3))


def _batch(value: float | None = None, seed: int = 1) -> tuple[paddle.Tensor, paddle.Tensor]:
    """A batch of ONE sample; ``value`` (e.g. inf) is written into its first feature."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, 4)).astype("float32")
    if value is not None:
        x[0, 0] = value
    return paddle.to_tensor(x), paddle.to_tensor(rng.integers(0, 3, (1,)).astype("int64"))


def _loss(model: paddle.nn.Layer, batch: tuple[paddle.Tensor, paddle.Tensor]) -> paddle.Tensor:
    x, y = batch
    return paddle.nn.functional.cross_entropy(model(x), y)


def _weights(model: paddle.nn.Layer) -> dict[str, np.ndarray]:
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def _opt_state(opt: paddle.optimizer.Optimizer, model: paddle.nn.Layer) -> dict[str, np.ndarray]:
    """Every state tensor of the optimizer, keyed by parameter position (names differ per model)."""
    names = sorted(((p.name, f"param{i}") for i, p in enumerate(model.parameters())), key=lambda t: -len(t[0]))
    out = {}
    for k, v in opt.state_dict().items():
        if isinstance(v, paddle.Tensor):
            for name, alias in names:
                k = k.replace(name, alias)
            out[k] = v.numpy().copy()
    assert out or isinstance(opt, paddle.optimizer.SGD)
    return out


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and np.array_equal(a[k].view(np.uint8), b[k].view(np.uint8)) for k in a
    )


def _train(make_opt, batches: list) -> tuple[dict, dict, list]:
    model = _model()
    opt = make_opt(model.parameters())
    caught = []
    for batch in batches:
        loss = _loss(model, batch)
        loss.backward()
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            opt.step()
        caught += [w for w in rec if issubclass(w.category, PaddlefixWarning)]
        opt.clear_grad()
    return _weights(model), _opt_state(opt, model), caught


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_stock_optimizer_applies_non_finite_gradient(name: str) -> None:
    """The problem, unpatched: one inf sample makes weights non-finite (so the tests below can fail)."""
    weights, _, _ = _train(OPTIMIZERS[name], [_batch(seed=1), _batch(np.inf, seed=2)])
    assert any(not np.isfinite(w).all() for w in weights.values())


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_inf_sample_skipped_state_untouched_next_step_normal(name: str) -> None:
    """finite step, inf step, finite step under the guard == the two finite steps on stock Paddle,
    bit for bit (weights and every optimizer state tensor: moments, beta-pow accumulators,
    master weights...). The skipped step leaves weights and state bit-identical."""
    good1, bad, good2 = _batch(seed=1), _batch(np.inf, seed=2), _batch(seed=3)
    stock_w, stock_s, _ = _train(OPTIMIZERS[name], [good1, good2])

    _guard()
    model = _model()
    opt = OPTIMIZERS[name](model.parameters())
    _loss(model, good1).backward()
    opt.step()
    opt.clear_grad()
    before_w, before_s = _weights(model), _opt_state(opt, model)

    _loss(model, bad).backward()  # the loss is finite (tanh saturates); the weight gradient is not
    grad_before = model[0].weight.grad.numpy().copy()
    assert not np.isfinite(grad_before).all()
    with pytest.warns(PaddlefixWarning, match=r"step 2 of " + name + r"\.step\(\)") as rec:
        opt.step()
    message = str(rec[0].message)
    assert model[0].weight.name in message and "1 of 4 parameters" in message
    assert _same(_weights(model), before_w)  # bit-identical
    assert all(np.isfinite(w).all() for w in _weights(model).values())
    assert _same(_opt_state(opt, model), before_s)  # moments / accumulators not advanced
    # gradients left as they are
    assert np.array_equal(model[0].weight.grad.numpy(), grad_before, equal_nan=True)
    opt.clear_grad()

    _loss(model, good2).backward()
    opt.step()
    opt.clear_grad()
    assert _same(_weights(model), stock_w)
    assert _same(_opt_state(opt, model), stock_s)

    stats = paddlefix.nan_guard_stats()
    assert (stats.steps, stats.skipped, stats.last_skipped_step) == (3, 1, 2)
    assert stats.last_skipped_params == (model[0].weight.name,)


def test_nan_gradient_and_param_groups() -> None:
    """NaN (not only Inf) is caught, across parameter groups; every culprit is named."""
    _guard()
    model = _model()
    opt = paddle.optimizer.Adam(
        learning_rate=0.01,
        parameters=[{"params": model[0].parameters()}, {"params": model[2].parameters(), "learning_rate": 0.1}],
    )
    before = _weights(model)
    (model(paddle.ones([1, 4])).sum() * paddle.to_tensor(float("nan"))).backward()
    with pytest.warns(PaddlefixWarning) as rec:
        opt.step()
    assert "4 of 4 parameters" in str(rec[0].message)
    assert _same(_weights(model), before)
    assert len(paddlefix.nan_guard_stats().last_skipped_params) == 4


def test_minimize_is_guarded() -> None:
    _guard()
    model = _model()
    opt = paddle.optimizer.SGD(learning_rate=0.1, parameters=model.parameters())
    before = _weights(model)
    loss = _loss(model, _batch(-np.inf, seed=4))
    loss.backward()
    with pytest.warns(PaddlefixWarning, match=r"SGD\.minimize\(\)"):
        ops, params_grads = opt.minimize(loss)
    assert ops == [] and len(params_grads) == 4
    assert _same(_weights(model), before)
    opt.clear_grad()
    loss = _loss(model, _batch(seed=5))
    loss.backward()
    opt.minimize(loss)
    assert not _same(_weights(model), before)


def test_raise_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PADDLEFIX_NAN_GUARD", "raise")
    _guard()
    model = _model()
    opt = paddle.optimizer.AdamW(learning_rate=0.01, parameters=model.parameters())
    before = _weights(model)
    _loss(model, _batch(np.inf)).backward()
    with pytest.raises(FloatingPointError, match=r"step 1 of AdamW\.step\(\).*" + model[0].weight.name):
        opt.step()
    assert _same(_weights(model), before)
    assert paddlefix.nan_guard_stats().skipped == 1


def test_bad_env_value_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PADDLEFIX_NAN_GUARD", "ignore")
    with pytest.raises(ConfigError, match=r"PADDLEFIX_NAN_GUARD.*'ignore'.*skip, raise"):
        paddlefix.apply("nan_guard")


def test_grad_scaler_disabled_path_is_guarded() -> None:
    """``paddle.amp.GradScaler`` on CPU is disabled by Paddle and calls ``optimizer.step()`` /
    ``minimize()`` directly: the guard is what protects the weights there."""
    _guard()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        scaler = paddle.amp.GradScaler(init_loss_scaling=1024)
    model = _model()
    opt = paddle.optimizer.Momentum(learning_rate=0.1, parameters=model.parameters())
    before = _weights(model)
    scaler.scale(_loss(model, _batch(np.inf))).backward()
    with pytest.warns(PaddlefixWarning, match="Momentum.step"):
        scaler.step(opt)
    scaler.update()
    opt.clear_grad()
    scaled = scaler.scale(_loss(model, _batch(np.nan)))
    scaled.backward()
    with pytest.warns(PaddlefixWarning, match="Momentum.minimize"):
        scaler.minimize(opt, scaled)
    assert _same(_weights(model), before)
    assert paddlefix.nan_guard_stats().skipped == 2


def test_enabled_grad_scaler_contract_no_second_check() -> None:
    """An enabled GradScaler (GPU; not available here) runs the fused ``check_finite_and_unscale``
    kernel, hands ``found_inf`` to the optimizer and calls ``step()``; stock then skips the
    update. This replays that exact call sequence with the real kernel on CPU: nan_guard
    leaves the decision to the scaler (no warning), counts it, and weights stay put."""
    from paddle import _legacy_C_ops

    _guard()
    model = _model()
    opt = paddle.optimizer.Adam(learning_rate=0.01, parameters=model.parameters())
    before = _weights(model)
    _loss(model, _batch(np.inf)).backward()
    grads = [p.grad for p in model.parameters()]
    found_inf = paddle.to_tensor(np.array([False]))
    _legacy_C_ops.check_finite_and_unscale(grads, paddle.to_tensor([1024.0]), grads, found_inf)
    assert bool(found_inf)
    opt._set_auxiliary_var("found_inf", found_inf)  # what GradScaler.step does
    with warnings.catch_warnings():
        warnings.simplefilter("error", PaddlefixWarning)
        opt.step()
    assert _same(_weights(model), before)
    stats = paddlefix.nan_guard_stats()
    assert (stats.skipped, stats.scaler_skipped) == (0, 1)
    opt.clear_grad()
    # found_inf is now a plain bool: a later direct step is checked by the guard again
    _loss(model, _batch(np.inf)).backward()
    with pytest.warns(PaddlefixWarning):
        opt.step()
    assert _same(_weights(model), before)


def test_overflowing_sum_is_not_a_false_alarm() -> None:
    """Finite gradients whose sum overflows float32 still update (exact re-check)."""
    _guard()
    p = paddle.create_parameter([4], "float32", default_initializer=paddle.nn.initializer.Constant(0.0))
    opt = paddle.optimizer.SGD(learning_rate=1e-38, parameters=[p])
    (p * paddle.to_tensor([3e38, 3e38, 3e38, 1.0])).sum().backward()
    with np.errstate(over="ignore"):
        assert np.isinf(p.grad.numpy().sum(dtype=np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PaddlefixWarning)
        opt.step()
    assert np.isfinite(p.numpy()).all() and (p.numpy()[:3] < 0).all()


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_complex_gradient_nan_in_imaginary_part_is_caught(dtype: str) -> None:
    """The fused check must see a NaN/Inf hidden in the imaginary part (a cast to float32 would
    drop it). Paddle's initializers cannot build complex parameters, so the check is called
    directly on real complex tensors."""
    finite = paddle.to_tensor(np.array([1 + 2j, 3 - 1j], dtype=dtype))
    for bad_value in (complex(1.0, float("nan")), complex(1.0, float("inf"))):
        bad = paddle.to_tensor(np.array([bad_value, 1 + 0j], dtype=dtype))
        assert nan_guard._nonfinite(paddle, [("a", finite), ("b", bad)]) == ["b"]
    assert nan_guard._nonfinite(paddle, [("a", finite)]) == []


def test_stats_reset_and_revert() -> None:
    _guard()
    model = _model()
    opt = paddle.optimizer.SGD(learning_rate=0.1, parameters=model.parameters())
    _loss(model, _batch(np.inf)).backward()
    with pytest.warns(PaddlefixWarning):
        opt.step()
    snap = paddlefix.nan_guard_stats(reset=True)
    assert isinstance(snap, nan_guard.NanGuardStats) and snap.skipped == 1
    assert paddlefix.nan_guard_stats() == nan_guard.NanGuardStats(0, 0, None, (), 0)
    with pytest.raises(ValueError, match="reset"):
        paddlefix.nan_guard_stats(reset="yes")  # type: ignore[arg-type]
    paddlefix.revert("nan_guard")
    assert not paddlefix.is_patched(paddle.optimizer.Optimizer, "step")
    assert "step" not in vars(paddle.optimizer.SGD)
    opt.step()  # stock again: the inf gradient lands in the weights
    assert not np.isfinite(model[0].weight.numpy()).all()


def test_every_step_override_is_covered() -> None:
    """Each class in paddle.optimizer that defines its own step / minimize is wrapped (not LBFGS)."""
    st = paddlefix.apply("nan_guard")["nan_guard"]
    import inspect

    expected = set()
    for _, cls in inspect.getmembers(paddle.optimizer, inspect.isclass):
        if issubclass(cls, paddle.optimizer.Optimizer) and cls.__name__ != "LBFGS":
            for attr in ("step", "minimize"):
                if attr in vars(cls):
                    expected.add(f"{cls.__module__}.{cls.__qualname__}.{attr}")
    assert {"paddle.optimizer.adam.Adam.step", "paddle.optimizer.optimizer.Optimizer.step"} <= expected
    assert expected <= set(st.targets)
    assert inspect.signature(paddle.optimizer.Adam.step) == inspect.signature(paddlefix.get_original(paddle.optimizer.Adam, "step"))


def test_probe_confirms_stock_behaviour() -> None:
    finding = nan_guard.problem_present()
    assert finding.present is True and "NaN" in finding.detail


def test_opt_in_and_env_selection() -> None:
    """Not in the default set; PADDLEFIX_PATCHES selects it in a fresh process."""
    assert paddlefix.apply()["nan_guard"].state != "applied"
    code = (
        "import paddlefix, paddle; s = paddlefix.apply()['nan_guard']; print(s.state);"
        "print(paddlefix.is_patched(paddle.optimizer.Optimizer, 'step'))"
    )
    proc = run_python(code, env={"PADDLEFIX_PATCHES": "default,nan_guard"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-2:] == ["applied", "True"]
