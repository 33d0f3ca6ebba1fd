"""The ``paddlefix`` command: list, doctor, run (children and distributed workers)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT

PADDLEFIX = [sys.executable, "-m", "paddlefix"]
NAMES = ["matmul_precision", "tokenizer_special_tokens", "attention_mask", "cross_entropy", "kaiming_init",
         "eval_grad", "pretrained_init", "nan_guard", "torch_defaults"]


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PADDLEFIX_") and k != "PYTHONPATH"}
    full.update(env or {})
    return subprocess.run([*PADDLEFIX, *args], capture_output=True, text=True, env=full, timeout=timeout, cwd=ROOT)


def test_list_json_schema():
    out = cli("list", "--json")
    assert out.returncode == 0, out.stderr
    items = json.loads(out.stdout)
    assert [i["name"] for i in items] == NAMES
    for item in items:
        assert item["state"] in ("applied", "pending", "skipped", "disabled", "failed")
        assert isinstance(item["reason"], str) and item["reason"]
        assert isinstance(item["requires"], dict) and isinstance(item["installed"], dict)
        assert isinstance(item["links"], list) and isinstance(item["env"], list)
        assert isinstance(item["default"], bool)
    for opt_in in (i for i in items if i["name"] in ("nan_guard", "torch_defaults")):
        assert opt_in["default"] is False and opt_in["state"] == "skipped"


def test_list_table_and_bad_environment():
    out = cli("list", "--all")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].split() == ["patch", "state", "set", "affected", "installed"]
    assert max(len(line) for line in out.stdout.splitlines()) <= 100, out.stdout
    # the reasons and links are wrapped, not cut: --json holds the same text whole
    flat = " ".join(out.stdout.split())
    for item in json.loads(cli("list", "--all", "--json").stdout):
        assert f"{item['name']}: {' '.join(item['reason'].split())}" in flat
        assert all(link in flat for link in item["links"])
    bad = cli("list", env={"PADDLEFIX_PATCHES": "nope"})
    assert bad.returncode == 2
    assert "PADDLEFIX_PATCHES: unknown patch 'nope'; valid choices:" in bad.stderr


def test_doctor_reports_every_installed_patch():
    out = cli("doctor")
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert text.splitlines()[1].split()[:3] == ["patch", "installed", "result"]
    for name in NAMES:
        assert f"\n{name} " in text and f"\n{name}: " in text
    assert text.rstrip().endswith("OK: no patch failed")
    assert max(len(line) for line in text.splitlines()) <= 100, text
    # PADDLEFIX_STRICT must not turn the doctor's expected skips into a traceback
    strict = cli("doctor", "--json", env={"PADDLEFIX_STRICT": "1"})
    assert strict.returncode == 0, strict.stderr
    data = json.loads(strict.stdout)
    assert [p["name"] for p in data["patches"]] == NAMES
    assert all({"before", "after", "result", "reason", "state"} <= set(p) for p in data["patches"])
    # --json keeps every text whole; the text output wraps the same words onto <= 100 columns
    # (numbers are masked: a probe on a random tiny model measures a different error each run)
    def words(s: str) -> str:
        return re.sub(r"\d[\d.e+-]*", "#", " ".join(s.split()))

    flat = words(text)
    for p in data["patches"]:
        for key in ("reason", "before", "after"):
            assert words(p[key]) in flat, (p["name"], key)
    assert max(len(p["before"]) for p in data["patches"]) > 100 - len("  before patch: ")


def test_table_wraps_wide_cells_to_the_width():
    from paddlefix.cli import _table

    long = "word " * 60
    text = _table(("patch", "result", "detail"), [("a_patch", "fixed by patch", long.strip()), ("b", "ok", "short")])
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert lines[0].split() == ["patch", "result", "detail"]
    assert " ".join(text.split()).count("word") == 60  # nothing dropped
    assert _table(("x",), [("y",)]) == "x\n-\ny"  # narrow tables are left as they are


STATUS_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import paddlefix
    out = {k: [v.state, v.reason] for k, v in paddlefix.status().items()}
    import paddle
    out["after_import"] = {k: v.state for k, v in paddlefix.status().items()}
    path = os.path.join(sys.argv[1], "status.%s.json" % os.environ.get("PADDLE_TRAINER_ID", os.getpid()))
    with open(path, "w") as f:
        json.dump(out, f)
    """
)


def _statuses(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("status.*.json"))]


def test_run_applies_in_child_and_grandchild_and_keeps_sitecustomize(tmp_path):
    script = tmp_path / "status.py"
    script.write_text(STATUS_SCRIPT)
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "sitecustomize.py").write_text(
        "import os, sys\n"
        "open(os.path.join(%r, 'sitecustomize.%%d.zlib-%%s' %% (os.getpid(), 'zlib' in sys.modules)), 'w').close()\n"
        % str(tmp_path)
    )
    parent = tmp_path / "parent.py"
    parent.write_text(
        "import subprocess, sys\n"
        f"subprocess.run([sys.executable, {str(script)!r}, {str(tmp_path)!r}], check=True)\n"
        f"subprocess.run([sys.executable, {str(script)!r}, {str(tmp_path)!r}], check=True)\n"
    )
    out = cli(
        "run", "--patches", "default,nan_guard", "--disable", "eval_grad", "--", sys.executable, str(parent),
        env={"PYTHONPATH": str(tmp_path / "custom")},
    )
    assert out.returncode == 0, out.stderr
    statuses = _statuses(tmp_path)
    assert len(statuses) == 2
    for st in statuses:
        assert st["eval_grad"] == ["disabled", "disabled by PADDLEFIX_DISABLE"]
        assert st["nan_guard"] == ["pending", "waiting for import of paddle"]
        assert st["after_import"]["nan_guard"] == "applied"
    # the user's own sitecustomize ran in the parent and in both children
    # (the `paddlefix run` process itself ran it too, before exec, outside the bootstrap) ...
    ran = [p.name.split(".") for p in tmp_path.glob("sitecustomize.*")]
    under_bootstrap = {pid for _, pid, flag in ran if flag == "zlib-True"}
    assert len(under_bootstrap) == 3, ran
    # ... and under the bootstrap after zlib was loaded (a paddle 2.6.2 it imports cannot break zlib)
    assert {pid for _, pid, flag in ran if flag == "zlib-False"} <= under_bootstrap, ran


def test_run_keeps_every_pythonpath_entry_including_empty_ones(tmp_path):
    """An empty PYTHONPATH entry means the working directory: it must survive."""
    show = [sys.executable, "-c", "import os; print(os.environ['PYTHONPATH'])"]
    from paddlefix.cli import BOOTSTRAP_DIR

    out = cli("run", "--", *show, env={"PYTHONPATH": os.pathsep + str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == os.pathsep.join([BOOTSTRAP_DIR, "", str(tmp_path)])
    # nested runs put the bootstrap first once; no PYTHONPATH adds nothing else
    out = cli("run", "--", *show, env={"PYTHONPATH": BOOTSTRAP_DIR + os.sep + os.pathsep + str(tmp_path)})
    assert out.stdout.strip() == os.pathsep.join([BOOTSTRAP_DIR, str(tmp_path)])
    out = cli("run", "--", *show)
    assert out.stdout.strip() == BOOTSTRAP_DIR


def test_run_refuses_bad_settings_and_missing_command():
    out = cli("run", "--patches", "bogus", "--", sys.executable, "-c", "pass")
    assert out.returncode == 2 and "PADDLEFIX_PATCHES: unknown patch 'bogus'" in out.stderr
    out = cli("run", "--", "no-such-command-xyz")
    assert out.returncode == 127 and "command not found" in out.stderr


@pytest.mark.slow
def test_run_reaches_both_workers_of_paddle_distributed_launch(tmp_path):
    script = tmp_path / "status.py"
    script.write_text(STATUS_SCRIPT)
    out = cli(
        "run", "--patches", "nan_guard", "--",
        sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
        "--log_dir", str(tmp_path / "log"), str(script), str(tmp_path),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    statuses = _statuses(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("status.*.json")) == ["status.0.json", "status.1.json"]
    for st in statuses:
        assert st["nan_guard"] == ["pending", "waiting for import of paddle"]
        assert st["after_import"]["nan_guard"] == "applied"
        assert st["after_import"]["eval_grad"] == "skipped"  # not selected


def test_fakedata_inspect_command(tmp_path):
    import numpy as np

    from paddlefix import fakedata

    path = tmp_path / "batches.npz"
    batches = ({"input_ids": np.arange(6, dtype="int64").reshape(2, 3), "label": i} for i in range(2))
    fakedata.capture(batches, 2, str(path))
    out = cli("fakedata", "inspect", str(path))
    assert out.returncode == 0, out.stderr
    assert "2 batches" in out.stdout and "['input_ids']: int64 [2, 3]" in out.stdout
    data = json.loads(cli("fakedata", "inspect", "--json", str(path)).stdout)
    assert data["n_batches"] == 2
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    out = cli("fakedata", "inspect", str(bad))
    assert out.returncode == 1 and str(bad) in out.stderr
