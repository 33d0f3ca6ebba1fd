"""align._diff: planted differences in hand-made traces are located exactly (phase, step, module)."""

from __future__ import annotations

import numpy as np
import pytest

from paddlefix.align._diff import HintContext, diff_traces
from paddlefix.align._errors import AlignError
from paddlefix.align._trace import StepTrace

from . import handmade as H


def first(**kw):
    context = kw.pop("context", None)
    tolerance = kw.pop("tolerance", None)
    pd, pt, pairing = H.make_traces(**kw)
    return diff_traces(pd, pt, pairing, tolerance=tolerance, context=context)


def test_correct_port_is_aligned_and_everything_was_compared():
    r = first(optimizer=True, steps=2)
    assert r.ok and r.first_divergence is None and not r.findings
    phases = {row.phase for row in r.rows}
    assert phases == {"forward", "loss", "backward", "param_grad", "step"}
    assert all(row.status == "ok" for row in r.rows)
    # forward: every paired module, both steps; the Linear weight gradients compared transposed
    assert sum(row.phase == "forward" for row in r.rows) == 2 * len(H.PAIRS)
    grads = {row.paddle: row for row in r.rows if row.phase == "param_grad" and row.step == 0}
    assert grads["blk.fc1.weight"].what == "transpose" and grads["blk.fc1.weight"].metrics.max_abs == 0


def test_untransposed_square_linear_found_with_hint():
    r = first(side_bugs={"untransposed": "blk.fc1"})
    d = r.first_divergence
    assert (d.phase, d.step, d.paddle_module, d.torch_module, d.kind) == ("forward", 0, "blk.fc1", "block.fc1",
                                                                          "module")
    assert d.what == "output[0]" and not d.metrics.ok
    assert "untransposed" in d.hint and "blk.fc1" in d.hint
    # the modules upstream agree, those downstream follow
    rows = {row.paddle: row.status for row in r.rows if row.phase == "forward"}
    assert rows["fc0"] == "ok" and rows["blk.fc2"] == "fail"


def test_gelu_tanh_approximation_found_with_config_finding():
    configs = {"blk.act": ({"approximate": "tanh"}, {"approximate": "none"})}
    r = first(side_bugs={"act": "gelu_tanh"}, loss=False, configs=configs)
    d = r.first_divergence
    assert (d.phase, d.paddle_module, d.kind) == ("forward", "blk.act", "module")
    assert len(r.findings) == 1 and r.findings[0].label == "approximate"
    assert "approximate" in d.hint and "tanh" in d.hint


def test_hidden_dimension_reversed_is_a_divergence():
    r = first(side_bugs={"reverse_hidden": "blk.fc2"}, loss=False)
    d = r.first_divergence
    assert (d.phase, d.paddle_module) == ("forward", "blk.fc2")
    r2 = first(side_bugs={"reverse_hidden": "blk.fc2"}, loss=False, tolerance="reprod")
    assert r2.first_divergence.paddle_module == "blk.fc2"


def test_functional_call_between_paired_modules():
    r = first(side_bugs={"functional_act": True, "act": "relu"}, loss=False)
    d = r.first_divergence
    assert (d.phase, d.paddle_module, d.torch_module, d.kind, d.what) == (
        "forward", "blk.fc2", "block.fc2", "between", "input[0]")
    assert d.candidates == [["blk.fc1", "block.fc1"]]
    assert "blk.fc1" in d.detail and "inside blk" in d.detail
    assert "functional" in d.hint


def test_model_inputs_differ():
    pd, pt, pairing = H.make_traces(loss=False)
    st = pd.steps[0]
    ev = [e._replace(inputs=[i + 1 for i in e.inputs]) if e.path in ("fc0", "") else e for e in st.forward]
    pd = pd._replace(steps=[st._replace(forward=ev)])
    # outputs unchanged: the inputs differ but the outputs agree -> reported, not a divergence
    r = diff_traces(pd, pt, pairing)
    assert r.first_divergence is None and r.ok
    assert {row.paddle: row.status for row in r.rows}["fc0"] == "inputs"
    # outputs changed too: the first paired module sees different inputs, nothing ran before it
    ev = [e._replace(outputs=[o + 1 for o in e.outputs]) if e.path == "fc0" else e for e in ev]
    pd = pd._replace(steps=[st._replace(forward=ev)])
    d = diff_traces(pd, pt, pairing).first_divergence
    assert (d.paddle_module, d.kind) == ("fc0", "inputs")


def test_mask_like_second_input_does_not_hide_the_module():
    pd, pt, pairing = H.make_traces(loss=False, side_bugs={"untransposed": "blk.fc2"})
    st = pd.steps[0]
    ev = [e._replace(inputs=e.inputs + [np.full((N := 2, 3), -1e4, np.float32)]) if e.path == "blk.fc2" else e
          for e in st.forward]
    tst = pt.steps[0]
    tev = [e._replace(inputs=e.inputs + [np.full((N, 3), -3.4e38, np.float32)]) if e.path == "block.fc2" else e
           for e in tst.forward]
    pd = pd._replace(steps=[st._replace(forward=ev)])
    pt = pt._replace(steps=[tst._replace(forward=tev)])
    d = diff_traces(pd, pt, pairing).first_divergence
    assert (d.paddle_module, d.kind) == ("blk.fc2", "module")
    assert "input(s) 1 differ" in d.detail


def test_config_mismatch_reported_although_numbers_agree():
    configs = {"fc0": ({}, {}), "blk": ({"eps": 1e-5}, {"eps": 1e-12}),
               "head": ({"momentum": 0.9}, {"momentum": 0.1}), "blk.fc1": ({"bias": True}, {"bias": True})}
    r = first(configs=configs)
    assert r.first_divergence is None and not r.failed_rows()
    assert not r.ok
    found = {(f.paddle, f.label): f for f in r.findings}
    assert set(found) == {("blk", "eps"), ("head", "momentum")}
    assert "1e-12" in found[("blk", "eps")].hint
    assert "copied without converting" in found[("head", "momentum")].hint
    # float32-stored values are the same setting
    r2 = first(configs={"blk": ({"eps": float(np.float32(1e-12))}, {"eps": 1e-12}),
                        "head": ({"momentum": 1 - 0.9}, {"momentum": 0.1})})
    assert r2.ok


def test_detach_in_residual_found_in_backward_only():
    r = first(side_bugs={"detach_residual": True})
    assert not any(row.status == "fail" for row in r.rows if row.phase in ("forward", "loss"))
    d = r.first_divergence
    assert (d.phase, d.step, d.paddle_module, d.torch_module, d.kind) == ("backward", 0, "blk", "block", "module")
    assert "fc0" in d.what and "detach" in d.hint
    # the first output gradient that differs is fc0's, in backward order
    bwd = [row for row in r.rows if row.phase == "backward"]
    assert [row.paddle for row in bwd if row.status == "fail"] == ["fc0"]


def test_loss_difference_with_agreeing_outputs_hints_at_ignore_index():
    pd, pt, pairing = H.make_traces()
    st = pd.steps[0]
    pd = pd._replace(steps=[st._replace(loss=st.loss * 0.7)])
    r = diff_traces(pd, pt, pairing)
    d = r.first_divergence
    assert (d.phase, d.kind) == ("loss", "loss")
    assert "-100" in d.hint and "cross_entropy" in d.hint
    r2 = diff_traces(pd, pt, pairing, context=HintContext(cross_entropy_patched=True))
    assert "-100" not in r2.first_divergence.hint


def test_param_grad_difference_only():
    pd, pt, pairing = H.make_traces()
    st = pd.steps[0]
    g = dict(st.param_grads)
    g["head.bias"] = g["head.bias"] + 1e-2
    pd = pd._replace(steps=[st._replace(param_grads=g)])
    d = diff_traces(pd, pt, pairing).first_divergence
    assert (d.phase, d.paddle_module, d.torch_module, d.kind) == ("param_grad", "head.bias", "head.bias", "param")
    assert "belongs to head" in d.detail


def test_untransposed_gradient_would_fail():
    """The weight gradient is compared in the pairing's layout: an untransposed square one fails."""
    pd, pt, pairing = H.make_traces()
    st = pt.steps[0]
    g = dict(st.param_grads)
    g["block.fc2.weight"] = np.ascontiguousarray(g["block.fc2.weight"].T)
    pt = pt._replace(steps=[st._replace(param_grads=g)])
    d = diff_traces(pd, pt, pairing).first_divergence
    assert (d.phase, d.paddle_module) == ("param_grad", "blk.fc2.weight")


def test_rounding_level_hint_and_matmul_precision():
    r = first(noise=2e-5, loss=False)
    d = r.first_divergence
    assert d is not None and d.metrics.scale_rel < 1e-4
    assert "set_float32_matmul_precision('float64')" in d.hint
    r2 = first(noise=2e-5, loss=False, context=HintContext(matmul_precision="float64"))
    assert "matmul_precision was 'float64'" in r2.first_divergence.hint
    assert "set_float32_matmul_precision" not in r2.first_divergence.hint


def test_current_context_reads_paddlefix_state(paddlefix_clean):
    import paddlefix
    from paddlefix.align._diff import current_context

    ctx = current_context(labels={"labels": np.array([1, -100, 2]), "mask": np.ones(3, np.float32)})
    assert ctx.ignore_index_labels is True and ctx.matmul_precision is None
    assert current_context(labels=[np.array([0, 1])]).ignore_index_labels is False
    paddlefix.apply("matmul_precision", force="matmul_precision")
    paddlefix.set_float32_matmul_precision("float64")
    try:
        assert current_context().matmul_precision == "float64"
    finally:
        paddlefix.set_float32_matmul_precision("highest")


def test_dropout_and_batchnorm_hints_in_train_mode():
    pd, pt, pairing = H.make_traces(side_bugs={"act": "relu"}, loss=False)
    i = [p.paddle_path for p in pairing.pairs].index("blk.act")
    pairing.pairs[i] = pairing.pairs[i]._replace(paddle_type="Dropout", torch_type="Dropout")
    r = diff_traces(pd, pt, pairing, context=HintContext(train=True))
    assert r.first_divergence.paddle_module == "blk.act"
    assert "same_randomness" in r.first_divergence.hint
    r = diff_traces(pd, pt, pairing, context=HintContext(train=True, shared_randomness=True))
    assert "same_randomness" not in r.first_divergence.hint
    pairing.pairs[i] = pairing.pairs[i]._replace(paddle_type="BatchNorm1D", torch_type="BatchNorm1d")
    r = diff_traces(pd, pt, pairing, context=HintContext(train=True))
    assert "momentum is 1 - torch's" in r.first_divergence.hint


# ----------------------------------------------------------------------------- steps
def test_adamw_rounding_noise_is_not_a_divergence():
    """Rounding-level gradients near AdamW's eps move the weights far apart: explained, said so."""
    r = first(optimizer=True, steps=3, tiny_input=True, grad_noise_abs=1e-8)
    noise = [row for row in r.rows if row.status == "noise"]
    assert noise and all(row.paddle == "fc0.weight" for row in noise)
    assert max(row.metrics.max_abs for row in noise) > 1e-3  # far out of tolerance...
    assert r.ok and r.first_divergence is None  # ...and yet not called diverged
    assert any("explained" in n and "rounding" in n for n in r.notes)


def test_optimizer_epsilon_found_at_first_step_and_parameter():
    r = first(optimizer=True, steps=3, tiny_input=True, grad_noise_abs=1e-8, paddle_opt={"eps": 1e-6})
    d = r.first_divergence
    assert (d.phase, d.step, d.paddle_module, d.kind) == ("step", 0, "fc0.weight", "param")
    assert "eps" in d.hint and "1e-06" in d.hint
    assert [f.label for f in r.findings] == ["eps"]
    # the next steps follow from it: no new divergence there
    assert all(row.status != "fail" for row in r.rows if row.step > 0 and row.phase != "step")


def test_weight_decay_filter_difference():
    r = first(optimizer=True, steps=2, torch_opt={"decay": lambda n: not n.endswith("bias")})
    d = r.first_divergence
    # loss, forward and gradients agree at step 0; the first parameter updated differently is a bias
    assert (d.phase, d.step, d.paddle_module) == ("step", 0, "fc0.bias")
    assert "apply_decay_param_fun receives param.name" in d.hint
    labels = [f.label for f in r.findings]
    assert labels == ["decayed parameters"]
    # step 1's loss differs as a consequence, marked so
    loss1 = [row for row in r.rows if row.phase == "loss" and row.step == 1][0]
    assert loss1.status in ("follows", "ok")


def test_weight_decay_difference_recognised_without_optimizer_info():
    pd, pt, pairing = H.make_traces(optimizer=True, steps=1, torch_opt={"decay": lambda n: not n.endswith("bias")})
    pd = pd._replace(optimizer={})
    d = diff_traces(pd, pt, pairing).first_divergence
    assert d.paddle_module == "fc0.bias"
    assert "proportional to the parameter" in d.hint


def test_bad_input():
    pd, pt, pairing = H.make_traces(steps=2)
    with pytest.raises(AlignError, match="different numbers of steps"):
        diff_traces(pd, pt._replace(steps=pt.steps[:1]), pairing)
    with pytest.raises(AlignError, match="paddle: expected a paddle Trace"):
        diff_traces(pt, pt, pairing)
    with pytest.raises(AlignError, match="tolerance"):
        diff_traces(pd, pt, pairing, tolerance=(1e-3, "x"))
    with pytest.raises(AlignError, match="pairing"):
        diff_traces(pd, pt, {"pairs": []})


def test_missing_torch_call_is_a_failure():
    pd, pt, pairing = H.make_traces(loss=False)
    st = pt.steps[0]
    pt = pt._replace(steps=[StepTrace([e for e in st.forward if e.path != "head"], st.output, None, [], {}, {})])
    d = diff_traces(pd, pt, pairing).first_divergence
    assert (d.paddle_module, d.what) == ("head", "call")


# ----------------------------------------------------------------------------- a real port
@pytest.mark.parametrize("loss_kind", ["square", "projection"])
def test_real_bert_port_is_aligned_over_three_adamw_steps(loss_kind):
    """A correct paddlenlp port of a tiny HF BertModel, 3 AdamW steps (eps=1e-8): the weights end up
    far outside float32 tolerance (rounding-level gradients near eps), and the port is not called
    diverged; the same run with Paddle's epsilon at 1e-6 is."""
    paddle = pytest.importorskip("paddle")
    torch = pytest.importorskip("torch")
    from paddlefix import align

    from .conftest import make_hf, make_pd

    rng = np.random.default_rng(0)
    batch = {"input_ids": rng.integers(1, 40, (2, 8)).astype("int64")}
    proj = rng.normal(0, 1, (16,)).astype("float32")

    def loss_pd(out, b):
        return (out[0] ** 2).mean() if loss_kind == "square" else (out[0] * paddle.to_tensor(proj)).sum()

    def loss_pt(out, b):
        return (out[0] ** 2).mean() if loss_kind == "square" else (out[0] * torch.from_numpy(proj)).sum()

    results = {}
    for pd_eps in (1e-8, 1e-6):
        # pad_token_id=None: no padding_idx on the HF embeddings, as in paddlenlp's (else a finding)
        hf, pd = make_hf("BertModel", pad_token_id=None), make_pd("BertModel")
        align.transfer(hf, pd)
        opd = paddle.optimizer.AdamW(learning_rate=1e-3, parameters=pd.parameters(), epsilon=pd_eps)
        opt = torch.optim.AdamW(hf.parameters(), lr=1e-3, eps=1e-8)
        results[pd_eps] = align.compare(pd, hf, [batch] * 3, loss=(loss_pd, loss_pt), optimizers=(opd, opt),
                                        steps=3)
    ok = results[1e-8]
    assert ok.ok and ok.first_divergence is None, str(ok)
    assert {r.phase for r in ok.rows} == {"forward", "loss", "backward", "param_grad", "step"}
    noise = [r for r in ok.rows if r.status == "noise"]
    if loss_kind == "square":  # gradients ~1e-9: every update is rounding-dominated
        assert noise and max(r.metrics.max_abs for r in noise) > 1e-4
    else:  # ordinary gradients: only the key biases, whose true gradient is zero (softmax ignores a shift)
        assert noise and {r.paddle.rsplit(".", 2)[-2:][0] for r in noise} == {"k_proj"}
        assert all(r.paddle.endswith("k_proj.bias") for r in noise)
    bad = results[1e-6]
    d = bad.first_divergence
    assert d is not None and (d.phase, d.step) == ("step", 0), str(bad)
    assert [f.label for f in bad.findings] == ["eps"] and "eps" in d.hint
