"""One run plan: precision, attention, batching, kernels, batch and checkpointing, decided once.

``decide_run_plan(config, facts, ...)`` turns a Config and the device's facts (``DeviceFacts``: device,
compute capability, bf16, installed kernels, world size) into a ``RunPlan``. The same function, fed
the same facts, is what ``lora-tui estimate``, the wizard, the trainer and every rank use, so they
cannot disagree: the trainer records the plan in its ``started`` event, the multi-rank supervisor
hands its plan to every rank (``plan_env`` / ``plan_from_env``), and a resumed run keeps the first
start's batch.

``candidate_plans`` lists the plans a measuring probe may choose among (same effective batch, other
memory / speed trades); the probe (core/train/probe.py: ``choose``) picks one by measurement.

The plan is the choice; the Config is what the user asked for. Nothing here changes a Config.
Must not import torch, transformers or textual (the wizard imports it at start-up).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace

from lora_tui.core.config import effective_precision
from lora_tui.core.plan.batch import Batch
from lora_tui.core.plan.engine_choice import DeviceFacts, choose_kernels, engine_fields
from lora_tui.core.plan.workload import batch_candidates, choose_batch, workload_of

ENV_PLAN = "LORA_TUI_PLAN"  # the supervisor's RunPlan as JSON: every rank trains with the same one


@dataclass
class RunPlan:
    """Every engine choice of one run, and why each was made (shown in the wizard, recorded in events)."""

    device: str = "cpu"
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16"
    attention: str = "sdpa"
    batching: str = "grouped"  # "grouped" | "padding_free" | "packed" | "token_budget"
    kernels: list[str] = field(default_factory=lambda: ["lean_head"])
    batch: Batch = Batch(4, 4, False)  # as decided (workload.choose_batch), carried unchanged to the trainer
    max_seq_len: int = 512
    longest: int | None = None  # the data's longest tokenized row, when known
    world_size: int = 1
    capability: tuple[int, int] | None = None
    reasons: dict[str, str] = field(default_factory=dict)

    # The batch's fields, read where a plan is read as a whole (the trainer's arguments, the events).
    micro_batch = property(lambda self: self.batch.micro_batch)
    grad_accum = property(lambda self: self.batch.grad_accum)
    gradient_checkpointing = property(lambda self: self.batch.gradient_checkpointing)
    tokens_per_batch = property(lambda self: self.batch.tokens_per_batch)

    @property
    def rows_per_step(self) -> int | None:
        """Rows per optimiser step and device (None: token_budget, where it is stated in tokens)."""
        return None if self.batching == "token_budget" else self.micro_batch * self.grad_accum

    @property
    def tokens_per_step(self) -> int:
        """Most tokens per optimiser step and device: token_budget exactly what its bins may hold, else rows x row length."""
        if self.batching == "token_budget" and self.tokens_per_batch:
            return self.tokens_per_batch * self.grad_accum
        rows = self.longest if self.longest and self.batching != "packed" else self.max_seq_len
        return self.micro_batch * self.grad_accum * min(rows, self.max_seq_len)

    def to_dict(self) -> dict:
        """The plan as the started event and LORA_TUI_PLAN hold it: the batch's fields flat, as before it was a value."""
        out = asdict(self)
        del out["batch"]
        out.update(self.batch.record())
        out["capability"] = list(self.capability) if self.capability else None
        out["tokens_per_step"] = self.tokens_per_step
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "RunPlan":
        names = {f.name for f in fields(cls)} - {"batch"}
        values = {k: v for k, v in data.items() if k in names}
        if values.get("capability"):
            values["capability"] = tuple(values["capability"])
        batch = Batch.from_record(data, reasons={k: v for k, v in (data.get("reasons") or {}).items()
                                                 if k in ("micro_batch", "gradient_checkpointing")})
        return cls(**values, **({"batch": batch} if batch is not None else {}))

    def replace(self, **changes) -> "RunPlan":
        return replace(self, **changes)

    def workload(self, config, hardware=None):
        """The estimator's plan of this run: ``config`` with this plan's engine and batch (no copied config).
        Precision: the plan's is effective_precision(config), which the estimator resolves the same way."""
        plan = workload_of(config, hardware, device=self.device, longest=self.longest,
                                engine={"attention": self.attention, "batching": self.batching}, batch=self.batch)
        return plan.replace(liger="liger" in self.kernels)


def decide_run_plan(config, facts: DeviceFacts, hardware=None, longest: int | None = None, batch=None) -> RunPlan:
    """The run's plan. ``hardware``: the report the memory estimate reads (free memory); ``longest``: the
    data's longest tokenized row when known; ``batch``: a ``Batch`` already made
    (a resumed run's, the supervisor's), else it is chosen here."""
    attention, batching, reasons = engine_fields(config, facts)
    kernels, why_kernels = choose_kernels(config.training.kernels, facts.device, liger=facts.liger,
                                          method=config.training.method)
    precision = effective_precision(config, facts.device, facts.bf16)
    if batch is None:
        batch = choose_batch(config, hardware, facts.device, facts.world_size, longest,
                             engine={"attention": attention, "batching": batching})
    if batching != "token_budget" and batch.tokens_per_batch:
        batch = batch.replace(tokens_per_batch=None)
    return RunPlan(device=facts.device, precision=precision, attention=attention, batching=batching, kernels=kernels,
                   batch=batch, max_seq_len=config.data.max_seq_len, longest=longest, world_size=facts.world_size,
                   capability=facts.capability,
                   reasons={**reasons, "kernels": why_kernels, **batch.reasons})


def choose_engine(config, device: str, hardware=None, capability: tuple[int, int] | None = None,
                  world_size: int = 1, batch=None, longest: int | None = None):
    """Resolve every ``auto`` engine setting of ``config`` for ``device`` ("cpu" | "cuda"): the run plan
    (``decide_run_plan``) for the facts read from ``hardware``. ``batch``: the run's
    ``Batch`` when already made (the trainer's, see batch_for_run)."""
    facts = DeviceFacts.from_hardware(hardware, device, world_size, capability)
    return decide_run_plan(config, facts, hardware, longest, batch)


def candidate_plans(config, facts: DeviceFacts, hardware=None, longest: int | None = None) -> list[RunPlan]:
    """Plans with the same effective batch a measuring probe may choose among, the estimate's pick first.

    Varies what is on ``auto`` in the config: the micro-batch / token budget (each divisor of the effective
    batch that the estimate says fits), checkpointing, and Liger kernels where installed. Each plan's
    ``reasons['candidate']`` says what it varies."""
    first = decide_run_plan(config, facts, hardware, longest)
    out = [first]
    seen = {_key(first)}
    t = config.training
    kernel_options = [first.kernels]
    if t.kernels == "auto" and "liger" in first.kernels:
        kernel_options.append([k for k in first.kernels if k != "liger"])
    for batch in batch_candidates(config, hardware, facts.device, facts.world_size, longest,
                                  engine={"attention": first.attention, "batching": first.batching}):
        for kernels in kernel_options:
            plan = decide_run_plan(config, facts, hardware, longest, batch=batch).replace(kernels=list(kernels))
            if _key(plan) not in seen:
                seen.add(_key(plan))
                plan.reasons["candidate"] = (f"{plan.batch.describe()}, checkpointing {'on' if plan.gradient_checkpointing else 'off'}"
                                             f", kernels {'+'.join(plan.kernels)}")
                out.append(plan)
    return out


def _key(plan: RunPlan) -> tuple:
    return (plan.micro_batch, plan.grad_accum, plan.tokens_per_batch, plan.gradient_checkpointing, tuple(plan.kernels),
            plan.attention, plan.batching)


def plan_env(plan: RunPlan) -> dict:
    return {ENV_PLAN: json.dumps(plan.to_dict())}


class PlanError(ValueError):
    """LORA_TUI_PLAN holds no plan a rank can train with; the message is one line with the fix."""


KERNEL_NAMES = ("lean_head", "trl_fused_head", "liger")
PLAN_ENV_BYTES = 64 * 1024  # a plan is a few hundred bytes


def plan_from_env() -> RunPlan | None:
    """The supervisor's plan, in a rank it launched (None: a single-process run). Checked like a config
    (``check_plan``): garbage there is a PlanError, never a traceback or a batch of -3 x 0."""
    text = os.environ.get(ENV_PLAN, "")
    return check_plan(text) if text else None


def check_plan(text: str) -> RunPlan:
    """A RunPlan from its JSON (``plan_env``); PlanError naming the first wrong value."""
    from lora_tui.core.config import ATTENTION_CHOICES, BATCHING_CHOICES, PRECISION_CHOICES, ConfigError, check_value
    from lora_tui.core.safe_read import clip

    def fail(reason: str) -> PlanError:
        return PlanError(f"{ENV_PLAN} (the plan the launcher hands to each rank) {reason}. Fix: unset {ENV_PLAN}; "
                         "it is set by lora-tui for its own ranks, the config's training settings are the place to "
                         "choose a batch.")

    if len(text) > PLAN_ENV_BYTES:
        raise fail(f"is {len(text):,} characters long, not a plan")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise fail(f"is not JSON ('{clip(text, 40)}')") from None
    if not isinstance(data, dict):
        raise fail(f"is not a JSON object ('{clip(text, 40)}')")
    try:  # the values a config holds are checked by the config's own rules
        for section, key, name in (("training", "micro_batch", "micro_batch"), ("training", "grad_accum", "grad_accum"),
                                   ("training", "tokens_per_batch", "tokens_per_batch"),
                                   ("training", "gradient_checkpointing", "gradient_checkpointing"),
                                   ("data", "max_seq_len", "max_seq_len")):
            if name in data:
                data[name] = check_value(section, key, data[name]) if not isinstance(data[name], str) else \
                    _not_text(section, key, data[name])
    except ConfigError as exc:
        raise fail(f"holds a bad value: {str(exc).rstrip('.')}") from None
    if data.get("micro_batch") is None or data.get("grad_accum") is None:
        raise fail("has no micro_batch and grad_accum")
    choices = {"device": ("cpu", "cuda"), "precision": PRECISION_CHOICES[1:], "attention": ATTENTION_CHOICES[1:],
               "batching": BATCHING_CHOICES[1:]}
    for name, allowed in choices.items():
        if name in data and data[name] not in allowed:
            raise fail(f"sets {name} to '{clip(data[name], 40)}', not one of {', '.join(allowed)}")
    kernels = data.get("kernels", [])
    if not isinstance(kernels, list) or not set(map(str, kernels)) <= set(KERNEL_NAMES) or \
            not all(isinstance(k, str) for k in kernels):
        raise fail(f"sets kernels to '{clip(kernels, 40)}', not a list of {', '.join(KERNEL_NAMES)}")
    for name in ("world_size", "longest"):
        value = data.get(name)
        if value is not None and (type(value) is not int or not 0 < value <= 2**31):
            raise fail(f"sets {name} to '{clip(value, 40)}', not a positive whole number")
    capability = data.get("capability")
    if capability is not None and (not isinstance(capability, list) or len(capability) != 2
                                   or not all(type(c) is int for c in capability)):
        raise fail(f"sets capability to '{clip(capability, 40)}', not [major, minor]")
    reasons = data.get("reasons", {})
    if not isinstance(reasons, dict) or not all(isinstance(v, str) for v in reasons.values()):
        raise fail("sets reasons to something that is not a table of words")
    return RunPlan.from_dict(data)


def _not_text(section: str, key: str, value: str):
    """A plan holds numbers, not the words a config accepts ('auto'): a string is refused as it stands."""
    from lora_tui.core.config import ConfigError
    from lora_tui.core.safe_read import clip

    raise ConfigError(f"{section}.{key} must be a number, not '{clip(value, 40)}'")
