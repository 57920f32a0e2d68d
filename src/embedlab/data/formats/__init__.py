"""Readers for datasets as they lie on disk.

Each ``read_<name>(root, ...)`` returns a :class:`pandas.DataFrame` with the
columns ``path, label, camera, split``:

* ``path``: image path relative to ``root`` (POSIX separators);
* ``label``: integer identity/class as the dataset numbers it, ``-1`` for junk
  (kept in the gallery so the evaluation protocol can ignore it);
* ``camera``: 0-based camera index, ``-1`` where the dataset has none;
* ``split``: ``train``, ``query``, ``gallery``, or ``test`` for leave-one-out
  datasets where every test image is both a query and a gallery item.

:data:`READERS` maps the configuration names to the readers and
:func:`read_dataset` dispatches on them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from ._common import COLUMNS, SPLITS, DatasetFormatError, DatasetLayoutError
from .cars196 import Cars196, read_cars196
from .cub200 import CUB200, read_cub200
from .cuhk03np import CUHK03NP, read_cuhk03np
from .dukemtmc import DukeMTMC, read_dukemtmc
from .imagefolder import ImageFolder, read_imagefolder
from .inshop import InShop, read_inshop
from .market1501 import Market1501, read_market1501
from .msmt17 import MSMT17, read_msmt17
from .sop import SOP, read_sop
from .table import Table, read_table
from .vehicleid import VehicleID, read_vehicleid

READERS: dict[str, Callable[..., pd.DataFrame]] = {
    "market1501": read_market1501,
    "dukemtmc": read_dukemtmc,
    "msmt17": read_msmt17,
    "cuhk03np": read_cuhk03np,
    "cub200": read_cub200,
    "cars196": read_cars196,
    "sop": read_sop,
    "inshop": read_inshop,
    "vehicleid": read_vehicleid,
    "table": read_table,
    "imagefolder": read_imagefolder,
}


def read_dataset(name: str, root: str | Path, **options: Any) -> pd.DataFrame:
    """Read dataset ``name`` (a key of :data:`READERS`) from ``root``.

    ``options`` go to the reader (e.g. ``variant="labeled"`` for CUHK03-NP,
    ``include_val=True`` for MSMT17, ``test_size=1600`` for VehicleID, ``table="train.csv"``
    for a table).
    """
    reader = READERS.get(name)
    if reader is None:
        known = ", ".join(sorted(READERS))
        raise ValueError(f"unknown dataset format {name!r}; known formats: {known}")
    return reader(root, **options)


__all__ = [
    "VehicleID",
    "Table",
    "SOP",
    "MSMT17",
    "Market1501",
    "InShop",
    "ImageFolder",
    "DukeMTMC",
    "CUHK03NP",
    "CUB200",
    "Cars196",
    "COLUMNS",
    "READERS",
    "SPLITS",
    "DatasetFormatError",
    "DatasetLayoutError",
    "read_cars196",
    "read_cub200",
    "read_cuhk03np",
    "read_dataset",
    "read_dukemtmc",
    "read_imagefolder",
    "read_inshop",
    "read_market1501",
    "read_msmt17",
    "read_sop",
    "read_table",
    "read_vehicleid",
]
