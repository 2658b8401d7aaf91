"""Running one training job on several ranks: the supervising trainer process and the
pieces of the recipe that differ per rank.

The supervisor is the detached trainer process (``trainer_main``) when the plan needs more
than one rank. It holds the run lock, writes the accelerate config, starts
``accelerate launch`` (torchrun underneath), turns SIGTERM into the usual stop request, and
when the ranks are gone makes sure the run ends in a clear state: a rank killed by a signal
fails the run with that reason, and ``--resume`` continues from the last checkpoint.

Workers watch the supervisor: if it disappears (kill -9) they exit, so no rank is left
running. Only rank 0 writes the run directory (``distributed.for_this_rank``).
No launcher or collective code of our own here: accelerate/torch do that.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time

from lora_tui.core.train import distributed as dist_plan
from lora_tui.core.run.runs import STATES_DONE, RunDirectory, pid_alive, quoted


def supervise(run: RunDirectory, plan: "dist_plan.DevicePlan", config, resume: bool) -> str:
    """Start the ranks, wait for them, and settle the run's final state. Returns that state."""
    run.acquire_lock()
    run.clear_stale_stop()  # a stop asked for during start-up is kept and honoured
    config_file = dist_plan.write_accelerate_config(run.path, plan, config)
    cmd = dist_plan.launch_command(config_file, run.path, resume)
    run.write_status("starting", pid=os.getpid(), world_size=plan.world_size, strategy=plan.strategy,
                     message=f"starting {plan.world_size} processes ({plan.strategy})")
    print(f"lora-tui: {plan.world_size} ranks, {plan.strategy} ({plan.reason}); config {config_file}\n"
          f"lora-tui: {' '.join(cmd)}", flush=True)
    from lora_tui.core.run.runs import LOCK_FD_ENV

    env = {k: v for k, v in os.environ.items() if k != LOCK_FD_ENV}  # the lock stays with this process
    env = {**env, dist_plan.ENV_WORKER: "1", dist_plan.ENV_SUPERVISOR: str(os.getpid()),
           "LORA_TUI_NODES": str(plan.nodes.count), "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.update(_batch_env(run, plan, config, resume))
    if plan.cpu:
        # Split the cores between the ranks instead of letting each rank take them all.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // plan.processes)))
    log_start = run.log_path.stat().st_size if run.log_path.exists() else 0  # this attempt's output only
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=env)

    def ask_to_stop(*_):  # same as `lora-tui stop`: every rank sees it at its next step
        run.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, ask_to_stop)
    code = proc.wait()
    return settle(RunDirectory(run.path), code, plan, log_start)


def _batch_env(run: RunDirectory, plan, config, resume: bool) -> dict:
    """The run plan (core.run_plan) decided once here, at the data's longest row, so every rank trains with it."""
    from lora_tui.core.machine.hardware import probe_hardware
    from lora_tui.core.plan.run_plan import plan_env
    from lora_tui.core.train.training import data_longest, plan_for_run

    hardware = probe_hardware(check_libraries=False)
    device = "cpu" if plan.cpu else "cuda"
    world = plan.processes if plan.cpu else 1  # CPU ranks share this machine's RAM
    return plan_env(plan_for_run(run, config, hardware, device, resume, data_longest(config), world_size=world))


def settle(run: RunDirectory, code: int, plan, log_start: int = 0) -> str:
    """After the ranks exit: keep rank 0's final state, or record why the run failed."""
    state = run.read_status().get("state")
    if code == 0 and state in STATES_DONE:
        return state
    if code == 0 and plan.nodes.rank > 0:  # rank 0 and its writes live on another machine
        run.write_status("finished", message="this node's ranks finished; the run directory is on node 0")
        return "finished"
    found = rank_failure(run.log_path, log_start)
    why = found or f"the ranks' launcher exited with code {code}"
    if state in ("finished", "stopped"):
        run.append_event("log", level="warning", message=f"After the run ended: {why}.")
        return state
    if state == "failed" and not (found and "killed by" in found):
        return state  # rank 0 already failed the run with its own reason (bad data, out of memory...)
    step = run.read_status().get("step")
    last = run.last_checkpoint()
    fix = (f"`lora-tui train --resume {quoted(run.path)}` continues from {last.name}." if last else
           f"`lora-tui train --resume {quoted(run.path)}` starts it again (no complete checkpoint yet).")
    reason = f"{why}; the run stopped at step {step if step is not None else 0} of {plan.world_size} ranks' training."
    run.append_event("failed", reason=reason, fix=fix, log=str(run.log_path))
    run.write_status("failed", message=reason)
    return "failed"


_FAILURE = re.compile(r"rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)\s*\(pid:\s*(\d+)\)", re.S)


def rank_failure(log_path, start: int = 0) -> str | None:
    """'rank 1 (pid 123) was killed by SIGKILL' from torchrun's failure summary in train.log
    (written after byte ``start``: an earlier attempt's summary does not count)."""
    try:
        with open(log_path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(start, fh.tell() - 200_000))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    summary = text[text.rfind("Root Cause"):] if "Root Cause" in text else text
    found = _FAILURE.search(summary)
    if not found:
        return None
    rank, code, pid = int(found.group(1)), int(found.group(2)), found.group(3)
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"rank {rank} (pid {pid}) was killed by {name}"
    return f"rank {rank} (pid {pid}) exited with code {code}"


# --- inside a worker ---------------------------------------------------------------------

def enter_worker(run: RunDirectory) -> RunDirectory:
    """Per-rank set-up: this rank's GPU, the supervisor watch, and the run as this rank may use it."""
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(dist_plan.local_rank())
    except Exception:
        pass
    _watch_supervisor()
    return dist_plan.for_this_rank(run)


def owner_pid() -> int:
    """The pid that owns the run (status.json): the supervisor in a worker, else this process."""
    return int(os.environ.get(dist_plan.ENV_SUPERVISOR) or os.getpid()) if dist_plan.is_worker() else os.getpid()


def _watch_supervisor(interval: float = 1.0) -> None:
    supervisor = int(os.environ.get(dist_plan.ENV_SUPERVISOR) or 0)
    if not supervisor:
        return

    def loop() -> None:
        while pid_alive(supervisor):
            time.sleep(interval)
        # The trainer that owns the run is gone (kill -9, reboot of its session): leave no rank behind.
        print(f"lora-tui: rank {dist_plan.rank()}: trainer process {supervisor} is gone; exiting.", flush=True)
        os._exit(1)

    threading.Thread(target=loop, name="supervisor-watch", daemon=True).start()


def started_fields(device: str) -> dict:
    """world_size, strategy and every rank's pid/device for the `started` event (all ranks call this)."""
    import socket

    fields = dist_plan.started_fields()
    me = {"rank": dist_plan.rank(), "pid": os.getpid(), "host": socket.gethostname(),
          "device": f"{device}:{dist_plan.local_rank()}" if device == "cuda" else device}
    ranks = [me]
    if dist_plan.is_worker() and dist_plan.world_size() > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            ranks = [None] * dist.get_world_size()
            dist.all_gather_object(ranks, me)
    fields["ranks"] = ranks
    return fields


def sft_kwargs(device: str) -> dict:
    """Trainer arguments that only matter with several ranks."""
    if dist_plan.world_size() <= 1:
        return {}
    # LoRA uses every adapter parameter each step: skip DDP's unused-parameter search.
    return {"ddp_find_unused_parameters": False}


def mark_checkpoint(write_marker) -> None:
    """Every rank has written its part of the checkpoint before rank 0 marks it complete."""
    if dist_plan.world_size() > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
    if dist_plan.is_main_process():
        write_marker()


def save_adapter(trainer, tokenizer, run: RunDirectory, save_single):
    """The final adapter, written once (rank 0). FSDP gathers the full state dict from every rank first."""
    if dist_plan.strategy() == "fsdp":
        import shutil

        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
        tmp = run.path / ".adapter.tmp-fsdp"
        trainer.save_model(str(tmp))  # collective: every rank takes part, rank 0 writes
        if dist_plan.is_main_process():
            tokenizer.save_pretrained(tmp)
            shutil.rmtree(run.adapter_dir, ignore_errors=True)
            tmp.rename(run.adapter_dir)
        return run.adapter_dir
    if not dist_plan.is_main_process():
        return run.adapter_dir
    return save_single(trainer.model, tokenizer, run)


def fsdp_base_loader():
    """For FSDP: a base-model loader with no device placement (FSDP places the shards) and, for
    4-bit, a bnb_4bit_quant_storage dtype FSDP can shard (PEFT's FSDP + QLoRA recipe)."""
    if dist_plan.strategy() != "fsdp":
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
