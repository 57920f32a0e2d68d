"""``benchmarks/search.py`` end to end on a small gallery: every method reports finite figures,
exact search reproduces the numpy ground truth and PML's flat search finds the same neighbours."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # six worker processes: about a minute on two cores
def test_search_benchmark_reports_every_method(tmp_path: Path) -> None:
    out = tmp_path / "search.json"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "search.py"),
        *("--n", "20000", "--queries", "200", "--dim", "32", "--clusters", "100"),
        *("--threads", "2", "--nprobe", "4", "--ef_search", "16", "--min_time", "0"),
        *("--json", str(out)),
    ]
    subprocess.run(command, check=True, cwd=tmp_path, capture_output=True)
    figure = json.loads(out.read_text())
    rows = {row["method"]: row for row in figure["rows"]}
    assert set(rows) == {
        "numpy",
        "Flat",
        "PML InferenceModel",
        "IVF512,Flat nprobe=4",
        "IVF512,PQ8 nprobe=4",
        "HNSW32 ef_search=16",
    }
    keys = ["build s", "queries/s", "queries/s 1 thread", "recall@10", "speed-up"]
    keys += ["speed-up 1 thread", "peak MB", "index MB"]
    for method, row in rows.items():
        for key in keys:
            assert math.isfinite(row[key]), (method, key)
        assert row["queries/s"] > 0 and row["queries/s 1 thread"] > 0, method
        assert 0 <= row["recall@10"] <= 1 and row["peak MB"] >= 0, method
    # the truth is numpy's; faiss's exact index and PML's must find exactly its top 10
    for exact in ("numpy", "Flat", "PML InferenceModel"):
        assert rows[exact]["recall@10"] == 1.0, exact
    assert figure["pml same as exact"] == 1.0
    assert figure["baseline"] == "Flat" and rows["Flat"]["speed-up"] == 1.0
    # an approximate index finds something, a PQ index of 8 bytes per vector not everything
    assert rows["HNSW32 ef_search=16"]["recall@10"] > 0.5
    assert rows["IVF512,PQ8 nprobe=4"]["recall@10"] < 1.0


def test_the_million_vector_table_is_a_figure_measured_on_request() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import readme_figures

    measure, render, by_default = readme_figures.FIGURES_OF["search_1m"]
    assert measure is readme_figures.measure_search_1m and not by_default
    figure = readme_figures.recorded("search_1m")
    assert figure["n"] == 1_000_000 and figure["baseline"] == "Flat"
    assert render(figure) in readme_figures.README.read_text()
