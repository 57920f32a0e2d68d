"""``embedlab fit``, ``validate`` and ``test``: LightningCLI with embedlab's run folder.

embedlab fit --config experiments/digits.yaml [--model.loss.init_args.margin=0.2]
embedlab test --config runs/digits/version_0/config.yaml --ckpt_path runs/digits/version_0/checkpoints/last.ckpt

:mod:`embedlab.cli` routes these subcommands here; the others are :mod:`embedlab.commands`.
A configuration error prints one line (:class:`embedlab.ConfigError`); any other exception keeps
its traceback.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from embedlab import schedules  # noqa: F401  (--help lists its schedulers)
from embedlab.callbacks import NonFiniteLossError, ValHistory
from embedlab.callbacks.console import quiet_callbacks, quiet_console
from embedlab.callbacks.last_checkpoint import LAST, LastCheckpoint
from embedlab.checkpoint_io import AtomicCheckpointIO
from embedlab.commands import TRAINER_COMMANDS
from embedlab.commands.parsing import CompactHelpFormatter
from embedlab.compat import drop_wandb_init_key, wandb_run
from embedlab.csv_logger import AtomicCSVLogger
from embedlab.data import RetrievalDataModule
from embedlab.errors import ConfigError, one_line, report_or_raise, reported_error
from embedlab.metrics import PRIMARY_METRIC, scalar_metrics
from embedlab.module import MetricLearningModule
from embedlab.protocol import selected, tested_checkpoint
from embedlab.report import (
    BASELINE_ROW,
    baseline_metrics,
    member_rows,
    print_members,
    print_summary,
    write_json,
)
from embedlab.runs import TRIAL_ENV, drop_if_empty, new_run_dir, resumed_run_dir


class EmbedlabParser(LightningArgumentParser):
    """A ``LightningArgumentParser`` whose errors are :class:`~embedlab.ConfigError`s."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", CompactHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        raise ConfigError(one_line(message)) from ex


def finish_wandb(trainer: Trainer | None, failed: bool = False) -> None:
    """Close this process's wandb run now, not at interpreter exit, where wandb writes its
    closing lines with colour codes into logs."""
    for logger in trainer.loggers if trainer is not None else []:
        run = wandb_run(logger) if isinstance(logger, WandbLogger) else None
        if run is not None and hasattr(run, "finish"):
            run.finish(exit_code=1 if failed else 0)


class EmbedlabCLI(LightningCLI):
    """LightningCLI with ``fit``/``validate``/``test``, writing embedlab's run folder."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.exit_code = 0
        super().__init__(*args, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """The trainer subcommands (``predict`` is not offered: it would discard its output)."""
        skip = {"model", "dataloaders", "datamodule"}
        return {
            "fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
            "validate": skip,
            "test": skip,
        }

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        """The trainer subcommands as in LightningCLI, with embedlab's descriptions."""
        self._subcommand_parsers: dict[str, LightningArgumentParser] = {}
        subcommands = parser.add_subcommands()
        for name in self.subcommands():
            description = TRAINER_COMMANDS[name]
            sub_kwargs = {"description": description, **kwargs.get(name, {})}
            sub = self._prepare_subcommand_parser(Trainer, name, **sub_kwargs)
            if name in ("validate", "test"):  # embedlab prints its own table, once
                sub.set_defaults(verbose=False)
            self._subcommand_parsers[name] = sub
            subcommands.add_subcommand(name, sub, help=description)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse ``args`` (``main`` always passes the argument list)."""
        self.config = parser.parse_args(args)

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except SIGTERMException:  # SIGTERM / SIGUSR1: LastCheckpoint saved the state
            run_dir = getattr(self, "run_dir", None)
            if run_dir is not None:
                print(
                    f"embedlab: stopped by a signal; resume with --config {run_dir}/config.yaml "
                    f"--ckpt_path {run_dir}/checkpoints/last.ckpt",
                    file=sys.stderr,
                )
            self.exit_code = 128 + signal.SIGTERM
        finally:
            finish_wandb(getattr(self, "trainer", None), failed=sys.exc_info()[0] is not None)
            drop_if_empty(getattr(self, "run_dir", None))

    def _parse_ckpt_path(self) -> None:
        """Leave the configuration to ``--config`` and the command line.

        Recent Lightning versions parse a checkpoint's saved hyperparameters over the command
        line, so ``embedlab test --ckpt_path X --model.test_rerank=true`` would silently run
        without re-ranking. In embedlab the run folder's ``config.yaml`` describes the model
        and the checkpoint only provides the weights.
        """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--experiment", type=str, default="default", help="run folder name")
        parser.add_argument(
            "--output_root",
            type=str,
            default=os.environ.get("EMBEDLAB_OUTPUT_ROOT", "runs"),
            help="runs are written to OUTPUT_ROOT/EXPERIMENT/version_N",
        )
        parser.add_argument(
            "--wandb",
            type=str,
            default=os.environ.get("EMBEDLAB_WANDB", "off"),
            help="off | online | offline (adds a WandbLogger next to the CSV logger)",
        )
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": f"val/{PRIMARY_METRIC}",
                "checkpoint.mode": "max",
                # the built-ins as a list, so that `--model.metrics+=...` appends to them
                "model.metrics": [
                    {"class_path": f"{type(m).__module__}.{type(m).__qualname__}"}
                    for m in scalar_metrics()
                ],
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-step{step}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )

    def _loggers(self) -> list[Logger]:
        cfg = self.config[self.subcommand]
        mode = str(cfg.get("wandb", "off")).lower()
        if mode not in ("off", "online", "offline", "disabled"):
            raise ValueError(f"--wandb must be off, online or offline, got {mode!r}")
        run_dir = self._run_dir()
        name, version = run_dir.parent.name, run_dir.name
        loggers: list[Logger] = [AtomicCSVLogger(run_dir.parent.parent, name=name, version=version)]
        if mode not in ("off", "disabled"):
            wandb_logger = WandbLogger(
                name=f"{name}/{version}",
                save_dir=str(run_dir),
                project=os.environ.get("WANDB_PROJECT", "embedlab"),
                entity=os.environ.get("WANDB_ENTITY") or None,
                offline=mode == "offline",
                config=self.config_dump_dict(),
                settings={"quiet": True},  # the run folder says where its files are
            )
            # Lightning passes anonymous=None, which wandb answers with a deprecation warning
            drop_wandb_init_key(wandb_logger, "anonymous")
            loggers.append(wandb_logger)
        return loggers

    def _run_dir(self) -> Path:
        cfg = self.config[self.subcommand]
        if getattr(rank_zero_only, "rank", 0) == 0:  # set from RANK / SLURM_PROCID / LOCAL_RANK
            resumed = resumed_run_dir(cfg.get("ckpt_path"))
            self.run_dir = resumed or new_run_dir(cfg["output_root"], cfg["experiment"])
            print(f"embedlab: run folder {self.run_dir}")
            return self.run_dir
        # other ranks of a torchrun job write nothing: loggers and checkpoints are rank-0 only
        return Path(cfg["output_root"]) / cfg["experiment"] / "version_nonzero_rank"

    def config_dump_dict(self) -> dict[str, Any]:
        dumped = self.parser.dump(self.config, format="json", skip_none=False)
        return json.loads(dumped).get(self.subcommand, {})

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer_cfg = self.config_init[self.subcommand].get("trainer", {})
        cfg = self.config[self.subcommand]
        trained_run = resumed_run_dir(cfg.get("ckpt_path"))
        if self.subcommand != "fit" and trained_run is not None:
            # validate / test a trained run: results go to its folder, nothing else is written
            self.run_dir = trained_run
            kwargs.setdefault("logger", False)
        if trainer_cfg.get("logger") in (None, True) and "logger" not in kwargs:
            kwargs["logger"] = self._loggers()
        if not trainer_cfg.get("plugins") and "plugins" not in kwargs:
            kwargs["plugins"] = [AtomicCheckpointIO()]
        trainer = super().instantiate_trainer(**kwargs)
        quiet_callbacks(trainer)
        if kwargs.get("logger") is False:  # keep the trained run's config.yaml as it is
            trainer.callbacks[:] = [  # type: ignore[attr-defined]
                c
                for c in trainer.callbacks  # type: ignore[attr-defined]
                if not isinstance(c, SaveConfigCallback)
            ]
        # before ModelCheckpoint, so that a checkpoint holds its own validation
        trainer.callbacks.insert(0, ValHistory())  # type: ignore[attr-defined]
        best = next((c for c in trainer.checkpoint_callbacks if type(c) is ModelCheckpoint), None)
        if best is not None and best.save_last:
            # LastCheckpoint writes last.ckpt: Lightning's save_last would copy the best one there
            every = int(cfg.get("checkpoint", {}).get("every_n_train_steps") or 0)
            best.save_last = False
            trainer.callbacks.append(LastCheckpoint(best.dirpath, every))  # type: ignore[attr-defined]
        if os.environ.get(TRIAL_ENV):  # a trial of an offline `embedlab sweep`
            from embedlab.sweep.trials import OptunaTrialCallback  # optuna only for a trial

            trial = OptunaTrialCallback.from_env()
            trainer.callbacks.append(trial)  # type: ignore[attr-defined]
        return trainer

    def before_instantiate_classes(self) -> None:
        """Without a validation split (``data.val: none``) nothing is monitored."""
        cfg = self.config.get(self.subcommand) if self.subcommand else self.config
        if cfg is None or "checkpoint" not in cfg:
            return
        if cfg["data"].get("val") in (None, "none") and cfg["checkpoint"].get("monitor"):
            cfg["checkpoint"]["monitor"] = None
            cfg["checkpoint"]["save_top_k"] = 0

    def after_fit(self) -> None:
        """Evaluate the selected checkpoint (best on val, or the last) once on the test split."""
        ckpt_path, epochs, val = selected(self.trainer)
        self.trainer.test(
            self.model, datamodule=self.datamodule, ckpt_path=ckpt_path, verbose=False
        )
        if self.trainer.global_rank != 0:
            return
        test = {
            k.removeprefix("test/"): float(v)
            for k, v in self.trainer.callback_metrics.items()
            if k.startswith("test/")
        }
        rows: dict[str, dict[str, float]] = {}
        if getattr(self.datamodule, "test_set", True) is None:
            self.datamodule.setup("test")  # a ddp_spawn parent: only its workers set up
        baseline = baseline_metrics(self.datamodule, self.model.val_metric)
        if baseline is not None:
            rows[BASELINE_ROW] = baseline
        if val:
            rows["val"] = {**val, "epochs": float(epochs or 0)}
        rows["test"] = {**test, "epochs": float(epochs or 0)}
        name = Path(ckpt_path).name if ckpt_path else ""
        which = "final weights" if not name else "last" if name == LAST else "best on val"
        convention = getattr(self.model, "eval_convention", "torchreid")
        members = self._member_rows(val, test, convention)
        # a union: its means here, each member's own metrics in the table after
        shown = {k: _drop_members(v, members) for k, v in rows.items()}
        print_summary(
            shown,
            title=f"retrieval, {which} checkpoint (epoch {epochs}): val and test "
            f"({convention} convention{', mean over members' if members else ''})",
        )
        if members:
            print_members(members, f"each member, {which} checkpoint: the protocol it is scored by")
        tested = tested_checkpoint(self.trainer)
        if "step" in tested:
            print(
                f"embedlab: tested {tested['path']} (epoch {tested['epoch']}, step {tested['step']})"
            )
        run_dir = getattr(self, "run_dir", None)  # rank 0 (trainer.log_dir is a collective)
        if run_dir is not None:
            write_json(
                Path(run_dir) / "summary.json",
                {
                    **rows,
                    **({"members": members} if members else {}),
                    "checkpoint": tested,
                    "convention": convention,
                },
            )

    def _member_rows(
        self, val: dict[str, float], test: dict[str, float], convention: str
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """A union's per-member rows (:func:`embedlab.report.member_rows`); ``{}`` otherwise."""
        datamodule = self.datamodule
        if not getattr(datamodule, "eval_names", None):
            return {}
        describe = datamodule.member_protocols
        protocols = {"test": describe("test", convention)}
        if val:
            protocols = {"val": describe("val", convention), **protocols}
        return member_rows({"val": val, "test": test}, protocols)

    def after_test(self) -> None:
        self._write_results("test")

    def after_validate(self) -> None:
        self._write_results("val")

    def _write_results(self, split: str) -> None:
        """Print and save (``test_metrics.json`` / ``val_metrics.json`` in the run folder) the
        metrics of ``embedlab test`` / ``validate``, with the checkpoint they come from."""
        if self.trainer.global_rank != 0:
            return
        results = {
            k.removeprefix(f"{split}/"): float(v)
            for k, v in self.trainer.callback_metrics.items()
            if k.startswith(f"{split}/")
        }
        tested = tested_checkpoint(self.trainer)
        where = f" of {tested['path']} (epoch {tested['epoch']}, step {tested['step']})"
        convention = getattr(self.model, "eval_convention", "torchreid")
        print_summary(
            {split: results},
            title=f"{split} split{where if 'step' in tested else ''} ({convention} convention)",
        )
        run_dir = getattr(self, "run_dir", None)
        if run_dir is not None:
            write_json(
                Path(run_dir) / f"{split}_metrics.json",
                {split: results, "checkpoint": tested, "convention": convention},
            )


def _drop_members(row: dict[str, float], members: dict[str, Any]) -> dict[str, float]:
    """``row`` without the ``<member>/<metric>`` entries of a union's members."""
    return {k: v for k, v in row.items() if k.split("/", 1)[0] not in members}


def lightning_main(args: list[str] | None = None, save_config: bool = True) -> EmbedlabCLI:
    """Parse ``args`` and run the subcommand; configuration errors raise ``ConfigError``."""
    quiet_console()
    return EmbedlabCLI(
        MetricLearningModule,
        RetrievalDataModule,
        seed_everything_default=0,
        auto_configure_optimizers=False,
        trainer_defaults={"use_distributed_sampler": False},
        save_config_callback=SaveConfigCallback if save_config else None,
        save_config_kwargs={"overwrite": True},
        parser_class=EmbedlabParser,
        parser_kwargs={
            "prog": "embedlab",
            "description": "embedlab: deep metric learning and person re-identification. "
            "`embedlab SUBCOMMAND --help` lists a subcommand's options.",
            "exit_on_error": False,
        },
        args=args,
    )


def run(argv: list[str]) -> int:
    """Run a trainer subcommand; returns the exit status (2 on a configuration error)."""
    torch.set_float32_matmul_precision("high")
    try:
        cli = lightning_main(argv)
    except Exception as err:
        drop_if_empty(_started_run_dir(err))  # e.g. the Trainer rejected its arguments
        return report_or_raise(err, config_error(err, argv))
    return cli.exit_code


#: Where Lightning's ``Trainer`` checks its arguments: what it raises there (e.g. no GPU for
#: ``accelerator: gpu``, ``max_epochs: -5``) is a configuration error.
TRAINER_INIT = (os.path.join("pytorch_lightning", "trainer", "trainer.py"), "__init__")
LIGHTNING_PACKAGES = ("pytorch_lightning", "lightning_fabric", "lightning_utilities")
#: Lightning's messages when ``accelerator: gpu`` or ``cuda`` finds no GPU, and embedlab's line.
NO_GPU = ("No supported gpu backend found", "`CUDAAccelerator` can not run")
NO_GPU_LINE = (
    "trainer.accelerator: a GPU was asked for, but torch finds none on this machine "
    "(torch.cuda.is_available() is False); use --trainer.accelerator=cpu or auto"
)


def config_error(err: BaseException, argv: Sequence[str] = ()) -> BaseException | None:
    """The ``ConfigError`` or non-finite loss behind ``err`` (:func:`embedlab.errors.reported_error`),
    or Lightning's ``Trainer`` rejecting its arguments; ``None`` for any other exception."""
    return reported_error(err, argv, also=(NonFiniteLossError,)) or _trainer_error(err)


def _trainer_error(err: BaseException) -> ConfigError | None:
    """``err`` as a ConfigError naming the ``trainer.*`` key when Lightning raised it while
    checking the ``Trainer``'s arguments (not from a user's code); otherwise ``None``."""
    frames = [frame for frame, _ in traceback.walk_tb(err.__traceback__)]
    if not frames or not any(
        f.f_code.co_filename.endswith(TRAINER_INIT[0]) and f.f_code.co_name == TRAINER_INIT[1]
        for f in frames
    ):
        return None
    innermost = Path(frames[-1].f_code.co_filename).parts
    if not any(package in innermost for package in LIGHTNING_PACKAGES):
        return None
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if message.startswith(NO_GPU) and not torch.cuda.is_available():
        return ConfigError(NO_GPU_LINE)
    params = inspect.signature(Trainer.__init__).parameters
    named = re.findall(r"`(?:Trainer\()?(\w+)", message) + re.findall(r"\b(\w+)=", message)
    key = next((name for name in named if name in params and name != "self"), None)
    if key is None and "Accelerator` can not run" in message:
        key = "accelerator"
    return ConfigError(f"trainer.{key}: {message}" if key else f"trainer: {message}")


def _started_run_dir(err: BaseException) -> Path | None:
    """The run folder the failed ``EmbedlabCLI`` had created, from the traceback of ``err``."""
    for frame, _ in traceback.walk_tb(err.__traceback__):
        cli = frame.f_locals.get("self")
        if isinstance(cli, EmbedlabCLI):
            return getattr(cli, "run_dir", None)
    return None
