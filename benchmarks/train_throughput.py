"""Training throughput of the Bag-of-Tricks recipe (experiments/market1501_bot.yaml), in images/s.

    python benchmarks/train_throughput.py --device cuda --out gpu_check_out/train   # full size
    python benchmarks/train_throughput.py --tiny --device cpu --out /tmp/tt          # CI sized

Data: a synthetic tree in the Market-1501 layout and file-name format (``0001_c1s1_000151_00.jpg``)
written once under ``--data`` (751 identities x 17 JPEGs of 128x64; ``--tiny``: 20 x 4 of 64x32)
and read by ``embedlab.data.Market1501``, ``ImageDataset``, ``ReIDTransforms`` and
``PKBatchSampler`` (P=16, K=4 at 256x128; ``--tiny``: P=8, K=4 at 64x32, a SmallCNN instead of the
ResNet-50 with last stride 1).

Parts (``--parts``, comma-separated):

* ``loader``: the data pipeline alone, per worker count (pinned memory on CUDA) and decoder
  (PIL, or ``torchvision.io.decode_jpeg`` in the workers, or batched on the GPU on CUDA).
* ``model``: one training step alone on synthetic tensors already on the device, fp32 vs bf16
  autocast, channels_last off/on, ``torch.compile`` of the model and the losses off/on.
* ``e2e``: loader + training step, per worker count.
* ``sync``: host synchronisations of one training step. On CUDA under
  ``torch.cuda.set_sync_debug_mode("warn")`` (goal: at most 1); on every device the Tensor -> Python
  conversions, counted as ``tests/test_guards.py`` does, split into those of ``torch.optim`` (Adam
  reads its step counter, a CPU tensor, with ``.item()``: no device synchronisation) and the rest.

``model`` and ``e2e`` run embedlab's ``MetricLearningModule`` under a Lightning ``Trainer`` and a
plain PyTorch loop over the same model, losses (triplet + CE + centre) and optimisers (Adam, and
SGD for the centres): the plain loop is the upper bound and ``embedlab/plain`` their ratio.
The learning-rate schedule is left out (it steps once per epoch). Output: ``OUT/train_throughput.md``
and ``OUT/train_throughput.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

PARTS = ("loader", "model", "e2e", "sync")


@dataclass(frozen=True)
class Sizes:
    ids: int
    per_id: int
    source: tuple[int, int]  # height, width of the JPEGs on disk
    input: tuple[int, int]  # height, width after ReIDTransforms
    p: int
    k: int
    backbone: str
    workers: tuple[int, ...]
    warmup: int  # batches before the clock starts
    steps: int  # batches timed


FULL = Sizes(751, 17, (128, 64), (256, 128), 16, 4, "resnet50", (4, 8, 16), 5, 20)
TINY = Sizes(20, 4, (64, 32), (64, 32), 8, 4, "smallcnn", (0, 2), 1, 3)


# -- synthetic Market-1501 tree --------------------------------------------------------------------
def write_tree(root: Path, sizes: Sizes) -> Path:
    """Write ``sizes.ids x sizes.per_id`` JPEGs in the Market-1501 layout (once: a marker file
    records what was written; a different size rewrites it)."""
    from PIL import Image

    spec = {"ids": sizes.ids, "per_id": sizes.per_id, "source": list(sizes.source), "version": 1}
    marker = root / "synthetic.json"
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return root
    rng = np.random.default_rng(0)
    h, w = sizes.source
    folders = {name: root / name for name in ("bounding_box_train", "query", "bounding_box_test")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.jpg"):
            old.unlink()
    shade = np.linspace(0.6, 1.4, h, dtype=np.float32)[:, None, None]
    for pid in range(1, sizes.ids + 1):
        colour = rng.uniform(40, 215, 3).astype(np.float32)
        for j in range(sizes.per_id):
            pixels = colour * shade + rng.normal(0, 25, (h, w, 3)).astype(np.float32)
            name = f"{pid:04d}_c{j % 6 + 1}s1_{25 * j + 1:06d}_00.jpg"
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            image.save(folders["bounding_box_train"] / name, quality=90)
            if j == 0 and pid <= 2:  # the reader wants every folder; query/gallery are not timed
                image.save(folders["query"] / name, quality=90)
                image.save(folders["bounding_box_test"] / name.replace("_c1", "_c2"), quality=90)
    marker.write_text(json.dumps(spec))
    return root


class JpegBytes(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """The images of an ``ImageDataset`` decoded by ``torchvision.io.decode_jpeg``: in the worker
    (``transform`` given) or left as the file's bytes for a batched decode on the GPU."""

    def __init__(self, images: Any, transform: Callable[[Tensor], Tensor] | None) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        from torchvision.io import decode_jpeg, read_file

        data = read_file(str(self.images.path(int(index))))
        label = int(self.images.labels[int(index)])
        if self.transform is None:
            return data, label
        return self.transform(decode_jpeg(data)), label


def bytes_collate(items: list[tuple[Tensor, int]]) -> tuple[list[Tensor], Tensor]:
    return [d for d, _ in items], torch.tensor([y for _, y in items])


def make_loader(
    root: Path, sizes: Sizes, workers: int, pin: bool, decode: str, batches: int
) -> tuple[torch.utils.data.DataLoader[Any], int]:
    """The P x K training loader of the tree (labels 0..ids-1) and its number of identities."""
    import pandas as pd

    from embedlab.data import ImageDataset, Market1501, PKBatchSampler, ReIDTransforms

    frame = Market1501(root).frame()
    train = frame[frame["split"] == "train"].reset_index(drop=True)
    train["label"] = pd.factorize(train["label"], sort=True)[0]
    transform = ReIDTransforms(*sizes.input).train
    images = ImageDataset(train, root, transform)
    dataset: Any = images
    collate: Any = None
    if decode == "decode_jpeg":
        dataset = JpegBytes(images, transform)
    elif decode == "decode_jpeg (GPU)":
        dataset, collate = JpegBytes(images, None), bytes_collate
    sampler = PKBatchSampler(images.labels, sizes.p, sizes.k, seed=0, batches_per_epoch=batches)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=workers, pin_memory=pin, collate_fn=collate
    )
    return loader, int(train["label"].nunique())


def gpu_decode(
    batch: tuple[list[Tensor], Tensor], transform: Callable[[Tensor], Tensor], device: torch.device
) -> tuple[Tensor, Tensor]:
    from torchvision.io import decode_jpeg

    decoded = decode_jpeg(batch[0], device=device)
    return torch.stack([transform(x) for x in decoded]), batch[1].to(device)


# -- timing ----------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_s(
    batches: Iterable[Any], step: Callable[[Any], None], sizes: Sizes, device: torch.device
) -> float:
    """Run ``step`` on ``warmup + steps`` batches; images/s over the last ``steps`` (each timed
    batch includes fetching it)."""
    it = iter(batches)
    for _ in range(sizes.warmup):
        step(next(it))
    synchronize(device)
    start = time.perf_counter()
    for _ in range(sizes.steps):
        step(next(it))
    synchronize(device)
    return sizes.steps * sizes.p * sizes.k / (time.perf_counter() - start)


# -- the recipe ------------------------------------------------------------------------------------
def build_model(sizes: Sizes) -> Any:
    from embedlab.models import AvgPool, EmbeddingModel, ResNet, SmallCNN

    backbone: nn.Module
    if sizes.backbone == "resnet50":
        backbone = ResNet(depth=50, last_stride=1, pretrained=False)
    else:
        backbone = SmallCNN(in_channels=3, width=16, depth=3)
    return EmbeddingModel(backbone, AvgPool(), embedding_dim=None, bnneck=True, normalize=False)


def recipe_losses() -> tuple[Any, Any, Any]:
    from embedlab.losses import CenterLoss, CrossEntropyLoss, TripletLoss
    from embedlab.miners import BatchHardMiner

    return TripletLoss(margin=0.3, miner=BatchHardMiner()), CrossEntropyLoss(0.1), CenterLoss()


CENTER_WEIGHT = 5e-4
ADAM = partial(torch.optim.Adam, lr=3.5e-4, weight_decay=5e-4)
CENTER_SGD = partial(torch.optim.SGD, lr=0.5)


def compile_in_place(obj: Any, method: str) -> None:
    setattr(obj, method, torch.compile(getattr(obj, method)))


def embedlab_module(sizes: Sizes, num_classes: int, compiled: bool) -> Any:
    import pytorch_lightning as pl

    from embedlab.module import LossTerm, MetricLearningModule

    class BenchModule(MetricLearningModule):
        channels_last = False

        def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
            if self.channels_last:
                batch = [batch[0].contiguous(memory_format=torch.channels_last), *batch[1:]]
            return batch

    torch.manual_seed(0)
    triplet, ce, center = recipe_losses()
    module = BenchModule(
        build_model(sizes),
        triplet,
        aux_losses=[
            LossTerm(ce, input="logits"),
            LossTerm(center, weight=CENTER_WEIGHT, optimizer=CENTER_SGD),
        ],
        num_classes=num_classes,
        optimizer=ADAM,
    )
    if compiled:
        compile_in_place(module.model, "forward_train")
        for term in module.terms:
            compile_in_place(term.loss, "forward")
    assert isinstance(module, pl.LightningModule)
    return module


class StepClock:
    """A Lightning callback timing batches ``warmup .. warmup + steps - 1`` (fetch included)."""

    def __init__(self, sizes: Sizes, device: torch.device) -> None:
        self.sizes, self.device = sizes, device
        self.start = self.stop = math.nan

    def callback(self) -> Any:
        import pytorch_lightning as pl

        clock = self

        class Clock(pl.Callback):
            def on_train_batch_end(self, *args: Any) -> None:
                index = args[-1]
                if index in (clock.sizes.warmup - 1, clock.sizes.warmup + clock.sizes.steps - 1):
                    synchronize(clock.device)
                    now = time.perf_counter()
                    if index == clock.sizes.warmup - 1:
                        clock.start = now
                    else:
                        clock.stop = now

        return Clock()

    def images_per_s(self) -> float:
        return self.sizes.steps * self.sizes.p * self.sizes.k / (self.stop - self.start)


def trainer(device: torch.device, precision: str, steps: int, callbacks: Sequence[Any]) -> Any:
    import pytorch_lightning as pl

    return pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision="bf16-mixed" if precision == "bf16" else "32-true",
        max_steps=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        log_every_n_steps=50,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=list(callbacks),
        default_root_dir=tempfile.gettempdir(),
    )


def run_embedlab(
    sizes: Sizes,
    device: torch.device,
    batches: Iterable[Any],
    num_classes: int,
    precision: str,
    channels_last: bool,
    compiled: bool,
) -> float:
    module = embedlab_module(sizes, num_classes, compiled)
    if channels_last:
        module.to(memory_format=torch.channels_last)
        module.channels_last = True
    clock = StepClock(sizes, device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer(device, precision, sizes.warmup + sizes.steps, [clock.callback()]).fit(
            module, train_dataloaders=batches
        )
    return clock.images_per_s()


def plain_step_fn(
    sizes: Sizes,
    device: torch.device,
    num_classes: int,
    precision: str,
    channels_last: bool,
    compiled: bool,
) -> Callable[[Any], None]:
    """One step of the plain loop: the same model, losses and optimisers, no framework."""
    torch.manual_seed(0)
    model = build_model(sizes)
    triplet, ce, center = recipe_losses()
    center.set_sizes(num_classes, model.embedding_dim)
    classifier = nn.Linear(model.embedding_dim, num_classes, bias=False)
    for m in (model, classifier, center):
        m.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compiled:
        compile_in_place(model, "forward_train")
        for loss in (triplet, ce, center):
            compile_in_place(loss, "forward")
    optimizer = ADAM([*model.parameters(), *classifier.parameters()])
    center_optimizer = CENTER_SGD(center.parameters())
    model.train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    autocast = partial(torch.autocast, device.type, torch.bfloat16, enabled=precision == "bf16")

    def step(batch: Any) -> None:
        images = batch[0].to(device, non_blocking=True).contiguous(memory_format=fmt)
        labels = batch[1].to(device, non_blocking=True)
        with autocast():
            out = model.forward_train(images)
            logits = classifier(out.embedding)
            loss = (
                triplet(out.features, labels)
                + ce(logits, labels)
                + CENTER_WEIGHT * center(out.features, labels)
            )
        optimizer.zero_grad(set_to_none=True)
        center_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        center.centers.grad.mul_(1.0 / CENTER_WEIGHT)
        optimizer.step()
        center_optimizer.step()

    return step


class Repeat:
    """An iterable of ``times`` copies of one batch (a list would be read by Lightning as a list
    of loaders)."""

    def __init__(self, batch: Any, times: int) -> None:
        self.batch, self.times = batch, times

    def __iter__(self) -> Iterator[Any]:
        return iter([self.batch] * self.times)

    def __len__(self) -> int:
        return self.times


def synthetic_batches(
    sizes: Sizes, device: torch.device, channels_last: bool, times: int | None = None
) -> Repeat:
    """The same on-device batch, ``warmup + steps`` times (Lightning's transfer is a no-op)."""
    g = torch.Generator().manual_seed(0)
    b = sizes.p * sizes.k
    images = torch.randn(b, 3, *sizes.input, generator=g).to(device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.arange(sizes.p, device=device).repeat_interleave(sizes.k)
    return Repeat((images, labels), times or sizes.warmup + sizes.steps)


# -- parts -----------------------------------------------------------------------------------------
Row = dict[str, Any]


def part_loader(root: Path, sizes: Sizes, device: torch.device) -> list[Row]:
    from embedlab.data import ReIDTransforms

    cuda = device.type == "cuda"
    decoders = ["PIL", "decode_jpeg", *(["decode_jpeg (GPU)"] if cuda else [])]
    rows = []
    for workers in sizes.workers:
        for decode in decoders:
            loader, _ = make_loader(root, sizes, workers, cuda, decode, sizes.warmup + sizes.steps)
            if decode == "decode_jpeg (GPU)":
                transform = ReIDTransforms(*sizes.input).train
                step: Callable[[Any], Any] = partial(gpu_decode, transform=transform, device=device)
            else:

                def step(batch: Any) -> None:
                    batch[0].to(device, non_blocking=True)

            rate = images_per_s(loader, step, sizes, device)
            rows.append(
                {
                    "part": "loader",
                    "variant": f"{decode}, workers={workers}, pin_memory={cuda}",
                    "workers": workers,
                    "decode": decode,
                    "images_per_s": rate,
                }
            )
    return rows


def model_grid(device: torch.device, tiny: bool) -> list[tuple[str, bool, bool]]:
    """(precision, channels_last, compile) of the model part: every precision x memory format
    without compile, and with compile fp32 and the fastest-looking bf16 + channels_last
    (compile of the whole grid would not fit the time of a GPU check). ``--tiny`` on CPU skips
    compile (a C++ build per variant)."""
    grid = [(p, cl, False) for p in ("fp32", "bf16") for cl in (False, True)]
    if not (tiny and device.type == "cpu"):
        grid += [("fp32", False, True), ("bf16", True, True)]
    return grid


def part_model(sizes: Sizes, device: torch.device, num_classes: int, tiny: bool) -> list[Row]:
    rows = []
    for precision, channels_last, compiled in model_grid(device, tiny):
        batches = synthetic_batches(sizes, device, channels_last)
        ours = run_embedlab(sizes, device, batches, num_classes, precision, channels_last, compiled)
        step = plain_step_fn(sizes, device, num_classes, precision, channels_last, compiled)
        plain = images_per_s(batches, step, sizes, device)
        rows.append(
            {
                "part": "model",
                "variant": f"{precision}, channels_last={'on' if channels_last else 'off'}, "
                f"compile={'on' if compiled else 'off'}",
                "precision": precision,
                "channels_last": channels_last,
                "compile": compiled,
                "images_per_s": ours,
                "plain_images_per_s": plain,
                "ratio_to_plain": ours / plain,
            }
        )
    return rows


def part_e2e(root: Path, sizes: Sizes, device: torch.device) -> list[Row]:
    cuda = device.type == "cuda"
    precision, channels_last = ("bf16", True) if cuda else ("fp32", False)
    rows = []
    batches = sizes.warmup + sizes.steps
    for workers in sizes.workers:
        loader, num_classes = make_loader(root, sizes, workers, cuda, "PIL", batches)
        ours = run_embedlab(sizes, device, loader, num_classes, precision, channels_last, False)
        loader, _ = make_loader(root, sizes, workers, cuda, "PIL", batches)
        step = plain_step_fn(sizes, device, num_classes, precision, channels_last, False)
        plain = images_per_s(loader, step, sizes, device)
        rows.append(
            {
                "part": "e2e",
                "variant": f"PIL, workers={workers}, {precision}, "
                f"channels_last={'on' if channels_last else 'off'}",
                "workers": workers,
                "precision": precision,
                "channels_last": channels_last,
                "images_per_s": ours,
                "plain_images_per_s": plain,
                "ratio_to_plain": ours / plain,
            }
        )
    return rows


class ConversionCounter:
    """Counts Tensor -> Python conversions while active (the approach of tests/test_guards.py),
    split by whether ``torch.optim`` made them."""

    PATCHED = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")

    def __init__(self) -> None:
        self.active = False
        self.counts = {"torch.optim": 0, "other": 0}

    @contextlib.contextmanager
    def installed(self) -> Iterator[ConversionCounter]:
        originals = {name: getattr(Tensor, name) for name in self.PATCHED}

        def wrap(original: Any) -> Any:
            def counted(t: Tensor, *args: Any) -> Any:
                if self.active:
                    caller = sys._getframe(1).f_code.co_filename.replace("\\", "/")
                    self.counts["torch.optim" if "/torch/optim/" in caller else "other"] += 1
                return original(t, *args)

            return counted

        try:
            for name, original in originals.items():
                setattr(Tensor, name, wrap(original))
            yield self
        finally:
            for name, original in originals.items():
                setattr(Tensor, name, original)


def part_sync(sizes: Sizes, device: torch.device, num_classes: int) -> dict[str, Any]:
    """Host synchronisations and Tensor -> Python conversions of one fp32 training step (the
    third, after two that warm up)."""
    import pytorch_lightning as pl

    probe_index = 2
    counter = ConversionCounter()
    cuda = device.type == "cuda"

    class Probe(pl.Callback):
        records: list[warnings.WarningMessage] = []
        catcher: Any = None

        def on_train_batch_start(self, *args: Any) -> None:
            if args[-1] != probe_index:
                return
            if cuda:
                synchronize(device)
                self.catcher = warnings.catch_warnings(record=True)
                self.records = self.catcher.__enter__()
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
            counter.active = True

        def on_train_batch_end(self, *args: Any) -> None:
            if args[-1] != probe_index:
                return
            counter.active = False
            if cuda:
                torch.cuda.set_sync_debug_mode(0)
                self.catcher.__exit__(None, None, None)

    module = embedlab_module(sizes, num_classes, compiled=False)
    batches = synthetic_batches(sizes, device, False, probe_index + 1)
    probe = Probe()
    with counter.installed(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer(device, "fp32", probe_index + 1, [probe]).fit(module, train_dataloaders=batches)
    syncs: Any = "n/a (no CUDA)"
    sites: list[str] = []
    if cuda:
        found = [r for r in probe.records if "synchroniz" in str(r.message).lower()]
        syncs = len(found)
        sites = sorted({f"{r.filename}:{r.lineno}" for r in found})
    return {
        "part": "sync",
        "cuda_syncs_per_step": syncs,
        "cuda_sync_sites": sites,
        "goal": "<= 1 per step",
        "conversions_per_step": counter.counts["other"],
        "optimizer_conversions_per_step": counter.counts["torch.optim"],
    }


# -- output ----------------------------------------------------------------------------------------
def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:,.0f}"
    return str(value)


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"### Training throughput ({result['device']}, {'tiny' if result['tiny'] else 'full'} "
        f"sizes: {result['sizes']['ids']} ids x {result['sizes']['per_id']} JPEGs, "
        f"input {result['sizes']['input'][0]}x{result['sizes']['input'][1]}, "
        f"P={result['sizes']['p']} K={result['sizes']['k']}, {result['sizes']['backbone']})",
        "",
        "| part | variant | images/s | plain loop images/s | embedlab/plain |",
        "|---|---|---:|---:|---:|",
    ]
    if not result["rows"]:
        lines = [f"### Host synchronisations per training step ({result['device']})", ""]
    for row in result["rows"]:
        lines.append(
            f"| {row['part']} | {row['variant']} | {fmt(row['images_per_s'])} | "
            f"{fmt(row.get('plain_images_per_s', '-'))} | {fmt(row.get('ratio_to_plain', '-'))} |"
        )
    sync = result.get("sync")
    if sync is not None:
        lines += [
            "",
            "| part | check | value |",
            "|---|---|---:|",
            f"| sync | CUDA host syncs per training step (goal {sync['goal']}) | "
            f"{sync['cuda_syncs_per_step']} |",
            f"| sync | Tensor -> Python conversions per step, outside torch.optim | "
            f"{sync['conversions_per_step']} |",
            f"| sync | of which in torch.optim (Adam's CPU step counters) | "
            f"{sync['optimizer_conversions_per_step']} |",
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CI sizes (minutes on a CPU)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--out", type=Path, default=Path("gpu_check_out") / "train")
    parser.add_argument("--data", type=Path, default=None, help="synthetic tree (written once)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"subset of {','.join(PARTS)}")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's; --tiny: 1)"
    )
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose from {PARTS}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device (torch.cuda.is_available() is False)")
    device = torch.device(args.device)
    threads = args.threads or (1 if args.tiny else None)
    if threads:
        torch.set_num_threads(threads)
    sizes = TINY if args.tiny else FULL
    data = args.data or Path(tempfile.gettempdir()) / (
        f"embedlab-synthetic-market-{'tiny' if args.tiny else 'full'}"
    )
    started = time.perf_counter()
    root = write_tree(data, sizes)
    num_classes = sizes.ids
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "tiny": args.tiny,
        "sizes": asdict(sizes),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "rows": [],
    }
    if "loader" in parts:
        result["rows"] += part_loader(root, sizes, device)
    if "model" in parts:
        result["rows"] += part_model(sizes, device, num_classes, args.tiny)
    if "e2e" in parts:
        result["rows"] += part_e2e(root, sizes, device)
    if "sync" in parts:
        result["sync"] = part_sync(sizes, device, num_classes)
    result["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.out / "train_throughput.md").write_text(table)
    print(table)
    return result


if __name__ == "__main__":
    main()
