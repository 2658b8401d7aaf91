"""The memory plan of a run: the one place that translates a Config into the
estimator's ``MemoryPlan`` and a memory fix back into ``section.key=value`` overrides.

The wizard's Hardware step and ``lora-tui estimate`` both go through here, so a fix
means the same thing on screen and on the command line, and what the CLI prints is
exactly what the wizard applies (through ``core.config.apply_overrides``).

To teach it a new knob: add the MemoryPlan field -> config key to ``PLAN_FIELDS``, read
it in ``plan_from_config``, and (when the plan's value differs from the config's) add a
case to ``_config_value``.

Must not: import torch or textual (the wizard imports this at start-up), print, or
change a Config except through ``apply_overrides``.
"""

from __future__ import annotations

from lora_tui.core.config import Config, _cli_value, apply_overrides

# MemoryPlan field -> the Config key that holds it (one vocabulary: the config's).
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
              "training.tokens_per_batch")
QUANT_FOR_LOAD = {"16bit": "none", "8bit": "8bit", "4bit": "4bit"}
LOAD_FOR_QUANT = {"none": "16bit", "16bit": "16bit", "8bit": "8bit", "4bit": "4bit"}
DTYPE_FOR_PRECISION = {"auto": None, "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _get(config: Config, dotted: str):
    section, key = dotted.split(".", 1)
    return getattr(getattr(config, section), key)


def plan_from_config(config: Config, hardware=None, model: str | None = None, device: str | None = None,
                     longest: int | None = None, engine: dict | None = None):
    """The MemoryPlan of the run this Config would start, on this hardware (GPU 0 when there is one,
    like the trainer), optionally for another model (the wizard's catalogue table) or forced onto
    ``device`` ("cpu" / "cuda", as `lora-tui estimate --device` does).

    ``longest``: the data's longest tokenized row, when known (the trainer knows it). No micro-batch is
    longer than its longest row (grouped and padding-free batches), so the plan uses it instead of
    ``data.max_seq_len``; packed rows are filled to ``max_seq_len`` whatever the data, and a token budget's
    micro-batch is one row of ``training.tokens_per_batch`` tokens (auto: micro-batch x max_seq_len).

    ``engine``: {"attention", "batching"} as the run plan resolved them (core.run_plan); else resolved here
    from the same device facts (compute capability, installed kernels) the trainer uses.
    """
    from lora_tui.core.plan.memory import MemoryPlan

    device = device or ("cuda" if hardware is not None and hardware.gpus else "cpu")
    engine = engine or _engine_fields(config, device, hardware)
    batching = engine["batching"]
    batch = _batch_fields(_for_model(config, model), hardware, device, longest, engine)
    seq_len = planned_seq_len(config, batching, longest)
    tokens = batch.pop("tokens", None)
    if batching == "token_budget":
        # One padding-free row of the budget's tokens. Auto: micro-batch rows of max_seq_len, which the
        # estimator multiplies out itself, so a fix on the max length or the micro-batch means what it says.
        explicit = config.training.tokens_per_batch
        batch["batch"] = max(1, int(explicit or tokens or batch["batch"] * seq_len) // seq_len)
        batch["tokens_per_batch"] = int(explicit) if explicit else None
    return MemoryPlan(
        model=model or config.model.name,
        quant=QUANT_FOR_LOAD[config.model.load_in],
        double_quant=config.model.double_quant,
        r=config.lora.r,
        targets=config.lora.targets,
        seq_len=seq_len,
        **batch,
        device=device,
        **_precision_fields(config, device),
        dropout=config.lora.dropout,
        **_memory_engine(engine),
        liger=_uses_liger(config, device),
    )


def _uses_liger(config: Config, device: str) -> bool:
    """Liger's kernels in the step (CUDA, liger-kernel installed, kernels not 'none'), as the run plan decides."""
    from lora_tui.core.train.engine import choose_kernels

    return device == "cuda" and "liger" in choose_kernels(config.training.kernels, device)[0]


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
    from lora_tui.core.config import cpu_has_bf16, effective_precision

    if config.training.precision == "auto":
        return {"dtype": None, "cpu_native_bf16": device == "cpu" and cpu_has_bf16()}
    return {"dtype": DTYPE_FOR_PRECISION[effective_precision(config, device, bf16_supported=True)]}


def _engine_fields(config: Config, device: str, hardware=None) -> dict:
    """Batching and attention as the run plan resolves them (core/plan/run_plan.py), for this hardware's facts."""
    from lora_tui.core.plan.run_plan import DeviceFacts, engine_fields

    attention, batching, _ = engine_fields(config, DeviceFacts.from_hardware(hardware, device))
    return {"batching": batching, "attention": attention}


def _memory_engine(engine: dict) -> dict:
    """The plan's attention / batching in the estimator's vocabulary (memory.BATCHING / ATTENTION)."""
    from lora_tui.core.plan.memory import ATTENTION, BATCHING

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


def _batch_fields(config: Config, hardware, device: str, longest: int | None = None, engine: dict | None = None) -> dict:
    """Micro-batch and checkpointing, with auto (None) resolved the way the trainer resolves them."""
    t = config.training
    fixed = t.micro_batch is not None or (engine or {}).get("batching") == "token_budget" and t.tokens_per_batch
    if fixed and t.gradient_checkpointing is not None:
        return {"batch": t.micro_batch or 1, "grad_checkpointing": bool(t.gradient_checkpointing)}
    from lora_tui.core.plan.auto_batch import choose_batch

    batch = choose_batch(config, hardware, device, longest=longest, engine=engine)
    return {"batch": batch.micro_batch, "grad_checkpointing": batch.gradient_checkpointing, "tokens": batch.tokens_per_batch}


memory_plan_for = plan_from_config  # the earlier name, kept for callers outside this package


def plan_inputs(config: Config) -> tuple:
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

    ``changes`` is a ``memory.Fix``, its MemoryPlan-field dict, or overrides already.
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
            from lora_tui.core.plan.auto_batch import effective_batch

            out.append(f"training.grad_accum={max(1, -(-effective_batch(config) // int(value)))}")
    return out


def apply_fix(config: Config, fix) -> list[str]:
    """Apply a fix (see ``fix_overrides``) to ``config`` in place; returns the overrides applied.
    All or nothing: a value the config refuses raises ConfigError and leaves ``config`` as it was."""
    overrides = fix_overrides(config, fix)
    apply_overrides(config.copy(), overrides)  # refuse before touching the real one
    apply_overrides(config, overrides)
    return overrides
