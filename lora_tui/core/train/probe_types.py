"""The probe's measurements (core/train/probe.py): what one plan measured, and how a plan is written down.

A plan the probe measures is a ``RunPlan`` (core/plan/run_plan.py): its ``Batch`` and whether Liger's kernels
are in. A measurement keeps those two, and ``plan_record`` / ``plan_from_record`` are the one way they are
written to (and read back from) the ``started`` event's probe facts and the probe cache. Shared by ``probe``
(the rule, the walks) and ``probe_trainer`` (measuring on a throwaway trainer), so both import it and neither
imports the other back. Must not import torch / transformers, nor touch textual.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from lora_tui.core.plan.batch import Batch

WARMUP_STEPS, TIMED_STEPS = 1, 2
MEMORY_SHARE = 0.90  # a measured peak within this share of the GPU memory this process can hold fits


def plan_label(batch: Batch, liger: bool = False) -> str:
    """A measured plan in the user's words: the batch's ``describe()``, checkpointing, Liger."""
    return (f"{batch.describe()}, checkpointing {'on' if batch.gradient_checkpointing else 'off'}"
            + (", Liger" if liger else ""))


def plan_record(batch: Batch, liger: bool = False) -> dict:
    """A plan as the started event's probe facts and the probe cache hold it: the batch's fields, Liger, the label."""
    return {**batch.record(), "liger": bool(liger), "label": plan_label(batch, liger)}


def plan_from_record(record: dict, reasons: dict[str, str] | None = None) -> tuple[Batch, bool]:
    """(the batch, Liger on) a ``plan_record`` holds (older runs' records have the same keys)."""
    batch = Batch.from_record({**record, "batching": "token_budget"}, reasons or {})
    if batch is None:
        raise ValueError("a probe record without a micro-batch")
    return batch, bool(record.get("liger"))


@dataclass
class Measurement:
    batch: Batch
    liger: bool = False
    tokens_per_s: float | None = None
    peak_bytes: int | None = None  # torch.cuda.max_memory_reserved during its steps (None on CPU)
    estimate_bytes: int | None = None
    over: bool = False  # out of memory, or measured over the budget
    note: str = ""

    def weight(self) -> float:
        """How heavy the plan is: its measured peak, else its estimate."""
        return float(self.peak_bytes if self.peak_bytes is not None else self.estimate_bytes or 0)

    def label(self) -> str:
        return plan_label(self.batch, self.liger)

    def to_dict(self) -> dict:
        return {"candidate": plan_record(self.batch, self.liger),
                **{f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("batch", "liger")}}

    @classmethod
    def from_dict(cls, data: dict) -> "Measurement":
        batch, liger = plan_from_record(data["candidate"])
        figures = {f.name for f in fields(cls)} - {"batch", "liger"}
        return cls(batch, liger, **{k: v for k, v in data.items() if k in figures})


FIGURES = frozenset(f.name for f in fields(Measurement)) - {"batch", "liger"} | {"candidate"}  # a record's keys
PLAN_KEYS = frozenset(plan_record(Batch(1, 1, False)))  # a plan record's keys
