"""Every figure in README.md is the rendering of a measurement recorded by
``benchmarks/readme_figures.py`` (``make readme-figures``), and the digits figures reproduce."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import readme_figures  # noqa: E402


def test_readme_shows_the_recorded_figures() -> None:
    text = readme_figures.README.read_text()
    assert readme_figures.render_readme(text) == text, (
        "README figures are stale: make readme-figures"
    )


def test_a_changed_figure_is_caught() -> None:
    text = readme_figures.README.read_text()
    recorded = readme_figures.recorded("digits")
    line = readme_figures.render_run(recorded)
    assert line in text
    tampered = text.replace(line, line.replace(f"{recorded['test']['map@r']:.3f}", "0.999"))
    assert readme_figures.render_readme(tampered) != tampered


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits"])
def test_figures_reproduce(name: str) -> None:
    measure = readme_figures.FIGURES_OF[name][0]
    again, recorded = measure(), readme_figures.recorded(name)
    # the selected epoch can move with thread counts (float sums); the figures must not
    for split in ("test", "raw"):
        for metric, value in recorded[split].items():
            assert again[split][metric] == pytest.approx(value, abs=0.02), (split, metric)


def test_the_loss_table_is_a_figure_measured_only_on_request() -> None:
    # the 17-run sweep takes half an hour: `--only losses`, never by default nor in this suite
    measure, render, by_default = readme_figures.FIGURES_OF["losses"]
    assert measure is readme_figures.measure_losses and not by_default
    text = readme_figures.README.read_text()
    table = render(readme_figures.recorded("losses"))
    assert table in text
    presets = readme_figures.read_yaml(ROOT / readme_figures.SWEEP_LOSSES)["parameters"]
    names = {Path(v).stem for v in presets["model.loss"]["values"]}
    assert set(readme_figures.recorded("losses")["losses"]) == names


def _metrics(map_at_r: float) -> dict[str, float]:
    return {k: map_at_r for k in readme_figures.METRICS}


def _fake_run(folder: Path, preset: str, map_at_r: float) -> None:
    folder.mkdir(parents=True)
    summary = {
        "raw pixels": _metrics(0.5),
        "val": _metrics(map_at_r),
        "test": _metrics(map_at_r),
        "checkpoint": {"epoch": 7},
        "convention": "torchreid",
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    trial = {"params": {"model.loss": f"experiments/losses/{preset}.yaml"}}
    (folder / "sweep_trial.json").write_text(json.dumps(trial))


def test_the_loss_table_is_read_from_the_sweep_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweep = tmp_path / "sweep.yaml"
    values = ["experiments/losses/a.yaml", "experiments/losses/b.yaml"]
    sweep.write_text(json.dumps({"parameters": {"model.loss": {"values": values}}}))
    monkeypatch.setattr(readme_figures, "ROOT", tmp_path)
    monkeypatch.setattr(readme_figures, "SWEEP_LOSSES", "sweep.yaml")
    runs = tmp_path / "runs" / "digits_losses"
    _fake_run(runs / "version_0", "a", 0.4)
    _fake_run(runs / "version_1", "b", 0.9)
    figure = readme_figures.losses_figure(tmp_path / "runs")
    assert set(figure["losses"]) == {"a", "b"} and figure["convention"] == "torchreid"
    table = readme_figures.render_losses(figure).splitlines()
    # best first, the raw-pixel baseline between the losses above it and those below it
    assert [line.split(" | ")[0] for line in table[2:]] == [
        "| b",
        "| raw pixels (test)",
        "| a",
    ]
    _fake_run(runs / "version_2", "a", 0.5)  # one preset twice: refused
    with pytest.raises(RuntimeError, match="two runs"):
        readme_figures.losses_figure(tmp_path / "runs")
