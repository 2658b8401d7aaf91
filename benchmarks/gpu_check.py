"""One-command GPU proof: everything a CPU machine cannot show, in one JSON report, within a time budget.

    python benchmarks/gpu_check.py [--shape qwen2.5-1.5b | --model DIR_OR_HUB_ID] [--out gpu_check.json]
                                   [--budget 360] [--steps 20] [--keep DIR]

Sections, in this order, each with its share of --budget (seconds; 360 = 6 minutes on one H200 with
the 1.5B shape). Each fails soft (its error is recorded and the next one runs), stops its runs when
its share is spent (the rest are marked "skipped: budget"), and the JSON is rewritten atomically
after every section, so a killed check keeps what it measured:

  environment   torch / CUDA / GPU / optional kernel libraries
  doctor        `lora-tui doctor --json` (real NVML readings)
  train         QLoRA 4-bit training through the trainer process (`lora-tui train`'s), --steps steps,
                then the run-directory contract checked (config, events, status, adapter, card)
  chat          one greedy answer with the adapter (`lora-tui chat --prompt`)
  merge         the adapter merged into the base (core.export.merge_adapter), loaded back, one forward
  estimates     estimate vs torch.cuda.max_memory_reserved for a few plans (micro-batch / length / checkpointing)
  engine        Liger on/off x batching grouped / padding_free side by side: non-padding tokens/s, peak

Model: --shape builds a random-weight checkpoint of that real shape (benchmarks/make_shaped_models.py;
memory and speed depend on shapes only, and a bare GPU machine has no hub) with any local tokenizer
(--tokenizer, else the embedded model's, else a BPE built from the sample data); else --model; else
the embedded SmolLM2-135M. --device cpu with --tiny runs every section on a CPU with tiny dimensions
of the shape (a dry run of this script, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
# Share of --budget per section (sums to 1).
SHARES = {"environment": 0.02, "doctor": 0.06, "train": 0.25, "chat": 0.10, "merge": 0.14, "estimates": 0.21,
          "engine": 0.22}
PLANS = (  # estimate vs measured: (name, extra overrides)
    ("b1-s512", ["training.micro_batch=1", "data.max_seq_len=512", "training.gradient_checkpointing=off"]),
    ("b4-s1024-ckpt", ["training.micro_batch=4", "data.max_seq_len=1024", "training.gradient_checkpointing=on"]),
    ("b4-s1024", ["training.micro_batch=4", "data.max_seq_len=1024", "training.gradient_checkpointing=off"]),
    ("auto-s1024", ["training.micro_batch=auto", "training.grad_accum=16", "data.max_seq_len=1024",
                    "training.gradient_checkpointing=auto"]),
)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


def write_json(path: Path, report: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    os.replace(tmp, path)


def run_section(report: dict, out: Path, name: str, seconds: float, fn) -> None:
    """Run one section with its budget; store its result or its error; rewrite the JSON; never raise."""
    started = time.monotonic()
    try:
        report[name] = {"ok": True, "budget_s": round(seconds), **(fn(Budget(seconds)) or {})}
    except Exception as exc:
        report[name] = {"ok": False, "budget_s": round(seconds), "error": f"{type(exc).__name__}: {exc}"[:2000],
                        "traceback": traceback.format_exc()[-3000:]}
    report[name]["seconds"] = round(time.monotonic() - started, 1)
    print(f"[{name}] {'ok' if report[name]['ok'] else 'FAILED: ' + report[name]['error'][:200]}"
          f" ({report[name]['seconds']} s of {round(seconds)})", flush=True)
    write_json(out, report)


_ACTIVE: set[int] = set()  # process groups of the runs in flight, killed with this script


def _on_term(signum, frame):
    for group in list(_ACTIVE):  # a run in its own session would outlive the kit's `timeout` and hold the GPU
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    sys.exit(128 + signum)


def run_bounded(cmd: list[str], seconds: float, log: Path, env: dict | None = None) -> int | str:
    """Run ``cmd`` in its own process group for at most ``seconds``; 'timeout' when it was killed."""
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        _ACTIVE.add(proc.pid)
        try:
            return proc.wait(timeout=max(1.0, seconds))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return "timeout"
        finally:
            _ACTIVE.discard(proc.pid)


def pick_model(args, root: Path) -> str:
    if args.shape:
        from make_shaped_models import build, find_tokenizer

        models = Path(args.models_dir or root / "models")
        target = models / (args.shape + ("-tiny" if args.tiny else ""))
        if not (target / "lora_tui_shape.json").is_file():
            import torch

            device = "cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"
            build(args.shape, target, find_tokenizer(args.tokenizer, models), device=device, **(TINY if args.tiny else {}))
        return str(target)
    if args.model:
        return args.model
    from lora_tui.core.model.embedded import ensure_embedded_model

    return str(ensure_embedded_model())


def train_run(root: Path, name: str, model: str, data: Path, steps: int, extra: list[str], seconds: float,
              load_in: str) -> dict:
    """One training run through the trainer process (killed when ``seconds`` run out); its facts."""
    from lora_tui.core.config import Config, apply_overrides, save_config
    from lora_tui.core.run.runs import RunDirectory

    config = apply_overrides(Config(), [
        f"model.name={model}", f"model.load_in={load_in}", f"data.train={data}", "data.validation=",
        "data.val_fraction=0", "lora.r=16", "lora.alpha=32", f"training.max_steps={steps}", "training.grad_accum=1",
        "training.learning_rate=2e-4", "training.save_steps=0", "training.eval_steps=0", *extra])
    run = RunDirectory(root / name)
    run.path.mkdir(parents=True)
    save_config(config, run.config_path)
    rc = run_bounded([sys.executable, "-m", "lora_tui.core.trainer_main", str(run.path)], seconds, run.path / "train.log")
    events = run.read_events()
    steps_ev = [e for e in events if e["type"] == "step"]
    started = next((e for e in events if e["type"] == "started"), {})
    memory = next((e for e in reversed(events) if e["type"] == "memory"), {})
    out = {"rc": rc, "state": run.read_status().get("state"), "run_dir": str(run.path), "steps_done": len(steps_ev),
           "engine": {k: started.get(k) for k in ("device", "batching", "attention", "kernels", "gradient_checkpointing",
                                                   "precision", "quantized_layers", "micro_batch", "grad_accum")},
           "batch_reason": (started.get("engine_reasons") or {}).get("micro_batch"),
           "estimate_bytes": memory.get("memory_estimate_bytes"), "max_memory_reserved": memory.get("memory_peak_bytes"),
           "error_pct": memory.get("memory_error_pct"), "breakdown": memory.get("breakdown")}
    if len(steps_ev) >= 2:
        first, last = steps_ev[0], steps_ev[-1]
        elapsed = last["elapsed_s"] - first["elapsed_s"]
        out["tokens_per_s"] = round((last["tokens_seen"] - first["tokens_seen"]) / elapsed, 1) if elapsed > 0 else None
        out["final_loss"] = last.get("loss")
    failed = next((e for e in events if e["type"] == "failed"), None)
    if failed or rc not in (0,):
        out["failed"] = (failed or {}).get("reason") or f"trainer exit {rc}"
        out["log_tail"] = (run.path / "train.log").read_text(errors="replace")[-2000:]
    return out


def runs_within(budget: Budget, plans: list[tuple[str, object]], run_one) -> dict:
    """Run plans in order while the budget lasts; the rest are recorded as skipped."""
    rows = {}
    for name, plan in plans:
        left = budget.left()
        if left < 15:  # too little to load a model and time a step
            rows[name] = {"skipped": "budget"}
            continue
        rows[name] = run_one(name, plan, left)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="", help="build and use a random-weight model of this shape "
                        "(qwen2.5-0.5b, qwen2.5-1.5b, qwen2.5-7b, llama-3.1-8b)")
    parser.add_argument("--model", default="", help="a model directory or hub id (default: the embedded model)")
    parser.add_argument("--tokenizer", default="", help="--shape: a local tokenizer folder")
    parser.add_argument("--models-dir", default="", help="--shape: where built models are kept and reused")
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--budget", type=float, default=360.0, help="seconds for every section together")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: a dry run (16-bit, no GPU)")
    parser.add_argument("--tiny", action="store_true", help="--shape with tiny dimensions (CPU dry run)")
    parser.add_argument("--keep", default="", help="keep run directories here (default: a temporary folder)")
    args = parser.parse_args()
    total = Budget(args.budget)  # from the start: data and model building count too
    signal.signal(signal.SIGTERM, _on_term)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    load_in = "4bit" if args.device == "cuda" else "16bit"
    out = Path(args.out)
    report: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "budget_s": args.budget,
                    "shape": args.shape or None, "device": args.device}
    root = Path(args.keep or tempfile.mkdtemp(prefix="gpu-check-"))
    root.mkdir(parents=True, exist_ok=True)
    sample = REPO / "sample_data" / "train.jsonl"
    long_tailed = root / "long_tailed.jsonl"
    state: dict = {}
    write_json(out, report)

    def environment(budget):
        import torch

        from lora_tui.core.machine.kernels import kernel_libraries

        cuda = torch.cuda.is_available()
        return {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": cuda,
                "gpu": torch.cuda.get_device_name(0) if cuda else None,
                "capability": list(torch.cuda.get_device_capability(0)) if cuda else None,
                "bf16": torch.cuda.is_bf16_supported() if cuda else None, "kernels": kernel_libraries()}

    def doctor(budget):
        done = subprocess.run([sys.executable, "-m", "lora_tui", "doctor", "--json"], capture_output=True, text=True,
                              timeout=max(5.0, budget.left()))
        data = json.loads(done.stdout)
        return {"report": data, "gpus_seen_by_nvml": len(data.get("gpus") or [])}

    def train(budget):
        started = time.monotonic()
        state["model"] = pick_model(args, root)
        report["model"] = state["model"]
        built = round(time.monotonic() - started, 1)
        facts = train_run(root, "qlora", state["model"], sample, args.steps,
                          ["training.micro_batch=4", "data.max_seq_len=512"], budget.left(), load_in)
        run = Path(facts["run_dir"])
        contract = {name: (run / name).exists() for name in
                    ("config.yaml", "events.jsonl", "status.json", "adapter/adapter_config.json",
                     "adapter/adapter_model.safetensors", "adapter/README.md")}
        kinds = [json.loads(line)["type"] for line in (run / "events.jsonl").read_text().splitlines() if line.strip()]
        contract["events_in_order"] = kinds[:1] == ["started"] and kinds[-1] == "finished" and "memory" in kinds
        state["run"] = run
        if facts["state"] != "finished":
            raise RuntimeError(f"training ended {facts['state']} after {facts['steps_done']} steps: "
                               f"{facts.get('failed')}\n{facts.get('log_tail', '')}")
        return {**facts, "model_build_s": built, "contract": contract, "contract_ok": all(contract.values())}

    def chat(budget):
        if "run" not in state:
            raise RuntimeError("no trained run (the train section failed)")
        done = subprocess.run([sys.executable, "-m", "lora_tui", "chat", str(state["run"]), "--prompt",
                               "What is the largest ocean on Earth?", "--greedy", "--max-new-tokens", "32"],
                              capture_output=True, text=True, timeout=max(5.0, budget.left()))
        if done.returncode:
            raise RuntimeError(done.stderr[-1500:])
        return {"answer": done.stdout.strip()[-600:]}

    def merge(budget):
        if "run" not in state:
            raise RuntimeError("no trained run (the train section failed)")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from lora_tui.core.export.artefacts import merge_adapter

        device = "cuda" if torch.cuda.is_available() else "cpu"
        merged = merge_adapter(state["run"], root / "merged", dtype="auto", overwrite=True)
        folder = Path(merged)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).to(device)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        ids = tokenizer("Ahoy", return_tensors="pt").to(device)
        with torch.no_grad():
            logits = model(**ids).logits
        return {"folder": str(folder), "finite": bool(torch.isfinite(logits).all()),
                "files": sorted(p.name for p in folder.iterdir())[:20]}

    def estimates(budget):
        if "model" not in state:
            raise RuntimeError("no model (the train section failed before building it)")
        rows = runs_within(budget, list(PLANS), lambda name, extra, left: train_run(
            root, f"plan-{name}", state["model"], long_tailed, 4, extra, left, load_in))
        ok = [r for r in rows.values() if r.get("error_pct") is not None]
        return {"plans": rows, "within_goal": all(-5 <= r["error_pct"] <= 10 or
                                                   abs(r["estimate_bytes"] - r["max_memory_reserved"]) <= 2**29 for r in ok)}

    def engine(budget):
        if "model" not in state:
            raise RuntimeError("no model (the train section failed before building it)")
        arms = [(f"kernels={k},batching={b}", [f"training.kernels={k}", f"training.batching={b}"])
                for k in ("auto", "none") for b in ("grouped", "padding_free")]
        rows = runs_within(budget, arms, lambda name, extra, left: train_run(
            root, "engine-" + name.replace(",", "-").replace("=", "_"), state["model"], long_tailed, 6,
            extra + ["training.micro_batch=8", "data.max_seq_len=1024"], left, load_in))
        keep = ("tokens_per_s", "max_memory_reserved", "estimate_bytes", "error_pct", "engine", "state", "failed",
                "skipped")
        return {"arms": {k: {f: v.get(f) for f in keep if f in v} for k, v in rows.items()}}

    subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_long_tailed_data.py"), str(long_tailed)],
                   capture_output=True)
    sections = [("environment", environment), ("doctor", doctor), ("train", train), ("chat", chat), ("merge", merge),
                ("estimates", estimates), ("engine", engine)]
    for index, (name, fn) in enumerate(sections):
        # a section's share, plus what earlier sections left unspent, never past the whole budget
        later = sum(SHARES[n] for n, _ in sections[index + 1:])
        seconds = max(0.0, total.left() - later * args.budget)
        run_section(report, out, name, seconds, fn)
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    report["all_ok"] = all(v.get("ok") for v in report.values() if isinstance(v, dict) and "ok" in v)
    write_json(out, report)
    print(f"report: {out} (all sections ok: {report['all_ok']})")
    return 0 if report["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
