"""The probe's plans and measurements (core/train/probe.py): what is measured and what a measurement holds.

Shared by ``probe`` (the rule, the walks) and ``probe_trainer`` (measuring on the built trainer), so both
import it and neither imports the other back. Must not import torch / transformers, nor touch textual.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

WARMUP_STEPS, TIMED_STEPS = 1, 2
MEMORY_SHARE = 0.90  # a measured peak within this share of the GPU memory this process can hold fits


@dataclass(frozen=True)
class Candidate:
    """One plan the probe can measure. ``tokens_per_batch`` is set for token-budget batching."""

    micro_batch: int
    grad_accum: int
    gradient_checkpointing: bool
    liger: bool = False
    tokens_per_batch: int | None = None

    def label(self) -> str:
        size = (f"{self.tokens_per_batch} tokens" if self.tokens_per_batch
                else f"{self.micro_batch} row{'s' if self.micro_batch > 1 else ''}")
        return (f"{size} x {self.grad_accum}, checkpointing {'on' if self.gradient_checkpointing else 'off'}"
                + (", Liger" if self.liger else ""))


@dataclass
class Measurement:
    candidate: Candidate
    tokens_per_s: float | None = None
    peak_bytes: int | None = None  # torch.cuda.max_memory_reserved during its steps (None on CPU)
    estimate_bytes: int | None = None
    over: bool = False  # out of memory, or measured over the budget
    note: str = ""

    def weight(self) -> float:
        """How heavy the plan is: its measured peak, else its estimate."""
        return float(self.peak_bytes if self.peak_bytes is not None else self.estimate_bytes or 0)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["candidate"]["label"] = self.candidate.label()
        return out
