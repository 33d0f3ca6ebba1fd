"""The adapters: one surface over torch and Paddle, checked on real layers of both."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from paddlefix.align.adapters import adapter_for, framework_of

paddle = pytest.importorskip("paddle")
torch = pytest.importorskip("torch")


def test_import_align_and_adapters_import_no_framework() -> None:
    code = (
        "import sys, paddlefix.align, paddlefix.align.adapters as a, paddlefix.align.rules;"
        "assert a.framework_of(object()) is None;"
        "print(sorted(m for m in ('paddle', 'torch', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_framework_of_and_bad_objects() -> None:
    assert framework_of(torch.nn.Linear(2, 2)) == "torch"
    assert framework_of(torch.zeros(1)) == "torch"
    assert framework_of(paddle.nn.Linear(2, 2)) == "paddle"
    assert framework_of(paddle.zeros([1])) == "paddle"
    assert framework_of(np.zeros(1)) is None
    with pytest.raises(TypeError, match="numpy.ndarray"):
        adapter_for(np.zeros(1))


def _models() -> tuple[object, object]:
    torch.manual_seed(0)
    paddle.seed(0)
    t = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.ReLU())
    p = paddle.nn.Sequential(paddle.nn.Linear(3, 4), paddle.nn.BatchNorm1D(4), paddle.nn.ReLU())
    return t, p


def test_layers_params_buffers_same_surface() -> None:
    t, p = _models()
    at, ap = adapter_for(t), adapter_for(p)
    assert (at.framework, ap.framework) == ("torch", "paddle")
    assert [n for n, _ in at.named_layers(t)] == ["", "0", "1", "2"]
    assert [n for n, _ in ap.named_layers(p)] == ["", "0", "1", "2"]
    assert [n for n, _ in at.children(t)] == [n for n, _ in ap.children(p)] == ["0", "1", "2"]
    assert at.type_name(t[1]) == "BatchNorm1d" and ap.type_name(p[1]) == "BatchNorm1D"
    assert ap.qualified_type(p[0]).startswith("paddle.nn.") and ap.qualified_type(p[0]).endswith(".Linear")
    assert at.qualified_type(t[0]) == "torch.nn.modules.linear.Linear"
    assert [n for n, _ in at.own_params(t[1])] == ["weight", "bias"]
    assert [n for n, _ in at.own_buffers(t[1])] == ["running_mean", "running_var", "num_batches_tracked"]
    # Paddle keeps BatchNorm statistics as non-trainable parameters, not buffers
    assert [n for n, _ in ap.own_params(p[1]) + ap.own_buffers(p[1])] == ["weight", "bias", "_mean", "_variance"]
    assert at.own_params(t) == [] and ap.own_params(p) == []
    assert at.shape(t[0].weight) == (4, 3) and ap.shape(p[0].weight) == (3, 4)
    assert at.dtype_name(t[1].num_batches_tracked) == "int64"
    assert ap.dtype_name(p[0].weight) == "float32"
    assert set(at.state_dict(t)) >= {"0.weight", "1.running_mean"}
    assert set(ap.state_dict(p)) >= {"0.weight", "1._mean"}


def test_non_persistent_buffers_are_not_own_buffers() -> None:
    m = torch.nn.Module()
    m.register_buffer("kept", torch.ones(1))
    m.register_buffer("scratch", torch.ones(1), persistent=False)
    assert [n for n, _ in adapter_for(m).own_buffers(m)] == ["kept"]
    layer = paddle.nn.Layer()
    layer.register_buffer("kept", paddle.ones([1]))
    layer.register_buffer("scratch", paddle.ones([1]), persistable=False)
    assert [n for n, _ in adapter_for(layer).own_buffers(layer)] == ["kept"]


@pytest.mark.parametrize("framework", ["torch", "paddle"])
def test_to_numpy_assign_from_numpy_keep_dtype(framework: str) -> None:
    t, p = _models()
    model = t if framework == "torch" else p
    ad = adapter_for(model)
    w = model[0].weight
    new = np.arange(12, dtype="float64").reshape(ad.shape(w)) / 7
    ad.assign(w, new)
    got = ad.to_numpy(w)
    assert got.dtype == np.float32 and ad.dtype_name(w) == "float32"
    np.testing.assert_array_equal(got, new.astype("float32"))
    assert ad.grad(w) is None  # assignment records nothing for autograd
    with pytest.raises(ValueError, match="shape"):
        ad.assign(w, np.zeros((5, 5)))
    ints = ad.from_numpy(np.array([1, 2], dtype="int64"))
    assert ad.dtype_name(ints) == "int64"


@pytest.mark.parametrize("framework", ["torch", "paddle"])
def test_hooks_train_mode_and_grads(framework: str) -> None:
    t, p = _models()
    model = t if framework == "torch" else p
    ad = adapter_for(model)
    seen: list[tuple[str, tuple[int, ...]]] = []
    h1 = ad.register_forward_pre_hook(model[0], lambda layer, inputs: seen.append(("pre", ad.shape(inputs[0]))))
    h2 = ad.register_forward_hook(model[0], lambda layer, inputs, out: seen.append(("post", ad.shape(out))))
    grads: list[np.ndarray] = []

    def grab(layer: object, inputs: tuple, out: object) -> None:
        ad.register_tensor_grad_hook(out, lambda g: grads.append(ad.to_numpy(g)))

    h3 = ad.register_forward_hook(model[2], grab)
    ad.train(model, False)
    assert not ad.is_training(model) and not ad.is_training(model[1])
    x = ad.from_numpy(np.ones((2, 3), dtype="float32"))
    out = model(x)
    out.sum().backward()
    assert seen == [("pre", (2, 3)), ("post", (2, 4))]
    assert len(grads) == 1 and grads[0].shape == (2, 4)
    assert ad.grad(model[0].weight) is not None
    for h in (h1, h2, h3):
        h.remove()
    model(x)
    assert len(seen) == 2
    ad.train(model, True)
    assert ad.is_training(model[1])


def test_paddle_assign_writes_in_place_through_a_torch_view() -> None:
    from paddlefix.align.adapters._paddle import _copy_into_view, torch_view

    layer = paddle.nn.Linear(40, 24)  # weight [in, out] = [40, 24]
    w = layer.weight
    view = torch_view(w)
    assert view is not None and tuple(view.shape) == (40, 24)
    ptr = view.data_ptr()
    src = np.random.default_rng(0).standard_normal((24, 40)).astype("float32")  # torch layout
    assert _copy_into_view(w, src.T, "float32")  # transposed view: one pass, no temporary
    assert np.array_equal(w.numpy(), src.T)
    assert torch_view(w).data_ptr() == ptr  # same allocation, written in place
    x = paddle.ones([2, 40])
    x.stop_gradient = False
    layer(x).sum().backward()  # the parameter still trains
    assert tuple(w.grad.shape) == (40, 24) and not w.stop_gradient
    # what the view cannot do is left to the other path, and nothing is written
    before = w.numpy().copy()
    assert not _copy_into_view(w, src.T.astype("float64"), "float32")  # a cast
    assert not _copy_into_view(w, src.T[::-1], "float32")  # negative strides
    assert np.array_equal(w.numpy(), before)
    assert not _copy_into_view(paddle.zeros([2], dtype="bfloat16"), np.zeros(2, "float32"), "bfloat16")


@pytest.mark.parametrize("fused", [True, False], ids=["view", "set_value"])
def test_paddle_assign_both_paths_give_the_same_bits(fused: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from paddlefix.align.adapters._paddle import PaddleAdapter

    monkeypatch.setattr(PaddleAdapter, "fused_copy", fused)
    ad = adapter_for(paddle.zeros([1]))
    rng = np.random.default_rng(1)
    for dtype, src in [
        ("float32", rng.standard_normal((33, 65)).astype("float32").T),  # transposed
        ("float32", rng.standard_normal((7, 5)).astype("float32")),  # contiguous
        ("float16", rng.standard_normal((9, 4)).astype("float16").T),
        ("float64", rng.standard_normal((3, 8)).T),
        ("int64", np.arange(24, dtype="int64").reshape(4, 6).T),
        ("float32", rng.standard_normal((6, 4))),  # float64 -> float32: cast, always set_value
    ]:
        t = paddle.zeros(list(src.shape), dtype=dtype)
        ad.assign(t, src)
        assert ad.dtype_name(t) == dtype
        assert np.array_equal(t.numpy(), src.astype(dtype)), (dtype, src.shape)
    nan = np.array([[np.nan, -0.0], [np.inf, 1e-45]], dtype="float32").T
    t = paddle.zeros([2, 2])
    ad.assign(t, nan)
    assert t.numpy().tobytes() == np.ascontiguousarray(nan).tobytes()  # bit for bit


def test_paddle_assign_from_its_own_memory_transposed() -> None:
    from paddlefix.align.adapters._paddle import _copy_into_view, torch_view

    t = paddle.to_tensor(np.arange(16, dtype="float32").reshape(4, 4))
    want = t.numpy().T.copy()
    own = torch_view(t).numpy().T  # the destination's own memory, transposed
    assert not _copy_into_view(t, own, "float32")  # overlapping: never written while read
    adapter_for(t).assign(t, own)
    assert np.array_equal(t.numpy(), want)
