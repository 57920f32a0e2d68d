"""Every experiment under experiments/ parses; the paper recipes build their model and data on
miniature copies of their datasets; every sweep's generated commands parse."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml

import fake_datasets
from embedlab.cli import main
from embedlab.data import RetrievalDataModule
from embedlab.module import MetricLearningModule
from embedlab.runs import instantiate_config
from embedlab.sweep import embedlab_args, grid_values, load_sweep, sampler, suggest, trial_command

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
LOSS_PRESETS = sorted((EXPERIMENTS / "losses").glob("*.yaml"))
SWEEPS = sorted((EXPERIMENTS / "sweeps").glob("*.yaml"))
FRAGMENT_DIRS = {EXPERIMENTS / "losses", EXPERIMENTS / "sweeps"}
CONFIGS = sorted(
    p for p in EXPERIMENTS.rglob("*.yaml") if not any(d in p.parents for d in FRAGMENT_DIRS)
)
RECIPE_NAMES = {
    "market1501_bot",
    "market1501_trihard",
    "market1501_msml",
    "market1501_improved_triplet",
    "cuhk03np_quadruplet",
    "vehicleid_coupled_clusters",
    "sop_ranked_list",
    "cub200_margin",
    "digits_compare",
}


def print_config(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    with pytest.raises(SystemExit) as stop:
        main(["fit", *args, "--print_config"])
    captured = capsys.readouterr()
    assert stop.value.code == 0, captured.err[-2000:]
    return yaml.safe_load(captured.out)


def test_the_expected_recipes_exist() -> None:
    names = {p.stem for p in CONFIGS}
    assert names >= RECIPE_NAMES, RECIPE_NAMES - names
    assert len(LOSS_PRESETS) >= 8 and len(SWEEPS) >= 3


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_every_experiment_prints_its_config(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    printed = print_config(["--config", str(config)], capsys)
    assert printed["model"]["loss"] or printed["model"]["aux_losses"]
    assert printed["data"]["dataset"]
    if config.stem in RECIPE_NAMES:
        header = config.read_text().split("\n", 1)[0]
        assert header.startswith("#"), f"{config.name}: recipes start with a comment citing sources"


@pytest.mark.parametrize("preset", LOSS_PRESETS, ids=lambda p: p.stem)
def test_loss_presets_select_their_loss(preset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = yaml.safe_load(preset.read_text())
    base = str(EXPERIMENTS / "digits_compare.yaml")
    printed = print_config(["--config", base, f"--model.loss={preset}"], capsys)
    loss = printed["model"]["loss"]
    assert loss["class_path"] == expected["class_path"]
    for key, value in (expected.get("init_args") or {}).items():
        if isinstance(value, dict):
            assert loss["init_args"][key]["class_path"] == value["class_path"]
        else:
            assert loss["init_args"][key] == value


@pytest.mark.parametrize("sweep", SWEEPS, ids=lambda p: p.stem)
def test_every_sweep_command_parses(
    sweep: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # sweeps name their files relative to the repository
    config = load_sweep(sweep)
    if config["method"] == "grid":
        count = math.prod(len(grid_values(s, n)) for n, s in config["parameters"].items())
    else:
        count = 4
    study = optuna.create_study(sampler=sampler(config, seed=0))
    for _ in range(count):
        trial = study.ask()
        params = suggest(trial, config)
        study.tell(trial, 0.0)
        command = trial_command(config, params)
        args = embedlab_args(command)
        assert args is not None and args[0] == "fit", command
        printed = print_config(args[1:], capsys)
        for name, value in params.items():
            node: Any = printed
            for part in name.split("."):
                node = node[part]
            if isinstance(value, str) and value.endswith(".yaml"):
                assert node["class_path"] == yaml.safe_load(Path(value).read_text())["class_path"]
            else:
                assert node == pytest.approx(value), name


# -- paper recipes build on miniature datasets ----------------------------------------------
FAKE_MAKERS = {
    "embedlab.data.Market1501": fake_datasets.make_market1501,
    "embedlab.data.CUHK03NP": fake_datasets.make_cuhk03np,
    "embedlab.data.CUB200": fake_datasets.make_cub200,
    "embedlab.data.SOP": fake_datasets.make_sop,
    "embedlab.data.Table": fake_datasets.make_table,
    "embedlab.data.VehicleID": fake_datasets.make_vehicleid,
    "embedlab.data.Mars": fake_datasets.make_mars,
    "embedlab.data.ImageFolder": fake_datasets.make_imagefolder,
}
# the miniature has 3 test vehicles
FAKE_ARGS = {"embedlab.data.VehicleID": {"test_size": 3, "seed": 0}}


def _dataset_class(path: Path) -> str | None:
    dataset = (yaml.safe_load(path.read_text()).get("data") or {}).get("dataset")
    return dataset.get("class_path") if isinstance(dataset, dict) else None


IMAGE_RECIPES = sorted(p for p in CONFIGS if _dataset_class(p) in FAKE_MAKERS)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*self.log.*:UserWarning")
@pytest.mark.parametrize("config", IMAGE_RECIPES, ids=lambda p: p.stem)
def test_paper_recipes_instantiate_and_take_a_step(config: Path, tmp_path: Path) -> None:
    recipe = yaml.safe_load(config.read_text())
    dataset = recipe["data"]["dataset"]
    cls = dataset["class_path"]
    root = FAKE_MAKERS[cls](tmp_path / cls.rsplit(".", 1)[1])
    backbone = recipe["model"]["model"]["init_args"]["backbone"]
    backbone["init_args"]["pretrained"] = False  # no download in the tests
    args = dict(dataset.get("init_args") or {})
    if cls in FAKE_ARGS:
        assert set(args) == set(FAKE_ARGS[cls])
        args.update(FAKE_ARGS[cls])
    dataset_args = {"class_path": cls, "init_args": {**args, "root": str(root)}}
    module, data = instantiate_config(recipe, {"dataset": dataset_args, "num_workers": 0})
    assert isinstance(module, MetricLearningModule) and isinstance(data, RetrievalDataModule)
    data.setup("fit")
    assert data.num_classes >= 2 and data.eval_set is not None
    # one optimisation step on a small batch, at a small resolution
    labels = torch.arange(min(3, data.num_classes)).repeat_interleave(2)
    images = torch.randn(len(labels), 3, 32, 32)
    module.train()
    loss = module.training_step((images, labels), 0)
    assert loss is not None and torch.isfinite(loss)
    loss.backward()
    optimisation = module.configure_optimizers()  # keeps the optimiser its scheduler refers to
    optimisation["optimizer"].step()


def test_center_loss_sizes_come_from_the_data_and_the_model() -> None:
    """The Bag-of-Tricks recipe names no class count or embedding size: another backbone and
    dataset size the centres by themselves."""
    recipe = yaml.safe_load((EXPERIMENTS / "market1501_bot.yaml").read_text())
    recipe["model"]["model"]["init_args"]["backbone"] = {
        "class_path": "embedlab.models.SmallCNN",
        "init_args": {"in_channels": 1, "width": 8, "depth": 2},
    }
    module, data = instantiate_config(
        recipe, {"dataset": {"class_path": "embedlab.data.Digits"}, "val": "none"}
    )
    (center,) = [t.loss for t in module.terms if type(t.loss).__name__ == "CenterLoss"]
    assert tuple(center.centers.shape) == (data.num_classes, module.model.embedding_dim) == (10, 16)


def test_center_loss_sizes_that_disagree_are_a_config_error() -> None:
    from embedlab.errors import ConfigError
    from embedlab.losses import CenterLoss, TripletLoss
    from embedlab.models import EmbeddingModel, SmallCNN
    from embedlab.module import LossTerm

    with pytest.raises(ConfigError, match="num_classes=751, but the run has 10"):
        MetricLearningModule(
            EmbeddingModel(SmallCNN(), embedding_dim=8),
            TripletLoss(),
            aux_losses=[LossTerm(CenterLoss(num_classes=751))],
            num_classes=10,
        )


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_recipe_states_its_protocol_and_selects_on_val(path: Path) -> None:
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    assert any(line.startswith("# Protocol:") for line in header), f"{path.name}: no protocol"
    config = yaml.safe_load(path.read_text())
    monitor = (config.get("checkpoint") or {}).get("monitor", "val/map@r")
    assert monitor == "val/map@r", f"{path.name}: checkpoint.monitor {monitor}"
    assert (config.get("data") or {}).get("val", "default") not in (None, "none")


@pytest.mark.filterwarnings("ignore:.*single training class.*:UserWarning")
def test_the_union_recipe_builds_on_miniature_members(tmp_path: Path) -> None:
    from embedlab.data.prepare import prepare_cuhksysu
    from test_cuhksysu import make_release

    recipe = yaml.safe_load((EXPERIMENTS / "msml_union.yaml").read_text())
    members = recipe["data"]["dataset"]
    assert [m["class_path"] for m in members] == [
        "embedlab.data.Market1501",
        "embedlab.data.Mars",
        "embedlab.data.CUHK03NP",
        "embedlab.data.CUHKSYSU",
    ]
    prepare_cuhksysu(make_release(tmp_path / "release"), tmp_path / "cuhksysu")
    roots = [
        fake_datasets.make_market1501(tmp_path / "market"),
        fake_datasets.make_mars(tmp_path / "mars"),
        fake_datasets.make_cuhk03np(tmp_path / "cuhk03"),
        tmp_path / "cuhksysu",
    ]
    for member, root in zip(members, roots, strict=True):
        member["init_args"] = {**(member.get("init_args") or {}), "root": str(root)}
    assert members[3]["init_args"]["gallery_size"] == 100
    members[3]["init_args"]["gallery_size"] = 3  # the miniature release's largest protocol
    backbone = recipe["model"]["model"]["init_args"]["backbone"]
    backbone["init_args"]["pretrained"] = False
    _, data = instantiate_config(recipe, {"dataset": members, "num_workers": 0})
    data.setup("fit")
    # every member is evaluated, each by its own protocol, and trained on
    assert data.eval_names == ["market1501", "mars", "cuhk03np", "cuhksysu"]
    frame = data.frame
    assert set(frame.loc[frame["split"] == "train", "source"]) == {0, 1, 2, 3}
    image, *_ = data.train_set[len(data.train_set) // 2]  # MARS trains on single frames
    assert image.ndim == 3
    protocols = data.member_protocols("test")
    assert protocols["mars"].startswith("query/gallery, per tracklet (every frame)")
    assert protocols["cuhksysu"] == "person search, TestG3"
    assert protocols["market1501"] == protocols["cuhk03np"] == "query/gallery, torchreid convention"
