"""paddlefix.torch_init(layer) against torch's own layers (reset_parameters) on large layers."""

from __future__ import annotations

import math

import numpy as np
import paddle
import pytest
import torch

import paddlefix
from paddlefix import InitRecord, torch_init

TOL = 0.02  # statistics within 2% of torch's formula


def _np(t) -> np.ndarray:
    return t.detach().numpy() if isinstance(t, torch.Tensor) else t.numpy()


def _check_uniform(pd: np.ndarray, pt: np.ndarray, bound: float, what: str) -> None:
    """Both libraries' samples inside [-bound, bound], reaching it, std bound/√3 within 2%."""
    std = bound / math.sqrt(3.0)
    for name, values in (("paddle", pd), ("torch", pt)):
        assert np.abs(values).max() <= bound * (1 + 1e-6), (what, name, np.abs(values).max(), bound)
        assert np.abs(values).max() >= bound * 0.99, (what, name)
        assert abs(values.std() / std - 1) < TOL, (what, name, values.std(), std)
        assert abs(values.mean()) < 0.02 * bound, (what, name)


def _torch_fan_in(weight: torch.Tensor) -> int:
    return torch.nn.init._calculate_fan_in_and_fan_out(weight)[0]


@pytest.fixture(autouse=True)
def _seed(paddlefix_clean):
    paddle.seed(11)
    torch.manual_seed(11)


# (paddle layer, torch layer) pairs whose weight and bias are U(±1/√fan_in) in torch
FAN_CASES = {
    "Linear": (lambda: paddle.nn.Linear(64, 16384), lambda: torch.nn.Linear(64, 16384)),
    "Conv1D": (lambda: paddle.nn.Conv1D(16, 8192, 5), lambda: torch.nn.Conv1d(16, 8192, 5)),
    "Conv2D": (lambda: paddle.nn.Conv2D(16, 4096, 3, groups=2), lambda: torch.nn.Conv2d(16, 4096, 3, groups=2)),
    "Conv3D": (lambda: paddle.nn.Conv3D(4, 4096, 2), lambda: torch.nn.Conv3d(4, 4096, 2)),
    # transposed: weight [in, out/groups, *k]; torch's fan_in is size(1)·∏k = out/groups·∏k
    "Conv1DTranspose": (lambda: paddle.nn.Conv1DTranspose(64, 4096, 3), lambda: torch.nn.ConvTranspose1d(64, 4096, 3)),
    "Conv2DTranspose": (
        lambda: paddle.nn.Conv2DTranspose(16, 4096, 3, groups=2),
        lambda: torch.nn.ConvTranspose2d(16, 4096, 3, groups=2),
    ),
    "Conv3DTranspose": (lambda: paddle.nn.Conv3DTranspose(16, 4096, 2), lambda: torch.nn.ConvTranspose3d(16, 4096, 2)),
}


@pytest.mark.parametrize("name", list(FAN_CASES))
def test_fan_layers_match_torch_formula_and_bounds(name):
    make_pd, make_pt = FAN_CASES[name]
    pd, pt = make_pd(), make_pt()
    assert list(pd.weight.shape) == list(pt.weight.shape) or name == "Linear"
    records = torch_init(pd)
    assert records == [records[0]] and records[0].status == "initialised" and records[0].type == name
    bound = 1.0 / math.sqrt(_torch_fan_in(pt.weight))
    _check_uniform(_np(pd.weight), _np(pt.weight), bound, f"{name}.weight")
    _check_uniform(_np(pd.bias), _np(pt.bias), bound, f"{name}.bias")


def test_bilinear():
    pd, pt = paddle.nn.Bilinear(32, 8, 4096), torch.nn.Bilinear(32, 8, 4096)
    torch_init(pd)
    bound = 1.0 / math.sqrt(pt.weight.size(1))
    _check_uniform(_np(pd.weight), _np(pt.weight), bound, "Bilinear.weight")
    _check_uniform(_np(pd.bias), _np(pt.bias), bound, "Bilinear.bias")


@pytest.mark.parametrize("padding_idx", [3, -1])
def test_embedding_normal_and_padding_row(padding_idx):
    pd = paddle.nn.Embedding(4096, 256, padding_idx=padding_idx)
    pt = torch.nn.Embedding(4096, 256, padding_idx=padding_idx)
    with paddle.no_grad():
        pd.weight.set_value(paddle.full(pd.weight.shape, 5.0))
    (record,) = torch_init(pd)
    assert "padding_idx row" in record.detail
    w, tw = _np(pd.weight), _np(pt.weight)
    row = padding_idx % 4096
    assert not w[row].any() and not tw[row].any()
    rest = np.delete(w, row, axis=0)
    assert abs(rest.std() - 1) < TOL and abs(np.delete(tw, row, axis=0).std() - 1) < TOL
    assert abs(rest.mean()) < 0.01


@pytest.mark.parametrize("kdim, vdim", [(None, None), (64, 128)], ids=["packed", "kdim-vdim"])
def test_multi_head_attention(kdim, vdim):
    d = 512
    pd = paddle.nn.MultiHeadAttention(d, 8, kdim=kdim, vdim=vdim)
    pt = torch.nn.MultiheadAttention(d, 8, kdim=kdim, vdim=vdim)
    with paddle.no_grad():
        for p in pd.parameters():
            p.set_value(paddle.full(p.shape, 3.0))
    (record,) = torch_init(pd)
    if kdim is None:
        bound = math.sqrt(6.0 / (d + 3 * d))  # xavier over the packed [3d, d]
        packed = _np(pt.in_proj_weight)
        for proj in ("q_proj", "k_proj", "v_proj"):
            _check_uniform(_np(getattr(pd, proj).weight), packed, bound, proj)
        assert not _np(pt.in_proj_bias).any()
    else:
        for proj, tw, fan in (("q_proj", pt.q_proj_weight, d), ("k_proj", pt.k_proj_weight, kdim),
                              ("v_proj", pt.v_proj_weight, vdim)):
            bound = math.sqrt(6.0 / (fan + d))
            _check_uniform(_np(getattr(pd, proj).weight), _np(tw), bound, proj)
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        assert not _np(getattr(pd, proj).bias).any(), proj
    assert not _np(pt.out_proj.bias).any()
    _check_uniform(_np(pd.out_proj.weight), _np(pt.out_proj.weight), 1 / math.sqrt(d), "out_proj.weight")
    assert record.type == "MultiHeadAttention" and len(torch_init(paddle.nn.Sequential(pd))) == 1


@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU"])
def test_recurrent(kind):
    torch_kind = {"SimpleRNN": "RNN"}.get(kind, kind)
    pd = getattr(paddle.nn, kind)(256, 512, num_layers=2, direction="bidirect")
    pt = getattr(torch.nn, torch_kind)(256, 512, num_layers=2, bidirectional=True)
    with paddle.no_grad():
        for p in pd.parameters():
            p.set_value(paddle.zeros(p.shape))
    (record,) = torch_init(pd)
    bound = 1 / math.sqrt(512)
    pd_all = np.concatenate([_np(p).ravel() for p in pd.parameters()])
    pt_all = np.concatenate([_np(p).ravel() for p in pt.parameters()])
    assert pd_all.size == pt_all.size
    _check_uniform(pd_all, pt_all, bound, kind)


def test_norms_reset_values_and_running_statistics():
    pairs = [
        (paddle.nn.BatchNorm2D(8), torch.nn.BatchNorm2d(8)),
        (paddle.nn.LayerNorm(8), torch.nn.LayerNorm(8)),
        (paddle.nn.GroupNorm(2, 8), torch.nn.GroupNorm(2, 8)),
        (paddle.nn.InstanceNorm2D(8), torch.nn.InstanceNorm2d(8, affine=True)),
    ]
    for pd, pt in pairs:
        with paddle.no_grad():
            for p in pd.parameters():
                p.set_value(paddle.full(p.shape, 7.0))
        (record,) = torch_init(pd)
        assert record.status == "initialised", record
        pd_values = sorted(_np(p).tolist()[0] for p in pd.parameters())
        pt_values = sorted([_np(p).tolist()[0] for p in pt.parameters()]
                           + [_np(b).tolist()[0] for n, b in pt.named_buffers() if n.startswith("running")])
        assert pd_values == pt_values, (type(pd).__name__, pd_values, pt_values)


def test_prelu():
    pd = paddle.nn.PReLU(4, init=0.1)
    with paddle.no_grad():
        pd._weight.set_value(paddle.full([4], 9.0))
    torch_init(pd)
    np.testing.assert_array_equal(_np(pd._weight), np.full(4, 0.1, "float32"))
    np.testing.assert_array_equal(_np(paddle.nn.PReLU()._weight), _np(torch.nn.PReLU().weight))


class _Custom(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.scale = self.create_parameter([3], default_initializer=paddle.nn.initializer.Constant(2.0))
        self.head = paddle.nn.Linear(3, 2)


class _LoraLinear(paddle.nn.Linear):
    def __init__(self):
        super().__init__(4, 4)
        self.lora_a = self.create_parameter([4, 2], default_initializer=paddle.nn.initializer.Constant(1.0))


def test_records_unknown_layers_listed_as_skipped_never_silent(caplog):
    model = paddle.nn.Sequential(_Custom(), paddle.nn.ReLU(), _LoraLinear())
    with caplog.at_level("WARNING", logger="paddlefix"):
        records = torch_init(model)
    assert all(isinstance(r, InitRecord) for r in records)
    by_path = {r.path: r for r in records}
    assert set(by_path) == {"0", "0.head", "2"}  # ReLU and the containers own no parameters
    assert by_path["0"].status == "skipped" and "scale" in by_path["0"].detail and by_path["0"].type == "_Custom"
    np.testing.assert_array_equal(_np(model[0].scale), np.full(3, 2.0, "float32"))  # left as it was
    assert by_path["0.head"].status == "initialised"
    assert by_path["2"].status == "initialised" and "left as it is: lora_a" in by_path["2"].detail
    np.testing.assert_array_equal(_np(model[2].lora_a), np.ones([4, 2], "float32"))
    assert "skipped 0 (_Custom)" in caplog.text and "lora_a" in caplog.text


def _values(model) -> list[np.ndarray]:
    return [_np(p).copy() for p in model.parameters()]


def _model():
    return paddle.nn.Sequential(paddle.nn.Linear(8, 8), paddle.nn.Conv2D(2, 4, 3), paddle.nn.Embedding(10, 4),
                                paddle.nn.LSTM(4, 4), paddle.nn.MultiHeadAttention(8, 2))


def test_seeded_by_paddle_seed_and_same_under_apply():
    model = _model()
    paddle.seed(5)
    torch_init(model)
    first = _values(model)
    paddle.seed(5)
    torch_init(model)
    assert all(np.array_equal(a, b) for a, b in zip(first, _values(model)))
    paddlefix.apply()
    paddle.seed(5)
    torch_init(model)
    assert all(np.array_equal(a, b) for a, b in zip(first, _values(model)))
    paddle.seed(6)
    torch_init(model)
    assert not np.array_equal(first[0], _values(model)[0])


def test_gradients_and_optimizer_still_work_after_reinit():
    lin = paddle.nn.Linear(4, 3)
    opt = paddle.optimizer.SGD(learning_rate=0.1, parameters=lin.parameters())
    torch_init(lin)
    before = _np(lin.weight).copy()
    lin(paddle.ones([2, 4])).sum().backward()
    opt.step()
    assert not np.array_equal(before, _np(lin.weight))


def test_bad_input():
    with pytest.raises(TypeError, match="torch_init\\(\\): layer must be a paddle.nn.Layer, got Tensor"):
        torch_init(paddle.ones([2]))


# -- the N(0, 1) draw (Box-Muller on NumPy's uniforms, seeded from Paddle's generator) ----------


def test_embedding_draw_has_torch_s_distribution():
    """Two-sample Kolmogorov-Smirnov against torch's own Embedding init, and its tails."""
    from scipy import stats

    paddle.seed(11)
    torch.manual_seed(11)
    pd = paddle.nn.Embedding(2000, 256)
    torch_init(pd)
    w = _np(pd.weight).ravel()
    tw = _np(torch.nn.Embedding(2000, 256).weight).ravel()
    assert stats.ks_2samp(w, tw).pvalue > 1e-3
    assert stats.kstest(w, "norm").pvalue > 1e-3
    assert 4.5 < np.abs(w).max() < 5.8  # float32 Box-Muller reaches about ±5.7σ, as torch's CPU normal_
    assert abs(np.mean(w > 3.0) - stats.norm.sf(3.0)) < 3e-4  # the tail is not thinned


def test_normal_draw_seeded_by_paddle_and_advances_its_generator():
    from paddlefix._torch_init import standard_normal

    def draw(seed):
        paddle.seed(seed)
        p = paddle.create_parameter([64, 33], "float32")
        standard_normal()(p)
        return _np(p).copy(), _np(paddle.rand([4]))

    a, after_a = draw(5)
    b, after_b = draw(5)
    c, _ = draw(6)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(after_a, after_b)
    assert not np.array_equal(a, c)
    paddle.seed(5)
    assert not np.array_equal(_np(paddle.rand([4])), after_a)  # the draw consumed Paddle's generator


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_normal_draw_mean_std_and_dtypes(dtype):
    from paddlefix._torch_init import standard_normal

    paddle.seed(2)
    p = paddle.zeros([301, 257], dtype)  # odd size: one Box-Muller pair is half used
    standard_normal(2.0, 3.0)(p)
    assert str(p.dtype).endswith(dtype) or (dtype == "bfloat16" and "bf16" in str(p.dtype).lower())
    v = _np(p.astype("float32")).astype("float64")
    assert abs(v.mean() - 2.0) < 0.03 and abs(v.std() / 3.0 - 1) < TOL
