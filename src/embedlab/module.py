"""MetricLearningModule: embedding model + weighted loss terms + optimiser; validation → metrics."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

import embedlab.ddp  # noqa: F401  (registers ddp_spawn workers that tear down together)
from embedlab.callbacks.nonfinite import NonFiniteGuard
from embedlab.callbacks.random_state import RandomState
from embedlab.constraints import PositiveFloat, PositiveInt
from embedlab.distributed import gather_batch
from embedlab.errors import ConfigError
from embedlab.evaluation import EvalRoles
from embedlab.losses import Loss
from embedlab.metrics import (
    PRIMARY_METRIC,
    Convention,
    Distance,
    EvalOptions,
    PersonSearchEvaluator,
    PersonSearchProtocol,
    RankMetric,
    RecallAtK,
    RetrievalEvaluator,
    scalar_metrics,
)
from embedlab.metrics.person_search import person_search_metrics
from embedlab.models import EmbeddingModel
from embedlab.optim import ChainedOptimizer

LossInput = Literal["features", "embedding", "logits"]


class LossTerm(nn.Module):
    """One weighted term of the training objective.

    Args:
        loss: called as ``loss(x, labels)``.
        weight: multiplier of this term.
        input: what ``x`` is: ``features`` (before BNNeck, for metric losses), ``embedding``
            (the retrieval embedding) or ``logits`` (identity classifier output, for
            ``CrossEntropyLoss``).
        name: key used in the logs; defaults to the loss class name.
        lr: learning rate of the loss's own parameters (``MarginLoss`` β, ``CenterLoss``
            centres) in a separate group of the model's optimiser; ``None`` uses the optimiser's.
        optimizer: an optimiser of the loss's own parameters instead (e.g. SGD with ``lr: 0.5``
            for the ``CenterLoss`` centres, as in the Bag-of-Tricks code); stepped with the
            model's, at its own constant learning rate (the LR schedule is the model's), on the
            gradient of the unweighted loss (divided by ``weight``, as that code does).
    """

    def __init__(
        self,
        loss: Loss,
        weight: float = 1.0,
        input: LossInput = "features",
        name: str | None = None,
        lr: PositiveFloat | None = None,
        optimizer: OptimizerCallable | None = None,
    ) -> None:
        super().__init__()
        self.loss = loss
        self.weight = weight
        self.input: LossInput = input
        self.name = name or type(loss).__name__
        if lr is not None and optimizer is not None:
            raise ConfigError(f"loss term {self.name!r}: give lr or optimizer, not both")
        self.lr = lr
        check_lr(optimizer, f"loss term {self.name!r}: optimizer.init_args.lr")
        self.optimizer_factory = optimizer


def check_lr(optimizer: Any, key: str) -> None:
    """An optimiser factory's learning rate (its ``lr`` argument) must be positive: a
    :class:`ConfigError` naming ``key`` (e.g. ``model.optimizer.init_args.lr``) otherwise."""
    lr = (getattr(optimizer, "keywords", None) or {}).get("lr")
    if isinstance(lr, (int, float)) and not isinstance(lr, bool) and not lr > 0:
        raise ConfigError(f"{key}: expected a positive learning rate, got {lr}")


class MetricLearningModule(pl.LightningModule):
    """Trains an ``EmbeddingModel`` with a metric loss plus optional auxiliary terms.

    Args:
        model: the embedding network.
        loss: main metric loss, called on the features as ``loss(features, labels)``.
        loss_weight: weight of ``loss``.
        loss_lr: learning rate of the parameters of ``loss`` (e.g. ``MarginLoss`` β, 0.1 in
            Wu et al.'s code); ``None`` uses the optimiser's.
        aux_losses: further ``LossTerm``s, e.g. identity cross-entropy on ``logits`` and
            ``CenterLoss`` on ``features`` (the Bag-of-Tricks recipe).
        num_classes: number of training identities; creates a bias-free identity classifier
            when a term reads ``logits`` (linked from the data module by the CLI).
        optimizer: optimiser factory, e.g. ``torch.optim.Adam`` with ``init_args``.
        lr_scheduler: learning-rate schedule stepped once per epoch, any
            ``torch.optim.lr_scheduler`` class or one of :mod:`embedlab.schedules`
            (``WarmupMultiStep``, ``WarmupCosine``, ``ExponentialDecay`` of Hermans et al.),
            chosen by ``class_path``; ``None``: a constant learning rate.
        distance: ``cosine`` or ``euclidean``: how retrieval ranks the gallery.
        ks: the k of the reported ``recall@k`` (``RecallAtK(k)`` metrics, first in the list).
        metrics: further retrieval metrics (:mod:`embedlab.metrics.metrics_from_ranks`), each logged
            as ``val/<name>`` and ``test/<name>``; ``None``: the built-ins ``map``, ``map@r``,
            ``r_precision``, ``precision@1``, ``minp``. Chosen by ``class_path``;
            ``--model.metrics+=...`` appends one.
        eval_nmi: also report NMI (faiss k-means of the queries, as many clusters as labels).
        test_rerank: the test stage (``embedlab evaluate``, ``embedlab test``) ranks with
            k-reciprocal re-ranking (Zhong et al. 2017; k1 = 20, k2 = 6, λ = 0.3).
        eval_convention: ``torchreid`` (default: torchreid's ``eval_market1501``) or
            ``official`` (the ``map`` of the Market-1501 / MARS MATLAB code, and for MARS every
            test tracklet in the gallery, queries included); validation and test use it
            (:mod:`embedlab.metrics.retrieval`).
        gather_embeddings: under DDP, mine over the embeddings of all ranks (see README).
        nonfinite: ``error`` stops on a NaN/inf loss naming the term; ``skip`` skips the step.
    """

    def __init__(
        self,
        model: EmbeddingModel,
        loss: Loss | None = None,
        loss_weight: float = 1.0,
        loss_lr: PositiveFloat | None = None,
        aux_losses: Sequence[LossTerm] = (),
        num_classes: int | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        distance: Distance = "cosine",
        ks: Sequence[PositiveInt] = (1, 5, 10),
        metrics: Sequence[RankMetric] | None = None,
        eval_nmi: bool = False,
        test_rerank: bool = False,
        eval_convention: Convention = "torchreid",
        gather_embeddings: bool = False,
        nonfinite: Literal["error", "skip"] = "error",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            ignore=["model", "loss", "aux_losses", "optimizer", "lr_scheduler", "metrics"]
        )
        self.model = model
        terms = [LossTerm(loss, loss_weight, lr=loss_lr)] if loss is not None else []
        self.losses = nn.ModuleList([*terms, *aux_losses])
        if len(self.losses) == 0:
            raise ConfigError("model.loss: give a loss or at least one entry in model.aux_losses")
        self.classifier: nn.Module | None = None
        if any(t.input == "logits" for t in self.terms):
            if num_classes is None:
                raise ConfigError("model.num_classes is required by a loss term reading logits")
            self.classifier = nn.Linear(model.embedding_dim, num_classes, bias=False)
        for term in self.terms:  # losses sized by the data and the model, e.g. CenterLoss
            set_sizes = getattr(term.loss, "set_sizes", None)
            if set_sizes is None:
                continue
            if num_classes is not None:
                set_sizes(num_classes, model.embedding_dim)
            elif getattr(term.loss, "num_classes", None) is None:
                raise ConfigError(f"model.num_classes is required by the loss term {term.name!r}")
        check_lr(optimizer, "model.optimizer.init_args.lr")
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self._roles = EvalRoles()  # query/gallery flags per evaluation stage
        # this step's loss-term values and labels, checked by NonFiniteGuard before the step
        self.step_losses: Tensor | None = None
        self.step_labels: Tensor | None = None
        chosen = [
            *(RecallAtK(int(k)) for k in ks),
            *(scalar_metrics() if metrics is None else metrics),
        ]
        options = EvalOptions(
            distance=distance, chunk_size=1024, compute_nmi=eval_nmi, convention=eval_convention
        )
        self.val_metric = RetrievalEvaluator(chosen, options)
        self.test_metric = RetrievalEvaluator(chosen, replace(options, rerank=test_rerank))
        # evaluators of the second and later members of a union of datasets, made on first use
        self._more_metrics: dict[tuple[str, int], RetrievalEvaluator] = {}

    @property
    def eval_convention(self) -> Convention:
        """The evaluation convention (``torchreid`` or ``official``) of validation and test;
        setting it changes every evaluator of this module."""
        return self.val_metric.options.convention

    @eval_convention.setter
    def eval_convention(self, convention: Convention) -> None:
        metrics = [self.val_metric, self.test_metric, *self._more_metrics.values()]
        for metric in metrics:  # EvalOptions checks the value
            metric.options = replace(metric.options, convention=convention)
        self.hparams["eval_convention"] = convention

    @property
    def terms(self) -> list[LossTerm]:
        return [t for t in self.losses if isinstance(t, LossTerm)]

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    # -- training --------------------------------------------------------------------------
    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        images, labels = batch[0], batch[1]
        out = self.model.forward_train(images)
        inputs = {"features": out.features, "embedding": out.embedding}
        if self.classifier is not None:
            inputs["logits"] = self.classifier(out.embedding)
        distributed = (
            self.hparams["gather_embeddings"] and dist.is_available() and dist.is_initialized()
        )
        total = images.new_zeros(())  # what the optimiser sees
        reported = images.new_zeros(())  # the objective itself, without the DDP scale
        values: list[Tensor] = []
        logs: dict[str, Tensor | float] = {}
        for term in self.terms:
            x, y, scale = inputs[term.input], labels, 1.0
            if distributed and term.input != "logits":
                # Gradients of the global loss reach each rank only through its own block;
                # DDP averages over W ranks, so scale by W to match one process.
                x, y, scale = (
                    gather_batch(x, keep_grad=True),
                    gather_batch(labels),
                    float(dist.get_world_size()),
                )
            value = term.loss(x, y)
            total = total + term.weight * scale * value
            reported = reported + term.weight * value.detach()
            values.append(value.detach().reshape(()))
            logs[f"train/{term.name}"] = value.detach()
            read_stats = getattr(term.loss, "read_stats", None)  # embedlab losses: no check
            stats = read_stats(check=False) if read_stats else getattr(term.loss, "stats", {})
            for key, stat in stats.items():
                # 0-dim tensors (or numbers) logged as they are: Lightning reduces them at the
                # log interval, so no statistic waits for the device here
                logs[f"train/{term.name}/{key}"] = (
                    stat.detach() if isinstance(stat, Tensor) else stat  # a number: as it is
                )
        # checked with the gradients, in one go, by NonFiniteGuard before the optimiser step
        # (with gradient accumulation, the values of every micro-batch since the last step)
        current = torch.stack(values)[None]
        pending = self.step_losses
        self.step_losses = current if pending is None else torch.cat([pending, current])
        self.step_labels = labels
        logs["train/loss"] = reported
        self.log_dict(logs, prog_bar=False, batch_size=len(labels))
        self.log("loss", reported, prog_bar=True, logger=False, batch_size=len(labels))
        return total

    def on_train_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        skipped = getattr(datamodule, "skipped", None)
        if skipped is None:
            return
        if self.logger is not None:
            self.logger.log_metrics({"data/skipped_files": float(len(skipped))}, step=0)
        if (
            skipped
            and datamodule is not None
            and self.trainer.is_global_zero
            and self.trainer.log_dir
        ):
            datamodule.write_skipped(self.trainer.log_dir)

    def configure_callbacks(self) -> list[pl.Callback]:
        """The finiteness check of every step and the random state of checkpoints."""
        return [NonFiniteGuard(self.hparams["nonfinite"]), RandomState()]

    # -- checkpoints -----------------------------------------------------------------------
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        own = self.state_dict()
        for key, value in checkpoint.get("state_dict", {}).items():
            if key in own and isinstance(value, Tensor) and own[key].shape != value.shape:
                raise ConfigError(
                    f"checkpoint parameter {key} has shape {tuple(value.shape)} but this model has "
                    f"{tuple(own[key].shape)}: check model.model.init_args.embedding_dim and the backbone"
                )

    # -- evaluation ------------------------------------------------------------------------
    def _evaluator(self, stage: str, loader: int) -> RetrievalEvaluator:
        """The evaluator of ``stage``'s ``loader``-th dataloader (one per member of a union):
        :class:`PersonSearchEvaluator` for a set scored by person search (a union's CUHK-SYSU
        test split), else the stage's retrieval evaluator (a copy for the second and later)."""
        protocol = getattr(self._eval_dataset(stage, loader), "person_search", None)
        if isinstance(protocol, PersonSearchProtocol):
            return self._search_evaluator(stage, loader, protocol)
        first = self.val_metric if stage == "val" else self.test_metric
        if loader == 0:
            return first
        key = (stage, loader)
        if key not in self._more_metrics:
            metric = copy.deepcopy(first)  # made while the first may hold this epoch's items
            metric.reset()
            self._more_metrics[key] = metric
        return self._more_metrics[key]

    def _eval_dataset(self, stage: str, loader: int) -> Any:
        """The dataset of ``stage``'s ``loader``-th dataloader (``None`` outside a trainer loop)."""
        trainer = self._trainer
        if trainer is None:
            return None
        loaders = trainer.val_dataloaders if stage == "val" else trainer.test_dataloaders
        if isinstance(loaders, (list, tuple)):
            loaders = loaders[loader] if loader < len(loaders) else None
        return getattr(loaders, "dataset", None)

    def _search_evaluator(
        self, stage: str, loader: int, protocol: PersonSearchProtocol
    ) -> RetrievalEvaluator:
        """The person-search evaluator of a loader: ``map`` and the ``recall@k`` of ``ks``,
        ranked by ``distance`` (no re-ranking, no convention: the protocol fixes them)."""
        key = (f"{stage}/person_search", loader)
        metric = self._more_metrics.get(key)
        if not isinstance(metric, PersonSearchEvaluator) or metric.protocol is not protocol:
            first = self.val_metric if stage == "val" else self.test_metric
            metric = PersonSearchEvaluator(
                protocol, person_search_metrics(self.hparams["ks"]), first.options
            )
            self._more_metrics[key] = metric
        return metric

    def _eval_step(self, batch: Sequence[Tensor], stage: str, loader: int) -> None:
        images, labels, cameras, indices = batch
        is_query, is_gallery = self._roles(
            self.trainer, stage, indices, loader, self.eval_convention
        )
        embeddings = self.model(images).float()
        self._evaluator(stage, loader).update(
            embeddings, labels, cameras, indices, is_query, is_gallery
        )

    def _eval_end(self, stage: str) -> dict[str, float]:
        datamodule = getattr(self.trainer, "datamodule", None)
        names = list(getattr(datamodule, "eval_names", None) or [])
        count = max(1, len(names))
        per_loader = []
        for loader in range(count):
            metric = self._evaluator(stage, loader)
            results = metric.compute()
            metric.reset()
            # Scalars only: curves such as ``cmc`` are arrays (every rank holds the same values).
            per_loader.append(
                {
                    k: float(v)
                    for k, v in results.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)
                }
            )
        self._roles.clear(stage)
        logged: dict[str, float] = {}
        if names:  # a union: each member's metrics, and their mean as the run's value
            for name, results in zip(names, per_loader, strict=True):
                logged.update({f"{stage}/{name}/{k}": v for k, v in results.items()})
            shared = set.intersection(*(set(r) for r in per_loader))
            logged.update(
                {f"{stage}/{k}": float(np.mean([r[k] for r in per_loader])) for k in shared}
            )
        else:
            logged = {f"{stage}/{k}": v for k, v in per_loader[0].items()}
        self.log_dict(logged, prog_bar=False, sync_dist=False)
        primary = logged.get(f"{stage}/{PRIMARY_METRIC}", 0.0)
        self.log(f"{stage}_{PRIMARY_METRIC}", primary, prog_bar=True, logger=False)
        return logged

    def validation_step(
        self, batch: Sequence[Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._eval_step(batch, "val", dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def test_step(self, batch: Sequence[Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "test", dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    # -- optimisation ----------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        """Model and classifier in one group; each loss term's parameters in a group of its own
        (except a term with its own optimiser: see :meth:`term_optimizers`)."""
        owned = {id(p) for t in self.terms for p in t.parameters()}
        groups: list[dict[str, Any]] = [
            {"params": [p for p in self.parameters() if id(p) not in owned], "name": "model"}
        ]
        for term in self.terms:
            if term.optimizer_factory is not None:
                continue
            params = [p for p in term.parameters() if p.requires_grad]
            if params:
                extra = {"lr": term.lr} if term.lr is not None else {}
                groups.append({"params": params, "name": term.name, **extra})
        return groups

    def term_optimizers(self) -> list[tuple[torch.optim.Optimizer, float]]:
        """The optimisers of the loss terms that bring their own, each with ``1 / weight``."""
        out = []
        for term in self.terms:
            params = [p for p in term.parameters() if p.requires_grad]
            if term.optimizer_factory is not None and params:
                optimizer = term.optimizer_factory([{"params": params, "name": term.name}])
                out.append((optimizer, 1.0 / term.weight if term.weight else 1.0))
        return out

    def configure_optimizers(self) -> Any:
        """The optimiser over :meth:`param_groups` (chained with the loss terms' own optimisers)
        and, if any, its per-epoch schedule."""
        optimizer: torch.optim.Optimizer = self.optimizer_factory(self.param_groups())
        own = self.term_optimizers()
        if own:
            precision = str(getattr(self._trainer, "precision", ""))
            if precision.startswith("16"):
                raise ConfigError(
                    f"trainer.precision={precision}: a LossTerm with its own optimizer needs "
                    "32-true or bf16-mixed (the fp16 gradient scaler would skip its parameters)"
                )
            optimizer = ChainedOptimizer(optimizer, [o for o, _ in own], [s for _, s in own])
        if self.lr_scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.lr_scheduler_factory(optimizer)
        set_total = getattr(scheduler, "set_total_epochs", None)  # e.g. WarmupCosine(epochs=None)
        if set_total is not None and getattr(scheduler, "epochs", 0) is None:
            max_epochs = self._trainer.max_epochs if self._trainer is not None else None
            if max_epochs is None or max_epochs < 1:
                raise ConfigError(
                    "model.lr_scheduler.init_args.epochs: give it, or set trainer.max_epochs"
                )
            set_total(max_epochs)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }
