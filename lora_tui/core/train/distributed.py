"""Inside the ranks of a run on several devices: who this rank is, who writes, and the pieces of the
recipe that differ per rank (checkpoint barrier, FSDP loading and saving, the stop every rank agrees on).

How many ranks, with which strategy, is the device plan's (core/plan/devices.py); the supervisor that
starts them through ``accelerate launch`` is core/train/distributed_run.py. Only rank 0 writes the run
directory (``for_this_rank``). Workers watch the supervisor: if it disappears (kill -9) they exit.

No launcher or collective code of our own: accelerate/torchrun start the ranks, the Trainer does the
gradient all-reduce; the one collective here (``agree_to_stop``) is torch.distributed's all_reduce so
every rank stops at the same step. Pure Python at import: torch is imported inside the functions that
need it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from lora_tui.core.run.runs import RunDirectory, pid_alive

ENV_WORKER = "LORA_TUI_WORKER"  # set on every launched rank
ENV_SUPERVISOR = "LORA_TUI_SUPERVISOR_PID"  # the trainer process that holds the run lock


def launch_command(config_file: Path, run_path: Path, resume: bool) -> list[str]:
    """`accelerate launch` of the trainer module on every rank (accelerate runs torchrun underneath)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
            "-m", "lora_tui.core.trainer_main", str(run_path), "--worker"] + (["--resume"] if resume else [])


# --- rank helpers (inside a worker) -----------------------------------------------------------

def is_worker() -> bool:
    return os.environ.get(ENV_WORKER) == "1"


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return rank() == 0


def strategy() -> str:
    if world_size() <= 1:
        return "single"
    return "fsdp" if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" else "ddp"


def for_this_rank(run):
    """The run directory as this rank may use it: rank 0 writes, every other rank only reads."""
    if is_main_process():
        return run
    class ReadOnlyRun(RunDirectory):
        def append_event(self, type: str, **fields) -> dict:
            return {"type": type, **fields}

        def write_status(self, state: str, **fields) -> dict:
            return {**fields, "state": state}

    return ReadOnlyRun(run.path)


def agree_to_stop(local: bool) -> bool:
    """True on every rank when any rank wants to stop: all ranks leave the loop at the same step."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    import torch

    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([1 if local else 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


# --- the recipe's per-rank pieces ---------------------------------------------------------------

def enter_worker(run: RunDirectory) -> RunDirectory:
    """Per-rank set-up: this rank's GPU, the supervisor watch, and the run as this rank may use it."""
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank())
    except Exception:
        pass
    _watch_supervisor()
    return for_this_rank(run)


def owner_pid() -> int:
    """The pid that owns the run (status.json): the supervisor in a worker, else this process."""
    return int(os.environ.get(ENV_SUPERVISOR) or os.getpid()) if is_worker() else os.getpid()


def _watch_supervisor(interval: float = 1.0) -> None:
    supervisor = int(os.environ.get(ENV_SUPERVISOR) or 0)
    if not supervisor:
        return

    def loop() -> None:
        while pid_alive(supervisor):
            time.sleep(interval)
        # The trainer that owns the run is gone (kill -9, reboot of its session): leave no rank behind.
        print(f"lora-tui: rank {rank()}: trainer process {supervisor} is gone; exiting.", flush=True)
        os._exit(1)

    threading.Thread(target=loop, name="supervisor-watch", daemon=True).start()


def started_fields(device: str) -> dict:
    """What the `started` event records about the devices: world_size, strategy, nodes and every rank's
    pid/device (all ranks call this)."""
    import socket

    fields = {"world_size": world_size(), "strategy": strategy(), "nodes": int(os.environ.get("LORA_TUI_NODES", "1"))}
    me = {"rank": rank(), "pid": os.getpid(), "host": socket.gethostname(),
          "device": f"{device}:{local_rank()}" if device == "cuda" else device}
    ranks = [me]
    if is_worker() and world_size() > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            ranks = [None] * dist.get_world_size()
            dist.all_gather_object(ranks, me)
    fields["ranks"] = ranks
    return fields


def sft_kwargs(device: str) -> dict:
    """Trainer arguments that only matter with several ranks."""
    if world_size() <= 1:
        return {}
    # LoRA uses every adapter parameter each step: skip DDP's unused-parameter search.
    return {"ddp_find_unused_parameters": False}


def mark_checkpoint(write_marker) -> None:
    """Every rank has written its part of the checkpoint before rank 0 marks it complete."""
    if world_size() > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
    if is_main_process():
        write_marker()


def save_adapter_from_ranks(trainer, tokenizer, run: RunDirectory, save_single):
    """The final adapter, written once (rank 0). FSDP gathers the full state dict from every rank first."""
    if strategy() == "fsdp":
        import shutil

        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
        tmp = run.path / ".adapter.tmp-fsdp"
        trainer.save_model(str(tmp))  # collective: every rank takes part, rank 0 writes
        if is_main_process():
            tokenizer.save_pretrained(tmp)
            shutil.rmtree(run.adapter_dir, ignore_errors=True)
            tmp.rename(run.adapter_dir)
        return run.adapter_dir
    if not is_main_process():
        return run.adapter_dir
    return save_single(trainer.model, tokenizer, run)


def fsdp_base_loader():
    """For FSDP: a base-model loader with no device placement (FSDP places the shards) and, for
    4-bit, a bnb_4bit_quant_storage dtype FSDP can shard (PEFT's FSDP + QLoRA recipe)."""
    if strategy() != "fsdp":
        return None

    def load(name, *, load_in="16bit", precision="bf16", double_quant=True, device="cuda",
             trust_remote_code=False, revision=None):
        from transformers import AutoModelForCausalLM

        from lora_tui.core.model.models import quantization_config, resolve_model_path, torch_dtype_for

        dtype = torch_dtype_for(precision)
        kwargs: dict = {"trust_remote_code": trust_remote_code, "revision": revision, "dtype": dtype}
        quant = quantization_config(load_in, precision, double_quant)
        if quant is not None:
            quant.bnb_4bit_quant_storage = dtype
            kwargs["quantization_config"] = quant
        return AutoModelForCausalLM.from_pretrained(resolve_model_path(name), **kwargs)

    return load
