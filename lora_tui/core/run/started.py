"""The ``started`` event as one typed record: what a run trains with, as its trainer recorded it.

The trainer writes it (core/train/training.py: ``Started.from_event({...}).event()``) and every reader (the run's
history, the model card, ``lora-tui progress``, the Training screen, the bench, the resume claim) reads it by
attribute, so a key is spelled once, here. Runs from older versions lack some keys: those read as None. Keys
this version does not know (a newer trainer's) are kept in ``extra`` and written back unchanged.

Must not import torch or textual (the wizard reads runs at start-up).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from lora_tui.core.plan.batch import Batch


@dataclass(frozen=True)
class Started:
    # the model and what is trained
    model: str | None = None
    model_path: str | None = None
    method: str | None = None  # "LoRA" | "LoRA-8bit" | "QLoRA"
    load_in: str | None = None
    target_modules: list | None = None
    linear_layers: list | None = None
    quantized_layers: int | None = None
    trainable_params: int | None = None
    total_params: int | None = None
    adapter_dtypes: list | None = None
    # where and how
    device: str | None = None
    precision: str | None = None
    batching: str | None = None
    attention: str | None = None
    kernels: list | None = None
    gradient_checkpointing: bool | None = None
    micro_batch: int | None = None
    grad_accum: int | None = None
    tokens_per_batch: int | None = None
    tokens_per_step: int | None = None
    run_plan: dict | None = None
    engine_reasons: dict | None = None
    cpu_allocator_tuned: bool | None = None
    memory_estimate: dict | None = None
    probe: dict | None = None
    # the data and the length of the run
    data: dict | None = None
    num_train_rows: int | None = None
    num_eval_rows: int | None = None
    max_steps: int | None = None
    epochs: float | None = None
    # the process
    command: str | None = None
    resumed_from: str | None = None
    pid: int | None = None
    # dpo / kto (core/train/preference.started_fields)
    training_method: str | None = None
    init_adapter: str | None = None
    preference: dict | None = None
    # the devices (core/train/distributed.started_fields)
    world_size: int | None = None
    strategy: str | None = None
    nodes: int | None = None
    ranks: list | None = None
    extra: dict = field(default_factory=dict)  # keys this version does not know, kept as they were

    @classmethod
    def from_event(cls, event: dict) -> "Started":
        """The record of a ``started`` event (its ``seq``, ``type`` and ``time`` are the event's, not the record's)."""
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in event.items() if k in known},
                   extra={k: v for k, v in event.items() if k not in known and k not in ("seq", "type", "time")})

    def event(self) -> dict:
        """The fields as the event holds them (``run.append_event("started", **record.event())``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**out, **self.extra}

    @property
    def batch(self) -> Batch | None:
        """The batch the run trained with (None for runs from before the batch was recorded)."""
        return Batch.from_record({"micro_batch": self.micro_batch, "grad_accum": self.grad_accum,
                                  "gradient_checkpointing": self.gradient_checkpointing, "batching": self.batching,
                                  "tokens_per_batch": self.tokens_per_batch}, reasons=self.engine_reasons or {})
