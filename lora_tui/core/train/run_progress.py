"""What the trainer is doing when no step is logged: start-up phases and evaluation batches, as events.

Before step 1 a run is busy for minutes without a step event: loading, then the evaluation before
training (61-114 s for the sample's 40 rows on a busy 2-core CPU). ``phase`` marks a start-up phase and
``EvalProgress`` (a TrainerCallback, transformers' on_prediction_step: one call per eval batch) reports
how far an evaluation is, so the wizard, `attach` and `stop` can say what is happening and how long it
has taken. Each is a ``progress`` event (what: "start" | "eval") and the status message; evaluation
events are rate-limited to one every EVERY_S seconds (and the last batch), so a fast evaluation costs
a handful of lines and a slow one moves.

Must not import torch or transformers at module top (imported by the trainer before torch).
"""

from __future__ import annotations

import time

EVERY_S = 2.0  # at most one evaluation progress event per this many seconds
PHASE_WORDS = {"before": "before training", "during": "", "after": "after training"}


def phase(run, message: str) -> None:
    """A start-up phase begins ("reading the data", "loading the model"): an event and the status message."""
    run.append_event("progress", what="start", message=message)
    run.write_status(run.read_status().get("state", "starting"), message=message)


def eval_message(phase_name: str | None, done: int, total: int | None, step: int | None = None) -> str:
    """'evaluating before training: 12/40 batches' (at step N for an evaluation during training)."""
    when = PHASE_WORDS.get(phase_name or "", "") or (f"at step {step}" if step else "")
    return f"evaluating{' ' + when if when else ''}: {done}/{total or '?'} batches"


def eval_progress(run, events):
    """The callback that reports evaluation batches; ``events`` (the recipe's RunEvents) says which
    evaluation this is (its ``eval_phase``: before / during / after)."""
    from transformers import TrainerCallback
    from transformers.trainer_utils import has_length

    class EvalProgress(TrainerCallback):
        def __init__(self) -> None:
            self.started: float | None = None
            self.done, self.last = 0, 0.0

        def on_prediction_step(self, args, state, control, eval_dataloader=None, **kw):
            if not state.is_world_process_zero:
                return control
            now = time.monotonic()
            if self.started is None:
                self.started, self.done, self.last = now, 0, 0.0
            self.done += 1
            total = len(eval_dataloader) if has_length(eval_dataloader) else None
            if now - self.last < EVERY_S and self.done != total and self.done != 1:
                return control
            self.last = now
            elapsed = now - self.started
            eta = elapsed / self.done * (total - self.done) if total else None
            which = getattr(events, "eval_phase", None)
            message = eval_message(which, self.done, total, state.global_step)
            run.append_event("progress", what="eval", phase=which, step=state.global_step, done=self.done,
                             total=total, elapsed_s=round(elapsed, 1), eta_s=round(eta, 1) if eta is not None else None,
                             message=message)
            run.write_status(run.read_status().get("state", "running"), message=message)
            return control

        def on_evaluate(self, args, state, control, **kw):
            self.started = None  # the next evaluation counts its batches afresh
            return control

    return EvalProgress()
