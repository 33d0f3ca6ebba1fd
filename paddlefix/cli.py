"""The ``paddlefix`` command (also ``python -m paddlefix``).

    paddlefix list [--json]           every patch: state, reason, ranges, installed versions, links
    paddlefix doctor [--json]         probe each installed library before and after its patch
    paddlefix run [OPTIONS] -- CMD    run CMD with paddlefix applied in every Python process
    paddlefix fakedata inspect FILE   structure, shapes and dtypes of a captured-batches file
    paddlefix align show RESULT.json  render a saved align.compare result [--html OUT] [--json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import paddlefix
from . import settings
from ._errors import ConfigError
from .registry import Finding, _describe

__all__ = ["main"]

BOOTSTRAP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bootstrap")


#: Text output fits this many columns; ``--json`` keeps every text whole.
WIDTH = 100


def _wrap(text: str, width: int = WIDTH, indent: str = "", first: str = "") -> list[str]:
    """``first + text`` wrapped to ``width`` columns, continuation lines indented by ``indent``.

    Nothing is dropped: words longer than a line are broken.
    """
    import textwrap

    lines = textwrap.wrap(
        text, width=width, initial_indent=first, subsequent_indent=indent, break_on_hyphens=False
    )
    return lines or [first.rstrip()]


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], width: int = WIDTH) -> str:
    """Columns separated by two spaces. If the table is wider than ``width``, the widest
    columns are narrowed and their cells wrap onto more lines (nothing is cut)."""
    ncol = len(headers)
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(ncol)]
    floor = [max(len(h), 8) for h in headers]
    while sum(widths) + 2 * (ncol - 1) > width:
        i = max(range(ncol), key=lambda k: widths[k] - floor[k])
        if widths[i] <= floor[i]:
            break
        widths[i] -= 1
    out = []
    for r_i, row in enumerate([headers, ["-" * w for w in widths], *rows]):
        cells = [_wrap(str(c), w) if r_i != 1 else [str(c)] for c, w in zip(row, widths)]
        for k in range(max(len(c) for c in cells)):
            parts = [(c[k] if k < len(c) else "").ljust(w) for c, w in zip(cells, widths)]
            out.append("  ".join(parts).rstrip())
    return "\n".join(out)


def _dists_text(alternatives: str) -> str:
    """``"paddlepaddle|paddlepaddle-gpu"`` -> ``"paddlepaddle(-gpu)"``; other alternatives joined by ``|``."""
    first, *rest = alternatives.split("|")
    if rest and all(alt.startswith(first) for alt in rest):
        return f"{first}({'|'.join(alt[len(first):] for alt in rest)})"
    return alternatives


def _installed_text(installed: dict[str, str]) -> str:
    return ", ".join(f"{d} {v}" for d, v in installed.items()) or "-"


# -- list ---------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    """What ``apply()`` does here without importing any library (imports stay pending)."""
    # strict=False: list reports every state (PADDLEFIX_STRICT must not turn it into a traceback).
    report = paddlefix.apply("all", strict=False) if args.all else paddlefix.apply(strict=False)
    env_vars = {p.name: [v.name for v in p.env] for p in paddlefix.specs()}
    if args.json:
        items = []
        for st in report.values():
            item = st.to_dict()
            item["env"] = env_vars[st.name]
            items.append(item)
        print(json.dumps(items, indent=2))
        return 0
    rows = []
    for st in report.values():
        ranges = "; ".join(f"{_dists_text(d)} {r}" for d, r in st.requires.items())
        rows.append(
            (st.name, st.state, "default" if st.default else "opt-in", ranges, _installed_text(dict(st.installed)))
        )
    print(_table(("patch", "state", "set", "affected", "installed"), rows))
    print()
    for st in report.values():
        links = f"  [{', '.join(st.links)}]" if st.links else ""
        print("\n".join(_wrap(f"{st.reason}{links}", indent="    ", first=f"{st.name}: ")))
    return 0


# -- doctor -------------------------------------------------------------------------
@dataclass
class DoctorRow:
    name: str
    installed: str
    before: str
    after: str
    result: str
    reason: str
    failed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "installed": self.installed,
            "before": self.before,
            "after": self.after,
            "result": self.result,
            "reason": self.reason,
            "state": "failed" if self.failed else self.result,
        }


def _probe_text(finding: Finding | None) -> str:
    if finding is None:
        return "no probe"
    return ("present: " if finding.present else "absent: ") + finding.detail


def _safe_probe(patch: paddlefix.Patch) -> tuple[Finding | None, str | None]:
    if patch.probe is None:
        return None, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. nan_guard's own warning when it stops the probe's step
            return patch.probe(), None
    except Exception as exc:
        return None, f"probe raised {_describe(exc)}"


def _doctor_one(patch: paddlefix.Patch) -> DoctorRow | None:
    registry = paddlefix._registry
    installed = registry._installed(patch)
    if len(installed) < len(patch.requires):
        return None
    inst = _installed_text(installed)
    if patch.apply is None:
        return DoctorRow(patch.name, inst, "-", "-", "not implemented yet", "not implemented yet")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the libraries' own import-time noise
            for mod in (patch.module, *patch.imports):
                importlib.import_module(mod)
    except Exception as exc:
        reason = f"import {patch.module} failed: {_describe(exc)}"
        return DoctorRow(patch.name, inst, "-", "-", "FAILED", reason, failed=True)
    before, error = _safe_probe(patch)
    if error:
        return DoctorRow(patch.name, inst, error, "-", "FAILED", error, failed=True)
    try:
        # strict=False: a skip is a finding here, not an error (PADDLEFIX_STRICT would raise).
        status = registry.apply(patch.name, strict=False)[patch.name]
        after_text = "-"
        after, error = _safe_probe(patch) if status.state == "applied" else (None, None)
    finally:
        # Everything, not only this patch: PADDLEFIX_FORCE adds its names to every apply().
        registry.revert()
    if status.state == "applied":
        if error:
            return DoctorRow(patch.name, inst, _probe_text(before), error, "FAILED", error, failed=True)
        after_text = _probe_text(after)
        if after is not None and after.present:
            return DoctorRow(
                patch.name, inst, _probe_text(before), after_text, "FAILED",
                "problem still present with the patch applied", failed=True,
            )
        result = "fixed by patch" if after is not None else "applied (no probe to confirm)"
    elif status.state == "failed":
        return DoctorRow(patch.name, inst, _probe_text(before), "-", "FAILED", status.reason, failed=True)
    elif status.state == "skipped" and before is not None and before.present:
        result = "PROBLEM PRESENT, not patched"
    else:
        result = "not needed" if status.state == "skipped" else status.state
    return DoctorRow(patch.name, inst, _probe_text(before), after_text, result, status.reason)


def cmd_doctor(args: argparse.Namespace) -> int:
    """Probe each patch whose library is installed, before and after applying it, then revert."""
    rows = []
    missing = []
    logger = logging.getLogger("paddlefix")
    level = logger.level
    if settings.ENV_LOG_LEVEL not in os.environ:
        logger.setLevel(logging.WARNING)  # the table says it all; no INFO line per apply()
    try:
        for patch in paddlefix.specs():
            row = _doctor_one(patch)
            if row is None:
                missing.append(f"{patch.name} ({' and '.join(patch.requires)} not installed)")
            else:
                rows.append(row)
    finally:
        logger.setLevel(level)
    failed = any(r.failed for r in rows)
    if args.json:
        print(json.dumps({"patches": [r.to_dict() for r in rows], "not_installed": missing}, indent=2))
        return 1 if failed else 0
    print(f"paddlefix {paddlefix.__version__} doctor: Python {sys.version.split()[0]}")
    print(_table(("patch", "installed", "result"), [(r.name, r.installed, r.result) for r in rows]))
    for r in rows:
        print()
        print("\n".join(_wrap(r.reason, indent="    ", first=f"{r.name}: ")))
        print("\n".join(_wrap(r.before, indent="    ", first="  before patch: ")))
        print("\n".join(_wrap(r.after, indent="    ", first="  with patch:   ")))
    if missing:
        print()
        for m in missing:
            print("\n".join(_wrap(f"{m}: skipped", indent="    ")))
    print()
    print("FAILED: see above" if failed else "OK: no patch failed")
    return 1 if failed else 0


# -- run ------------------------------------------------------------------------------
def _pythonpath(current: str) -> str:
    """``current`` with the bootstrap folder first (once). Every other entry is kept as it
    is, empty ones included: an empty entry means the working directory."""
    if not current:
        return BOOTSTRAP_DIR
    here = os.path.normcase(os.path.abspath(BOOTSTRAP_DIR))
    kept = [p for p in current.split(os.pathsep) if not p or os.path.normcase(os.path.abspath(p)) != here]
    return os.pathsep.join([BOOTSTRAP_DIR, *kept])


def cmd_run(args: argparse.Namespace) -> int:
    """Exec the command with the bootstrap ``sitecustomize`` first on PYTHONPATH."""
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("paddlefix run: no command given (usage: paddlefix run [OPTIONS] -- CMD ARGS...)", file=sys.stderr)
        return 2
    env = dict(os.environ)
    for var, value in (
        (settings.ENV_PATCHES, args.patches),
        (settings.ENV_DISABLE, args.disable),
        (settings.ENV_FORCE, args.force),
    ):
        if value is not None:
            env[var] = value
    if args.strict:
        env[settings.ENV_STRICT] = "1"
    # Refuse bad settings here, before the program starts.
    settings.resolve(paddlefix._registry.names, paddlefix._registry.defaults, environ=env)
    env["PYTHONPATH"] = _pythonpath(env.get("PYTHONPATH", ""))
    executable = shutil.which(command[0], path=env.get("PATH"))
    if executable is None:
        print(f"paddlefix run: command not found: {command[0]!r}", file=sys.stderr)
        return 127
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(executable, command, env)
    return 0  # not reached


# -- fakedata -------------------------------------------------------------------------
def cmd_fakedata_inspect(args: argparse.Namespace) -> int:
    from . import fakedata

    return fakedata.inspect_command(args.file, as_json=args.json)


# -- align ----------------------------------------------------------------------------
def cmd_align_show(args: argparse.Namespace) -> int:
    """Print a result saved by ``AlignResult.to_json``; exit 0 when it is ok, 1 when not."""
    from .align._errors import AlignError
    from .align._report import AlignResult

    try:
        result = AlignResult.load(args.result)
    except FileNotFoundError:
        print(f"paddlefix align show: no such file: {args.result}", file=sys.stderr)
        return 2
    except AlignError as exc:
        print(f"paddlefix align show: {exc}", file=sys.stderr)
        return 2
    if args.html:
        result.to_html(args.html)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        print(result.to_text(max_rows=args.rows))
        if args.html:
            print(f"\nHTML report written to {args.html}")
    return 0 if result.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paddlefix",
        description="Version-gated, probe-checked patches that make Paddle behave as PyTorch users expect.",
    )
    parser.add_argument("--version", action="version", version=f"paddlefix {paddlefix.__version__}")
    sub = parser.add_subparsers(dest="command_name", required=True)

    p = sub.add_parser("list", help="every patch with its state and reason (no library is imported)")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.add_argument("--all", action="store_true", help="include opt-in patches, as apply('all') would")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("doctor", help="probe each installed library before and after its patch")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser(
        "run",
        help="run a command with paddlefix applied in every Python process it starts",
        description="Run CMD with paddlefix.apply() at start-up of every Python process, children included.",
    )
    p.add_argument("--patches", help=f"comma list, as {settings.ENV_PATCHES} (default, all, names)")
    p.add_argument("--disable", help=f"comma list, as {settings.ENV_DISABLE}")
    p.add_argument("--force", help=f"comma list, as {settings.ENV_FORCE}")
    p.add_argument("--strict", action="store_true", help=f"as {settings.ENV_STRICT}=1")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("fakedata", help="captured-batches files")
    fsub = p.add_subparsers(dest="fakedata_command", required=True)
    q = fsub.add_parser("inspect", help="print the structure, shapes and dtypes of FILE")
    q.add_argument("file")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_fakedata_inspect)

    p = sub.add_parser("align", help="tools for aligning a port (align.compare results)")
    asub = p.add_subparsers(dest="align_command", required=True)
    q = asub.add_parser("show", help="render a result saved with AlignResult.to_json(path)",
                        description="Print a saved align.compare result; exit status 0 if it is ok, 1 if not.")
    q.add_argument("result", metavar="RESULT.json")
    q.add_argument("--html", metavar="OUT", help="also write the self-contained HTML report to OUT")
    q.add_argument("--json", action="store_true", help="print the result as JSON instead of the table")
    q.add_argument("--rows", type=int, default=60, help="at most this many table rows (default 60)")
    q.set_defaults(func=cmd_align_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"paddlefix: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
