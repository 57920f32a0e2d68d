"""A retrieval metric defined outside embedlab plugs in by class_path and is logged."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from embedlab.cli import main


@pytest.mark.slow
def test_fit_logs_a_metric_added_by_class_path(tmp_path: Path) -> None:
    code = main(
        [
            "fit",
            f"--config={Path(__file__).parents[1] / 'experiments' / 'digits.yaml'}",
            "--trainer.max_epochs=1",
            "--trainer.check_val_every_n_epoch=1",
            "--data.batches_per_epoch=2",
            "--model.lr_scheduler=null",  # the recipe's warm-up is longer than one epoch
            f"--output_root={tmp_path}",
            '--model.metrics+={"class_path": "custom_metric.NDCG", "init_args": {"k": 5}}',
        ]
    )
    assert code == 0
    [run] = (tmp_path / "digits").glob("version_*")
    metrics = pd.read_csv(run / "metrics.csv")
    for stage in ("val", "test"):
        values = metrics[f"{stage}/ndcg@5"].dropna()
        assert len(values) >= 1 and ((values > 0) & (values <= 1)).all(), stage
        # appended: the built-ins are still logged
        assert metrics[f"{stage}/map@r"].notna().any(), stage
    summary = json.loads((run / "summary.json").read_text())
    assert "ndcg@5" in summary["raw pixels"]
