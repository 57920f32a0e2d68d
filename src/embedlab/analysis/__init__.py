"""Analysis of runs: comparison tables and plots, ranked-list pictures, embedding projections.

* :func:`compare_runs` / :func:`summary_table` / :func:`write_comparison` — final and best
  metrics of several runs (``embedlab compare``);
* :func:`plot_metric_curves`, :func:`plot_recall_at_k`, :func:`plot_training_loss` — figures;
* :func:`ranked_lists`, :func:`ranked_list_figure`, :func:`projection_figure`,
  :func:`run_pictures` — what the model retrieves, and how its embedding space looks;
* :class:`RetrievalPictures` — a Lightning callback drawing those pictures after validation;
* :func:`find_runs`, :class:`Run`, :func:`load_module`, :func:`run_embeddings` — reading runs.
"""

from embedlab.analysis.compare import compare_runs, summary_table, to_markdown, write_comparison
from embedlab.analysis.pictures import (
    RankedList,
    RetrievalPictures,
    choose_queries,
    projection_figure,
    ranked_list_figure,
    ranked_lists,
    run_pictures,
    save_figure,
)
from embedlab.analysis.plots import plot_metric_curves, plot_recall_at_k, plot_training_loss
from embedlab.analysis.runs import Embeddings, Run, compute_embeddings, run_embeddings
from embedlab.runs import find_runs, load_module

__all__ = [
    "Embeddings",
    "RankedList",
    "RetrievalPictures",
    "Run",
    "choose_queries",
    "compare_runs",
    "compute_embeddings",
    "find_runs",
    "load_module",
    "plot_metric_curves",
    "plot_recall_at_k",
    "plot_training_loss",
    "projection_figure",
    "ranked_list_figure",
    "ranked_lists",
    "run_embeddings",
    "run_pictures",
    "save_figure",
    "summary_table",
    "to_markdown",
    "write_comparison",
]
