"""torch_defaults (opt-in) against torch's own layers, optimizers and functions; exact revert."""

from __future__ import annotations

import math
import warnings

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
import torch

import paddlefix
from paddlefix.patches import torch_defaults as TD

TOL = 0.02
TN_NATIVE = "a" in paddlefix.patches._util.signature(paddle.nn.initializer.TruncatedNormal.__init__).parameters


@pytest.fixture
def patched(paddlefix_clean):
    st = paddlefix.apply("torch_defaults")["torch_defaults"]
    assert st.state == "applied", st.reason
    paddle.seed(3)
    torch.manual_seed(3)
    yield st


@pytest.fixture
def stock(paddlefix_clean):
    paddle.seed(3)
    torch.manual_seed(3)


def _np(t) -> np.ndarray:
    return t.detach().numpy() if isinstance(t, torch.Tensor) else t.numpy()


def _uniform_ok(values: np.ndarray, bound: float) -> bool:
    return (np.abs(values).max() <= bound * (1 + 1e-6) and np.abs(values).max() >= 0.99 * bound
            and abs(values.std() / (bound / math.sqrt(3)) - 1) < TOL)


# -- status -----------------------------------------------------------------------------------


def test_status_names_items_and_targets(patched):
    reason = patched.reason
    for item in ("init", "batch_norm", "clear_grad", "avg_pool", "align_corners"):
        assert f"{item} (" in reason, item
    if TN_NATIVE:
        assert "as torch already: truncated_normal" in reason
    else:
        assert "truncated_normal (TruncatedNormal(std=s) cuts at ±2s" in reason
    targets = set(patched.targets)
    assert "paddle.nn.layer.common.Linear.__init__" in targets
    assert "paddle.nn.layer.norm._BatchNormBase.forward" in targets
    assert "paddle.optimizer.optimizer.Optimizer.clear_grad" in targets
    assert "paddle.nn.functional.avg_pool2d" in targets and "paddle.nn.layer.pooling.AvgPool3D.__init__" in targets
    assert "paddle.nn.functional.grid_sample" in targets and "paddle.nn.functional.affine_grid" in targets
    assert any("TruncatedNormal" in t for t in targets) is (not TN_NATIVE)
    assert TD.problem_present().present is False  # the probe sees torch's behaviour now


def test_opt_in_and_default_set_unchanged(paddlefix_clean):
    st = paddlefix.apply()["torch_defaults"]
    assert st.state == "skipped" and not st.targets
    assert paddlefix.specs()[-1].name == "torch_defaults" and paddlefix.specs()[-1].default is False


# -- (a) init ---------------------------------------------------------------------------------


def test_init_layers_constructed_get_torch_init(patched):
    lin, tlin = paddle.nn.Linear(64, 16384), torch.nn.Linear(64, 16384)
    assert _uniform_ok(_np(lin.weight), 1 / 8) and _uniform_ok(_np(tlin.weight), 1 / 8)
    assert _uniform_ok(_np(lin.bias), 1 / 8) and _uniform_ok(_np(tlin.bias), 1 / 8)
    assert lin._weight_attr is None and lin._bias_attr is None  # the layer keeps the user's None
    conv = paddle.nn.Conv2DTranspose(16, 4096, 3, groups=2)
    tconv = torch.nn.ConvTranspose2d(16, 4096, 3, groups=2)
    bound = 1 / math.sqrt(torch.nn.init._calculate_fan_in_and_fan_out(tconv.weight)[0])
    assert _uniform_ok(_np(conv.weight), bound) and _uniform_ok(_np(conv.bias), bound)
    assert _uniform_ok(_np(tconv.weight), bound) and _uniform_ok(_np(tconv.bias), bound)
    emb = paddle.nn.Embedding(4096, 64, padding_idx=0)
    assert abs(_np(emb.weight)[1:].std() - 1) < TOL and not _np(emb.weight)[0].any()
    mha, tmha = paddle.nn.MultiHeadAttention(512, 8), torch.nn.MultiheadAttention(512, 8)
    bound = math.sqrt(6 / (4 * 512))
    assert _uniform_ok(_np(mha.q_proj.weight), bound) and _uniform_ok(_np(tmha.in_proj_weight), bound)
    assert not _np(mha.k_proj.bias).any() and not _np(mha.out_proj.bias).any()
    assert _uniform_ok(_np(mha.out_proj.weight), 1 / math.sqrt(512))
    assert mha.q_proj._weight_attr is None and mha.out_proj._bias_attr is None
    mha = paddle.nn.MultiHeadAttention(256, 4, kdim=64, vdim=128)  # torch: separate q/k/v_proj_weight
    tmha = torch.nn.MultiheadAttention(256, 4, kdim=64, vdim=128)
    for proj, fan in (("q_proj", 256), ("k_proj", 64), ("v_proj", 128)):
        b = math.sqrt(6 / (fan + 256))
        assert _uniform_ok(_np(getattr(mha, proj).weight), b) and _uniform_ok(_np(getattr(tmha, f"{proj}_weight")), b)
    assert _uniform_ok(_np(mha.out_proj.weight), 1 / 16) and not _np(mha.v_proj.bias).any()


def test_init_given_attributes_win(patched):
    attr = paddle.ParamAttr(initializer=paddle.nn.initializer.Constant(0.5))
    lin = paddle.nn.Linear(8, 1024, weight_attr=attr)
    np.testing.assert_array_equal(_np(lin.weight), np.full([8, 1024], 0.5, "float32"))
    assert _uniform_ok(_np(lin.bias), 1 / math.sqrt(8))  # bias not given: torch's
    assert paddle.nn.Linear(4, 4, bias_attr=False).bias is None
    conv = paddle.nn.Conv2D(4, 8, 3, bias_attr=paddle.ParamAttr(initializer=paddle.nn.initializer.Constant(2.0)))
    np.testing.assert_array_equal(_np(conv.bias), np.full([8], 2.0, "float32"))
    mha = paddle.nn.MultiHeadAttention(16, 2, weight_attr=attr)
    np.testing.assert_array_equal(_np(mha.q_proj.weight), np.full([16, 16], 0.5, "float32"))
    assert not _np(mha.q_proj.bias).any()
    paddle.nn.initializer.set_global_initializer(paddle.nn.initializer.Constant(0.25), paddle.nn.initializer.Constant(0.75))
    try:
        lin = paddle.nn.Linear(4, 4)
        np.testing.assert_array_equal(_np(lin.weight), np.full([4, 4], 0.25, "float32"))
        np.testing.assert_array_equal(_np(lin.bias), np.full([4], 0.75, "float32"))
    finally:
        paddle.nn.initializer.set_global_initializer(None)


def test_init_in_static_graph_mode(patched):
    paddle.enable_static()
    try:
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            x = paddle.static.data("x", [2, 64], "float32")
            lin = paddle.nn.Linear(64, 4096)
            out = lin(x)
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)
        scope = paddle.static.global_scope()
        w = np.array(scope.find_var(lin.weight.name).get_tensor())
        b = np.array(scope.find_var(lin.bias.name).get_tensor())
        exe.run(main, feed={"x": np.ones([2, 64], "float32")}, fetch_list=[out])
    finally:
        paddle.disable_static()
    assert _uniform_ok(w, 1 / 8) and np.abs(b).max() <= 1 / 8 and np.abs(b).max() > 0


# -- (b) BatchNorm ------------------------------------------------------------------------------


def _batch_norm_run(shape, steps=5):
    rng = np.random.default_rng(0)
    channels = shape[1]
    pd = (paddle.nn.BatchNorm1D if len(shape) == 2 else paddle.nn.BatchNorm2D)(channels, momentum=0.9)
    pt = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(channels, momentum=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(steps):
            x = (rng.standard_normal(shape) * 2 + 1).astype("float32")
            out = pd(paddle.to_tensor(x))
            tout = pt(torch.from_numpy(x))
    return pd, pt, out, tout


@pytest.mark.parametrize("shape", [(8, 4), (8, 4, 3, 3)], ids=["1d-batch8", "2d"])
def test_batch_norm_running_stats_equal_torch(shape, paddlefix_clean):
    pd, pt, out, tout = _batch_norm_run(shape)
    stock_gap = np.abs(_np(pd._variance) - _np(pt.running_var)).max()
    assert stock_gap > 1e-4  # Paddle's biased update
    paddlefix.apply("torch_defaults")
    pd, pt, out, tout = _batch_norm_run(shape)
    np.testing.assert_allclose(_np(pd._mean), _np(pt.running_mean), atol=1e-6, rtol=0)
    np.testing.assert_allclose(_np(pd._variance), _np(pt.running_var), atol=1e-6, rtol=0)
    np.testing.assert_allclose(_np(out), _np(tout), atol=1e-5)  # the forward itself unchanged
    pd.eval()
    x = paddle.ones([2, *shape[1:]])
    before = _np(pd._variance).copy()
    pd(x)
    np.testing.assert_array_equal(before, _np(pd._variance))  # eval: nothing updated


def test_batch_norm_variance_replaced_between_steps_still_equals_torch(paddlefix_clean):
    """The patch writes through a NumPy view of the variance's memory: new memory must be followed."""
    paddlefix.apply("torch_defaults")
    paddle.seed(0)
    pd, pt = paddle.nn.BatchNorm1D(4), torch.nn.BatchNorm1d(4)
    rng = np.random.default_rng(1)
    for step in range(4):
        if step == 2:  # new values (and, for Paddle, possibly new memory) from outside
            fresh = np.array([0.5, 2.0, 1.5, 3.0], "float32")
            pd._variance.set_value(fresh)
            pd._variance.get_tensor().set(fresh.copy(), paddle.CPUPlace())  # surely new memory
            pt.running_var.copy_(torch.from_numpy(fresh))
        x = rng.standard_normal((8, 4)).astype("float32")
        pd(paddle.to_tensor(x))
        pt(torch.from_numpy(x))
    np.testing.assert_allclose(_np(pd._variance), _np(pt.running_var), atol=1e-6, rtol=0)


def test_batch_norm_forward_that_raises_leaves_the_variance(paddlefix_clean):
    paddlefix.apply("torch_defaults")
    pd = paddle.nn.BatchNorm2D(3)
    pd(paddle.randn([4, 3, 2, 2]))
    before = _np(pd._variance).copy()
    with pytest.raises(Exception):
        pd(paddle.randn([4, 5, 2, 2]))  # wrong channel count: Paddle's kernel refuses
    np.testing.assert_array_equal(_np(pd._variance), before)
    assert not [k for k in vars(pd) if "paddlefix" in k]  # nothing added to the layer


# -- (c) clear_grad -----------------------------------------------------------------------------

OPTIMIZERS = {
    "AdamW": (lambda ps: paddle.optimizer.AdamW(learning_rate=0.1, parameters=ps, weight_decay=0.01),
              lambda ps: torch.optim.AdamW(ps, lr=0.1, weight_decay=0.01)),
    "Adam": (lambda ps: paddle.optimizer.Adam(learning_rate=0.1, parameters=ps, weight_decay=0.01),
             lambda ps: torch.optim.Adam(ps, lr=0.1, weight_decay=0.01)),
    "SGD-momentum": (lambda ps: paddle.optimizer.Momentum(learning_rate=0.1, momentum=0.9, parameters=ps, weight_decay=0.01),
                     lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01)),
}


def _three_steps(name: str):
    """Parameter ``u`` gets a gradient in step 1 only: torch skips it afterwards."""
    w0 = np.array([0.5, -1.0, 2.0], "float32")
    u0 = np.array([1.0, 3.0, -2.0], "float32")
    x = np.array([1.0, 2.0, 3.0], "float32")
    make_pd, make_pt = OPTIMIZERS[name]
    w = paddle.create_parameter([3], "float32", default_initializer=paddle.nn.initializer.Assign(w0))
    u = paddle.create_parameter([3], "float32", default_initializer=paddle.nn.initializer.Assign(u0))
    tw, tu = torch.tensor(w0, requires_grad=True), torch.tensor(u0, requires_grad=True)
    opt, topt = make_pd([w, u]), make_pt([tw, tu])
    px, tx = paddle.to_tensor(x), torch.from_numpy(x)
    for step in range(3):
        loss = (w * w * px).sum() + ((u * px).sum() if step == 0 else 0.0)
        loss.backward()
        opt.step()
        opt.clear_grad()
        tloss = (tw * tw * tx).sum() + ((tu * tx).sum() if step == 0 else 0.0)
        tloss.backward()
        topt.step()
        topt.zero_grad()
    return (_np(w), _np(u)), (_np(tw), _np(tu)), u


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizers_skip_unused_parameter_as_torch(name, paddlefix_clean):
    (w, u), (tw, tu), _ = _three_steps(name)
    np.testing.assert_allclose(w, tw, atol=1e-5)
    assert np.abs(u - tu).max() > 1e-4  # stock: zero gradients still decay / carry momentum
    paddlefix.apply("torch_defaults")
    (w, u), (tw, tu), param = _three_steps(name)
    np.testing.assert_allclose(w, tw, atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(u, tu, atol=1e-6, rtol=1e-6)
    assert param.grad is None


def test_clear_grad_with_argument_keeps_it(patched):
    p = paddle.create_parameter([2], "float32")
    opt = paddle.optimizer.SGD(parameters=[p])
    (p * 2).sum().backward()
    opt.clear_grad(set_to_zero=True)
    np.testing.assert_array_equal(_np(p.grad), np.zeros(2, "float32"))
    (p * 2).sum().backward()
    opt.clear_grad()
    assert p.grad is None


# -- (d) avg_pool, (e) align_corners ------------------------------------------------------------


def _pool_input(ndim: int) -> np.ndarray:
    return np.random.default_rng(1).standard_normal([2, 3] + [5] * ndim).astype("float32")


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_avg_pool_counts_padding_as_torch(ndim, paddlefix_clean):
    x = _pool_input(ndim)
    layer_pd = lambda: getattr(paddle.nn, f"AvgPool{ndim}D")(3, stride=2, padding=1)  # noqa: E731
    fn_pd = lambda: getattr(F, f"avg_pool{ndim}d")(paddle.to_tensor(x), 3, 2, 1)  # noqa: E731
    ref_layer = getattr(torch.nn, f"AvgPool{ndim}d")(3, stride=2, padding=1)(torch.from_numpy(x))
    ref_fn = getattr(torch.nn.functional, f"avg_pool{ndim}d")(torch.from_numpy(x), 3, 2, 1)
    stock_layer, stock_fn = _np(layer_pd()(paddle.to_tensor(x))), _np(fn_pd())
    assert np.abs(stock_layer - _np(ref_layer)).max() > 1e-3 and np.abs(stock_fn - _np(ref_fn)).max() > 1e-3
    paddlefix.apply("torch_defaults")
    np.testing.assert_allclose(_np(layer_pd()(paddle.to_tensor(x))), _np(ref_layer), atol=1e-6)
    np.testing.assert_allclose(_np(fn_pd()), _np(ref_fn), atol=1e-6)
    # given arguments keep their meaning
    given = getattr(paddle.nn, f"AvgPool{ndim}D")(3, stride=2, padding=1, exclusive=True)(paddle.to_tensor(x))
    np.testing.assert_array_equal(_np(given), stock_layer)
    given = getattr(F, f"avg_pool{ndim}d")(paddle.to_tensor(x), 3, 2, 1, exclusive=True)
    np.testing.assert_array_equal(_np(given), stock_fn)


@pytest.mark.parametrize("mode, padding_mode", [("bilinear", "zeros"), ("nearest", "border"), ("bilinear", "reflection")])
def test_grid_sample_and_affine_grid_default_align_corners_false(mode, padding_mode, paddlefix_clean):
    rng = np.random.default_rng(2)
    x = rng.standard_normal([2, 3, 6, 7]).astype("float32")
    theta = (np.eye(2, 3)[None] + 0.2 * rng.standard_normal([2, 2, 3])).astype("float32")
    tgrid = torch.nn.functional.affine_grid(torch.from_numpy(theta), [2, 3, 5, 4])
    tout = torch.nn.functional.grid_sample(torch.from_numpy(x), tgrid, mode=mode, padding_mode=padding_mode)

    def run():
        grid = F.affine_grid(paddle.to_tensor(theta), [2, 3, 5, 4])
        return _np(grid), _np(F.grid_sample(paddle.to_tensor(x), grid, mode=mode, padding_mode=padding_mode))

    stock_grid, stock_out = run()
    assert np.abs(stock_grid - _np(tgrid)).max() > 1e-2
    paddlefix.apply("torch_defaults")
    grid, out = run()
    np.testing.assert_allclose(grid, _np(tgrid), atol=1e-6)
    np.testing.assert_allclose(out, _np(tout), atol=1e-5)
    kept = F.affine_grid(paddle.to_tensor(theta), [2, 3, 5, 4], align_corners=True)
    np.testing.assert_array_equal(_np(kept), stock_grid)


# -- (f) TruncatedNormal ------------------------------------------------------------------------


def test_truncated_normal_absolute_bounds(patched):
    t = paddle.zeros([200000])
    paddle.nn.initializer.TruncatedNormal(mean=0.0, std=0.5)(t)
    ref = torch.nn.init.trunc_normal_(torch.zeros(200000), mean=0.0, std=0.5)
    v, r = _np(t), _np(ref)
    assert np.abs(v).max() <= 2.0 and np.abs(v).max() > 1.5
    assert abs(v.std() / r.std() - 1) < TOL
    assert abs((np.abs(v) > 1).mean() - (np.abs(r) > 1).mean()) < 0.005  # ~4.4% beyond 2·std
    t = paddle.zeros([100000])
    paddle.nn.initializer.TruncatedNormal(mean=1.0, std=1.0, a=0.5, b=1.5)(t)
    ref = torch.nn.init.trunc_normal_(torch.zeros(100000), mean=1.0, std=1.0, a=0.5, b=1.5)
    assert _np(t).min() >= 0.5 and _np(t).max() <= 1.5
    assert abs(_np(t).std() / _np(ref).std() - 1) < TOL


# -- revert -------------------------------------------------------------------------------------


def _behaviour() -> list[np.ndarray]:
    """Paddle's outputs for every item, from a fixed seed."""
    paddle.seed(21)
    out = [_np(p) for p in paddle.nn.Linear(6, 5).parameters()]
    out += [_np(p) for p in paddle.nn.Conv2DTranspose(2, 4, 3).parameters()]
    out += [_np(p) for p in paddle.nn.MultiHeadAttention(8, 2).parameters()]
    out.append(_np(paddle.nn.Embedding(10, 3, padding_idx=1).weight))
    pd, _, y, _ = _batch_norm_run((8, 4))
    out += [_np(pd._variance), _np(y)]
    x = paddle.to_tensor(_pool_input(2))
    out += [_np(paddle.nn.AvgPool2D(3, 2, 1)(x)), _np(F.avg_pool2d(x, 3, 2, 1))]
    theta = paddle.to_tensor(np.eye(2, 3, dtype="float32")[None])
    grid = F.affine_grid(theta, [1, 3, 4, 4])
    out += [_np(grid), _np(F.grid_sample(x[:1, :, :4, :4], grid))]
    (w, u), _, param = _three_steps("AdamW")
    out += [w, u, np.array([]) if param.grad is None else _np(param.grad)]
    t = paddle.zeros([1000])
    paddle.nn.initializer.TruncatedNormal(std=0.5)(t)
    out.append(_np(t))
    return out


def test_revert_restores_paddle_behaviour_bit_for_bit(paddlefix_clean):
    before = _behaviour()
    paddlefix.apply("torch_defaults", force="torch_defaults")
    during = _behaviour()
    assert sum(not np.array_equal(a, b) for a, b in zip(before, during)) >= 10
    paddlefix.revert("torch_defaults")
    after = _behaviour()
    assert len(before) == len(after)
    for i, (a, b) in enumerate(zip(before, after)):
        np.testing.assert_array_equal(a, b, err_msg=f"item {i}")
    assert paddlefix.status()["torch_defaults"].targets == ()
