"""Waiting for something that happens in another process or another task, with a timeout.

``wait_until`` polls a plain condition (a run's state, a file, a terminal pane); ``until`` is the
same loop for a Textual pilot, pausing the app between looks so it keeps running.
On timeout both raise an AssertionError saying what was awaited, for how long, and ``details()``
(a log tail, the screen) when given.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def _timed_out(what: str, timeout: float, details: Callable[[], str] | None) -> AssertionError:
    message = f"timed out after {timeout:g}s waiting for {what}"
    extra = details() if details is not None else ""
    return AssertionError(f"{message}\n{extra}" if extra else message)


def wait_until(condition: Callable[[], T], timeout: float, *, interval: float = 0.1, what: str = "the condition",
               details: Callable[[], str] | None = None) -> T:
    """Call ``condition`` every ``interval`` seconds until it returns something truthy, and return that.

    ``condition`` may raise (an AssertionError that a run failed, say) to stop waiting early.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, details)
        time.sleep(interval)


async def until(pilot, condition: Callable[[], object], timeout: float = 60.0, what: str = "the condition", *,
                interval: float = 0.05, details: Callable[[], str] | None = None) -> None:
    """``wait_until`` for a Textual pilot: the app runs on between looks."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, details)
        await pilot.pause(interval)
