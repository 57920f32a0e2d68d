"""The parser of a command function (jsonargparse, from its signature and docstring) and the
compact ``--help`` that embedlab's parsers share."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
from argparse import Action
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import docstring_parser
from jsonargparse import ActionYesNo, ArgumentParser, DefaultHelpFormatter

from embedlab.commands import INTERNAL, Command
from embedlab.errors import ConfigError, one_line


def plain(text: str) -> str:
    """Docstring text for ``--help``: without reST literal quotes."""
    return text.replace("``", "`")


class CompactHelpFormatter(DefaultHelpFormatter):
    """``--help`` that fits a screen or few: a short usage line, each option's first sentence
    with its type and default, and all of embedlab's known subclasses but only a few others."""

    max_foreign = 4

    def __init__(self, prog: str, **kwargs: Any) -> None:
        kwargs.setdefault("width", 100)
        kwargs.setdefault("max_help_position", 30)
        super().__init__(prog, **kwargs)

    def _get_help_string(self, action: Action) -> str:
        full = super()._get_help_string(action)
        own = action.help or ""
        if (
            not own
            or not full.startswith(own)
            or getattr(action, "_jsonargparse_preexpanded_help", False)
        ):
            return self._shorten_subclasses(full)
        first = re.split(r"(?<=\.)\s+(?=[A-Z])", own.strip(), maxsplit=1)[0]
        return plain(first) + self._shorten_subclasses(full[len(own) :])

    def _shorten_subclasses(self, text: str) -> str:
        match = re.search(r"known subclasses: ([^)]*)", text)
        if match is None:
            return text
        names = [n.strip() for n in match.group(1).split(",")]
        own = [n for n in names if n.startswith("embedlab.")]
        foreign = [n for n in names if not n.startswith("embedlab.")]
        shown = own + foreign[: self.max_foreign]
        if len(shown) < len(names):
            shown.append(f"… {len(names) - len(shown)} more")
        return text[: match.start(1)] + ", ".join(shown) + text[match.end(1) :]

    def _format_usage(self, usage: Any, actions: Any, *args: Any, **kwargs: Any) -> str:
        if usage is None and len(actions) > 16:
            prog = self._prog
            return f"usage: {prog} [--config FILE] [--KEY VALUE | --KEY=VALUE ...]\n\n"
        return super()._format_usage(usage, actions, *args, **kwargs)


class ToolParser(ArgumentParser):
    """A jsonargparse parser whose errors are :class:`~embedlab.ConfigError`s."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", CompactHelpFormatter)
        kwargs.setdefault("exit_on_error", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        raise ConfigError(one_line(message)) from ex


def command_function(command: Command) -> Callable[..., int]:
    """The function of a registered command (importing its module)."""
    return getattr(importlib.import_module(command.module), command.function)  # type: ignore[no-any-return]


def summary(command: Command) -> str:
    """The first line of a command's docstring, read from its source without importing it."""
    spec = importlib.util.find_spec(command.module)
    source = Path(spec.origin).read_text() if spec and spec.origin else ""
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name == command.function:
            return plain((ast.get_docstring(node) or "").split("\n")[0])
    return ""


def tool_parser(
    fn: Callable[..., int], positional: Sequence[str] = (), prog: str = ""
) -> ToolParser:
    """The parser of a typed command function: options from its signature and docstring.

    Parameters named in ``positional`` are positional arguments (a sequence takes one or
    more values); booleans are flags ``--x`` / ``--no_x``; everything else is ``--name``
    typed as annotated.
    """
    doc = docstring_parser.parse(inspect.getdoc(fn) or "")
    text = "\n\n".join(t for t in (doc.short_description, doc.long_description) if t)
    parser = ToolParser(prog=prog or None, description=plain(text))
    helps = {p.arg_name: plain(re.sub(r"\s+", " ", p.description or "")) for p in doc.params}
    params = inspect.signature(fn).parameters
    for name, param in params.items():  # in the signature's order, for --help
        if name in INTERNAL:
            continue
        if name in positional:
            many = "Sequence" in str(param.annotation) or "list" in str(param.annotation)
            parser.add_argument(name, nargs="+" if many else None, type=str, help=helps.get(name))
        elif param.annotation in (bool, "bool"):
            flag = ActionYesNo(yes_prefix="", no_prefix="no_")
            parser.add_argument(
                f"--{name}", action=flag, default=param.default, help=helps.get(name)
            )
        else:  # typed from the annotation, with its docstring help
            others: set[str | int] = {p for p in params if p != name}
            parser.add_function_arguments(fn, as_group=False, skip=others, fail_untyped=True)
    return parser
