"""Benchmarks: ratios measured side by side in one run (patched / unpatched, ours / reference).

    python bench/run.py            # every row
    python bench/run.py import     # only rows whose module name contains "import"

Each ``bench_*.py`` beside this file exposes ``rows() -> list[Row]``. A ratio is
``measured / baseline`` (lower is better) and is compared with its goal. Timings are
best-of-N, interleaved so that machine noise hits both sides alike. Exit status 0 always:
this reports, it does not gate.
"""

from __future__ import annotations

import compileall
import importlib
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import paddlefix  # noqa: E402,F401  (zlib before paddle, as in user code)

from _common import Row  # noqa: E402

ROUNDS = 7


def _fresh(code: str) -> float:
    """Seconds printed by ``code`` run in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PADDLEFIX_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


IMPORT_PADDLE = "import time, zlib; t = time.perf_counter(); import paddle; print(time.perf_counter() - t)"
IMPORT_PADDLEFIX = "import time, zlib; t = time.perf_counter(); import paddlefix; print(time.perf_counter() - t)"
APPLY_AFTER_PADDLE = (
    "import time, paddlefix, paddle; t = time.perf_counter(); paddlefix.apply(); print(time.perf_counter() - t)"
)
APPLY_BEFORE_PADDLE = (
    "import time, paddlefix; t = time.perf_counter(); paddlefix.apply(); import paddle; "
    "print(time.perf_counter() - t)"
)


def startup_rows() -> list[Row]:
    # Measure what an installed paddlefix costs: pip writes bytecode at install time, so
    # compile it here too (PYTHONDONTWRITEBYTECODE would otherwise recompile every run).
    compileall.compile_dir(os.path.dirname(paddlefix.__file__), quiet=1)
    samples: dict[str, list[float]] = {k: [] for k in ("paddle", "paddlefix", "apply", "apply+import")}
    for _ in range(ROUNDS):  # interleaved fresh processes
        samples["paddle"].append(_fresh(IMPORT_PADDLE))
        samples["paddlefix"].append(_fresh(IMPORT_PADDLEFIX))
        samples["apply"].append(_fresh(APPLY_AFTER_PADDLE))
        samples["apply+import"].append(_fresh(APPLY_BEFORE_PADDLE))
    med = {k: statistics.median(v) for k, v in samples.items()}
    base = med["paddle"]
    return [
        Row("import paddlefix / import paddle", med["paddlefix"] / base, 0.02,
            f"{med['paddlefix'] * 1e3:.1f} ms / {base * 1e3:.0f} ms (medians of {ROUNDS} fresh processes, bytecode compiled)"),
        Row("apply() after import paddle / import paddle", med["apply"] / base, 0.03,
            f"{med['apply'] * 1e3:.1f} ms: gates and probes of every default patch run"),
        Row("apply() then import paddle / import paddle", med["apply+import"] / base, None,
            f"{med['apply+import'] * 1e3:.0f} ms: deferred patches applied by the import hook"),
    ]


def main(argv: list[str]) -> int:
    wanted = argv[0] if argv else ""
    logging.getLogger("paddlefix").setLevel(logging.WARNING)  # rows, not per-apply INFO lines
    modules = sorted(p.stem for p in HERE.glob("bench_*.py"))
    sources = [("startup", startup_rows)] + [(m, None) for m in modules]
    print(f"paddlefix {paddlefix.__version__} benchmarks, Python {sys.version.split()[0]}")
    print(f"{'row':<62} {'ratio':>8} {'goal':>7}  ok    detail")
    for name, fn in sources:
        if wanted not in name:
            continue
        started = time.perf_counter()
        try:
            rows = fn() if fn is not None else importlib.import_module(name).rows()
        except Exception as exc:
            print(f"{name:<62} {'error':>8} {'':>7}  -     {type(exc).__name__}: {exc}")
            continue
        for row in rows:
            goal = f"{row.goal:.3g}" if row.goal is not None else "-"
            ok = {True: "yes", False: "NO", None: "-"}[row.ok]
            print(f"{row.name:<62} {row.ratio:>8.3f} {goal:>7}  {ok:<5} {row.detail}")
        print(f"{'':<62} ({name}: {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
