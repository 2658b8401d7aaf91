"""`lora-tui doctor` (hardware report) and `lora-tui estimate` (memory estimate,
fit verdict and ranked fixes): printing only; the work is in lora_tui.core.machine.hardware
and lora_tui.core.plan.memory; the config -> plan -> fix-as-overrides translation is
lora_tui.core.plan.workload's. Foreseeable mistakes (unknown model, bad targets, a bad
config key) print one line and exit 2, never a traceback; a plan that will not fit exits 1.
"""

from __future__ import annotations

import json
import sys

from lora_tui.core.units import human_size

PART_NAMES = {
    "process": "Python process + libraries",
    "cuda_context": "CUDA context",
    "base_weights": "base model weights",
    "mapped_checkpoint": "checkpoint pages (memory-mapped)",
    "lora_weights": "LoRA weights",
    "lora_gradients": "LoRA gradients",
    "optimizer_states": "AdamW states",
    "activations": "activations kept for backward",
    "temporary_buffers": "temporary buffers (loss head, backward)",
    "allocator_overhead": "allocator overhead",
}
VERDICT_WORDS = {"fits": "FITS", "tight": "TIGHT (may run out of memory)", "wont_fit": "WON'T FIT"}


def size(n: int | float | None) -> str:
    return human_size(n, digits=2)


def run(args) -> int:
    if args.command == "doctor":
        return doctor(args)
    return estimate(args)


# ------------------------------------------------------------------ doctor
def doctor(args) -> int:
    from lora_tui.core.machine.hardware import probe_hardware

    from lora_tui.core.machine.kernels import kernel_libraries, kernels_line

    report = probe_hardware()
    kernels = kernel_libraries()
    if args.json:
        print(json.dumps({**report.to_dict(), "kernels": kernels}, indent=2))
        return 0
    print("GPUs")
    if not report.gpus:
        print(f"  none: {report.nvml_error or 'NVML reports no NVIDIA GPU'}")
    for g in report.gpus:
        cc = f"compute {g.compute_capability[0]}.{g.compute_capability[1]}" if g.compute_capability else "compute ?"
        print(f"  [{g.index}] {g.name}: {size(g.memory_free)} free of {size(g.memory_total)}, {cc}"
              f" ({'bf16' if g.bf16 else 'no bf16: fp16'})")
        vitals = [f"util {g.utilization}%" if g.utilization is not None else None,
                  f"{g.temperature} C" if g.temperature is not None else None,
                  f"power {g.power_draw:.0f}/{g.power_limit:.0f} W" if g.power_draw is not None and g.power_limit else None]
        print("      " + ", ".join(v for v in vitals if v))
        for p in g.processes:
            print(f"      in use by pid {p['pid']} ({p['name']}): {size(p['used_bytes'])}")
    if report.driver_version:
        print(f"  driver {report.driver_version}, supports CUDA {report.cuda_driver_version or '?'}")
    for line in _topology_lines(report):
        print(line)
    print(f"CPU   {report.cpu_count} cores")
    print(f"RAM   {size(report.ram_available)} available of {size(report.ram_total)}")
    torch_cuda = f"CUDA {report.cuda_version}" if report.cuda_version else "CPU build"
    bnb = {True: "works", False: "BROKEN", None: "not checked"}[report.bitsandbytes_ok] if report.bitsandbytes_version else "not installed"
    print(f"torch {report.torch_version or 'not importable'} ({torch_cuda}); bitsandbytes {report.bitsandbytes_version or ''} {bnb}".rstrip())
    print(f"kernels {kernels_line(kernels, bool(report.gpus))}")
    for note in report.notes:
        print(f"note: {note}")
    if report.cpu_only:
        print("\nCPU only: training runs on the CPU, fine for small models and short runs, slow for anything else.")
    return 0


def _per_gpu(config, report, plan) -> dict | None:
    from lora_tui.core.plan.devices import per_gpu_summary

    try:
        return per_gpu_summary(config, report, plan)
    except Exception:  # a figure we cannot make must not cost the user the single-device estimate
        return None


def _topology_lines(report) -> list[str]:
    """GPU-pair links (NVLink / PCIe path) and the multi-device plan of the default config."""
    from lora_tui.core.config import Config
    from lora_tui.core.machine.gpu_topology import topology_lines
    from lora_tui.core.plan.devices import strategy_line

    lines = [f"  {line}" for line in topology_lines(report.topology)]
    if len(report.gpus) > 1 and not report.topology:
        lines.append("  links between GPUs: not reported by NVML")
    return lines + [f"  {strategy_line(Config(), report)}"]


# ---------------------------------------------------------------- estimate
# Shorthand flags, named after the workload's fields: `estimate --batch 2` is `estimate training.micro_batch=2`
# (the config key each sets is workload.PLAN_FIELDS[flag], one vocabulary).
SHORTHANDS = ("model", "quant", "r", "targets", "seq_len", "batch", "grad_checkpointing")
EXIT_FITS, EXIT_WONT_FIT, EXIT_BAD_INPUT = 0, 1, 2


def _device(choice: str, report) -> tuple[str, int]:
    """('cpu' | 'cuda', GPU index) from --device auto / cpu / cuda / cuda:N / N."""
    text = (choice or "auto").strip().lower()
    if text == "auto":
        return ("cuda", report.gpus[0].index) if report.gpus else ("cpu", 0)
    if text == "cpu":
        return "cpu", 0
    index = text.split(":", 1)[1] if text.startswith("cuda:") else ("0" if text in ("cuda", "gpu") else text)
    if not index.isdigit():
        raise ValueError(f"--device {choice!r} is not understood. Fix: use auto, cpu, cuda or cuda:N.")
    return "cuda", int(index)


def _shorthand_overrides(args) -> list[str]:
    from lora_tui.core.config import _cli_value
    from lora_tui.core.plan.workload import LOAD_FOR_QUANT, PLAN_FIELDS

    out = []
    for attr in SHORTHANDS:
        value = getattr(args, attr, None)
        if value is not None:
            out.append(f"{PLAN_FIELDS[attr]}={_cli_value(LOAD_FOR_QUANT.get(value, value) if attr == 'quant' else value)}")
    return out


def estimate(args) -> int:
    from lora_tui.commands.train import build_config, split_positionals
    from lora_tui.core.config import ConfigError, train_command
    from lora_tui.core.machine.hardware import probe_hardware
    from lora_tui.core.plan.memory import judge_fit
    from lora_tui.core.plan.workload import fix_overrides, workload_of

    report = probe_hardware(check_libraries=False)
    try:
        config_path, overrides = split_positionals(args)
        args.config, args.overrides = config_path, overrides + _shorthand_overrides(args)
        config = build_config(args)
        device, index = _device(args.device, report)
        workload_of(config, report, device=device)  # a wrong model or value: one line, before the data is read
        lengths = _data_lengths(config)  # the trainer plans rows as long as the data's longest: so does this
        plan = workload_of(config, report, device=device, longest=lengths.longest)
        dims = plan.dims()
        targets = dims.target_modules(plan.targets)
        verdict = judge_fit(plan, report, device_index=index)
        fixes = [(fix, fix_overrides(config, fix)) for fix in verdict.fixes]
    except (ConfigError, LookupError, ValueError) as exc:
        print(f"lora-tui estimate: {str(exc).strip()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.device in (None, "auto") and device == "cpu":
        verdict.notes.insert(0, f"No GPU ({report.nvml_error or 'none found'}): estimated against CPU RAM available.")
    code = EXIT_WONT_FIT if verdict.verdict == "wont_fit" else EXIT_FITS
    if args.json:
        out = verdict.to_dict()
        for entry, (_, fix_words) in zip(out["fixes"], fixes):
            entry["overrides"] = fix_words
            entry["command"] = train_command(None, config_path, preset=args.preset, overrides=args.overrides + fix_words)
        out["plan"] = {"model": dims.name, "params": dims.params, "quant": plan.quant, "r": plan.r, "targets": targets,
                       "seq_len": plan.seq_len, "max_seq_len": config.data.max_seq_len, "longest": lengths.longest,
                       "rows": lengths.rows_text(config.data.max_seq_len),
                       "batch": plan.batch, "grad_checkpointing": plan.grad_checkpointing,
                       "batch_auto": config.training.micro_batch is None,
                       "device": plan.device, "device_index": index}
        out["command"] = train_command(None, config_path, preset=args.preset, overrides=args.overrides)
        out["per_gpu"] = _per_gpu(config, report, plan)
        print(json.dumps(out, indent=2))
        return code
    _print_estimate(dims, plan, targets, verdict, config, report, lengths)
    per_gpu = _per_gpu(config, report, plan)
    if per_gpu:  # several GPUs: what each strategy needs on each of them
        print(per_gpu.get("error") or f"On {per_gpu['world_size']} GPUs, per GPU: DDP {size(per_gpu['ddp_bytes'])}, "
              f"FSDP {size(per_gpu['fsdp_bytes'])} -> {per_gpu['strategy'].upper()} ({per_gpu['reason']})")
    if fixes:
        print("\nFixes, strongest first: the line under each trains with it (`lora-tui estimate` takes the same words).")
        for n, (fix, fix_words) in enumerate(fixes, 1):
            word = VERDICT_WORDS[fix.verdict].split(" ")[0].lower()
            print(f"  {n}. {fix.title}: {size(fix.new_total_bytes)} ({word})")
            print(f"     {train_command(None, config_path, preset=args.preset, overrides=args.overrides + fix_words)}")
    notes = verdict.estimate.notes + verdict.notes
    if notes:
        print()
        for note in notes:
            print(f"note: {note}")
    return code


def _data_lengths(config):
    """The data's longest row, read as the trainer reads it (core/train/data_lengths.py); on a terminal a
    line says so meanwhile (the tokenizer and a large file take seconds)."""
    from lora_tui.core.train.data_lengths import measure_data

    tty = sys.stderr.isatty()
    if tty:
        print(f"Reading {config.data.train} with the model's tokenizer for its longest row...", end="",
              file=sys.stderr, flush=True)
    try:
        return measure_data(config)
    finally:
        if tty:
            print("\r\033[K", end="", file=sys.stderr, flush=True)


def _print_estimate(dims, plan, targets, verdict, config=None, report=None, lengths=None) -> None:
    load = {"none": f"{ {'float32': 'fp32', 'bfloat16': 'bf16', 'float16': 'fp16'}.get(plan.compute_dtype(), '16-bit')} LoRA", "8bit": "8-bit base (LoRA)",
            "4bit": "4-bit NF4 QLoRA" + (" + double quant" if plan.double_quant else "")}[plan.quant]
    print(f"{dims.name} ({dims.params / 1e9:.2f} B parameters): {load}, r {plan.r} on {', '.join(targets)}")
    t = config.training if config is not None else None
    auto_micro = " (auto)" if t is not None and t.micro_batch is None else ""
    auto_ckpt = " (auto)" if t is not None and t.gradient_checkpointing is None else ""
    print(f"micro-batch {plan.batch}{auto_micro} x {plan.seq_len} tokens, gradient checkpointing "
          f"{'on' if plan.grad_checkpointing else 'off'}{auto_ckpt}, on {verdict.device_label}")
    if lengths is not None and config is not None:
        print(f"  {lengths.rows_text(config.data.max_seq_len)}")
    if t is not None and (auto_micro or auto_ckpt):
        from lora_tui.core.plan.workload import choose_batch

        batch = choose_batch(config, report, plan.device, longest=lengths.longest if lengths else None)
        if auto_micro:  # '8 x 4 = 32 rows per step' or '4096 tokens x 4 = 16384 tokens per step' (core/plan/batch.py)
            print(f"  {'token budget' if batch.tokens_per_batch else 'micro-batch'}: {batch.describe()}"
                  f"{', rows packed whole' if batch.tokens_per_batch else ''}; {batch.reasons['micro_batch']}")
        if auto_ckpt:
            print(f"  checkpointing {batch.reasons['gradient_checkpointing']}")
    print()
    total = verdict.estimate.total_bytes
    for key, value in verdict.estimate.breakdown.items():
        share = 100 * value / total if total else 0
        print(f"  {PART_NAMES.get(key, key):42s} {size(value):>11s}  {share:4.0f}%")
    print(f"  {'-' * 42} {'-' * 11}")
    print(f"  {'estimated peak':42s} {size(total):>11s}")
    print(f"  {'available on ' + verdict.device_label:42s} {size(verdict.available_bytes):>11s}\n")
    print(f"Verdict: {VERDICT_WORDS[verdict.verdict]}")
