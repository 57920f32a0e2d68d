"""Data: on-disk formats → one DataFrame → datasets → P×K batches."""

from embedlab.data.datamodule import EvalDataset, RetrievalDataModule
from embedlab.data.digits import DigitsDataset, digits_frame
from embedlab.data.formats import (
    READERS,
    read_cars196,
    read_cub200,
    read_cuhk03np,
    read_dataset,
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
from embedlab.data.sampler import PKBatchSampler
from embedlab.data.transforms import DMLTransforms, PlainTransforms, ReIDTransforms, Transforms

__all__ = [
    "DMLTransforms",
    "PlainTransforms",
    "ReIDTransforms",
    "Transforms",
    "READERS",
    "DigitsDataset",
    "EvalDataset",
    "ImageDataset",
    "PKBatchSampler",
    "RetrievalDataModule",
    "digits_frame",
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
