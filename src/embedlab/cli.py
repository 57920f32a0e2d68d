"""The ``embedlab`` command: routes each subcommand to the module that runs it.

embedlab fit --config experiments/digits.yaml [--model.loss.init_args.margin=0.2]
embedlab evaluate --ckpt_path runs/digits/version_0/checkpoints/last.ckpt --rerank
embedlab data check --dataset Market1501 --dataset.root /data/market1501
embedlab compare runs/digits/version_0 runs/digits/version_1 --no_plots
embedlab sweep experiments/sweeps/losses.yaml --offline -- --trainer.max_epochs=5
embedlab embed --ckpt_path runs/X/version_0/checkpoints/last.ckpt --images photos --out photos.parquet
embedlab index build --embeddings photos.parquet --out photos.index --factory HNSW32
embedlab search --index photos.index --embeddings photos.parquet --k 10 --out hits.csv

``fit``, ``validate`` and ``test`` are LightningCLI subcommands (:mod:`embedlab.trainer_cli`);
the others are the typed functions of :mod:`embedlab.commands`, their options read from their
signatures and docstrings. This module imports neither: ``embedlab --help`` answers from the
registry, and a subcommand loads only what it runs. Flags use underscores; a boolean option
``x`` is given as ``--x`` / ``--no_x``. A configuration error prints one line
(:class:`embedlab.ConfigError`); any other exception keeps its traceback.
"""

from __future__ import annotations

import sys
import textwrap

from embedlab.commands import TOOLS, TRAINER_COMMANDS

__all__ = ["main"]

HELP = "-h", "--help"
DESCRIPTION = (
    "embedlab: deep metric learning and person re-identification. "
    "`embedlab SUBCOMMAND --help` lists a subcommand's options."
)


def _groups() -> dict[str, list[str]]:
    """Each first word of a subcommand and its second words (``data`` → ``check``, ...)."""
    groups: dict[str, list[str]] = {name: [] for name in TRAINER_COMMANDS}
    for name in TOOLS:
        head, _, tail = name.partition(" ")
        groups.setdefault(head, []).extend([tail] if tail else [])
    return groups


def _listing(rows: list[tuple[str, str]]) -> str:
    lines = []
    for name, text in rows:
        wrapped = textwrap.wrap(text, 70) or [""]
        lines.append(f"    {name:<26}{wrapped[0]}")
        lines += [" " * 30 + more for more in wrapped[1:]]
    return "\n".join(lines)


def help_text(group: str | None = None) -> str:
    """``embedlab --help`` (or ``embedlab data --help``), from the registry alone."""
    from embedlab.commands.parsing import summary

    groups = _groups()
    if group is None:
        names, prog, description = list(groups), "embedlab", DESCRIPTION
    else:
        names, prog = groups[group], f"embedlab {group}"
        description = f"The subcommands of `embedlab {group}`."
    rows = []
    for name in names:
        full = f"{group} {name}" if group else name
        if full in TRAINER_COMMANDS:
            rows.append((name, TRAINER_COMMANDS[full]))
        elif full in TOOLS:
            rows.append((name, summary(TOOLS[full])))
        else:  # a group: its first subcommand's summary, as `data check: ...`
            first = f"{name} {groups[name][0]}"
            rows.append((name, f"{first}: {summary(TOOLS[first])}"))
    return (
        f"usage: {prog} {{{','.join(names)}}} ...\n\n{textwrap.fill(description, 100)}\n\n"
        "options:\n  -h, --help                  Show this help message and exit.\n\n"
        "subcommands:\n  For more details of each subcommand, add it as an argument followed by "
        f"--help.\n\n  Available subcommands:\n{_listing(rows)}\n"
    )


def _unknown(given: str | None, choices: list[str], where: str = "subcommand") -> int:
    what = f"invalid choice: {given!r}" if given else "none given"
    print(f"embedlab: error: {where}: {what} (choose from {', '.join(choices)})", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """The ``embedlab`` command; returns the exit status (2 on a configuration error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    groups = _groups()
    if argv[:1] and argv[0] in HELP:
        print(help_text())
        raise SystemExit(0)
    if argv[:1] and (argv[0] in TRAINER_COMMANDS or argv[0].startswith("-")):
        from embedlab.trainer_cli import run  # `--config FILE fit` too

        return run(argv)
    if not argv or argv[0] not in groups:
        return _unknown(argv[0] if argv else None, list(groups))
    name, rest = argv[0], argv[1:]
    if groups[name]:  # `data check`, `index build`
        if rest[:1] and rest[0] in HELP:
            print(help_text(name))
            raise SystemExit(0)
        if not rest or rest[0] not in groups[name]:
            return _unknown(rest[0] if rest else None, groups[name], f"{name} subcommand")
        name, rest = f"{name} {rest[0]}", rest[1:]
    return run_command(name, rest)


def run_command(name: str, args: list[str]) -> int:
    """Parse ``args`` for the command ``name`` of :data:`embedlab.commands.TOOLS` and run it."""
    from embedlab.commands.parsing import command_function, tool_parser
    from embedlab.errors import report_or_raise, reported_error

    trial_args: list[str] = []
    if name == "sweep" and "--" in args:  # `embedlab sweep FILE -- ARGS`: ARGS go to each trial
        cut = args.index("--")
        args, trial_args = args[:cut], args[cut + 1 :]
    try:
        fn = command_function(TOOLS[name])
        parser = tool_parser(fn, TOOLS[name].positional, prog=f"embedlab {name}")
        config = parser.instantiate_classes(parser.parse_args(args))
        kwargs = config.as_dict()
        if name == "sweep":
            kwargs.update(runner=main, trial_args=trial_args)
        return int(fn(**kwargs))
    except Exception as err:
        return report_or_raise(err, reported_error(err, args))


if __name__ == "__main__":
    raise SystemExit(main())
