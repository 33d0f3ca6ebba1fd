"""eval_grad: backward through eval-mode Dropout / BatchNorm.

The affected versions (paddlepaddle < 2.2.1) cannot be installed here (2.6.2 is the oldest
reachable wheel), so the patch is tested *forced* onto the installed version: it must be
behaviour-preserving there (same eval outputs, same gradients as the stock kernels), must
route eval-mode calls through its differentiable path, and must leave train mode alone.
The torch-parity facts users ask about are checked against torch 2.13.
"""

from __future__ import annotations

import importlib
import inspect
import warnings

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
import torch

import paddlefix

eval_grad = importlib.import_module("paddlefix.patches.eval_grad")

pytestmark = pytest.mark.usefixtures("paddlefix_clean")


def _force() -> None:
    st = paddlefix.apply("eval_grad", force=("eval_grad",))["eval_grad"]
    assert st.state == "applied", st.reason
    assert "paddle.nn.functional.dropout" in st.targets
    assert "paddle.nn.functional.batch_norm" in st.targets


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint8)


def _run(layer: paddle.nn.Layer, x_np: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Forward + backward with a fixed upstream gradient; output, input grad and param grads."""
    layer.clear_gradients()
    x = paddle.to_tensor(x_np, stop_gradient=False)
    y = layer(x)
    rng = np.random.default_rng(seed)
    dy = paddle.to_tensor(rng.standard_normal(y.shape).astype(x_np.dtype))
    (y * dy).sum().backward()
    out = {"out": y.numpy(), "x.grad": x.grad.numpy()}
    for name, p in layer.named_parameters():
        if not p.stop_gradient:
            assert p.grad is not None, name
            out[name + ".grad"] = p.grad.numpy()
    return out


def _randomize_bn(layer: paddle.nn.Layer, channels: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    layer._mean.set_value(rng.standard_normal(channels).astype("float32"))
    layer._variance.set_value((rng.random(channels) + 0.1).astype("float32"))
    layer.weight.set_value(rng.standard_normal(channels).astype("float32"))
    layer.bias.set_value(rng.standard_normal(channels).astype("float32"))


CASES = [
    ("Dropout", lambda: paddle.nn.Dropout(0.3), (4, 7)),
    ("Dropout downscale_in_infer", lambda: paddle.nn.Dropout(0.33, mode="downscale_in_infer"), (4, 7)),
    ("Dropout downscale p=0.9", lambda: paddle.nn.Dropout(0.9, mode="downscale_in_infer"), (3, 5, 6)),
    ("Dropout axis", lambda: paddle.nn.Dropout(0.4, axis=1, mode="downscale_in_infer"), (4, 7)),
    ("Dropout2D", lambda: paddle.nn.Dropout2D(0.5), (2, 3, 4, 5)),
    ("Dropout2D NHWC", lambda: paddle.nn.Dropout2D(0.5, data_format="NHWC"), (2, 4, 5, 3)),
    ("Dropout3D", lambda: paddle.nn.Dropout3D(0.5), (2, 3, 2, 4, 5)),
    ("AlphaDropout", lambda: paddle.nn.AlphaDropout(0.2), (4, 7)),
    ("BatchNorm1D NC", lambda: paddle.nn.BatchNorm1D(6), (5, 6)),
    ("BatchNorm1D NCL", lambda: paddle.nn.BatchNorm1D(6), (3, 6, 9)),
    ("BatchNorm1D NLC", lambda: paddle.nn.BatchNorm1D(6, data_format="NLC"), (3, 9, 6)),
    ("BatchNorm2D", lambda: paddle.nn.BatchNorm2D(6, epsilon=1e-3), (4, 6, 5, 7)),
    ("BatchNorm2D NHWC", lambda: paddle.nn.BatchNorm2D(6, data_format="NHWC"), (4, 5, 7, 6)),
    ("BatchNorm3D", lambda: paddle.nn.BatchNorm3D(6), (2, 6, 3, 4, 5)),
    ("BatchNorm (legacy, act=relu)", lambda: paddle.nn.BatchNorm(6, act="relu"), (4, 6, 5, 7)),
]


#: Cases whose stock kernel rounds differently on different CPUs (see the test below).
_KERNEL_ORDER_DEPENDENT = {"BatchNorm2D", "BatchNorm (legacy, act=relu)"}


@pytest.mark.parametrize("name,make,shape", CASES, ids=[c[0] for c in CASES])
def test_forced_eval_matches_stock(name: str, make, shape: tuple[int, ...]) -> None:
    """Forced onto a fixed version: eval outputs and input gradients are bit-identical to the
    stock kernels (input gradients behind the legacy layer's relu: equal values, the sign of
    a zero may differ); parameter gradients equal them up to summation order."""
    paddle.seed(1)
    layer = make()
    if "BatchNorm" in name:
        _randomize_bn(layer, 6, seed=len(name))
    layer.eval()
    rng = np.random.default_rng(len(name))
    x_np = (rng.standard_normal(shape) * 3 + 0.5).astype("float32")
    x_np.flat[:4] = [-0.0, 0.0, 1e-40, -1e-40]  # signed zeros and subnormals keep their bits

    stock = _run(layer, x_np)
    _force()
    ours = _run(layer, x_np)

    assert set(ours) == set(stock)
    if name in _KERNEL_ORDER_DEPENDENT:
        # Paddle's 4-D NCHW batch-norm inference kernel (oneDNN) orders its arithmetic by CPU: bit-equal
        # to ``x * s + t`` on AMD EPYC, within 32 float32 ulp on Intel Xeon (measured).
        for key in ("out", "x.grad"):
            np.testing.assert_array_max_ulp(np.abs(ours[key]), np.abs(stock[key]), maxulp=64)
            assert np.array_equal(np.sign(ours[key]) * (ours[key] != 0), np.sign(stock[key]) * (stock[key] != 0))
    else:
        assert np.array_equal(_bits(ours["out"]), _bits(stock["out"])), name
        # exact values (a zero gradient behind a relu may differ in sign only)
        assert np.array_equal(ours["x.grad"], stock["x.grad"]), name
        assert np.array_equal(_bits(ours["x.grad"]), _bits(stock["x.grad"])), name
    for key in stock:
        if key.endswith(".grad") and key != "x.grad":
            np.testing.assert_allclose(ours[key], stock[key], rtol=2e-6, atol=1e-5, err_msg=f"{name} {key}")


def test_forced_eval_uses_differentiable_ops() -> None:
    """The forced patch really routes eval-mode dropout / batch norm through its own path:
    the result is a fresh tensor with a grad node (not the is_test kernel's)."""
    _force()
    drop, norm = paddle.nn.Dropout(0.5), paddle.nn.BatchNorm1D(3)
    drop.eval()
    norm.eval()
    assert paddlefix.is_patched(F, "dropout")
    assert paddlefix.is_patched(F, "batch_norm")
    x = paddle.to_tensor([[1.0, -2.0, 3.0]], stop_gradient=False)
    y = norm(drop(x))
    y.sum().backward()
    # d/dx of an eval batch norm is weight / sqrt(var + eps) = 1 / sqrt(1 + 1e-5) per channel
    np.testing.assert_allclose(x.grad.numpy(), np.full((1, 3), 1 / np.sqrt(1 + 1e-5)), rtol=1e-6)
    assert norm.weight.grad is not None and norm.bias.grad is not None


def test_train_mode_untouched() -> None:
    """Forced: train-mode Dropout draws the same mask and BatchNorm updates running stats as stock."""
    x_np = np.random.default_rng(3).standard_normal((8, 4)).astype("float32")

    def train_run() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        paddle.seed(123)
        drop, norm = paddle.nn.Dropout(0.5), paddle.nn.BatchNorm1D(4)
        drop.train()
        norm.train()
        x = paddle.to_tensor(x_np, stop_gradient=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "When training, we now always track ..."
            y = norm(drop(x))
        y.sum().backward()
        return y.numpy(), norm._mean.numpy().copy(), x.grad.numpy()

    stock = train_run()
    _force()
    ours = train_run()
    for a, b in zip(ours, stock):
        assert np.array_equal(a, b)
    assert not np.array_equal(stock[1], np.zeros(4, "float32"))  # running mean moved


def test_eval_batch_norm_matches_torch() -> None:
    """Forced path, eval BatchNorm2D forward + backward vs torch.nn.BatchNorm2D in eval."""
    _force()
    rng = np.random.default_rng(5)
    c = 4
    pl = paddle.nn.BatchNorm2D(c)
    _randomize_bn(pl, c, seed=5)
    pl.eval()
    tl = torch.nn.BatchNorm2d(c)
    with torch.no_grad():
        tl.running_mean.copy_(torch.from_numpy(pl._mean.numpy()))
        tl.running_var.copy_(torch.from_numpy(pl._variance.numpy()))
        tl.weight.copy_(torch.from_numpy(pl.weight.numpy()))
        tl.bias.copy_(torch.from_numpy(pl.bias.numpy()))
    tl.eval()
    x_np = rng.standard_normal((3, c, 5, 6)).astype("float32")
    got = _run(pl, x_np)
    tx = torch.from_numpy(x_np).requires_grad_()
    ty = tl(tx)
    dy = torch.from_numpy(np.random.default_rng(0).standard_normal(ty.shape).astype("float32"))
    (ty * dy).sum().backward()
    np.testing.assert_allclose(got["out"], ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["x.grad"], tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["weight.grad"], tl.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got["bias.grad"], tl.bias.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_status_skipped_with_fixed_version() -> None:
    """On the installable versions the gate says the bug was fixed in 2.2.1."""
    st = paddlefix.apply("eval_grad")["eval_grad"]
    assert st.state == "skipped"
    assert "fixed upstream in 2.2.1" in st.reason
    assert paddle.__version__ in st.reason
    assert not paddlefix.is_patched(F, "dropout")


def test_probe_sees_no_problem_and_has_no_side_effects() -> None:
    tracer = paddle.base.framework._dygraph_tracer() if hasattr(paddle, "base") else None
    before = tracer._train_mode if tracer is not None else None
    finding = eval_grad.problem_present()
    assert finding.present is False
    assert "gradients" in finding.detail
    if tracer is not None:
        assert tracer._train_mode == before  # the probe does not call Layer.eval()


def test_revert_restores_originals() -> None:
    originals = (F.dropout, F.batch_norm, paddle.nn.layer.norm.batch_norm, vars(paddle.nn.BatchNorm)["forward"])
    _force()
    assert F.dropout is not originals[0]
    assert inspect.signature(F.dropout) == inspect.signature(originals[0])
    assert F.dropout.__doc__ == originals[0].__doc__
    paddlefix.revert("eval_grad")
    assert (F.dropout, F.batch_norm, paddle.nn.layer.norm.batch_norm, vars(paddle.nn.BatchNorm)["forward"]) == originals


def test_forced_keeps_stock_errors() -> None:
    """Invalid arguments still raise the stock errors through the wrapper."""
    _force()
    x = paddle.ones([2, 3])
    with pytest.raises(ValueError):
        F.dropout(x, p=1.5, training=False)
    with pytest.raises(ValueError):
        F.dropout(x, p=0.5, training=False, mode="bogus")


# -- torch-parity facts (stock behaviour; no patch involved) ---------------------------


def test_no_grad_still_controls_autograd_after_eval() -> None:
    """``eval()`` does not disable autograd in Paddle (as in torch); ``paddle.no_grad`` does."""
    layer = paddle.nn.Sequential(paddle.nn.Linear(3, 3), paddle.nn.Dropout(0.5))
    layer.eval()
    x = paddle.ones([2, 3])
    y = layer(x)
    assert not y.stop_gradient  # eval mode: the graph is still recorded
    y.sum().backward()
    assert layer[0].weight.grad is not None
    with paddle.no_grad():
        z = layer(x)
    assert z.stop_gradient
    layer.train()

    tl = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5)).eval()
    assert tl(torch.ones(2, 3)).requires_grad
    with torch.no_grad():
        assert not tl(torch.ones(2, 3)).requires_grad


def test_functional_dropout_defaults_to_training_in_both_frameworks() -> None:
    """``F.dropout(x, p)`` defaults to ``training=True`` in Paddle *and* in torch: a functional
    call inside ``forward`` that does not pass ``training=self.training`` keeps dropping after
    ``model.eval()`` in both. ``nn.Dropout`` layers follow the mode."""
    assert inspect.signature(F.dropout).parameters["training"].default is True
    assert inspect.signature(torch.nn.functional.dropout).parameters["training"].default is True

    layer = paddle.nn.Linear(4, 4)
    layer.eval()
    paddle.seed(0)
    x = paddle.ones([64, 64])
    dropped = F.dropout(x, 0.5)
    assert (dropped.numpy() == 0).mean() > 0.3  # still drops
    assert (F.dropout(x, 0.5, training=True).numpy() == 0).any()
    assert np.array_equal(F.dropout(x, 0.5, training=False).numpy(), x.numpy())
    layer.train()

    torch.manual_seed(0)
    tl = torch.nn.Linear(4, 4).eval()
    assert not tl.training
    assert (torch.nn.functional.dropout(torch.ones(64, 64), 0.5) == 0).float().mean() > 0.3
