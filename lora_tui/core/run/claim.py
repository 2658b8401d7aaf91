"""Claiming a run directory for one writer, and telling the truth before a resume.

Used by ``launcher``: the launching process takes the run's trainer lock (flock)
*before* it writes anything, and hands the locked file to the trainer it spawns,
so of two launches or resumes at the same instant exactly one wins and the other
gets a ``RunError`` naming the reason. Before a resume it works out which
checkpoint is used, which steps are trained again, and refuses when the adapter
shape in config.yaml no longer matches the checkpoint. Also the ending of a
trainer that ignores a stop request (SIGKILL after the grace period).

No torch, no printing: messages go back in return values and exceptions.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from lora_tui.core.run.runs import (LOCK_FD_ENV, RunDirectory, RunError, RunLocked, is_run_directory, is_run_entry,
                                    open_lock_file, quoted, write_run_marker)
from lora_tui.core.run.checkpoints import choose_checkpoint
from lora_tui.core.run.started import Started
from lora_tui.core.run.trainer_process import supervisor_pid, trainer_processes

STOP_GRACE_S = 120.0  # `lora-tui stop` waits this long for a graceful stop, then kills the trainer (SIGKILL)


def claim(run: RunDirectory, what: str = "start"):
    """The run's lock file, flock-ed by this process; RunLocked when another process holds it."""
    run.path.mkdir(parents=True, exist_ok=True)
    fh = open_lock_file(run.lock_path)
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        live = trainer_processes(run.path)  # the lock file deleted or replaced under a live trainer
    except OSError:
        live = None
    if live is None or live:
        fh.close()
        pid = live[0].pid if live else _holder_pid(run)
        raise RunLocked(f"{run.path} is held by another trainer or launch{f' (pid {pid})' if pid else ''}: this "
                        f"{what} was refused so that only one writer uses the directory. Fix: `lora-tui attach "
                        f"{quoted(run.path)}` to follow the other one, or choose another --run-dir.") from None
    return fh


def spawn_kwargs(lock) -> dict:
    """Popen arguments that hand the held lock to the trainer (it adopts it instead of locking again)."""
    return {"pass_fds": (lock.fileno(),), "env_extra": {LOCK_FD_ENV: str(lock.fileno())}}


def replaceable_entries(path: Path, overwrite: bool) -> list[Path]:
    """What starting a run in ``path`` would delete: [] for a new or empty folder, a run's entries with
    ``overwrite``. Anything else raises RunError, and nothing is deleted: a folder that is not a lora-tui
    run (``runs.is_run_directory``), a file, the current folder (or one above it), the home folder."""
    if not path.exists():
        return []
    if not path.is_dir():
        raise RunError(f"{path} is a file, not a folder; it was not touched. Fix: give --run-dir a new or empty "
                       "folder.")
    try:
        leftovers = sorted(c for c in path.iterdir() if c.name != "trainer.lock")
    except OSError as exc:
        raise RunError(f"cannot read {path}: {exc.strerror or exc}. Fix: choose another --run-dir.") from None
    if not leftovers:
        return []
    if not is_run_directory(path):
        flag = "--overwrite replaces only a run, so " if overwrite else ""
        raise RunError(f"{path} is not empty and not a lora-tui run (it holds {_listed(leftovers)}): {flag}nothing "
                       "there was touched. Fix: give --run-dir a new or empty folder.")
    if not overwrite:
        raise RunError(f"{path} already exists and holds a run. Fix: choose another run name or --run-dir, "
                       f"`lora-tui train --resume {quoted(path)}` to continue it, or --overwrite to replace it.")
    foreign = [c for c in leftovers if not is_run_entry(c.name)]
    if foreign:  # exports, notes, data: --overwrite replaces a run, never what else lives beside it
        raise RunError(f"{path} holds a run and also {_listed(foreign)}, which are not part of a run: --overwrite "
                       f"removes only a run's own files, so nothing was touched. Fix: move those out of {quoted(path)} "
                       "first, or choose another --run-dir.")
    where = path.resolve()
    if where == Path.home().resolve() or where == Path.cwd().resolve() or where in Path.cwd().resolve().parents:
        what = "your home folder" if where == Path.home().resolve() else "the current folder (or one above it)"
        raise RunError(f"{path} is {what}: --overwrite never empties it; nothing was touched. Fix: "
                       f"`cd ..` and give the run's own folder, or choose another --run-dir.")
    return leftovers


def _listed(entries: list[Path]) -> str:
    from lora_tui.core.safe_read import clip

    shown = ", ".join(clip(c.name, 60) + ("/" if c.is_dir() else "") for c in entries[:3])
    return shown + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")


def clear_for_start(run: RunDirectory, overwrite: bool) -> None:
    """Under the claim: refuse a used directory (or empty a run with overwrite: only its own files); the lock
    file stays. Then the folder is marked as a run (``runs.RUN_MARKER``)."""
    for child in replaceable_entries(run.path, overwrite):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    write_run_marker(run.path)


@dataclass
class ResumePlan:
    checkpoint: Path | None
    step: int  # the checkpoint's step (0: from scratch)
    message: str  # what the user is told, e.g. "from checkpoint-4 (step 4); steps 5-8 are trained again"


def plan_resume(run: RunDirectory, config) -> ResumePlan:
    """Which checkpoint a resume uses and what that means; RunError when it cannot be done honestly."""
    choice = choose_checkpoint(run)  # the trainer makes the same choice
    checkpoint, damaged = choice.checkpoint, (" " + choice.note() if choice.passed_over else "")
    reached = _reached_step(run)
    if checkpoint is None:
        if (run.adapter_dir / "adapter_config.json").is_file():
            raise RunError(f"{run.path} has no complete checkpoint to resume from (training.save_steps=0, or it "
                           f"ended before the first one); resuming would train from step 0 and replace its adapter/.{damaged} "
                           f"Fix: keep this run and start a new one (`lora-tui train {quoted(run.config_path)} --run-dir NEW_DIR`).")
        if choice.passed_over:
            newest = choice.passed_over[0][0]
            raise RunError(f"{run.path}: {choice.note()} No other checkpoint is usable, so a resume would train from "
                           f"step 0. Fix: restore {newest.name}, or remove it (`rm -r {quoted(newest)}`) to train again "
                           "from step 0, or start a new run.")
        return ResumePlan(None, 0, f"No complete checkpoint in {run.path}: training starts again from step 0"
                                   + (f" ({_steps(1, reached)} trained again)." if reached else "."))
    step = _step_of(checkpoint)
    _check_adapter_shape(run, checkpoint, config)
    again = f"; {_steps(step + 1, reached)} trained again" if reached > step else ""
    return ResumePlan(checkpoint, step, f"Resuming {run.path} from {checkpoint.name} (step {step}){again}.{damaged}")


def _steps(first: int, last: int) -> str:
    return f"step {first} is" if first == last else f"steps {first}-{last} are"


def _step_of(checkpoint: Path) -> int:
    try:
        return int(checkpoint.name.split("-", 1)[1])
    except (IndexError, ValueError):
        return 0


def _reached_step(run: RunDirectory) -> int:
    """The last step the run reported (status.json, else the last step event)."""
    step = run.read_status().get("step")
    if isinstance(step, int):
        return step
    steps = [e.get("step") for e in run.tail_events() if e.get("type") == "step"]  # the end, however long the run
    return max((s for s in steps if isinstance(s, int)), default=0)


# config.yaml setting -> adapter_config.json key: each changes the adapter's tensors or how they are used.
SHAPE_KEYS = {"r": "r", "alpha": "lora_alpha", "use_rslora": "use_rslora", "use_dora": "use_dora"}


def _check_adapter_shape(run: RunDirectory, checkpoint: Path, config) -> None:
    from lora_tui.core.run.adapters import ADAPTER_CONFIG_BYTES
    from lora_tui.core.safe_read import read_bounded

    try:
        saved = json.loads(read_bounded(checkpoint / "adapter_config.json", ADAPTER_CONFIG_BYTES))
    except (OSError, ValueError, RecursionError):
        return  # no readable adapter config: the trainer's own error will say so
    if not isinstance(saved, dict):
        return
    for setting, key in SHAPE_KEYS.items():
        now, then = getattr(config.lora, setting, None), saved.get(key)
        if then is None or now is None or (bool(now) if isinstance(then, bool) else now) == then:
            continue
        raise RunError(f"config.yaml of {run.path} sets lora.{setting}={now}, but {checkpoint.name} was trained with "
                       f"lora.{setting}={then}: a checkpoint resumes only with the adapter it holds. Fix: set "
                       f"lora.{setting}={then} in {run.config_path} again, or start a new run with the new setting.")
    saved_targets = saved.get("target_modules")
    now = _targets_now(run, str(getattr(config.lora, "targets", "") or ""))
    if isinstance(saved_targets, list) and now is not None and set(now) != set(saved_targets):
        raise RunError(targets_changed(run, checkpoint, str(config.lora.targets), now, saved_targets))


def targets_changed(run: RunDirectory, checkpoint: Path, setting: str, now, saved) -> str:
    """The refusal of a resume whose lora.targets no longer names the layers the checkpoint has adapters on."""
    return (f"config.yaml of {run.path} sets lora.targets={setting} ({', '.join(sorted(now))}), but {checkpoint.name} "
            f"holds adapters on {', '.join(sorted(saved))}: a checkpoint resumes only with the adapter it holds. Fix: "
            f"set lora.targets={','.join(sorted(saved))} in {run.config_path} again, or start a new run with the new "
            "targets.")


def _targets_now(run: RunDirectory, setting: str) -> list[str] | None:
    """The module names lora.targets stands for; None when that needs the model's layers and the run's
    started event did not record them (runs from before issue 16: the trainer then checks)."""
    from lora_tui.core.model.models import ModelSourceError, resolve_target_modules

    setting = setting.strip()
    if setting not in ("qv", "attention", "all-linear"):
        return [part.strip() for part in setting.split(",") if part.strip()]
    starts = (Started.from_event(e) for e in run.read_events() if e.get("type") == "started")
    layers = next((s.linear_layers for s in starts if isinstance(s.linear_layers, list)), None)
    if layers is None:
        return None
    try:
        return resolve_target_modules(setting, layers)
    except ModelSourceError:
        return []


def _holder_pid(run: RunDirectory) -> int | None:
    """The trainer's pid: the live process training this folder, else what the lock file or status says."""
    live = supervisor_pid(run.path)
    if live:
        return live
    from lora_tui.core.safe_read import read_bounded

    try:
        text = read_bounded(run.lock_path, 64).strip()  # a FIFO or /dev/zero there never blocks or fills memory
        return int(text) if text else run.read_status().get("pid")
    except (OSError, ValueError):
        return run.read_status().get("pid")


def kill_trainer(run: RunDirectory, grace: float) -> str | None:
    """SIGKILL the trainer (its whole process group: data workers, ranks) after it ignored a stop request.

    Records the end in the run (event + status) once the lock is free. Returns what was done, or None."""
    pid = _holder_pid(run)
    if not pid or not run.is_locked():
        return None
    try:
        os.killpg(pid, signal.SIGKILL)  # started with setsid: its process group id is its pid
    except OSError:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            return None
    deadline = time.monotonic() + 15
    while run.is_locked() and time.monotonic() < deadline:
        time.sleep(0.1)
    checkpoint = run.last_checkpoint()
    resume = (f"its last complete checkpoint is {checkpoint.name}; continue with `lora-tui train --resume {quoted(run.path)}`"
              if checkpoint else "it had no complete checkpoint")
    reason = f"killed (SIGKILL) after ignoring the stop request for {grace:.0f} s; no adapter was saved"
    try:
        lock = claim(run, "record")
        try:
            run.append_event("stopped", step=run.read_status().get("step"), reason=reason, adapter=None)
            run.write_status("stopped", message=reason)
        finally:
            lock.close()
    except (RunError, OSError):
        pass
    return f"The trainer (pid {pid}) did not stop within {grace:.0f} s: killed it (SIGKILL); {resume}."
