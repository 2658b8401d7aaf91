"""The trainer's guard against a full disk: hooks that ``training`` calls at a few points.

- ``start(run)``: after the lock is taken; keeps a small space reserve (see ``disk``).
- ``space_callback(run)``: a TrainerCallback checking free space at every step (one
  ``statvfs``), warning once in the events when the next checkpoint will not fit, and
  failing the run *before* a checkpoint save that cannot fit.
- ``check_adapter_space(run)``: the same before the final adapter save.
- ``explain(exc, run)`` / ``record_failure(run, reason, fix)``: an ENOSPC becomes
  "disk full: N MB needed, M MB free at PATH" plus the fix; the reserve is released,
  half-written saves and temp files are removed, and status.json and the final
  event are written even on a disk with no space left.

Earlier complete checkpoints are never touched. No torch at module level.
"""

from __future__ import annotations

from pathlib import Path

from lora_tui.core.disk import FIX, FIX_NO_CHECKPOINT, MB, DiskFull, SpaceGuard, free_bytes, is_disk_full, remove_partial_saves
from lora_tui.core.run.runs import CHECKPOINT_MARKER, RunDirectory, quoted

_guard: SpaceGuard | None = None  # one trainer process trains one run


def start(run: RunDirectory) -> SpaceGuard:
    global _guard
    _guard = SpaceGuard(run.path, adapter_bytes=0, extra_bytes=16 * MB)
    _guard.take_reserve()
    return _guard


def _sized(model) -> SpaceGuard:
    guard = _guard or SpaceGuard(Path("."), 0, 16 * MB)
    if model is not None and not getattr(guard, "sized", False):
        trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        extra = _tokenizer_bytes(model) + MB  # + trainer state, scheduler, rng, training args
        guard.adapter_bytes = trainable + extra
        guard.checkpoint_bytes = 3 * trainable + extra  # weights + two Adam moments
        guard.sized = True
    return guard


TOKENIZER_FILES = ("tokenizer", "vocab", "merges", "special_tokens_map", "chat_template", "added_tokens", "spiece")


def _tokenizer_bytes(model) -> int:
    """Size of the tokenizer files every save copies (from the base model's folder; 16 MB when unknown)."""
    name = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", "")
    folder = Path(str(name or ""))
    if not folder.is_dir():
        return 16 * MB
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file() and f.name.startswith(TOKENIZER_FILES))


def space_callback(run: RunDirectory):
    from transformers import TrainerCallback

    class SpaceWatch(TrainerCallback):
        """Free space against the next checkpoint's size, every step (a statvfs: microseconds)."""

        what = "checkpoint"

        def on_train_begin(self, args, state, control, model=None, **kw):
            _sized(model)
            no_saves = str(getattr(args.save_strategy, "value", args.save_strategy)) == "no"
            self.what = "adapter" if no_saves else "checkpoint"  # the next thing written
            short = _guard.shortfall(self.what) if _guard is not None else None
            if short and no_saves:  # the adapter is the only save: training every step and keeping nothing helps no one
                raise DiskFull(*short, _guard.path, "the final adapter (training.save_steps=0: nothing is saved "
                                                    "before it), so training was not started")
            if short:  # the next checkpoint cannot fit: steps trained up to it would be lost (3 steps, 118 s)
                step = (state.global_step // args.save_steps + 1) * args.save_steps
                raise DiskFull(*short, _guard.path, f"checkpoint-{step}, the next save, so training was not started")
            return self._check(state, control, saving=False)

        def on_step_end(self, args, state, control, **kw):
            return self._check(state, control, saving=bool(control.should_save))

        def on_save(self, args, state, control, **kw):
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir() and _guard is not None:
                _guard.learn_checkpoint(checkpoint)
            return control

        def _check(self, state, control, saving: bool):
            guard = _guard
            if guard is None:
                return control
            short = guard.shortfall("checkpoint" if saving else self.what)
            if short is None:
                guard.warned = False
                return control
            if saving:  # refuse to start a save that cannot fit: the earlier checkpoints stay intact
                raise DiskFull(*short, guard.path, f"checkpoint-{state.global_step}")
            if not guard.warned:
                guard.warned = True
                needed, free = short
                message = (f"the next {self.what} needs about {needed / MB:,.0f} MB but only {free / MB:,.0f} MB "
                           f"are free at {guard.path}: free space before it is saved, or the run will end "
                           "'failed' (disk full)")
                run.append_event("log", level="warning", code="disk_space", message=message)  # attach, runs
                print(f"WARNING: {message}", flush=True)  # train.log: the wizard's log pane shows it
            return control

    return SpaceWatch()


def check_adapter_space(run: RunDirectory, model=None) -> None:
    _sized(model).check("adapter")


def explain(exc: BaseException, run: RunDirectory) -> tuple[str, str] | None:
    """(reason, fix) for a full disk, after making room for the last words; None for other errors."""
    if not is_disk_full(exc):
        return None
    if _guard is not None:
        _guard.release_reserve()
    remove_partial_saves(run.path, run.checkpoints_dir, CHECKPOINT_MARKER)
    if isinstance(exc, DiskFull):
        reason = str(exc).split("] ", 1)[-1]
    else:
        needed = (_guard.checkpoint_bytes if _guard else 0) + 8 * MB
        try:
            free = free_bytes(run.path)
        except OSError:
            free = 0
        reason = (f"disk full: about {needed / MB:,.0f} MB needed for the save, {free / MB:,.0f} MB free at "
                  f"{run.path}")
    kept = run.complete_checkpoints()
    if kept:
        return reason, FIX.format(run=quoted(run.path), last=kept[-1].name)
    return reason, FIX_NO_CHECKPOINT.format(run=quoted(run.path))


def record_failure(run: RunDirectory, reason: str, fix: str) -> None:
    """The final 'failed' event and status; on a full disk, release the reserve and try once more."""
    for attempt in range(2):
        try:
            run.append_event("failed", reason=reason, fix=fix, log=str(run.log_path))
            break
        except OSError:
            if _guard is not None:
                _guard.release_reserve()
    for attempt in range(2):
        try:
            run.write_status("failed", message=reason)
            break
        except OSError:
            if _guard is not None:
                _guard.release_reserve()


def finish(run: RunDirectory) -> None:
    """At the end of a run: give the reserve back."""
    if _guard is not None:
        _guard.release_reserve()
