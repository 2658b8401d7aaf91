"""The batch of a run: one value from the choice to the trainer's arguments.

``Batch`` holds what trades memory for speed at an equal effective batch: rows per micro-batch, gradient
accumulation, tokens per micro-batch (batching=token_budget: one packed row of up to that many tokens) and
activation checkpointing, with why each was chosen. ``workload.choose_batch`` decides it once (or a
resumed run reads its first start's back with ``from_record``), the run plan carries it unchanged
(``RunPlan.batch``), the estimator takes it beside the config (``workload.workload_of(..., batch=)``)
and ``describe()`` is the one way a batch is written for people.

Must not import torch or textual (the wizard imports it at start-up); holds no Config.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Batch:
    micro_batch: int  # rows per micro-batch; token_budget: 1 packed row of up to tokens_per_batch tokens
    grad_accum: int
    gradient_checkpointing: bool
    tokens_per_batch: int | None = None  # batching=token_budget only: tokens per micro-batch
    reasons: dict[str, str] = field(default_factory=dict, compare=False)  # "micro_batch", "gradient_checkpointing"

    @property
    def effective(self) -> int:
        """Rows per optimiser step and device (with a token budget: micro-batches, one packed row each)."""
        return self.micro_batch * self.grad_accum

    def describe(self) -> str:
        """The batch in the user's words: '8 x 4 = 32 rows per step' or '4096 tokens x 4 = 16384 tokens per step'."""
        if self.tokens_per_batch:
            return f"{self.tokens_per_batch} tokens x {self.grad_accum} = {self.tokens_per_batch * self.grad_accum} tokens per step"
        return f"{self.micro_batch} x {self.grad_accum} = {self.effective} rows per step"

    def record(self) -> dict:
        """The fields as the ``started`` event and the run plan's JSON hold them (flat, without reasons)."""
        return {"micro_batch": self.micro_batch, "grad_accum": self.grad_accum,
                "gradient_checkpointing": self.gradient_checkpointing, "tokens_per_batch": self.tokens_per_batch}

    @classmethod
    def from_record(cls, record: dict, reasons: dict[str, str] | None = None) -> "Batch | None":
        """The batch a ``started`` event (or a run plan's JSON) recorded; None when it recorded none."""
        if not record.get("micro_batch"):
            return None
        tokens = record.get("tokens_per_batch") if record.get("batching", "token_budget") == "token_budget" else None
        return cls(int(record["micro_batch"]), int(record.get("grad_accum") or 1),
                   bool(record.get("gradient_checkpointing")), int(tokens) if tokens else None,
                   dict(reasons if reasons is not None else record.get("reasons") or {}))

    def replace(self, **changes) -> "Batch":
        return replace(self, **changes)
