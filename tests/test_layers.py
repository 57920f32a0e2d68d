"""The library layer (losses, miners, distances, metrics, models, data readers, sampler,
transforms) imports without Lightning, Optuna, wandb or matplotlib; only the application layer
(the LightningModule and DataModule, callbacks, cli, tools, sweep, inference, analysis) does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FORMATS = Path(__file__).resolve().parents[1] / "src" / "embedlab" / "data" / "formats"
LIBRARY = [
    "embedlab",
    "embedlab.losses",
    "embedlab.miners",
    "embedlab.distances",
    "embedlab.distributed",
    "embedlab.metrics",
    "embedlab.models",
    "embedlab.data",
    "embedlab.data.sampler",
    "embedlab.data.transforms",
    "embedlab.data.splits",
    "embedlab.data.source",
    "embedlab.data.prepare",
    *sorted(f"embedlab.data.formats.{p.stem}" for p in FORMATS.glob("*.py")),
]
FORBIDDEN = ["pytorch_lightning", "lightning", "optuna", "wandb", "matplotlib"]


def loaded(modules: list[str], names: list[str]) -> list[str]:
    """The ``names`` that a fresh interpreter has in ``sys.modules`` after importing ``modules``."""
    code = (
        "import sys\n"
        f"for m in {modules!r}: __import__(m)\n"
        f"print(' '.join(n for n in {names!r} if n in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_every_format_module_is_listed() -> None:
    assert "embedlab.data.formats.market1501" in LIBRARY
    assert len([m for m in LIBRARY if m.startswith("embedlab.data.formats.")]) >= 10


def test_library_layer_imports_no_application_dependency() -> None:
    offenders = loaded(LIBRARY, FORBIDDEN)
    assert not offenders, f"the library layer imports {', '.join(offenders)}"


def test_the_check_sees_an_application_import() -> None:
    # the same probe on the Lightning layer must report Lightning, else it checks nothing
    assert "pytorch_lightning" in loaded(["embedlab.module"], FORBIDDEN)


@pytest.mark.parametrize("name", ["RetrievalDataModule", "EvalDataset"])
def test_lazy_data_exports_still_resolve(name: str) -> None:
    import embedlab.data
    from embedlab.data import datamodule

    assert getattr(embedlab.data, name) is getattr(datamodule, name)
    assert name in embedlab.data.__all__


@pytest.mark.parametrize("name", ["RetrievalEvaluator", "PersonSearchEvaluator"])
def test_lazy_metric_exports_still_resolve(name: str) -> None:
    import embedlab.metrics
    from embedlab.metrics import evaluators

    assert getattr(embedlab.metrics, name) is getattr(evaluators, name)
    assert name in embedlab.metrics.__all__


def test_unknown_names_still_raise() -> None:
    import embedlab.data
    import embedlab.metrics

    for module in (embedlab.data, embedlab.metrics):
        with pytest.raises(AttributeError):
            module.NoSuchThing  # noqa: B018


def test_strategy_registration_comes_with_the_lightning_layer() -> None:
    code = (
        "import embedlab.module\n"
        "from pytorch_lightning.strategies import StrategyRegistry\n"
        "print(StrategyRegistry['ddp_spawn']['strategy'].__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "embedlab.ddp"


def loaded_by_help(args: list[str], names: list[str]) -> list[str]:
    """The ``names`` in ``sys.modules`` after ``embedlab ARGS --help`` in a fresh interpreter."""
    code = (
        "import sys\nfrom embedlab.cli import main\n"
        f"try:\n    main({[*args, '--help']!r})\nexcept SystemExit as stop:\n    assert stop.code == 0\n"
        f"print('LOADED', ' '.join(n for n in {names!r} if n in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.rsplit("LOADED", 1)[1].split()


HEAVY = ["torch", "pytorch_lightning", "optuna", "faiss", "pyarrow", "matplotlib"]


@pytest.mark.parametrize(
    "args",
    [[], ["data"], ["evaluate"], ["compare"], ["sweep"], ["embed"], ["index", "build"]]
    + [["search"], ["export"], ["data", "prepare"]],
)
def test_help_loads_no_heavy_package(args: list[str]) -> None:
    assert loaded_by_help(args, HEAVY) == []


def test_help_of_a_command_with_dataset_options_loads_no_lightning() -> None:
    # `data check --dataset` is typed by the dataset classes: torch, but no Lightning
    loaded = loaded_by_help(["data", "check"], HEAVY)
    assert "torch" in loaded
    assert not {"pytorch_lightning", "optuna", "faiss", "matplotlib"} & set(loaded), loaded


def test_fit_help_loads_lightning() -> None:  # the probe sees what a command imports
    assert "pytorch_lightning" in loaded_by_help(["fit"], HEAVY)
