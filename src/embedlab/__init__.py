"""embedlab: a PyTorch Lightning research template for deep metric learning."""

__version__ = "0.1.0"
