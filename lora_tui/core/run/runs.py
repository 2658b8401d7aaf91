"""Run directories: the only shared state between the trainer process, the CLI
and the wizard.

    runs/<name>/
      lora_tui_run       the marker: this folder is a run lora-tui wrote (`train --overwrite` needs it)
      config.yaml        the config the run was started with (commented YAML)
      events.jsonl       append-only, one JSON object a line, increasing "seq"
      status.json        latest state, rewritten atomically
      train.log          the trainer process's stdout/stderr (tracebacks go here)
      trainer.lock       held (flock) by the live trainer; refuses a second one
      stop_requested     created by `lora-tui stop`; the trainer stops gracefully
      checkpoints/checkpoint-N/   resumable checkpoints (complete ones carry a marker)
      adapter/           the final PEFT adapter + tokenizer + README.md model card

This module never imports torch: readers (wizard, attach) must stay light.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lora_tui.core.paths import runs_dir

STATES_DONE = ("finished", "failed", "stopped")
STATES_ACTIVE = ("created", "starting", "running", "stopping")  # a trainer is (or is about to be) at work
CHECKPOINT_MARKER = "lora_tui_complete"


def quoted(path: str | os.PathLike) -> str:
    """A path as it must be typed in a shell command we print (spaces, quotes, `$`...); one that starts with `-`
    gets `./` in front, so it is never read as an option (a run named `-rf`)."""
    text = str(path)
    return shlex.quote("./" + text if text.startswith("-") else text)


RUN_MARKER = "lora_tui_run"  # written first into every run directory: what makes a folder a run
RUN_MARKER_TEXT = "lora-tui run directory"
# What a run consists of: all that `train --overwrite` may remove (with the temp files of each, ".NAME.tmp-PID").
# Anything else in the folder (a user's notes, an export's zip or gguf/) makes --overwrite a refusal.
RUN_ENTRIES = frozenset({RUN_MARKER, "config.yaml", "events.jsonl", "status.json", "train.log", "trainer.lock",
                         "stop_requested", "checkpoints", "adapter", "exports.json", "accelerate_config.yaml",
                         ".space_reserve", "tensorboard", "mlruns", "wandb"})


def is_run_entry(name: str) -> bool:
    """Whether a name in a run folder is one of the files a run consists of (or a temp file of one)."""
    if name in RUN_ENTRIES:
        return True
    temp = re.fullmatch(r"\.(.+)\.tmp(?:-\w+)?", name)
    return bool(temp) and temp.group(1) in RUN_ENTRIES


def is_run_directory(path: str | os.PathLike) -> bool:
    """Whether a folder is a run lora-tui wrote: its marker file (RUN_MARKER), or for runs made before the
    marker, a config.yaml with the header `train` writes and an events.jsonl that starts with event 1.
    A config.yaml and a status.json alone (anyone's files) do not make a run."""
    path = Path(path)
    if _starts_with(path / RUN_MARKER, RUN_MARKER_TEXT.encode()):
        return True
    return _starts_with(path / "config.yaml", b"# lora-tui run '") and _starts_with(path / "events.jsonl", b'{"seq": 1, ')


def _starts_with(path: Path, prefix: bytes) -> bool:
    """Whether a regular file starts with ``prefix`` (a FIFO, a device or a folder never does)."""
    from lora_tui.core.safe_read import UnsafeFile, open_regular

    try:
        with open_regular(path, buffering=0) as fh:
            return fh.read(len(prefix)) == prefix
    except (UnsafeFile, OSError):
        return False


def write_run_marker(path: str | os.PathLike) -> None:
    """Mark a folder as a run directory (the launcher, before anything else is written there)."""
    _write_atomic(Path(path) / RUN_MARKER, f"{RUN_MARKER_TEXT}: written by `lora-tui train`. `train --overwrite` "
                                          f"removes only a run's own files ({', '.join(sorted(RUN_ENTRIES))}).\n")


class RunError(RuntimeError):
    """A run directory problem the user can fix; the message says how."""


class RunLocked(RunError):
    pass


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk must not leave .status.json.tmp-* behind
        tmp.unlink(missing_ok=True)
        raise


def file_sha256(path: str | Path) -> str | None:
    path = Path(path)
    if not path.is_file():  # folders (txt / save_to_disk): hash the files in order
        if not path.is_dir():
            return None
        digest = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(child.relative_to(path).as_posix().encode())
            digest.update(child.read_bytes())
        return digest.hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    try:  # a zombie child counts as dead
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@dataclass
class RunSummary:
    name: str
    path: Path
    state: str
    step: int | None
    max_steps: int | None
    loss: float | None
    eval_loss: float | None
    updated: float | None
    model: str | None
    method: str = "sft"  # training.method
    eval_reward_accuracy: float | None = None  # dpo: the latest evaluation's reward accuracy


class RunDirectory:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    # --- layout ---------------------------------------------------------------
    config_path = property(lambda self: self.path / "config.yaml")
    events_path = property(lambda self: self.path / "events.jsonl")
    status_path = property(lambda self: self.path / "status.json")
    log_path = property(lambda self: self.path / "train.log")
    lock_path = property(lambda self: self.path / "trainer.lock")
    stop_path = property(lambda self: self.path / "stop_requested")
    checkpoints_dir = property(lambda self: self.path / "checkpoints")
    adapter_dir = property(lambda self: self.path / "adapter")
    name = property(lambda self: self.path.name)

    def exists(self) -> bool:
        return self.config_path.is_file()

    @classmethod
    def find(cls, name_or_path: str | os.PathLike) -> "RunDirectory":
        """A run by path, or by name under the default runs folder."""
        candidates = list(dict.fromkeys([Path(name_or_path), runs_dir() / str(name_or_path)]))
        for candidate in candidates:
            if (candidate / "config.yaml").is_file():
                return cls(candidate)
        raise RunError(f"No run at '{name_or_path}' (looked for {' and '.join(str(c / 'config.yaml') for c in candidates)}). "
                       "Fix: `lora-tui runs` lists the runs.")

    # --- events -----------------------------------------------------------------
    def _last_seq(self) -> int:
        """The highest seq written, a torn last line's included (its number is taken: the next event must not
        reuse it). The tail of the file is read; seqs only grow, so it holds the last one."""
        import re

        try:
            with open(self.events_path, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                start = max(0, size - EVENTS_TAIL_BYTES)
                while True:  # backwards, a slice at a time, until a seq is found (a huge garbage line)
                    fh.seek(start)
                    found = [int(n) for n in re.findall(rb'(?m)^\{"seq": (\d{1,18})', fh.read(EVENTS_TAIL_BYTES + 64))]
                    if found or start == 0:
                        return max(found, default=0)
                    start = max(0, start - EVENTS_TAIL_BYTES)
        except OSError:
            return 0

    def append_event(self, type: str, **fields) -> dict:
        """Append one event. Only the lock holder (the trainer) calls this."""
        if not hasattr(self, "_seq"):
            self._seq = self._last_seq()
        self._seq += 1
        event = {"seq": self._seq, "time": round(time.time(), 3), "type": type, **fields}
        line = json.dumps(event, ensure_ascii=False, default=_json_default) + "\n"
        if not getattr(self, "_tail_checked", False):  # a line torn by a crash must not swallow this event
            line = ("\n" if _ends_torn(self.events_path) else "") + line
            self._tail_checked = True
        with open(self.events_path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
        return event

    def read_events(self, offset: int = 0) -> list[dict]:
        """Events from byte ``offset``, at most EVENTS_READ_BYTES of them (a long run's file is larger:
        page with ``read_events_from``; its end is ``tail_events``)."""
        return self.read_events_from(offset)[0]

    def tail_events(self) -> list[dict]:
        """The events in the last EVENTS_TAIL_BYTES of events.jsonl, in order: a run's last steps and outcome,
        however long the run (read_events stops after its first EVENTS_READ_BYTES)."""
        try:
            with _open_run_file(self.events_path) as fh:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(0, size - EVENTS_TAIL_BYTES))
                data = fh.read(EVENTS_TAIL_BYTES)
        except OSError:
            return []
        lines = data.split(b"\n")
        if size > EVENTS_TAIL_BYTES:
            lines = lines[1:]  # the first line of the slice is (most likely) cut
        events = []
        for raw in lines:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def last_loss(self) -> float | None:
        """The training loss of the last step event that has one (None before the first)."""
        return next((e["loss"] for e in reversed(self.tail_events())
                     if e.get("type") == "step" and e.get("loss") is not None), None)

    def read_events_from(self, offset: int = 0) -> tuple[list[dict], int]:
        """Complete event lines from byte ``offset``; returns them and the next offset.
        A half-written last line is left for the next read."""
        try:
            with _open_run_file(self.events_path) as fh:
                fh.seek(offset)
                data = fh.read(EVENTS_READ_BYTES)  # bounded: a garbage file is read a slice at a time
                more = len(data) == EVENTS_READ_BYTES
        except (FileNotFoundError, IsADirectoryError):
            return [], offset
        if more and b"\n" not in data:  # one garbage line longer than a whole slice: skip it
            return [], offset + len(data)
        events, consumed = [], 0
        for raw in data.splitlines(keepends=True):
            if not raw.endswith(b"\n"):
                break
            consumed += len(raw)
            try:
                events.append(json.loads(raw))
            except ValueError:
                continue  # a line torn by a crash: skip it, keep the rest
        return events, offset + consumed

    def follow(self, poll: float = 0.5, stop_when_done: bool = True) -> Iterator[dict]:
        """Yield every event, then new ones as they arrive, until the run is over."""
        offset = 0
        while True:
            events, offset = self.read_events_from(offset)
            yield from events
            if stop_when_done and not events and self.state() in STATES_DONE + ("dead",):
                events, offset = self.read_events_from(offset)
                yield from events
                return
            if not events:
                time.sleep(poll)

    # --- status -----------------------------------------------------------------
    def write_status(self, state: str, **fields) -> dict:
        status = {**self.read_status(), **fields, "state": state, "updated": round(time.time(), 3)}
        _write_atomic(self.status_path, json.dumps(status, indent=2, default=_json_default) + "\n")
        return status

    def read_status(self) -> dict:
        """status.json as a dict; {} when missing, unreadable, garbage or absurdly big."""
        try:
            with _open_run_file(self.status_path) as fh:
                status = json.loads(fh.read(STATUS_READ_BYTES))
        except (OSError, ValueError, RecursionError):
            return {}
        return status if isinstance(status, dict) else {}

    def status_readable(self) -> bool:
        """False when status.json exists but holds no JSON object (garbage, torn, a folder...)."""
        return not self.status_path.exists() or bool(self.read_status())

    def state(self) -> str:
        """created | starting | running | stopping | finished | failed | stopped | dead.
        'dead' means status says running but no trainer holds the lock (killed, machine rebooted).
        Without a readable status.json the events decide (they are the truth; status is a cache)."""
        status = self.read_status()
        state = status.get("state") or self.status_from_events().get("state")
        state = state or ("created" if self.exists() else "missing")
        if state in ("starting", "running", "stopping") and not self.is_locked():
            # Between spawn and taking the lock the trainer is alive but unlocked.
            return state if state == "starting" and pid_alive(status.get("pid")) else "dead"
        return state

    def status_from_events(self) -> dict:
        """What status.json would say, rebuilt from the tail of events.jsonl: the outcome after the last
        start (else "running": the lock check in ``state`` makes a trainer-less one "dead"), the last step.
        {} when there are no events. Reads at most EVENTS_TAIL_BYTES."""
        status: dict = {}
        for event in self.tail_events():
            kind = event.get("type")
            if kind == "started":
                status.update(state="running", max_steps=event.get("max_steps"))
            elif kind in STATES_DONE:
                status["state"] = kind
            elif kind == "step":
                status.update({k: event.get(k) for k in ("step", "max_steps", "epoch", "loss")})
                status.setdefault("state", "running")
            elif kind == "eval":
                status["eval_loss"] = event.get("eval_loss")
            if isinstance(event.get("time"), (int, float)):
                status["updated"] = event["time"]
            if kind in STATES_DONE and isinstance(event.get("step"), int):
                status["step"] = event["step"]
        return status

    # --- the trainer's lock ---------------------------------------------------------
    def acquire_lock(self):
        """Hold an exclusive flock for the trainer's lifetime (released by the OS on any exit, even kill -9)."""
        import fcntl

        from lora_tui.core.run.trainer_process import describe, trainer_processes

        inherited = _inherited_lock(self.lock_path)
        fh = inherited or open_lock_file(self.lock_path)
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The launcher already looked for a live trainer under its claim; else look now (a deleted lock file)
            others = [] if inherited else trainer_processes(self.path)
        except OSError:
            others = []
            fh.close()
            fh = None
        if fh is None or others:
            if fh is not None:
                fh.close()
            who = describe(others) or f"pid {self.read_status().get('pid')}"
            raise RunLocked(f"A trainer ({who}) is already running in {self.path}. "
                            f"Fix: `lora-tui attach {quoted(self.path)}` to follow it, or `lora-tui stop {quoted(self.path)}`.") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._lock_handle = fh
        return fh

    def is_locked(self) -> bool:
        """Whether a trainer is at work here: its flock on trainer.lock, else (the lock file deleted or replaced
        under it) a live trainer process for this folder (core.run.trainer_process)."""
        import fcntl

        from lora_tui.core.run.trainer_process import trainer_processes

        try:
            with _open_run_file(self.lock_path) as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except OSError:
                    return True
                fcntl.flock(fh, fcntl.LOCK_UN)
        except OSError:  # no lock file, or not a regular one: the process table answers
            pass
        return bool(trainer_processes(self.path, exclude_own_family=False))

    # --- stop ----------------------------------------------------------------------
    def request_stop(self) -> None:
        """Written atomically (a new file renamed over the name): a FIFO or a link to /dev/zero put there is
        replaced, never opened (opening a FIFO for writing blocks until someone reads it)."""
        _write_atomic(self.stop_path, str(time.time()))

    def clear_stale_stop(self) -> None:
        """Forget a stop request made before this trainer was launched (the launcher records when);
        one made during start-up, before the trainer held its lock, is kept and honoured. What is not a
        small regular file (a FIFO, /dev/zero, garbage) is no request anyone made: it is removed."""
        from lora_tui.core.safe_read import read_bounded

        if not os.path.lexists(self.stop_path):
            return
        launched = self.read_status().get("launched")
        try:
            requested = float(read_bounded(self.stop_path, 64) or 0)
        except (OSError, ValueError):
            requested = None
        if requested is None or launched is None or requested < float(launched):
            self.stop_path.unlink(missing_ok=True)

    def stop_requested(self) -> bool:
        return self.stop_path.exists()

    # --- checkpoints -------------------------------------------------------------------
    def complete_checkpoints(self) -> list[Path]:
        """Checkpoints whose writing finished (marker present), oldest first."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = []
        for child in self.checkpoints_dir.iterdir():
            if child.name.startswith("checkpoint-") and (child / CHECKPOINT_MARKER).exists():
                try:
                    found.append((int(child.name.split("-", 1)[1]), child))
                except ValueError:
                    continue
        return [path for _, path in sorted(found)]

    def last_checkpoint(self) -> Path | None:
        done = self.complete_checkpoints()
        return done[-1] if done else None

    # --- summary -------------------------------------------------------------------------
    def summary(self) -> RunSummary:
        status = self.read_status() or self.status_from_events()  # garbage status.json: the events say it
        model, method = None, "sft"
        try:
            from lora_tui.core.config import MAX_CONFIG_BYTES
            from lora_tui.core.safe_read import read_yaml

            saved = read_yaml(self.config_path, MAX_CONFIG_BYTES) or {}
            model = saved.get("model", {}).get("name")
            method = str((saved.get("training") or {}).get("method") or "sft")
        except Exception:
            pass
        return RunSummary(self.name, self.path, self.state(), status.get("step"), status.get("max_steps"),
                          status.get("loss"), status.get("eval_loss"), status.get("updated"), model, method,
                          status.get("eval_reward_accuracy"))


def list_runs(parent: str | os.PathLike | None = None) -> list[RunSummary]:
    parent = runs_dir(parent)
    if not parent.is_dir():
        return []
    runs = [RunDirectory(child).summary() for child in parent.iterdir() if (child / "config.yaml").is_file()]
    return sorted(runs, key=lambda r: r.updated or 0, reverse=True)


EVENTS_READ_BYTES = 8 * 2**20
EVENTS_TAIL_BYTES = 2**20  # a run's end and last step are within its last events
STATUS_READ_BYTES = 2**20
LOCK_FD_ENV = "LORA_TUI_LOCK_FD"


def _open_run_file(path: Path):
    """open(path, "rb") that never blocks: a FIFO or device in a run folder reads as a missing file."""
    from lora_tui.core.safe_read import UnsafeFile, open_regular

    try:
        return open_regular(path)
    except UnsafeFile as exc:
        raise FileNotFoundError(errno.ENOENT, str(exc)) from None


def open_lock_file(path: Path):
    """The run's lock file, opened for flock; RunError (one line) when it is not a regular file (a FIFO there
    would block open(), a folder cannot be locked)."""
    import stat

    try:
        kind = os.lstat(path).st_mode
    except FileNotFoundError:
        kind = None
    except OSError as exc:
        raise RunError(f"cannot read {path}: {exc.strerror or exc}. Fix: check the folder's permissions.") from None
    if kind is not None and not stat.S_ISREG(kind):
        from lora_tui.core.safe_read import KINDS

        what = "a folder" if stat.S_ISDIR(kind) else KINDS.get(stat.S_IFMT(kind), "not a regular file")
        raise RunError(f"{path} is {what}, not the run's lock file, so no trainer can own the run safely; nothing "
                       f"was started. Fix: `rm {quoted(path)}` (the trainer recreates it), then run the command again.")
    return open(path, "a+")


def _ends_torn(path: Path) -> bool:
    """Whether the file's last byte is not a newline (a line cut short by a crash or a full disk)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"
    except OSError:
        return False


def _inherited_lock(lock_path: Path):
    """The lock file the launcher already holds and passed to this process (see launcher.claim_run), if any.

    Taking the lock in the launcher, before anything is written, makes the claim of a run directory
    atomic: of two launches at the same instant, exactly one gets it."""
    fd = os.environ.pop(LOCK_FD_ENV, None)
    if fd is None:
        return None
    try:
        fh = os.fdopen(int(fd), "a+")
        if os.path.samestat(os.fstat(fh.fileno()), os.stat(lock_path)):
            return fh
        fh.close()
    except (OSError, ValueError):
        pass
    return None


def _json_default(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
