"""kaiming_init: torch's Kaiming options, gains and ``paddle.nn.init`` functions.

Oracle: torch 2.13 (``torch.nn.init``). On paddle 2.6.2 the patch applies (mode=, the
conv_transpose gain names and ``paddle.nn.init`` are missing there). Paddle 3.3.1 has every
feature natively, so the patch is skipped; each test also runs with the patch forced
(``paddlefix.apply("kaiming_init", force=("kaiming_init",))``) so that our implementation is
checked against torch and against stock Paddle (behaviour preservation) on 3.3.1 too.
On 3.3.1 the native ``forward`` already reads ``mode`` and Paddle's own ``calculate_gain``
already knows the torch names, so the fan swap and the name aliasing are exercised for real
on 2.6.2; forced on 3.3.1 they must leave the native results unchanged.
"""

from __future__ import annotations

import inspect
import math
import pickle
import sys
import warnings
from importlib import metadata

import numpy as np
import paddle
import pytest
import torch
from packaging.version import Version

import paddlefix
from paddlefix.patches import kaiming_init as K
from tests.conftest import run_python

PADDLE = Version(metadata.version("paddlepaddle"))
NATIVE = PADDLE >= Version("3.2")  # FACTS: mode since 3.1.0, gain names and paddle.nn.init since 3.2.0

TORCH_NAMES = (
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "selu",
)
# (nonlinearity, a) pairs of the issue: relu, leaky_relu(0.2), tanh, selu, linear.
ACTIVATIONS = [("relu", 0), ("leaky_relu", 0.2), ("tanh", 0), ("selu", 0), ("linear", 0)]


@pytest.fixture(params=["apply", "forced"])
def kaiming(request: pytest.FixtureRequest, paddlefix_clean: None) -> str:
    """``apply``: the gate decides (applied on 2.6.2, skipped on 3.3.1); ``forced``: always ours."""
    if request.param == "apply":
        status = paddlefix.apply("kaiming_init")["kaiming_init"]
        assert status.state == ("skipped" if NATIVE else "applied"), status.reason
    else:
        status = paddlefix.apply("kaiming_init", force=("kaiming_init",))["kaiming_init"]
        assert status.state == "applied", status.reason
        assert status.forced
    return request.param


@pytest.fixture
def ours(paddlefix_clean: None) -> None:
    """The patch forced: our implementation on every version."""
    status = paddlefix.apply("kaiming_init", force=("kaiming_init",))["kaiming_init"]
    assert status.state == "applied", status.reason


def _np(t: paddle.Tensor) -> np.ndarray:
    return np.asarray(t.numpy(), dtype=np.float64)


# -- gating and status ---------------------------------------------------------------------


def test_probe_lists_missing_features(paddlefix_clean: None) -> None:
    finding = K.problem_present()
    if NATIVE:
        assert not finding.present, finding.detail
        assert "native" in finding.detail
    else:
        assert finding.present
        for text in ("conv_transpose2d", "mode=", "paddle.nn.init"):
            assert text in finding.detail, finding.detail
        assert "'relu'" not in finding.detail  # the gains Paddle has are not reported missing
    status = paddlefix.apply("kaiming_init")["kaiming_init"]
    if NATIVE:
        assert status.state == "skipped"
        assert "fixed upstream in 3.2.0" in status.reason
        assert status.targets == ()
    else:
        assert status.state == "applied"
        assert "probe confirmed: missing:" in status.reason and "paddle.nn.init" in status.reason
        assert "paddle.nn.initializer.kaiming.KaimingNormal.__init__" in status.targets
        assert not K.problem_present().present  # the probe sees the features once patched


def test_stock_paddle_lacks_features_where_patch_applies(paddlefix_clean: None) -> None:
    """What the patch fixes, seen on stock Paddle (2.6.2): TypeError, ValueError, no module."""
    if NATIVE:
        pytest.skip("paddle >= 3.2 has every feature natively")
    with pytest.raises(TypeError):
        paddle.nn.initializer.KaimingNormal(nonlinearity="leaky_relu", negative_slope=0.2, mode="fan_out")
    with pytest.raises(ValueError):
        paddle.nn.initializer.calculate_gain("conv_transpose2d")
    assert not hasattr(paddle.nn, "init") and "paddle.nn.init" not in sys.modules


# -- gains -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_gain_equals_torch(kaiming: str, name: str) -> None:
    expected = torch.nn.init.calculate_gain(name)
    assert paddle.nn.initializer.calculate_gain(name) == pytest.approx(expected, rel=1e-15)
    assert paddle.nn.init.calculate_gain(name) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("param", [None, 0, 0.2, 1, 3.5])
def test_leaky_relu_gain_equals_torch(kaiming: str, param: float | None) -> None:
    expected = torch.nn.init.calculate_gain("leaky_relu", param)
    assert paddle.nn.init.calculate_gain("leaky_relu", param) == pytest.approx(expected, rel=1e-15)
    if param is None:  # torch's default slope is 0.01, not 0
        assert expected == pytest.approx(math.sqrt(2.0 / (1 + 0.01**2)))


def test_paddle_spellings_keep_working(kaiming: str) -> None:
    for name in ("conv1d_transpose", "conv2d_transpose", "conv3d_transpose"):
        assert paddle.nn.initializer.calculate_gain(name) == 1


def test_unknown_nonlinearity_names_value_and_choices(ours: None) -> None:
    with pytest.raises(ValueError) as info:
        paddle.nn.init.calculate_gain("gelu")
    message = str(info.value)
    assert "'gelu'" in message and "valid choices" in message
    assert "'conv_transpose2d'" in message and "'leaky_relu'" in message
    w = paddle.empty([8, 4])
    with pytest.raises(ValueError, match=r"'swish'.*valid choices.*'relu'"):
        paddle.nn.init.kaiming_normal_(w, nonlinearity="swish")
    with pytest.raises(ValueError, match=r"'swish'.*valid choices"):
        paddle.nn.initializer.KaimingUniform(nonlinearity="swish")(w)


def test_invalid_mode_names_value_and_choices(ours: None) -> None:
    w = paddle.empty([8, 4])
    with pytest.raises(ValueError, match=r"KaimingNormal: mode 'fan_avg'.*valid choices: 'fan_in', 'fan_out'"):
        paddle.nn.initializer.KaimingNormal(mode="fan_avg")
    with pytest.raises(ValueError, match=r"KaimingUniform: mode 'fanout'.*valid choices: 'fan_in', 'fan_out'"):
        paddle.nn.initializer.KaimingUniform(mode="fanout")
    with pytest.raises(ValueError, match=r"kaiming_uniform_\(\): mode 'fan_avg'.*valid choices"):
        paddle.nn.init.kaiming_uniform_(w, mode="fan_avg")
    with pytest.raises(ValueError, match=r"fan_in=10.*mode='fan_in'"):
        paddle.nn.initializer.KaimingNormal(fan_in=10, mode="fan_out")


def test_invalid_mode_is_value_error(kaiming: str) -> None:
    with pytest.raises(ValueError, match="fan_avg"):
        paddle.nn.initializer.KaimingNormal(mode="fan_avg")
    with pytest.raises(ValueError):
        paddle.nn.init.kaiming_normal_(paddle.empty([8, 4]), mode="fan_avg")


# -- std / bound of a 1200 x 700 parameter -----------------------------------------------------


def _torch_fan(shape_torch: tuple[int, ...], mode: str) -> int:
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape_torch))
    return fan_in if mode == "fan_in" else fan_out


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize("nonlinearity,a", ACTIVATIONS)
def test_linear_weight_std_and_bound_match_torch(kaiming: str, nonlinearity: str, a: float, mode: str) -> None:
    """Paddle Linear(1200, 700) weight is [1200, 700]; torch's is [700, 1200]: same fans."""
    gain = torch.nn.init.calculate_gain(nonlinearity, a)
    fan = _torch_fan((700, 1200), mode)
    std = gain / math.sqrt(fan)
    bound = gain * math.sqrt(3.0 / fan)
    paddle.seed(1234)
    # class API on a layer's weight
    initializer = paddle.nn.initializer
    normal = paddle.nn.Linear(
        1200, 700, weight_attr=initializer.KaimingNormal(negative_slope=a, nonlinearity=nonlinearity, mode=mode)
    )
    uniform = paddle.nn.Linear(
        1200, 700, weight_attr=initializer.KaimingUniform(negative_slope=a, nonlinearity=nonlinearity, mode=mode)
    )
    assert list(normal.weight.shape) == [1200, 700]
    assert _np(normal.weight).std() == pytest.approx(std, rel=0.02)
    u = _np(uniform.weight)
    assert np.abs(u).max() <= bound * (1 + 1e-6)
    assert np.abs(u).max() == pytest.approx(bound, rel=0.02)
    assert u.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    # function API (torch signature) on a raw 1200 x 700 tensor
    w = paddle.empty([1200, 700])
    paddle.nn.init.kaiming_normal_(w, a, mode, nonlinearity)
    assert _np(w).std() == pytest.approx(std, rel=0.02)
    paddle.nn.init.kaiming_uniform_(w, a=a, mode=mode, nonlinearity=nonlinearity)
    assert np.abs(_np(w)).max() == pytest.approx(bound, rel=0.02)
    assert np.abs(_np(w)).max() <= bound * (1 + 1e-6)


def test_fan_out_differs_from_fan_in(kaiming: str) -> None:
    """The two modes are told apart: 1200 vs 700 is a factor sqrt(12/7) in std."""
    w = paddle.empty([1200, 700])
    paddle.nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    assert _np(w).std() == pytest.approx(math.sqrt(2 / 700), rel=0.02)
    paddle.nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu")
    assert _np(w).std() == pytest.approx(math.sqrt(2 / 1200), rel=0.02)


# -- conv and conv-transpose weights against torch on the torch-layout equivalent -------------

CONVS = [
    # (paddle layer, torch layer, args (in, out, k), groups)
    ("Conv1D", "Conv1d", (96, 256, 7), 2),
    ("Conv2D", "Conv2d", (64, 160, 5), 2),
    ("Conv3D", "Conv3d", (24, 40, 3), 1),
    ("Conv1DTranspose", "ConvTranspose1d", (256, 96, 7), 2),
    ("Conv2DTranspose", "ConvTranspose2d", (160, 64, 5), 2),
    ("Conv3DTranspose", "ConvTranspose3d", (40, 96, 3), 2),
]


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize("paddle_cls,torch_cls,args,groups", CONVS, ids=[c[0] for c in CONVS])
def test_conv_weights_match_torch(
    kaiming: str, paddle_cls: str, torch_cls: str, args: tuple[int, int, int], groups: int, mode: str
) -> None:
    in_c, out_c, k = args
    torch.manual_seed(0)
    tconv = getattr(torch.nn, torch_cls)(in_c, out_c, k, groups=groups)
    torch.nn.init.kaiming_normal_(tconv.weight, a=0.2, mode=mode, nonlinearity="leaky_relu")
    t_std = float(tconv.weight.detach().double().std())
    paddle.seed(0)
    init = paddle.nn.initializer.KaimingNormal(negative_slope=0.2, nonlinearity="leaky_relu", mode=mode)
    pconv = getattr(paddle.nn, paddle_cls)(in_c, out_c, k, groups=groups, weight_attr=init)
    # Paddle's conv and conv-transpose weights have torch's layouts.
    assert list(pconv.weight.shape) == list(tconv.weight.shape)
    assert _np(pconv.weight).std() == pytest.approx(t_std, rel=0.03)
    # the torch-style function on the same weight
    paddle.nn.init.kaiming_normal_(pconv.weight, a=0.2, mode=mode, nonlinearity="leaky_relu")
    assert _np(pconv.weight).std() == pytest.approx(t_std, rel=0.03)
    # uniform: the bound is torch's
    torch.nn.init.kaiming_uniform_(tconv.weight, a=0.2, mode=mode)
    paddle.nn.init.kaiming_uniform_(pconv.weight, a=0.2, mode=mode)
    t_max = float(tconv.weight.detach().abs().max())
    assert np.abs(_np(pconv.weight)).max() == pytest.approx(t_max, rel=0.01)


# -- defaults unchanged (same seed -> same numbers) ----------------------------------------------


def _draws() -> list[np.ndarray]:
    initializer = paddle.nn.initializer
    out = []
    paddle.seed(2024)
    for init in (
        initializer.KaimingNormal(),
        initializer.KaimingUniform(),
        initializer.KaimingNormal(fan_in=37),
        initializer.KaimingUniform(None, 0.3, "leaky_relu"),
        initializer.KaimingNormal(nonlinearity="tanh"),
    ):
        w = paddle.empty([60, 40])
        init(w)
        out.append(_np(w))
    out.append(_np(paddle.nn.Linear(30, 20, weight_attr=initializer.KaimingNormal()).weight))
    out.append(_np(paddle.nn.Conv2D(6, 10, 3, weight_attr=initializer.KaimingUniform()).weight))
    out.append(_np(paddle.nn.Conv2DTranspose(6, 10, 3, weight_attr=initializer.KaimingNormal()).weight))
    return out


def test_defaults_unchanged(kaiming: str) -> None:
    """Same seed -> same numbers as stock Paddle (forced on 3.3.1: behaviour preservation)."""
    paddlefix.revert("kaiming_init")
    stock = _draws()
    gains = [paddle.nn.initializer.calculate_gain(n) for n in ("relu", "tanh", "selu", "conv2d_transpose")]
    paddlefix.apply("kaiming_init", force=("kaiming_init",) if kaiming == "forced" else ())
    patched = _draws()
    for a, b in zip(stock, patched):
        np.testing.assert_array_equal(a, b)
    assert gains == [paddle.nn.initializer.calculate_gain(n) for n in ("relu", "tanh", "selu", "conv2d_transpose")]
    # mode="fan_in" spelled out is the default
    paddle.seed(7)
    a = paddle.empty([50, 30])
    paddle.nn.initializer.KaimingNormal()(a)
    paddle.seed(7)
    b = paddle.empty([50, 30])
    paddle.nn.initializer.KaimingNormal(mode="fan_in")(b)
    np.testing.assert_array_equal(_np(a), _np(b))


def test_init_defaults_are_torchs(kaiming: str) -> None:
    """kaiming_normal_(w) = KaimingNormal(negative_slope=0, nonlinearity='leaky_relu') numbers."""
    sig = inspect.signature(paddle.nn.init.kaiming_normal_)
    tsig = inspect.signature(torch.nn.init.kaiming_normal_)
    for name in ("tensor", "a", "mode", "nonlinearity"):
        assert sig.parameters[name].default == tsig.parameters[name].default
    assert list(sig.parameters)[:4] == list(tsig.parameters)[:4]
    paddle.seed(11)
    a = paddle.empty([64, 32])
    paddle.nn.init.kaiming_uniform_(a)
    paddle.seed(11)
    b = paddle.empty([64, 32])
    paddle.nn.initializer.KaimingUniform(negative_slope=0.0, nonlinearity="leaky_relu")(b)
    np.testing.assert_array_equal(_np(a), _np(b))


def test_torch_signature_and_return(ours: None) -> None:
    sig = inspect.signature(paddle.nn.init.kaiming_uniform_)
    tsig = inspect.signature(torch.nn.init.kaiming_uniform_)
    assert list(sig.parameters) == list(tsig.parameters)
    assert sig.parameters["generator"].default is None
    w = paddle.empty([16, 8])
    assert paddle.nn.init.kaiming_normal_(w, generator=None) is w
    with pytest.raises(ValueError, match="generator"):
        paddle.nn.init.kaiming_normal_(w, generator=torch.Generator())
    assert paddle.nn.init.kaiming_uniform_(w, mode="FAN_OUT") is w  # torch lower-cases mode
    assert np.abs(_np(w)).max() == pytest.approx(math.sqrt(2) * math.sqrt(3 / 8), rel=0.02)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        empty = paddle.empty([0, 4])
        assert paddle.nn.init.kaiming_normal_(empty) is empty
    assert any("zero-element" in str(c.message) for c in caught)


def test_class_signature_shows_mode(kaiming: str) -> None:
    for cls in (paddle.nn.initializer.KaimingNormal, paddle.nn.initializer.KaimingUniform):
        params = inspect.signature(cls).parameters
        assert params["mode"].default == "fan_in"
        assert list(params)[:3] == ["fan_in", "negative_slope", "nonlinearity"]
    # positional, as in Paddle 3.1+: (fan_in, negative_slope, nonlinearity, mode)
    init = paddle.nn.initializer.KaimingNormal(None, 0.0, "relu", "fan_out")
    w = paddle.empty([1200, 700])
    init(w)
    assert _np(w).std() == pytest.approx(math.sqrt(2 / 700), rel=0.02)


def test_static_graph_fan_out(kaiming: str) -> None:
    paddle.enable_static()
    try:
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            x = paddle.static.data("x", [None, 1200], "float32")
            linear = paddle.nn.Linear(
                1200, 700, weight_attr=paddle.nn.initializer.KaimingNormal(nonlinearity="relu", mode="fan_out")
            )
            linear(x)
        exe = paddle.static.Executor(paddle.CPUPlace())
        scope = paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            exe.run(startup)
            w = np.asarray(scope.find_var(linear.weight.name).get_tensor(), dtype=np.float64)
    finally:
        paddle.disable_static()
    assert w.shape == (1200, 700)
    assert w.std() == pytest.approx(math.sqrt(2 / 700), rel=0.02)


# -- module registration and revert -----------------------------------------------------------


def test_import_forms(kaiming: str) -> None:
    import paddle.nn.init as init_a
    from paddle.nn import init as init_b
    from paddle.nn.init import calculate_gain, kaiming_normal_, kaiming_uniform_

    assert init_a is init_b is sys.modules["paddle.nn.init"] is paddle.nn.init
    assert kaiming_normal_ is init_a.kaiming_normal_ and kaiming_uniform_ is init_a.kaiming_uniform_
    assert calculate_gain("conv_transpose3d") == 1
    for fn in (kaiming_normal_, kaiming_uniform_, calculate_gain):  # picklable by reference
        assert pickle.loads(pickle.dumps(fn)) is fn


def test_revert_restores_stock(paddlefix_clean: None) -> None:
    msra = paddle.nn.initializer.kaiming.MSRAInitializer
    classes = (msra, paddle.nn.initializer.KaimingNormal, paddle.nn.initializer.KaimingUniform)
    inits = [c.__dict__["__init__"] for c in classes]
    gain = paddle.nn.initializer.calculate_gain
    module = getattr(paddle.nn, "init", None)
    native_fns = (module.kaiming_normal_, module.kaiming_uniform_) if module is not None else None
    status = paddlefix.apply("kaiming_init", force=("kaiming_init",))["kaiming_init"]
    assert status.state == "applied"
    assert paddle.nn.initializer.KaimingNormal.__dict__["__init__"] is not inits[1]
    assert "_compute_fans" in msra.__dict__
    paddlefix.revert("kaiming_init")
    assert [c.__dict__["__init__"] for c in classes] == inits
    assert all(a is b for a, b in zip((c.__dict__["__init__"] for c in classes), inits))
    assert "_compute_fans" not in msra.__dict__
    assert paddle.nn.initializer.calculate_gain is gain
    assert paddle.nn.initializer.kaiming.calculate_gain is gain
    if module is None:
        assert not hasattr(paddle.nn, "init") and "paddle.nn.init" not in sys.modules
        with pytest.raises(TypeError):
            paddle.nn.initializer.KaimingNormal(mode="fan_out")
    else:
        assert paddle.nn.init is module and sys.modules["paddle.nn.init"] is module
        assert (module.kaiming_normal_, module.kaiming_uniform_) == native_fns
        assert module.calculate_gain is gain


def test_deferred_apply_before_import() -> None:
    """apply() before ``import paddle``: applied at import; paddle.nn.init importable.

    Forced where Paddle has the features natively (3.3.1), so our module is the one imported.
    """
    force = "('kaiming_init',)" if NATIVE else "()"
    code = (
        "import paddlefix\n"
        f"paddlefix.apply('kaiming_init', force={force})\n"
        "assert paddlefix.status()['kaiming_init'].state == 'pending'\n"
        "import paddle\n"
        "from paddle.nn.init import kaiming_normal_\n"
        "w = paddle.empty([1200, 700])\n"
        "assert kaiming_normal_(w, mode='fan_out', nonlinearity='relu') is w\n"
        "st = paddlefix.status()['kaiming_init']\n"
        "print(st.state, float(w.std()))\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state, std = proc.stdout.split()[-2:]
    assert state == "applied"
    assert float(std) == pytest.approx(math.sqrt(2 / 700), rel=0.02)
