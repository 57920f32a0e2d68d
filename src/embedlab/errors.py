"""The one exception type that ``embedlab`` reports as a single line, without a traceback."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration or input error: the message names the key, file or value at fault.

    ``embedlab`` prints it as ``embedlab: error: <message>`` and exits with status 2; every
    other exception (e.g. a bug in a user's loss) keeps its traceback.
    """
