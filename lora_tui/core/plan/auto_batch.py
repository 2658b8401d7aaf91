"""``training.micro_batch=auto`` and ``training.gradient_checkpointing=auto``, decided together from the estimate.

The effective batch (rows per optimiser step) is what the learning depends on; the micro-batch only
trades memory for speed. With ``micro_batch=auto`` the effective batch is ``AUTO_BASE x grad_accum``
rows (16 with the defaults, as ``micro_batch=4, grad_accum=4`` gives) and ``choose_batch`` picks the
largest micro-batch that divides it and fits with margin; ``grad_accum`` then makes up the rest:

1. without checkpointing, the largest micro-batch that fits (at least ``AUTO_BASE``): checkpointing off;
2. else, with checkpointing (when that is on ``auto`` too), the largest that fits: checkpointing on;
3. nothing fits: micro-batch 1 with checkpointing, and the estimate says what else to change.

"Fits with margin" is the share of free memory in ``memory_record.CHECKPOINT_SHARE`` (GPU: 80 % of
free memory, below the estimate's 90 % "fits" line; CPU: 25 % of available RAM, shared with the
system). The run resolves this once when it starts and records it in the ``started`` event; a resumed
run reuses that record, so ``kill -9`` + ``--resume`` still gives the same batches.

Must not import torch or textual (the wizard imports it), nor change the config it is given.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

AUTO_BASE = 4  # micro_batch=auto keeps an effective batch of AUTO_BASE x grad_accum rows
# Largest micro-batch auto picks. CPU: measured by benchmarks/micro_batch_sweep.py (no faster beyond);
# GPU: beyond this a bigger effective batch, not a bigger micro-batch, is what the user wants.
MICRO_BATCH_CAP = {"cpu": 8, "cuda": 64}
# Largest auto token budget without FlashAttention's varlen kernel: SDPA computes (and masks) the whole
# N x N score matrix of a packed micro-batch, so attention work grows with N^2 while the useful part grows
# with the rows' own lengths. At 8192 tokens (TRL's packing arm on the H200: 8 x 1024 flattened, the fastest
# arm measured, issue 17) the waste on a 1.5B shape is under half the linear layers' FLOPs; beyond it, it dominates.
SDPA_TOKEN_BUDGET_CAP = 8192


def _micro_cap(config, device: str, engine: dict) -> int:
    """Most rows auto puts in one micro-batch (a token budget without FlashAttention: at most SDPA_TOKEN_BUDGET_CAP tokens)."""
    cap = MICRO_BATCH_CAP.get(device, 8)
    if engine.get("batching") == "token_budget" and not str(engine.get("attention", "")).startswith("flash"):
        cap = min(cap, max(1, SDPA_TOKEN_BUDGET_CAP // config.data.max_seq_len))
    return cap


@dataclass
class BatchChoice:
    micro_batch: int
    grad_accum: int
    gradient_checkpointing: bool
    reasons: dict[str, str] = field(default_factory=dict)  # "micro_batch", "gradient_checkpointing"
    tokens_per_batch: int | None = None  # batching=token_budget: tokens per micro-batch (micro_batch rows of max_seq_len)

    @property
    def effective(self) -> int:
        return self.micro_batch * self.grad_accum


def effective_batch(config) -> int:
    """Rows per optimiser step (per device) the config asks for."""
    t = config.training
    return (t.micro_batch or AUTO_BASE) * t.grad_accum


def _divisors_down(n: int, cap: int) -> list[int]:
    return [m for m in range(min(n, cap), 0, -1) if n % m == 0]


def choose_batch(config, hardware=None, device: str | None = None, world_size: int = 1,
                 longest: int | None = None, engine: dict | None = None) -> BatchChoice:
    """Micro-batch, accumulation and checkpointing for ``config`` on this hardware; explicit values win.

    ``world_size`` processes sharing one machine's RAM (CPU gloo runs) each get their share of it.
    ``longest``: the data's longest tokenized row when known (the trainer), else rows of max_seq_len.
    ``engine``: the run plan's {"attention", "batching"} (core.run_plan), resolved from the facts when absent.
    With batching=token_budget a micro-batch of m rows is a budget of m x max_seq_len tokens.
    """
    choice = _choose_batch(config, hardware, device, world_size, longest, engine)
    return _with_tokens(choice, config, engine or _engine(config, hardware, device))


def _engine(config, hardware, device: str | None) -> dict:
    from lora_tui.core.plan.memory_plan import _engine_fields

    device = device or ("cuda" if hardware is not None and getattr(hardware, "gpus", None) else "cpu")
    return _engine_fields(config, device, hardware)


def _with_tokens(choice: BatchChoice, config, engine: dict) -> BatchChoice:
    """A token budget's micro-batch: one packed row of micro_batch x max_seq_len tokens (or the config's)."""
    if engine.get("batching") != "token_budget":
        return choice
    t = config.training
    tokens = int(t.tokens_per_batch or choice.micro_batch * config.data.max_seq_len)
    reasons = dict(choice.reasons)
    if t.tokens_per_batch:
        reasons["micro_batch"] = "token budget set in the config"
    elif t.micro_batch is None:
        reasons["micro_batch"] = reasons.get("micro_batch", "").replace(" rows", f" rows of {config.data.max_seq_len} tokens")
    return BatchChoice(1, choice.grad_accum, choice.gradient_checkpointing, reasons, tokens)


def _choose_batch(config, hardware, device, world_size, longest, engine) -> BatchChoice:
    from lora_tui.core.plan.memory import GiB, estimate_memory
    from lora_tui.core.plan.memory_plan import plan_from_config
    from lora_tui.core.plan.memory_record import CHECKPOINT_SHARE, _available

    t = config.training
    device = device or ("cuda" if hardware is not None and getattr(hardware, "gpus", None) else "cpu")
    engine = engine or _engine(config, hardware, device)
    if engine.get("batching") == "token_budget" and t.tokens_per_batch:  # the budget is the user's: one packed row
        config = config.copy()
        config.training.micro_batch = 1
        t = config.training
    available = _available(hardware, device)
    if device == "cpu" and world_size > 1:
        available //= world_size
    share = CHECKPOINT_SHARE.get(device, 0.8)
    budget = share * available
    where = f"{share:.0%} of {available / GiB:.1f} GiB free"
    if longest and longest < config.data.max_seq_len and engine.get("batching") not in ("packed", "token_budget"):
        where += f", rows up to {longest} tokens"  # packed micro-batches are filled whatever the rows

    @functools.cache  # the choice asks for the same plan more than once (fit, reason, next size up)
    def need(micro: int, checkpointing: bool) -> int:
        trial = config.copy()
        trial.training.micro_batch, trial.training.gradient_checkpointing = micro, checkpointing
        return estimate_memory(plan_from_config(trial, hardware, device=device, longest=longest, engine=engine)).total_bytes

    def fits(micro: int, checkpointing: bool) -> bool:
        return bool(available) and need(micro, checkpointing) <= budget

    wanted_ckpt = t.gradient_checkpointing
    if t.micro_batch is not None:  # the user's micro-batch: only checkpointing may be auto
        if wanted_ckpt is not None:
            return BatchChoice(t.micro_batch, t.grad_accum, bool(wanted_ckpt),
                               {"micro_batch": "set in the config", "gradient_checkpointing": "set in the config"})
        try:
            without = need(t.micro_batch, False)
        except Exception as exc:  # unknown model dims: keep the faster default
            return BatchChoice(t.micro_batch, t.grad_accum, False, {"micro_batch": "set in the config",
                               "gradient_checkpointing": f"off: no estimate ({str(exc)[:80]})"})
        on = bool(available) and without > budget
        return BatchChoice(t.micro_batch, t.grad_accum, on, {
            "micro_batch": "set in the config",
            "gradient_checkpointing": f"{'on' if on else 'off'}: {without / GiB:.1f} GiB without it, "
                                      f"{'over' if on else 'within'} {where}"})

    total = effective_batch(config)
    candidates = _divisors_down(total, _micro_cap(config, device, engine))

    def choice(micro: int, checkpointing: bool, why_micro: str, why_ckpt: str) -> BatchChoice:
        return BatchChoice(micro, total // micro, checkpointing, {"micro_batch": why_micro, "gradient_checkpointing": why_ckpt})

    try:
        options = [False, True] if wanted_ckpt is None else [bool(wanted_ckpt)]
        for checkpointing in options:
            floor = min(AUTO_BASE, total) if checkpointing is False and len(options) > 1 else 1
            bigger = None  # the next larger candidate, which did not fit
            for micro in candidates:
                if micro < floor:
                    break
                if not fits(micro, checkpointing):
                    bigger = micro
                    continue
                gib = need(micro, checkpointing) / GiB
                if bigger is not None:
                    why = f"{micro} rows need {gib:.1f} GiB; {bigger} would need {need(bigger, checkpointing) / GiB:.1f}, over {where}"
                elif micro < total:
                    cap = _micro_cap(config, device, engine)
                    why = (f"{micro} rows need {gib:.1f} GiB, within {where}; "
                           + (f"{micro * config.data.max_seq_len} tokens is the most auto packs without FlashAttention"
                              if cap < MICRO_BATCH_CAP.get(device, 8) else f"{micro} is the most auto puts in one pass on {device.upper()}"))
                else:
                    why = f"the whole batch in one pass: {gib:.1f} GiB, within {where}"
                if wanted_ckpt is not None:
                    return choice(micro, checkpointing, f"auto: {why}", "set in the config")
                base = min(AUTO_BASE, total)
                ckpt_why = (f"on: micro-batch {base} needs {need(base, False) / GiB:.1f} GiB without it, over {where}"
                            if checkpointing else f"off: {gib:.1f} GiB without it, within {where}")
                return choice(micro, checkpointing, f"auto: {why}", ckpt_why)
    except Exception as exc:  # unknown model dims: the classic default
        micro = min(AUTO_BASE, total) if total % min(AUTO_BASE, total) == 0 else 1
        return choice(micro, bool(wanted_ckpt), f"auto: {micro} (no estimate: {str(exc)[:80]})",
                      "set in the config" if wanted_ckpt is not None else "off: no estimate")
    checkpointing = True if wanted_ckpt is None else bool(wanted_ckpt)
    try:
        one = f"{need(1, checkpointing) / GiB:.1f} GiB"
    except Exception:
        one = "more"
    return choice(1, checkpointing, f"auto: even one row needs {one}, over {where} (the estimate's verdict says if it fits)",
                  "set in the config" if wanted_ckpt is not None else f"on: even one row is over {where} without it")


def batch_candidates(config, hardware=None, device: str | None = None, world_size: int = 1,
                     longest: int | None = None, engine: dict | None = None) -> list[BatchChoice]:
    """Every split of the config's effective batch (and checkpointing, where auto) that the estimate says
    fits with margin, largest micro-batch first: what a measuring probe may choose among."""
    from lora_tui.core.plan.memory import estimate_memory
    from lora_tui.core.plan.memory_plan import plan_from_config
    from lora_tui.core.plan.memory_record import CHECKPOINT_SHARE, _available

    t = config.training
    device = device or ("cuda" if hardware is not None and getattr(hardware, "gpus", None) else "cpu")
    engine = engine or _engine(config, hardware, device)
    available = _available(hardware, device) // (world_size if device == "cpu" else 1)
    budget = CHECKPOINT_SHARE.get(device, 0.8) * available
    fixed = t.micro_batch is not None or (engine.get("batching") == "token_budget" and t.tokens_per_batch)
    total = effective_batch(config)
    micros = [t.micro_batch or 1] if fixed else _divisors_down(total, _micro_cap(config, device, engine))
    out = []
    for micro in micros:
        for checkpointing in ([bool(t.gradient_checkpointing)] if t.gradient_checkpointing is not None else [False, True]):
            trial = config.copy()
            trial.training.micro_batch, trial.training.gradient_checkpointing = micro, checkpointing
            if not fixed:
                trial.training.grad_accum = total // micro
            try:
                need = estimate_memory(plan_from_config(trial, hardware, device=device, longest=longest, engine=engine)).total_bytes
            except Exception:
                continue
            if available and need <= budget:
                why = f"candidate: {need / 2**30:.1f} GiB estimated"
                out.append(_with_tokens(BatchChoice(micro, trial.training.grad_accum, checkpointing,
                                                    {"micro_batch": why, "gradient_checkpointing": why}), config, engine))
    return out


def batch_for_run(run, config, hardware=None, device: str | None = None, world_size: int = 1,
                  resume: bool = False, longest: int | None = None, engine: dict | None = None) -> BatchChoice:
    """The batch a run trains with: the run's first start's (resume), or a fresh choice. (A multi-rank
    run's ranks take the supervisor's whole plan instead: core.run_plan.plan_from_env.)

    Reusing the first start's micro-batch on ``--resume`` keeps the batches, and so the adapter, identical.
    """
    t = config.training
    if t.micro_batch is not None and t.gradient_checkpointing is not None:
        return choose_batch(config, hardware, device, world_size, longest, engine)
    if resume:
        first = next((e for e in run.read_events() if e.get("type") == "started" and e.get("micro_batch")), None)
        if first is not None:
            kept = "kept from the run's first start (resume: the same batches)"
            return BatchChoice(int(first["micro_batch"]), int(first.get("grad_accum") or t.grad_accum),
                               bool(first.get("gradient_checkpointing")) if t.gradient_checkpointing is None else bool(t.gradient_checkpointing),
                               {"micro_batch": kept, "gradient_checkpointing": kept if t.gradient_checkpointing is None else "set in the config"},
                               first.get("tokens_per_batch"))
    return choose_batch(config, hardware, device, world_size, longest, engine)
