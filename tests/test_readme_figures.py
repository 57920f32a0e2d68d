"""Every figure in README.md is the rendering of a measurement recorded by
``benchmarks/readme_figures.py`` (``make readme-figures``), and the digits figures reproduce."""

from __future__ import annotations

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
