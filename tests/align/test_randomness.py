"""align.same_randomness against the real libraries: Paddle and torch draw the same masks.

The Hugging Face BertModel (eager attention) and its paddlenlp port, with dropout on, agree in
train mode -- outputs, gradients and three AdamW steps -- inside the context, and do not
without it. Each replaced function is also checked against the stock one: where the stock
mask and ours agree, the values are the stock function's (its scaling, its alpha formula).
"""

from __future__ import annotations

import inspect
import re
import sys

import numpy as np  # noqa: F401  (zlib/numpy loaded before paddle: paddle 2.6.2 hazard)
import pytest

paddle = pytest.importorskip("paddle")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pnlp = pytest.importorskip("paddlenlp.transformers")

from paddlefix import PaddlefixWarning, align  # noqa: E402
from paddlefix.align import RandomnessError  # noqa: E402

PF = paddle.nn.functional
TF = torch.nn.functional

CONFIG = dict(
    vocab_size=40,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=24,
    type_vocab_size=2,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    initializer_range=0.2,
    pad_token_id=0,
)


# -- models ------------------------------------------------------------------------------
def make_bert_pair(attn: str = "eager", seed: int = 1) -> tuple[object, object]:
    """(paddlenlp BertModel, HF BertModel) with identical weights, in train mode."""
    torch.manual_seed(seed)
    hf_cfg = transformers.BertConfig(**CONFIG)
    hf_cfg._attn_implementation = attn
    hf = transformers.BertModel(hf_cfg)
    paddle.seed(seed)
    pd = pnlp.BertModel(pnlp.BertConfig(**CONFIG))
    align.transfer(hf, pd)
    hf.train()
    pd.train()
    return pd, hf


def hf_param_names() -> list[tuple[str, str]]:
    """(paddlenlp name, HF name) of every BertModel parameter."""
    pairs = [
        ("embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight"),
        ("embeddings.position_embeddings.weight", "embeddings.position_embeddings.weight"),
        ("embeddings.token_type_embeddings.weight", "embeddings.token_type_embeddings.weight"),
        ("embeddings.layer_norm.weight", "embeddings.LayerNorm.weight"),
        ("embeddings.layer_norm.bias", "embeddings.LayerNorm.bias"),
        ("pooler.dense.weight", "pooler.dense.weight"),
        ("pooler.dense.bias", "pooler.dense.bias"),
    ]
    per_layer = [
        ("self_attn.q_proj", "attention.self.query"),
        ("self_attn.k_proj", "attention.self.key"),
        ("self_attn.v_proj", "attention.self.value"),
        ("self_attn.out_proj", "attention.output.dense"),
        ("norm1", "attention.output.LayerNorm"),
        ("linear1", "intermediate.dense"),
        ("linear2", "output.dense"),
        ("norm2", "output.LayerNorm"),
    ]
    for i in range(CONFIG["num_hidden_layers"]):
        for pd_name, hf_name in per_layer:
            for leaf in ("weight", "bias"):
                pairs.append((f"encoder.layers.{i}.{pd_name}.{leaf}", f"encoder.layer.{i}.{hf_name}.{leaf}"))
    return pairs


def as_torch_layout(pd_name: str, value: np.ndarray) -> np.ndarray:
    """Paddle Linear weights are [in, out]; torch's are [out, in]."""
    if value.ndim == 2 and "embeddings" not in pd_name:
        return value.T
    return value


@pytest.fixture(scope="module")
def batch() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(2, CONFIG["vocab_size"], size=(2, 9)).astype("int64")
    head = rng.standard_normal((2, 9, CONFIG["hidden_size"])).astype("float32")
    return {"input_ids": ids, "head": head}


def loss_pd(pd: object, batch: dict[str, np.ndarray]) -> tuple[object, object]:
    out = pd(paddle.to_tensor(batch["input_ids"]))
    seq = out[0]
    loss = (seq * paddle.to_tensor(batch["head"])).sum() + out[1].sum()
    return seq, loss


def loss_pt(pt: object, batch: dict[str, np.ndarray]) -> tuple[object, object]:
    out = pt(input_ids=torch.from_numpy(batch["input_ids"]))
    seq = out.last_hidden_state
    loss = (seq * torch.from_numpy(batch["head"])).sum() + out.pooler_output.sum()
    return seq, loss


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def grads_close(pd: object, pt: object) -> float:
    """Largest gradient difference relative to the model's largest gradient; asserts each is close.

    Float32 tolerance: rtol 1e-4 per element plus 1e-5 of the largest gradient (the key biases'
    gradients are exactly zero in theory and float noise in practice).
    """
    pd_params = dict(pd.named_parameters())
    pt_params = dict(pt.named_parameters())
    pairs = [
        (pd_name, as_torch_layout(pd_name, pd_params[pd_name].grad.numpy()), pt_params[hf_name].grad.numpy())
        for pd_name, hf_name in hf_param_names()
    ]
    scale = max(float(np.abs(g_pt).max()) for _, _, g_pt in pairs)
    worst = 0.0
    for pd_name, g_pd, g_pt in pairs:
        np.testing.assert_allclose(g_pd, g_pt, rtol=1e-4, atol=1e-5 * scale, err_msg=pd_name)
        worst = max(worst, max_diff(g_pd, g_pt) / scale)
    return worst


def train_steps(pd: object, pt: object, batch: dict[str, np.ndarray], steps: int, context: object | None):
    """``steps`` AdamW steps in each framework; per step (output diff, relative grad diff)."""
    opt_pd = paddle.optimizer.AdamW(learning_rate=1e-3, parameters=pd.parameters(), weight_decay=0.01)
    opt_pt = torch.optim.AdamW(pt.parameters(), lr=1e-3, weight_decay=0.01)
    diffs = []
    for _ in range(steps):
        seq_pd, l_pd = loss_pd(pd, batch)
        l_pd.backward()
        seq_pt, l_pt = loss_pt(pt, batch)
        l_pt.backward()
        out = max_diff(seq_pd.numpy(), seq_pt.detach().numpy())
        grad = grads_close(pd, pt) if context is not None else float("nan")
        diffs.append((out, grad))
        opt_pd.step()
        opt_pd.clear_grad()
        opt_pt.step()
        opt_pt.zero_grad()
    return diffs


# -- the BERT pair -------------------------------------------------------------------------
def test_bert_train_mode_aligned_under_same_randomness_and_not_without(batch):
    pd, pt = make_bert_pair()
    with align.same_randomness(seed=0, models=(pd, pt)) as rnd:
        inside = train_steps(pd, pt, batch, steps=3, context=rnd)
    per_forward = 1 + 3 * CONFIG["num_hidden_layers"]  # embeddings; attention probs, 2 hidden per layer
    assert rnd.report.drawn == {"paddle": 3 * per_forward, "torch": 3 * per_forward}
    # paddlenlp's act_dropout=0 calls draw nothing (one per layer per forward)
    assert rnd.report.skipped["paddle"] == 3 * CONFIG["num_hidden_layers"]
    # The key projections' biases have an exactly-zero gradient in exact arithmetic (softmax
    # ignores a per-row constant), so each framework's float noise there is normalised by Adam
    # into steps of about +-lr: they are compared separately.
    params = {
        n: (as_torch_layout(n, dict(pd.named_parameters())[n].numpy()), dict(pt.named_parameters())[h].detach().numpy())
        for n, h in hf_param_names()
    }
    final = max(max_diff(a, b) for n, (a, b) in params.items() if not n.endswith("k_proj.bias"))
    assert max(max_diff(a, b) for n, (a, b) in params.items() if n.endswith("k_proj.bias")) < 2 * 3 * 1e-3 * 1.01  # each side at most lr per step
    pd2, pt2 = make_bert_pair()
    outside = train_steps(pd2, pt2, batch, steps=1, context=None)
    print(f"\ntrain-mode BERT, max |paddle - torch| of the output per step: inside {[d[0] for d in inside]}, "
          f"relative grad diff {[d[1] for d in inside]}, params after 3 AdamW steps {final:.2e}; "
          f"without same_randomness {outside[0][0]:.3f}")
    for out, grad in inside:
        assert out < 1e-5, inside
        assert grad < 1e-4, inside
    assert final < 1e-5
    assert outside[0][0] > 1e-2, outside


def test_hf_sdpa_uses_the_shared_mask_like_eager(batch):
    """attn_implementation='sdpa' with dropout runs the math path with the shared mask."""
    _, eager = make_bert_pair("eager")
    _, sdpa = make_bert_pair("sdpa")
    sdpa.load_state_dict(eager.state_dict())
    runs = []
    for model in (eager, sdpa):
        with align.same_randomness(seed=3):
            seq, loss = loss_pt(model, batch)
            loss.backward()
        runs.append(seq.detach().numpy())
    assert max_diff(*runs) < 1e-5
    grads = [dict(m.named_parameters())["encoder.layer.0.attention.self.query.weight"].grad.numpy() for m in (eager, sdpa)]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    # with dropout off the stock function runs: identical inside and outside the context
    q = torch.randn(1, 2, 5, 4)
    stock = TF.scaled_dot_product_attention(q, q, q)
    with align.same_randomness(seed=0) as rnd:
        assert torch.equal(TF.scaled_dot_product_attention(q, q, q), stock)
    assert rnd.report.drawn["torch"] == 0


# -- a CNN with channel dropout ------------------------------------------------------------
def test_cnn_dropout2d_same_channel_masks():
    paddle.seed(0)
    pd = paddle.nn.Sequential(
        paddle.nn.Conv2D(3, 6, 3), paddle.nn.ReLU(), paddle.nn.Dropout2D(0.5), paddle.nn.Flatten(), paddle.nn.Linear(6 * 4 * 4, 5)
    )
    pt = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3), torch.nn.ReLU(), torch.nn.Dropout2d(0.5), torch.nn.Flatten(), torch.nn.Linear(6 * 4 * 4, 5)
    )
    align.transfer(pt, pd)
    pd.train()
    pt.train()
    x = np.random.default_rng(1).standard_normal((4, 3, 6, 6)).astype("float32")
    with align.same_randomness(seed=5, models=(pd, pt)) as rnd:
        out_pd = pd(paddle.to_tensor(x))
        out_pt = pt(torch.from_numpy(x))
        out_pd.sum().backward()
        out_pt.sum().backward()
    assert rnd.report.drawn == {"paddle": 1, "torch": 1}
    assert max_diff(out_pd.numpy(), out_pt.detach().numpy()) < 1e-5
    np.testing.assert_allclose(pd[0].weight.grad.numpy(), pt[0].weight.grad.numpy(), rtol=1e-5, atol=1e-5)
    # whole channels dropped: some but not all of the 24 (sample, channel) maps are zero after dropout
    with align.same_randomness(seed=5):
        feat = PF.dropout2d(paddle.ones([4, 6, 4, 4]), 0.5).numpy()
    zero = (feat == 0).all(axis=(2, 3))
    assert ((feat == 0) == zero[:, :, None, None]).all()
    assert 0 < zero.sum() < 24


def test_dropout3d_and_axis_match_torch_channel_dropout():
    x = np.random.default_rng(2).standard_normal((2, 3, 2, 3, 4)).astype("float32") + 3
    with align.same_randomness(seed=1):
        a = PF.dropout3d(paddle.to_tensor(x), 0.4).numpy()
        b = TF.dropout3d(torch.from_numpy(x), 0.4).numpy()
        # paddle's axis= form: the mask spans the listed axes
        c = PF.dropout(paddle.to_tensor(x[:, :, 0, 0, :]), 0.3, axis=[0, 1]).numpy()
        d = TF.dropout1d(torch.from_numpy(x[:, :, 0, 0, :]), 0.3).numpy()
        e = PF.dropout(paddle.to_tensor(x), 0.2).numpy()
        f = torch.dropout(torch.from_numpy(x), 0.2, True).numpy()  # the kernel called directly
    assert max_diff(a, b) == 0
    assert max_diff(c, d) == 0
    assert max_diff(e, f) == 0 and (e == 0).any()


# -- each framework's own semantics ------------------------------------------------------
def test_downscale_in_infer_against_its_definition():
    """train: x * mask (no scaling); eval: x * (1 - p), drawing nothing; same mask as torch's."""
    p = 0.25
    x = np.random.default_rng(3).standard_normal((6, 7)).astype("float32") + 5
    with align.same_randomness(seed=2) as rnd:
        down = PF.dropout(paddle.to_tensor(x), p, mode="downscale_in_infer").numpy()
        up_torch = TF.dropout(torch.from_numpy(x), p).numpy()
        drawn = rnd.calls("paddle")
        infer = PF.dropout(paddle.to_tensor(x), p, training=False, mode="downscale_in_infer").numpy()
        assert rnd.calls("paddle") == drawn == 1
    keep = down != 0
    assert 0 < keep.mean() < 1
    np.testing.assert_array_equal(down, np.where(keep, x, 0))  # train: no scaling at all
    np.testing.assert_allclose(up_torch, np.where(keep, x / np.float32(1 - p), 0), rtol=1e-6)  # torch: same mask
    np.testing.assert_allclose(infer, x * np.float32(1 - p), rtol=1e-6)  # inference scales by 1 - p


def _stock_vs_ours(run, is_kept, seed_fn):
    """Values where the stock run's mask and ours agree must be equal."""
    seed_fn(11)
    stock = run()
    with align.same_randomness(seed=4):
        ours = run()
    ks, ko = is_kept(stock), is_kept(ours)
    both, neither = ks & ko, ~ks & ~ko
    assert both.any() and neither.any()
    np.testing.assert_allclose(ours[both], stock[both], rtol=2e-7, atol=0)
    np.testing.assert_allclose(ours[neither], stock[neither], rtol=2e-7, atol=0)
    return abs(ko.mean() - ks.mean())


@pytest.mark.parametrize("case", ["paddle-dropout", "paddle-axis", "paddle-alpha", "paddle-feature-alpha", "torch-dropout",
                                  "torch-dropout2d", "torch-alpha", "torch-feature-alpha"])
def test_replaced_functions_keep_the_stock_arithmetic(case):
    x = np.random.default_rng(4).standard_normal((8, 16, 3)).astype("float32") + 4  # no zeros
    p = 0.3
    if case.startswith("paddle"):
        fn = {"paddle-dropout": lambda: PF.dropout(paddle.to_tensor(x), p),
              "paddle-axis": lambda: PF.dropout(paddle.to_tensor(x), p, axis=[0, 1]),
              "paddle-alpha": lambda: PF.alpha_dropout(paddle.to_tensor(x), p),
              "paddle-feature-alpha": lambda: PF.feature_alpha_dropout(paddle.to_tensor(x), p)}[case]
        if case == "paddle-feature-alpha" and not hasattr(PF, "feature_alpha_dropout"):
            pytest.skip("paddle.nn.functional.feature_alpha_dropout exists from Paddle 3.0")
        run = lambda: fn().numpy()  # noqa: E731
        seed_fn = paddle.seed
    else:
        fn = {"torch-dropout": lambda: TF.dropout(torch.from_numpy(x), p),
              "torch-dropout2d": lambda: TF.dropout2d(torch.from_numpy(x[..., None]), p),
              "torch-alpha": lambda: TF.alpha_dropout(torch.from_numpy(x), p, training=True),
              "torch-feature-alpha": lambda: TF.feature_alpha_dropout(torch.from_numpy(x), p, training=True)}[case]
        run = lambda: fn().numpy()  # noqa: E731
        seed_fn = torch.manual_seed
    if "alpha" in case:
        def is_kept(v):  # dropped elements all take one constant value, the most frequent one
            values, counts = np.unique(v, return_counts=True)
            return v != values[counts.argmax()]
    else:
        def is_kept(v):
            return v != 0
    assert _stock_vs_ours(run, is_kept, seed_fn) < 0.1  # keep rate as the stock function's


def test_alpha_dropout_same_in_both_frameworks():
    x = np.random.default_rng(5).standard_normal((5, 40)).astype("float32")
    with align.same_randomness(seed=6):
        a = PF.alpha_dropout(paddle.to_tensor(x), 0.2).numpy()
        b = TF.alpha_dropout(torch.from_numpy(x), 0.2, training=True).numpy()  # training defaults to False
    assert max_diff(a, b) < 1e-6


def test_eval_and_p0_draw_nothing_in_either_framework():
    x = np.ones((3, 4), dtype="float32")
    with align.same_randomness(seed=0) as rnd:
        PF.dropout(paddle.to_tensor(x), 0.0)
        PF.dropout(paddle.to_tensor(x), 0.5, training=False)
        TF.dropout(torch.from_numpy(x), 0.0)
        TF.dropout(torch.from_numpy(x), 0.5, training=False)
        layer = paddle.nn.Dropout(0.5)
        layer.eval()
        layer(paddle.to_tensor(x))
        a = PF.dropout(paddle.to_tensor(x), 0.5).numpy()
        b = TF.dropout(torch.from_numpy(x), 0.5).numpy()
    assert rnd.report.drawn == {"paddle": 1, "torch": 1}
    assert rnd.report.skipped == {"paddle": 3, "torch": 2}
    assert max_diff(a, b) == 0


# -- order and errors -------------------------------------------------------------------
def test_mismatched_call_order_names_both_sites():
    pd = paddle.nn.Sequential(paddle.nn.Linear(4, 4), paddle.nn.Dropout(0.1), paddle.nn.Linear(4, 4), paddle.nn.Dropout(0.2))
    pt = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.2), torch.nn.Linear(4, 4), torch.nn.Dropout(0.1))
    x = np.ones((2, 4), dtype="float32")
    with pytest.raises(RandomnessError) as info:
        with align.same_randomness(seed=0, models=(pd, pt)):
            pd(paddle.to_tensor(x))
            pt(torch.from_numpy(x))
    msg = str(info.value)
    assert "random call #0" in msg
    assert re.search(r"paddle: .*p=0\.1.*layer '1'.*test_randomness\.py:\d+", msg), msg
    assert re.search(r"torch: .*p=0\.2.*layer '1'.*test_randomness\.py:\d+", msg), msg
    # shapes: the paddle MHA attention-weights dropout against a hidden-state dropout
    mha = paddle.nn.MultiHeadAttention(8, 2, dropout=0.1)
    q = paddle.ones([2, 3, 8])
    with pytest.raises(RandomnessError, match=r"shape \[2, 2, 3, 3\] vs \[2, 3, 8\][\s\S]*transformer\.py:\d+"):
        with align.same_randomness(seed=0, models=(mha,)):
            mha(q)
            TF.dropout(torch.ones(2, 3, 8), 0.1)
    assert PF.dropout.__module__ == "paddle.nn.functional.common"


def test_unequal_counts_warn_at_exit():
    with pytest.warns(PaddlefixWarning, match="paddle made 2 random calls and torch 1"):
        with align.same_randomness(seed=0) as rnd:
            PF.dropout(paddle.ones([3]), 0.5)
            PF.dropout(paddle.ones([3]), 0.5)
            TF.dropout(torch.ones(3), 0.5)
    assert rnd.report.notes


def test_nested_use_refused_and_everything_restored_even_when_the_body_raises():
    originals = (PF.dropout, PF.alpha_dropout, paddle.randn, paddle.tensor.random.randn, torch.randn, torch.dropout,
                 TF.scaled_dot_product_attention)
    det = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(123)
    expected_torch = torch.rand(3)
    paddle.seed(123)
    expected_paddle = paddle.rand([3]).numpy()
    torch.manual_seed(123)
    paddle.seed(123)
    outer = align.same_randomness(seed=0)
    with pytest.raises(KeyError):
        with outer:
            assert PF.dropout is not originals[0] and torch.randn is not originals[4]
            assert "dropout" in vars(sys.modules["torch._VF"])
            assert torch.are_deterministic_algorithms_enabled()
            with pytest.raises(RandomnessError, match="already active"):
                with align.same_randomness(seed=1):
                    pass
            torch.rand(5), paddle.rand([5])
            raise KeyError("body")
    assert (PF.dropout, PF.alpha_dropout, paddle.randn, paddle.tensor.random.randn, torch.randn, torch.dropout,
            TF.scaled_dot_product_attention) == originals
    assert "dropout" not in vars(sys.modules["torch._VF"])
    assert torch.are_deterministic_algorithms_enabled() == det
    assert torch.equal(torch.rand(3), expected_torch)  # generator states restored
    np.testing.assert_array_equal(paddle.rand([3]).numpy(), expected_paddle)
    assert outer.report.active is False
    with pytest.raises(RandomnessError, match="already used"):
        with outer:
            pass
    with align.same_randomness(seed=0):  # a new one works
        pass


def test_report_says_what_was_set():
    with align.same_randomness(seed=7) as rnd:
        d = rnd.to_dict()
    names = {s["name"]: s for s in d["settings"]}
    assert names["torch.use_deterministic_algorithms"]["during"] == {"mode": True, "warn_only": True}
    assert names["torch.backends.cudnn.deterministic"]["during"] is True
    assert "FLAGS_cudnn_deterministic" in names
    assert "matmul_precision" in names["paddle TF32 / float32 matmul precision"]["note"]
    assert d["seed"] == 7 and set(d["frameworks"]) == {"paddle", "torch"}
    assert any("scaled_dot_product_attention" in c for c in d["covered"]["torch"]["dropout"])
    assert "same_randomness(seed=7)" in str(rnd.report)


def test_bad_arguments():
    with pytest.raises(ValueError, match="seed must be a non-negative int, got -1"):
        align.same_randomness(seed=-1)
    with pytest.raises(TypeError, match="deterministic must be True or False, got 'yes'"):
        align.same_randomness(deterministic="yes")  # type: ignore[arg-type]
    with pytest.raises(RandomnessError, match="paddle nn.Layer or torch nn.Module"):
        with align.same_randomness(models=[object()]):
            pass
    with align.same_randomness(models=[paddle.nn.Dropout(0.5), None]) as rnd:  # None: no model on that side
        pass
    assert rnd.report.watched == ["paddle:Dropout"]


# -- reproducibility and random tensors ----------------------------------------------------
def test_same_seed_twice_gives_identical_runs_in_each_framework(batch):
    pd, pt = make_bert_pair()
    runs: dict[int, list] = {}
    for seed in (0, 0, 1):
        with align.same_randomness(seed=seed):
            runs.setdefault(seed, []).append((loss_pd(pd, batch)[0].numpy(), loss_pt(pt, batch)[0].detach().numpy()))
    (a_pd, a_pt), (b_pd, b_pt) = runs[0]
    np.testing.assert_array_equal(a_pd, b_pd)
    np.testing.assert_array_equal(a_pt, b_pt)
    assert max_diff(a_pd, runs[1][0][0]) > 1e-2  # another seed, other masks


def test_random_tensor_functions_same_values_in_both_frameworks():
    probs = np.array([[0.1, 0.2, 0.7, 0.0], [0.5, 0.5, 0.0, 0.0]], dtype="float32")
    mean = np.arange(6, dtype="float32").reshape(2, 3)
    with align.same_randomness(seed=9) as rnd:
        pd_vals = [
            paddle.rand([2, 3]), paddle.randn([4]), paddle.standard_normal([2, 2]), paddle.randint(2, 9, [5]),
            paddle.normal(1.0, 2.0, [3]), paddle.normal(paddle.to_tensor(mean), 0.5),
            paddle.bernoulli(paddle.full([3, 4], 0.5)), paddle.randperm(7),
            paddle.multinomial(paddle.to_tensor(probs), 2), paddle.multinomial(paddle.to_tensor(probs[0]), 5, True),
        ]
        pt_vals = [
            torch.rand(2, 3), torch.randn(4), torch.randn((2, 2)), torch.randint(2, 9, (5,)),
            torch.normal(1.0, 2.0, (3,)), torch.normal(torch.from_numpy(mean), 0.5),
            torch.bernoulli(torch.full((3, 4), 0.5)), torch.randperm(7),
            torch.multinomial(torch.from_numpy(probs), 2), torch.multinomial(torch.from_numpy(probs[0]), 5, True),
        ]
    assert rnd.report.drawn == {"paddle": len(pd_vals), "torch": len(pt_vals)}
    for i, (a, b) in enumerate(zip(pd_vals, pt_vals)):
        a, b = a.numpy(), b.numpy()
        assert a.shape == b.shape and a.dtype == b.dtype, (i, a.dtype, b.dtype)
        assert max_diff(a, b) == 0, i
    assert sorted(pt_vals[7].tolist()) == list(range(7))
    assert not (pd_vals[8].numpy()[:, :] == 3).any()  # zero-probability category never drawn
    assert len(set(pd_vals[0].numpy().ravel().tolist())) == 6
    # a different function at the same position is refused
    with pytest.raises(RandomnessError, match="function randn vs rand"):
        with align.same_randomness(seed=9):
            paddle.randn([2])
            torch.rand(2)
    # an explicit torch generator keeps its own stream
    with align.same_randomness(seed=9) as rnd:
        g = torch.Generator().manual_seed(0)
        torch.rand(2, generator=g)
    assert rnd.report.drawn["torch"] == 0


def test_a_second_context_from_another_thread_is_refused_and_inplace_dropout_shares_the_mask():
    import threading

    errors: list[BaseException] = []

    def other() -> None:
        try:
            with align.same_randomness(seed=1):
                pass
        except BaseException as exc:  # checked below
            errors.append(exc)

    x = np.random.default_rng(8).standard_normal((4, 5)).astype("float32") + 3
    with align.same_randomness(seed=0):
        t = threading.Thread(target=other)
        t.start()
        t.join()
        a = paddle.to_tensor(x)
        if "inplace" in inspect.signature(PF.dropout).parameters:  # Paddle 3.x
            PF.dropout(a, 0.5, inplace=True)
        else:
            a = PF.dropout(a, 0.5)
        b = torch.from_numpy(x.copy())
        TF.dropout(b, 0.5, inplace=True)
    assert len(errors) == 1 and isinstance(errors[0], RandomnessError)
    assert max_diff(a.numpy(), b.numpy()) == 0


def test_recomputation_in_backward_is_refused():
    """torch.utils.checkpoint re-runs the forward in backward: a new mask would be silently wrong."""
    from torch.utils.checkpoint import checkpoint

    x = torch.ones(3, 4, requires_grad=True)
    with align.same_randomness(seed=0):
        y = checkpoint(lambda t: TF.dropout(t, 0.5) * 2, x, use_reentrant=False)
        with pytest.raises(RandomnessError, match="during backward.*gradient_checkpointing_disable"):
            y.sum().backward()


def test_static_graph_dropout_warns_that_it_is_not_covered():
    paddle.enable_static()
    try:
        main = paddle.static.Program()
        with paddle.static.program_guard(main, paddle.static.Program()):
            x = paddle.static.data("x", [2, 3], "float32")
            with align.same_randomness(seed=0) as rnd:
                with pytest.warns(PaddlefixWarning, match="static-graph mode is not covered"):
                    PF.dropout(x, 0.5)
    finally:
        paddle.disable_static()
    assert rnd.report.drawn["paddle"] == 0


@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_weights_dropout_paddle_and_torch(need_weights):
    """paddle.nn.MultiHeadAttention drops [batch, heads, L, S]; torch's MultiheadAttention
    [batch * heads, L, S] (need_weights) or, through scaled_dot_product_attention, [batch, heads, L, S]."""
    e, heads = 8, 2
    paddle.seed(0)
    pd = paddle.nn.MultiHeadAttention(e, heads, dropout=0.3)
    pt = torch.nn.MultiheadAttention(e, heads, dropout=0.3, batch_first=True)
    w = {n: p.numpy() for n, p in pd.named_parameters()}
    with torch.no_grad():  # paddle Linear is [in, out]; torch packs q, k, v as [3E, E]
        pt.in_proj_weight.copy_(torch.from_numpy(np.concatenate([w[f"{n}_proj.weight"].T for n in "qkv"])))
        pt.in_proj_bias.copy_(torch.from_numpy(np.concatenate([w[f"{n}_proj.bias"] for n in "qkv"])))
        pt.out_proj.weight.copy_(torch.from_numpy(w["out_proj.weight"].T))
        pt.out_proj.bias.copy_(torch.from_numpy(w["out_proj.bias"]))
    pd.train()
    pt.train()
    x = np.random.default_rng(6).standard_normal((3, 5, e)).astype("float32")
    with align.same_randomness(seed=2, models=(pd, pt)) as rnd:
        out_pd = pd(paddle.to_tensor(x))
        out_pt, _ = pt(*(torch.from_numpy(x),) * 3, need_weights=need_weights)
    assert rnd.report.drawn == {"paddle": 1, "torch": 1}
    assert max_diff(out_pd.numpy(), out_pt.detach().numpy()) < 1e-5


def test_shapes_match_only_when_equal_or_leading_dims_merged():
    from paddlefix.align._randomness import same_layout

    assert same_layout((6, 5, 4), (3, 2, 5, 4)) and same_layout((3, 2, 5, 4), (6, 5, 4))
    assert not same_layout((2, 3, 5, 4), (3, 2, 5, 4))  # same size, other layout
    assert not same_layout((5, 4), (4, 5)) and not same_layout((20,), (5, 5))
    with pytest.raises(RandomnessError, match=r"shape \[4, 5\] vs \[5, 4\]"):
        with align.same_randomness(seed=0):
            PF.dropout(paddle.ones([4, 5]), 0.5)
            TF.dropout(torch.ones(5, 4), 0.5)


def test_the_public_names_import_no_framework():
    from tests.conftest import run_python

    out = run_python(
        "import sys, paddlefix.align as a; a.same_randomness; a.RandomnessError; "
        "print(sorted(m for m in ('numpy', 'paddle', 'torch') if m in sys.modules))"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("variant", ["plain", "causal", "bool-mask", "float-mask", "gqa", "scale"])
def test_sdpa_math_path_equals_the_stock_function(variant):
    """With a tiny dropout_p (no element dropped) the math path gives the stock result."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 5, 8, generator=g)
    k = torch.randn(2, 4 if variant != "gqa" else 2, 6, 8, generator=g)
    v = torch.randn(2, k.shape[1], 6, 8, generator=g)
    kwargs = {
        "plain": {}, "causal": {"is_causal": True}, "gqa": {"enable_gqa": True}, "scale": {"scale": 0.3},
        "bool-mask": {"attn_mask": torch.rand(5, 6, generator=g) > 0.3},
        "float-mask": {"attn_mask": torch.randn(2, 1, 5, 6, generator=g)},
    }[variant]
    stock = TF.scaled_dot_product_attention(q, k, v, **kwargs)
    with align.same_randomness(seed=0) as rnd:
        ours = TF.scaled_dot_product_attention(q, k, v, dropout_p=1e-9, **kwargs)
    assert rnd.report.drawn["torch"] == 1
    torch.testing.assert_close(ours, stock, rtol=1e-5, atol=1e-6)


def test_p_given_as_a_float32_tensor_matches_the_python_float():
    x = np.ones((4, 6), dtype="float32")
    with align.same_randomness(seed=0) as rnd:
        a = PF.dropout(paddle.to_tensor(x), paddle.to_tensor([0.1], dtype="float32")).numpy()  # 0.10000000149...
        b = TF.dropout(torch.from_numpy(x), 0.1).numpy()
    assert rnd.report.drawn == {"paddle": 1, "torch": 1}
    np.testing.assert_allclose(a, b, rtol=1e-6)


# -- compare(train=True) draws its masks from the shared stream ------------------------------------
def test_compare_in_train_mode_aligns_a_port_with_dropout() -> None:
    """``align.compare(..., train=True)`` runs both models under ``same_randomness``: a correct port
    with dropout 0.1 everywhere is aligned at every module, and no hint blames dropout. (Run outside
    the context, the first outputs of these models differ by more than 1e-2: see above.)"""
    pd, hf = make_bert_pair(seed=4)
    ids = np.random.default_rng(4).integers(1, CONFIG["vocab_size"], (2, 9)).astype("int64")
    result = align.compare(pd, hf, {"input_ids": ids}, train=True)
    assert result.first_divergence is None, str(result)
    forward = [r for r in result.rows if r.phase == "forward"]
    assert forward and all(r.status in ("ok", "skipped") for r in forward), str(result)
    dropouts = [r for r in forward if r.paddle.endswith("dropout")]
    assert dropouts and all(r.status == "ok" for r in dropouts), str(result)  # train-mode masks agree
    import json

    assert "same_randomness" not in json.dumps(result.to_dict(), default=str)  # the dropout hint
