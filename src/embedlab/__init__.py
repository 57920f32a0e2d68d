"""embedlab: a PyTorch Lightning research template for deep metric learning."""

import embedlab.ddp  # noqa: F401  (registers ddp_spawn workers that tear down together)
from embedlab.errors import ConfigError

__version__ = "0.1.0"
__all__ = ["ConfigError", "__version__"]
