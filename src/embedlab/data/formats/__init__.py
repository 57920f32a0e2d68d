"""Readers for datasets as they lie on disk.

Each ``read_<name>(root, ...)`` returns a :class:`pandas.DataFrame` with the
columns ``path, label, camera, split``:

* ``path``: image path relative to ``root`` (POSIX separators);
* ``label``: integer identity/class as the dataset numbers it, ``-1`` for junk
  (kept in the gallery so the evaluation protocol can ignore it);
* ``camera``: 0-based camera index, ``-1`` where the dataset has none;
* ``split``: ``train``, ``query``, ``gallery``, or ``test`` for leave-one-out
  datasets where every test image is both a query and a gallery item.

Each format also has its dataset class (``Market1501``, ``CUB200``, …, see
:mod:`embedlab.data.source`), chosen in a configuration by ``class_path``.
"""

from __future__ import annotations

from ._common import COLUMNS, SPLITS, DatasetFormatError, DatasetLayoutError
from .cars196 import Cars196, read_cars196
from .cub200 import CUB200, read_cub200
from .cuhk03np import CUHK03NP, read_cuhk03np
from .cuhksysu import CUHKSYSU, read_cuhksysu
from .dukemtmc import DukeMTMC, read_dukemtmc
from .imagefolder import ImageFolder, read_imagefolder
from .inshop import InShop, read_inshop
from .market1501 import Market1501, read_market1501
from .mars import Mars, read_mars
from .msmt17 import MSMT17, read_msmt17
from .sop import SOP, read_sop
from .table import Table, read_table
from .vehicleid import VehicleID, read_vehicleid

__all__ = [
    "Mars",
    "read_mars",
    "VehicleID",
    "Table",
    "SOP",
    "MSMT17",
    "Market1501",
    "InShop",
    "ImageFolder",
    "DukeMTMC",
    "CUHK03NP",
    "CUHKSYSU",
    "CUB200",
    "Cars196",
    "COLUMNS",
    "SPLITS",
    "DatasetFormatError",
    "DatasetLayoutError",
    "read_cars196",
    "read_cub200",
    "read_cuhk03np",
    "read_cuhksysu",
    "read_dukemtmc",
    "read_imagefolder",
    "read_inshop",
    "read_market1501",
    "read_msmt17",
    "read_sop",
    "read_table",
    "read_vehicleid",
]
