"""Run configuration: dataclasses with a help text on every field, presets,
commented YAML, and ``section.key=value`` overrides.

Pure Python (yaml only): the wizard imports this at start-up, so nothing heavy here.
Values are checked by ``check_value`` so the CLI and the wizard refuse the same
bad input with the same words.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import re
import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from lora_tui.core.model.embedded import EMBEDDED_MODEL
from lora_tui.core.safe_read import UnsafeFile, clip, read_yaml

TARGET_CHOICES = ("qv", "attention", "all-linear")
LOAD_CHOICES = ("16bit", "8bit", "4bit")
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
SCHEDULER_CHOICES = ("cosine", "linear", "constant", "constant_with_warmup")
TEMPLATE_CHOICES = ("auto", "chatml", "alpaca")
BATCHING_CHOICES = ("auto", "grouped", "padding_free", "packed", "token_budget")
ATTENTION_CHOICES = ("auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3")
KERNEL_CHOICES = ("auto", "liger", "none")
STRATEGY_CHOICES = ("auto", "ddp", "fsdp")
METHOD_CHOICES = ("sft", "dpo", "kto")  # training.method: core/train/preference.py runs dpo and kto
DPO_LOSSES = ("sigmoid", "ipo", "hinge", "apo_zero")  # TRL DPOConfig.loss_type values offered here
KTO_LOSSES = ("kto", "apo_zero_unpaired")  # TRL KTOConfig.loss_type
LOSS_CHOICES = ("auto",) + DPO_LOSSES + KTO_LOSSES
TRACKERS = ("tensorboard", "trackio", "wandb", "mlflow")  # training.report_to (core/train/tracking.py runs them)
AUTO_WORDS = {"auto": None, "on": True, "off": False}  # for fields whose None means auto (metadata auto=True)
# Step counts above this are typos (1e30 was accepted: lr 3e-33, an ETA of 5e27 h); 10 million steps is weeks on any GPU.
MAX_STEPS = 10_000_000


def _f(default: Any, help: str, **rules: Any) -> Any:
    """A dataclass field carrying its help text and validation rules in metadata."""
    return field(default=default, metadata={"help": help, **rules})


@dataclass
class ModelSection:
    name: str = _f(EMBEDDED_MODEL, "Base model: 'embedded' (SmolLM2-135M-Instruct, offline), a hub id, or a local model directory.")
    load_in: str = _f("16bit", "How the frozen base weights are held: 16bit (fp32 on CPU), 8bit, or 4bit NF4 (QLoRA).", choices=LOAD_CHOICES)
    double_quant: bool = _f(True, "4-bit only: also quantise the quantisation constants (saves ~0.4 bit/param).")
    trust_remote_code: bool = _f(False, "Run Python code shipped with the model. Off unless you trust its author.")
    revision: str | None = _f(None, "Hub revision (branch, tag or commit) of the base model; empty for the default.")


@dataclass
class DataSection:
    train: str = _f("sample_data/train.jsonl", "Training data: JSONL, JSON, CSV, Parquet, a folder of .txt files, a save_to_disk folder, or a hub dataset id org/name[:split] (a local path of that name wins).")
    validation: str | None = _f("sample_data/valid.jsonl", "Validation data (a path or org/name[:split]) for data.train; empty to hold out val_fraction of the training rows. Another data.train given without it holds out too.")
    subset: str | None = _f(None, "Config name (subset) of a hub dataset, e.g. 'en'; empty for its default. Used for train and validation.")
    val_fraction: float = _f(0.05, "Share of training rows held out for validation when no validation file is given.", min=0.0, max=0.5)
    template: str = _f("auto", "Prompt format: the model's own chat template (auto), or ChatML / Alpaca for models without one.", choices=TEMPLATE_CHOICES)
    train_on_prompt: bool = _f(False, "Also train on prompt tokens. Off: only the answers (and their end token) are learned.")
    max_seq_len: int = _f(512, "Longest sequence in tokens; longer rows are truncated. Memory grows with it.", min=16, max=131072)


@dataclass
class LoraSection:
    r: int = _f(16, "Rank of the adapter matrices: capacity (and size) of what the adapter can learn. 8-64 is typical.", min=1, max=1024)
    alpha: int = _f(32, "Scaling: updates are multiplied by alpha/r. alpha = 2r is a common, strong choice.", min=1, max=4096)
    dropout: float = _f(0.05, "Dropout on the adapter's input during training; 0.05-0.1 guards against overfitting.", min=0.0, max=0.9)
    targets: str = _f("all-linear", "Layers that get adapters: qv (query/value), attention (q,k,v,o), all-linear (attention + MLP), or a comma list of module names.")
    use_rslora: bool = _f(False, "Rank-stabilised LoRA: scale by alpha/sqrt(r), which keeps high ranks learning.")
    use_dora: bool = _f(False, "DoRA: learn magnitude and direction separately; sometimes better, slower per step.")


@dataclass
class TrainingSection:
    learning_rate: float = _f(1e-4, "Peak learning rate of AdamW. LoRA: ~1e-4; QLoRA: ~2e-4.", min=1e-7, max=1e-1)
    epochs: float = _f(3.0, "Passes over the training data (ignored when max_steps > 0). 1-3 is typical.", min=0.01, max=1000)
    max_steps: int = _f(-1, "Stop after this many optimiser steps; -1 to use epochs instead.", min=-1, max=MAX_STEPS)
    micro_batch: int | None = _f(None, "Rows per forward pass: a memory / speed trade, the learning depends on the effective batch. auto: the largest that fits with margin, keeping an effective batch of 4 x grad_accum rows.", min=1, max=4096, auto=True)
    grad_accum: int = _f(4, "Micro-batches accumulated per optimiser step (effective batch = micro_batch x grad_accum; with micro_batch auto, 4 x grad_accum rows, re-split to fit).", min=1, max=4096)
    warmup_ratio: float = _f(0.03, "Share of steps spent ramping the learning rate up from zero.", min=0.0, max=0.5)
    scheduler: str = _f("cosine", "Learning-rate schedule after warm-up.", choices=SCHEDULER_CHOICES)
    weight_decay: float = _f(0.01, "AdamW weight decay on adapter weights.", min=0.0, max=1.0)
    max_grad_norm: float = _f(1.0, "Clip gradients to this norm (0 to disable).", min=0.0)
    precision: str = _f("auto", "Compute precision: auto = bf16 where the GPU supports it, else fp16; on CPU bf16 where the processor has native bf16 (16-bit loads), else fp32.", choices=PRECISION_CHOICES)
    gradient_checkpointing: bool | None = _f(None, "Recompute activations in the backward pass: much less memory, slower per step. auto: on when the estimate says the run needs it.", auto=True)
    batching: str = _f("auto", "How rows share a micro-batch: token_budget (whole rows packed padding-free up to tokens_per_batch tokens, each row attending only to itself), grouped (similar lengths, padded), padding_free (rows concatenated, no padding), packed (TRL best-fit packing), auto (token_budget on CUDA, grouped on CPU).", choices=BATCHING_CHOICES)
    tokens_per_batch: int | None = _f(None, "With batching=token_budget: tokens per micro-batch (whole rows packed up to it; effective batch = tokens_per_batch x grad_accum tokens per step). auto: micro-batch rows x max_seq_len, the largest that fits with margin.", min=16, max=1048576, auto=True)
    attention: str = _f("auto", "Attention implementation: auto (FlashAttention 2/3 where installed and supported, else sdpa), sdpa, eager, flash_attention_2, flash_attention_3.", choices=ATTENTION_CHOICES)
    kernels: str = _f("auto", "Fused kernels: auto (Liger RMSNorm/SwiGLU/RoPE on CUDA when liger-kernel is installed), liger, none.", choices=KERNEL_CHOICES)
    probe: str = _f("auto", "Before step 1, time a few steps of each candidate plan (micro-batch or token budget, checkpointing, Liger) and keep the fastest that fits; a heavier plan must be 5% faster. Cached per GPU, model and shape. auto: on CUDA only; on: also on CPU; off: the estimate decides.", choices=("auto", "on", "off"))
    eval_steps: int = _f(50, "Evaluate on the validation split every N steps (0: only at the start and end).", min=0, max=MAX_STEPS)
    save_steps: int = _f(50, "Write a resumable checkpoint every N steps (0: only when stopping or finishing).", min=0, max=MAX_STEPS)
    logging_steps: int = _f(1, "Record loss, learning rate and throughput every N steps.", min=1, max=MAX_STEPS)
    early_stopping_patience: int = _f(0, "Stop when eval loss has not improved for N evaluations (0: off).", min=0, max=MAX_STEPS)
    seed: int = _f(42, "Random seed for shuffling, dropout and adapter initialisation.", min=0, max=2**32 - 1)
    report_to: str = _f("none", "Also send metrics to: none, tensorboard (logs in <run>/tensorboard; `tensorboard --logdir runs/`), trackio, wandb, mlflow, or a comma list.")
    devices: str = _f("auto", "Devices to train on: auto (every visible GPU), a count (4), or GPU indices (0,2). Without a GPU a count above 1 runs that many CPU processes (gloo).")
    strategy: str = _f("auto", "With several GPUs: ddp (a full copy per GPU, bigger effective batch), fsdp (weights sharded over the GPUs, for models one GPU cannot hold; works with 4bit), or auto (ddp when the estimate fits one GPU, else fsdp).", choices=STRATEGY_CHOICES)
    method: str = _f("sft", "What is learnt: sft (the answers), dpo (the chosen answer over the rejected one, pairs), kto (answers labelled good / bad).", choices=METHOD_CHOICES)
    beta: float = _f(0.1, "dpo / kto: how far the adapter may move from where it started (the reference); higher stays closer. 0.1 is typical.", min=0.001, max=10.0)
    loss_type: str = _f("auto", "dpo / kto loss: auto (dpo: sigmoid, kto: kto), sigmoid (DPO paper), ipo, hinge, apo_zero; kto or apo_zero_unpaired for kto.", choices=LOSS_CHOICES)
    init_adapter: str | None = _f(None, "Start from this adapter instead of a fresh one: a finished run (name or folder), usually the SFT run before dpo / kto.")


@dataclass
class OutputSection:
    run_name: str = _f("", "Name of the run directory under runs_dir; empty for <model>-<date>-<time>.")
    runs_dir: str = _f("", "Folder that holds run directories; empty: $LORA_TUI_RUNS, else ./runs (where `lora-tui runs` and `attach` look).")


@dataclass
class Config:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    lora: LoraSection = field(default_factory=LoraSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    output: OutputSection = field(default_factory=OutputSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def copy(self) -> "Config":
        return config_from_dict(self.to_dict())


SECTION_HELP = {
    "model": "Which base model to adapt and how to load it.",
    "data": "Training and validation data, and how rows become tokens.",
    "lora": "The adapter: where it attaches and how large it is.",
    "training": "Optimiser, schedule, batch, precision, evaluation and checkpoints.",
    "output": "Where the run directory goes.",
}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # From the seed guides: LoRA on a 16-bit base ...
    "lora": {"model": {"load_in": "16bit"}, "lora": {"r": 16, "alpha": 32, "dropout": 0.05}, "training": {"learning_rate": 1e-4}},
    # ... QLoRA on a 4-bit NF4 base with double quantisation (higher r compensates for quantisation loss).
    "qlora": {"model": {"load_in": "4bit", "double_quant": True}, "lora": {"r": 64, "alpha": 16, "dropout": 0.1}, "training": {"learning_rate": 2e-4}},
    "lora-8bit": {"model": {"load_in": "8bit"}, "lora": {"r": 16, "alpha": 32, "dropout": 0.05}, "training": {"learning_rate": 1e-4}},
}
PRESET_HELP = {
    "lora": "LoRA: 16-bit base, r 16, alpha 32, dropout 0.05, lr 1e-4. Best quality when memory allows.",
    "qlora": "QLoRA: 4-bit NF4 base + double quant, r 64, alpha 16, dropout 0.1, lr 2e-4. ~1/4 of the base memory.",
    "lora-8bit": "LoRA on an 8-bit base: r 16, alpha 32, lr 1e-4. Between the two in memory and speed.",
}


class ConfigError(ValueError):
    """A config file, key or value is wrong; the message says which and how to fix it."""


def section_fields(section: str) -> dict[str, dataclasses.Field]:
    cls = {f.name: f.type for f in fields(Config)}
    if section not in cls:
        raise ConfigError(f"Unknown config section '{clip(section)}'. Sections: {', '.join(SECTION_HELP)}.")
    return {f.name: f for f in fields(getattr(Config(), section))}


def field_help(section: str, key: str) -> str:
    return section_fields(section)[key].metadata.get("help", "")


def _type_name(f: dataclasses.Field) -> str:
    return str(f.type).replace("typing.", "")


class DistributedError(ValueError):
    """A device, node or strategy setting that cannot work here; the message says how to fix it."""


def parse_devices(value) -> str:
    """Normalise ``training.devices``: 'auto', a count ('4'), or GPU indices ('0,2,3')."""
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    text = re.sub(r"[\s\[\]]", "", str(value)).lower()
    if text in ("", "auto", "all"):
        return "auto"
    if re.fullmatch(r"\d+", text) and "[" not in str(value):
        if int(text) < 1:
            raise DistributedError("training.devices must be at least 1 (or 'auto').")
        return str(int(text))
    parts = [p for p in text.split(",") if p != ""]
    if parts and all(p.isdigit() for p in parts):
        if len(set(parts)) != len(parts):
            raise DistributedError(f"training.devices lists a GPU twice: '{value}'.")
        # A one-element list means "that GPU", which is not the count "N": keep the trailing comma.
        return ",".join(str(int(p)) for p in parts) + ("," if len(parts) == 1 else "")
    raise DistributedError(f"training.devices must be 'auto', a count such as 4, or GPU indices such as 0,1; not '{value}'.")


def normalise_report_to(value) -> str:
    """'none', one tracker, or a comma list ('tensorboard,wandb'); a YAML list is accepted too."""
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
    else:
        items = str(value).strip().strip("[]").replace(";", ",").split(",")
    names = [i.strip().strip("'\"").lower() for i in items if i.strip().strip("'\"")]
    if not names or names == ["none"]:
        return "none"
    unknown = [n for n in names if n not in TRACKERS]
    if unknown or "none" in names:
        raise ConfigError(f"training.report_to: '{', '.join(unknown) or 'none'}' is not a tracker here. "
                          f"Use none, or one or more of {', '.join(TRACKERS)} (comma separated).")
    return ",".join(dict.fromkeys(names))


def check_value(section: str, key: str, value: Any) -> Any:
    """Convert ``value`` (a YAML scalar or string typed by a user) to the field's type,
    check its rules, and return it. Raises ConfigError with a plain reason."""
    all_fields = section_fields(section)
    if key not in all_fields:
        raise ConfigError(f"Unknown key '{clip(f'{section}.{key}')}'. Keys in '{section}': {', '.join(all_fields)}.")
    if (section, key) == ("training", "report_to"):  # a name or a list of names
        return normalise_report_to(value)
    f = all_fields[key]
    kind = _type_name(f)
    where = f"{section}.{key}"
    if f.metadata.get("auto") and isinstance(value, str) and value.strip().lower() in AUTO_WORDS:
        word = value.strip().lower()
        if word == "auto" or kind.startswith("bool"):  # on / off only for switches
            return AUTO_WORDS[word]
    if isinstance(value, str):
        text = value.strip()
        if "| None" in kind and text.lower() in ("", "none", "null", "~"):
            return None
        if kind.startswith(("int", "float")):
            try:
                value = float(text) if any(c in text.lower() for c in ".en") else int(text)
            except ValueError:
                what = "a whole number" if kind.startswith("int") else "a number"
                what += " or auto" if f.metadata.get("auto") else ""
                raise ConfigError(f"{where} must be {what}, not '{clip(value)}'.") from None
        elif not kind.startswith("str"):
            try:
                value = yaml.safe_load(text) if text else None
            except yaml.YAMLError:
                raise ConfigError(f"{where}: '{clip(value)}' is not a valid value.") from None
        else:
            value = text
    if value is None:
        if "| None" in kind:
            return None
        raise ConfigError(f"{where} needs a value ({kind}).")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, not '{clip(value)}'.")
    if kind.startswith("bool"):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, not '{clip(value)}'.")
    elif kind.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{where} must be a whole number, not '{clip(value)}'.")
        value = int(value)
    elif kind.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, not '{clip(value)}'.")
        value = float(value)
    elif kind.startswith("str"):
        value = str(value)
    rules = f.metadata
    if "choices" in rules and value not in rules["choices"]:
        raise ConfigError(f"{where} must be one of {', '.join(rules['choices'])}, not '{clip(value)}'.")
    if "min" in rules and value < rules["min"]:
        raise ConfigError(f"{where} must be at least {rules['min']}, not {value}.")
    if "max" in rules and value > rules["max"]:
        shown = f"{value:.3g}" if abs(value) >= 1e9 else value  # 1e30, not 31 digits
        bound = f"{rules['max']:,}" if isinstance(rules["max"], int) else rules["max"]
        raise ConfigError(f"{where} must be at most {bound}, not {shown}.")
    if where == "training.devices":
        try:
            value = parse_devices(value)
        except DistributedError as exc:
            raise ConfigError(str(exc)) from None
    if where == "lora.targets" and not value.strip():
        raise ConfigError("lora.targets needs qv, attention, all-linear, or a comma list of module names.")
    if where == "model.name" and not value.strip():
        raise ConfigError("model.name needs a model: 'embedded', a hub id, or a local directory.")
    return value


def set_value(config: Config, dotted: str, value: Any) -> None:
    if "." not in dotted:
        raise ConfigError(f"'{clip(dotted)}' is not section.key (e.g. training.max_steps=20).")
    section, key = dotted.split(".", 1)
    value = check_value(section, key, value)  # first: an unknown section is a ConfigError, not an AttributeError
    setattr(getattr(config, section), key, value)


def set_training_data(config: Config, train: str) -> None:
    """Point ``data.train`` at ``train``. A validation file belongs to the training data it came with (the
    sample's valid.jsonl to its train.jsonl): new training data drops it, so ``data.val_fraction`` of the new
    rows is held out instead. The overrides, a config file and the wizard all change the data through here;
    whoever gives ``data.validation`` together with ``data.train`` sets it after this."""
    if train != config.data.train:
        config.data.validation = None
    config.data.train = train


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` strings in order (``data.train`` without ``data.validation``: see
    ``set_training_data``)."""
    pairs = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"Override '{clip(item)}' is not section.key=value (e.g. lora.r=32).")
        dotted, value = item.split("=", 1)
        pairs.append((dotted.strip(), value))
    keeps_validation = any(dotted == "data.validation" for dotted, _ in pairs)
    for dotted, value in pairs:
        if dotted == "data.train" and not keeps_validation:
            set_training_data(config, check_value("data", "train", value))
        else:
            set_value(config, dotted, value)
    return config


def apply_preset(config: Config, name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"Unknown preset '{name}'. Presets: {', '.join(PRESETS)}.")
    for section, values in PRESETS[name].items():
        for key, value in values.items():
            setattr(getattr(config, section), key, check_value(section, key, value))
    return config


def config_from_dict(data: dict | None, source: str = "config", base: Config | None = None) -> Config:
    """Build a Config from a mapping; keys missing from it keep the values of ``base`` (defaults if None)."""
    config = base.copy() if base is not None else Config()
    for section, values in (data or {}).items():
        if section not in SECTION_HELP:
            raise ConfigError(f"{source}: unknown section '{clip(section)}'. Sections: {', '.join(SECTION_HELP)}.")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section '{clip(section)}' must be a mapping of keys to values.")
        for key, value in values.items():
            try:
                checked = check_value(section, key, value)
            except ConfigError as exc:
                raise ConfigError(f"{source}: {exc}") from None
            if (section, key) == ("data", "train") and "validation" not in values:
                set_training_data(config, checked)  # the base's validation file belonged to the base's data
            else:
                setattr(getattr(config, section), key, checked)
    return config


MAX_CONFIG_BYTES = 4 * 2**20  # a config is a few KB; anything bigger is the wrong file (or /dev/zero)


def load_config(path: str | Path, base: Config | None = None) -> Config:
    """Read a config file: special files refused before opening, at most MAX_CONFIG_BYTES read,
    YAML aliases refused (see ``safe_read.load_yaml``); every fault is one ConfigError line."""
    path = Path(path)
    try:
        data = read_yaml(path, MAX_CONFIG_BYTES, "a config file", "point at your config YAML file")
    except UnsafeFile as exc:
        raise ConfigError(str(exc)) from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: a config is a mapping of sections (model, data, lora, training, output).")
    return config_from_dict(data, source=str(path), base=base)


def _scalar(value: Any) -> str:
    out = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip()
    return out[:-4].strip() if out.endswith("\n...") or out.endswith(" ...") else out.replace("\n...", "")


def config_to_yaml(config: Config, header: str | None = None) -> str:
    """Commented YAML: every key preceded by its help text."""
    buf = io.StringIO()
    if header:
        for line in header.splitlines():
            buf.write(f"# {line}\n".replace("# \n", "#\n"))
        buf.write("\n")
    for section, help_text in SECTION_HELP.items():
        buf.write(f"# {help_text}\n{section}:\n")
        for f in fields(getattr(config, section)):
            buf.write(f"  # {f.metadata['help']}\n")
            value = getattr(getattr(config, section), f.name)
            buf.write(f"  {f.name}: {'auto' if value is None and f.metadata.get('auto') else _scalar(value)}\n")
        buf.write("\n")
    return buf.getvalue()


def save_config(config: Config, path: str | Path, header: str | None = None) -> None:
    Path(path).write_text(config_to_yaml(config, header), encoding="utf-8")


@functools.cache  # read once: estimates ask for it per candidate plan, and /proc/cpuinfo is large on big servers
def cpu_has_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX), read from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def effective_precision(config: Config, device: str, bf16_supported: bool = False) -> str:
    """CPU: bf16 where the CPU has native bf16 (16-bit loads), else fp32; GPU: bf16 where it has it, else fp16."""
    wanted = config.training.precision
    if device == "cpu":
        if wanted == "auto":
            # Measured (issue 9): on a CPU with native bf16 (AVX512-BF16 / AMX) a bf16 run trained 232 non-padding
            # tokens/s vs 52 in fp32, peak RSS 2.0 vs 2.7 GiB. 4-bit on CPU keeps fp32 adapters (see training.py).
            return "bf16" if config.model.load_in == "16bit" and cpu_has_bf16() else "fp32"
        return "bf16" if wanted == "bf16" else "fp32"
    if wanted == "auto":
        return "bf16" if bf16_supported else "fp16"
    return wanted


def loss_for(config: Config) -> str | None:
    """The TRL loss_type a dpo / kto run trains with (loss_type auto: sigmoid / kto); None for sft."""
    t = config.training
    if t.method == "sft":
        return None
    if t.loss_type == "auto":
        return "sigmoid" if t.method == "dpo" else "kto"
    return t.loss_type


def method_problem(config: Config) -> str | None:
    """Why the training.method settings cannot run together (one line with the fix), or None."""
    t = config.training
    losses = {"dpo": DPO_LOSSES, "kto": KTO_LOSSES}.get(t.method)
    if losses and t.loss_type != "auto" and t.loss_type not in losses:
        return (f"training.loss_type={t.loss_type} is not a {t.method} loss. Fix: one of auto, "
                f"{', '.join(losses)} (or training.method={'kto' if t.method == 'dpo' else 'dpo'}).")
    if t.method == "sft" and t.loss_type != "auto":
        return (f"training.loss_type={t.loss_type} is for dpo / kto, and training.method is sft. "
                "Fix: training.method=dpo (or kto), or training.loss_type=auto.")
    if losses and t.batching not in ("auto", "grouped"):
        return (f"training.batching={t.batching}: TRL's {t.method.upper()} trainer pads each micro-batch (1.16 has no "
                "packing or padding-free for it). Fix: training.batching=auto.")
    if t.method == "kto" and loss_for(config) == "kto" and t.micro_batch == 1:
        return ("training.micro_batch=1 with kto: the KL term pairs each row with another row of its micro-batch. "
                "Fix: training.micro_batch=2 or more (or auto).")
    return None


def _cli_value(value: Any) -> str:
    """A value as `section.key=value` text that check_value reads back to the same value."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") and "e" not in text else text
    return str(value)


def config_overrides(config: Config, base: Config | None = None) -> list[str]:
    """``section.key=value`` for every field of ``config`` that differs from ``base`` (defaults)."""
    base = base or Config()
    out = []
    for section in SECTION_HELP:
        ours, theirs = getattr(config, section), getattr(base, section)
        for f in fields(ours):
            value = getattr(ours, f.name)
            if value != getattr(theirs, f.name):
                out.append(f"{section}.{f.name}={_cli_value(value)}")
    return out


def train_command(config: Config | None = None, config_path: str | None = None, *, preset: str | None = None,
                  overrides: list[str] | None = None) -> str:
    """The headless `lora-tui train` line: ``--preset``, the config file, then ``overrides``. Without
    ``overrides``: `lora-tui train CONFIG.yaml` when the config was saved unchanged, else the overrides
    that give ``config`` on top of the defaults (the wizard's command). A key given twice keeps only its
    last value, so the line says each setting once (`lora-tui estimate`'s fixes)."""
    if overrides is None:
        overrides = config_overrides(config) if config is not None and not config_path else []
    last = {item.split("=", 1)[0]: n for n, item in enumerate(overrides)}
    kept = [item for n, item in enumerate(overrides) if last[item.split("=", 1)[0]] == n]
    words = ["lora-tui", "train"] + (["--preset", preset] if preset else []) + ([str(config_path)] if config_path else [])
    return " ".join(shlex.quote(w) for w in words + kept)


def matching_preset(config: Config) -> str | None:
    """The preset whose every value the config has, or None (custom)."""
    for name, sections in PRESETS.items():
        if all(getattr(getattr(config, section), key) == value
               for section, values in sections.items() for key, value in values.items()):
            return name
    return None
