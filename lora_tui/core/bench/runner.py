"""`lora-tui bench`: N steps of lora-tui's trainer against plain TRL scripts, on the user's model, data, device.

Arms (each in its own OS process, so every peak is that arm's own):

  ours         the trainer `lora-tui train` starts, on the user's config (its defaults unless set),
               only max_steps set and saving / evaluation / validation switched off
  trl          (a) a plain TRL SFTTrainer script with TRL's defaults (core.plain_trl)
  trl_packing  (b) the same with TRL's packing

The TRL arms get the same model, LoRA (r, alpha, dropout, targets), max length, learning rate and
quantisation as ours; their micro-batch is TRL's default unless ``batch`` pins every arm to one.
Tokens/s: non-padding tokens between the first and the last optimiser step (loading left out).
Peak: torch.cuda.max_memory_reserved on a GPU, the process's max RSS on a CPU. MFU (GPU only):
tokens/s x 4N FLOPs per trained token / the GPU's dense bf16 peak, N the parameters a token
multiplies (linear layers + LM head; attention scores left out) — 2N forward + 2N for the input
gradients; LoRA trains no base weights, so the 2N of weight gradients never run.

Core module: no printing, no textual; torch never imported here (the children import it).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from lora_tui.core.bench import arm_process
from lora_tui.core.config import Config, ConfigError, apply_overrides, save_config
from lora_tui.core.run.started import Started

ARMS = {"ours": "lora-tui train (its defaults)", "trl": "(a) plain TRL, its defaults",
        "trl_packing": "(b) plain TRL + packing"}
DEFAULT_ARMS = ("ours", "trl", "trl_packing")
DEFAULT_STEPS = 12
# Dense bf16 TFLOP/s by GPU name: H200 measured (~790 of the 989 published); others published.
PEAK_TFLOPS = {"H200": 790.0, "H100": 790.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


class BenchError(ValueError):
    """Bad input for a bench (model, data, arm, steps): the message says what and how to fix it."""


@dataclass
class ArmResult:
    name: str
    label: str
    tokens_per_s: float | None = None
    tokens: int | None = None
    seconds: float | None = None
    peak_bytes: int | None = None
    mfu: float | None = None  # fraction of the GPU's peak, GPU only
    estimate_bytes: int | None = None  # ours only: lora-tui's estimate and its error against the peak
    estimate_error_pct: float | None = None
    estimate_measured_bytes: int | None = None  # the peak the trainer judged its estimate against
    settings: dict = field(default_factory=dict)
    step_tokens_per_s: list[float] = field(default_factory=list)  # each timed step's own rate (uneven_lines)
    error: str | None = None


@dataclass
class BenchReport:
    model: str
    data: str
    device: str
    steps: int
    peak_measure: str
    flops_per_token: int | None
    peak_tflops: float | None
    arms: dict[str, ArmResult]
    ratios: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def flops_per_token(model: str) -> int | None:
    """4N, N the weights one trained token multiplies (see the module docstring); None when unknown."""
    from lora_tui.core.model.catalogue import model_dims

    try:
        dims = model_dims(model)
    except Exception:
        return None
    groups = dims.module_groups
    per_module = dims.linear_modules
    attention = sum(a * b for n, (a, b) in per_module.items() if n in groups["attention"])
    mlp = sum(a * b for n, (a, b) in per_module.items() if n in groups["mlp"])
    n = dims.layers * (attention + mlp * dims.experts_per_token) + dims.vocab * dims.hidden
    return 4 * n


def mfu(tokens_per_s: float | None, flops: int | None, peak_tflops: float | None) -> float | None:
    """Model FLOPs utilisation: the share of the GPU's peak the trained tokens' 4N FLOPs use."""
    if not (tokens_per_s and flops and peak_tflops):
        return None
    return tokens_per_s * flops / (peak_tflops * 1e12)


def gpu_peak_tflops(gpu_name: str | None) -> float | None:
    for key, value in PEAK_TFLOPS.items():
        if gpu_name and key.lower() in gpu_name.lower():
            return value
    return None


def compute_ratios(arms: dict[str, ArmResult]) -> dict[str, float]:
    """ours against each TRL arm and the faster of them: tokens/s and peak, from the measured arms only."""
    ok = {k: a for k, a in arms.items() if a.error is None and a.tokens_per_s}
    out: dict[str, float] = {}
    if "ours" not in ok:
        return out
    mine = ok["ours"]
    for other in ("trl", "trl_packing"):
        if other in ok:
            out[f"tokens_per_s_vs_{other}"] = mine.tokens_per_s / ok[other].tokens_per_s
            if mine.peak_bytes and ok[other].peak_bytes:
                out[f"peak_vs_{other}"] = mine.peak_bytes / ok[other].peak_bytes
    rivals = [ok[k].tokens_per_s for k in ("trl", "trl_packing") if k in ok]
    if rivals:
        out["tokens_per_s_vs_faster_trl"] = mine.tokens_per_s / max(rivals)
    return out


def child_env(device: str) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    root = str(Path(__file__).resolve().parents[3])  # the children import this same lora_tui
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def bench_config(config: Config, steps: int, batch: int | None = None) -> Config:
    """The user's config for N timed steps: no checkpoints, no evaluation, no held-out rows."""
    from lora_tui.core.run.launcher import _absolute_data

    overrides = [f"training.max_steps={steps}", "training.save_steps=0", "training.eval_steps=0",
                 "training.early_stopping_patience=0", "data.validation=", "data.val_fraction=0",
                 "output.run_name=bench-ours", "training.devices=1"]
    if batch:
        overrides += [f"training.micro_batch={batch}", "training.grad_accum=1"]
    return _absolute_data(apply_overrides(config.copy(), overrides))


def check_inputs(config: Config, steps: int, arms: list[str]) -> None:
    """BenchError (one line) for what would only fail later: steps, arms, model, data."""
    from lora_tui.core.run.launcher import _check_startable
    from lora_tui.core.model.models import check_model_source
    from lora_tui.core.run.runs import RunError

    if steps < 2:
        raise BenchError(f"--steps {steps}: at least 2 optimiser steps are needed to time one. Fix: --steps 12.")
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise BenchError(f"--arms {','.join(arms)}: choose from {', '.join(ARMS)}.")
    if config.training.method != "sft" and "trl_packing" in arms:
        raise BenchError(f"--arms {','.join(arms)}: TRL 1.16's {config.training.method.upper()} trainer has no packing. "
                         "Fix: --arms ours,trl.")
    twice = sorted({a for a in arms if arms.count(a) > 1})
    if twice:
        raise BenchError(f"--arms {','.join(arms)}: {', '.join(twice)} named twice; each arm runs once. "
                         f"Fix: --arms {','.join(dict.fromkeys(arms))}.")
    try:
        _check_startable(config)
    except RunError as exc:
        raise BenchError(str(exc)) from None
    check = check_model_source(config.model.name, trust_remote_code=config.model.trust_remote_code)
    if not check.ok:
        raise BenchError(check.message)


def check_numbers(*, batch: int | None = None, peak_tflops: float | None = None, timeout: float | None = None) -> None:
    """BenchError (one line) for a number no bench can use: nan, infinite, zero or negative."""
    for flag, value, fix in (("--batch", batch, "--batch 4, or leave it out (each arm its default)"),
                             ("--peak-tflops", peak_tflops, "the GPU's dense bf16 TFLOP/s, e.g. --peak-tflops 790"),
                             ("--timeout", timeout, "seconds each arm may run, e.g. --timeout 1800, or leave it out")):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise BenchError(f"{flag} {value}: must be a number above 0. Fix: {fix}.")
        if flag == "--batch" and int(value) != value:
            raise BenchError(f"--batch {value}: must be a whole number of rows. Fix: {fix}.")


def trl_data(config: Config, out: Path) -> Path:
    """The user's rows as the JSONL a plain TRL script reads ({"messages"} or {"text"}; dpo / kto: TRL's
    conversational preference rows, core.bench.preference_data), as lora-tui reads them."""
    from lora_tui.core.data import DataError
    from lora_tui.core.data.load import load_examples

    if config.training.method != "sft":
        from lora_tui.core.bench.preference_data import preference_rows

        try:
            rows = preference_rows(config)
        except DataError as exc:
            raise BenchError(str(exc)) from None
        out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return out
    try:
        loaded = load_examples(config.data.train, max_seq_len=config.data.max_seq_len,
                               subset=getattr(config.data, "subset", None))  # a hub dataset's config name
    except DataError as exc:
        raise BenchError(str(exc)) from None
    if not loaded.examples:
        raise BenchError(f"{config.data.train}: no row can be trained. Fix: `lora-tui validate {shlex.quote(str(config.data.train))}`.")
    with open(out, "w", encoding="utf-8") as f:
        for ex in loaded.examples:
            f.write(json.dumps({"messages": ex.messages} if ex.messages else {"text": ex.text}) + "\n")
    return out


def _trl_targets(config: Config):
    if config.lora.targets == "all-linear":
        return "all-linear"
    from lora_tui.core.model.catalogue import model_dims

    return model_dims(config.model.name).target_modules(config.lora.targets)


def run_ours(config: Config, work: Path, env: dict, timeout: float | None, name: str = "ours") -> ArmResult:
    """lora-tui's trainer process on ``config`` (a bench_config), timed from its events."""
    from lora_tui.core.run.runs import RunDirectory

    arm = ArmResult(name, ARMS.get(name, name))
    run = RunDirectory(work / name)
    run.path.mkdir(parents=True)
    save_config(config, run.config_path)
    try:
        _, rss = arm_process.measured([sys.executable, "-m", "lora_tui.core.trainer_main", str(run.path)], env, timeout)
    except Exception as exc:
        rss = None
        arm.error = str(exc)[-800:]
    events = run.read_events()
    failed = next((e for e in events if e["type"] == "failed"), None)
    if failed:
        arm.error = str(failed.get("reason") or failed.get("error") or "failed")[-800:]
    steps = [e for e in events if e["type"] == "step"]
    started = Started.from_event(next((e for e in events if e["type"] == "started"), {}))
    memory = next((e for e in reversed(events) if e["type"] == "memory"), {})
    arm.settings = {"device": started.device, "precision": started.precision, "load_in": started.load_in,
                    "batching": started.batching, "attention": started.attention, "kernels": started.kernels,
                    "gradient_checkpointing": started.gradient_checkpointing, "micro_batch": started.micro_batch,
                    "grad_accum": started.grad_accum}
    if arm.error is None and len(steps) < 2:
        arm.error = f"{len(steps)} optimiser step(s) logged; two are needed to time one"
    if arm.error is None:
        first, last = steps[0], steps[-1]
        arm.tokens, arm.seconds = last["tokens_seen"] - first["tokens_seen"], last["elapsed_s"] - first["elapsed_s"]
        arm.tokens_per_s = arm.tokens / arm.seconds if arm.seconds > 0 else None
        arm.step_tokens_per_s = step_rates([(e["elapsed_s"], e["tokens_seen"]) for e in steps])
        cuda = str(started.device or "").startswith("cuda")
        arm.peak_bytes = memory.get("memory_peak_bytes") if cuda else rss
        arm.estimate_bytes = memory.get("memory_estimate_bytes")
        arm.estimate_error_pct = memory.get("memory_error_pct")
        arm.estimate_measured_bytes = memory.get("memory_peak_bytes")
    return arm


def run_plain(name: str, config: Config, data: Path, steps: int, batch: int | None, work: Path, env: dict,
              timeout: float | None, mode: str | None = None) -> ArmResult:
    """A plain TRL arm (core.plain_trl) with ``config``'s model, LoRA, length, rate and quantisation."""
    arm = ArmResult(name, ARMS.get(name, name))
    mode = mode or ("packing" if name == "trl_packing" else "defaults")
    from lora_tui.core.model.models import resolve_model_path

    spec = {"model": resolve_model_path(config.model.name), "data": str(data), "out": str(work / name),
            # a packed step carries several rows' tokens: half the steps keep the arm's time alike
            "steps": max(2, steps // 2) if mode == "packing" else steps, "batch": batch,
            "max_len": config.data.max_seq_len, "learning_rate": config.training.learning_rate, "mode": mode,
            "quant": "4bit" if config.model.load_in == "4bit" else "none",
            "lora": {"r": config.lora.r, "alpha": config.lora.alpha, "dropout": config.lora.dropout,
                     "targets": _trl_targets(config)}}
    if config.training.method != "sft":  # TRL's DPOTrainer / KTOTrainer with its defaults
        spec.update(method=config.training.method, beta=config.training.beta)
    try:
        out, rss = arm_process.measured([sys.executable, "-m", "lora_tui.core.bench.plain_trl", json.dumps(spec)], env, timeout)
        figures = json.loads(next(l for l in out.splitlines() if l.startswith("RESULT "))[7:])
    except Exception as exc:
        arm.error = str(exc)[-800:]
        return arm
    arm.tokens, arm.seconds, arm.tokens_per_s = figures["tokens"], figures["seconds"], figures["tokens_per_s"]
    arm.peak_bytes = figures.get("max_reserved") if figures.get("device") == "cuda" else rss
    arm.settings = {"device": figures.get("device"), **figures.get("settings", {})}
    arm.step_tokens_per_s = figures.get("step_tokens_per_s", [])
    return arm


UNEVEN = 2.0  # a timed step at under half its arm's median rate: said under the table


def step_rates(marks: list[tuple[float, int]]) -> list[float]:
    """Each timed step's tokens/s from (time, tokens seen) at the end of every optimiser step."""
    return [round((n1 - n0) / (t1 - t0), 2) for (t0, n0), (t1, n1) in zip(marks, marks[1:]) if t1 > t0]


def uneven_lines(report: BenchReport) -> list[str]:
    """One line per arm whose slowest timed step ran at under 1/UNEVEN of its median step: its tokens/s then
    hang on one step (another process, a stall), as the first dpo bench's x0.68 did (ours' step 2 at 31
    tokens/s, its other steps 144 and 225)."""
    import statistics

    lines = []
    for arm in report.arms.values():
        rates = arm.step_tokens_per_s
        if arm.error or len(rates) < 3:  # the median of two steps is their mean: no outlier to tell
            continue
        median, slowest = statistics.median(rates), min(rates)
        if slowest * UNEVEN < median:
            lines.append(f"{arm.label}: step {rates.index(slowest) + 2} ran at {slowest:,.0f} tokens/s, "
                         f"x{slowest / median:.2f} of its median step ({median:,.0f}): uneven (another process, "
                         "a stall?); rerun with more --steps before reading the ratio")
    return lines


def run_bench(config: Config, *, steps: int = DEFAULT_STEPS, arms: list[str] | tuple[str, ...] = DEFAULT_ARMS,
              device: str = "auto", batch: int | None = None, peak_tflops: float | None = None,
              timeout: float | None = None, work_dir: str | os.PathLike | None = None,
              on_arm: Callable[[ArmResult], None] | None = None,
              on_progress: Callable[[str, str], None] | None = None) -> BenchReport:
    """Run each arm in turn (one process each) and compare them. BenchError for bad input, before any arm runs.
    ``on_progress(arm, text)``: every second while an arm runs, what it is doing ("step 3/12, 45s")."""
    from lora_tui.core.machine.hardware import device_for, probe_hardware

    arms = list(arms)
    if config.training.method != "sft" and tuple(arms) == DEFAULT_ARMS:  # TRL's DPO / KTO: no packed arm
        arms = [a for a in arms if a != "trl_packing"]
    if device not in ("auto", "cpu", "cuda"):
        raise BenchError(f"--device {device}: one of auto, cpu, cuda.")
    check_numbers(batch=batch, peak_tflops=peak_tflops, timeout=timeout)
    hardware = probe_hardware(check_libraries=False)
    if device == "cuda" and not hardware.gpus:
        raise BenchError(f"--device cuda: no NVIDIA GPU here ({hardware.nvml_error or 'none found'}). Fix: --device cpu.")
    used = device_for(hardware, None if device == "auto" else device)
    if used == "cpu" and config.model.load_in != "16bit" and any(a != "ours" for a in arms):
        raise BenchError(f"model.load_in={config.model.load_in} needs a GPU for the TRL arms (bitsandbytes). "
                         "Fix: model.load_in=16bit on a CPU.")
    try:
        ours = bench_config(config, steps, batch)
    except ConfigError as exc:
        raise BenchError(str(exc)) from None
    check_inputs(ours, steps, arms)
    gpu_name = hardware.gpus[0].name if used == "cuda" and hardware.gpus else None
    peak = peak_tflops or gpu_peak_tflops(gpu_name)
    report = BenchReport(model=config.model.name, data=ours.data.train, device=gpu_name or used, steps=steps,
                         peak_measure="torch.cuda.max_memory_reserved" if used == "cuda" else "max RSS",
                         flops_per_token=flops_per_token(config.model.name), peak_tflops=peak, arms={})
    env = child_env(used)
    with arm_process.sigterm_ends_the_bench(), tempfile.TemporaryDirectory(prefix="lora-tui-bench-", dir=work_dir) as tmp:
        work = Path(tmp)
        data = trl_data(ours, work / "trl_data.jsonl") if any(a != "ours" for a in arms) else None
        for name in arms:
            with _watching(name, work, on_progress):  # which arm, which step, how long: said every second
                if name == "ours":
                    result = run_ours(ours, work, env, timeout)
                else:
                    result = run_plain(name, ours, data, steps, batch, work, env, timeout)
            if used == "cuda":
                result.mfu = mfu(result.tokens_per_s, report.flops_per_token, peak)
            report.arms[name] = result
            if on_arm is not None:
                on_arm(result)
    report.ratios = compute_ratios(report.arms)
    return report


PROGRESS_FILE = "progress"  # core.bench.plain_trl writes "step/max_steps" there after each optimiser step


def arm_doing(name: str, work: Path) -> str:
    """What an arm is doing now, read from its folder: ours from its run's events (its phases, the evaluation,
    the step), a plain TRL arm from the step file its script writes."""
    if name == "ours":
        from lora_tui.core.run.history import RunHistory
        from lora_tui.core.run.runs import RunDirectory

        run = RunDirectory(work / name)
        if not run.events_path.exists():
            return "starting"
        history = RunHistory.of(run)
        if history.last_step:
            return f"step {history.step}/{history.max_steps or '?'}"
        if history.progress:  # a start-up phase, an evaluation
            return str(history.progress.get("message") or "starting")
        return "waiting for step 1" if history.started else "starting"
    try:
        done = (work / name / PROGRESS_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        done = ""
    return f"step {done}" if done else "loading the model and data"


@contextlib.contextmanager
def _watching(name: str, work: Path, on_progress: Callable[[str, str], None] | None, every: float = 1.0):
    """While an arm runs: every ``every`` seconds, ``on_progress(arm, "step 3/12, 45s")`` from a thread."""
    if on_progress is None:
        yield
        return
    from lora_tui.core.units import human_duration

    stop, began = threading.Event(), time.monotonic()

    def loop() -> None:
        while not stop.wait(every):
            try:
                on_progress(name, f"{arm_doing(name, work)}, {human_duration(time.monotonic() - began)}")
            except Exception:  # a progress line must never end a bench
                pass

    thread = threading.Thread(target=loop, name=f"bench-{name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def table_rows(report: BenchReport) -> list[tuple[str, str, str, str]]:
    """(arm, tokens/s, peak, MFU) as text, for the CLI and the wizard alike."""
    rows = []
    for arm in report.arms.values():
        if arm.error:
            rows.append((arm.label, "failed", arm.error.strip().splitlines()[-1][:60] if arm.error.strip() else "", ""))
            continue
        peak = f"{arm.peak_bytes / 2**30:.2f} GiB" if arm.peak_bytes else "?"
        mfu = f"{100 * arm.mfu:.1f} %" if arm.mfu is not None else "-"
        rows.append((arm.label, f"{arm.tokens_per_s:,.0f}" if arm.tokens_per_s else "?", peak, mfu))
    return rows


def summary_lines(report: BenchReport) -> list[str]:
    """The ratios and the estimate's error, one line each."""
    r, lines = report.ratios, []
    for other, label in (("trl", "(a)"), ("trl_packing", "(b)")):
        if f"tokens_per_s_vs_{other}" in r:
            peak = f", peak memory x{r[f'peak_vs_{other}']:.2f}" if f"peak_vs_{other}" in r else ""
            lines.append(f"ours / {label}: tokens/s x{r[f'tokens_per_s_vs_{other}']:.2f}{peak}")
    if "tokens_per_s_vs_faster_trl" in r:
        lines.append(f"ours / the faster TRL arm: tokens/s x{r['tokens_per_s_vs_faster_trl']:.2f}")
    lines += uneven_lines(report)
    ours = report.arms.get("ours")
    if ours and ours.estimate_bytes:
        measured = (f" vs measured {ours.estimate_measured_bytes / 2**30:.2f} GiB ({ours.estimate_error_pct:+.1f} %)"
                    if ours.estimate_measured_bytes and ours.estimate_error_pct is not None else " (no peak measured)")
        lines.append(f"lora-tui's memory estimate: {ours.estimate_bytes / 2**30:.2f} GiB{measured}")
    if report.flops_per_token and report.peak_tflops:
        lines.append(f"MFU = tokens/s x {report.flops_per_token / 1e9:.2f} GFLOP per trained token (4N) / "
                     f"{report.peak_tflops:.0f} TFLOP/s dense bf16")
    return lines
