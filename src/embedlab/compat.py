"""The private APIs of Lightning, argparse, Optuna and wandb that embedlab relies on, in one place.

Attribute accesses go through the functions below; overrides of private methods stay in their
classes and are listed in :data:`PRIVATE_NAMES`, each with why embedlab needs it and the public
API that would replace it. ``tests/test_compat.py`` checks that every listed name still exists
in the installed versions (pinned in ``pyproject.toml``), so an upgrade that renames one fails
there, in one line, rather than in the middle of a run.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRIVATE_NAMES", "disable_distributed_sampler", "drop_wandb_init_key", "wandb_run"]

#: ``module:Class.attribute`` → why embedlab uses it / the public API that would replace it.
PRIVATE_NAMES = {
    "pytorch_lightning.cli:LightningCLI._add_subcommands": (
        "trainer_cli: the descriptions of fit/validate/test and test's verbose=False "
        "(public: a description argument of LightningCLI.subcommands)"
    ),
    "pytorch_lightning.cli:LightningCLI._prepare_subcommand_parser": (
        "trainer_cli: builds each trainer subcommand's parser as LightningCLI does (same)"
    ),
    "pytorch_lightning.cli:LightningCLI._run_subcommand": (
        "trainer_cli: a SIGTERM ends with the resume command and exit 143 "
        "(public: a hook around the subcommand)"
    ),
    "pytorch_lightning.cli:LightningCLI._parse_ckpt_path": (
        "trainer_cli: the run's config.yaml, not the checkpoint's hyperparameters, describes "
        "the model (public: an option to skip reading them)"
    ),
    "pytorch_lightning.strategies:DDPStrategy._configure_launcher": (
        "ddp: ddp_spawn workers meet at a barrier and destroy the process group together "
        "(public: a teardown hook of the launcher)"
    ),
    "pytorch_lightning.strategies.launchers.multiprocessing:_MultiProcessingLauncher"
    "._wrapping_function": "ddp: the same barrier, after each worker's run (same)",
    "pytorch_lightning.strategies.launchers.multiprocessing:_MultiProcessingLauncher"
    "._start_method": "ddp: the launcher is replaced by one of the same start method (same)",
    "pytorch_lightning.strategies:DDPStrategy._launcher": "ddp: the launcher replaced (same)",
    "pytorch_lightning.loggers.csv_logs:ExperimentWriter._rewrite_with_new_header": (
        "csv_logger: metrics.csv rewritten atomically when a column appears "
        "(public: an atomic writer option)"
    ),
    "pytorch_lightning.loggers:CSVLogger._experiment": "csv_logger: the writer above (same)",
    "pytorch_lightning.loggers:WandbLogger._wandb_init": (
        "drop_wandb_init_key: Lightning passes anonymous=None, which wandb warns about "
        "(public: WandbLogger not passing unset keys)"
    ),
    "pytorch_lightning.loggers:WandbLogger._experiment": (
        "wandb_run: finish a started run without starting one (public: logger.experiment "
        "starts one)"
    ),
    "pytorch_lightning:Trainer._accelerator_connector": (
        "disable_distributed_sampler: the P×K sampler shards by identity itself, whatever "
        "Trainer(use_distributed_sampler=...) says (public: the Trainer argument only)"
    ),
    "optuna.samplers:GridSampler._all_grids": (
        "sweep.study.GridSampler: grid points in the grid's order, not shuffled "
        "(public: a shuffle=False option)"
    ),
    "optuna.samplers:GridSampler._search_space": "sweep.study.GridSampler: the same (same)",
    "argparse:HelpFormatter._get_help_string": (
        "commands.parsing.CompactHelpFormatter: each option's first sentence (public: none)"
    ),
    "argparse:HelpFormatter._format_usage": (
        "commands.parsing.CompactHelpFormatter: a short usage line (public: usage=)"
    ),
}


def wandb_run(logger: Any) -> Any:
    """The wandb run a ``WandbLogger`` started, or ``None`` (without starting one)."""
    return getattr(logger, "_experiment", None)


def drop_wandb_init_key(logger: Any, key: str) -> None:
    """Leave ``key`` out of the arguments a ``WandbLogger`` passes to ``wandb.init``."""
    logger._wandb_init.pop(key, None)


def disable_distributed_sampler(trainer: Any) -> None:
    """Keep Lightning from replacing the data module's samplers with a ``DistributedSampler``."""
    trainer._accelerator_connector.use_distributed_sampler = False
