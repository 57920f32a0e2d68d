"""From a trained checkpoint to a search system: embed images, index and query them.

* :func:`load_embedder`: a run's model and evaluation transform from its checkpoint;
* :func:`embed_to_parquet`: embeddings of image files or a dataset split, as Parquet;
* :class:`Index`: a faiss index of embeddings and their paths, saved and loaded as a folder;
* :func:`export_embedder`: the model as ONNX or TorchScript.
"""

from embedlab.inference.embed import EmbedResult, embed_to_parquet, image_files, read_embeddings
from embedlab.inference.embedder import Embedder, load_embedder
from embedlab.inference.export import export_embedder
from embedlab.inference.index import Index
from embedlab.runs import run_files

__all__ = [
    "EmbedResult",
    "Embedder",
    "Index",
    "embed_to_parquet",
    "export_embedder",
    "image_files",
    "load_embedder",
    "read_embeddings",
    "run_files",
]
