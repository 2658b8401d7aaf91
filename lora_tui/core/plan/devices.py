"""More than one device: how many processes a run needs here, with which strategy (DDP or FSDP),
and the accelerate config that starts them.

``plan_devices`` is what the trainer process (``trainer_main``) asks: with one process it trains
itself; with more it writes ``accelerate_config.yaml`` into the run directory (reusable by hand) and
starts the ranks (core/train/distributed_run.py). ``strategy_line`` / ``per_gpu_summary`` show the
plan in `lora-tui doctor`, the hardware screen and `lora-tui estimate`.

Pure Python at import (yaml inside a function); torch only inside ``visible_gpu_count``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from lora_tui.core.config import MAX_CONFIG_BYTES, DistributedError, parse_devices
from lora_tui.core.machine import hardware as machine_hardware
from lora_tui.core.plan.workload import workload_of
from lora_tui.core.plan.strategies import describe, per_gpu_bytes
from lora_tui.core.safe_read import UnsafeFile, read_yaml
from lora_tui.core.units import gib

ACCELERATE_CONFIG = "accelerate_config.yaml"
DEFAULT_PORT = 29500


@dataclass
class Nodes:
    """Where this machine sits in a multi-machine run (``--nodes/--node-rank/--master``)."""

    count: int = 1
    rank: int = 0
    master: str | None = None  # ADDR:PORT of the node-rank-0 machine

    def check(self) -> "Nodes":
        if self.count < 1 or not 0 <= self.rank < self.count:
            raise DistributedError(f"--node-rank must be between 0 and {self.count - 1} (got {self.rank}) with --nodes {self.count}.")
        if self.count > 1 and not self.master:
            raise DistributedError("--nodes > 1 needs --master ADDR:PORT (the node-rank-0 machine, reachable from every node).")
        if self.master:
            self.address()
        return self

    def address(self) -> tuple[str, int]:
        if not self.master:
            return "127.0.0.1", 0  # 0: accelerate picks a free port on this machine
        host, _, port = self.master.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise DistributedError(f"--master must be ADDR:PORT, e.g. 10.0.0.1:{DEFAULT_PORT}; not '{self.master}'.")
        return host.strip("[]"), int(port)


@dataclass
class DevicePlan:
    processes: int  # ranks on this machine
    cpu: bool
    gpu_ids: list[int] | None = None  # None: every visible GPU
    strategy: str = "single"  # single | ddp | fsdp
    reason: str = ""
    nodes: Nodes = field(default_factory=Nodes)
    per_gpu: dict = field(default_factory=dict)  # strategy -> estimated bytes per GPU

    @property
    def world_size(self) -> int:
        return self.processes * self.nodes.count

    @property
    def backend(self) -> str:
        return "gloo" if self.cpu else "nccl"

    @property
    def launches(self) -> bool:
        """True when the trainer must start workers instead of training itself."""
        return self.world_size > 1


def count_processes(devices: str, gpu_count: int) -> tuple[int, list[int] | None, bool]:
    """(ranks on this machine, GPU ids or None for all, CPU?) for ``training.devices``."""
    devices = parse_devices(devices)
    if devices == "auto":
        return (max(gpu_count, 1), None, gpu_count == 0)
    if "," in devices:
        ids = [int(p) for p in devices.split(",") if p]
        if gpu_count == 0:
            raise DistributedError(f"training.devices={devices.rstrip(',')} names GPUs, but no GPU is visible. "
                                   "Fix: give a count (training.devices=2 runs two CPU processes) or 'auto'.")
        missing = [i for i in ids if i >= gpu_count]
        if missing:
            raise DistributedError(f"training.devices names GPU {missing[0]}, but only {gpu_count} GPU(s) are visible "
                                   f"(0..{gpu_count - 1}). Fix: `lora-tui doctor` lists them.")
        return len(ids), ids, False
    count = int(devices)
    if gpu_count == 0:
        return count, None, True  # CPU processes with gloo: how a laptop and the tests run this path
    if count > gpu_count:
        raise DistributedError(f"training.devices={count}, but only {gpu_count} GPU(s) are visible. "
                               f"Fix: training.devices={gpu_count} or 'auto'.")
    return count, (list(range(count)) if count < gpu_count else None), False


def choose_strategy(wanted: str, world_size: int, cpu: bool, per_gpu: dict, free_bytes: int | None,
                    load_in: str = "16bit") -> tuple[str, str]:
    """(strategy, why). ``per_gpu``: estimated bytes per GPU for 'ddp' and 'fsdp'."""
    if world_size <= 1:
        return "single", "one device"
    if wanted == "ddp" or (wanted == "auto" and cpu):
        return "ddp", "chosen in the config" if wanted == "ddp" else "CPU processes: data parallel (gloo)"
    if wanted == "fsdp":
        if cpu:
            raise DistributedError("training.strategy=fsdp needs GPUs. Fix: training.strategy=ddp (or auto) on CPU.")
        if load_in == "8bit":
            raise DistributedError("FSDP cannot shard 8-bit bitsandbytes weights. Fix: model.load_in=4bit (QLoRA + FSDP) or 16bit.")
        return "fsdp", "chosen in the config"
    ddp = per_gpu.get("ddp")
    if ddp is None or free_bytes is None or ddp <= free_bytes * 0.9 or load_in == "8bit":
        return "ddp", "the model fits on one GPU: data parallel, bigger effective batch"
    return "fsdp", (f"the model does not fit one GPU with DDP (~{gib(ddp)} per GPU); "
                    f"FSDP shards it (~{gib(per_gpu.get('fsdp', 0))} per GPU)")


def plan_devices(config, gpu_count: int | None = None, nodes: Nodes | None = None, hardware=None) -> DevicePlan:
    """The device plan of a run on this machine. ``gpu_count`` None: ask torch (what the workers will see)."""
    nodes = (nodes or Nodes()).check()
    if gpu_count is None:
        gpu_count = visible_gpu_count()
    processes, ids, cpu = count_processes(config.training.devices, gpu_count)
    plan = DevicePlan(processes, cpu, ids, nodes=nodes)
    free = None
    if plan.world_size > 1 and not cpu and config.training.strategy == "auto":
        plan.per_gpu, free = _per_gpu_figures(config, hardware, plan)
    plan.strategy, plan.reason = choose_strategy(config.training.strategy, plan.world_size, cpu, plan.per_gpu, free,
                                                 config.model.load_in)
    return plan


def _per_gpu_figures(config, hardware, plan: DevicePlan) -> tuple[dict, int | None]:
    try:
        if hardware is None:
            hardware = machine_hardware.probe_hardware(check_libraries=False)
        gpus = [g for g in hardware.gpus if plan.gpu_ids is None or g.index in plan.gpu_ids]
        figures = per_gpu_bytes(workload_of(config, hardware), plan.world_size)
        return figures, min((int(g.memory_free) for g in gpus), default=None)
    except Exception:  # an estimate we cannot make must not block training: DDP is the safe default
        return {}, None


def visible_gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


# --- the accelerate config ----------------------------------------------------------------------

def accelerate_config(plan: DevicePlan, config) -> dict:
    """The accelerate config of this plan (what `accelerate config` would have asked)."""
    host, port = plan.nodes.address()
    out = {
        "compute_environment": "LOCAL_MACHINE",
        # MULTI_GPU is accelerate's torchrun path; with use_cpu the ranks pick gloo (MULTI_CPU).
        "distributed_type": "FSDP" if plan.strategy == "fsdp" else "MULTI_GPU",
        "use_cpu": plan.cpu,
        "num_processes": plan.world_size,
        "num_machines": plan.nodes.count,
        "machine_rank": plan.nodes.rank,
        "main_process_port": port,
        "mixed_precision": "no",  # the Trainer sets bf16/fp16 from the run's precision
        "rdzv_backend": "static",
        "same_network": True,
        "gpu_ids": ",".join(map(str, plan.gpu_ids)) if plan.gpu_ids else "all",
        "debug": False,
    }
    if plan.nodes.count > 1:
        out["main_process_ip"] = host
    if plan.strategy == "fsdp":
        # PEFT's "FSDP + QLoRA" recipe: rank 0 loads the weights (the others build on meta),
        # trainable and frozen parameters are wrapped apart (use_orig_params false).
        out["fsdp_config"] = {
            "fsdp_version": 1,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_backward_prefetch": "BACKWARD_PRE",
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_sync_module_states": True,
            "fsdp_forward_prefetch": False,
            "fsdp_offload_params": False,
            "fsdp_sharding_strategy": "FULL_SHARD",
            "fsdp_state_dict_type": "SHARDED_STATE_DICT",
            "fsdp_use_orig_params": False,
            "fsdp_activation_checkpointing": False,  # the Trainer's own checkpointing is used
        }
    return out


def write_accelerate_config(run_path: Path, plan: DevicePlan, config) -> Path:
    import yaml

    path = Path(run_path) / ACCELERATE_CONFIG
    text = (f"# accelerate config of this run ({plan.strategy}, {plan.world_size} processes), written by lora-tui.\n"
            f"# Reuse: accelerate launch --config_file {path} -m lora_tui.core.trainer_main {run_path} --worker\n")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text + yaml.safe_dump(accelerate_config(plan, config), sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)
    return path


def saved_nodes(run_path) -> Nodes:
    """The node layout a run was started with (its accelerate config), so --resume keeps it."""
    try:  # bounded, and a FIFO put there is refused, not waited on
        saved = read_yaml(Path(run_path) / ACCELERATE_CONFIG, MAX_CONFIG_BYTES) or {}
    except UnsafeFile:
        return Nodes()
    if not isinstance(saved, dict):
        return Nodes()
    count = int(saved.get("num_machines") or 1)
    if count <= 1:
        return Nodes()
    master = f"{saved.get('main_process_ip')}:{saved.get('main_process_port') or DEFAULT_PORT}"
    return Nodes(count, int(saved.get("machine_rank") or 0), master)


# --- the plan in words --------------------------------------------------------------------------

def strategy_line(config, report) -> str:
    """'Plan: 4 GPUs, ddp (the model fits on one GPU ...)' or why it is one device."""
    try:
        plan = plan_devices(config, gpu_count=len(report.gpus), hardware=report)
    except DistributedError as exc:
        return f"Plan: {exc}"
    if not plan.launches:
        return "Plan: one process on " + ("the CPU" if plan.cpu else "one GPU") + " (training.devices to use more)"
    where = "CPU processes (gloo)" if plan.cpu else "GPUs"
    line = f"Plan: {plan.world_size} {where}, {plan.strategy.upper()}: {plan.reason}"
    if plan.per_gpu:
        line += f"; {describe(plan.per_gpu, plan.world_size)}"
    return line


def per_gpu_summary(config, report, workload) -> dict | None:
    """For `estimate`: per-GPU bytes of each strategy and the one a run would take, when the
    config would use more than one GPU here; None for one device."""
    try:
        processes, ids, cpu = count_processes(config.training.devices, len(report.gpus))
        if cpu or processes < 2:
            return None
        plan = plan_devices(config, gpu_count=len(report.gpus), hardware=report)
    except DistributedError as exc:
        return {"error": str(exc)}
    figures = per_gpu_bytes(workload, plan.world_size)
    return {"world_size": plan.world_size, "ddp_bytes": figures["ddp"], "fsdp_bytes": figures["fsdp"],
            "strategy": plan.strategy, "reason": plan.reason}
