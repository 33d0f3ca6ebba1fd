"""The registry's mechanism (gating, deferral, revert, threads) on real paddle.

These tests register their own small patches in a private ``Registry`` so that each gate
can be driven on purpose; the wrappers they install are real pass-through wrappers of
real paddle functions (nothing of paddle is mocked). The shipped patches are exercised
through the public API in test_api.py and tests/patches/.
"""

from __future__ import annotations

import functools
import warnings

import paddle
import pytest

from paddlefix import PaddlefixWarning, PatchError
from paddlefix.registry import Finding, Patch, Patcher, Registry
from tests.conftest import race


def _passthrough(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        wrapper.calls += 1
        return fn(*args, **kwargs)

    wrapper.calls = 0
    return wrapper


def _wrap_matmul(patcher: Patcher) -> None:
    original = paddle.matmul
    patcher.replace_everywhere(original, _passthrough(original), packages=("paddle",), extra=[(paddle.Tensor, "matmul")])


def _wrap_add(patcher: Patcher) -> None:
    patcher.replace(paddle, "add", _passthrough(paddle.add))


def _raise_multiline() -> Finding:
    raise RuntimeError("\n(InvalidArgument) bad input\n\n  C++ Traceback (most recent call last):\n  0   paddle::f\n")


def make_registry(**overrides) -> Registry:
    reg = Registry()
    spec = dict(
        name="wrap_matmul",
        summary="pass-through wrapper of paddle.matmul",
        requires={"paddlepaddle|paddlepaddle-gpu": ">=0"},
        module="paddle",
        probe=lambda: Finding(True, "always"),
        apply=_wrap_matmul,
    )
    spec.update(overrides)
    reg.register(Patch(**spec))
    return reg


def matmul_places():
    """Every loaded paddle module holding paddle.matmul (their set differs per version), and Tensor."""
    import sys
    import types

    original = paddle.matmul
    places = [
        (module, attr)
        for name, module in list(sys.modules.items())
        if isinstance(module, types.ModuleType) and (name == "paddle" or name.startswith("paddle."))
        for attr, value in list(vars(module).items())
        if value is original
    ]
    assert (paddle, "matmul") in places
    return places + [(paddle.Tensor, "matmul")]


def snapshot(places):
    return [vars(owner).get(attr) for owner, attr in places]


def test_apply_replaces_every_alias_and_revert_restores_identity():
    reg = make_registry()
    places = matmul_places()
    before = snapshot(places)
    report = reg.apply("wrap_matmul")
    assert report["wrap_matmul"].state == "applied"
    after = snapshot(places)
    assert all(a is not b for a, b in zip(after, before))
    assert len({id(a) for a in after}) == 1  # one wrapper everywhere
    assert "paddle.matmul" in report["wrap_matmul"].targets
    x = paddle.ones([2, 2])
    assert paddle.matmul(x, x).numpy().tolist() == [[2.0, 2.0], [2.0, 2.0]]
    assert after[0].calls == 1
    reg.revert()
    assert all(a is b for a, b in zip(snapshot(places), before))
    assert reg.status()["wrap_matmul"].reason == "reverted by paddlefix.revert()"


def test_double_apply_wraps_once():
    reg = make_registry()
    original = paddle.matmul
    reg.apply("wrap_matmul")
    first = paddle.matmul
    reg.apply("wrap_matmul")
    assert paddle.matmul is first
    assert first.__wrapped__ is original
    reg.revert()
    assert paddle.matmul is original


def test_hundred_cycles_restore_identity():
    reg = make_registry()
    places = matmul_places()
    before = snapshot(places)
    for _ in range(100):
        reg.apply("wrap_matmul")
        reg.revert("wrap_matmul")
    assert all(a is b for a, b in zip(snapshot(places), before))
    assert not reg._journal and not reg._originals and not reg._ours


def test_revert_is_lifo_and_first_saved_original_wins():
    reg = Registry()
    reg.register(Patch("a", "a", {"paddlepaddle": ">=0"}, "paddle", None, _wrap_add))
    reg.register(Patch("b", "b", {"paddlepaddle": ">=0"}, "paddle", None, _wrap_add))
    original = paddle.add
    reg.apply("a")
    wrapped_a = paddle.add
    reg.apply("b")
    assert paddle.add.__wrapped__ is wrapped_a
    assert reg.get_original(paddle, "add") is original
    reg.revert("b")
    assert paddle.add is wrapped_a
    reg.revert("a")
    assert paddle.add is original
    # Both applied, reverted together: newest change undone first.
    reg.apply("a", "b")
    reg.revert()
    assert paddle.add is original


def test_revert_leaves_foreign_wrapper_alone_with_warning():
    reg = make_registry(apply=_wrap_add)
    original = paddle.add
    reg.apply("wrap_matmul")
    ours = paddle.add
    foreign = functools.wraps(ours)(lambda *a, **k: ours(*a, **k))
    paddle.add = foreign
    try:
        with pytest.warns(PaddlefixWarning, match="replaced by something else"):
            report = reg.revert()
        assert paddle.add is foreign
        # the state says what was not undone (our wrapper is still called by the foreign one)
        assert report["wrap_matmul"].state == "skipped"
        assert report["wrap_matmul"].reason.startswith("reverted by paddlefix.revert(), except paddle.add: replaced")
    finally:
        paddle.add = original


def test_gate_reasons_from_installed_metadata():
    reg = Registry()
    reg.register(Patch("old", "s", {"paddlepaddle|paddlepaddle-gpu": "<2.2.1"}, "paddle", None, _wrap_add, fixed_in="2.2.1"))
    reg.register(Patch("missing", "s", {"no-such-distribution-xyz": ">=0"}, "paddle", None, _wrap_add))
    reg.register(Patch("absent", "s", {"paddlepaddle": ">=0"}, "paddle", lambda: Finding(False, "fine here"), _wrap_add))
    reg.register(Patch("unimplemented", "s", {"paddlepaddle": ">=0"}, "paddle", None, None))
    reg.register(Patch("broken", "s", {"paddlepaddle": ">=0"}, "paddle", None, lambda p: 1 / 0))
    reg.register(Patch("noisy", "s", {"paddlepaddle": ">=0"}, "paddle", _raise_multiline, _wrap_add))
    report = reg.apply("old", "missing", "absent", "unimplemented", "broken", "noisy")
    version = paddle.__version__
    assert report["old"].state == "skipped"
    assert report["old"].reason == f"paddlepaddle {version}: fixed upstream in 2.2.1"
    assert report["missing"].reason == "no-such-distribution-xyz not installed"
    assert report["absent"].state == "skipped"
    assert report["absent"].reason.endswith("probe: problem not present (fine here)")
    assert report["unimplemented"].reason == "not implemented yet"
    assert report["broken"].state == "failed" and "ZeroDivisionError" in report["broken"].reason
    # a reason is one line, even for an error that carries a C++ traceback, as Paddle's do
    assert report["noisy"].state == "failed"
    assert report["noisy"].reason == "probe raised RuntimeError: (InvalidArgument) bad input ..."
    assert all(s.reason and "\n" not in s.reason for s in report.values())
    # force: the problem-absent and out-of-range gates are overridden; not-installed is not.
    original = paddle.add
    report = reg.apply(force=("old", "missing"))
    assert report["old"].state == "applied" and report["old"].forced
    assert "outside affected range <2.2.1, forced" in report["old"].reason
    assert report["missing"].state == "skipped"
    reg.revert()
    assert paddle.add is original


def test_strict_raises_for_failed_or_explicit_skip():
    reg = Registry()
    reg.register(Patch("old", "s", {"paddlepaddle": "<2.2.1"}, "paddle", None, _wrap_add, fixed_in="2.2.1"))
    reg.register(Patch("broken", "s", {"paddlepaddle": ">=0"}, "paddle", None, lambda p: 1 / 0, default=False))
    assert reg.apply(strict=True)["old"].state == "skipped"  # default set: a skip is normal
    with pytest.raises(PatchError, match="old is skipped: paddlepaddle .*fixed upstream in 2.2.1"):
        reg.apply("old", strict=True)
    with pytest.raises(PatchError, match="broken is failed"):
        reg.apply("broken", strict=True)


def test_failed_apply_rolls_back_partial_changes():
    def half(patcher: Patcher) -> None:
        _wrap_add(patcher)
        raise RuntimeError("second step failed")

    reg = make_registry(apply=half)
    original = paddle.add
    report = reg.apply("wrap_matmul")
    assert report["wrap_matmul"].state == "failed"
    assert "second step failed" in report["wrap_matmul"].reason
    assert paddle.add is original


def test_stale_reference_warning():
    reg = make_registry()
    import sys
    import types

    user = types.ModuleType("user_module_with_stale_ref")
    user.matmul = paddle.matmul  # as `from paddle import matmul` would
    sys.modules[user.__name__] = user
    try:
        with pytest.warns(PaddlefixWarning, match=r"user_module_with_stale_ref\.matmul took a reference"):
            reg.apply("wrap_matmul")
    finally:
        del sys.modules[user.__name__]
        reg.revert()


def test_threads_apply_revert_consistent():
    reg = make_registry()
    places = matmul_places()
    before = snapshot(places)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PaddlefixWarning)  # no foreign-wrapper confusion either
        race(16, 20, lambda: reg.apply("wrap_matmul"), lambda: reg.revert("wrap_matmul"))
    state = reg.status()["wrap_matmul"].state
    current = snapshot(places)
    if state == "applied":
        # exactly one layer of wrapping, everywhere
        assert len({id(c) for c in current}) == 1 and current[0].__wrapped__ is before[0]
    else:
        assert all(a is b for a, b in zip(current, before))
    reg.revert()
    assert all(a is b for a, b in zip(snapshot(places), before))
    assert not reg._journal


def test_failed_import_of_declared_module_is_a_failed_state():
    reg = make_registry(imports=("paddle.no_such_submodule_xyz",))
    report = reg.apply("wrap_matmul")
    assert report["wrap_matmul"].state == "failed"
    assert report["wrap_matmul"].reason.startswith("import paddle.no_such_submodule_xyz failed: ModuleNotFoundError")


def test_development_build_is_judged_by_the_probe_alone(monkeypatch):
    """A version ``0.0.0`` (a source build) skips the range gate; the probe decides."""
    from paddlefix import registry

    monkeypatch.setitem(registry._versions, "paddlepaddle", "0.0.0")
    reg = Registry()
    reg.register(Patch("old", "s", {"paddlepaddle": "<2.2.1"}, "paddle", lambda: Finding(True, "seen"), _wrap_add))
    reg.register(Patch("fine", "s", {"paddlepaddle": "<2.2.1"}, "paddle", lambda: Finding(False, "not here"), _wrap_add))
    original = paddle.add
    report = reg.apply("old", "fine")
    try:
        assert report["old"].state == "applied"
        assert report["old"].reason == "paddlepaddle 0.0.0 (development build: probe decides); probe confirmed: seen"
        assert report["fine"].state == "skipped"
        assert report["fine"].reason.endswith("probe: problem not present (not here)")
    finally:
        reg.revert()
    assert paddle.add is original
