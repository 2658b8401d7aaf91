"""Who is training a run: the live trainer processes, found in the process table, not in a file.

A trainer holds ``trainer.lock`` (flock) for its whole life, and that is the fast answer. But a lock
file can be deleted or replaced while the trainer keeps the old one open: then the path says "free"
and a resume would start a second trainer writing the same events and checkpoints. So the owner is
also looked for where no one can delete it: a live process (pid + start time) whose command line is
``python -m lora_tui.core.trainer_main RUN_DIR`` for this very folder (compared by device and inode,
so a relative path, a symlink or a renamed parent still match). Accelerate's launcher and its ranks
carry the same module and folder, so a multi-rank run is found by any of its processes.

No torch, no printing; psutil (a dependency) reads the process table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

TRAINER_MODULE = "lora_tui.core.trainer_main"


@dataclass(frozen=True)
class TrainerProcess:
    pid: int
    started: float  # the process's start time (seconds since the epoch): a pid reused later differs here
    worker: bool  # one rank of a multi-rank run (the supervisor is the one to signal)


def trainer_processes(run_path: str | os.PathLike, exclude_own_family: bool = True) -> list[TrainerProcess]:
    """The live processes training ``run_path``, supervisors first. With ``exclude_own_family`` the calling
    process, its parents and its children are left out (a trainer asking whether another one is at work)."""
    import psutil

    try:
        target = os.stat(run_path)
    except OSError:
        return []
    found = []
    for pid in _candidates(psutil):
        try:
            proc = psutil.Process(pid)
            info = proc.as_dict(["pid", "cmdline", "create_time", "status"])
        except psutil.Error:
            continue
        argv = info.get("cmdline") or []
        if TRAINER_MODULE not in argv or info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        folder = _run_argument(argv)
        if folder is None:
            continue
        if not os.path.isabs(folder):
            try:
                folder = os.path.join(proc.cwd(), folder)
            except psutil.Error:
                continue
        try:
            if not os.path.samestat(os.stat(folder), target):
                continue
        except OSError:
            continue
        found.append(TrainerProcess(info["pid"], info.get("create_time") or 0.0, "--worker" in argv))
    if found and exclude_own_family:  # looked up only when there is something to leave out (psutil: ~20 ms)
        family = _own_family(psutil)
        found = [p for p in found if p.pid not in family]
    return sorted(found, key=lambda p: (p.worker, p.started))


def _candidates(psutil) -> list[int]:
    """Pids whose command line mentions the trainer module: read straight from /proc/PID/cmdline on Linux
    (a few ms for hundreds of processes; psutil's full walk took ~60 ms here), psutil's list elsewhere."""
    marker = TRAINER_MODULE.encode()
    if not os.path.isdir("/proc/self"):
        return psutil.pids()
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                    if marker in fh.read():
                        pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def supervisor_pid(run_path: str | os.PathLike) -> int | None:
    """The pid to signal to end the run's training (its session leader: ranks and workers follow it)."""
    found = trainer_processes(run_path)
    return found[0].pid if found else None


def _run_argument(argv: list[str]) -> str | None:
    """RUN_DIR of `... -m lora_tui.core.trainer_main RUN_DIR [--resume] [--worker] ...`."""
    rest = argv[argv.index(TRAINER_MODULE) + 1:]
    return next((arg for arg in rest if not arg.startswith("-")), None)


def _own_family(psutil) -> set[int]:
    me = psutil.Process()
    family = {me.pid}
    try:
        family.update(p.pid for p in me.parents())
        family.update(p.pid for p in me.children(recursive=True))
    except psutil.Error:
        pass
    return family


def describe(found: list[TrainerProcess]) -> str:
    """'pid 1234, started 17:02:11' for the first of them (messages)."""
    if not found:
        return ""
    import time

    first = found[0]
    return f"pid {first.pid}, started {time.strftime('%H:%M:%S', time.localtime(first.started))}"
