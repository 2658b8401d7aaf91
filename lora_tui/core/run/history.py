"""Folds a run's events (the ``events.jsonl`` contract) into what its readers show: loss
series, the latest step, evaluations by phase, system samples, checkpoints, the outcome.

One fold for every reader: the wizard's Training screen, ``lora-tui train``/``attach``
(``commands/progress.py``) and the model card (``core/run/model_card.py``), so a new event
field is learnt in one place.

Must not: import torch, textual or anything heavy, write to the run directory, or print.
"""

from __future__ import annotations

from dataclasses import dataclass, field

OUTCOMES = ("finished", "failed", "stopped")


@dataclass
class RunHistory:
    started: dict | None = None
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
            if kind == "started":
                self.started = event
                self.outcome = None  # a resumed run starts again
            elif kind == "step":
                self.last_step = event
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
        value = (self.last_step or {}).get("max_steps") or (self.started or {}).get("max_steps")
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
        return str((self.started or {}).get("training_method") or "sft")

    @property
    def eval_before(self) -> dict | None:
        return self.evals_by_phase.get("before")

    @property
    def eval_after(self) -> dict | None:
        """The final evaluation: the "after" one, else the latest one."""
        return self.evals_by_phase.get("after") or self.last_eval
