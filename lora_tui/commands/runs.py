"""`lora-tui runs`, `attach` and `stop`."""

from __future__ import annotations

import json
import sys
from datetime import datetime

from lora_tui.commands.progress import LiveLine, follow
from lora_tui.core.paths import runs_dir
from lora_tui.core.run.runs import RunDirectory, RunError, list_runs, quoted


def printable(text: str) -> str:
    """A name as one table cell: a newline or other control character in a run's name shows as `?`."""
    return "".join(c if c.isprintable() else "?" for c in str(text))


def _list(args) -> int:
    runs = list_runs(args.dir)
    if args.json:
        print(json.dumps([{**r.__dict__, "path": str(r.path)} for r in runs], indent=2))
        return 0
    if not runs:
        print(f"No runs in {runs_dir(args.dir)}/. Start one with `lora-tui train` or the wizard (`lora-tui`).")
        return 0
    print(f"{'RUN':32} {'STATE':9} {'METHOD':6} {'STEP':>11} {'LOSS':>8} {'EVAL':>8}  {'UPDATED':16}  MODEL")
    for r in runs:
        step = f"{r.step or 0}/{r.max_steps or '?'}"
        loss = f"{r.loss:.4f}" if isinstance(r.loss, (int, float)) else "-"
        ev = f"{r.eval_loss:.4f}" if isinstance(r.eval_loss, (int, float)) else "-"
        when = datetime.fromtimestamp(r.updated).strftime("%Y-%m-%d %H:%M") if r.updated else "-"
        accuracy = f" (eval reward acc {100 * r.eval_reward_accuracy:.0f}%)" \
            if isinstance(r.eval_reward_accuracy, (int, float)) else ""
        print(f"{printable(r.name)[:32]:32} {r.state:9} {r.method[:6]:6} {step:>11} {loss:>8} {ev:>8}  {when:16}  "
              f"{printable(r.model or '-')}{accuracy}")
    return 0


class _StopClock:
    """While `stop` waits: what the trainer is doing and the time against the grace period (a LiveLine)."""

    def __init__(self, run_dir: RunDirectory, limit: float) -> None:
        self.run, self.limit, self.line = run_dir, limit, LiveLine()

    def __call__(self, waited: float) -> None:
        from lora_tui.core.units import human_duration

        status = self.run.read_status()
        doing = status.get("message") or ""
        if doing in ("", "stop requested", "training", "loading"):
            doing = f"training, at step {status.get('step') or 0}/{status.get('max_steps') or '?'}"
        self.line.show(f"waiting for it: {doing}; {human_duration(waited)} of {human_duration(self.limit)}")

    def done(self) -> None:
        if self.line.shown:  # the last word stays on screen: the state line follows below it
            print(flush=True)


def run(args) -> int:
    from lora_tui.core.run.launcher import stop_run

    if args.command == "runs":
        return _list(args)
    try:
        run_dir = RunDirectory.find(args.run)
    except RunError as exc:
        print(f"lora-tui {args.command}: {exc}", file=sys.stderr)
        return 2
    if args.command == "attach":
        try:
            state = follow(run_dir, live=not args.no_follow)
        except KeyboardInterrupt:
            print(f"\nDetached; the run goes on. Stop it with `lora-tui stop {quoted(run_dir.path)}`.")
            return 0
        return 0 if state in ("finished", "stopped", "running", "starting", "stopping") else 1
    state = run_dir.state()
    if state in ("finished", "failed", "stopped"):
        print(f"{run_dir.path} is already {state}.")
        return 0
    if state == "dead":
        print(f"No trainer is running in {run_dir.path} (it was killed). Resume with `lora-tui train --resume {quoted(run_dir.path)}`.")
        return 0
    from lora_tui.core.units import human_duration

    print(f"Asking the trainer in {run_dir.path} to stop (checkpoint + adapter). It stops at the end of its "
          f"current step (an evaluation runs to its end first); after {human_duration(args.wait)} (--wait) it "
          "is killed.", flush=True)
    # After --wait seconds (the grace period, 120 s by default) a trainer still running is killed (SIGKILL).
    clock = _StopClock(run_dir, args.wait)
    state = stop_run(run_dir, wait=args.wait, kill_after_wait=True, on_wait=clock)
    clock.done()
    if getattr(run_dir, "kill_note", None):
        print(run_dir.kill_note)
    adapter = run_dir.adapter_dir
    print(f"State: {state}." + (f" Adapter: {adapter}" if adapter.exists() else ""))
    return 0 if state in ("stopped", "finished") else 1
