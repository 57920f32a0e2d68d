"""The datasets and loader the data module builds: items of several parts numbered as one
(:class:`JoinedDataset`), a query + gallery evaluation set (:class:`EvalDataset`), and the P×K
training loader whose position is saved in checkpoints (:class:`ResumableLoader`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from embedlab.data.sampler import PKBatchSampler, SeededDataset
from embedlab.metrics.person_search import PersonSearchProtocol

__all__ = ["EvalDataset", "JoinedDataset", "ResumableLoader", "protocol_of"]

Item = tuple[Tensor, int, int, int]


class JoinedDataset(Dataset[Item]):
    """Several torch datasets served as one, items numbered across them.

    Each part exposes ``labels``, ``cameras`` and ``paths`` and yields
    ``(image, label, camera, index)``; the joined dataset yields the index across all parts.
    """

    def __init__(self, parts: Sequence[Any]) -> None:
        self.parts = list(parts)
        self.starts = np.cumsum([0, *(len(p) for p in self.parts)])
        self.labels = np.concatenate([np.asarray(p.labels, dtype=np.int64) for p in self.parts])
        self.cameras = np.concatenate([np.asarray(p.cameras, dtype=np.int64) for p in self.parts])
        self.paths: list[str] = [str(x) for p in self.parts for x in p.paths]

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index: int) -> Item:
        part = int(np.searchsorted(self.starts, index, side="right")) - 1
        image, label, camera, _ = self.parts[part][index - int(self.starts[part])]
        return image, label, camera, index

    def raw_pixels(self) -> Tensor | None:
        """Flattened pixels when every part has them (in-memory data such as digits)."""
        if not all(hasattr(p, "raw_pixels") for p in self.parts):
            return None
        return torch.cat([p.raw_pixels() for p in self.parts])


class EvalDataset(JoinedDataset):
    """Query items followed by gallery items, with their roles.

    Without a gallery (leave-one-out datasets such as CUB, Cars196, SOP), every item is
    both a query and a gallery item.
    """

    #: whether the ``official`` evaluation convention ranks the queries as gallery items too
    #: (set from the dataset's ``queries_in_official_gallery``, true for MARS)
    queries_in_official_gallery: bool = False
    #: person search instead of ReID ranking: each query against its own gallery (set for a
    #: union's CUHK-SYSU test split; queries and gallery items in the protocol's order)
    person_search: PersonSearchProtocol | None = None
    #: how the set is evaluated, in words (the per-member summary's ``protocol`` column)
    protocol: str = ""

    def __init__(self, query: Any, gallery: Any | None = None) -> None:
        super().__init__([query] if gallery is None else [query, gallery])
        n, offset = len(self), len(query)
        self.is_query = np.arange(n) < offset if gallery is not None else np.ones(n, bool)
        self.is_gallery = ~self.is_query if gallery is not None else np.ones(n, bool)


class ResumableLoader(DataLoader):
    """A P×K training loader whose position is saved in Lightning checkpoints.

    Lightning stores ``state_dict()`` of a training loader in the checkpoint and calls
    ``load_state_dict()`` on resume; the sampler then skips the batches already trained on,
    so a run resumed mid-epoch sees exactly the batches the uninterrupted run would have.
    ``batches_done`` reports how many batches of the current epoch were trained (not merely
    prefetched).
    """

    def __init__(
        self, dataset: Any, sampler: PKBatchSampler, num_workers: int, batches_done: Any
    ) -> None:
        super().__init__(
            SeededDataset(dataset),
            batch_sampler=sampler,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            generator=torch.Generator().manual_seed(sampler.seed),
        )
        self.pk_sampler = sampler
        self.batches_done = batches_done

    def state_dict(self) -> dict[str, Any]:
        return {**self.pk_sampler.state_dict(), "batches_done": int(self.batches_done())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pk_sampler.load_state_dict(state)
        done = int(state.get("batches_done", 0))
        self.pk_sampler.start_batch = done if done < len(self.pk_sampler) else 0


def protocol_of(found: EvalDataset) -> str:
    """``query/gallery`` or ``leave-one-out`` ReID ranking, per tracklet for clips."""
    words = "leave-one-out" if found.is_query.all() and found.is_gallery.all() else "query/gallery"
    clips = [p for p in found.parts if hasattr(p, "tracklet_ids")]
    if clips:
        sampling = getattr(clips[0], "sampling", "")
        frames = "every frame" if sampling == "all" else f"{clips[0].length} frames {sampling}"
        words += f", per tracklet ({frames})"
    return words
