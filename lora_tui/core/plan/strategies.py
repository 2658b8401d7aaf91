"""Per-GPU memory of a run spread over several GPUs, for each strategy.

Built on ``estimate_memory`` (one device): DDP keeps a full copy of everything on each GPU plus
its gradient buckets; FSDP shards the weights, the adapter's gradients and the optimizer
states over the GPUs and gathers one wrapped layer (two with prefetch) at a time; activations
stay per GPU in both. Pure Python: no torch, no textual.
"""

from __future__ import annotations

from lora_tui.core.units import GiB


def per_gpu_bytes(plan, world_size: int) -> dict[str, int]:
    """{'single': bytes, 'ddp': bytes per GPU, 'fsdp': bytes per GPU} for ``world_size`` GPUs."""
    from lora_tui.core.plan.memory import estimate_memory

    estimate = estimate_memory(plan)
    parts = estimate.breakdown
    world = max(int(world_size), 1)
    sharded_keys = ("base_weights", "lora_weights", "lora_gradients", "optimizer_states")
    sharded = sum(parts.get(k, 0) for k in sharded_keys)
    layers = max(_layers(plan), 1)
    # DDP: a second copy of the trainable gradients in its all-reduce buckets.
    ddp = estimate.total_bytes + (parts.get("lora_gradients", 0) if world > 1 else 0)
    # FSDP: every sharded part split over the ranks, plus the gathered layer(s) being computed.
    gathered = 2 * parts.get("base_weights", 0) // layers
    fsdp = estimate.total_bytes - sharded + sharded // world + (gathered if world > 1 else 0)
    return {"single": estimate.total_bytes, "ddp": int(ddp), "fsdp": int(fsdp)}


def _layers(plan) -> int:
    try:
        return int(plan.dims().layers)
    except Exception:
        return 1


def describe(figures: dict[str, int], world_size: int) -> str:
    """One line: 'per GPU on 4 GPUs: DDP 18.2 GiB, FSDP 6.1 GiB'."""
    return (f"per GPU on {world_size} GPUs: DDP {figures['ddp'] / GiB:.1f} GiB, "
            f"FSDP {figures['fsdp'] / GiB:.1f} GiB (one GPU alone: {figures['single'] / GiB:.1f} GiB)")
