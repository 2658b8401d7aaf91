"""A full disk is a plain failure: free-space checks before saves, a space reserve for the last words.

The trainer checks free space (one ``statvfs``, a few microseconds) at every step
against the size the next checkpoint or adapter will need (the last checkpoint's
size once there is one, an estimate before), warns once when it will not fit,
and refuses to start a save that cannot fit. A small reserve file, taken at
start, is released when the disk is full, so ``status.json``, the final event
and ``train.log`` can always be written. No torch here; never deletes anything
but its own reserve and the run's own temporary files.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

RESERVE_BYTES = 2 * 2**20  # enough for status.json, the final events and the last lines of train.log
MARGIN_BYTES = 8 * 2**20  # slack on top of a save's known size (optimizer metadata, file-system blocks)
MB = 2**20


class DiskFull(OSError):
    """Not enough free space for a save; the message says how much is needed and where."""

    def __init__(self, needed: int, free: int, path: Path, what: str = "the next save") -> None:
        self.needed, self.free, self.path = needed, free, path
        super().__init__(errno.ENOSPC, f"disk full: {needed / MB:,.0f} MB needed for {what}, {free / MB:,.0f} MB free "
                                       f"at {path}")


FIX = ("Free space on that disk (or move the run to a bigger one), then continue with "
       "`lora-tui train --resume {run}`; its complete checkpoints (the last: {last}) are kept.")
FIX_NO_CHECKPOINT = ("Free space on that disk (or move the run to a bigger one), then `lora-tui train --resume {run}`: "
                     "no checkpoint was written, so it trains again from step 0.")


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def tree_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC as raised by Python, torch's zip writer or safetensors (which only keep the text)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(exc)
        if "No space left on device" in text or "Disk quota exceeded" in text or "file write failed" in text:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


class SpaceGuard:
    """Per-run free-space bookkeeping for the trainer (one instance per trainer process)."""

    def __init__(self, run_path: Path, adapter_bytes: int, extra_bytes: int) -> None:
        self.path = run_path
        self.adapter_bytes = adapter_bytes + extra_bytes  # weights + tokenizer files
        # A checkpoint holds the adapter, two Adam moments (fp32) and the trainer/scheduler/rng state.
        self.checkpoint_bytes = 3 * adapter_bytes + extra_bytes
        self.warned = False
        self.reserve = run_path / ".space_reserve"

    def take_reserve(self) -> None:
        try:
            with open(self.reserve, "wb") as fh:
                try:
                    os.posix_fallocate(fh.fileno(), 0, RESERVE_BYTES)
                except (AttributeError, OSError):
                    fh.write(b"\0" * RESERVE_BYTES)
        except OSError:
            self.reserve.unlink(missing_ok=True)  # too full already: the first save check will say so

    def release_reserve(self) -> None:
        self.reserve.unlink(missing_ok=True)

    def learn_checkpoint(self, checkpoint: Path) -> None:
        """The real size of a written checkpoint replaces the estimate."""
        size = tree_size(checkpoint)
        if size:
            self.checkpoint_bytes = size

    def shortfall(self, what: str = "checkpoint") -> tuple[int, int] | None:
        """(needed, free) when the next `what` would not fit, else None."""
        needed = (self.checkpoint_bytes if what == "checkpoint" else self.adapter_bytes) + MARGIN_BYTES
        free = free_bytes(self.path)
        return (needed, free) if free < needed else None

    def check(self, what: str = "checkpoint") -> None:
        """Raise DiskFull before a save that cannot fit."""
        short = self.shortfall(what)
        if short:
            raise DiskFull(*short, self.path, f"the {what}")


def remove_partial_saves(run_path: Path, checkpoints_dir: Path, marker: str) -> list[str]:
    """Delete what a save cut short: checkpoint folders without their completion marker and our temp files."""
    removed = []
    if checkpoints_dir.is_dir():
        for child in checkpoints_dir.iterdir():
            if child.is_dir() and child.name.startswith("checkpoint-") and not (child / marker).exists():
                shutil.rmtree(child, ignore_errors=True)
                removed.append(str(child))
    for child in run_path.iterdir():
        if child.name.startswith((".adapter.tmp-", ".status.json.tmp-", ".config.yaml.tmp-")):
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
            removed.append(str(child))
    return removed
