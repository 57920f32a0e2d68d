"""The ``embedlab`` command: one parser for the trainer and the tool subcommands.

embedlab fit --config experiments/digits.yaml [--model.loss.init_args.margin=0.2]
embedlab evaluate --ckpt_path runs/digits/version_0/checkpoints/last.ckpt --rerank
embedlab data check --dataset Market1501 --dataset.root /data/market1501
embedlab compare runs/digits/version_0 runs/digits/version_1 --no_plots
embedlab sweep experiments/sweeps/losses.yaml --offline -- --trainer.max_epochs=5
embedlab embed --ckpt_path runs/X/version_0/checkpoints/last.ckpt --images photos --out photos.parquet
embedlab index build --embeddings photos.parquet --out photos.index --factory HNSW32
embedlab search --index photos.index --embeddings photos.parquet --k 10 --out hits.csv

``fit``, ``validate`` and ``test`` are LightningCLI subcommands; ``evaluate``, ``compare``,
``sweep``, ``data check``, ``embed``, ``index build``, ``search`` and ``export`` are the typed
functions of :mod:`embedlab.tools`, their arguments read from their signatures and docstrings.
Flags use underscores; a boolean tool option ``x`` is given as ``--x`` / ``--no_x``. A
configuration error prints one line (:class:`embedlab.ConfigError`); any other exception keeps
its traceback.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import shutil
import signal
import sys
import traceback
from argparse import Action
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import docstring_parser
import torch
import yaml
from jsonargparse import ActionYesNo, DefaultHelpFormatter, Namespace
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from embedlab import schedules, tools
from embedlab.checkpoint_io import AtomicCheckpointIO
from embedlab.console import quiet_callbacks, quiet_console
from embedlab.csv_logger import AtomicCSVLogger
from embedlab.data import RetrievalDataModule
from embedlab.errors import ConfigError, one_line, read_yaml
from embedlab.last_checkpoint import LAST, LastCheckpoint
from embedlab.metrics import PRIMARY_METRIC, scalar_metrics
from embedlab.module import MetricLearningModule, NonFiniteLossError
from embedlab.protocol import ValHistory, selected, tested_checkpoint
from embedlab.report import (
    BASELINE_ROW,
    baseline_metrics,
    member_rows,
    print_members,
    print_summary,
    write_json,
)

#: Tool subcommands: name → (function, positional parameters). ``data check`` is nested.
TOOLS: dict[str, tuple[Callable[..., int], tuple[str, ...]]] = {
    "evaluate": (tools.evaluate, ()),
    "compare": (tools.compare, ("runs",)),
    "sweep": (tools.sweep, ("file",)),
    "data check": (tools.data_check, ()),
    "data prepare": (tools.data_prepare, ("dataset",)),
    "embed": (tools.embed, ()),
    "index build": (tools.index_build, ()),
    "search": (tools.search, ()),
    "export": (tools.export, ()),
}
#: The trainer subcommands (LightningCLI) and their one-line help.
TRAINER_COMMANDS = {
    "fit": "Train, validating every check_val_every_n_epoch epochs; writes a run folder.",
    "validate": "Evaluate a model on the validation split.",
    "test": "Evaluate a model (e.g. --ckpt_path) on the test split.",
}
#: Imported so that ``--help`` lists them among the known schedulers.
SCHEDULES = (schedules.WarmupMultiStep, schedules.WarmupCosine, schedules.ExponentialDecay)
#: Parameters filled in by ``main``, not from the command line.
INTERNAL = {"runner", "trial_args"}


def new_run_dir(root: str | Path, name: str) -> Path:
    """Create ``root/name/version_N`` with the first free N (atomic: never reuses a folder)."""
    base = Path(root).resolve() / name  # absolute: a resumed run names the same folder
    base.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name.split("_")[1]) for p in base.glob("version_*") if p.name[8:].isdigit()]
    version = max(taken, default=-1) + 1
    while True:
        try:
            (base / f"version_{version}").mkdir()
            return base / f"version_{version}"
        except FileExistsError:
            version += 1


class CompactHelpFormatter(DefaultHelpFormatter):
    """``--help`` that fits a screen or few: a short usage line, each option's first sentence
    with its type and default, and all of embedlab's known subclasses but only a few others."""

    max_foreign = 4

    def __init__(self, prog: str, **kwargs: Any) -> None:
        kwargs.setdefault("width", 100)
        kwargs.setdefault("max_help_position", 30)
        super().__init__(prog, **kwargs)

    def _get_help_string(self, action: Action) -> str:
        full = super()._get_help_string(action)
        own = action.help or ""
        if (
            not own
            or not full.startswith(own)
            or getattr(action, "_jsonargparse_preexpanded_help", False)
        ):
            return self._shorten_subclasses(full)
        first = re.split(r"(?<=\.)\s+(?=[A-Z])", own.strip(), maxsplit=1)[0]
        return _plain(first) + self._shorten_subclasses(full[len(own) :])

    def _shorten_subclasses(self, text: str) -> str:
        match = re.search(r"known subclasses: ([^)]*)", text)
        if match is None:
            return text
        names = [n.strip() for n in match.group(1).split(",")]
        own = [n for n in names if n.startswith("embedlab.")]
        foreign = [n for n in names if not n.startswith("embedlab.")]
        shown = own + foreign[: self.max_foreign]
        if len(shown) < len(names):
            shown.append(f"… {len(names) - len(shown)} more")
        return text[: match.start(1)] + ", ".join(shown) + text[match.end(1) :]

    def _format_usage(self, usage: Any, actions: Any, *args: Any, **kwargs: Any) -> str:
        if usage is None and len(actions) > 16:
            prog = self._prog
            return f"usage: {prog} [--config FILE] [--KEY VALUE | --KEY=VALUE ...]\n\n"
        return super()._format_usage(usage, actions, *args, **kwargs)


class EmbedlabParser(LightningArgumentParser):
    """A ``LightningArgumentParser`` whose errors are :class:`~embedlab.ConfigError`s."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", CompactHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        raise ConfigError(one_line(message)) from ex


def _plain(text: str) -> str:
    """Docstring text for ``--help``: without reST literal quotes."""
    return text.replace("``", "`")


def _param_help(fn: Callable[..., Any]) -> dict[str, str]:
    doc = docstring_parser.parse(inspect.getdoc(fn) or "")
    return {p.arg_name: _plain(re.sub(r"\s+", " ", p.description or "")) for p in doc.params}


def tool_parser(fn: Callable[..., int], positional: Sequence[str] = ()) -> EmbedlabParser:
    """The parser of a typed tool function: options from its signature and docstring.

    Parameters named in ``positional`` are positional arguments (a sequence takes one or
    more values); booleans are flags ``--x`` / ``--no_x``; everything else is ``--name``
    typed as annotated.
    """
    description = docstring_parser.parse(inspect.getdoc(fn) or "")
    text = "\n\n".join(
        t for t in (description.short_description, description.long_description) if t
    )
    parser = EmbedlabParser(description=_plain(text), exit_on_error=False)
    helps = _param_help(fn)
    params = inspect.signature(fn).parameters
    for name, param in params.items():  # in the signature's order, for --help
        if name in INTERNAL:
            continue
        if name in positional:
            many = "Sequence" in str(param.annotation) or "list" in str(param.annotation)
            parser.add_argument(name, nargs="+" if many else None, type=str, help=helps.get(name))
        elif param.annotation in (bool, "bool"):
            flag = ActionYesNo(yes_prefix="", no_prefix="no_")
            parser.add_argument(
                f"--{name}", action=flag, default=param.default, help=helps.get(name)
            )
        else:  # typed from the annotation, with its docstring help
            others: set[str | int] = {p for p in params if p != name}
            parser.add_function_arguments(fn, as_group=False, skip=others, fail_untyped=True)
    return parser


RESULT_FILES = (
    "metrics.csv",
    "summary.json",
    "evaluation.json",
    "test_metrics.json",
    "val_metrics.json",
)


def resumed_run_dir(ckpt_path: str | None) -> Path | None:
    """The run folder of a checkpoint in ``<run>/checkpoints/`` (a resumed run continues there)."""
    if not ckpt_path or ckpt_path in ("last", "best", "hpc", "registry"):
        return None
    folder = Path(ckpt_path).resolve().parent
    if folder.name == "checkpoints" and (folder.parent / "config.yaml").is_file():
        return folder.parent
    return None


def finish_wandb(trainer: Trainer | None, failed: bool = False) -> None:
    """Close this process's wandb run now, not at interpreter exit, where wandb writes its
    closing lines with colour codes into logs."""
    for logger in trainer.loggers if trainer is not None else []:
        run = getattr(logger, "_experiment", None) if isinstance(logger, WandbLogger) else None
        if run is not None and hasattr(run, "finish"):
            run.finish(exit_code=1 if failed else 0)


def drop_if_empty(run_dir: Path | None) -> None:
    """Remove a run folder in which nothing was trained or evaluated (only its config).

    A configuration error found when the run starts, or a subcommand that writes nothing,
    then leaves no ``version_N`` behind for ``compare`` to list.
    """
    if run_dir is None or not run_dir.is_dir():
        return
    if any((run_dir / name).is_file() for name in RESULT_FILES):
        return
    if any((run_dir / "checkpoints").glob("*.ckpt")) or (run_dir / "pictures").is_dir():
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        run_dir.parent.rmdir()  # the experiment folder, when this was its only run


class EmbedlabCLI(LightningCLI):
    """LightningCLI with ``fit``/``validate``/``test`` and the tool subcommands in one parser."""

    def __init__(self, *args: Any, trial_args: Sequence[str] = (), **kwargs: Any) -> None:
        self.trial_args = list(trial_args)
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
        """The trainer subcommands as in LightningCLI, then the tools of ``TOOLS``."""
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
        groups: dict[str, Any] = {}  # `data` → the subcommands action of `data`
        for name, (fn, positional) in TOOLS.items():
            head, _, tail = name.partition(" ")
            sub = tool_parser(fn, positional)
            summary = _plain((inspect.getdoc(fn) or "").split("\n")[0])
            if not tail:
                subcommands.add_subcommand(head, sub, help=summary)
                continue
            if head not in groups:  # `data check`: a subcommand of its own subcommand
                group = EmbedlabParser(exit_on_error=False)
                subcommands.add_subcommand(head, group, help=f"{head} {tail}: {summary}")
                groups[head] = group.add_subcommands()
            groups[head].add_subcommand(tail, sub, help=summary)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse ``args`` (``main`` always passes the argument list)."""
        self.config = parser.parse_args(args)

    def _tool(self) -> tuple[Callable[..., int], Namespace] | None:
        """The tool function of the parsed subcommand and its arguments, or ``None``."""
        name = str(self.config.get("subcommand"))
        if name not in {n.split(" ")[0] for n in TOOLS}:
            return None
        config = self.config[name]
        if f"{name} {config.get('subcommand')}" in TOOLS:
            name = f"{name} {config['subcommand']}"
            config = config[config["subcommand"]]
        return TOOLS[name][0], config

    def _set_seed(self) -> None:
        if self._tool() is None:
            super()._set_seed()

    def instantiate_classes(self) -> None:
        if self._tool() is None:
            super().instantiate_classes()
        else:  # a tool's arguments may be classes too (``data check --dataset Market1501``)
            self.config = self.parser.instantiate(self.config)

    def _run_subcommand(self, subcommand: str) -> None:
        tool = self._tool()
        if tool is None:
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
            return
        fn, config = tool
        kwargs = {k: v for k, v in config.as_dict().items() if k != "subcommand"}
        accepted = inspect.signature(fn).parameters
        if "runner" in accepted:
            kwargs["runner"] = main
        if "trial_args" in accepted:
            kwargs["trial_args"] = self.trial_args
        self.exit_code = fn(**kwargs)

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
            wandb_logger._wandb_init.pop("anonymous", None)
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
        from embedlab.sweep import OptunaTrialCallback  # optuna only when a trial runs

        trial = OptunaTrialCallback.from_env()  # a trial of an offline `embedlab sweep`
        if trial is not None:
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


def lightning_main(
    args: list[str] | None = None, save_config: bool = True, trial_args: Sequence[str] = ()
) -> EmbedlabCLI:
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
        trial_args=trial_args,
    )


def main(argv: list[str] | None = None) -> int:
    """The ``embedlab`` command; returns the exit status (2 on a configuration error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    trial_args: list[str] = []
    if (
        argv[:1] == ["sweep"] and "--" in argv
    ):  # `embedlab sweep FILE -- ARGS`: ARGS go to each trial
        cut = argv.index("--")
        argv, trial_args = argv[:cut], argv[cut + 1 :]
    torch.set_float32_matmul_precision("high")
    try:
        cli = lightning_main(argv, trial_args=trial_args)
    except Exception as err:
        drop_if_empty(_started_run_dir(err))  # e.g. the Trainer rejected its arguments
        cause = config_error(err, argv)
        if cause is None or os.environ.get("EMBEDLAB_DEBUG"):
            bug = _hidden_bug(err)
            if bug is not None:  # the bug's own traceback, not only its message
                raise bug from err
            raise  # a bug, e.g. in a user's loss: keep the traceback
        print(f"embedlab: error: {cause}", file=sys.stderr)
        return 2
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
    """The ``ConfigError`` (or non-finite loss) behind ``err``, also when jsonargparse wrapped it
    while instantiating a class (``raise ... from``), or Lightning's ``Trainer`` rejecting its
    arguments; ``None`` for any other exception. A YAML syntax error names the file of
    ``argv`` and the line."""
    seen: BaseException | None = err
    found: BaseException | None = None
    while seen is not None:
        if found is None and isinstance(seen, (ConfigError, NonFiniteLossError)):
            found = seen
        if found is not None and isinstance(seen, yaml.YAMLError):  # in a file jsonargparse read
            return found if found.__cause__ is seen else (_broken_yaml_file(argv) or found)
        seen = seen.__cause__
    return found or _trainer_error(err)


def _broken_yaml_file(argv: Sequence[str]) -> ConfigError | None:
    """The syntax error, with file and line, of the first YAML file named in ``argv``
    (``--config FILE``, ``--config=FILE``, ``--data FILE``) that does not parse."""
    option = ""
    for token in argv:
        key, equals, value = token.partition("=") if token.startswith("--") else ("", "", token)
        if token.startswith("--") and not equals:
            option = token
            continue
        file = Path(value)
        if file.suffix.lower() in (".yaml", ".yml", ".json") and file.is_file():
            try:
                read_yaml(file, (key or option).lstrip("-"))
            except ConfigError as err:
                return err
        option = ""
    return None


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


def _hidden_bug(err: BaseException) -> BaseException | None:
    """The exception raised in a user's code that jsonargparse listed, as a message only, among
    the reasons a value fits no type of a union (``__init__`` of a ``data.dataset`` class)."""
    for frame, _ in traceback.walk_tb(err.__traceback__):
        if frame.f_code.co_name != "raise_union_unexpected_value":
            continue
        for reason in frame.f_locals.get("exceptions") or ():
            frames = [f for f, _ in traceback.walk_tb(getattr(reason, "__traceback__", None))]
            if frames and "jsonargparse" not in Path(frames[-1].f_code.co_filename).parts:
                return _hidden_bug(reason) or reason
    return None


def _started_run_dir(err: BaseException) -> Path | None:
    """The run folder the failed ``EmbedlabCLI`` had created, from the traceback of ``err``."""
    for frame, _ in traceback.walk_tb(err.__traceback__):
        cli = frame.f_locals.get("self")
        if isinstance(cli, EmbedlabCLI):
            return getattr(cli, "run_dir", None)
    return None


if __name__ == "__main__":
    raise SystemExit(main())
