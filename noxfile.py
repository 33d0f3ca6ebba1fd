"""Test matrix: each supported Paddle + PaddleNLP pair, with torch / transformers as oracles.

    python3 -m pip install nox && python3 -m nox       # lint, then every test environment
    python3 -m nox -s "tests(paddle='3.3.1')"          # one of them
    python3 -m nox -R                                  # reuse the environments, skip installs
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["lint", "tests"]

ENVIRONMENTS = {
    "3.3.1": "constraints/paddle3.txt",
    "2.6.2": "constraints/paddle2.txt",
}


@nox.session(python="3.11")
@nox.parametrize("paddle", list(ENVIRONMENTS))
def tests(session: nox.Session, paddle: str) -> None:
    """Install one environment from its constraints file and run the whole test suite."""
    session.install(
        "-c", ENVIRONMENTS[paddle], "-c", "constraints/oracles.txt",
        "paddlepaddle", "paddlenlp", "torch", "transformers", "-e", ".[test]",
    )
    session.run("python", "-m", "pytest", *(session.posargs or ["-q"]))


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """Type-check the package and look for errors (unused names, undefined names)."""
    session.install("mypy==2.4.1", "ruff==0.17.6", "wrapt", "packaging", "numpy<2")
    session.run("ruff", "check", "--select", "F,E9", "paddlefix", "bench", "tests", "noxfile.py")
    session.run("mypy", "--ignore-missing-imports", "paddlefix")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Print the benchmark ratios (paddle 3.3.1 environment)."""
    session.install(
        "-c", ENVIRONMENTS["3.3.1"], "-c", "constraints/oracles.txt",
        "paddlepaddle", "paddlenlp", "torch", "transformers", "-e", ".[test]",
    )
    session.run("python", "bench/run.py", *session.posargs)
