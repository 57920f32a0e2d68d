"""embedlab: a PyTorch Lightning research template for deep metric learning.

Importing the package (or its library modules: losses, miners, distances, metrics, models,
data readers) does not import Lightning; :mod:`embedlab.module`, :mod:`embedlab.data.datamodule`
and :mod:`embedlab.trainer_cli` do, and register the DDP strategies of :mod:`embedlab.ddp` with it.
"""

from embedlab.errors import ConfigError

__version__ = "0.1.0"
__all__ = ["ConfigError", "__version__"]
