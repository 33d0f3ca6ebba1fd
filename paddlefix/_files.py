"""Files written whole or not at all, and ``.npz`` archives opened without pickles (shared by
``fakedata`` and ``align``'s trace files and reports). Imports NumPy only when an archive is opened."""

from __future__ import annotations

import os
import secrets
from typing import IO, Any, Callable

__all__ = ["open_npz", "write_atomic"]


def write_atomic(path: str, write: Callable[[IO[bytes]], object], *, overwrite: bool = True) -> None:
    """Write ``path`` through ``write(binary_file)`` into a temporary file beside it, then rename.

    Readers see the old file or the whole new one, never a part; on any failure the temporary
    file is removed and ``path`` is untouched. With ``overwrite=False`` a ``path`` that appeared
    meanwhile is kept and :class:`FileExistsError` raised. The file's mode is 0o666 & ~umask, as
    ``open(path, "wb")`` gives.
    """
    folder = os.path.dirname(os.path.abspath(path))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if not overwrite and os.path.lexists(path):  # appeared while we were writing
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def open_npz(path: str, bad: type[Exception]) -> Any:
    """``path`` opened as an ``.npz`` archive with pickles refused; ``bad(reason)`` raised if it is not one."""
    import numpy as np

    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise bad(f"not an .npz archive ({type(exc).__name__}: {exc})") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise bad("a single .npy array, not an .npz archive")
    return loaded
