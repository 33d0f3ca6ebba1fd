"""Public API, settings precedence, lazy imports and deferral, in fresh interpreters."""

from __future__ import annotations

import json

import pytest

import paddlefix
from paddlefix import ConfigError
from paddlefix.settings import resolve
from tests.conftest import run_python

NAMES = ["matmul_precision", "tokenizer_special_tokens", "attention_mask", "cross_entropy", "kaiming_init",
         "eval_grad", "pretrained_init", "nan_guard", "torch_defaults"]
DEFAULTS = NAMES[:-2]


def test_patch_names_and_defaults():
    specs = paddlefix.specs()
    assert [p.name for p in specs] == NAMES
    assert [p.name for p in specs if p.default] == DEFAULTS
    report = paddlefix.status()
    assert list(report) == NAMES
    for st in report.values():
        assert st.state in ("applied", "pending", "skipped", "disabled", "failed")
        assert st.reason.strip()


def test_import_paddlefix_imports_neither_paddle_nor_paddlenlp():
    out = run_python(
        "import sys, paddlefix\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('paddle', 'paddlenlp', 'torch', 'transformers', 'numpy'))\n"
        "print(bad)\n"
        "paddlefix.apply()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('paddle', 'paddlenlp')))\n"
        "print(sorted({s.state for s in paddlefix.status().values()}))\n"
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "[]"
    assert lines[1] == "[]", "apply() imported paddle or paddlenlp"


def test_apply_defers_until_import_then_applies():
    code = (
        "import sys, paddlefix\n"
        "from paddlefix.registry import Patch, Finding\n"
        "import functools\n"
        "def apply(p):\n"
        "    import paddle\n"
        "    orig = paddle.add\n"
        "    p.replace(paddle, 'add', functools.wraps(orig)(lambda *a, **k: orig(*a, **k)))\n"
        "paddlefix._registry.register(Patch('late', 'test', {'paddlepaddle': '>=0'}, 'paddle',\n"
        "    lambda: Finding(True, 'seen'), apply, default=False))\n"
        "st = paddlefix.apply('late')['late']\n"
        "print(st.state, '|', st.reason)\n"
        "assert 'paddle' not in sys.modules\n"
        "import paddle\n"
        "st = paddlefix.status()['late']\n"
        "print(st.state, '|', st.reason, '|', paddlefix.is_patched(paddle, 'add'))\n"
        "paddlefix.revert()\n"
        "print(paddlefix.is_patched(paddle, 'add'), paddle.add is paddlefix.get_original(paddle, 'add'))\n"
    )
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "pending | waiting for import of paddle"
    state, reason, patched = lines[1].split(" | ")
    assert state == "applied" and patched == "True"
    assert "in affected range >=0; probe confirmed: seen" in reason
    assert lines[2] == "False True"


def test_apply_waits_for_an_import_in_progress_in_another_thread(tmp_path):
    """The target is in sys.modules but still executing in another thread: the probe and
    apply must see the finished module, not the half-executed one."""
    (tmp_path / "slowmod.py").write_text("import time\ntime.sleep(0.5)\nLAST = 1\n")
    code = (
        "import sys, threading, time, paddlefix\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from paddlefix.registry import Patch, Finding\n"
        "seen = []\n"
        "def probe():\n"
        "    seen.append(hasattr(sys.modules['slowmod'], 'LAST'))\n"
        "    return Finding(True, 'seen')\n"
        "paddlefix._registry.register(Patch('late', 'test', {'paddlepaddle': '>=0'}, 'slowmod',\n"
        "    probe, lambda p: None, default=False))\n"
        "t = threading.Thread(target=__import__, args=('slowmod',)); t.start()\n"
        "while 'slowmod' not in sys.modules: time.sleep(0.001)\n"
        "st = paddlefix.apply('late')['late']\n"
        "t.join()\n"
        "print(paddlefix.status()['late'].state, seen)\n"
    )
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "applied [True]"


def test_deferred_patch_failing_at_import_warns_and_reports_failed():
    code = (
        "import warnings, paddlefix\n"
        "from paddlefix.registry import Patch, Finding\n"
        "def apply(p):\n"
        "    raise RuntimeError('cannot patch this build')\n"
        "paddlefix._registry.register(Patch('late', 'test', {'paddlepaddle': '>=0'}, 'paddle',\n"
        "    lambda: Finding(True, 'seen'), apply, default=False))\n"
        "paddlefix.apply('late')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import paddle\n"
        "print(paddlefix.status()['late'].state, '|', paddlefix.status()['late'].reason)\n"
        "print([str(x.message) for x in w if x.category is paddlefix.PaddlefixWarning])\n"
    )
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    state, messages = out.stdout.splitlines()[-2:]
    assert state == "failed | apply raised RuntimeError: cannot patch this build"
    assert "paddlefix: late failed on import of paddle: apply raised RuntimeError: cannot patch this build" in messages


def test_force_given_while_pending_counts_at_import():
    code = (
        "import paddlefix\n"
        "from paddlefix.registry import Patch, Finding\n"
        "paddlefix._registry.register(Patch('late', 'test', {'paddlepaddle': '>=0'}, 'paddle',\n"
        "    lambda: Finding(False, 'fine here'), lambda p: None, default=False))\n"
        "paddlefix.apply('late'); paddlefix.apply(force=('late',))\n"
        "import paddle\n"
        "st = paddlefix.status()['late']\n"
        "print(st.state, st.forced)\n"
    )
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "applied True"


def test_revert_of_pending_patch_cancels_it():
    code = (
        "import sys, paddlefix\n"
        "from paddlefix.registry import Patch, Finding\n"
        "calls = []\n"
        "paddlefix._registry.register(Patch('late', 'test', {'paddlepaddle': '>=0'}, 'paddle',\n"
        "    None, lambda p: calls.append(1), default=False))\n"
        "paddlefix.apply('late'); paddlefix.revert('late')\n"
        "import paddle\n"
        "print(paddlefix.status()['late'].state, calls)\n"
    )
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "skipped []"


# -- settings ---------------------------------------------------------------------------
def _resolve(env, **kw):
    return resolve(NAMES, DEFAULTS, environ=env, **kw)


def test_precedence_defaults_env_arguments():
    assert _resolve({}).selected == tuple(DEFAULTS)
    assert _resolve({"PADDLEFIX_PATCHES": "eval_grad,nan_guard"}).selected == ("eval_grad", "nan_guard")
    # arguments beat the environment
    assert _resolve({"PADDLEFIX_PATCHES": "eval_grad"}, names=("kaiming_init",)).selected == ("kaiming_init",)
    # one call adds an opt-in patch to the defaults
    assert _resolve({}, names=("default", "nan_guard")).selected == tuple(NAMES[:-1])
    assert _resolve({}, names=("default", "torch_defaults")).selected == tuple(DEFAULTS) + ("torch_defaults",)
    assert _resolve({"PADDLEFIX_PATCHES": "all"}).selected == tuple(NAMES)
    assert _resolve({"PADDLEFIX_PATCHES": "default,nan_guard"}).selected == tuple(NAMES[:-1])
    # strict: env, then argument
    assert _resolve({"PADDLEFIX_STRICT": "1"}).strict is True
    assert _resolve({"PADDLEFIX_STRICT": "1"}, strict=False).strict is False
    assert _resolve({"PADDLEFIX_STRICT": "0"}).strict is False
    # force: env and arguments both count, and forced names join the selection
    cfg = _resolve({"PADDLEFIX_FORCE": "eval_grad"}, names=("kaiming_init",), force=("nan_guard",))
    assert cfg.force == {"eval_grad", "nan_guard"}
    assert cfg.selected == ("kaiming_init", "eval_grad", "nan_guard")
    # disable: the environment's kill switch; arguments add to it
    cfg = _resolve({"PADDLEFIX_DISABLE": "eval_grad"}, exclude="kaiming_init")
    assert cfg.disabled_env == {"eval_grad"} and cfg.disabled_arg == {"kaiming_init"}
    assert _resolve({"PADDLEFIX_DISABLE": "*"}).disabled_env == set(NAMES)


@pytest.mark.parametrize(
    "env, kwargs, message",
    [
        ({"PADDLEFIX_PATCHES": "matmul_precison"}, {}, "PADDLEFIX_PATCHES: unknown patch 'matmul_precison'; valid choices: default, all, matmul_precision"),
        ({"PADDLEFIX_DISABLE": "x"}, {}, "PADDLEFIX_DISABLE: unknown patch 'x'; valid choices: default, all, \\*"),
        ({"PADDLEFIX_FORCE": "nope"}, {}, "PADDLEFIX_FORCE: unknown patch 'nope'"),
        ({"PADDLEFIX_STRICT": "maybe"}, {}, "PADDLEFIX_STRICT: invalid value 'maybe'; valid choices: 1, 0"),
        ({"PADDLEFIX_LOG_LEVEL": "loud"}, {}, "PADDLEFIX_LOG_LEVEL: invalid value 'loud'; valid choices: DEBUG, INFO"),
        ({}, {"names": ("bogus",)}, "apply\\(\\) names: unknown patch 'bogus'; valid choices"),
        ({}, {"exclude": ("bogus",)}, "apply\\(exclude=\\): unknown patch 'bogus'"),
        ({}, {"force": True}, "apply\\(force=\\): expected patch names, got a bool"),
        ({}, {"exclude": None}, "apply\\(exclude=\\): expected a patch name or an iterable of them, got None; valid choices: default, all, matmul_precision"),
        ({}, {"names": (None,)}, "apply\\(\\) names: expected patch names \\(str\\), got None; valid choices: default"),
        ({}, {"strict": "yes"}, "apply\\(strict=\\): expected True, False or None, got 'yes'"),
    ],
)
def test_bad_settings_are_refused_naming_variable_value_and_choices(env, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        _resolve(env, **kwargs)


def test_bad_environment_refused_by_apply_in_a_real_process():
    out = run_python("import paddlefix; paddlefix.apply()", env={"PADDLEFIX_DISABLE": "evalgrad"})
    assert out.returncode != 0
    assert "ConfigError: PADDLEFIX_DISABLE: unknown patch 'evalgrad'; valid choices:" in out.stderr


def test_unknown_paddlefix_variable_warns():
    out = run_python(
        "import warnings, paddlefix\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    paddlefix.apply()\n"
        "print([str(x.message) for x in w if x.category is paddlefix.PaddlefixWarning])\n",
        env={"PADDLEFIX_DISABEL": "eval_grad"},
    )
    assert out.returncode == 0, out.stderr
    assert "unknown environment variable PADDLEFIX_DISABEL ignored" in out.stdout


def test_disabled_state_and_one_info_log_line():
    out = run_python(
        "import logging, paddlefix\n"
        "r = paddlefix.apply()\n"
        "print(r['eval_grad'].state, '|', r['eval_grad'].reason)\n",
        env={"PADDLEFIX_DISABLE": "eval_grad", "PADDLEFIX_LOG_LEVEL": "INFO"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "disabled | disabled by PADDLEFIX_DISABLE"
    info = [line for line in out.stderr.splitlines() if line.startswith("paddlefix INFO")]
    assert len(info) == 1 and "eval_grad: disabled" in info[0]


def test_exclude_argument_disables():
    report = paddlefix.apply(exclude=("eval_grad",))
    try:
        assert report["eval_grad"].state == "disabled"
        assert report["eval_grad"].reason == "disabled by apply(exclude=...)"
    finally:
        paddlefix.revert()


def test_status_to_dict_is_json():
    data = json.loads(json.dumps([s.to_dict() for s in paddlefix.status().values()]))
    assert {"name", "state", "reason", "requires", "installed", "links"} <= set(data[0])
