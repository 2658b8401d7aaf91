"""One-command GPU proof: everything a CPU machine cannot show, in one JSON report, in under 10 minutes.

    python benchmarks/gpu_check.py [--model DIR_OR_HUB_ID] [--out gpu_check.json] [--steps 30]

Sections (each fails soft: its error is recorded and the next one runs):
  environment   torch / CUDA / GPU / optional kernel libraries
  doctor        `lora-tui doctor --json` (real NVML readings)
  train         QLoRA 4-bit training through the trainer process (`lora-tui train`'s), a few dozen
                steps, then the run-directory contract checked (config, events, status, adapter, card)
  estimates     estimate vs torch.cuda.max_memory_reserved for 3 plans (micro-batch / length / checkpointing)
  engine        Liger on/off x batching grouped / padding_free side by side: non-padding tokens/s, peak
  chat          one greedy answer with the adapter (`lora-tui chat --prompt`)
  merge         the adapter merged into the base (core.export.merge_adapter), loaded back, one forward

Model: --model, else the first of a few 0.5-1.5B instruct models found in the local Hugging Face
cache, else the embedded SmolLM2-135M. Needs only this repo's dependencies plus, optionally,
liger-kernel (pip install 'lora-tui[gpu]'); on a machine without internet carry the wheels as
/work/.library/device/README.md explains.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CANDIDATES = ("Qwen/Qwen2.5-0.5B-Instruct", "HuggingFaceTB/SmolLM2-360M-Instruct", "Qwen/Qwen2.5-1.5B-Instruct",
              "meta-llama/Llama-3.2-1B-Instruct")
PLANS = (  # estimate vs measured: (name, extra overrides)
    ("b1-s512", ["training.micro_batch=1", "data.max_seq_len=512", "training.gradient_checkpointing=off"]),
    ("b4-s1024", ["training.micro_batch=4", "data.max_seq_len=1024", "training.gradient_checkpointing=off"]),
    ("b4-s1024-ckpt", ["training.micro_batch=4", "data.max_seq_len=1024", "training.gradient_checkpointing=on"]),
    # micro_batch / checkpointing auto with room to grow (64 rows per step): the peak must stay inside the GPU
    ("auto-s1024", ["training.micro_batch=auto", "training.grad_accum=16", "data.max_seq_len=1024",
                    "training.gradient_checkpointing=auto"]),
)


def section(report: dict, name: str):
    """Decorator: run a section, store its result or its error, never raise."""
    def wrap(fn):
        started = time.monotonic()
        try:
            report[name] = {"ok": True, **(fn() or {})}
        except Exception as exc:
            report[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000],
                            "traceback": traceback.format_exc()[-3000:]}
        report[name]["seconds"] = round(time.monotonic() - started, 1)
        print(f"[{name}] {'ok' if report[name]['ok'] else 'FAILED: ' + report[name]['error'][:200]}"
              f" ({report[name]['seconds']} s)", flush=True)
        return fn
    return wrap


def pick_model(wanted: str) -> str:
    if wanted:
        return wanted
    from huggingface_hub import try_to_load_from_cache

    for repo in CANDIDATES:
        try:
            if isinstance(try_to_load_from_cache(repo, "config.json"), str):
                return repo
        except Exception:
            continue
    from lora_tui.core.embedded import ensure_embedded_model

    return str(ensure_embedded_model())


def train_run(root: Path, name: str, model: str, data: Path, steps: int, extra: list[str]) -> dict:
    """One training run through the trainer process; returns its facts from the run directory."""
    from lora_tui.core.config import Config, apply_overrides, save_config
    from lora_tui.core.runs import RunDirectory

    config = apply_overrides(Config(), [
        f"model.name={model}", "model.load_in=4bit", f"data.train={data}", "data.validation=", "data.val_fraction=0",
        "lora.r=16", "lora.alpha=32", f"training.max_steps={steps}", "training.grad_accum=1",
        "training.learning_rate=2e-4", "training.save_steps=0", "training.eval_steps=0", *extra])
    run = RunDirectory(root / name)
    run.path.mkdir(parents=True)
    save_config(config, run.config_path)
    with open(run.path / "train.log", "w") as log:
        rc = subprocess.run([sys.executable, "-m", "lora_tui.core.trainer_main", str(run.path)], stdout=log,
                            stderr=subprocess.STDOUT, timeout=420).returncode
    events = run.read_events()
    steps_ev = [e for e in events if e["type"] == "step"]
    started = next((e for e in events if e["type"] == "started"), {})
    memory = next((e for e in reversed(events) if e["type"] == "memory"), {})
    out = {"rc": rc, "state": run.read_status().get("state"), "run_dir": str(run.path),
           "engine": {k: started.get(k) for k in ("batching", "attention", "kernels", "gradient_checkpointing",
                                                   "precision", "quantized_layers", "micro_batch", "grad_accum")},
           "batch_reason": (started.get("engine_reasons") or {}).get("micro_batch"),
           "estimate_bytes": memory.get("memory_estimate_bytes"), "max_memory_reserved": memory.get("memory_peak_bytes"),
           "error_pct": memory.get("memory_error_pct"), "breakdown": memory.get("breakdown")}
    if len(steps_ev) >= 2:
        first, last = steps_ev[0], steps_ev[-1]
        seconds = last["elapsed_s"] - first["elapsed_s"]
        out["tokens_per_s"] = round((last["tokens_seen"] - first["tokens_seen"]) / seconds, 1) if seconds > 0 else None
        out["final_loss"] = last.get("loss")
    failed = next((e for e in events if e["type"] == "failed"), None)
    if failed:
        out["failed"] = failed.get("reason")
        out["log_tail"] = (run.path / "train.log").read_text(errors="replace")[-2000:]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="")
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--keep", default="", help="keep run directories here (default: a temporary folder)")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    report: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    root = Path(args.keep or tempfile.mkdtemp(prefix="gpu-check-"))
    root.mkdir(parents=True, exist_ok=True)
    sample = REPO / "sample_data" / "train.jsonl"
    long_tailed = root / "long_tailed.jsonl"
    state: dict = {}

    @section(report, "environment")
    def _():
        import torch

        from lora_tui.core.engine import kernel_libraries

        cuda = torch.cuda.is_available()
        return {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": cuda,
                "gpu": torch.cuda.get_device_name(0) if cuda else None,
                "capability": list(torch.cuda.get_device_capability(0)) if cuda else None,
                "bf16": torch.cuda.is_bf16_supported() if cuda else None, "kernels": kernel_libraries()}

    @section(report, "doctor")
    def _():
        out = subprocess.run([sys.executable, "-m", "lora_tui", "doctor", "--json"], capture_output=True, text=True, timeout=120)
        data = json.loads(out.stdout)
        return {"report": data, "gpus_seen_by_nvml": len(data.get("gpus") or [])}

    state["model"] = pick_model(args.model)
    report["model"] = state["model"]
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_long_tailed_data.py"), str(long_tailed)],
                   capture_output=True)

    @section(report, "train")
    def _():
        facts = train_run(root, "qlora", state["model"], sample, args.steps, ["training.micro_batch=4", "data.max_seq_len=512"])
        run = Path(facts["run_dir"])
        contract = {name: (run / name).exists() for name in
                    ("config.yaml", "events.jsonl", "status.json", "adapter/adapter_config.json",
                     "adapter/adapter_model.safetensors", "adapter/README.md")}
        kinds = [json.loads(line)["type"] for line in (run / "events.jsonl").read_text().splitlines() if line.strip()]
        contract["events_in_order"] = kinds[:1] == ["started"] and kinds[-1] == "finished" and "memory" in kinds
        state["run"] = run
        if facts["state"] != "finished":
            raise RuntimeError(f"training ended {facts['state']}: {facts.get('failed')}\n{facts.get('log_tail', '')}")
        return {**facts, "contract": contract, "contract_ok": all(contract.values())}

    @section(report, "estimates")
    def _():
        rows = {}
        for name, extra in PLANS:
            rows[name] = train_run(root, f"plan-{name}", state["model"], long_tailed, 6, extra)
        ok = [r for r in rows.values() if r.get("error_pct") is not None]
        return {"plans": rows, "within_goal": all(-5 <= r["error_pct"] <= 10 or
                                                   abs(r["estimate_bytes"] - r["max_memory_reserved"]) <= 2**29 for r in ok)}

    @section(report, "engine")
    def _():
        rows = {}
        for kernels in ("auto", "none"):
            for batching in ("grouped", "padding_free"):
                rows[f"kernels={kernels},batching={batching}"] = train_run(
                    root, f"engine-{kernels}-{batching}", state["model"], long_tailed, 10,
                    [f"training.kernels={kernels}", f"training.batching={batching}", "training.micro_batch=8",
                     "data.max_seq_len=1024"])
        return {"arms": {k: {f: v.get(f) for f in ("tokens_per_s", "max_memory_reserved", "estimate_bytes", "error_pct",
                                                   "engine", "state", "failed")} for k, v in rows.items()}}

    @section(report, "chat")
    def _():
        out = subprocess.run([sys.executable, "-m", "lora_tui", "chat", str(state["run"]), "--prompt",
                              "What is the largest ocean on Earth?", "--greedy", "--max-new-tokens", "48"],
                             capture_output=True, text=True, timeout=300)
        if out.returncode:
            raise RuntimeError(out.stderr[-1500:])
        return {"answer": out.stdout.strip()[-600:]}

    @section(report, "merge")
    def _():
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from lora_tui.core.export import merge_adapter

        merged = merge_adapter(state["run"], root / "merged", dtype="auto", overwrite=True)
        folder = Path(merged)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).to("cuda")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        ids = tokenizer("Ahoy", return_tensors="pt").to("cuda")
        with torch.no_grad():
            logits = model(**ids).logits
        return {"folder": str(folder), "finite": bool(torch.isfinite(logits).all()),
                "files": sorted(p.name for p in folder.iterdir())[:20]}

    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    report["all_ok"] = all(v.get("ok") for v in report.values() if isinstance(v, dict) and "ok" in v)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    print(f"report: {args.out} (all sections ok: {report['all_ok']})")
    return 0 if report["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
