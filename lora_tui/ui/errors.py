"""How a worker's exception reads on screen: one line, the core's own words.

Core errors (ConfigError, RunError, DataError, ... all ValueError / RuntimeError /
OSError subclasses) carry a message that names the fix, so they are shown as is;
anything else is a bug and keeps its type name for whoever reads the log.
Must not: import textual or the app (screens and workers import this).
"""

from __future__ import annotations


def plain_error(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, (RuntimeError, ValueError, OSError)):  # ConfigError is a ValueError
        return text
    return f"{type(exc).__name__}: {text}"
