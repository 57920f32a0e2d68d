"""The ``embedlab`` command: LightningCLI (fit/validate/test/predict) plus tool subcommands.

embedlab fit --config experiments/digits.yaml [--model.loss.init_args.margin=0.2]
embedlab data check --dataset market1501 --root /data/market1501
embedlab compare runs/digits/version_0 runs/digits/version_1
embedlab sweep experiments/sweeps/losses.yaml
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from embedlab.checkpoint_io import AtomicCheckpointIO
from embedlab.csv_logger import AtomicCSVLogger
from embedlab.data import RetrievalDataModule
from embedlab.module import MetricLearningModule
from embedlab.protocol import ValHistory, selected
from embedlab.metrics import PRIMARY_METRIC, scalar_metrics
from embedlab.report import BASELINE_ROW, baseline_metrics, print_summary, write_json

TOOL_COMMANDS = ("data", "compare", "sweep", "evaluate")


def new_run_dir(root: str | Path, name: str) -> Path:
    """Create ``root/name/version_N`` with the first free N (atomic: never reuses a folder)."""
    base = Path(root) / name
    base.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name.split("_")[1]) for p in base.glob("version_*") if p.name[8:].isdigit()]
    version = max(taken, default=-1) + 1
    while True:
        try:
            (base / f"version_{version}").mkdir()
            return base / f"version_{version}"
        except FileExistsError:
            version += 1


class EmbedlabCLI(LightningCLI):
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
            loggers.append(
                WandbLogger(
                    name=f"{name}/{version}",
                    save_dir=str(run_dir),
                    project=os.environ.get("WANDB_PROJECT", "embedlab"),
                    entity=os.environ.get("WANDB_ENTITY") or None,
                    offline=mode == "offline",
                    config=self.config_dump_dict(),
                )
            )
        return loggers

    def _run_dir(self) -> Path:
        cfg = self.config[self.subcommand]
        if getattr(rank_zero_only, "rank", 0) == 0:  # set from RANK / SLURM_PROCID / LOCAL_RANK
            return new_run_dir(cfg["output_root"], cfg["experiment"])
        # other ranks of a torchrun job write nothing: loggers and checkpoints are rank-0 only
        return Path(cfg["output_root"]) / cfg["experiment"] / "version_nonzero_rank"

    def config_dump_dict(self) -> dict[str, Any]:
        dumped = self.parser.dump(self.config, format="json", skip_none=False)
        return json.loads(dumped).get(self.subcommand, {})

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer_cfg = self.config_init[self.subcommand].get("trainer", {})
        if trainer_cfg.get("logger") in (None, True) and "logger" not in kwargs:
            kwargs["logger"] = self._loggers()
        if not trainer_cfg.get("plugins") and "plugins" not in kwargs:
            kwargs["plugins"] = [AtomicCheckpointIO()]
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.append(ValHistory())  # type: ignore[attr-defined]
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
        baseline = baseline_metrics(self.datamodule, self.model.val_metric)
        if baseline is not None:
            rows[BASELINE_ROW] = baseline
        if val:
            rows["val"] = {**val, "epochs": float(epochs or 0)}
        rows["test"] = {**test, "epochs": float(epochs or 0)}
        which = {"best": "best on val", "last": "last"}.get(str(ckpt_path), "final weights")
        print_summary(rows, title=f"retrieval, {which} checkpoint (epoch {epochs}): val and test")
        if self.trainer.log_dir:
            write_json(Path(self.trainer.log_dir) / "summary.json", rows)

    def after_test(self) -> None:
        if self.trainer.global_rank != 0:
            return
        results = {
            k.removeprefix("test/"): float(v)
            for k, v in self.trainer.callback_metrics.items()
            if k.startswith("test/")
        }
        print_summary({"test": results})
        if self.trainer.logger is not None and self.trainer.log_dir:
            write_json(Path(self.trainer.log_dir) / "test_metrics.json", {"test": results})


def lightning_main(args: list[str] | None = None, save_config: bool = True) -> EmbedlabCLI:
    return EmbedlabCLI(
        MetricLearningModule,
        RetrievalDataModule,
        seed_everything_default=0,
        auto_configure_optimizers=False,
        trainer_defaults={"use_distributed_sampler": False},
        save_config_callback=SaveConfigCallback if save_config else None,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TOOL_COMMANDS:
        from embedlab import tools

        return tools.run(argv)
    torch.set_float32_matmul_precision("high")
    try:
        lightning_main(argv)
    except (ValueError, OSError, FloatingPointError) as err:
        if os.environ.get("EMBEDLAB_DEBUG"):
            raise
        # Configuration and data errors name the key or file at fault: one line is enough.
        print(f"embedlab: error: {err}  (EMBEDLAB_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
