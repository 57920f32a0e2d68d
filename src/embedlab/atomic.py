"""Files replaced atomically: written to a temporary file in the same folder, then renamed.

A run killed while writing leaves the previous version of the file intact instead of a
truncated one (checkpoints, the rewrites of ``metrics.csv``, run summaries). The temporary file
is created with mode ``0o666`` minus the umask, like any file ``open`` creates (0644 under
umask 022), so the renamed file has the permissions a colleague expects.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success it replaces ``path`` (``os.replace``).

    ``mode`` is ``"w"`` or ``"wb"``; ``kwargs`` go to :func:`open` (e.g. ``newline=""``).
    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    # O_EXCL: never another writer's file; 0o666 & ~umask, as open() would create it
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
