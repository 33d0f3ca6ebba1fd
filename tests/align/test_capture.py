"""align capture: what one framework's run records (real paddle and torch models, tiny)."""

from __future__ import annotations

import numpy as np
import pytest

from paddlefix.align import AlignError
from paddlefix.align._capture import capture, flatten_tensors

paddle = pytest.importorskip("paddle")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


class _TorchNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(4, 3)
        self.act = torch.nn.ReLU(inplace=True)
        self.b = torch.nn.Linear(3, 2)

    def forward(self, x):
        h = self.act(self.a(x))
        return {"out": self.b(h), "pair": (h, None)}


class _PaddleNet(paddle.nn.Layer):
    def __init__(self) -> None:
        super().__init__()
        paddle.seed(0)
        self.a = paddle.nn.Linear(4, 3)
        self.b = paddle.nn.Linear(3, 2)
        self.shared = paddle.nn.Linear(2, 2)

    def forward(self, x):
        return self.shared(self.shared(self.b(self.a(x))))


X = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)


def test_torch_forward_order_nested_outputs_and_inplace_safety():
    net = _TorchNet()
    trace = capture(net, [(torch.from_numpy(X.copy()),)])
    step = trace.steps[0]
    assert [e.path for e in step.forward] == ["a", "act", "b", ""]
    a_out = step.forward[0].outputs[0]
    # ReLU(inplace=True) overwrote a's output tensor after it was recorded: the trace kept a's value.
    expected = X @ net.a.weight.detach().numpy().T + net.a.bias.detach().numpy()
    np.testing.assert_allclose(a_out, expected, rtol=1e-6, atol=1e-6)
    assert (a_out < 0).any() and (step.forward[1].outputs[0] >= 0).all()
    # dict by key order, tuple in order, None skipped
    assert [o.shape for o in step.output] == [(5, 2), (5, 3)]
    assert step.loss is None and step.grads == [] and step.param_grads == {} and step.params_after == {}
    assert trace.framework == "torch" and "torch" in trace.versions
    assert set(trace.params_before) == {"a.weight", "a.bias", "b.weight", "b.bias"}


def test_paddle_shared_layer_calls_grads_and_backward_order():
    net = _PaddleNet()
    x = paddle.to_tensor(X)
    trace = capture(net, [(x,)], loss_fn=lambda out, batch: (out**2).sum())
    step = trace.steps[0]
    assert [(e.path, e.call) for e in step.forward] == [("a", 0), ("b", 0), ("shared", 0), ("shared", 1), ("", 0)]
    # the gradient w.r.t. each output arrives in backward order: the second call of `shared` first
    order = [(g.path, g.call) for g in step.grads]
    assert order.index(("shared", 1)) < order.index(("shared", 0)) < order.index(("b", 0)) < order.index(("a", 0))
    out = step.output[0]
    grad_root = next(g for g in step.grads if g.path == "")
    np.testing.assert_allclose(grad_root.grads[0], 2 * out, rtol=1e-6)
    assert step.loss == pytest.approx(float((out.astype(np.float64) ** 2).sum()), rel=1e-5)
    assert set(step.param_grads) == {"a.weight", "a.bias", "b.weight", "b.bias", "shared.weight", "shared.bias"}
    assert step.param_grads["a.weight"].shape == (4, 3)  # paddle layout [in, out]
    # no hook is left behind, and the model is back in its mode
    assert not net._forward_pre_hooks and not net.a._forward_post_hooks
    assert net.training


def test_hf_model_output_flattened_by_key_and_optimizer_steps():
    config = transformers.BertConfig(
        vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    ids = torch.from_numpy(np.random.default_rng(1).integers(1, 30, (2, 5)))
    out = model(input_ids=ids)
    flat = flatten_tensors(out, "torch")
    assert [tuple(t.shape) for t in flat] == [(2, 5, 16), (2, 16)]  # last_hidden_state, pooler_output

    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)], "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=1e-3, eps=1e-6)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trace = capture(model, [{"input_ids": ids}], loss_fn=lambda o, b: o.last_hidden_state.mean() + o.pooler_output.sum(),
                    optimizer=opt, steps=2)
    assert not model.training  # eval mode kept
    info = trace.optimizer
    assert info["class"] == "AdamW" and info["eps"] == 1e-6 and info["lr"] == 1e-3
    assert info["betas"] == [0.9, 0.999] and info["decay"] == "decoupled"
    assert "encoder.layer.0.attention.self.query.weight" in info["decayed"]
    assert "encoder.layer.0.attention.self.query.bias" not in info["decayed"]
    assert "embeddings.LayerNorm.weight" in info["params"]
    s0, s1 = trace.steps
    np.testing.assert_array_equal(trace.params_before["pooler.dense.weight"], before["pooler.dense.weight"].numpy())
    np.testing.assert_array_equal(s1.params_after["pooler.dense.weight"], model.pooler.dense.weight.detach().numpy())
    assert not np.array_equal(s0.params_after["pooler.dense.weight"], s1.params_after["pooler.dense.weight"])
    assert s0.loss != s1.loss
    assert all(p.grad is None for p in model.parameters())  # grads cleared after the last step


def test_paddle_adamw_decay_decided_on_param_name():
    net = _PaddleNet()
    # A Hugging Face style filter on structured names: Paddle passes param.name ("linear_0.b_0"), so it
    # decays every parameter, biases included. The trace records what was decided.
    opt = paddle.optimizer.AdamW(
        learning_rate=1e-2, parameters=net.parameters(), weight_decay=0.1, epsilon=1e-7,
        apply_decay_param_fun=lambda name: "bias" not in name,
    )
    trace = capture(net, [(paddle.to_tensor(X),)], loss_fn=lambda o, b: o.sum(), optimizer=opt)
    info = trace.optimizer
    assert info["eps"] == pytest.approx(1e-7) and info["weight_decay"] == pytest.approx(0.1)
    assert "a.bias" in info["decayed"] and len(info["decayed"]) == 6
    opt2 = paddle.optimizer.AdamW(
        learning_rate=1e-2, parameters=net.parameters(), weight_decay=0.1,
        apply_decay_param_fun=lambda name: name.endswith("w_0"),
    )
    info2 = capture(net, [(paddle.to_tensor(X),)], loss_fn=lambda o, b: o.sum(), optimizer=opt2).optimizer
    assert sorted(info2["decayed"]) == ["a.weight", "b.weight", "shared.weight"]
    assert info2["params"][:2] == ["a.weight", "a.bias"]


class _Boom(paddle.nn.Layer):
    def forward(self, x):
        raise ValueError("shapes do not fit")


def test_error_inside_forward_names_framework_and_module_and_hooks_are_removed():
    net = paddle.nn.Sequential(paddle.nn.Linear(4, 4), paddle.nn.Sequential(paddle.nn.ReLU(), _Boom()))
    net.eval()
    with pytest.raises(AlignError, match=r"paddle model raised inside forward, in module '1\.1' \(_Boom\)") as info:
        capture(net, [(paddle.to_tensor(X),)], train=True)
    assert isinstance(info.value.__cause__, ValueError)
    for _, layer in net.named_sublayers(include_self=True):
        assert not layer._forward_pre_hooks and not layer._forward_post_hooks
        assert not layer.training  # eval restored after train=True


def test_torch_error_and_bad_loss():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(3, 3))
    with pytest.raises(AlignError, match=r"torch model raised inside forward, in module '1' \(Linear\)"):
        capture(net, [(torch.from_numpy(X),)])
    assert not net[1]._forward_hooks and not net[1]._forward_pre_hooks
    good = torch.nn.Linear(4, 2)
    with pytest.raises(AlignError, match=r"loss_fn: the torch loss function must return a scalar tensor; got shape \(5, 2\)"):
        capture(good, [(torch.from_numpy(X),)], loss_fn=lambda o, b: o)
    with pytest.raises(AlignError, match="steps=2 needs an optimizer"):
        capture(good, [(torch.from_numpy(X),)], loss_fn=lambda o, b: o.sum(), steps=2)
    with pytest.raises(AlignError, match="paths names layers"):
        capture(good, [(torch.from_numpy(X),)], paths=["nope"])


def test_paths_restrict_hooks():
    net = _TorchNet()
    trace = capture(net, [(torch.from_numpy(X.copy()),)], paths=["b"])
    assert [e.path for e in trace.steps[0].forward] == ["b"]
    assert [m.path for m in trace.modules] == ["", "a", "act", "b"]  # every module is described
