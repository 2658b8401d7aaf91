"""Thread workers and how their failures reach the user.

``thread_worker(group)`` is Textual's ``@work`` with the wizard's options: a thread, one
worker at a time per group (a newer call cancels the older), and ``exit_on_error=False``
(Textual's default would end the app on the first exception). A worker body holds only
its happy path: when it raises, Textual sets the worker's state to ERROR and posts
``Worker.StateChanged`` to the screen or app that started it; that node's
``on_worker_state_changed`` asks ``failure(event)`` and posts the message the worker
posts on success, with the error in it, so the user reads the same line either way.

A failure handler often needs what the worker was called with (the plan key, the run's
path, the reply id): ``thread_worker`` records each call's arguments by parameter name.
A cancelled worker (a newer one of its group took over) reports nothing.
Must not: import the core or any screen.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import wraps
from typing import Any, Callable
from weakref import WeakKeyDictionary

from textual import work
from textual.worker import Worker, WorkerState

_CALLS: WeakKeyDictionary[Worker, dict[str, Any]] = WeakKeyDictionary()


def thread_worker(group: str) -> Callable:
    """Decorate a screen or app method to run as a thread worker of ``group`` (see the module)."""

    def decorate(method: Callable) -> Callable:
        start = work(thread=True, exclusive=True, exit_on_error=False, group=group)(method)
        signature = inspect.signature(method)

        @wraps(method)
        def started(self, *args, **kwargs) -> Worker:
            worker = start(self, *args, **kwargs)
            # Set before the worker can run: it starts on the event loop, which this call holds.
            _CALLS[worker] = dict(signature.bind(self, *args, **kwargs).arguments)
            return worker

        return started

    return decorate


@dataclass(frozen=True)
class Failure:
    """A worker that raised: its group, its method's name, the arguments it was called with."""

    group: str
    name: str
    args: dict[str, Any]
    error: BaseException


def failure(event: Worker.StateChanged) -> Failure | None:
    """The failure ``event`` reports, or None when the worker did not fail (it started, ended or was cancelled)."""
    worker = event.worker
    if event.state != WorkerState.ERROR or worker.error is None:
        return None
    return Failure(worker.group, worker.name, _CALLS.get(worker, {}), worker.error)
