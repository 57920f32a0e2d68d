"""Shared test settings: wandb off, quiet Lightning, a temporary working directory for runs."""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ["EMBEDLAB_WANDB"] = "off"
os.environ.setdefault("PYTHONHASHSEED", "0")
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*sync_dist=True.*")
