"""Peak memory of a planned LoRA / QLoRA run, from the model's config alone, and
whether it fits the device in front of the user (with ranked fixes when not).

The estimate mirrors what ``lora_tui.core.train.training`` actually runs: transformers
+ peft + TRL's SFTTrainer (whose fused LM head never builds the full logits),
AdamW, bitsandbytes for 8/4-bit loads followed by peft's
``prepare_model_for_kbit_training`` (which upcasts the 16-bit leftovers to fp32).
Activation terms count the tensors autograd saves for backward, op by op (see
``_layer_bytes``); that count matches autograd's own to the byte on CPU for
Llama-like models. Constants marked "measured" come from
``benchmarks/memory_accuracy.py``. Pure arithmetic: never imports torch, never
loads weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from lora_tui.core.model.catalogue import ModelDims, model_dims
from lora_tui.core.units import MiB

QUANTS = ("none", "8bit", "4bit")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

# CPU constants, fitted once on 14 measured points (benchmarks/memory_accuracy.py: the
# embedded model's matrix twice, plus a 6-layer variant that separates the two terms
# below), then re-measured. Process: torch, transformers, peft, trl, datasets imported
# (530 MiB measured) plus trainer, tokenizer and data.
CPU_PROCESS_BYTES = 610 * MiB
CPU_IMPORTS_BYTES = 530 * MiB  # the same process while the model loads (libraries only, measured)
# dpo / kto: the process while the model loads, the preference rows already tokenized into datasets (TRL's trainer is
# built around the loaded model). Measured before the load: 608 and 611 MiB (dpo, embedded model, sample pairs).
CPU_PREFERENCE_LOAD_BYTES = 610 * MiB
# Without Triton, TRL's chunked log-prob runs each [tokens x 32768] fp32 tile through a
# dozen temporaries: this many tile-sized buffers at the peak.
CPU_HEAD_TILE_COPIES = 7.5
# glibc keeps much of what the forward pass allocated and freed (its arenas rarely shrink),
# so peak RSS carries this share of the full, uncheckpointed activation volume, even when
# gradient checkpointing frees it.
CPU_FORWARD_RETAINED = 0.6
# The trainer asks PyTorch for transparent huge pages (core/engine.prefer_huge_pages). With checkpointing,
# glibc then keeps far less of the forward's freed memory: peak RSS of a checkpointed 8 x 512 step was
# 6.67 GiB with 4 KiB pages and 3.64 GiB with huge pages (measured); this share of the full volume remains.
CPU_FORWARD_RETAINED_TUNED = 0.09  # 8 x 512 checkpointed: 3.20 GiB (memory_accuracy), 3.64 GiB (step probe)
# Without checkpointing the same holds once the step's tensors are large: PyTorch serves allocations of at least
# THP_THRESHOLD_BYTES as separate 2 MiB-aligned huge-page blocks that go back to the system when freed, while
# smaller ones live in glibc's heap, which keeps them (CPU_FORWARD_RETAINED). Measured at 4 x 512 tokens, fp32,
# no checkpointing: 0.05 (30 layers), 0.15 (6 layers), 0.15 (padding-free) of the volume retained.
THP_THRESHOLD_BYTES = 2 * MiB
# ... except where every layer also churns short-lived buffers under 2 MiB through the heap between the
# activations: bitsandbytes' CPU path dequantizes each 4-bit weight into a fresh fp32 matrix per matmul (q/k/v/o:
# under 2 MiB), and bf16 autocast casts at every op. Measured at 4 x 512 without checkpointing: 0.32 of the volume
# retained with 4-bit (r64) and 0.32 with bf16 (fitted on those two points; with checkpointing bf16 kept 0.06).
CPU_FORWARD_RETAINED_CHURN = 0.32
# With checkpointing and tensors under 2 MiB the recomputed layers go through glibc's heap, which keeps more.
# Measured share of the volume (checkpointed, 512-1024 tokens): fp32 0.28-0.30, 4-bit 0.39, bf16 0.14-0.16;
# one share for all, fitted on those five points (bf16 stays inside the 0.5 GiB allowance).
CPU_FORWARD_RETAINED_CHECKPOINTED_SMALL = 0.35
# The trainer's lean head (core/train/engine.py) scores only labelled positions, in narrower vocabulary
# tiles on CPU; TRL's own fused head scores every position in 32768-wide tiles.
LEAN_VOCAB_TILE = {"cpu": 8192, "cuda": 32768}
# CPU bf16 matmuls run through oneDNN, which compiles and caches a kernel for every new matmul shape, and a micro-batch
# of real rows brings new shapes (its padded length, its count of labelled tokens for the head) until the caches hold
# ONEDNN_CACHE_KERNELS (the default capacity of oneDNN's primitive cache and of ideep's LRU_CACHE_CAPACITY). Measured
# (torch 2.13, oneDNN 3.12, avx512_core_bf16): 0.59 MiB of heap a kernel (malloc's in-use bytes, whatever the matrix
# sizes) and ~0.7 MiB of RSS with the heap it fragments; fp32 matmuls go through MKL and cache nothing. A tiny Llama's
# bf16 run grew 621 -> 1085 MiB over 30 micro-batches; 701 MiB with both caches at 1 kernel, 705 MiB in fp32.
ONEDNN_KERNEL_BYTES = int(0.7 * MiB)
ONEDNN_CACHE_KERNELS = 1024
ONEDNN_ATTENTION_KERNELS = 6  # the attention's blocked matmuls (sdpa's CPU kernel, or eager's bmm) for a new length,
# per distinct head size (measured: 6 for Gemma 3's one head size; 4 + 4 for Gemma 4's two, unscaled: no scale variants)
BATCHING = ("grouped", "padding_free", "packed")
ATTENTION = ("sdpa", "eager", "flash")
# GPU: the CUDA context and kernels (~0.5 GiB, seen by NVML, never by torch.cuda.max_memory_reserved: the
# trainer compares its estimate without it), and the caching allocator's rounding / fragmentation.
CUDA_CONTEXT_BYTES = 512 * MiB
GPU_ALLOCATOR_SLACK = 0.10
# cuBLAS and cuBLASLt workspaces, allocated through the caching allocator (so inside max_memory_reserved):
# PyTorch's default is 4096 KiB x 8 per handle on Hopper plus the Lt workspace; one stream here.
CUDA_WORKSPACE_BYTES = 64 * MiB
# TRL's fused LM head tiles: tokens x vocabulary columns per tile.
HEAD_TOKEN_TILE, HEAD_VOCAB_TILE = 4096, 32768
# lora_tui.core.train.training calls peft.prepare_model_for_kbit_training on 8/4-bit loads,
# which turns embeddings, lm_head and norms into fp32 on every device.
KBIT_UPCASTS_TO_FP32 = True
FITS_BELOW = 0.90  # estimate / available under this: "fits"; up to 1.0: "tight"


@dataclass
class Workload:
    """A planned run, in the terms the estimate needs (see Workload.dims for the model)."""

    model: str | ModelDims
    quant: str = "none"  # "none" | "8bit" | "4bit"
    double_quant: bool = True
    r: int = 16
    targets: str | list[str] = "all-linear"  # "qv" | "attention" | "all-linear" | module names
    seq_len: int = 1024
    batch: int = 4  # micro-batch
    grad_checkpointing: bool = False
    device: str = "cuda"  # "cpu" | "cuda"
    dtype: str | None = None  # None: precision auto (CPU: see cpu_native_bf16; GPU: bf16, fp16 where missing: same bytes)
    cpu_native_bf16: bool = False  # the CPU computes bf16 natively (core.config.cpu_has_bf16): auto trains 16-bit loads in bf16
    dropout: float = 0.05  # LoRA dropout > 0 keeps a dropped-out copy of each adapted layer's input
    loss_head: str = "lean"  # "lean": the trainer's head; "chunked": TRL's fused LM head; "full": logits materialised
    batching: str = "grouped"  # "grouped": padded rows | "padding_free" / "packed": rows concatenated into one
    attention: str = "sdpa"  # "sdpa" | "eager" | "flash" (FlashAttention 2/3: varlen, no mask tensor)
    cpu_allocator_tuned: bool = True  # huge pages on CPU (the trainer's default): see CPU_FORWARD_RETAINED_TUNED
    liger: bool = False  # Liger's RMSNorm / SwiGLU kernels (CUDA): fewer saved tensors per layer (see _layer_bytes)
    # padding_free / packed / token_budget: tokens in the heaviest micro-batch when known (a token budget, or the
    # data's heaviest concatenation of `batch` rows); None: batch x seq_len (every row as long as the longest).
    tokens_per_batch: int | None = None
    # training.method: "sft" | "dpo" | "kto" (see _preference_parts); dpo / kto from a starting adapter also hold
    # TRL's frozen copy of it ("ref"), a fresh adapter has none (the reference is the base, adapter off).
    method: str = "sft"
    reference_adapter: bool = False
    lora_experts: bool = False  # lora.experts: every MoE expert adapted too (resident: all of them)
    # Distinct micro-batch shapes the run's matmuls see (CPU bf16: oneDNN caches kernels per shape). Rows of real data
    # bring new ones with nearly every micro-batch, so the plan of a run passes its micro-batch count; None: a run long
    # enough to fill oneDNN's caches (see ONEDNN_CACHE_KERNELS).
    batch_shapes: int | None = None

    def dims(self) -> ModelDims:
        return self.model if isinstance(self.model, ModelDims) else model_dims(self.model)

    def compute_dtype(self) -> str:
        if self.dtype:
            return self.dtype
        if self.device == "cpu":  # precision auto, as core.config.effective_precision resolves it for the trainer
            return "bfloat16" if self.cpu_native_bf16 and self.quant == "none" else "float32"
        return "bfloat16"

    def replace(self, **changes) -> "Workload":
        return dataclasses.replace(self, **changes)

    def check(self) -> None:
        problems = []
        if self.quant not in QUANTS:
            problems.append(f"quant must be one of {', '.join(QUANTS)}, not {self.quant!r}")
        if self.device not in ("cpu", "cuda"):
            problems.append(f"device must be 'cpu' or 'cuda', not {self.device!r}")
        if self.compute_dtype() not in DTYPE_BYTES:
            problems.append(f"dtype must be one of {', '.join(DTYPE_BYTES)}, not {self.dtype!r}")
        for name in ("r", "seq_len", "batch"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be at least 1")
        if self.loss_head not in ("lean", "chunked", "full"):
            problems.append("loss_head must be 'lean', 'chunked' or 'full'")
        if self.batching not in BATCHING:
            problems.append(f"batching must be one of {', '.join(BATCHING)}")
        if self.attention not in ATTENTION:
            problems.append(f"attention must be one of {', '.join(ATTENTION)}")
        if self.method not in ("sft", "dpo", "kto"):
            problems.append("method must be 'sft', 'dpo' or 'kto'")
        if problems:
            raise ValueError("Memory plan: " + "; ".join(problems) + ".")


@dataclass
class MemoryEstimate:
    total_bytes: int
    breakdown: dict[str, int]  # named parts that add up to total_bytes
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"total_bytes": self.total_bytes, "breakdown": dict(self.breakdown), "notes": list(self.notes)}


@dataclass
class Fix:
    title: str
    changes: dict  # Workload field -> new value
    new_total_bytes: int
    verdict: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class FitVerdict:
    verdict: str  # "fits" | "tight" | "wont_fit"
    available_bytes: int
    estimate: MemoryEstimate
    fixes: list[Fix] = field(default_factory=list)
    device_label: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "available_bytes": self.available_bytes, "device": self.device_label,
                **self.estimate.to_dict(), "notes": self.estimate.notes + self.notes,
                "fixes": [f.to_dict() for f in self.fixes]}


@dataclass
class _Widths:
    """Bytes per element of each kind of saved tensor on this path (see module docstring)."""

    stream: int  # residual stream, MLP, norms' outputs
    attention: int  # q, k, v, output saved by attention
    lora_in: int  # a LoRA layer's private copy of its input (cast and/or dropped out)
    mask: int  # dropout mask (CUDA: bool) or noise tensor (CPU: input dtype)
    adapter: int  # LoRA weights, their gradients and each AdamW state
    shared: bool  # adapted layers may share their input tensor instead of copying it


def _widths(plan: Workload) -> _Widths:
    compute = DTYPE_BYTES[plan.compute_dtype()]
    quantized = plan.quant != "none"
    # peft keeps a 16-bit model's adapters in fp32. TRL casts a quantized model's adapters to bf16, and the
    # trainer casts them back to fp32 unless the run is bf16 (core/train/training.py).
    adapter = 2 if quantized and plan.compute_dtype() == "bfloat16" else 4
    # 16-bit runs train under accelerate's autocast on the GPU and on the CPU alike (CPU bf16: core.config.
    # effective_precision): the weights are loaded in that dtype and linear/attention ops run in it.
    autocast = compute == 2
    stream = 4 if (quantized and KBIT_UPCASTS_TO_FP32) or not autocast else compute
    attention = compute if autocast else stream
    lora_in = 2 if autocast else adapter
    # Dropout's saved mask: a bool on CUDA (native_dropout); on CPU a noise tensor in the dtype of its
    # input, which peft has cast to the adapter's dtype (fp32 noise in a bf16 CPU run, counted by autograd).
    mask_bytes = 0 if plan.dropout <= 0 else (1 if plan.device == "cuda" else adapter)
    # Without dropout, adapted layers can share their input. Not under autocast: peft casts the input to the
    # adapter's fp32, autocast casts it back to 16-bit, and each lora_A saves its own copy (autograd-counted).
    shared = plan.dropout <= 0 and not autocast and lora_in == stream
    return _Widths(stream, attention, lora_in, mask_bytes, adapter, shared)


def _layer_bytes(d: ModelDims, targets: list[str], w: _Widths, plan: Workload) -> int:
    """Bytes autograd saves per token in one decoder layer (no checkpointing)."""
    h, hq, i = d.hidden, d.q_dim, d.intermediate
    moe = d.experts_per_token
    liger = plan.liger and plan.device == "cuda"
    # RMSNorm keeps an fp32 copy of its input and 1/rms; Liger's keeps its input as it came (and 1/rms).
    total = d.norms_per_layer * ((w.stream if liger else 4) * h + 4)
    # A padding mask (or a padding-free block mask) stops sdpa's native GQA path; FlashAttention needs no mask.
    masked = (plan.batch > 1 or plan.batching != "grouped") and plan.attention != "flash"
    repeat_kv = masked or d.eager_attention or plan.attention == "eager"
    kv = hq if repeat_kv else d.kv_dim
    if d.eager_attention:
        softcap = w.attention  # tanh output of the capped scores
        total += 3 * hq * w.attention + d.heads * plan.seq_len * (4 + w.attention + softcap)
    else:
        total += (2 * hq + 2 * kv) * w.attention + 4 * d.heads  # q, k, v, output, log-sum-exp
        if masked:
            total += plan.seq_len * w.attention  # each layer's copy of the padding mask
    # Each adapted layer saves its input; layers reading the same tensor share it when no copy is made.
    modules = d.linear_modules
    inputs = {"norm1": [], "attn_out": [], "norm2": [], "mlp_mid": []}
    for name in targets:
        key = ("attn_out" if name == "o_proj" else "mlp_mid" if name == "down_proj"
               else "norm2" if name in ("gate_proj", "up_proj", "gate_up_proj") else "norm1")
        experts = moe if key in ("norm2", "mlp_mid") else 1  # a token passes through its top-k experts
        inputs[key].extend([modules[name][0]] * experts)
    for key, widths in inputs.items():
        if not widths:
            continue
        if w.shared:
            already_saved = key == "attn_out" and not d.eager_attention and w.attention == w.stream
            total += 0 if already_saved else widths[0] * w.stream
        else:
            total += sum(widths) * (w.lora_in + w.mask)
    total += len(targets) * plan.r * w.lora_in  # lora_A outputs, kept for lora_B
    # gate, act(gate), up (or the act input). Liger's SwiGLU saves gate and up and recomputes act(gate) in backward:
    # measured on the H200 (QLoRA 1.5B, 8 x 1024, fp32 stream): 7.57 GiB less with Liger, 7.66 GiB predicted.
    total += moe * ((2 if liger else 3) * i if d.gated_mlp else i) * w.stream
    return total


# dpo / kto: the reference forward (and kto's KL forwards) run without gradients while the policy's saved
# activations wait for backward: their live tensors are about one layer's worth at a time (a first guess,
# to be fitted on measured DPO peaks), on top of the head's tiles.
REFERENCE_PASS_LAYERS = 1.0


def _preference_parts(plan: Workload, tokens: int, per_layer: int, head_temp: int, adapter_bytes: int) -> dict:
    """What dpo / kto add to an SFT step of the same rows (dpo's doubled rows are already in ``tokens``)."""
    parts = {"reference_pass": int(tokens * per_layer * REFERENCE_PASS_LAYERS)}  # its head tiles reuse the policy's
    if plan.reference_adapter:  # TRL's frozen copy of the starting adapter (its weights only)
        parts["reference_adapter"] = adapter_bytes
    return parts


def _kernel_cache(d: ModelDims, targets: list[str], plan: Workload, tokens: int, vocab_tile: int) -> int:
    """Bytes of oneDNN kernels a CPU bf16 run caches: those one new micro-batch shape compiles, times the shapes, at
    most the caches' capacity. Counted from the kernels oneDNN logged (ONEDNN_VERBOSE=profile_create) on the tiny
    models: each distinct frozen linear shape runs forward and input-gradient, each distinct LoRA A / B shape forward,
    input- and weight-gradient, the head one per distinct tile width, the attention's blocked matmuls per distinct
    head size, each MoE expert its own token count per layer. The shapes include the layers ``linear_modules`` leaves
    out (``d.other_linear``): Gemma 4's full-attention layers with their own head size and its per-layer-input
    projections, which peft's all-linear adapts too (its tiny model logged 42 kernels a micro-batch, 31 counted
    without them)."""
    if plan.device != "cpu" or plan.compute_dtype() != "bfloat16":
        return 0
    modules = d.linear_modules
    frozen = set(modules.values()) | {(a, b) for _, a, b in d.other_linear}
    everything = plan.targets == "all-linear"  # every nn.Linear but the head, the extra ones too
    adapted = [modules[t] for t in targets] + [(a, b) for n, a, b in d.other_linear
                                               if n in targets or (everything and n not in modules)]
    base = 0 if plan.quant != "none" else 2 * len(frozen)  # 4/8-bit layers run bitsandbytes' own code
    lora = 3 * (len({a for a, _ in adapted}) + len({b for _, b in adapted}))
    widths = {min(vocab_tile, d.vocab), d.vocab % vocab_tile} - {0} if plan.loss_head != "full" else {d.vocab}
    experts = 4 * min(d.experts, tokens * d.experts_per_token) * d.layers if d.experts > 1 else 0
    attention = ONEDNN_ATTENTION_KERNELS * max(1, len(d.head_dims))
    per_shape = base + lora + len(widths) + attention + experts
    kernels = min(ONEDNN_CACHE_KERNELS, per_shape * (plan.batch_shapes or ONEDNN_CACHE_KERNELS))
    return kernels * ONEDNN_KERNEL_BYTES


def _lora_params(d: ModelDims, targets: list[str], r: int, experts: bool = False) -> int:
    per_layer = 0
    for name in targets:
        fan_in, fan_out = d.linear_modules[name]
        per_layer += r * (fan_in + fan_out)
    if experts and d.experts > 1:  # lora.experts: gate_up (h -> 2i) and down (i -> h) of every expert, rank r each
        per_layer += d.experts * r * ((d.hidden + 2 * d.intermediate) + (d.intermediate + d.hidden))
    return d.layers * per_layer


def _base_weights(d: ModelDims, plan: Workload) -> int:
    """Bytes of the loaded base model: quantized linear layers plus what stays unquantized."""
    compute = DTYPE_BYTES[plan.compute_dtype()]
    linear = d.layers * d.linear_params_per_layer
    rest = d.params - linear  # embeddings, lm_head, norms, biases
    if plan.quant == "none":
        return d.params * compute
    kept = 4 if KBIT_UPCASTS_TO_FP32 else compute
    if plan.quant == "8bit":
        rows = d.layers * sum(out for _, out in d.linear_modules.values())
        quantized = linear + 4 * rows  # int8 weights + one fp32 scale per output row
    else:
        per_param = 0.5 + (1 / 64 + 4 / (64 * 256) if plan.double_quant else 4 / 64)  # NF4 + absmax per 64
        quantized = int(linear * per_param)
    return int(quantized + rest * kept)


def estimate_memory(plan: Workload) -> MemoryEstimate:
    """Peak memory of one training run with this plan: total and its named parts."""
    plan.check()
    if plan.method != "sft":
        # TRL's DPOConfig / KTOConfig disable dropout (disable_dropout, on by default; core/train/preference.py keeps
        # it): every nn.Dropout, LoRA's too, runs at p=0 and saves no noise tensor, whatever lora.dropout says.
        # Measured: dpo micro-batch 8 bf16 peaked at 2.46 GiB with lora.dropout 0.05 and 2.47 GiB with 0.
        plan = plan.replace(dropout=0.0)
    d = plan.dims()
    targets = d.target_modules(plan.targets)
    w = _widths(plan)
    cpu = plan.device == "cpu"
    if plan.batching != "grouped":
        # Padding-free / packed / token budget: the micro-batch is one row of its tokens: the budget, or the
        # data's heaviest concatenation when known, else batch x seq_len (the bound: every row the longest).
        tokens = plan.tokens_per_batch or plan.batch * plan.seq_len
        plan = plan.replace(batch=1, seq_len=max(1, int(tokens)), batching=plan.batching)
    if plan.method == "dpo":  # each row's chosen and rejected answers go through one padded forward: 2 x rows
        plan = plan.replace(batch=2 * plan.batch)
    tokens = plan.batch * plan.seq_len
    notes = list(d.notes)
    parts: dict[str, int] = {}

    parts["cuda_context" if not cpu else "process"] = CUDA_CONTEXT_BYTES if not cpu else CPU_PROCESS_BYTES
    if not cpu:
        parts["cuda_workspaces"] = CUDA_WORKSPACE_BYTES
    parts["base_weights"] = _base_weights(d, plan)
    if cpu and plan.quant != "none" and d.stored_dtype == "float32":
        # The unquantized fp32 tensors are zero-copy views of the memory-mapped checkpoint,
        # which keeps every page the quantizer read resident.
        parts["mapped_checkpoint"] = (d.checkpoint_bytes or d.params * 4) - (d.params - d.layers * d.linear_params_per_layer) * 4
    lora = _lora_params(d, targets, plan.r, plan.lora_experts)
    # Autocast caches a 16-bit copy of each fp32 adapter weight for the step.
    autocast_copies = lora * 2 if DTYPE_BYTES[plan.compute_dtype()] == 2 and w.adapter == 4 else 0
    parts["lora_weights"] = lora * w.adapter + autocast_copies
    parts["lora_gradients"] = lora * w.adapter
    parts["optimizer_states"] = 2 * lora * w.adapter  # AdamW: exp_avg and exp_avg_sq

    per_layer = _layer_bytes(d, targets, w, plan)
    head_saved = 4 * d.hidden + 4 + d.hidden * w.stream + 16  # final norm, head input, log Z, entropy
    compute = DTYPE_BYTES[plan.compute_dtype()]
    vocab_tile = LEAN_VOCAB_TILE[plan.device] if plan.loss_head == "lean" and d.lean_head else HEAD_VOCAB_TILE
    if plan.loss_head == "full":
        head_saved += d.vocab * (compute + 4)  # logits and fp32 log-softmax
        head_temp = tokens * d.vocab * 8
    else:
        tile = min(tokens, HEAD_TOKEN_TILE) * min(d.vocab, vocab_tile)
        head_temp = tile * (4 * CPU_HEAD_TILE_COPIES if cpu else compute) + tokens * d.hidden * 4
        if not cpu and plan.quant != "none" and KBIT_UPCASTS_TO_FP32:
            head_temp += min(d.vocab, vocab_tile) * d.hidden * compute  # fp32 lm_head cast per tile
    full_activations = tokens * (d.layers * per_layer + head_saved)
    if plan.grad_checkpointing:
        # Each layer keeps only its input; backward re-runs one layer at a time.
        parts["activations"] = tokens * (d.layers * d.hidden * w.stream + per_layer + head_saved)
    else:
        parts["activations"] = full_activations
    # Backward through a layer holds gradients of its widest intermediates (Liger's SwiGLU writes them in place).
    mlp_grads = 2 if plan.liger and not cpu else 3
    layer_grads = tokens * (mlp_grads * d.intermediate * d.experts_per_token + 2 * d.hidden) * w.stream
    dequant = 2 * max(a * b for a, b in d.linear_modules.values()) * compute if plan.quant != "none" else 0
    parts["temporary_buffers"] = max(head_temp, layer_grads) + dequant
    if plan.method != "sft":
        parts.update(_preference_parts(plan, tokens, per_layer, head_temp, lora * w.adapter))
    if cpu:
        # With huge pages (the trainer's default) glibc keeps little of the forward's freed memory when
        # checkpointing frees it layer by layer, or when the tensors are big enough to be huge-page blocks.
        large = tokens * d.hidden * w.stream >= THP_THRESHOLD_BYTES
        churn = plan.quant != "none" or DTYPE_BYTES[plan.compute_dtype()] == 2
        if not plan.cpu_allocator_tuned or not (plan.grad_checkpointing or large):
            retained = CPU_FORWARD_RETAINED
        elif plan.grad_checkpointing:
            retained = CPU_FORWARD_RETAINED_TUNED if large else CPU_FORWARD_RETAINED_CHECKPOINTED_SMALL
        elif churn:
            retained = CPU_FORWARD_RETAINED_CHURN
        else:
            retained = CPU_FORWARD_RETAINED_TUNED
        parts["allocator_overhead"] = int(retained * full_activations)
        if kernels := _kernel_cache(d, targets, plan, tokens, vocab_tile):
            parts["kernel_cache"] = kernels
            notes.append("CPU bf16: oneDNN keeps a compiled kernel for each new matmul shape (each micro-batch of varied "
                         f"rows brings some): up to {ONEDNN_CACHE_KERNELS * ONEDNN_KERNEL_BYTES / 2**30:.1f} GiB in a long run.")
    else:
        parts["allocator_overhead"] = int(GPU_ALLOCATOR_SLACK * (parts["activations"] + parts["temporary_buffers"]))

    if cpu and plan.quant == "none" and d.stored_dtype in DTYPE_BYTES and d.stored_dtype != plan.compute_dtype():
        # Loading converts the checkpoint's dtype (an fp32 file trained in bf16): the memory-mapped file stays
        # resident beside the converted weights until the load ends. A small run peaks there, not in training
        # (bf16, batch 1 x 128: 1309 MiB measured = libraries + 513 MiB file + 257 MiB bf16 weights).
        imports = CPU_IMPORTS_BYTES if plan.method == "sft" else CPU_PREFERENCE_LOAD_BYTES
        loading = imports + (d.checkpoint_bytes or d.params * DTYPE_BYTES[d.stored_dtype]) + parts["base_weights"]
        if loading > sum(parts.values()):
            parts["mapped_checkpoint"] = loading - sum(parts.values())  # the peak is the load's
            notes.append("This run peaks while the checkpoint is converted to the training dtype.")
    parts = {k: int(v) for k, v in parts.items()}
    if cpu:
        notes.append(f"CPU run in {plan.compute_dtype()}; RAM peak includes the Python process and its libraries.")
        if plan.grad_checkpointing:
            notes.append("On CPU checkpointing saves less than on a GPU: the allocator keeps much of the forward's memory.")
        if "mapped_checkpoint" in parts:
            notes.append("On CPU a 4/8-bit load of an fp32 checkpoint keeps the mapped file resident: little is saved.")
    else:
        notes.append(f"GPU run in {plan.compute_dtype()} with the CUDA context (~{CUDA_CONTEXT_BYTES // MiB} MiB).")
    if plan.loss_head != "full" and d.vocab > 100_000:
        notes.append("The fused LM head scores the vocabulary in tiles, so the full logits are never built.")
    return MemoryEstimate(total_bytes=sum(parts.values()), breakdown=parts, notes=notes)


def heaviest_concatenation(lengths: list[int], rows: int, draws: int, max_seq_len: int | None = None,
                           seed: int = 0) -> int:
    """Tokens in the heaviest of ``draws`` padding-free micro-batches of ``rows`` rows drawn at random (epochs
    shuffled, as the trainer's random sampler does), from the rows' token ``lengths``.

    A padding-free micro-batch carries the sum of its rows, not ``rows`` x the longest: on long-tailed data
    (median 85, longest 1,450 tokens) 8 rows averaged ~950 tokens, and the estimate that assumed 8 x 1024 was
    +562 % over the measured peak. The heaviest draw grows with the run's length towards the sum of the
    ``rows`` longest rows (returned when ``draws`` is large). Seeded: the same figure every time."""
    import random

    capped = [min(int(n), max_seq_len) if max_seq_len else int(n) for n in lengths if n]
    if not capped or rows < 1:
        return 0
    bound = sum(sorted(capped, reverse=True)[:rows])
    if draws >= 4 * len(capped) or len(capped) <= rows:
        return bound
    rng = random.Random(seed)
    heaviest, order, at = 0, [], len(capped)
    for _ in range(draws):
        if at + rows > len(order):
            order, at = list(range(len(capped))), 0
            rng.shuffle(order)
        heaviest = max(heaviest, sum(capped[i] for i in order[at:at + rows]))
        at += rows
    return min(heaviest, bound)


def _verdict(total: int, available: int) -> str:
    if available <= 0 or total > available:
        return "wont_fit"
    return "fits" if total <= FITS_BELOW * available else "tight"


def _ladder(plan: Workload, d: ModelDims) -> list[tuple[str, list[tuple[object, str]]]]:
    """Each knob with its candidate values, mildest first, and how to describe each."""
    knobs: list[tuple[str, list[tuple[object, str]]]] = []
    if plan.quant != "4bit":
        knobs.append(("quant", [("4bit", "Load the base model in 4-bit NF4 (QLoRA)")]))
    if not plan.grad_checkpointing:
        knobs.append(("grad_checkpointing", [(True, "Turn on gradient checkpointing (about 30% slower)")]))
    batches, b = [], plan.batch // 2
    while b >= 1:
        batches.append((b, f"Micro-batch {plan.batch} -> {b}, accumulate {plan.batch // b}x more to keep the effective batch"))
        b //= 2
    knobs.append(("batch", batches))
    lengths, s = [], plan.seq_len // 2
    while s >= 128:
        lengths.append((s, f"Max length {plan.seq_len} -> {s} tokens (longer rows are truncated)"))
        s //= 2
    knobs.append(("seq_len", lengths))
    current = d.target_modules(plan.targets)
    narrower = [("attention", "Adapt attention layers only"), ("qv", "Adapt q and v projections only")]
    knobs.append(("targets", [(t, text) for t, text in narrower if len(d.target_modules(t)) < len(current)]))
    ranks, r = [], plan.r // 2
    while r >= 4:
        ranks.append((r, f"LoRA rank {plan.r} -> {r}"))
        r //= 2
    knobs.append(("r", ranks))
    return [(k, v) for k, v in knobs if v]


def _single_fixes(plan: Workload, total: int, available: int) -> list[Fix]:
    """One fix per knob: its mildest value that fits, else its strongest; only those that lower the estimate."""
    fixes = []
    for knob, values in _ladder(plan, plan.dims()):
        chosen = None
        for value, title in values:
            new = estimate_memory(plan.replace(**{knob: value})).total_bytes
            chosen = Fix(title, {knob: value}, new, _verdict(new, available))
            if chosen.verdict == "fits":
                break
        if chosen and chosen.new_total_bytes < total:
            fixes.append(chosen)
    return sorted(fixes, key=lambda f: f.new_total_bytes)


def _fixes(plan: Workload, total: int, available: int) -> list[Fix]:
    fixes = _single_fixes(plan, total, available)
    if not fixes or any(f.verdict == "fits" for f in fixes):
        return fixes
    # No single change is enough: take the strongest, then look again from there, until it fits.
    changes: dict = {}
    titles: list[str] = []
    current, step = plan, fixes
    for _ in range(6):
        fitting = [f for f in step if f.verdict == "fits"]
        pick = max(fitting, key=lambda f: f.new_total_bytes) if fitting else step[0]  # mildest that fits
        changes.update(pick.changes)
        titles.append(pick.title)
        current = plan.replace(**changes)
        if fitting:
            break
        step = _single_fixes(current, pick.new_total_bytes, available)
        if not step:
            break
    new = estimate_memory(current).total_bytes
    fixes.insert(0, Fix("Combine: " + "; ".join(titles), changes, new, _verdict(new, available)))
    return fixes


def judge_fit(plan: Workload, hardware=None, device_index: int = 0) -> FitVerdict:
    """Compare the estimate with the chosen device's free memory; add ranked fixes when it does not fit."""
    if hardware is None:
        from lora_tui.core.machine.hardware import probe_hardware

        hardware = probe_hardware()
    notes: list[str] = []
    if plan.device == "cuda":
        gpu = next((g for g in hardware.gpus if g.index == device_index), None)
        if gpu is None:
            estimate = estimate_memory(plan)
            reason = hardware.nvml_error or "no NVIDIA GPU was found"
            return FitVerdict("wont_fit", 0, estimate, [], f"cuda:{device_index}", [f"No GPU {device_index}: {reason}."])
        if plan.dtype is None and not gpu.bf16:
            plan = plan.replace(dtype="float16")
            notes.append(f"{gpu.name} has no bf16: training would run in fp16 (same memory).")
        available, label = int(gpu.memory_free), f"cuda:{gpu.index} {gpu.name}"
    else:
        available, label = int(hardware.ram_available), "CPU RAM"
    estimate = estimate_memory(plan)
    verdict = _verdict(estimate.total_bytes, available)
    fixes = _fixes(plan, estimate.total_bytes, available) if verdict != "fits" else []
    return FitVerdict(verdict, available, estimate, fixes, label, notes)
