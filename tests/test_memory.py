"""The memory estimate: arithmetic on tiny hand-checked models, a cross-check of
the activation count against autograd's own saved tensors, verdict thresholds and
ranked fixes. GPU hardware here is a HardwareReport built by hand (no GPU exists
on this machine)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from lora_tui.core.model.catalogue import ModelDims
from lora_tui.core.machine.hardware import GPUInfo, HardwareReport
from lora_tui.core.plan.memory import Workload, estimate_memory, judge_fit

GiB = 1024**3

# hidden 8, 2 layers, 2 query heads + 1 kv head of width 4, MLP 16, vocabulary 32, tied embeddings
TINY = ModelDims(name="tiny", model_type="llama", hidden=8, layers=2, heads=2, kv_heads=1, head_dim=4,
                 intermediate=16, vocab=32, tied_embeddings=True)


def test_tiny_parameter_count_by_hand():
    # embeddings 32*8=256; per layer q 64 + k 32 + v 32 + o 64 + gate/up/down 3*128 + 2 norms*8 = 592; final norm 8
    assert TINY.params == 256 + 2 * 592 + 8 == 1448


def test_tiny_lora_and_weights_by_hand():
    est = estimate_memory(Workload(TINY, r=2, targets="all-linear", device="cpu", seq_len=10, batch=1))
    # LoRA r=2 per layer: q 2*(8+8)=32, k 2*(8+4)=24, v 24, o 32, gate/up/down 3*2*(8+16)=144 -> 256; x2 layers
    assert est.breakdown["lora_weights"] == 512 * 4  # fp32 adapters
    assert est.breakdown["lora_gradients"] == 512 * 4
    assert est.breakdown["optimizer_states"] == 2 * 512 * 4
    assert est.breakdown["base_weights"] == 1448 * 4  # fp32 on CPU
    assert sum(est.breakdown.values()) == est.total_bytes


def test_tiny_4bit_weights_by_hand():
    est = estimate_memory(Workload(TINY, quant="4bit", double_quant=True, device="cuda"))
    linear = 2 * 576
    nf4_dq = int(linear * (0.5 + 1 / 64 + 4 / (64 * 256)))  # 4 bits + 8-bit absmax per 64 + fp32 per 256 blocks
    assert est.breakdown["base_weights"] == nf4_dq + (1448 - linear) * 4  # the rest upcast to fp32 by peft
    plain = estimate_memory(Workload(TINY, quant="4bit", double_quant=False, device="cuda")).breakdown["base_weights"]
    assert plain == int(linear * (0.5 + 4 / 64)) + (1448 - linear) * 4


def test_tiny_activations_by_hand():
    # fp32 on CPU, no dropout (inputs shared), batch 1 (no padding mask, native GQA), r=2, all-linear.
    plan = Workload(TINY, r=2, targets="all-linear", device="cpu", seq_len=10, batch=1, dropout=0.0)
    per_layer = (
        2 * (4 * 8 + 4)  # two RMSNorms: fp32 input + 1/rms
        + (2 * 8 + 2 * 4) * 4 + 4 * 2  # attention: q, out (8 each), k, v (4 each), log-sum-exp per head
        + 8 * 4 + 8 * 4 + 16 * 4  # inputs of q/k/v, gate/up and down (o_proj's is attention's output)
        + 7 * 2 * 4  # lora_A outputs
        + 3 * 16 * 4  # gate, act(gate), up
    )
    assert per_layer == 552
    head = (4 * 8 + 4) + 8 * 4 + 16
    assert estimate_memory(plan).breakdown["activations"] == 10 * (2 * per_layer + head)


def _saved_bytes_per_layer(tmp_config: dict, r: int, dropout: float, targets, batch: int, seq: int,
                           bf16: bool = False, trl_dropout_off: bool = False) -> float:
    """Bytes autograd keeps per token for one more decoder layer (2-layer minus 1-layer model).
    bf16: as the trainer runs precision bf16 on a CPU: bf16 weights, peft's fp32 adapters, CPU autocast.
    trl_dropout_off: TRL's preference trainers' disable_dropout applied to the peft model (every dropout p=0)."""
    import contextlib

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    totals = []
    for layers in (1, 2):
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**tmp_config, num_hidden_layers=layers))
        if bf16:
            model = model.to(torch.bfloat16)
        model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=dropout, target_modules=targets))
        if trl_dropout_off:
            from trl.trainer.utils import disable_dropout_in_model

            disable_dropout_in_model(model)
        model.train()
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        seen: dict[int, int] = {}

        def pack(t):
            key = t.untyped_storage().data_ptr()
            if key not in params:
                seen[key] = t.untyped_storage().nbytes()
            return t

        ids = torch.randint(1, tmp_config["vocab_size"], (batch, seq))
        mask = torch.ones_like(ids)
        if batch > 1:
            mask[-1, -1] = 0  # a padded batch, as in training
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=ids, attention_mask=mask)
        totals.append(sum(seen.values()))
    return (totals[1] - totals[0]) / (batch * seq)


@pytest.mark.parametrize("dropout, targets, batch", [
    (0.05, "all-linear", 2),
    (0.0, "all-linear", 1),
    (0.0, "qv", 2),
    (0.1, "attention", 1),
])
def test_activation_count_matches_autograd(dropout, targets, batch):
    """The per-layer activation formula against what autograd really saves (fp32, CPU)."""
    cfg = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
               max_position_embeddings=64, tie_word_embeddings=True)
    seq, r = 16, 4
    one, two = (ModelDims(name="t", model_type="llama", hidden=32, layers=n, heads=4, kv_heads=2, head_dim=8,
                          intermediate=48, vocab=64, tied_embeddings=True) for n in (1, 2))
    module_names = one.target_modules(targets)
    measured = _saved_bytes_per_layer(cfg, r, dropout, module_names, batch, seq)
    plans = [Workload(d, r=r, targets=targets, device="cpu", seq_len=seq, batch=batch, dropout=dropout) for d in (one, two)]
    estimated = (estimate_memory(plans[1]).breakdown["activations"] - estimate_memory(plans[0]).breakdown["activations"]) / (batch * seq)
    assert estimated == pytest.approx(measured, rel=0.02)


@pytest.mark.parametrize("dropout, targets, batch", [
    (0.05, "all-linear", 2),
    (0.0, "all-linear", 1),
    (0.0, "qv", 2),
    (0.1, "attention", 1),
])
def test_cpu_bf16_activation_count_matches_autograd(dropout, targets, batch):
    """CPU bf16 (precision auto on native-bf16 CPUs): 16-bit stream and attention, each adapter's own bf16 copy of
    its input (peft casts to the fp32 adapter, autocast back), fp32 dropout noise. Two lengths, so the per-layer
    16-bit copies of the fp32 adapter weights that autocast caches drop out of the per-token figure."""
    cfg = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
               max_position_embeddings=64, tie_word_embeddings=True)
    r, short, long = 4, 16, 32
    one, two = (ModelDims(name="t", model_type="llama", hidden=32, layers=n, heads=4, kv_heads=2, head_dim=8,
                          intermediate=48, vocab=64, tied_embeddings=True) for n in (1, 2))
    module_names = one.target_modules(targets)

    def layer_bytes(seq: int, measure: bool) -> float:  # bytes one more layer keeps at this length
        if measure:
            return _saved_bytes_per_layer(cfg, r, dropout, module_names, batch, seq, bf16=True) * batch * seq
        plans = [Workload(d, r=r, targets=targets, device="cpu", seq_len=seq, batch=batch, dropout=dropout,
                            dtype="bfloat16") for d in (one, two)]
        return estimate_memory(plans[1]).breakdown["activations"] - estimate_memory(plans[0]).breakdown["activations"]

    tokens = batch * (long - short)
    measured = (layer_bytes(long, True) - layer_bytes(short, True)) / tokens
    estimated = (layer_bytes(long, False) - layer_bytes(short, False)) / tokens
    assert estimated == pytest.approx(measured, rel=0.02)


def test_cpu_bf16_plan_by_hand():
    fp32 = estimate_memory(Workload(TINY, r=2, device="cpu", seq_len=10, batch=1)).breakdown
    bf16 = estimate_memory(Workload(TINY, r=2, device="cpu", seq_len=10, batch=1, dtype="bfloat16")).breakdown
    assert bf16["base_weights"] == 1448 * 2  # the trainer loads the weights in bf16
    assert bf16["lora_weights"] == 512 * 4 + 512 * 2  # fp32 adapters + autocast's bf16 copy of them
    assert bf16["optimizer_states"] == fp32["optimizer_states"] == 2 * 512 * 4
    assert bf16["activations"] < fp32["activations"]
    # 4-bit on CPU: the trainer casts TRL's bf16 adapters back to fp32 unless the run is bf16
    q4 = estimate_memory(Workload(TINY, quant="4bit", r=2, device="cpu", seq_len=10, batch=1)).breakdown
    assert q4["lora_weights"] == 512 * 4
    q4_bf16 = estimate_memory(Workload(TINY, quant="4bit", r=2, device="cpu", seq_len=10, batch=1, dtype="bfloat16"))
    assert q4_bf16.breakdown["lora_weights"] == 512 * 2


def test_cpu_load_peak_when_the_checkpoint_is_converted():
    """An fp32 checkpoint trained in bf16: the mapped file and the bf16 copy are resident together while loading;
    a small run peaks there (measured 1309 MiB for the embedded model at 1 x 128, training itself ~1215)."""
    from lora_tui.core.plan.memory import CPU_IMPORTS_BYTES

    dims = dataclasses.replace(TINY, stored_dtype="float32", checkpoint_bytes=400 * 1024**2)
    # batch_shapes=1: the measured run's rows were all one length (a long run of varied rows peaks in training,
    # oneDNN's kernel cache full: memory.ONEDNN_CACHE_KERNELS)
    bf16 = estimate_memory(Workload(dims, device="cpu", dtype="bfloat16", seq_len=16, batch=1, batch_shapes=1))
    assert bf16.total_bytes == CPU_IMPORTS_BYTES + 400 * 1024**2 + bf16.breakdown["base_weights"]
    assert "mapped_checkpoint" in bf16.breakdown
    fp32 = estimate_memory(Workload(dims, device="cpu", dtype="float32", seq_len=16, batch=1))
    assert "mapped_checkpoint" not in fp32.breakdown  # no conversion: the weights are the mapped file


def test_cpu_allocator_share_follows_tensor_size_and_churn():
    """Huge pages (the trainer's default): glibc keeps little of a step whose tensors are >= 2 MiB, unless the
    layers churn small buffers (4-bit dequantization, bf16 autocast); small tensors keep the heap's 0.6."""
    from lora_tui.core.plan import memory

    def share(**changes):
        plan = Workload("SmolLM2-135M", device="cpu", r=8, **changes)
        full = estimate_memory(plan.replace(grad_checkpointing=False)).breakdown["activations"]
        return estimate_memory(plan).breakdown["allocator_overhead"] / full

    assert share(batch=1, seq_len=128) == pytest.approx(memory.CPU_FORWARD_RETAINED, rel=1e-6)  # 0.3 MB tensors
    assert share(batch=4, seq_len=512) == pytest.approx(memory.CPU_FORWARD_RETAINED_TUNED, rel=1e-6)  # 4.7 MB
    assert share(batch=4, seq_len=512, quant="4bit") == pytest.approx(memory.CPU_FORWARD_RETAINED_CHURN, rel=1e-6)
    assert share(batch=4, seq_len=512, dtype="bfloat16") == pytest.approx(memory.CPU_FORWARD_RETAINED_CHURN, rel=1e-6)
    assert share(batch=4, seq_len=512, dtype="bfloat16", grad_checkpointing=True) == \
        pytest.approx(memory.CPU_FORWARD_RETAINED_TUNED, rel=1e-6)
    assert share(batch=4, seq_len=128, grad_checkpointing=True) == \
        pytest.approx(memory.CPU_FORWARD_RETAINED_CHECKPOINTED_SMALL, rel=1e-6)  # recomputed layers in the heap
    assert share(batch=4, seq_len=512, cpu_allocator_tuned=False) == pytest.approx(memory.CPU_FORWARD_RETAINED, rel=1e-6)

@pytest.mark.parametrize("load_in", ["16bit", "8bit", "4bit"])
@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16", "fp16"])
@pytest.mark.parametrize("native_bf16", [True, False])
def test_cpu_plan_dtype_is_the_trainers_precision(monkeypatch, load_in, precision, native_bf16):
    """workload_of on CPU trains in the dtype core.config.effective_precision gives the trainer."""
    from lora_tui.core import config as config_module
    from lora_tui.core.config import Config, effective_precision
    from lora_tui.core.plan.workload import workload_of

    monkeypatch.setattr(config_module, "cpu_has_bf16", lambda: native_bf16)
    config = Config()
    config.model.load_in, config.training.precision = load_in, precision
    config.training.micro_batch, config.training.gradient_checkpointing = 2, False
    plan = workload_of(config, device="cpu")
    trainer = {"fp32": "float32", "bf16": "bfloat16"}[effective_precision(config, "cpu")]
    assert plan.compute_dtype() == trainer
    assert trainer == ("bfloat16" if precision == "bf16" or (precision == "auto" and native_bf16 and load_in == "16bit")
                       else "float32")
    # A fix that changes the load changes the precision as the trainer would (auto: 4-bit keeps fp32).
    for other in ("16bit", "4bit"):
        fixed = config.copy()
        fixed.model.load_in = other
        want = {"fp32": "float32", "bf16": "bfloat16"}[effective_precision(fixed, "cpu")]
        assert plan.replace(quant="none" if other == "16bit" else other).compute_dtype() == want

def test_estimate_grows_with_batch_length_rank_and_shrinks_with_checkpointing():
    base = Workload("Llama-3.2-1B", batch=4, seq_len=1024, r=16)
    total = estimate_memory(base).total_bytes
    assert estimate_memory(base.replace(batch=8)).total_bytes > total
    assert estimate_memory(base.replace(seq_len=2048)).total_bytes > total
    assert estimate_memory(base.replace(r=64)).total_bytes > total
    assert estimate_memory(base.replace(targets="qv")).total_bytes < total
    assert estimate_memory(base.replace(grad_checkpointing=True)).total_bytes < total
    q4 = estimate_memory(base.replace(quant="4bit")).breakdown["base_weights"]
    q8 = estimate_memory(base.replace(quant="8bit")).breakdown["base_weights"]
    assert q4 < q8 < estimate_memory(base).breakdown["base_weights"]


def test_full_logits_dominate_for_large_vocabularies():
    plan = Workload("Qwen2.5-0.5B", batch=8, seq_len=2048, grad_checkpointing=True)
    chunked = estimate_memory(plan)
    full = estimate_memory(plan.replace(loss_head="full"))
    logits = 8 * 2048 * 151936 * 2  # one bf16 copy of the logits alone
    assert full.total_bytes - chunked.total_bytes > logits
    assert full.breakdown["activations"] + full.breakdown["temporary_buffers"] > 0.5 * full.total_bytes


def test_gpu_parts_and_cpu_parts():
    gpu = estimate_memory(Workload("SmolLM2-360M", device="cuda"))
    cpu = estimate_memory(Workload("SmolLM2-360M", device="cpu"))
    assert "cuda_context" in gpu.breakdown and "process" not in gpu.breakdown
    assert "process" in cpu.breakdown and "cuda_context" not in cpu.breakdown
    assert cpu.breakdown["base_weights"] == 2 * gpu.breakdown["base_weights"]  # fp32 vs bf16


def test_bad_plan_is_a_clear_error():
    with pytest.raises(ValueError, match="quant"):
        estimate_memory(Workload(TINY, quant="3bit"))
    with pytest.raises(ValueError, match="not linear layers"):
        estimate_memory(Workload(TINY, targets="q_proj,wq"))


def _gpu_report(free: int, bf16: bool = True) -> HardwareReport:
    gpu = GPUInfo(index=0, name="Fake GPU", memory_total=free + GiB, memory_free=free, memory_used=GiB,
                  compute_capability=(8, 0) if bf16 else (7, 5), bf16=bf16)
    return HardwareReport(gpus=[gpu], cpu_count=2, ram_total=64 * GiB, ram_available=60 * GiB)


def test_verdict_thresholds():
    plan = Workload("Qwen2.5-1.5B", batch=4, seq_len=1024)
    total = estimate_memory(plan).total_bytes
    assert judge_fit(plan, _gpu_report(int(total / 0.5))).verdict == "fits"
    assert judge_fit(plan, _gpu_report(int(total / 0.95))).verdict == "tight"
    wont = judge_fit(plan, _gpu_report(int(total * 0.5)))
    assert wont.verdict == "wont_fit" and wont.available_bytes == int(total * 0.5)
    assert judge_fit(plan, _gpu_report(int(total / 0.5))).fixes == []


def test_fixes_lower_the_estimate_and_are_ranked():
    plan = Workload("Llama-3.1-8B", batch=2, seq_len=1024)
    verdict = judge_fit(plan, _gpu_report(16 * GiB))
    assert verdict.verdict == "wont_fit" and verdict.fixes
    singles = [f for f in verdict.fixes if not f.title.startswith("Combine")]
    assert [f.new_total_bytes for f in singles] == sorted(f.new_total_bytes for f in singles)
    knobs = {k for f in singles for k in f.changes}
    assert {"quant", "grad_checkpointing", "batch", "seq_len"} <= knobs
    for fix in verdict.fixes:
        assert fix.new_total_bytes < verdict.estimate.total_bytes
        assert fix.new_total_bytes == estimate_memory(plan.replace(**fix.changes)).total_bytes
        assert set(fix.changes) <= {f.name for f in dataclasses.fields(Workload)}
    assert any(f.verdict == "fits" for f in verdict.fixes)  # a combination at least


def test_4bit_is_no_fix_when_fp32_activations_outweigh_the_saved_weights():
    # peft's prepare_model_for_kbit_training upcasts norms and embeddings to fp32, so a QLoRA run's
    # residual stream and MLP activations are fp32: at long sequences without checkpointing 4-bit costs more.
    plan = Workload("Llama-3.1-8B", batch=8, seq_len=2048)
    assert estimate_memory(plan.replace(quant="4bit")).total_bytes > estimate_memory(plan).total_bytes
    verdict = judge_fit(plan, _gpu_report(24 * GiB))
    assert all("quant" not in f.changes for f in verdict.fixes if not f.title.startswith("Combine"))


def test_cpu_judged_against_ram_and_missing_gpu_is_named():
    cpu_only = HardwareReport(gpus=[], cpu_count=2, ram_total=16 * GiB, ram_available=12 * GiB,
                              nvml_error="the NVIDIA driver is not loaded")
    on_cpu = judge_fit(Workload("embedded", device="cpu", batch=1, seq_len=256), cpu_only)
    assert on_cpu.available_bytes == 12 * GiB and on_cpu.verdict == "fits"
    on_gpu = judge_fit(Workload("embedded", device="cuda"), cpu_only)
    assert on_gpu.verdict == "wont_fit" and "driver is not loaded" in " ".join(on_gpu.notes)


def test_fp16_gpu_is_noted():
    verdict = judge_fit(Workload("SmolLM2-135M", batch=1, seq_len=256), _gpu_report(8 * GiB, bf16=False))
    assert any("fp16" in note for note in verdict.notes)


# ------------------------------------------------------------------ the GPU engine modes (issue 17 item 4)
_H200 = HardwareReport(gpus=[GPUInfo(index=0, name="H200", memory_total=141 * GiB, memory_free=140 * GiB, memory_used=GiB,
                                     compute_capability=(9, 0), bf16=True)],
                       cpu_count=16, ram_total=128 * GiB, ram_available=120 * GiB)
def test_liger_saves_act_gate_and_the_norms_fp32_copy_by_hand():
    # bf16 16-bit LoRA on CUDA, no dropout: stream 2 bytes. Liger's SwiGLU saves gate and up (not act(gate)):
    # one [tokens x intermediate] tensor less per layer; its RMSNorm keeps its bf16 input, not an fp32 copy.
    plan = Workload(TINY, r=2, targets="all-linear", device="cuda", seq_len=10, batch=1, dropout=0.0)
    plain, liger = estimate_memory(plan), estimate_memory(plan.replace(liger=True))
    per_layer = 16 * 2 + 2 * (4 - 2) * 8  # act(gate) in bf16, and two norms' fp32 copies become bf16
    assert plain.breakdown["activations"] - liger.breakdown["activations"] == 10 * 2 * per_layer
    # QLoRA's fp32 stream: the norms save the same; the MLP saves one fp32 intermediate less
    q = plan.replace(quant="4bit")
    assert (estimate_memory(q).breakdown["activations"] - estimate_memory(q.replace(liger=True)).breakdown["activations"]
            == 10 * 2 * 16 * 4)
    cpu = plan.replace(device="cpu")  # Liger is CUDA-only: nothing changes on CPU
    assert estimate_memory(cpu).total_bytes == estimate_memory(cpu.replace(liger=True)).total_bytes


# Measured on one H200 (issue 17: max_memory_reserved; QLoRA r16 all-linear, SDPA, grouped, bf16), recovered
# from the reported estimate and its error: (model, micro-batch, tokens per row, checkpointing, Liger, GiB).
H200_POINTS = [("Qwen2.5-1.5B", 8, 1024, False, True, 35.98), ("Qwen2.5-1.5B", 8, 1024, False, False, 43.55),
               ("Qwen2.5-1.5B", 4, 1024, False, True, 19.18), ("Qwen2.5-1.5B", 4, 1024, True, True, 3.67),
               ("Qwen2.5-7B", 4, 1024, True, True, 11.24)]


@pytest.mark.parametrize("model,batch,seq,ckpt,liger,measured", H200_POINTS)
def test_estimate_meets_the_goal_on_the_measured_h200_points(model, batch, seq, ckpt, liger, measured):
    plan = Workload(model, quant="4bit", r=16, batch=batch, seq_len=seq, grad_checkpointing=ckpt, liger=liger)
    est = estimate_memory(plan)
    comparable = (est.total_bytes - est.breakdown["cuda_context"]) / GiB  # what max_memory_reserved sees
    assert -0.05 <= (comparable - measured) / measured <= 0.10 or abs(comparable - measured) <= 0.5


def test_concatenated_batches_are_estimated_at_their_tokens():
    base = Workload("Qwen2.5-1.5B", quant="4bit", batch=8, seq_len=1024, batching="padding_free")
    known = estimate_memory(base.replace(tokens_per_batch=2000))
    assert known.total_bytes == estimate_memory(base.replace(batch=1, seq_len=2000)).total_bytes
    assert known.total_bytes < 0.4 * estimate_memory(base).total_bytes  # 8 x 1024 was the bound, not the run
    # a token budget is exact: one row of the budget's tokens
    budget = Workload("Qwen2.5-1.5B", quant="4bit", batch=1, seq_len=4096, batching="padding_free")
    assert estimate_memory(budget).total_bytes == estimate_memory(budget.replace(batch=4, seq_len=1024)).total_bytes


def test_heaviest_concatenation_of_long_tailed_rows():
    from lora_tui.core.plan.memory import heaviest_concatenation

    lengths = [1500, 1200] + [80] * 398  # two long rows among short ones
    few = heaviest_concatenation(lengths, 8, 10, max_seq_len=1024, seed=1)
    assert few == heaviest_concatenation(lengths, 8, 10, max_seq_len=1024, seed=1)  # seeded
    bound = 1024 + 1024 + 6 * 80
    assert 8 * 80 <= few <= bound
    assert heaviest_concatenation(lengths, 8, 10_000, max_seq_len=1024) == bound  # a long run meets the bound
    assert heaviest_concatenation([], 8, 10) == 0


def test_padding_free_run_estimate_uses_the_datas_rows(monkeypatch):
    from lora_tui.core.plan import memory_record
    from lora_tui.core.config import Config, apply_overrides

    config = apply_overrides(Config(), ["model.name=Qwen2.5-1.5B", "model.load_in=4bit", "training.micro_batch=8",
                                        "training.gradient_checkpointing=off", "training.batching=padding_free",
                                        "training.attention=sdpa", "training.kernels=none", "data.max_seq_len=1024",
                                        "training.max_steps=10", "training.grad_accum=1"])
    gpu = _H200
    lengths = [1450, 1166] + [85] * 398
    bound = memory_record.memory_estimate_facts(config, gpu, "cuda", longest=1024)
    drawn = memory_record.memory_estimate_facts(config, gpu, "cuda", longest=1024, lengths=lengths)
    assert drawn["comparable_bytes"] < 0.5 * bound["comparable_bytes"]
    assert "cuda_workspaces" in drawn["breakdown"]


def test_gpu_fixed_costs_outside_and_inside_the_reserved_counter():
    from lora_tui.core.plan import memory_record
    from lora_tui.core.config import Config, apply_overrides
    from lora_tui.core.plan.memory import CUDA_CONTEXT_BYTES, CUDA_WORKSPACE_BYTES

    est = estimate_memory(Workload("SmolLM2-360M", device="cuda"))
    assert est.breakdown["cuda_context"] == CUDA_CONTEXT_BYTES and est.breakdown["cuda_workspaces"] == CUDA_WORKSPACE_BYTES
    config = apply_overrides(Config(), ["model.name=SmolLM2-360M", "training.micro_batch=4",
                                        "training.gradient_checkpointing=off"])
    gpu = _H200
    facts = memory_record.memory_estimate_facts(config, gpu, "cuda")
    # torch.cuda.max_memory_reserved never sees the context but does see the workspaces
    assert facts["comparable_bytes"] == facts["total_bytes"] - CUDA_CONTEXT_BYTES


def test_plan_counts_liger_where_the_run_uses_it(monkeypatch):
    from lora_tui.core.machine import kernels
    from lora_tui.core.config import Config, apply_overrides
    from lora_tui.core.plan.workload import workload_of

    monkeypatch.setattr(kernels, "liger_available", lambda: True)  # liger-kernel cannot be installed without CUDA here
    gpu = _H200
    config = apply_overrides(Config(), ["model.name=Qwen2.5-1.5B", "training.micro_batch=4", "training.gradient_checkpointing=off"])
    assert workload_of(config, gpu, device="cuda").liger
    assert not workload_of(apply_overrides(config.copy(), ["training.kernels=none"]), gpu, device="cuda").liger
    assert not workload_of(config, gpu, device="cpu").liger


def test_cpu_bf16_counts_onednn_kernels_per_new_batch_shape_up_to_its_caches():
    """CPU bf16 matmuls go through oneDNN, which keeps a compiled kernel per new matmul shape (memory.ONEDNN_*):
    the term grows with the run's distinct micro-batch shapes until the caches are full; fp32 (MKL) and CUDA
    keep none. The figures were measured (benchmarks/family_matrix.py: a tiny Llama's bf16 run grew ~20 MiB a
    micro-batch, flat in fp32 or with the caches at one kernel); the arithmetic is checked here."""
    from lora_tui.core.config import Config, apply_overrides
    from lora_tui.core.plan import memory
    from lora_tui.core.plan.workload import workload_of

    def kernels(**changes):
        plan = Workload("SmolLM2-135M", device="cpu", batch=4, seq_len=128, **{"dtype": "bfloat16", **changes})
        return estimate_memory(plan).breakdown.get("kernel_cache", 0)

    one, ten = kernels(batch_shapes=1), kernels(batch_shapes=10)
    assert 0 < one and ten == 10 * one
    assert kernels() == kernels(batch_shapes=10_000) == memory.ONEDNN_CACHE_KERNELS * memory.ONEDNN_KERNEL_BYTES
    assert kernels(dtype="float32") == 0
    assert "kernel_cache" not in estimate_memory(Workload("SmolLM2-135M", device="cuda")).breakdown
    # a run of max_steps takes max_steps x its micro-batches per step; a run of epochs is a long run
    config = apply_overrides(Config(), ["model.name=SmolLM2-135M", "training.max_steps=6", "training.micro_batch=4",
                                        "training.grad_accum=2", "training.gradient_checkpointing=off"])
    assert workload_of(config, None, device="cpu").batch_shapes == 12
    assert workload_of(apply_overrides(config, ["training.max_steps=-1"]), None, device="cpu").batch_shapes is None


def test_cpu_bf16_kernel_cache_counts_gemma4s_own_layer_shapes():
    """Gemma 4's full-attention layers have their own head size (per_layer_config) and every layer has per-layer-input
    projections that peft's all-linear adapts: more distinct matmul shapes than a Llama-like layer. oneDNN logged
    (ONEDNN_VERBOSE=profile_create) 42 kernels a micro-batch for the family matrix's tiny Gemma 4 and 31 for Gemma 3;
    counted as Gemma 3 the estimate was 5.1 % under the measured peak (806 / 849 MiB)."""
    from lora_tui.core.model.catalogue import dims_from_config
    from lora_tui.core.plan.memory import ONEDNN_KERNEL_BYTES

    # the tiny Gemma 4 of the family matrix (lora_tui/core/model/tiny.py), as its config.json says
    cfg = {"model_type": "gemma4_text", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128, "vocab_size": 49154,
           "layer_types": ["sliding_attention", "full_attention"], "per_layer_config": {"1": {"head_dim": 32}},
           "hidden_size_per_layer_input": 16, "vocab_size_per_layer_input": 49154, "tie_word_embeddings": True}
    gemma4 = dims_from_config(cfg, "g4")
    like_gemma3 = dims_from_config({**cfg, "per_layer_config": {}, "hidden_size_per_layer_input": 0}, "g3")
    assert gemma4.head_dims == (16, 32) and like_gemma3.head_dims == (16,) and like_gemma3.other_linear == ()
    assert set(gemma4.other_linear) == {("q_proj", 64, 128), ("k_proj", 64, 64), ("v_proj", 64, 64), ("o_proj", 128, 64),
                                        ("per_layer_input_gate", 64, 16), ("per_layer_projection", 16, 64),
                                        ("per_layer_model_projection", 64, 32)}

    def kernels(dims, targets="all-linear"):
        plan = Workload(dims, device="cpu", dtype="bfloat16", batch=4, seq_len=56, r=4, targets=targets, batch_shapes=1)
        return estimate_memory(plan).breakdown["kernel_cache"] // ONEDNN_KERNEL_BYTES

    # frozen shapes 4 -> 6 (64x16, 16x64; the full-attention layer's fall on the MLP's and q's): 2 kernels each;
    # LoRA in / out widths 2 + 3 -> 3 + 4 (16 both ways): 3 each; attention 6 per head size
    assert kernels(like_gemma3) == 2 * 4 + 3 * 5 + 2 + 6 == 31
    assert kernels(gemma4) == 2 * 6 + 3 * 7 + 2 + 2 * 6 == 47
    # attention targets leave the per-layer-input projections' LoRA alone; the full-attention layer's q_proj and
    # o_proj still bring LoRA widths 128 out and 128 in
    assert kernels(gemma4, "attention") - kernels(like_gemma3, "attention") == 2 * 2 + 3 * 2 + 6


@pytest.mark.parametrize("k_eq_v", [False, True])
def test_a_published_gemma4_config_gets_its_full_attention_head_size(k_eq_v):
    """Gemma 4's config.json as published says global_head_dim (and num_global_key_value_heads), not
    per_layer_config: the estimate reads it as transformers' Gemma4TextConfig does (parameters, shapes, head sizes)."""
    from transformers import Gemma4TextConfig

    from lora_tui.core.model.catalogue import dims_from_config

    extra = {"attention_k_eq_v": True, "num_global_key_value_heads": 1} if k_eq_v else {}
    saved = Gemma4TextConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                             head_dim=16, global_head_dim=32, intermediate_size=128, vocab_size=1000,
                             layer_types=["sliding_attention", "full_attention"] * 2, hidden_size_per_layer_input=16,
                             vocab_size_per_layer_input=1000, **extra).to_dict()
    assert saved["per_layer_config"]["1"]["head_dim"] == 32
    published = {**{k: v for k, v in saved.items() if k != "per_layer_config"}, "global_head_dim": 32, **extra}
    ours, theirs = dims_from_config(published, "published"), dims_from_config(saved, "saved")
    assert (ours.params, ours.other_linear, ours.head_dims) == (theirs.params, theirs.other_linear, theirs.head_dims)
    assert ours.head_dims == (16, 32) and ("q_proj", 64, 128) in ours.other_linear
    assert (("v_proj", 64, 64) in ours.other_linear) != k_eq_v  # K = V in the full-attention layers: no v_proj


@pytest.mark.parametrize("method, rows", [("dpo", 1), ("dpo", 2), ("kto", 2)])
def test_preference_activations_are_what_autograd_saves_with_trls_dropout_off(method, rows, tmp_path):
    """dpo / kto train through TRL's DPOConfig / KTOConfig, whose disable_dropout (on by default, left on by
    core/train/preference.py) sets every dropout to p=0, LoRA's too: a step saves no dropout noise whatever
    lora.dropout says (the embedded model's dpo micro-batch 8 bf16 peaked at 2.46 GiB with lora.dropout 0.05 and
    2.47 GiB with 0; the estimate that counted the noise said 3.99). dpo's forward runs both answers of each row
    (2 x rows), kto's one answer a row (its KL forward saves nothing: no gradients). CPU bf16, two lengths."""
    from types import SimpleNamespace

    from lora_tui.core.config import Config, apply_overrides
    from lora_tui.core.train.preference import preference_arguments

    config = apply_overrides(Config(), [f"training.method={method}", "lora.dropout=0.05"])
    common = {"output_dir": str(tmp_path), "use_cpu": True, "bf16": False}  # the rest as setup.trainer_arguments
    assert preference_arguments(config, common, SimpleNamespace(batching="grouped"), {}).disable_dropout
    cfg = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
               max_position_embeddings=64, tie_word_embeddings=True)
    r, short, long = 4, 16, 32
    one, two = (ModelDims(name="t", model_type="llama", hidden=32, layers=n, heads=4, kv_heads=2, head_dim=8,
                          intermediate=48, vocab=64, tied_embeddings=True) for n in (1, 2))
    forward_rows = 2 * rows if method == "dpo" else rows

    def layer_bytes(seq: int, measure: bool, plan_method: str = method) -> float:  # one more layer, this length
        if measure:
            return forward_rows * seq * _saved_bytes_per_layer(cfg, r, 0.05, one.target_modules("all-linear"),
                                                               forward_rows, seq, bf16=True, trl_dropout_off=True)
        plans = [Workload(d, r=r, device="cpu", seq_len=seq, batch=rows, dropout=0.05, dtype="bfloat16",
                          method=plan_method) for d in (one, two)]
        return estimate_memory(plans[1]).breakdown["activations"] - estimate_memory(plans[0]).breakdown["activations"]

    tokens = forward_rows * (long - short)
    measured = (layer_bytes(long, True) - layer_bytes(short, True)) / tokens
    estimated = (layer_bytes(long, False) - layer_bytes(short, False)) / tokens
    assert estimated == pytest.approx(measured, rel=0.02)
    # SFT keeps LoRA's dropout, and its fp32 noise per adapted input: more bytes at the same rows
    sft = (layer_bytes(long, False, "sft") - layer_bytes(short, False, "sft")) / (rows * (long - short))
    assert sft > estimated * 1.2


def test_preference_load_peak_counts_the_rows_tokenized_before_the_load():
    """dpo / kto tokenize the rows into datasets before TRL's trainer loads the model: RSS before the load was 608
    and 611 MiB (dpo on the embedded model, sample pairs) against SFT's 530 MiB of libraries, so a small dpo run
    converting the fp32 checkpoint to bf16 peaks at that + the file + the bf16 weights (1.349 GiB measured)."""
    from lora_tui.core.plan.memory import CPU_IMPORTS_BYTES, CPU_PREFERENCE_LOAD_BYTES

    dims = dataclasses.replace(TINY, stored_dtype="float32", checkpoint_bytes=400 * 1024**2)
    plans = {m: Workload(dims, device="cpu", dtype="bfloat16", seq_len=16, batch=1, batch_shapes=1, method=m)
             for m in ("sft", "dpo", "kto")}
    sft, dpo, kto = (estimate_memory(plans[m]) for m in ("sft", "dpo", "kto"))
    assert sft.total_bytes == CPU_IMPORTS_BYTES + 400 * 1024**2 + sft.breakdown["base_weights"]
    assert dpo.total_bytes == kto.total_bytes == CPU_PREFERENCE_LOAD_BYTES + 400 * 1024**2 + dpo.breakdown["base_weights"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and ru_maxrss carried over exec are Linux's")
def test_a_trainers_peak_is_its_own_not_the_peak_of_the_process_that_started_it():
    """The trainer's `memory` event compares the estimate with the trainer's peak RSS. Linux carries ru_maxrss over
    exec from the forking process, so a trainer started from a big process (the test runner at 2.2 GiB; the wizard
    with a model loaded for chat) reported that process's peak: every family of tests/test_families.py read
    2265 MiB in the full suite and 800 MiB alone. peak_rss reads the trainer's own high-water mark."""
    big = bytearray(600 * 2**20)
    big[:: 4096] = b"\x01" * len(big[:: 4096])  # touched: resident
    code = ("import resource; from lora_tui.core.plan.memory_record import peak_rss; "
            "print(peak_rss(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    own, inherited = int(out[0]), int(out[1])
    assert inherited >= 600 * 2**20  # the trap: the child's ru_maxrss counts the parent's 600 MiB
    assert own < 200 * 2**20, own
    del big
