"""Entry point of the detached trainer process:

    python -m lora_tui.core.trainer_main RUN_DIR [--resume]

Started by ``lora_tui.core.run.launcher`` in its own session (setsid), with stdout and
stderr going to RUN_DIR/train.log, so closing the terminal does not stop it.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lora_tui.core.trainer_main")
    parser.add_argument("run_dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--worker", action="store_true", help="one rank of a multi-device run (started by accelerate launch)")
    parser.add_argument("--nodes", type=int, default=None)
    parser.add_argument("--node-rank", type=int, default=0)
    parser.add_argument("--master", default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from lora_tui.core.machine.library_noise import drop_library_noise

    drop_library_noise()  # bitsandbytes' two import-time lines at the top of train.log
    from lora_tui.core.run.runs import RunDirectory, RunLocked
    from lora_tui.core.train.training import run_training

    run = RunDirectory(args.run_dir)
    try:
        state = None if args.worker else _supervise_if_several(run, args)
        if state is None:
            state = run_training(run, resume=args.resume)
    except RunLocked as exc:
        print(str(exc), file=sys.stderr, flush=True)
        return 3
    return {"finished": 0, "stopped": 0}.get(state, 1)


def _supervise_if_several(run, args) -> str | None:
    """With more than one rank, start them through accelerate and return the final state; else None."""
    from lora_tui.core.config import ConfigError, DistributedError, load_config
    from lora_tui.core.plan import devices
    from lora_tui.core.train import distributed_run

    try:
        config = load_config(run.config_path)
        nodes = devices.Nodes(args.nodes, args.node_rank, args.master) if args.nodes else devices.saved_nodes(run.path)
        plan = devices.plan_devices(config, nodes=nodes)
    except (ConfigError, DistributedError) as exc:
        run.acquire_lock()
        run.append_event("failed", reason=str(exc), fix="Change training.devices / training.strategy or the node flags.")
        run.write_status("failed", pid=os.getpid(), message=str(exc))
        return "failed"
    if not plan.launches:
        if plan.gpu_ids:  # one chosen GPU: the single-process recipe trains on the current device
            import torch

            torch.cuda.set_device(plan.gpu_ids[0])
        return None
    return distributed_run.supervise(run, plan, config, args.resume)


if __name__ == "__main__":
    raise SystemExit(main())
