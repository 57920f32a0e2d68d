"""embedlab: a PyTorch Lightning research template for deep metric learning."""

from embedlab.errors import ConfigError

__version__ = "0.1.0"
__all__ = ["ConfigError", "__version__"]
