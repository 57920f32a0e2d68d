"""Checkpoint files: read without running code (:func:`load_checkpoint`), written atomically in
their own folder (:class:`AtomicCheckpointIO`).

**Reading.** A checkpoint is a pickle, and unpickling a file with ``torch.load(weights_only=False)``
runs whatever functions the file names (``os.system``, ``Path.write_text``, ...): a checkpoint
shared by someone else must not be loaded that way. :func:`load_checkpoint` loads with
``weights_only=True``, which builds tensors, containers, numbers and strings only, plus the data
classes of :data:`SAFE_GLOBALS`. embedlab's own checkpoints hold nothing else: hyper-parameters
are plain values (:mod:`embedlab.constraints`), callback states (``ModelCheckpoint``'s paths and
score tensors, ``ValHistory``, ``LastCheckpoint``), loops, sampler and RNG states
(``embedlab_rng``: tensors and ints) and optimiser / scheduler states are tensors, numbers,
strings, lists, tuples and dicts. A file that needs more is refused with a one-line
:class:`~embedlab.errors.ConfigError` naming the file and what it would call; ``trust=True``
(``--trust_checkpoint`` of ``embedlab evaluate`` / ``embed`` / ``search`` / ``export``,
``--weights_only false`` of ``embedlab fit`` / ``test`` / ``validate``) loads such a file, from
a trusted source, with full unpickling.

**Writing.** Lightning 2.6's ``TorchCheckpointIO`` already saves through an fsspec transaction:
the whole checkpoint is serialised into memory, written to a temporary file in the *system*
temporary directory and moved over the target. That is atomic only when the temporary directory
and the run folder share a filesystem; on a cluster (``/tmp`` on a local disk, runs on NFS or
Lustre) the move is a copy into the target, and a job killed during it leaves a truncated
checkpoint. Here the temporary file is next to the target, so the rename is always atomic, and
the checkpoint is streamed to disk instead of held twice in memory. ``tests/test_atomic.py``
pins Lightning's behaviour: when Lightning writes next to the target itself, drop
``AtomicCheckpointIO.save_checkpoint`` (its ``load_checkpoint`` is the safe loading above).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from embedlab.atomic import atomic_write
from embedlab.data.splits import ValSplit
from embedlab.errors import ConfigError

__all__ = ["SAFE_GLOBALS", "TRUST_FLAG", "AtomicCheckpointIO", "load_checkpoint"]

#: Classes a ``weights_only`` load may build, besides torch's own allowlist: data classes
#: only (attributes set from the file, no code run), never functions.
#: ``ValSplit``: the ``val`` hyper-parameter of a ``RetrievalDataModule`` built in Python
#: (its default value); the command line stores it as a dict.
SAFE_GLOBALS: list[type] = [ValSplit]
torch.serialization.add_safe_globals(list(SAFE_GLOBALS))

#: The option that loads a checkpoint a safe load refuses, as the message names it.
TRUST_FLAG = "--trust_checkpoint"
#: Lightning's own option (``embedlab fit / test / validate --weights_only false``).
LIGHTNING_TRUST_FLAG = "--weights_only false"


def load_checkpoint(
    path: str | Path,
    trust: bool = False,
    *,
    map_location: Any = "cpu",
    trust_flag: str = TRUST_FLAG,
) -> dict[str, Any]:
    """The checkpoint at ``path``, a dict, loaded on the CPU (``map_location``).

    Loaded with ``torch.load(weights_only=True)``; a file that would need more (a function or
    class outside torch's allowlist and :data:`SAFE_GLOBALS`) is a :class:`ConfigError` naming
    the file and that global, and telling to pass ``trust_flag`` if the file comes from a
    trusted source. ``trust=True`` loads with ``weights_only=False``: full unpickling, which
    runs any code the file names.
    """
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as err:
        if trust:
            raise
        raise ConfigError(refusal(path, err, trust_flag)) from err
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"{path} is not a checkpoint (it holds a {type(checkpoint).__name__})")
    return checkpoint


def refusal(path: Any, err: BaseException, trust_flag: str = TRUST_FLAG) -> str:
    """One line: ``path`` needs more than a ``weights_only`` load allows, and what."""
    names = unsafe_globals(path, err)
    if names:
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        what = f"unpickling it would call {shown}, which a safe load refuses (it can run code)"
    else:
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", str(err), re.DOTALL)
        cause = detail.group(1) if detail else str(err).strip().splitlines()[0]
        what = f"a safe load (torch.load weights_only=True) cannot read it: {cause}"
    python = " (Python: trust_checkpoint=True)" if trust_flag == TRUST_FLAG else ""
    line = f"{path}: {what}; if the file comes from a trusted source, pass {trust_flag}{python}"
    return re.sub(r"\s+", " ", line).strip()


def unsafe_globals(path: Any, err: BaseException) -> list[str]:
    """The globals of the checkpoint at ``path`` a ``weights_only`` load refuses (a scan of its
    pickle, which runs nothing), else the one torch's error ``err`` names; ``[]`` if neither."""
    try:
        scanned = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # not a zip checkpoint, or not a local file: the error's own name
        scanned = []
    return scanned or list(dict.fromkeys(re.findall(r"GLOBAL ([\w.]+)", str(err))))


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves rename a temporary file from the same folder,
    and whose loads are :func:`load_checkpoint`'s: ``weights_only`` unless Lightning is told
    ``weights_only=False`` (``embedlab fit --ckpt_path X --weights_only false``).

    Args:
        trust_flag: the option a refused load names (``--weights_only false`` for the
            Lightning subcommands, ``--trust_checkpoint`` for ``embedlab evaluate``).
    """

    def __init__(self, trust_flag: str = LIGHTNING_TRUST_FLAG) -> None:
        super().__init__()
        self.trust_flag = trust_flag

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        if "://" in str(path):  # remote filesystems: Lightning's own writer
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_write(path, "wb") as handle:
            torch.save(checkpoint, handle)

    def load_checkpoint(
        self,
        path: Any,
        map_location: Any = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        trust = weights_only is False  # None (Lightning's default) is a safe load, as torch's
        if "://" in str(path):  # remote: Lightning's reader, which trusts http(s) by default
            try:
                return super().load_checkpoint(path, map_location, weights_only=not trust)
            except pickle.UnpicklingError as err:
                if trust:
                    raise
                raise ConfigError(refusal(path, err, self.trust_flag)) from err
        if not Path(path).is_file():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return load_checkpoint(path, trust, map_location=map_location, trust_flag=self.trust_flag)
