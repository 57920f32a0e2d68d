"""Plain-text table of evaluation results."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["format_metrics_table"]


def format_metrics_table(results: Mapping[str, Mapping[str, Any]], digits: int = 4) -> str:
    """Format ``{row name: evaluate() result}`` as an aligned text table.

    Columns are the scalar keys of the results (arrays such as ``cmc`` and nested dicts are left
    out); metric values are printed with ``digits`` decimals, counts as integers.
    """
    columns: list[str] = []
    for res in results.values():
        for key, value in res.items():
            if isinstance(value, int | float | np.integer | np.floating) and key not in columns:
                columns.append(key)
    header = ["", *columns]
    rows = [header]
    for name, res in results.items():
        row = [str(name)]
        for key in columns:
            value = res.get(key)
            if value is None:
                row.append("-")
            elif isinstance(value, int | np.integer) or key.startswith("num_"):
                row.append(str(int(value)))
            else:
                row.append(f"{float(value):.{digits}f}")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
