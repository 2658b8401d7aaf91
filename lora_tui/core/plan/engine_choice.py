"""The engine's choice rules: attention, batching and kernels for a config on a device, and the device
facts they read (``DeviceFacts``: device, compute capability, bf16, installed kernels, world size).

``engine_fields`` is the one place attention and batching are decided; the memory plan, the auto batch
and the run plan (core/plan/run_plan.py) all go through it, so they cannot disagree. Each rule returns
its choice with the reason for it.

Must not import torch, transformers or textual (the wizard imports it at start-up).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lora_tui.core.machine import kernels as installed_kernels
from lora_tui.core.plan.family_rules import family_attention, family_batching


@dataclass(frozen=True)
class DeviceFacts:
    """What the plan depends on besides the Config: read once, from NVML (no torch needed) or torch."""

    device: str = "cpu"  # "cpu" | "cuda"
    capability: tuple[int, int] | None = None  # CUDA compute capability of GPU 0
    bf16: bool = False  # the GPU computes in bf16 (Ampere or newer); CPU: core.config.effective_precision decides
    flash_attention: str | None = None  # "flash_attention_3" | "flash_attention_2" | None (installed package)
    liger: bool = False  # liger-kernel installed (used on CUDA only)
    world_size: int = 1
    free_bytes: int | None = None  # GPU 0's free memory, or available RAM on CPU (informative: the estimate reads hardware)

    @classmethod
    def from_hardware(cls, hardware=None, device: str | None = None, world_size: int = 1,
                      capability: tuple[int, int] | None = None, bf16: bool | None = None) -> "DeviceFacts":
        """Facts from a ``hardware.HardwareReport`` (NVML). ``capability`` / ``bf16``: torch's reading,
        used only where NVML had none (the trainer passes them)."""
        gpus = list(getattr(hardware, "gpus", None) or [])
        device = device or ("cuda" if gpus else "cpu")
        gpu = gpus[0] if gpus and device == "cuda" else None
        cap = tuple(gpu.compute_capability) if gpu is not None and gpu.compute_capability else capability
        if device == "cuda":
            has_bf16 = (cap[0] >= 8) if cap else bool(bf16 if bf16 is not None else getattr(gpu, "bf16", False))
            free = getattr(gpu, "memory_free", None)
            return cls("cuda", cap, has_bf16, installed_kernels.flash_attention_available(), installed_kernels.liger_available(), world_size, free)
        return cls("cpu", None, False, None, False, world_size, getattr(hardware, "ram_available", None))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["capability"] = list(self.capability) if self.capability else None
        return out


_DETECT = "detect"  # a fact not given: read it from what is installed


def choose_attention(wanted: str, device: str, capability: tuple[int, int] | None = None,
                     flash: str | None = _DETECT) -> tuple[str, str]:
    """``flash``: the installed FlashAttention (DeviceFacts), detected when not given."""
    if wanted != "auto":
        return wanted, "set in the config"
    if device != "cuda":
        return "sdpa", "CPU: PyTorch scaled-dot-product attention"
    flash = installed_kernels.flash_attention_available() if flash == _DETECT else flash
    major = capability[0] if capability else 0
    if flash == "flash_attention_3" and major >= 9:
        return flash, "FlashAttention 3 installed, Hopper GPU"
    if flash and major >= 8:
        return "flash_attention_2", "FlashAttention 2 installed, Ampere or newer GPU"
    return "sdpa", "no FlashAttention for this GPU: PyTorch SDPA" if flash else "FlashAttention not installed: PyTorch SDPA"


def choose_batching(wanted: str, device: str, attention: str) -> tuple[str, str]:
    if wanted != "auto":
        return wanted, "set in the config"
    if device == "cuda":
        # A GPU step wants thousands of tokens (issue 17: 8 short rows = ~700 tokens left an H200 at ~4 % of
        # its peak). Whole rows packed up to a token budget, each attending only to itself.
        how = ("FlashAttention varlen" if attention.startswith("flash_attention")
               else "position ids -> block-diagonal mask" if attention in ("sdpa", "flex_attention", "eager") else attention)
        return "token_budget", f"CUDA: micro-batches filled to a token budget, no padding ({how})"
    # CPU: a padding-free row of n tokens costs an n x n masked attention in SDPA, while length-grouped
    # rows waste little padding (measured on CPU: benchmarks/train_vs_trl.py).
    return "grouped", "CPU: length-grouped rows, little padding, no cross-row attention cost"


def choose_kernels(wanted: str, device: str, liger: bool | None = None, method: str = "sft") -> tuple[list[str], str]:
    """``liger``: liger-kernel is installed (DeviceFacts), detected when not given. ``method`` dpo / kto: the lean
    head with exact metrics at the answers' tokens (core/train/engine.py); TRL 1.16 deprecates Liger there."""
    if method != "sft":
        return ["lean_head"], f"{method}: the lean head scores the answers' tokens only; no Liger (TRL 1.16's {method.upper()} trainer deprecates it)"
    kernels = ["lean_head"]
    if wanted == "none":
        return kernels, "Liger off (set in the config)"
    if device == "cuda" and (installed_kernels.liger_available() if liger is None else liger):
        return kernels + ["liger"], "Liger RMSNorm / SwiGLU / RoPE kernels (liger-kernel installed)"
    if wanted == "liger":
        why = "liger-kernel is not installed (pip install 'lora-tui[gpu]')" if device == "cuda" else "Liger needs a CUDA GPU"
        return kernels, f"Liger asked for but not used: {why}"
    return kernels, "Liger: CUDA and liger-kernel needed" if device != "cuda" else "Liger not installed"


def engine_fields(config, facts: DeviceFacts) -> tuple[str, str, dict]:
    """(attention, batching, reasons) as the plan resolves them: the one place they are decided."""
    t = config.training
    attention, why_attention = choose_attention(t.attention, facts.device, facts.capability, flash=facts.flash_attention)
    # Gemma 2 / gpt-oss: no SDPA path in transformers
    attention, why_attention = family_attention(config, facts.device, facts.flash_attention, attention, why_attention)
    batching, why_batching = choose_batching(t.batching, facts.device, attention)
    if t.method != "sft":  # core.config.method_problem refuses an explicit other batching
        batching, why_batching = "grouped", (f"{t.method}: padded micro-batches (TRL 1.16's {t.method.upper()} trainer has no "
                                             "packing; its padding_free is switched off)"
                                             + ("; length-grouped" if t.method == "dpo" else
                                                "; rows in order (the KL term pairs neighbours)"))
    batching, why_batching = family_batching(config, batching, why_batching)  # Qwen3.5's linear attention: no packing
    return attention, batching, {"attention": why_attention, "batching": why_batching}
