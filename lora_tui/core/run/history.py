"""Folds a run's events (the ``events.jsonl`` contract) into what its readers show: loss
series, the latest step, evaluations by phase, system samples, checkpoints, the outcome.

One fold for every reader: the wizard's Training screen, ``lora-tui train``/``attach``
(``commands/progress.py``) and the model card (``core/run/model_card.py``), so a new event
field is learnt in one place.

Must not: import torch, textual or anything heavy, write to the run directory, or print.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from lora_tui.core.run.started import Started
from lora_tui.core.units import human_duration

OUTCOMES = ("finished", "failed", "stopped")


@dataclass
class RunHistory:
    started: Started | None = None  # the latest start's record (a resume starts again)
    last_step: dict | None = None
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_losses: list[float] = field(default_factory=list)
    # dpo / kto: the reward margin (chosen - rejected) and reward accuracy per logged step
    reward_steps: list[int] = field(default_factory=list)
    reward_margins: list[float] = field(default_factory=list)
    reward_accuracies: list[float | None] = field(default_factory=list)
    last_eval: dict | None = None
    evals_by_phase: dict[str, dict] = field(default_factory=dict)
    system: dict | None = None
    memory: dict | None = None  # the latest "memory" event (estimate vs measured peak)
    checkpoints: list[dict] = field(default_factory=list)
    outcome: dict | None = None  # the finished / failed / stopped event
    logs: list[dict] = field(default_factory=list)
    progress: dict | None = None  # the latest "progress" event (a start-up phase, evaluation batches) since a step
    seen: dict = field(default_factory=dict)  # "step" / "progress": time.monotonic() when the latest was folded in
    last_seq: int = 0
    offset: int = 0  # bytes of events.jsonl already read by ``poll``

    @classmethod
    def of(cls, run) -> "RunHistory":
        """The whole history of a run directory (a ``RunDirectory``) so far."""
        history = cls()
        history.poll(run)
        return history

    def poll(self, run) -> list[dict]:
        """Read the events written since the last poll, fold them in and return them.
        A half-written last line waits for the next poll."""
        events, self.offset = run.read_events_from(self.offset)
        self.add(events)
        return events

    def add(self, events: list[dict]) -> bool:
        """Fold new events in; returns True when the loss series changed (the plot needs a redraw)."""
        plot_changed = False
        for event in events:
            seq = int(event.get("seq", 0) or 0)
            if seq and seq <= self.last_seq:
                continue  # already folded (a re-read after a resume, say)
            self.last_seq = max(self.last_seq, seq)
            kind = event.get("type")
            if kind in ("started", "step", "eval") or kind in OUTCOMES:
                self.progress = None  # what it was doing is over (a phase, an evaluation)
            if kind == "started":
                self.started = Started.from_event(event)
                self.outcome = None  # a resumed run starts again
            elif kind == "progress":
                self.progress = event
                self.seen["progress"] = time.monotonic()
            elif kind == "step":
                self.last_step = event
                self.seen["step"] = time.monotonic()
                if event.get("loss") is not None:
                    self.steps.append(int(event.get("step", len(self.steps))))
                    self.losses.append(float(event["loss"]))
                    plot_changed = True
                if event.get("lr") is not None:
                    self.lrs.append(float(event["lr"]))
                if event.get("reward_margin") is not None:
                    self.reward_steps.append(int(event.get("step", 0)))
                    self.reward_margins.append(float(event["reward_margin"]))
                    accuracy = event.get("reward_accuracy")
                    self.reward_accuracies.append(float(accuracy) if accuracy is not None else None)
            elif kind == "eval":
                self.last_eval = event
                self.evals_by_phase[event.get("phase", "during")] = event
                if event.get("eval_loss") is not None:
                    self.eval_steps.append(int(event.get("step", 0)))
                    self.eval_losses.append(float(event["eval_loss"]))
                    plot_changed = True
            elif kind == "system":
                self.system = event
            elif kind == "memory":
                self.memory = event
            elif kind == "checkpoint":
                self.checkpoints.append(event)
            elif kind in OUTCOMES:
                self.outcome = event
            elif kind == "log":
                self.logs.append(event)
        return plot_changed

    @property
    def step(self) -> int:
        return int((self.last_step or {}).get("step", 0) or 0)

    @property
    def max_steps(self) -> int | None:
        value = (self.last_step or {}).get("max_steps") or (self.started.max_steps if self.started else None)
        return int(value) if value else None

    @property
    def fraction(self) -> float:
        total = self.max_steps
        if self.finished:
            return 1.0
        return min(self.step / total, 1.0) if total else 0.0

    def _outcome(self, kind: str) -> dict | None:
        return self.outcome if self.outcome and self.outcome.get("type") == kind else None

    finished = property(lambda self: self._outcome("finished"))
    stopped = property(lambda self: self._outcome("stopped"))
    failed = property(lambda self: self._outcome("failed"))

    @property
    def method(self) -> str:
        """sft | dpo | kto: what the run trains (runs from before training.method are sft)."""
        return str((self.started and self.started.training_method) or "sft")

    def _since(self, kind: str, now: float | None) -> float:
        """Seconds since the latest ``kind`` event was folded in (``now``: time.monotonic(); None: none).
        Counted from when this reader saw it, not from the event's clock: a reader on another machine
        (or a replayed history) ticks on from the figures it was given."""
        return max(0.0, now - self.seen.get(kind, now)) if now is not None else 0.0

    def live_step(self, now: float | None = None) -> tuple[float | None, float | None]:
        """(elapsed, ETA) in seconds of the latest step, moved on to ``now`` (time.monotonic()): between step
        events the elapsed clock ticks on and the ETA counts down, instead of both standing still."""
        step, since = self.last_step or {}, self._since("step", now)
        elapsed = step["elapsed_s"] + since if step.get("elapsed_s") is not None else None
        eta = max(0.0, step["eta_s"] - since) if step.get("eta_s") is not None else None
        return elapsed, eta

    def waiting_text(self, now: float | None = None) -> str | None:
        """What the trainer is doing while no step comes (a start-up phase, an evaluation), with its clock
        moved on to ``now`` (time.monotonic()): 'evaluating before training: 12/40 batches, 30s, about 1m10s
        left', 'loading the model... 12s'; None when nothing is reported."""
        return progress_text(self.progress, self._since("progress", now) if now is not None else None) \
            if self.progress else None

    @property
    def eval_before(self) -> dict | None:
        return self.evals_by_phase.get("before")

    @property
    def eval_after(self) -> dict | None:
        """The final evaluation: the "after" one, else the latest one."""
        return self.evals_by_phase.get("after") or self.last_eval


def progress_text(event: dict, since: float | None = None) -> str:
    """A ``progress`` event in words: 'evaluating before training: 12/40 batches, 30s, about 1m10s left',
    'loading the model...'; with ``since`` (seconds since it was seen) the clocks move on: 'loading the
    model... 12s'."""
    if event.get("what") == "eval":
        elapsed = (event.get("elapsed_s") or 0) + (since or 0)
        eta = event.get("eta_s")
        going = eta is not None and event.get("done") != event.get("total")
        left = f", about {human_duration(max(0.0, eta - (since or 0)))} left" if going else ""
        return f"{event.get('message')}, {human_duration(elapsed)}{left}"
    return f"{event.get('message')}..." + (f" {human_duration(since)}" if since is not None else "")
