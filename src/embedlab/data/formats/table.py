"""A table (CSV, TSV or Parquet) describing a custom dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from embedlab.data.source import DataSource

from ._common import COLUMNS, SPLITS, DatasetFormatError, DatasetLayoutError, check_root

LAYOUT = """\
<root>/
├── <any image tree>          paths in the table are relative to <root>
└── dataset.csv               (or .tsv / .parquet; the only table at <root>, or pass table=)
        required columns: path, label (integer)
        optional columns: camera (integer, 0-based; -1 = none), split (train|query|gallery|test)
                          is_query, is_gallery (true/false; used when split is absent)
"""

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f", ""}


def _find_table(root: Path) -> Path:
    candidates = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in TABLE_SUFFIXES)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise DatasetLayoutError(
            "table", root / "dataset.csv", LAYOUT, hint="No .csv/.tsv/.parquet file at the root."
        )
    names = ", ".join(p.name for p in candidates)
    raise ValueError(f"table: several tables at {root} ({names}); choose one with table=...")


def _load(file: Path) -> tuple[pd.DataFrame, int]:
    """Load the file; also return the offset turning a row index into a line number.

    For text tables the offset is 2 (the header is line 1); for Parquet it is
    1, and messages say 'row' instead of 'line'.
    """
    suffix = file.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            return pd.read_parquet(file), 1
        except ImportError as exc:
            raise ImportError(
                f"reading {file} needs a Parquet engine; install pyarrow (pip install pyarrow)"
            ) from exc
    sep = "\t" if suffix == ".tsv" else ","
    try:
        frame = pd.read_csv(file, sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(file, f"cannot be parsed: {exc}") from exc
    return frame, 2


def _integers(frame: pd.DataFrame, column: str, file: Path, offset: int, unit: str) -> np.ndarray:
    values = frame[column]
    numbers = pd.to_numeric(values.astype(str).str.strip(), errors="coerce").to_numpy(
        dtype=np.float64
    )
    bad = ~np.isfinite(numbers) | (numbers != np.round(numbers))
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        raise DatasetFormatError(
            file,
            f"{unit} {position + offset}: {column} {values.iloc[position]!r} is not an integer",
        )
    return numbers.astype(np.int64)


def _booleans(frame: pd.DataFrame, column: str, file: Path, offset: int, unit: str) -> np.ndarray:
    text = frame[column].astype(str).str.strip().str.lower()
    known = text.isin(_TRUE | _FALSE).to_numpy()
    if not known.all():
        position = int(np.flatnonzero(~known)[0])
        raise DatasetFormatError(
            file,
            f"{unit} {position + offset}: {column} {frame[column].iloc[position]!r} "
            "is not true/false",
        )
    return text.isin(_TRUE).to_numpy()


def read_table(root: str | Path, table: str | Path | None = None) -> pd.DataFrame:
    """Read a custom dataset described by a table.

    Layout::

        <root>/dataset.csv      (any name; .csv, .tsv or .parquet)
        <root>/<images wherever the table says>

    ``table`` names the file (relative to ``root`` or absolute); without it
    the single table file at ``root`` is used. Required columns are ``path``
    (relative to ``root``) and ``label`` (integer; -1 marks junk). Optional
    columns: ``camera`` (0-based integer, -1 when unknown; default -1) and
    ``split`` (train, query, gallery or test). Without ``split``, the
    booleans ``is_query`` / ``is_gallery`` decide: both -> test (leave-one-
    out), only one -> query or gallery, neither -> train; with neither
    ``split`` nor flags, every row is train. When ``split`` and the flags are
    both given they must agree. Errors name the file and the line (CSV/TSV,
    header = line 1) or row (Parquet, 1-based).
    """
    root_path = check_root("table", root, LAYOUT)
    if table is None:
        file = _find_table(root_path)
    else:
        file = Path(table).expanduser()
        if not file.is_absolute():
            file = root_path / file
        if not file.is_file():
            raise DatasetLayoutError("table", file, LAYOUT)
    frame, offset = _load(file)
    unit = "row" if offset == 1 else "line"
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in ("path", "label") if c not in frame.columns]
    if missing:
        raise DatasetFormatError(
            file, f"missing required column(s) {missing}; found {list(frame.columns)}"
        )

    paths = frame["path"].astype(str).str.strip()
    empty = (paths == "").to_numpy()
    if empty.any():
        raise DatasetFormatError(
            file, f"{unit} {int(np.flatnonzero(empty)[0]) + offset}: empty path"
        )
    labels = _integers(frame, "label", file, offset, unit)
    if "camera" in frame.columns:
        cameras = _integers(frame, "camera", file, offset, unit)
        below = cameras < -1
        if below.any():
            position = int(np.flatnonzero(below)[0])
            raise DatasetFormatError(
                file, f"{unit} {position + offset}: camera {cameras[position]} is below -1"
            )
    else:
        cameras = np.full(len(frame), -1, dtype=np.int64)

    flags = [c for c in ("is_query", "is_gallery") if c in frame.columns]
    derived: np.ndarray | None = None
    if flags:
        is_query = (
            _booleans(frame, "is_query", file, offset, unit)
            if "is_query" in flags
            else np.zeros(len(frame), dtype=bool)
        )
        is_gallery = (
            _booleans(frame, "is_gallery", file, offset, unit)
            if "is_gallery" in flags
            else np.zeros(len(frame), dtype=bool)
        )
        derived = np.select(
            [is_query & is_gallery, is_query, is_gallery], ["test", "query", "gallery"], "train"
        ).astype(object)

    if "split" in frame.columns:
        splits = frame["split"].astype(str).str.strip().str.lower().to_numpy(dtype=object)
        unknown = ~np.isin(splits, SPLITS)
        if unknown.any():
            position = int(np.flatnonzero(unknown)[0])
            raise DatasetFormatError(
                file,
                f"{unit} {position + offset}: split {frame['split'].iloc[position]!r} "
                f"is not one of {SPLITS}",
            )
        if derived is not None:
            clash = splits != derived
            if clash.any():
                position = int(np.flatnonzero(clash)[0])
                raise DatasetFormatError(
                    file,
                    f"{unit} {position + offset}: split {splits[position]!r} disagrees with "
                    f"is_query/is_gallery (which give {derived[position]!r})",
                )
    elif derived is not None:
        splits = derived
    else:
        splits = np.full(len(frame), "train", dtype=object)

    return pd.DataFrame(
        {
            "path": paths.to_numpy(dtype=object).astype(str),
            "label": labels,
            "camera": cameras,
            "split": splits.astype(str),
        },
        columns=list(COLUMNS),
    )


class Table(DataSource):
    """A custom dataset described by a CSV, TSV or Parquet table (see :func:`read_table`).

    Args:
        path: the table file, or a folder holding exactly one table; default ``root``.
        root: where the table's relative image paths start; default the table's folder
            (``$EMBEDLAB_DATA_ROOT/table`` when neither is given).
    """

    folder = "table"

    def __init__(self, path: str | Path | None = None, root: str | Path | None = None) -> None:
        super().__init__(root)
        self.path = None if path is None else Path(path).expanduser()

    @property
    def root(self) -> Path:
        if self._root is None and self.path is not None:
            return self.path if self.path.is_dir() else self.path.parent
        return super().root

    def frame(self) -> pd.DataFrame:
        if self.path is None:
            return read_table(self.root)
        table = _find_table(self.path) if self.path.is_dir() else self.path
        return read_table(self.root, table=table)
