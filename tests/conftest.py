"""Shared fixtures. paddlefix is imported first: it loads zlib before paddle (see README)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Callable, Iterator

import paddlefix  # noqa: F401  (first: zlib before paddle 2.6.2)
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def paddlefix_clean() -> Iterator[None]:
    """Every patch reverted before and after the test."""
    paddlefix.revert()
    yield
    paddlefix.revert()


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (this venv), with PADDLEFIX_* cleared unless given."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("PADDLEFIX_")}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=timeout, cwd=ROOT
    )


def race(n_threads: int, rounds: int, apply: Callable[[], object], revert: Callable[[], object]) -> None:
    """``n_threads`` threads released together, odd ones applying and even ones reverting
    ``rounds`` times; re-raises the first error any of them hit."""
    import threading

    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads)

    def work(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(rounds):
                apply() if i % 2 else revert()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
