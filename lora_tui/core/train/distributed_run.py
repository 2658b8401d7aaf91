"""Running one training job on several ranks: the supervising trainer process (the pieces of the
recipe that differ per rank live in core/train/distributed.py).

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

from lora_tui.core.machine.hardware import probe_hardware
from lora_tui.core.plan import devices
from lora_tui.core.plan.run_plan import plan_env
from lora_tui.core.run.runs import LOCK_FD_ENV, STATES_DONE, RunDirectory, quoted
from lora_tui.core.train import distributed
from lora_tui.core.train.data_lengths import measure_data
from lora_tui.core.train.training import run_plan_of


def supervise(run: RunDirectory, plan: devices.DevicePlan, config, resume: bool) -> str:
    """Start the ranks, wait for them, and settle the run's final state. Returns that state."""
    run.acquire_lock()
    run.clear_stale_stop()  # a stop asked for during start-up is kept and honoured
    config_file = devices.write_accelerate_config(run.path, plan, config)
    cmd = distributed.launch_command(config_file, run.path, resume)
    run.write_status("starting", pid=os.getpid(), world_size=plan.world_size, strategy=plan.strategy,
                     message=f"starting {plan.world_size} processes ({plan.strategy})")
    print(f"lora-tui: {plan.world_size} ranks, {plan.strategy} ({plan.reason}); config {config_file}\n"
          f"lora-tui: {' '.join(cmd)}", flush=True)
    env = {k: v for k, v in os.environ.items() if k != LOCK_FD_ENV}  # the lock stays with this process
    env = {**env, distributed.ENV_WORKER: "1", distributed.ENV_SUPERVISOR: str(os.getpid()),
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
    hardware = probe_hardware(check_libraries=False)
    device = "cpu" if plan.cpu else "cuda"
    world = plan.processes if plan.cpu else 1  # CPU ranks share this machine's RAM
    return plan_env(run_plan_of(run, config, hardware, device, resume, measure_data(config).longest, world_size=world))


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
