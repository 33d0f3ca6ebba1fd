"""Differences from PyTorch that paddlefix does not patch (no safe default exists), each measured
against torch / Hugging Face, with the one-line fix a porter should make (README, "PyTorch
defaults that differ"). Every test shows the difference and that the fix removes it."""

from __future__ import annotations

import math

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
import torch

import paddlefix  # noqa: F401


@pytest.fixture(autouse=True)
def _clean(paddlefix_clean):
    paddle.seed(0)
    torch.manual_seed(0)


def _np(t) -> np.ndarray:
    return t.detach().numpy() if isinstance(t, torch.Tensor) else t.numpy()


def test_batch_norm_momentum_is_inverted():
    x = np.random.default_rng(0).standard_normal([8, 4]).astype("float32") + 3
    pt = torch.nn.BatchNorm1d(4, momentum=0.1)
    pt(torch.from_numpy(x))
    literal = paddle.nn.BatchNorm1D(4, momentum=0.1)  # torch's number ported as is: wrong
    literal(paddle.to_tensor(x))
    fixed = paddle.nn.BatchNorm1D(4, momentum=1 - 0.1)  # the fix
    fixed(paddle.to_tensor(x))
    gap = np.abs(_np(literal._mean) - _np(pt.running_mean)).max()
    assert gap > 2.0, gap  # 0.9 vs 0.1 of a batch mean of ~3
    np.testing.assert_allclose(_np(fixed._mean), _np(pt.running_mean), atol=1e-6)


def test_linear_weight_layout_is_transposed():
    pt = torch.nn.Linear(6, 6)
    pd = paddle.nn.Linear(6, 6)
    x = np.random.default_rng(1).standard_normal([3, 6]).astype("float32")
    w = _np(pt.weight)
    pd.bias.set_value(_np(pt.bias))
    pd.weight.set_value(w)  # as is: square, so no error, silently wrong
    gap = np.abs(_np(pd(paddle.to_tensor(x))) - _np(pt(torch.from_numpy(x)))).max()
    assert gap > 0.1, gap
    pd.weight.set_value(w.T)  # the fix
    np.testing.assert_allclose(_np(pd(paddle.to_tensor(x))), _np(pt(torch.from_numpy(x))), atol=1e-6)
    with pytest.raises(Exception):  # non-square: a shape error at least
        paddle.nn.Linear(6, 4).weight.set_value(_np(torch.nn.Linear(6, 4).weight))


def _mha_pair(d=8, heads=2):
    pd = paddle.nn.MultiHeadAttention(d, heads)
    pt = torch.nn.MultiheadAttention(d, heads, batch_first=True)
    with torch.no_grad():
        pt.in_proj_weight.copy_(torch.from_numpy(np.concatenate(
            [_np(getattr(pd, p).weight).T for p in ("q_proj", "k_proj", "v_proj")])))
        pt.in_proj_bias.copy_(torch.from_numpy(np.concatenate(
            [_np(getattr(pd, p).bias) for p in ("q_proj", "k_proj", "v_proj")])))
        pt.out_proj.weight.copy_(torch.from_numpy(_np(pd.out_proj.weight).T))
        pt.out_proj.bias.copy_(torch.from_numpy(_np(pd.out_proj.bias)))
    pd.eval()
    pt.eval()
    return pd, pt


def test_multi_head_attention_bool_mask_meaning_is_opposite():
    pd, pt = _mha_pair()
    x = np.random.default_rng(2).standard_normal([2, 5, 8]).astype("float32")
    mask = np.triu(np.ones([5, 5], dtype=bool), k=1)  # torch: True = masked (causal)
    ref = _np(pt(torch.from_numpy(x), torch.from_numpy(x), torch.from_numpy(x),
                 attn_mask=torch.from_numpy(mask), need_weights=False)[0])
    literal = _np(pd(paddle.to_tensor(x), attn_mask=paddle.to_tensor(mask)))
    assert np.abs(literal - ref).max() > 0.05
    fixed = _np(pd(paddle.to_tensor(x), attn_mask=paddle.to_tensor(~mask)))  # the fix: invert
    np.testing.assert_allclose(fixed, ref, atol=1e-5)


def test_split_counts_chunks_not_sizes():
    x = np.arange(7, dtype="float32")
    ref = [t.numpy() for t in torch.split(torch.from_numpy(x), 2)]
    with pytest.raises(Exception):
        paddle.split(paddle.to_tensor(x), 2)  # 7 is not divisible into 2 chunks: error
    assert [list(t.shape) for t in paddle.split(paddle.to_tensor(x[:6]), 2)] == [[3], [3]]  # torch: [2]*3
    s, n = 2, 7
    fixed = paddle.split(paddle.to_tensor(x), [s] * (n // s) + ([n % s] if n % s else []))  # the fix
    assert [t.numpy().tolist() for t in fixed] == [r.tolist() for r in ref]


def test_pad_full_length_starts_at_first_axis():
    x = np.arange(6, dtype="float32").reshape(1, 2, 3)
    tpad = [1, 0, 0, 0, 0, 0]  # torch: last axis first
    ref = _np(torch.nn.functional.pad(torch.from_numpy(x), tpad))
    literal = F.pad(paddle.to_tensor(x), tpad)
    assert list(literal.shape) == [2, 2, 3] and list(ref.shape) == [1, 2, 4]
    fixed = F.pad(paddle.to_tensor(x), [p for i in range(len(tpad) - 2, -2, -2) for p in tpad[i:i + 2]])
    np.testing.assert_array_equal(_np(fixed), ref)
    # the short NCHW form (2 values per spatial axis) already means what torch means
    x4 = np.arange(24, dtype="float32").reshape(1, 2, 3, 4)
    np.testing.assert_array_equal(_np(F.pad(paddle.to_tensor(x4), [1, 0, 2, 0])),
                                  _np(torch.nn.functional.pad(torch.from_numpy(x4), [1, 0, 2, 0])))


def _rmsprop(paddle_kwargs, grad_scale):
    w0 = np.array([1.0, -1.0, 0.5], "float32")
    g = np.array([1.0, -2.0, 3.0], "float32") * grad_scale
    w = paddle.create_parameter([3], "float32", default_initializer=paddle.nn.initializer.Assign(w0))
    tw = torch.tensor(w0, requires_grad=True)
    opt = paddle.optimizer.RMSProp(learning_rate=0.01, parameters=[w], **paddle_kwargs)
    topt = torch.optim.RMSprop([tw], lr=0.01, alpha=0.99, eps=1e-8)
    for _ in range(3):
        (w * paddle.to_tensor(g)).sum().backward()
        opt.step()
        opt.clear_grad()
        (tw * torch.from_numpy(g)).sum().backward()
        topt.step()
        topt.zero_grad()
    return (_np(w) - w0), (_np(tw) - w0)


def test_rmsprop_epsilon_inside_the_square_root():
    # same rho / epsilon numbers as torch's defaults: epsilon sits inside sqrt in Paddle
    step, ref = _rmsprop({"rho": 0.99, "epsilon": 1e-8}, grad_scale=1e-5)
    ratio = np.abs(step / ref)
    assert ratio.max() < 0.5, ratio  # small gradients: Paddle's steps are smaller
    step, ref = _rmsprop({"rho": 0.99, "epsilon": 1e-16}, grad_scale=1e-5)  # fix: epsilon=eps**2
    np.testing.assert_allclose(step, ref, rtol=1e-2)  # approximate: exact where sqrt(v) >> eps
    step, ref = _rmsprop({"rho": 0.99, "epsilon": 1e-16}, grad_scale=1.0)
    np.testing.assert_allclose(step, ref, rtol=1e-5)


def test_smooth_l1_loss_delta_is_huber_delta():
    a = np.array([0.2, 1.5, -3.0, 0.7], "float32")
    b = np.zeros(4, "float32")
    beta = 2.0
    ref = float(torch.nn.functional.smooth_l1_loss(torch.from_numpy(a), torch.from_numpy(b), beta=beta))
    literal = float(F.smooth_l1_loss(paddle.to_tensor(a), paddle.to_tensor(b), delta=beta))
    assert math.isclose(literal, ref * beta, rel_tol=1e-6)  # Paddle's is torch's huber_loss
    fixed = float(F.smooth_l1_loss(paddle.to_tensor(a), paddle.to_tensor(b), delta=beta)) / beta  # the fix
    assert math.isclose(fixed, ref, rel_tol=1e-6)


def test_lr_scheduler_does_nothing_with_a_float_learning_rate():
    p = paddle.create_parameter([1], "float32")
    sched = paddle.optimizer.lr.StepDecay(0.1, step_size=1, gamma=0.5)
    opt = paddle.optimizer.SGD(learning_rate=0.1, parameters=[p])  # float: the scheduler is not attached
    tp = torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([tp], lr=0.1)
    tsched = torch.optim.lr_scheduler.StepLR(topt, step_size=1, gamma=0.5)
    for _ in range(2):
        sched.step()
        topt.step()
        tsched.step()
    assert opt.get_lr() == 0.1 and math.isclose(topt.param_groups[0]["lr"], 0.025)
    sched = paddle.optimizer.lr.StepDecay(0.1, step_size=1, gamma=0.5)
    opt = paddle.optimizer.SGD(learning_rate=sched, parameters=[p])  # the fix
    for _ in range(2):
        sched.step()
    assert math.isclose(opt.get_lr(), 0.025)


def test_paddlenlp_cosine_decay_num_cycles_default_vs_hugging_face():
    from paddlenlp.transformers import CosineDecayWithWarmup
    from transformers import get_cosine_schedule_with_warmup

    total, warmup = 100, 10
    topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    hf = get_cosine_schedule_with_warmup(topt, warmup, total)  # num_cycles=0.5
    ref = []
    for _ in range(total + 1):
        ref.append(topt.param_groups[0]["lr"])
        topt.step()
        hf.step()

    def lrs(sched):
        out = []
        for _ in range(total + 1):
            out.append(sched.get_lr())
            sched.step()
        return out

    literal = lrs(CosineDecayWithWarmup(1.0, total, warmup))  # num_cycles=1: a full wave
    assert abs(literal[55] - 0.0) < 1e-9 and abs(literal[100] - 1.0) < 1e-9  # back to the peak at the end
    assert abs(ref[55] - 0.5) < 1e-9 and abs(ref[100]) < 1e-9
    fixed = lrs(CosineDecayWithWarmup(1.0, total, warmup, with_hard_restarts=True, num_cycles=1.0))  # the fix
    np.testing.assert_allclose(fixed, ref, atol=1e-12)
