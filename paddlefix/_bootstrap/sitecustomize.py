"""Start-up hook used by ``paddlefix run``: applies paddlefix in every Python process.

``paddlefix run`` puts this folder first on ``PYTHONPATH``, so Python's ``site`` module
imports this file at start-up in the command and in every Python process it starts
(DataLoader workers, ``paddle.distributed.launch`` workers, ...). It first runs the
``sitecustomize`` that would have run without it, then ``paddlefix.apply()`` with the
settings ``paddlefix run`` passed through the environment. Paddle and PaddleNLP are not
imported here: their patches wait for the program's own imports.
"""

import os
import sys

# Before anything else, the user's sitecustomize included: Paddle 2.6.2 breaks a zlib
# loaded after it (see README and paddlefix/__init__.py).
import zlib  # noqa: F401


def _chain_original() -> None:
    """Run the next ``sitecustomize`` on ``sys.path`` (the one this file shadows)."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    ours = sys.modules.get("sitecustomize")
    sys.modules["sitecustomize"] = module
    try:
        spec.loader.exec_module(module)
    finally:
        if ours is not None:
            sys.modules["sitecustomize"] = ours


def _apply() -> None:
    try:
        import paddlefix
    except ImportError:
        # An interpreter without paddlefix installed: use the copy this file belongs to.
        sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        import paddlefix
    try:
        paddlefix.apply()
    except Exception as exc:  # never stop the user's program from starting
        sys.stderr.write(f"paddlefix: apply() at start-up failed: {type(exc).__name__}: {exc}\n")


try:
    _chain_original()
except Exception as _exc:
    sys.stderr.write(f"paddlefix: the original sitecustomize raised {type(_exc).__name__}: {_exc}\n")
_apply()
