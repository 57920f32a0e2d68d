"""``ddp_spawn`` / ``ddp_fork`` whose workers leave the process group together.

Lightning's spawned DDP workers return as soon as their own work is done: rank 1 exits while
rank 0 still saves the weights it hands back to the parent, and the process group is torn
down by each rank's ``atexit`` handler at a different moment. gloo can then abort in its
teardown ("terminate called without an active exception", SIGABRT) after a run that
completed. :class:`OrderlyDDPStrategy` ends every worker with a barrier and
``destroy_process_group`` on all ranks, after rank 0 has sent its results. Importing this
module registers it as ``ddp_spawn``, ``ddp_fork`` and ``ddp_notebook`` (the Lightning layer,
:mod:`embedlab.module` and :mod:`embedlab.data.datamodule`, imports it), so
``Trainer(strategy="ddp_spawn")`` and ``--trainer.strategy=ddp_spawn`` use it.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
from pytorch_lightning.strategies import DDPStrategy, StrategyRegistry
from pytorch_lightning.strategies.launchers.multiprocessing import _MultiProcessingLauncher


class OrderlyLauncher(_MultiProcessingLauncher):
    """Runs the worker, then a barrier and ``destroy_process_group`` on every rank."""

    def _wrapping_function(self, *args: Any, **kwargs: Any) -> None:
        super()._wrapping_function(*args, **kwargs)
        # Reached on every rank only when the run succeeded (an exception skips it, so a
        # failing rank never leaves the others waiting here).
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


class OrderlyDDPStrategy(DDPStrategy):
    """``DDPStrategy`` whose spawned or forked workers shut the process group down together."""

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if isinstance(self._launcher, _MultiProcessingLauncher):
            self._launcher = OrderlyLauncher(self, start_method=self._launcher._start_method)


for _name, _method in (("ddp_spawn", "spawn"), ("ddp_fork", "fork"), ("ddp_notebook", "fork")):
    StrategyRegistry.register(
        _name,
        OrderlyDDPStrategy,
        description=f"DDP with start_method {_method!r}, workers torn down together (embedlab)",
        override=True,
        start_method=_method,
    )
