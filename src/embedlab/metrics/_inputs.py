"""Conversion and validation of the arrays given to the retrieval metrics."""

from __future__ import annotations

from typing import Literal, TypeAlias

import numpy as np
import torch
from torch import Tensor

ArrayLike: TypeAlias = Tensor | np.ndarray

#: How embeddings are compared for retrieval.
Distance: TypeAlias = Literal["cosine", "euclidean"]
DISTANCES: tuple[Distance, ...] = ("cosine", "euclidean")


def as_embeddings(
    x: ArrayLike, name: str, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Return ``x`` as a 2-D ``dtype`` (float32) tensor, raising ``ValueError`` naming ``name``
    if invalid."""
    if not isinstance(x, Tensor | np.ndarray):
        raise ValueError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")
    t = torch.as_tensor(x)
    if t.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (items x dims), got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name}: is empty (0 items)")
    if t.shape[1] == 0:
        raise ValueError(f"{name}: has 0 dimensions")
    if not (
        t.is_floating_point() or t.dtype in (torch.int32, torch.int64, torch.int16, torch.int8)
    ):
        raise ValueError(f"{name}: unsupported dtype {t.dtype}")
    t = t.detach()
    if device is not None:
        t = t.to(device)
    t = t.to(dtype)
    # A finite sum implies finite entries; only an overflowing sum needs the elementwise check.
    if not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return t.contiguous()


def as_ids(x: ArrayLike, name: str, length: int, device: torch.device) -> Tensor:
    """Return integer labels / cameras / ids as a 1-D int64 tensor of the given length."""
    if not isinstance(x, Tensor | np.ndarray | list | tuple):
        raise ValueError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")
    t = torch.as_tensor(x).detach()
    if t.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {tuple(t.shape)}")
    if t.shape[0] != length:
        raise ValueError(f"{name}: has {t.shape[0]} entries but the embeddings have {length} rows")
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()) or not bool((t == t.round()).all()):
            raise ValueError(f"{name}: must hold integers")
    elif t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name}: must hold integers, got dtype {t.dtype}")
    return t.to(device=device, dtype=torch.int64).contiguous()


def check_distance(distance: str, name: str = "distance") -> Distance:
    """``distance`` if it is one of :data:`DISTANCES`, else ``ValueError`` naming ``name``."""
    if distance == "cosine":
        return "cosine"
    if distance == "euclidean":
        return "euclidean"
    raise ValueError(f"{name}: expected one of {DISTANCES}, got {distance!r}")


def check_ks(ks: object, max_rank: int) -> tuple[int, ...]:
    if isinstance(ks, int):
        ks = (ks,)
    if not isinstance(ks, list | tuple) or not all(
        isinstance(k, int | np.integer) and not isinstance(k, bool) and k >= 1 for k in ks
    ):
        raise ValueError(f"ks: expected a sequence of positive integers, got {ks!r}")
    if not isinstance(max_rank, int | np.integer) or isinstance(max_rank, bool) or max_rank < 1:
        raise ValueError(f"max_rank: expected a positive integer, got {max_rank!r}")
    return tuple(sorted({int(k) for k in ks}))
