"""The one exception type that ``embedlab`` reports as a single line, without a traceback, and
the helpers that make such a line: :func:`one_line` (a jsonargparse error) and
:func:`read_yaml` (a YAML file, its syntax errors named by file and line)."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration or input error: the message names the key, file or value at fault.

    ``embedlab`` prints it as ``embedlab: error: <message>`` and exits with status 2; every
    other exception (e.g. a bug in a user's loss) keeps its traceback.
    """


#: Lines of jsonargparse's messages that say nothing about the cause.
_NOISE = (
    "Parser key",
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value",
    "Expected a path but",
    "Expected a <class 'NoneType'>",
    "Problem with given class_path",
)
_PARSER_KEY = re.compile(r'Parser key "[^"]+":\s*')
#: A value of an :mod:`embedlab.constraints` type out of range.
_OUT_OF_RANGE = re.compile(r"Not of type \w+: expected (.+), got (.+)$")


def _expected(lines: list[str], given: str | None) -> str | None:
    """``expected a positive int or null, got -1`` when every cause is a number out of range
    (of a type, or of each type of a union); ``None`` otherwise."""
    wanted: list[str] = []
    got = given
    for line in lines:
        if line == "Expected a <class 'NoneType'>":
            wanted.append("null")
        elif (match := _OUT_OF_RANGE.match(line)) is not None:
            wanted.append(match.group(1))
            got = got or match.group(2)
        elif line and not line.startswith(_NOISE):
            return None
    if not any(w != "null" for w in wanted):
        return None
    return f"expected {' or '.join(dict.fromkeys(wanted))}, got {got}"


def _of_dataclass(text: str) -> bool:
    """Whether the types a message lists (``Subtypes: [<class 'a.B'>, ...]``) hold a dataclass,
    whose fields are options of their own (``data.val.size``), not ``init_args``."""
    for path in re.findall(r"<class '([\w.]+)'>", text):
        module, _, name = path.rpartition(".")
        kind = getattr(sys.modules.get(module), name, None)
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            return True
    return False


def one_line(message: str) -> str:
    """jsonargparse's multi-line error as one line: the key at fault and the innermost cause."""
    text = str(message)
    keys = re.findall(r'Parser key "([^"]+)"', text)
    lines = [line.strip().lstrip("-").strip() for line in text.splitlines()]
    given = re.search(r"Given value: (.{1,60})$", text, re.MULTILINE)
    expected = _expected(
        [_PARSER_KEY.sub("", line) for line in lines], given.group(1) if given else None
    )
    causes = [line for line in lines if line and not line.startswith(_NOISE)]
    plain = (_PARSER_KEY.sub("", line) for line in lines)
    cause = expected or (causes[0] if causes else next((s for s in plain if s), "invalid value"))
    if "class_path" in text and "has no attribute" in cause:
        path = re.search(r"class_path '([^']+)'", text)
        cause = f"no class {path.group(1)!r} ({cause})" if path else cause
    if not expected and given and "(" not in given.group(1) and given.group(1) not in cause:
        cause += f" (got {given.group(1)})"
    if keys and not cause.startswith(keys[0]):
        cause = f"{keys[0]}: {cause}"
    # `model.model: backbone: cause`, the message of a class's own parser, names the option
    # as it is given: `model.model.init_args.backbone: cause` (`data.val.size` of a dataclass)
    inner = "." if _of_dataclass(text) else ".init_args."
    while (nested := re.match(r"^([\w.]+): (\w+): (.*)$", cause)) is not None:
        cause = f"{nested.group(1)}{inner}{nested.group(2)}: {nested.group(3)}"
    return re.sub(r"\s+", " ", cause).strip()


def expect_suffix(path: str | Path, key: str, suffixes: tuple[str, ...], written: str) -> None:
    """A :class:`ConfigError` naming ``key`` when the file ``path`` to be written does not end
    in one of ``suffixes`` (lower case): its name would promise another format than ``written``."""
    if Path(path).suffix.lower() not in suffixes:
        raise ConfigError(
            f"{key}: {path} would hold {written}; give it the suffix {' or '.join(suffixes)}"
        )


def yaml_problem(err: yaml.YAMLError, file: str | Path) -> str:
    """A YAML syntax error as ``FILE:LINE: problem (context)``, lines counted from 1."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f"{file}:{mark.line + 1}" if mark is not None else str(file)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    context_mark = getattr(err, "context_mark", None)
    if context and context_mark is not None and context_mark is not mark:
        context = f"{context} on line {context_mark.line + 1}"
    return f"{where}: YAML syntax error: {problem}" + (f" ({context})" if context else "")


def read_yaml(path: str | Path, key: str = "") -> Any:
    """The content of a YAML file; an unreadable file or a syntax error is a
    :class:`ConfigError` naming ``key`` (the option that gave the file), the file and line."""
    file = Path(path)
    prefix = f"{key}: " if key else ""
    try:
        text = file.read_text()
    except OSError as err:
        raise ConfigError(f"{prefix}cannot read {file}: {err.strerror or err}") from err
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(prefix + yaml_problem(err, file)) from err


def reported_error(
    err: BaseException, argv: Sequence[str] = (), also: tuple[type[BaseException], ...] = ()
) -> BaseException | None:
    """The ``ConfigError`` (or an exception of the types ``also``) behind ``err``, also when
    jsonargparse wrapped it while instantiating a class (``raise ... from``); ``None`` for any
    other exception. A YAML syntax error names the file of ``argv`` and the line."""
    seen: BaseException | None = err
    found: BaseException | None = None
    while seen is not None:
        if found is None and isinstance(seen, (ConfigError, *also)):
            found = seen
        if found is not None and isinstance(seen, yaml.YAMLError):  # in a file jsonargparse read
            return found if found.__cause__ is seen else (_broken_yaml_file(argv) or found)
        seen = seen.__cause__
    return found


def _broken_yaml_file(argv: Sequence[str]) -> ConfigError | None:
    """The syntax error, with file and line, of the first YAML file named in ``argv``
    (``--config FILE``, ``--config=FILE``, ``--data FILE``) that does not parse."""
    option = ""
    for token in argv:
        key, equals, value = token.partition("=") if token.startswith("--") else ("", "", token)
        if token.startswith("--") and not equals:
            option = token
            continue
        file = Path(value)
        if file.suffix.lower() in (".yaml", ".yml", ".json") and file.is_file():
            try:
                read_yaml(file, (key or option).lstrip("-"))
            except ConfigError as err:
                return err
        option = ""
    return None


def hidden_bug(err: BaseException) -> BaseException | None:
    """The exception raised in a user's code that jsonargparse listed, as a message only, among
    the reasons a value fits no type of a union (``__init__`` of a ``data.dataset`` class)."""
    for frame, _ in traceback.walk_tb(err.__traceback__):
        if frame.f_code.co_name != "raise_union_unexpected_value":
            continue
        for reason in frame.f_locals.get("exceptions") or ():
            frames = [f for f, _ in traceback.walk_tb(getattr(reason, "__traceback__", None))]
            if frames and "jsonargparse" not in Path(frames[-1].f_code.co_filename).parts:
                return hidden_bug(reason) or reason
    return None


def report_or_raise(err: BaseException, cause: BaseException | None) -> int:
    """Print ``cause`` as ``embedlab: error: <cause>`` and return the exit status 2; without a
    cause (a bug, e.g. in a user's loss) or with ``EMBEDLAB_DEBUG`` set, raise with the
    traceback: that of the user's code when jsonargparse kept only its message."""
    if cause is None or os.environ.get("EMBEDLAB_DEBUG"):
        bug = hidden_bug(err)
        if bug is not None:  # the bug's own traceback, not only its message
            raise bug from err
        raise err
    print(f"embedlab: error: {cause}", file=sys.stderr)
    return 2
