"""The report of a study so far: the comparison of its trials' runs."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from embedlab.analysis.compare import (
    compare_runs,
    print_table,
    summary_table,
    write_comparison,
)
from embedlab.sweep.spec import metric_name


def report(
    study: optuna.Study, config: dict[str, Any], folder: Path, plots: bool = True
) -> list[Path]:
    """``trials.csv``, the comparison of the finished trials' run folders and, with ``plots``,
    Optuna's optimisation history and parameter importances, written to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "trials.csv"]
    study.trials_dataframe().to_csv(written[0], index=False)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    runs = [Path(t.user_attrs["run_dir"]) for t in complete if "run_dir" in t.user_attrs]
    metric = metric_name(config)
    if runs:
        frame = compare_runs(runs, primary=metric)
        print_table(
            summary_table(frame, primary=metric, sort=metric), title=f"sweep {config.get('name')}"
        )
        written += write_comparison(
            frame, folder, primary=metric, sort=metric, plots=plots
        ).values()
    if plots and complete:
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as optuna_plots

        pictures: dict[str, Callable[[optuna.Study], Any]] = {
            "optimization_history": optuna_plots.plot_optimization_history
        }
        if len(complete) >= 2 and complete[0].distributions:
            pictures["param_importances"] = optuna_plots.plot_param_importances
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            for name, plot in pictures.items():
                figure = plot(study).get_figure()
                figure.savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
                plt.close(figure)
                written.append(folder / f"{name}.png")
    return written
