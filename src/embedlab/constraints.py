"""Number types that the ``embedlab`` parser checks: annotate a parameter with one of them.

    def __init__(self, eval_batch_size: PositiveInt = 256, size: OpenUnitInterval = 0.2): ...

``--help`` shows the type (``type: PositiveInt``) and a value out of range is a one-line
configuration error (``data.eval_batch_size: expected a positive int, got -1``). Unlike
``jsonargparse.typing``'s types of the same names, the value the class receives is a plain
``int`` or ``float``: nothing of jsonargparse reaches ``hparams.yaml`` or a checkpoint (which
then still loads with ``torch.load(weights_only=True)``). Python callers pass plain numbers and
are not checked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jsonargparse.typing import register_type

__all__ = [
    "NonNegativeFloat",
    "NonNegativeInt",
    "OpenUnitInterval",
    "PositiveFloat",
    "PositiveInt",
    "UnitInterval",
]


def _number(value: Any, base: type[int] | type[float]) -> int | float | None:
    """``value`` (a number, or its text on the command line) as ``base``; ``None`` if it is not
    one (a bool, a string that is no number, a non-integral float for an int)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if base is int and not float(value).is_integer():
        return None
    return base(value)


def restricted(
    name: str, base: type[int] | type[float], accept: Callable[[Any], bool], what: str
) -> type:
    """A type named ``name`` whose values are the ``base`` numbers that ``accept``; ``what``
    describes them in errors (``expected <what>, got <value>``)."""

    def check(value: Any) -> int | float:
        number = _number(value, base)
        if number is None or not accept(number):
            shown = repr(value) if isinstance(value, str) and number is None else value
            raise ValueError(f"expected {what}, got {shown}")
        return number

    doc = f"{what} (checked by the parser; a plain {base.__name__} at run time)"
    kind = type(name, (base,), {"__doc__": doc, "__module__": __name__})
    register_type(kind, serializer=base, deserializer=check)
    return kind


if TYPE_CHECKING:  # type checkers see the plain numbers the classes receive
    PositiveInt = int
    NonNegativeInt = int
    PositiveFloat = float
    NonNegativeFloat = float
    OpenUnitInterval = float
    UnitInterval = float
else:
    PositiveInt = restricted("PositiveInt", int, lambda v: v > 0, "a positive int")
    NonNegativeInt = restricted("NonNegativeInt", int, lambda v: v >= 0, "an int >= 0")
    PositiveFloat = restricted("PositiveFloat", float, lambda v: v > 0, "a positive number")
    NonNegativeFloat = restricted("NonNegativeFloat", float, lambda v: v >= 0, "a number >= 0")
    OpenUnitInterval = restricted(
        "OpenUnitInterval", float, lambda v: 0 < v < 1, "a fraction in (0, 1)"
    )
    UnitInterval = restricted("UnitInterval", float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
