"""Data: datasets (``frame()`` tables) → torch datasets → P×K batches.

The readers, sources, sampler and transforms import no Lightning; the Lightning data module
(:class:`RetrievalDataModule`) is loaded on first access of its name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from embedlab.data.digits import Digits, DigitsDataset, digits_frame
from embedlab.data.eval_sets import EvalDataset
from embedlab.data.formats import (
    CUB200,
    CUHK03NP,
    CUHKSYSU,
    MSMT17,
    SOP,
    Cars196,
    DukeMTMC,
    ImageFolder,
    InShop,
    Market1501,
    Mars,
    Table,
    VehicleID,
    read_cars196,
    read_cub200,
    read_cuhk03np,
    read_cuhksysu,
    read_dukemtmc,
    read_imagefolder,
    read_inshop,
    read_market1501,
    read_msmt17,
    read_sop,
    read_table,
    read_vehicleid,
)
from embedlab.data.image_dataset import ImageDataset
from embedlab.data.pairs import (
    LFWPairs,
    YouTubeFacesPairs,
    open_pairs,
    read_lfw_pairs,
    read_ytf_splits,
)
from embedlab.data.sampler import PKBatchSampler
from embedlab.data.source import DataSource, FrameSource
from embedlab.data.transforms import (
    DigitsTransforms,
    DMLTransforms,
    PlainTransforms,
    ReIDTransforms,
    Transforms,
)

if TYPE_CHECKING:
    from embedlab.data.datamodule import RetrievalDataModule

# Lightning only for the data module.
_LAZY = {"RetrievalDataModule"}


def __getattr__(name: str) -> Any:
    """``RetrievalDataModule`` is imported on first access of its name."""
    if name in _LAZY:
        from embedlab.data import datamodule

        value = getattr(datamodule, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CUB200",
    "CUHK03NP",
    "CUHKSYSU",
    "MSMT17",
    "SOP",
    "Cars196",
    "DataSource",
    "Digits",
    "DukeMTMC",
    "FrameSource",
    "ImageFolder",
    "LFWPairs",
    "YouTubeFacesPairs",
    "InShop",
    "Market1501",
    "Mars",
    "Table",
    "VehicleID",
    "DigitsTransforms",
    "DMLTransforms",
    "PlainTransforms",
    "ReIDTransforms",
    "Transforms",
    "DigitsDataset",
    "EvalDataset",
    "ImageDataset",
    "PKBatchSampler",
    "RetrievalDataModule",
    "digits_frame",
    "read_cars196",
    "read_cub200",
    "read_cuhk03np",
    "read_cuhksysu",
    "read_dukemtmc",
    "read_imagefolder",
    "read_inshop",
    "open_pairs",
    "read_lfw_pairs",
    "read_ytf_splits",
    "read_market1501",
    "read_msmt17",
    "read_sop",
    "read_table",
    "read_vehicleid",
]
