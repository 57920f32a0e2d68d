"""The ``embedlab`` subcommands, one module each: a typed function whose signature and docstring
are the command's options and ``--help``, and whose body calls the library.

``fit``, ``validate`` and ``test`` are LightningCLI's (:mod:`embedlab.trainer_cli`). Command
modules import their machinery inside the function, so that ``embedlab <command> --help``
starts without torch where the options allow it. Nothing here imports above the standard
library: :mod:`embedlab.cli` reads this registry before it knows which command runs.
"""

from __future__ import annotations

from typing import NamedTuple


class Command(NamedTuple):
    """Where a subcommand's function lives and which of its parameters are positional."""

    module: str
    function: str
    positional: tuple[str, ...] = ()


#: The trainer subcommands (LightningCLI) and their one-line help.
TRAINER_COMMANDS = {
    "fit": "Train, validating every check_val_every_n_epoch epochs; writes a run folder.",
    "validate": "Evaluate a model on the validation split.",
    "test": "Evaluate a model (e.g. --ckpt_path) on the test split.",
}

#: The other subcommands; ``data check``: ``check`` is a subcommand of ``data``.
TOOLS = {
    "evaluate": Command("embedlab.commands.evaluate", "evaluate"),
    "compare": Command("embedlab.commands.compare", "compare", ("runs",)),
    "sweep": Command("embedlab.commands.sweep", "sweep", ("file",)),
    "data check": Command("embedlab.commands.data", "check"),
    "data prepare": Command("embedlab.commands.prepare", "prepare", ("dataset",)),
    "embed": Command("embedlab.commands.embed", "embed"),
    "index build": Command("embedlab.commands.index", "build"),
    "search": Command("embedlab.commands.search", "search"),
    "export": Command("embedlab.commands.export", "export"),
}

#: Parameters that ``embedlab.cli`` fills in, not the command line.
INTERNAL = {"runner", "trial_args"}
