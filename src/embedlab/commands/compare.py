"""``embedlab compare``: the tables and plots of several runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from embedlab.errors import ConfigError
from embedlab.options import PRIMARY_METRIC


def compare(
    runs: Sequence[str | Path],
    out: Path | None = None,
    metric: str = PRIMARY_METRIC,
    metrics: Sequence[str] | None = None,
    sort: str | None = PRIMARY_METRIC,
    baseline: bool = False,
    plots: bool = True,
) -> int:
    """Tabulate and plot the validation metrics of runs written by ``embedlab fit``.

    Args:
        runs: run folders, or folders holding ``version_*`` runs.
        out: output folder (default: ``<common parent>/comparison``).
        metric: the metric defining each run's best epoch.
        metrics: the metrics of the table (default: every metric the runs logged).
        sort: sort rows by this final metric, best first (``null``: keep the order).
        baseline: add the raw-pixel baseline row.
        plots: write the PNG plots (``--no_plots``: the tables only).
    """
    from embedlab.analysis.compare import (
        compare_runs,
        default_out_dir,
        print_table,
        summary_table,
        write_comparison,
    )
    from embedlab.runs import find_runs

    try:
        run_dirs = find_runs([str(r) for r in runs])
    except FileNotFoundError as err:
        raise ConfigError(f"runs: {err}") from err
    if not run_dirs:
        raise ConfigError(f"runs: no run folders found in {[str(r) for r in runs]}")
    frame = compare_runs(run_dirs, primary=metric, baseline=baseline)
    folder = Path(out) if out else default_out_dir(run_dirs)
    print_table(summary_table(frame, metrics, metric, sort=sort), title=f"{len(run_dirs)} runs")
    written = write_comparison(frame, folder, metrics, metric, sort, plots=plots)
    for path in written.values():
        print(f"wrote {path}")
    return 0
