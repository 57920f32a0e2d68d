"""The Lightning callbacks of an embedlab run, one module each.

* :class:`LastCheckpoint` — ``last.ckpt``: the latest state, on a schedule and on SIGTERM;
* :class:`ValHistory` — the ``val/*`` metrics of every validation, kept in checkpoints;
* :class:`NonFiniteGuard` — one fused finiteness check of each step (``model.nonfinite``);
* :class:`RandomState` — the random generators' state in checkpoints, restored on resume;
* :class:`OfflineTripletMining` — FaceNet's offline mining (``trainer.callbacks``);
* :class:`QuietConsole` (in :mod:`.console`) — the progress bar, the one-line model summary and
  the warnings every process filters.

:class:`~embedlab.analysis.RetrievalPictures` (ranked lists after validation) lives with the
pictures it draws.
"""

from embedlab.callbacks.console import QuietConsole
from embedlab.callbacks.last_checkpoint import LastCheckpoint
from embedlab.callbacks.nonfinite import NonFiniteGuard, NonFiniteLossError
from embedlab.callbacks.offline_mining import OfflineTripletMining
from embedlab.callbacks.random_state import RandomState
from embedlab.callbacks.val_history import ValHistory

__all__ = [
    "LastCheckpoint",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "OfflineTripletMining",
    "QuietConsole",
    "RandomState",
    "ValHistory",
]
