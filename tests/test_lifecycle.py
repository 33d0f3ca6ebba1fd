"""The shipped patches through the public API: identity over 100 cycles, threads, deferral."""

from __future__ import annotations

import warnings

import paddle  # noqa: F401  (patch targets must be imported for apply to act now)
import paddlenlp.transformers  # noqa: F401
import pytest

import paddlefix
from paddlefix import PaddlefixWarning
from tests.conftest import race, run_python

ALL = [p.name for p in paddlefix.specs()]


def _journal():
    return [(c.owner, c.attr, c.original, c.new, c.had_own) for c in paddlefix._registry._journal if hasattr(c, "attr")]


def _assert_restored(owner, attr, original, had_own, where=""):
    if had_own:
        assert vars(owner).get(attr) is original, f"{owner}.{attr} not restored {where}"
    else:  # was inherited (or did not exist): ours is removed, the inherited one shows again
        assert attr not in vars(owner), f"{owner}.{attr} left behind {where}"
        if original is not paddlefix.registry._MISSING:
            assert getattr(owner, attr) is original


def _forced_apply():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PaddlefixWarning)
        return paddlefix.apply("all", force=ALL)


def test_every_patch_forced_applies(paddlefix_clean):
    report = _forced_apply()
    bad = {n: (s.state, s.reason) for n, s in report.items() if s.state != "applied"}
    assert not bad
    assert all(s.forced for s in report.values())


def test_revert_identity_over_every_patched_attribute_after_100_cycles(paddlefix_clean):
    _forced_apply()
    first = _journal()
    assert len(first) >= 10, "the patches replace at least ten attributes"
    paddlefix.revert()
    for cycle in range(100):
        _forced_apply()
        current = _journal()
        assert [(id(o), a) for o, a, *_ in current] == [(id(o), a) for o, a, *_ in first]
        for owner, attr, _, new, _ in current:
            assert vars(owner).get(attr) is new
        paddlefix.revert()
        for owner, attr, original, _, had_own in first:
            _assert_restored(owner, attr, original, had_own, f"(cycle {cycle})")
    assert not paddlefix._registry._journal and not paddlefix._registry._originals


def test_sixteen_threads_leave_a_consistent_state(paddlefix_clean):
    _forced_apply()
    first = _journal()
    paddlefix.revert()
    race(16, 10, _forced_apply, paddlefix.revert)
    report = paddlefix.status()
    journal = _journal()
    for name, st in report.items():
        mine = [c for c in paddlefix._registry._journal if c.patch == name]
        # only an applied patch has changes in force (an applied one may need none, e.g.
        # matmul_precision forced in "highest" mode on a CPU build)
        assert st.state == "applied" or not mine, (name, st.state)
    keys = [(id(o), a) for o, a, *_ in journal]
    assert len(keys) == len(set(keys)), "an attribute was wrapped twice"
    for owner, attr, _, new, _ in journal:
        assert vars(owner).get(attr) is new
    paddlefix.revert()
    for owner, attr, original, _, had_own in first:
        _assert_restored(owner, attr, original, had_own)


def test_shipped_patch_deferred_until_import():
    out = run_python(
        "import paddlefix\n"
        "st = paddlefix.apply('nan_guard')['nan_guard']\n"
        "print(st.state, '|', st.reason)\n"
        "import paddle\n"
        "st = paddlefix.status()['nan_guard']\n"
        "print(st.state, '|', paddlefix.is_patched(paddle.optimizer.Optimizer, 'step'))\n"
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "pending | waiting for import of paddle"
    assert lines[1] == "applied | True"


def test_eval_grad_reason_names_fixed_version():
    report = paddlefix.apply("eval_grad")
    st = report["eval_grad"]
    assert st.state == "skipped"
    assert st.reason == f"paddlepaddle {st.installed['paddlepaddle']}: fixed upstream in 2.2.1"


@pytest.mark.parametrize("name", ["tokenizer_special_tokens", "attention_mask", "pretrained_init"])
def test_paddlenlp_patch_reason_states_range_and_probe(name, paddlefix_clean):
    st = paddlefix.apply(name)[name]
    assert st.state == "applied", st.reason
    assert st.reason.startswith(f"paddlenlp {st.installed['paddlenlp']} in affected range <3; probe confirmed: ")


def test_reference_taken_before_apply_is_warned_about():
    """`from paddle import matmul` before the patch: that name stays unpatched, and we say so."""
    out = run_python(
        "import warnings, paddlefix\n"
        "from paddle import matmul\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    paddlefix.set_float32_matmul_precision('float64')\n"
        "print(paddlefix.status()['matmul_precision'].state)\n"
        "print([str(x.message) for x in w if x.category is paddlefix.PaddlefixWarning])\n"
    )
    assert out.returncode == 0, out.stderr
    state, messages = out.stdout.splitlines()[-2:]
    assert state == "applied"
    assert "after __main__.matmul took a reference to the original" in messages
