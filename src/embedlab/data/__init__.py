"""Data: on-disk formats → one DataFrame → datasets → P×K batches."""

from embedlab.data.datamodule import EvalDataset, RetrievalDataModule
from embedlab.data.digits import DigitsDataset, digits_frame
from embedlab.data.sampler import PKBatchSampler

__all__ = ["DigitsDataset", "EvalDataset", "PKBatchSampler", "RetrievalDataModule", "digits_frame"]
