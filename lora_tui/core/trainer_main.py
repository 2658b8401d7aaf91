"""Entry point of the detached trainer process:

    python -m lora_tui.core.trainer_main RUN_DIR [--resume]

Started by ``lora_tui.core.launcher`` in its own session (setsid), with stdout and
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
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from lora_tui.core.runs import RunDirectory, RunLocked
    from lora_tui.core.training import run_training

    run = RunDirectory(args.run_dir)
    try:
        state = run_training(run, resume=args.resume)
    except RunLocked as exc:
        print(str(exc), file=sys.stderr, flush=True)
        return 3
    return {"finished": 0, "stopped": 0}.get(state, 1)


if __name__ == "__main__":
    raise SystemExit(main())
