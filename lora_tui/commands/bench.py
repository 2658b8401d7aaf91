"""`lora-tui bench`: lora-tui's trainer against plain TRL on the user's model, data and device (core.bench)."""

from __future__ import annotations

import json
import sys

EXIT_BAD_INPUT = 2


class _ArmLine:
    """Which arm runs and what it does ("  ours: step 3/12, 45s"), as a LiveLine: a log gets a line per arm
    and per new step (at most every 15 s); an arm takes minutes on a CPU."""

    def __init__(self, enabled: bool) -> None:
        from lora_tui.commands.progress import LiveLine

        self.enabled, self.line, self.arm = enabled, LiveLine(), None

    def show(self, arm: str, text: str) -> None:  # called from the bench's watcher thread
        if self.enabled:
            self.line.show(f"  {arm}: {text}", key=(arm, text.rsplit(", ", 1)[0]), now_too=arm != self.arm)
            self.arm = arm

    def clear(self) -> None:
        self.line.end()


def run(args) -> int:
    from lora_tui.commands.train import build_config, split_positionals
    from lora_tui.core.bench.runner import BenchError, run_bench, summary_lines, table_rows
    from lora_tui.core.config import ConfigError

    try:
        config_path, overrides = split_positionals(args)
        args.config = config_path
        args.overrides = overrides + ([f"model.name={args.model}"] if args.model else [])
        method = getattr(args, "method", None)
        if method:  # --method dpo: the sample pairs unless data.train is given
            given = any(o.startswith("data.train=") for o in args.overrides) or args.config
            args.overrides = ([] if given or method == "sft" else
                              ["data.train=sample_data/preference.jsonl", "data.validation="]) + args.overrides \
                + [f"training.method={method}"]
        config = build_config(args)
        arms = [a.strip() for a in args.arms.split(",") if a.strip()]
        if config.training.method != "sft" and args.arms == "ours,trl,trl_packing":  # the default: TRL's DPO packs nothing
            arms.remove("trl_packing")

        live = _ArmLine(enabled=not args.json)

        def shown(arm) -> None:
            live.clear()
            if not args.json:
                what = f"failed: {arm.error.strip().splitlines()[-1][:120]}" if arm.error else \
                    f"{arm.tokens_per_s:,.0f} tokens/s" if arm.tokens_per_s else "no figure"
                print(f"  {arm.label}: {what}", flush=True)

        if not args.json:
            print(f"Timing {args.steps} optimiser steps per arm ({', '.join(arms)}) on {config.model.name}, "
                  f"{config.data.train}; each arm loads the model in its own process.", flush=True)
        report = run_bench(config, steps=args.steps, arms=arms, device=args.device, batch=args.batch,
                           peak_tflops=args.peak_tflops, timeout=args.timeout, on_arm=shown, on_progress=live.show)
    except (BenchError, ConfigError) as exc:
        print(f"lora-tui bench: {str(exc).strip()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"\n{report.model} on {report.device}, {report.steps} steps; peak = {report.peak_measure}")
        rows = [("arm", "tokens/s", "peak", "MFU")] + table_rows(report)
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for row in rows:
            print(f"  {row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]:>{widths[3]}}")
        print()
        for line in summary_lines(report):
            print(line)
    return 0 if all(a.error is None for a in report.arms.values()) else 1
