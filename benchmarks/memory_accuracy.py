"""Estimated against measured peak memory of real LoRA / QLoRA training steps.

Each point runs in a fresh Python process that trains a few steps the way
``lora_tui.core.train.training`` does (transformers load, bitsandbytes for 4-bit plus
peft's prepare_model_for_kbit_training, peft LoRA, TRL SFTTrainer, AdamW) and
reports its peak: RSS (VmHWM, its own) on CPU; on CUDA, ``max_memory_reserved`` and
the NVML per-process peak. The parent never imports torch, so its own memory does
not leak into a child's figure. Prints a table and whether the goal holds: within
10% of measured (or 0.5 GiB, whichever is larger) and never more than 5% under.

    python benchmarks/memory_accuracy.py            # CPU matrix, plus GPU points when CUDA is present
    python benchmarks/memory_accuracy.py --quick    # 7 CPU points
    python benchmarks/memory_accuracy.py --json out.json
    python benchmarks/memory_accuracy.py --gpu-matrix --json gpu.json   # CUDA only: the engine matrix (issue 17)

The GPU matrix (``--gpu-matrix``, CUDA only) crosses what the trainer varies on a GPU: QLoRA and 16-bit
LoRA on random-weight Qwen2.5-1.5B and -7B shapes, checkpointing on / off, batching grouped /
padding-free / token budget, Liger on / off. Each point compares the estimate without the CUDA context
with ``torch.cuda.max_memory_reserved`` (what the trainer records), prints its error beside the goal
(-5 % .. +10 %, or within 0.5 GiB) and rewrites the JSON after every point, so a killed run keeps what
it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lora_tui.core.plan.memory import CUDA_CONTEXT_BYTES, Workload, estimate_memory  # noqa: E402
from lora_tui.core.units import GiB, MiB  # noqa: E402

STEPS = 3  # AdamW states exist from step 2 on, so the peak is reached by then
CPU_MATRIX = [  # (quant, r, batch, seq_len, grad_checkpointing[, batching[, dtype]]); fp32 unless named
    ("none", 8, 1, 128, False), ("none", 64, 1, 512, False), ("none", 8, 4, 128, False),
    ("none", 64, 4, 128, False), ("none", 8, 4, 512, False), ("none", 64, 4, 512, True),
    ("4bit", 8, 1, 128, False), ("4bit", 64, 1, 512, False), ("4bit", 8, 4, 128, False),
    ("4bit", 64, 4, 512, False),
]
# The trainer's engine modes (issue 9): micro-batch 8 x 512 with checkpointing, and padding-free rows.
CPU_MATRIX += [("none", 16, 8, 512, True), ("none", 8, 4, 512, False, "padding_free")]
# bf16 on the CPU: what precision=auto trains in on CPUs with native bf16 (core.config.effective_precision):
# bf16 weights, fp32 adapters, accelerate's CPU autocast.
BF16_MATRIX = [("none", 8, 1, 128, False, "grouped", "bfloat16"), ("none", 8, 4, 128, False, "grouped", "bfloat16"),
               ("none", 8, 4, 512, False, "grouped", "bfloat16"), ("none", 16, 8, 512, True, "grouped", "bfloat16")]
CPU_MATRIX += BF16_MATRIX
# Held out: no constant in core/plan/memory.py was fitted on these (2 x 512 sits at the 2 MiB huge-page threshold).
CPU_MATRIX += [("none", 8, 2, 512, False), ("none", 8, 2, 512, False, "grouped", "bfloat16"), ("4bit", 8, 2, 512, False),
               ("none", 8, 4, 256, True, "grouped", "bfloat16")]
# Checkpointed steps whose tensors stay under 2 MiB (CPU_FORWARD_RETAINED_CHECKPOINTED_SMALL was fitted on these
# and the point above), and two held out from that fit.
CPU_MATRIX += [("none", 8, 2, 512, True, "grouped", "bfloat16"), ("none", 8, 2, 256, True), ("none", 64, 1, 512, True),
               ("4bit", 8, 2, 256, True), ("none", 8, 4, 128, True), ("4bit", 8, 1, 512, True)]
QUICK = [CPU_MATRIX[0], CPU_MATRIX[2], CPU_MATRIX[6], CPU_MATRIX[10], CPU_MATRIX[11], BF16_MATRIX[1], BF16_MATRIX[3]]
# The same model cut to 6 layers (random weights): the head's share stays, the layers' shrinks,
# which separates the two CPU allocator terms the estimate calibrates.
SHALLOW_MATRIX = [("none", 8, 4, 512, False), ("none", 8, 4, 512, True), ("4bit", 8, 4, 512, False)]
# The engine matrix on a GPU (issue 17): (model, quant, r, micro-batch, tokens per row, gc, batching, liger).
# token_budget: one packed row of batch x seq_len tokens per micro-batch (TRL bfd packing, as the trainer runs it).
ENGINE_GPU_MATRIX = [
    (model, quant, 16, 4, 1024, gc, "grouped", liger)
    for model in ("Qwen2.5-1.5B",) for quant in ("4bit", "none") for gc in (False, True) for liger in (True, False)
] + [
    ("Qwen2.5-1.5B", "4bit", 16, 8, 512, False, "padding_free", True),
    ("Qwen2.5-1.5B", "4bit", 16, 8, 512, False, "token_budget", True),
    ("Qwen2.5-1.5B", "4bit", 16, 16, 512, True, "token_budget", True),
    ("Qwen2.5-1.5B", "none", 16, 8, 512, False, "token_budget", False),
    ("Qwen2.5-1.5B", "4bit", 16, 1, 512, False, "grouped", True),  # small steps: fixed costs dominate
    ("Qwen2.5-1.5B", "4bit", 16, 4, 128, False, "grouped", True),
    ("Qwen2.5-7B", "4bit", 16, 4, 1024, True, "grouped", True),
    ("Qwen2.5-7B", "4bit", 16, 4, 1024, False, "grouped", True),
    ("Qwen2.5-7B", "4bit", 16, 8, 1024, True, "token_budget", True),
    ("Qwen2.5-7B", "none", 16, 4, 1024, True, "grouped", True),
    ("Qwen2.5-7B", "none", 16, 8, 1024, True, "token_budget", False),
]
GPU_MATRIX = [  # catalogue models with random weights: (model, quant, r, batch, seq_len, gc)
    ("SmolLM2-360M", "none", 16, 4, 1024, False), ("Qwen2.5-0.5B", "none", 16, 4, 1024, False),
    ("Qwen2.5-0.5B", "4bit", 64, 4, 1024, False), ("Llama-3.2-1B", "none", 16, 8, 1024, False),
    ("Llama-3.2-1B", "4bit", 64, 8, 1024, False), ("Llama-3.2-1B", "none", 16, 8, 2048, True),
    ("Qwen2.5-1.5B", "4bit", 16, 4, 2048, False),
]


# ---------------------------------------------------------------- child side
def _child(spec: dict) -> None:
    import threading

    import psutil

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as the trainer does (core/engine.prefer_huge_pages)
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from lora_tui.core.train import engine

    result = {"rss_after_imports": psutil.Process().memory_info().rss}
    cuda = spec["device"] == "cuda"
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[spec["dtype"]]
    nvml_peak, device_peak, stop = [0], [0], threading.Event()
    if cuda:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        before = pynvml.nvmlDeviceGetMemoryInfo(handle).used  # before this process touches CUDA

        def watch():  # NVML sees the CUDA context too, which torch's counters do not
            while not stop.is_set():
                device_peak[0] = max(device_peak[0], pynvml.nvmlDeviceGetMemoryInfo(handle).used - before)
                for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if proc.pid == os.getpid() and proc.usedGpuMemory:  # pids differ inside some containers
                        nvml_peak[0] = max(nvml_peak[0], proc.usedGpuMemory)
                time.sleep(0.005)

        threading.Thread(target=watch, daemon=True).start()

    kwargs: dict = {"dtype": dtype}
    if spec["quant"] == "4bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
        kwargs["device_map"] = {"": 0} if cuda else {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(spec["path"], **kwargs)
    if spec["quant"] == "none" and cuda:
        model = model.to("cuda")
    if spec["quant"] != "none":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=spec["gc"])
    model = get_peft_model(model, LoraConfig(r=spec["r"], lora_alpha=2 * spec["r"], lora_dropout=0.05,
                                             target_modules=spec["targets"], bias="none", task_type="CAUSAL_LM"))
    model.config.use_cache = False  # as the trainer: packed rows get their block mask under sdpa
    # Real batches are padded: one row per micro-batch is a token shorter than the rest (packed bins stay full).
    b, s = spec["batch"], spec["seq_len"]
    budget = spec.get("batching") == "token_budget"
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(10, 49000, (s - (1 if b > 1 and not budget and k % b == b - 1 else 0),), generator=g).tolist()
            for k in range(b * STEPS)]
    data = Dataset.from_dict({"input_ids": rows, "labels": rows})
    precision = spec["dtype"]
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in SFTConfig.__dataclass_fields__ else "gradient_checkpointing"
    engine_kwargs: dict = {}
    if budget:  # the trainer's token budget (core/engine.sft_engine_kwargs): bins of b x s tokens, one per micro-batch
        engine_kwargs.update(packing=True, packing_strategy="bfd")
    if spec.get("liger"):
        engine_kwargs.update(use_liger_kernel=True, liger_kernel_config=dict(engine.LIGER_KERNELS))
    args = SFTConfig(
        output_dir=tempfile.mkdtemp(prefix="mem-bench-"), per_device_train_batch_size=1 if budget else b,
        gradient_accumulation_steps=1, **engine_kwargs,
        max_steps=STEPS, learning_rate=1e-4, logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        bf16=precision == "bfloat16", fp16=precision == "float16", use_cpu=not cuda,
        max_length=None if spec.get("batching") == "padding_free" else b * s if budget else s,
        train_sampling_strategy="sequential", dataloader_num_workers=0,
        padding_free=spec.get("batching") == "padding_free",
        **{checkpointing: spec["gc"], f"{checkpointing}_kwargs": {"use_reentrant": False} if spec["gc"] else None},
    )
    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer"])
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    engine.install_lean_head(trainer.model, engine.CUDA_VOCAB_TILE if cuda else engine.CPU_VOCAB_TILE)
    if spec["quant"] != "none" and precision != "bfloat16":  # as the trainer: TRL's bf16 adapters back to fp32
        for param in trainer.model.parameters():
            if param.requires_grad:
                param.data = param.data.float()
    if cuda:
        torch.cuda.synchronize()
    started = time.monotonic()
    trainer.train()
    result["train_seconds"] = round(time.monotonic() - started, 1)
    from lora_tui.core.plan.memory_record import peak_rss

    result["peak_rss"] = peak_rss()  # the child's own (ru_maxrss would carry the parent's over exec)
    if cuda:
        torch.cuda.synchronize()
        time.sleep(0.05)
        stop.set()
        result["max_reserved"] = torch.cuda.max_memory_reserved()
        result["max_allocated"] = torch.cuda.max_memory_allocated()
        result["nvml_peak"] = nvml_peak[0] or device_peak[0]
    print("RESULT " + json.dumps(result), flush=True)


def _build_random_model(name: str, out: str, tokenizer: str) -> None:
    """Child: save a model with random weights so a measured child can load it like a user's.

    name: a catalogue model (built in bf16 on the GPU), or "shallow" (the embedded model's
    config with 6 layers, fp32 on the CPU).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from lora_tui.core.model.catalogue import _raw_catalogue

    if name == "shallow":
        config = AutoConfig.from_pretrained(tokenizer)
        config.num_hidden_layers = 6
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(out)
        AutoTokenizer.from_pretrained(tokenizer).save_pretrained(out)
        return
    cfg = dict(_raw_catalogue()[name]["config"])
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer).save_pretrained(out)


# --------------------------------------------------------------- parent side
def _run_child(args: list[str], timeout: int = 900) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def _goal(estimated: int, measured: int) -> bool:
    return abs(estimated - measured) <= max(0.10 * measured, 0.5 * GiB) and estimated >= 0.95 * measured


def _gpu_goal(estimated: int, measured: int) -> bool:
    """Issue 17's goal on the GPU: -5 % .. +10 % of the measured peak, or within 0.5 GiB of it."""
    return abs(estimated - measured) <= 0.5 * GiB or -0.05 * measured <= estimated - measured <= 0.10 * measured


def _local_tokenizer() -> str:
    """A tokenizer for the random-weight models: the converted embedded model's (no download), its files only."""
    from lora_tui.core.paths import cache_dir

    for folder in sorted((cache_dir() / "models").glob("*")):
        if (folder / "tokenizer.json").exists() or (folder / "tokenizer_config.json").exists():
            return str(folder)
    from lora_tui.core.model.embedded import ensure_embedded_model

    return str(ensure_embedded_model())


def _build(name: str, out: str, tokenizer: str) -> None:
    build = subprocess.run([sys.executable, __file__, "--build", name, out, tokenizer], capture_output=True, text=True)
    if build.returncode:
        raise RuntimeError(f"building {name} failed:\n{build.stderr[-3000:]}")


def _cpu_points(matrix, model_dir: str, label: str = "SmolLM2-135M (embedded)") -> list[dict]:
    from lora_tui.core.model.catalogue import model_dims

    dims = model_dims(model_dir)
    rows = []
    for quant, r, batch, seq, gc, *mode in matrix:
        batching = mode[0] if mode else "grouped"
        dtype = mode[1] if len(mode) > 1 else "float32"
        # batch_shapes=1: the child's rows are all one length, so every micro-batch has the same matmul shapes
        plan = Workload(dims, quant=quant, r=r, batch=batch, seq_len=seq, grad_checkpointing=gc, device="cpu",
                          batching=batching, dtype=dtype, batch_shapes=1)
        est = estimate_memory(plan)
        spec = {"path": model_dir, "tokenizer": model_dir, "device": "cpu", "dtype": dtype, "quant": quant,
                "r": r, "batch": batch, "seq_len": seq, "gc": gc, "targets": dims.target_modules("all-linear"),
                "batching": batching}
        got = _run_child(["--child", json.dumps(spec)])
        rows.append({"device": "cpu", "model": label + ("" if batching == "grouped" else f", {batching}"), "dtype": dtype,
                     "quant": quant, "r": r, "batch": batch,
                     "seq_len": seq, "gc": gc, "estimated": est.total_bytes, "measured": got["peak_rss"],
                     "rss_after_imports": got["rss_after_imports"], "seconds": got["train_seconds"],
                     "breakdown": est.breakdown})
        _print_row(rows[-1])
    return rows


def _gpu_points(matrix, tokenizer: str) -> list[dict]:
    from lora_tui.core.model.catalogue import CATALOGUE

    rows, built = [], {}
    with tempfile.TemporaryDirectory(prefix="mem-bench-models-") as tmp:
        for name, quant, r, batch, seq, gc in matrix:
            if name not in built:
                built[name] = os.path.join(tmp, name)
                _build(name, built[name], tokenizer)
            dims = CATALOGUE[name]
            plan = Workload(dims, quant=quant, r=r, batch=batch, seq_len=seq, grad_checkpointing=gc, device="cuda")
            est = estimate_memory(plan)
            spec = {"path": built[name], "tokenizer": tokenizer, "device": "cuda", "dtype": "bfloat16", "quant": quant,
                    "r": r, "batch": batch, "seq_len": seq, "gc": gc, "targets": dims.target_modules("all-linear")}
            got = _run_child(["--child", json.dumps(spec)])
            measured = got["nvml_peak"] or got["max_reserved"] + CUDA_CONTEXT_BYTES
            rows.append({"device": "cuda", "model": name, "dtype": "bfloat16", "quant": quant, "r": r, "batch": batch, "seq_len": seq, "gc": gc,
                         "estimated": est.total_bytes, "measured": measured, "max_reserved": got["max_reserved"],
                         "estimated_without_context": est.total_bytes - est.breakdown.get("cuda_context", 0),
                         "nvml_peak": got["nvml_peak"], "seconds": got["train_seconds"], "breakdown": est.breakdown})
            _print_row(rows[-1])
    return rows


def _engine_gpu_points(matrix, tokenizer: str, out: str | None) -> list[dict]:
    """The GPU engine matrix, one fresh process per point; the JSON is rewritten after every point."""
    from lora_tui.core.model.catalogue import CATALOGUE

    rows, built = [], {}
    with tempfile.TemporaryDirectory(prefix="mem-bench-models-") as tmp:
        for name, quant, r, batch, seq, gc, batching, liger in matrix:
            try:
                if name not in built:
                    built[name] = os.path.join(tmp, name)
                    _build(name, built[name], tokenizer)
                dims = CATALOGUE[name]
                budget = batching == "token_budget"
                plan = Workload(dims, quant=quant, r=r, batch=1 if budget else batch, seq_len=batch * seq if budget else seq,
                                  grad_checkpointing=gc, device="cuda", batching="padding_free" if budget else batching,
                                  attention="sdpa", liger=liger)
                est = estimate_memory(plan)
                spec = {"path": built[name], "tokenizer": tokenizer, "device": "cuda", "dtype": "bfloat16", "quant": quant,
                        "r": r, "batch": batch, "seq_len": seq, "gc": gc, "targets": dims.target_modules("all-linear"),
                        "batching": batching, "liger": liger}
                got = _run_child(["--child", json.dumps(spec)])
                comparable = est.total_bytes - est.breakdown.get("cuda_context", 0)
                row = {"device": "cuda", "model": f"{name}, {batching}" + (", Liger" if liger else ""), "dtype": "bfloat16",
                       "quant": quant, "r": r, "batch": batch, "seq_len": seq, "gc": gc, "batching": batching, "liger": liger,
                       # the trainer's measure: max_memory_reserved against the estimate without the CUDA context
                       "estimated": comparable, "measured": got["max_reserved"], "max_reserved": got["max_reserved"],
                       "estimated_with_context": est.total_bytes, "nvml_peak": got["nvml_peak"],
                       "max_allocated": got["max_allocated"], "estimated_without_context": comparable,
                       "seconds": got["train_seconds"], "breakdown": est.breakdown}
            except Exception as exc:  # one failed point (OOM, a missing kernel) must not lose the others
                row = {"device": "cuda", "model": name, "quant": quant, "batch": batch, "seq_len": seq, "gc": gc,
                       "batching": batching, "liger": liger, "error": str(exc)[-800:]}
                print(f"cuda {name} {quant} b{batch} s{seq} {batching} liger={liger}: FAILED {str(exc)[-300:]}", flush=True)
            rows.append(row)
            if "error" not in row:
                _print_row(row)
            if out:  # as it goes: a killed run keeps what it measured
                tmp_out = Path(out).with_suffix(".tmp")
                tmp_out.write_text(json.dumps(rows, indent=1))
                os.replace(tmp_out, out)
    return rows


def _print_row(row: dict) -> None:
    err = 100 * (row["estimated"] - row["measured"]) / row["measured"]
    extra = ""
    if row["device"] == "cuda":
        extra = f"  reserved {row['max_reserved'] / MiB:7.0f} vs est-ctx {row['estimated_without_context'] / MiB:7.0f}"
    dtype = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(row.get("dtype"), "?")
    print(f"{row['device']:4s} {row['model'][:28]:28s} {dtype} {row['quant']:4s} r{row['r']:<3d} b{row['batch']:<2d} "
          f"s{row['seq_len']:<5d} gc={'y' if row['gc'] else 'n'}  est {row['estimated'] / MiB:7.0f} MiB  "
          f"measured {row['measured'] / MiB:7.0f} MiB  err {err:+6.1f}%  goal {'ok' if (_gpu_goal if row.get('batching') else _goal)(row['estimated'], row['measured']) else 'MISSED'}"
          f"  ({row['seconds']:.0f} s){extra}", flush=True)


def _anchors() -> None:
    """Published sanity figures, printed beside our arithmetic (no measurement)."""
    from lora_tui.core.plan import memory

    print("\nSanity anchors (published figures; our estimate for the same setting):")
    llama = "Llama-2-7B"  # LLaMA-1-7B has the same dimensions
    weights = estimate_memory(Workload(llama, quant="4bit", batch=1, seq_len=512)).breakdown["base_weights"]
    saved, memory.KBIT_UPCASTS_TO_FP32 = memory.KBIT_UPCASTS_TO_FP32, False
    weights16 = estimate_memory(Workload(llama, quant="4bit", batch=1, seq_len=512)).breakdown["base_weights"]
    memory.KBIT_UPCASTS_TO_FP32 = saved
    print(f"  LLaMA-7B 4-bit base weights: QLoRA paper 5,048 MB; ours {weights16 / 1e6:,.0f} MB with 16-bit embeddings, "
          f"{weights / 1e6:,.0f} MB after prepare_model_for_kbit_training's fp32 upcast")
    for name, billions in (("Llama-2-7B", 7), ("Llama-3.1-8B", 8), ("Qwen2.5-1.5B", 1.5)):
        q = estimate_memory(Workload(name, quant="4bit", batch=1, seq_len=512, grad_checkpointing=True)).total_bytes
        l16 = estimate_memory(Workload(name, quant="none", batch=1, seq_len=512, grad_checkpointing=True)).total_bytes
        print(f"  {name}: LLaMA-Factory QLoRA-4bit ~{billions / 2:g} GB, ours {q / 1e9:.1f} GB; "
              f"LoRA-16bit ~{2 * billions:g} GB, ours {l16 / 1e9:.1f} GB  (batch 1, 512 tokens, checkpointing)")


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        _child(json.loads(sys.argv[2]))
        return 0
    if len(sys.argv) > 4 and sys.argv[1] == "--build":
        _build_random_model(sys.argv[2], sys.argv[3], sys.argv[4])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seven CPU points only (the engine modes and bf16 included)")
    parser.add_argument("--cpu-only", action="store_true")
    parser.add_argument("--gpu-only", action="store_true")
    parser.add_argument("--gpu-matrix", action="store_true",
                        help="CUDA only: the engine matrix (QLoRA / 16-bit, 1.5B / 7B shapes, checkpointing, batching, Liger)")
    parser.add_argument("--json", default=None, help="also write every point to this file (as it goes with --gpu-matrix)")
    args = parser.parse_args()

    from lora_tui.core.model.embedded import ensure_embedded_model
    from lora_tui.core.machine.hardware import probe_hardware

    if args.gpu_matrix:
        hardware = probe_hardware(check_libraries=False)
        if not hardware.gpus:
            print(f"The GPU matrix needs a CUDA GPU ({hardware.nvml_error or 'none found'}).")
            return 2
        from lora_tui.core.machine.kernels import liger_available

        matrix = [p for p in ENGINE_GPU_MATRIX if liger_available() or not p[-1]]
        tokenizer = _local_tokenizer()
        print(f"GPU: {hardware.gpus[0].name}; {len(matrix)} points; measured = torch.cuda.max_memory_reserved, "
              "estimated = the estimate without the CUDA context (what the trainer compares)"
              + ("" if liger_available() else "; liger-kernel not installed: Liger points skipped"))
        rows = _engine_gpu_points(matrix, tokenizer, args.json)
        done = [r for r in rows if "error" not in r]
        ok = sum(_gpu_goal(r["estimated"], r["measured"]) for r in done)
        print(f"\nGoal met on {ok}/{len(done)} measured points ({len(rows) - len(done)} failed): "
              "within -5% .. +10% of max_memory_reserved, or 0.5 GiB.")
        return 0
    model_dir = str(ensure_embedded_model())
    rows: list[dict] = []
    if not args.gpu_only:
        print(f"CPU: SmolLM2-135M (fp32 checkpoint) trained in fp32 or bf16, {STEPS} training steps per point, "
              "peak RSS (VmHWM) of a fresh process")
        rows += _cpu_points(QUICK if args.quick else CPU_MATRIX, model_dir)
        if not args.quick:
            with tempfile.TemporaryDirectory(prefix="mem-bench-shallow-") as tmp:
                _build("shallow", tmp, model_dir)
                rows += _cpu_points(SHALLOW_MATRIX, tmp, label="SmolLM2-135M cut to 6 layers")
    hardware = probe_hardware(check_libraries=False)
    if not args.cpu_only and not args.quick:
        if hardware.gpus:
            print(f"\nGPU: {hardware.gpus[0].name}; measured = NVML per-process peak (context included)")
            rows += _gpu_points(GPU_MATRIX, model_dir)
        else:
            print(f"\nGPU points pending: no CUDA GPU here ({hardware.nvml_error or 'none found'}).")
    _anchors()
    if rows:
        ok = sum(_goal(r["estimated"], r["measured"]) for r in rows)
        print(f"\nGoal met on {ok}/{len(rows)} points (within max(10%, 0.5 GiB) and never >5% under measured).")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
