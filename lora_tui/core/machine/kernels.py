"""Which optional speed libraries are installed here: Liger kernels, FlashAttention, Triton.

Read from the installed packages' metadata and import specs, never by importing them (no torch).
The run plan's choice rules (core/plan/engine_choice.py) and ``lora-tui doctor`` read these.
"""

from __future__ import annotations

import importlib.util


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def liger_available() -> bool:
    return installed("liger_kernel")


def flash_attention_available() -> str | None:
    """The newest FlashAttention package installed: "flash_attention_3", "flash_attention_2" or None."""
    if installed("flash_attn_interface"):
        return "flash_attention_3"
    if installed("flash_attn"):
        return "flash_attention_2"
    return None


def kernel_libraries() -> dict:
    """Versions of the optional speed libraries (None: not installed), for `lora-tui doctor`."""
    from importlib import metadata

    out = {}
    for name in ("liger-kernel", "flash-attn", "flash-attn-3", "triton"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def kernels_line(libraries: dict, cuda: bool) -> str:
    """One doctor line: what the engine will use, and how to get what is missing."""
    liger = libraries.get("liger-kernel")
    flash = libraries.get("flash-attn-3") or libraries.get("flash-attn")
    parts = [f"Liger {liger}" + (" (used on CUDA)" if cuda else " (CUDA only: not used here)") if liger
             else "Liger not installed" + (": pip install 'lora-tui[gpu]'" if cuda else " (CUDA only)"),
             f"FlashAttention {flash}" if flash else "FlashAttention not installed (SDPA is used)"]
    return "; ".join(parts)
