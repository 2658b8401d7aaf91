"""The workload of a run (what the memory estimate sizes): the one place that translates a Config into the
estimator's ``Workload`` and a memory fix back into ``section.key=value`` overrides.

The wizard's Hardware step and ``lora-tui estimate`` both go through here, so a fix
means the same thing on screen and on the command line, and what the CLI prints is
exactly what the wizard applies (through ``core.config.apply_overrides``).

To teach it a new knob: add the Workload field -> config key to ``PLAN_FIELDS``, read
it in ``workload_of``, and (when the workload's value differs from the config's) add a
case to ``_config_value``.

The batch auto picks lives here too (``choose_batch``: ``training.micro_batch=auto`` and
``training.gradient_checkpointing=auto``, decided together from the estimate): it estimates workloads
translated here, and the translation of an auto config asks it for the batch, so the two are one module.

The effective batch (rows per optimiser step) is what the learning depends on; the micro-batch only
trades memory for speed. With ``micro_batch=auto`` the effective batch is ``AUTO_BASE x grad_accum``
rows (16 with the defaults, as ``micro_batch=4, grad_accum=4`` gives) and ``choose_batch`` picks the
largest micro-batch that divides it and fits with margin; ``grad_accum`` then makes up the rest:

1. without checkpointing, the largest micro-batch that fits (at least ``AUTO_BASE``): checkpointing off;
2. else, with checkpointing (when that is on ``auto`` too), the largest that fits: checkpointing on;
3. nothing fits: micro-batch 1 with checkpointing, and the estimate says what else to change.

"Fits with margin" is the share of free memory in ``CHECKPOINT_SHARE`` (GPU: 80 % of
free memory, below the estimate's 90 % "fits" line; CPU: 25 % of available RAM, shared with the
system). The run resolves this once when it starts and records it in the ``started`` event; a resumed
run reuses that record, so ``kill -9`` + ``--resume`` still gives the same batches.

Must not: import torch or textual (the wizard imports this at start-up), print, or
change a Config except through ``apply_overrides``.
"""

from __future__ import annotations

import functools

from lora_tui.core import config as config_rules  # cpu_has_bf16 read through the module: one answer, patchable in tests
from lora_tui.core.config import Config, _cli_value, apply_overrides, effective_precision
from lora_tui.core.plan.batch import Batch
from lora_tui.core.plan.engine_choice import DeviceFacts, choose_kernels, engine_fields
from lora_tui.core.model.models import split_experts
from lora_tui.core.plan.memory import ATTENTION, BATCHING, Workload, estimate_memory
from lora_tui.core.units import GiB

# Workload field -> the Config key that holds it (one vocabulary: the config's).
PLAN_FIELDS = {
    "model": "model.name",
    "quant": "model.load_in",
    "double_quant": "model.double_quant",
    "r": "lora.r",
    "targets": "lora.targets",
    "dropout": "lora.dropout",
    "seq_len": "data.max_seq_len",
    "batch": "training.micro_batch",
    "grad_checkpointing": "training.gradient_checkpointing",
}
# Config keys the plan reads besides PLAN_FIELDS (precision decides the GPU dtype).
# grad_accum: with micro_batch auto the effective batch (4 x grad_accum) bounds the micro-batch.
EXTRA_KEYS = ("training.precision", "training.batching", "training.attention", "training.grad_accum",
              "training.tokens_per_batch", "training.method", "training.init_adapter")
QUANT_FOR_LOAD = {"16bit": "none", "8bit": "8bit", "4bit": "4bit"}
LOAD_FOR_QUANT = {"none": "16bit", "16bit": "16bit", "8bit": "8bit", "4bit": "4bit"}
DTYPE_FOR_PRECISION = {"auto": None, "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _get(config: Config, dotted: str):
    section, key = dotted.split(".", 1)
    return getattr(getattr(config, section), key)


def workload_of(config: Config, hardware=None, model: str | None = None, device: str | None = None,
                     longest: int | None = None, engine: dict | None = None, batch: Batch | None = None):
    """The Workload of the run this Config would start, on this hardware (GPU 0 when there is one,
    like the trainer), optionally for another model (the wizard's catalogue table) or forced onto
    ``device`` ("cpu" / "cuda", as `lora-tui estimate --device` does).

    ``longest``: the data's longest tokenized row, when known (the trainer knows it). No micro-batch is
    longer than its longest row (grouped and padding-free batches), so the plan uses it instead of
    ``data.max_seq_len``; packed rows are filled to ``max_seq_len`` whatever the data, and a token budget's
    micro-batch is one row of ``training.tokens_per_batch`` tokens (auto: micro-batch x max_seq_len).

    ``engine``: {"attention", "batching"} as the run plan resolved them (core/plan/run_plan.py); else resolved here
    from the same device facts (compute capability, installed kernels) the trainer uses.

    ``batch``: the batch to estimate (a run's, or one a choice weighs); else the config's, auto decided here.
    """
    device = device or ("cuda" if hardware is not None and hardware.gpus else "cpu")
    engine = engine or _engine_fields(config, device, hardware)
    batching = engine["batching"]
    batch = batch or _batch(_for_model(config, model), hardware, device, longest, engine)
    seq_len = planned_seq_len(config, batching, longest)
    sizes = {"batch": batch.micro_batch, "grad_checkpointing": batch.gradient_checkpointing}
    if batching == "token_budget":
        # One padding-free row of the budget's tokens. Auto: micro-batch rows of max_seq_len, which the
        # estimator multiplies out itself, so a fix on the max length or the micro-batch means what it says.
        # A budget that is not whole rows (the config's, a probe's) is estimated at its own count of tokens.
        tokens = int(config.training.tokens_per_batch or batch.tokens_per_batch or batch.micro_batch * seq_len)
        sizes["batch"] = max(1, tokens // seq_len)
        sizes["tokens_per_batch"] = tokens if config.training.tokens_per_batch or tokens % seq_len else None
    return Workload(
        model=model or config.model.name,
        quant=QUANT_FOR_LOAD[config.model.load_in],
        double_quant=config.model.double_quant,
        r=config.lora.r,
        targets=split_experts(config.lora.targets)[0],
        lora_experts=split_experts(config.lora.targets)[1],  # "all-linear,experts": every MoE expert too
        seq_len=seq_len,
        **sizes,
        device=device,
        **_precision_fields(config, device),
        dropout=config.lora.dropout,
        **_memory_engine(engine),
        liger=_uses_liger(config, device),
        **_method_fields(config),
        batch_shapes=_run_micro_batches(config, batch),
    )


def _run_micro_batches(config: Config, batch: Batch) -> int | None:
    """Micro-batches a run of ``training.max_steps`` takes (each brings new matmul shapes: memory.batch_shapes);
    None for a run of epochs, whose length depends on the data (the estimate then assumes a long run)."""
    t = config.training
    if t.max_steps <= 0:
        return None
    return t.max_steps * max(1, batch.grad_accum)


def _method_fields(config: Config) -> dict:
    """dpo / kto: both answers of each row and the reference pass (core/train/preference.py)."""
    method = config.training.method
    if method == "sft":
        return {}
    return {"method": method, "reference_adapter": bool(config.training.init_adapter)}


def _uses_liger(config: Config, device: str) -> bool:
    """Liger's kernels in the step (CUDA, liger-kernel installed, kernels not 'none'), as the run plan decides."""
    return device == "cuda" and "liger" in choose_kernels(config.training.kernels, device, method=config.training.method)[0]


def planned_seq_len(config: Config, batching: str, longest: int | None) -> int:
    """Tokens per row the plan assumes: the data's longest row when known, never above max_seq_len."""
    if not longest or batching in ("packed", "token_budget"):
        return config.data.max_seq_len
    return max(1, min(int(longest), config.data.max_seq_len))


def _precision_fields(config: Config, device: str) -> dict:
    """The compute dtype the trainer will run in (core.config.effective_precision). precision=auto stays
    dtype None and is resolved by the plan, so a fix that changes the load (4-bit keeps fp32 on CPU) changes
    the dtype as the trainer would: CPU bf16 on CPUs with native bf16 for 16-bit loads, else fp32; GPU bf16,
    or fp16 on a GPU without it (judge_fit). An explicit precision is taken as the trainer takes it."""
    if config.training.precision == "auto":
        return {"dtype": None, "cpu_native_bf16": device == "cpu" and config_rules.cpu_has_bf16()}
    return {"dtype": DTYPE_FOR_PRECISION[effective_precision(config, device, bf16_supported=True)]}


def _engine_fields(config: Config, device: str, hardware=None) -> dict:
    """Batching and attention as the run plan resolves them (core/plan/engine_choice.py), for this hardware's facts."""
    attention, batching, _ = engine_fields(config, DeviceFacts.from_hardware(hardware, device))
    return {"batching": batching, "attention": attention}


def _memory_engine(engine: dict) -> dict:
    """The plan's attention / batching in the estimator's vocabulary (memory.BATCHING / ATTENTION)."""
    attention, batching = engine["attention"], engine["batching"]
    attention = "flash" if attention.startswith("flash") else attention if attention in ATTENTION else "sdpa"
    if batching not in BATCHING:  # token_budget: one padding-free row of the budget's tokens
        batching = "padding_free"
    return {"attention": attention, "batching": batching}


def _for_model(config: Config, model: str | None) -> Config:
    """The config with another model (the catalogue table): auto batch sizes are decided per model."""
    if not model or model == config.model.name:
        return config
    other = config.copy()
    other.model.name = model
    return other


def _batch(config: Config, hardware, device: str, longest: int | None = None, engine: dict | None = None) -> Batch:
    """The config's batch, with auto (None) resolved the way the trainer resolves it."""
    t = config.training
    fixed = t.micro_batch is not None or (engine or {}).get("batching") == "token_budget" and t.tokens_per_batch
    if fixed and t.gradient_checkpointing is not None:
        return Batch(t.micro_batch or 1, t.grad_accum, bool(t.gradient_checkpointing))
    return choose_batch(config, hardware, device, longest=longest, engine=engine)


def estimate_inputs(config: Config) -> tuple:
    """Every config value the plan depends on: a key that changes exactly when the estimate may."""
    return tuple(_get(config, dotted) for dotted in (*PLAN_FIELDS.values(), *EXTRA_KEYS))


def _config_value(plan_field: str, value):
    """A plan value in the config's terms (quant 'none' is load_in '16bit', target lists are comma text)."""
    if plan_field == "quant":
        return LOAD_FOR_QUANT.get(value, value)
    if plan_field == "targets" and isinstance(value, (list, tuple)):
        return ",".join(value)
    return value


def fix_overrides(config: Config, changes) -> list[str]:
    """A fix as the ``section.key=value`` overrides that apply it to ``config``.

    ``changes`` is a ``memory.Fix``, its Workload-field dict, or overrides already.
    A smaller micro-batch also raises gradient accumulation so the effective batch
    (micro_batch x grad_accum) stays at least what it was.
    """
    changes = getattr(changes, "changes", changes)
    if isinstance(changes, (list, tuple)):
        return list(changes)
    out = []
    for plan_field, value in changes.items():
        if plan_field not in PLAN_FIELDS:
            raise ValueError(f"A memory fix changes '{plan_field}', which no config key holds.")
        out.append(f"{PLAN_FIELDS[plan_field]}={_cli_value(_config_value(plan_field, value))}")
        if plan_field == "batch":
            out.append(f"training.grad_accum={max(1, -(-effective_batch(config) // int(value)))}")
    return out


def apply_fix(config: Config, fix) -> list[str]:
    """Apply a fix (see ``fix_overrides``) to ``config`` in place; returns the overrides applied.
    All or nothing: a value the config refuses raises ConfigError and leaves ``config`` as it was."""
    overrides = fix_overrides(config, fix)
    apply_overrides(config.copy(), overrides)  # refuse before touching the real one
    apply_overrides(config, overrides)
    return overrides


# --- the batch: micro_batch=auto and gradient_checkpointing=auto -----------------------------------
# Checkpointing and micro-batch "auto": a plan fits with margin within this share of the memory
# available. GPU: "fits with margin" (the estimate's 'fits' line is 90%). CPU: RAM is shared with
# the system and the user's other work. Checkpointing costs 27-49% of CPU speed at an equal micro-batch
# (benchmarks/micro_batch_sweep.py), so choose_batch turns it on only when micro-batch 4 needs it.
CHECKPOINT_SHARE = {"cpu": 0.25, "cuda": 0.80}


def _available(hardware, device: str) -> int:
    if device == "cuda" and hardware is not None and getattr(hardware, "gpus", None):
        return int(hardware.gpus[0].memory_free)
    if hardware is not None and getattr(hardware, "ram_available", None):
        return int(hardware.ram_available)
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        return 0


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


def effective_batch(config) -> int:
    """Rows per optimiser step (per device) the config asks for."""
    t = config.training
    return (t.micro_batch or AUTO_BASE) * t.grad_accum


def _divisors_down(n: int, cap: int) -> list[int]:
    return [m for m in range(min(n, cap), 0, -1) if n % m == 0]


def choose_batch(config, hardware=None, device: str | None = None, world_size: int = 1,
                 longest: int | None = None, engine: dict | None = None) -> Batch:
    """Micro-batch, accumulation and checkpointing for ``config`` on this hardware; explicit values win.

    ``world_size`` processes sharing one machine's RAM (CPU gloo runs) each get their share of it.
    ``longest``: the data's longest tokenized row when known (the trainer), else rows of max_seq_len.
    ``engine``: the run plan's {"attention", "batching"} (core.run_plan), resolved from the facts when absent.
    With batching=token_budget a micro-batch of m rows is a budget of m x max_seq_len tokens.
    """
    choice = _choose_batch(config, hardware, device, world_size, longest, engine)
    return _with_tokens(choice, config, engine or _engine(config, hardware, device))


def _engine(config, hardware, device: str | None) -> dict:
    device = device or ("cuda" if hardware is not None and getattr(hardware, "gpus", None) else "cpu")
    return _engine_fields(config, device, hardware)


def _with_tokens(choice: Batch, config, engine: dict) -> Batch:
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
    return Batch(1, choice.grad_accum, choice.gradient_checkpointing, tokens, reasons)


def _choose_batch(config, hardware, device, world_size, longest, engine) -> Batch:
    t = config.training
    device = device or ("cuda" if hardware is not None and getattr(hardware, "gpus", None) else "cpu")
    engine = engine or _engine(config, hardware, device)
    # the user's micro-batch; a token budget set in the config is the user's too: one packed row
    user_micro = 1 if engine.get("batching") == "token_budget" and t.tokens_per_batch else t.micro_batch
    total = effective_batch(config)
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
        accum = t.grad_accum if user_micro is not None else total // micro
        batch = Batch(micro, accum, checkpointing)
        return estimate_memory(workload_of(config, hardware, device=device, longest=longest, engine=engine,
                                                batch=batch)).total_bytes

    def fits(micro: int, checkpointing: bool) -> bool:
        return bool(available) and need(micro, checkpointing) <= budget

    wanted_ckpt = t.gradient_checkpointing
    if user_micro is not None:  # the user's micro-batch: only checkpointing may be auto
        if wanted_ckpt is not None:
            return Batch(user_micro, t.grad_accum, bool(wanted_ckpt),
                         reasons={"micro_batch": "set in the config", "gradient_checkpointing": "set in the config"})
        try:
            without = need(user_micro, False)
        except Exception as exc:  # unknown model dims: keep the faster default
            return Batch(user_micro, t.grad_accum, False, reasons={"micro_batch": "set in the config",
                         "gradient_checkpointing": f"off: no estimate ({str(exc)[:80]})"})
        on = bool(available) and without > budget
        return Batch(user_micro, t.grad_accum, on, reasons={
            "micro_batch": "set in the config",
            "gradient_checkpointing": f"{'on' if on else 'off'}: {without / GiB:.1f} GiB without it, "
                                      f"{'over' if on else 'within'} {where}"})

    candidates = _divisors_down(total, _micro_cap(config, device, engine))

    def choice(micro: int, checkpointing: bool, why_micro: str, why_ckpt: str) -> Batch:
        return Batch(micro, total // micro, checkpointing, reasons={"micro_batch": why_micro, "gradient_checkpointing": why_ckpt})

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
                     longest: int | None = None, engine: dict | None = None) -> list[Batch]:
    """Every split of the config's effective batch (and checkpointing, where auto) that the estimate says
    fits with margin, largest micro-batch first: what a measuring probe may choose among."""
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
            batch = Batch(micro, t.grad_accum if fixed else total // micro, checkpointing)
            try:
                need = estimate_memory(workload_of(config, hardware, device=device, longest=longest, engine=engine,
                                                        batch=batch)).total_bytes
            except Exception:
                continue
            if available and need <= budget:
                why = f"candidate: {need / 2**30:.1f} GiB estimated"
                out.append(_with_tokens(batch.replace(reasons={"micro_batch": why, "gradient_checkpointing": why}),
                                        config, engine))
    return out


def batch_for_run(run, config, hardware=None, device: str | None = None, world_size: int = 1,
                  resume: bool = False, longest: int | None = None, engine: dict | None = None) -> Batch:
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
            batch = Batch.from_record({"grad_accum": t.grad_accum, **first, "batching": "token_budget"},
                                      {"micro_batch": kept, "gradient_checkpointing": kept})
            if t.gradient_checkpointing is None:
                return batch
            return batch.replace(gradient_checkpointing=bool(t.gradient_checkpointing),
                                 reasons={**batch.reasons, "gradient_checkpointing": "set in the config"})
    return choose_batch(config, hardware, device, world_size, longest, engine)
