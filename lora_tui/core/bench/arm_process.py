"""One bench arm as an OS process that never outlives the bench (core.bench.runner).

Each arm runs in its own session (so Ctrl-C at the terminal reaches the bench alone) under a small
wrapper that reports the arm's max RSS. Whatever ends the wait, the timeout, Ctrl-C, SIGTERM or an
error, the arm's whole process group is SIGKILLed (the trainer grandchild and its data workers too)
and the bench waits until none of it is left, before the temporary folder is removed. Before this,
Ctrl-C left a 2 GB trainer training for ~2 min in a deleted folder, SIGTERM left the wrapper and the
trainer running, and an expired --timeout killed only the wrapper.

No printing, no textual, no torch.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import sys

MEASURE = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
           "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")


_LIVE: set[int] = set()  # process groups of the arms running now (ended at exit, whatever the exit)


def measured(cmd: list[str], env: dict, timeout: float | None) -> tuple[str, int]:
    """Run ``cmd`` as a grandchild; (its stdout, its max RSS in bytes). RuntimeError with the output's tail.

    The arm runs in its own session, so Ctrl-C at the terminal reaches the bench alone; whatever ends the
    wait (the timeout, Ctrl-C, SIGTERM, an error) ends the arm's whole process group, the trainer
    grandchild included, before the temporary folder is removed."""
    proc = subprocess.Popen([sys.executable, "-c", MEASURE, *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    _LIVE.add(proc.pid)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        end_group(proc)
        raise RuntimeError(f"ran past --timeout {timeout:g} s: stopped (its processes were ended)") from None
    except BaseException:
        end_group(proc)
        raise
    finally:
        _LIVE.discard(proc.pid)
    if proc.returncode != 0:
        tail = (stderr.strip() or stdout.strip()).splitlines()[-12:]
        raise RuntimeError("\n".join(tail) or f"exit status {proc.returncode}")
    rss_kb = int(next(l for l in stdout.splitlines() if l.startswith("MAXRSS_KB")).split()[1])
    return stdout, rss_kb * 1024


def end_group(proc: subprocess.Popen, wait: float = 15.0) -> None:
    """SIGKILL every process of the arm's group (wrapper, trainer, its data workers) and wait until none is left."""
    import signal
    import time

    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            break  # no process of the group is left
        proc.poll()  # reap the wrapper, so the group empties once the trainer is gone too
        time.sleep(0.05)
    proc.poll()


@atexit.register
def _end_live_arms() -> None:
    """At interpreter exit (the wizard quit during a bench): no arm outlives lora-tui."""
    import signal

    for group in list(_LIVE):
        try:
            os.killpg(group, signal.SIGKILL)
        except OSError:
            pass


@contextlib.contextmanager
def sigterm_ends_the_bench():
    """SIGTERM becomes KeyboardInterrupt for the bench's duration, so the arms are ended and the temporary
    folder removed as after Ctrl-C (by default SIGTERM ended the bench alone and left its arms training)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # the wizard's worker: no handlers there
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
