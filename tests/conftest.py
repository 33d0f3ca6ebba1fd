"""Shared fixtures. paddlefix is imported first: it loads zlib before paddle (see README)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Iterator

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
