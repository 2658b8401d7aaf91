"""The family matrix (issue 23 item 1): a tiny random-weight model of every family, built from transformers'
own config class (no download), through the flow a user takes: the estimate (parameter count exact), a
LoRA run in the detached trainer (adapter moved, base untouched), multi-turn chat that stops on the family's
end-of-turn token, two adapters in one chat, merge (logits equal to the adapter's) and its Modelfile.

QLoRA 4-bit and kill -9 + resume run here on a representative subset: the families whose layers differ
where those paths differ (quantizable layer types: MoE experts, linear attention, per-layer embeddings;
exact resume: MoE routing, eager attention with sinks, the linear-attention kernels). Llama takes both in
test_training.py / test_reliability_training.py; the Llama-like families (Mistral, Ministral, Qwen2/3,
SmolLM3, Granite, OLMo, Phi-3) share its code paths. `python3 benchmarks/family_matrix.py` runs every
family through every step, GGUF f16 / q8_0 / q4_k_m in llama.cpp and the full round-trip check included
(tests/test_export_gguf*.py check each family's GGUF files in llama.cpp)."""

from __future__ import annotations

import pytest

from lora_tui.core.model.families import FAMILIES
from tests.support.families import matrix

KEYS = [f.key for f in FAMILIES]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tokenizer_dir):
    made: dict = {}

    def get(key: str):
        if key not in made:
            made[key] = matrix().prepare(key, tmp_path_factory.mktemp(f"matrix-{key}"), tokenizer_dir)
        return made[key]

    return get


def _ok(fam, step: str, **kwargs) -> str:
    m = matrix()
    if kwargs:
        m.STEP_FUNCTIONS[step](fam, **kwargs)
        return "ok"
    cell = m.run_step(fam, step)
    assert cell.status == "ok", f"{fam.key} {step}: {cell.status}: {cell.detail}"
    return cell.detail


@pytest.mark.parametrize("key", KEYS)
def test_a_family_goes_through_the_flow(key, prepared):
    fam = prepared(key)
    for step in ("estimate", "train", "chat", "adapters"):
        _ok(fam, step)
    _ok(fam, "merge", full_check=False)
    _ok(fam, "modelfile")
    # the LoRA run's memory event: the estimate it started with against its measured peak RSS
    assert matrix().memory_goal(fam), f"{key}: estimate missed its goal: {matrix().memory_error(fam)}"


@pytest.mark.parametrize("key", ["qwen3_5", "qwen3_moe", "gemma2", "gemma4", "gpt_oss"])
def test_qlora_4bit(key, prepared):
    _ok(prepared(key), "qlora")


@pytest.mark.parametrize("key", ["qwen3_5", "qwen3_moe", "gpt_oss"])
def test_kill_9_and_resume_is_bit_identical(key, prepared):
    _ok(prepared(key), "resume")


@pytest.mark.parametrize("key", KEYS)
def test_gguf_is_written_or_refused_in_one_line_as_gguf_support_says(key, prepared, tmp_path):
    """A family GGUF export cannot write is refused before anything loads, in the line gguf_support gives the
    Model screen; one it writes is checked in llama.cpp by tests/test_export_gguf*.py (f16, q8_0, q4_k_m)."""
    from lora_tui.core.export.artefacts import ExportError, export_gguf
    from lora_tui.core.export.gguf import gguf_support
    from lora_tui.core.model.models import load_model_config
    from tests.support.chat import make_fake_run

    fam = prepared(key)
    supported, line = gguf_support(load_model_config(str(fam.model)))
    assert line and "\n" not in line
    if supported:
        return
    run = make_fake_run(tmp_path, fam.model)
    with pytest.raises(ExportError) as refused:
        export_gguf(run, tmp_path / "out.gguf", gguf_type="q8_0")
    assert "\n" not in str(refused.value) and not (tmp_path / "out.gguf").exists()


@pytest.mark.parametrize("key", ["qwen3_moe", "gpt_oss"])
def test_moe_experts_are_an_opt_in_target_and_the_estimate_counts_them(key, tiny_family, train_file):
    """Default: attention (and dense layers) only, the experts untouched; lora.targets=all-linear,experts: PEFT's
    target_parameters adapts every expert. The estimate's LoRA size is PEFT's trainable count either way."""
    from lora_tui.core.config import Config, apply_overrides
    from lora_tui.core.model.catalogue import model_dims
    from lora_tui.core.plan.family_rules import family_problem
    from lora_tui.core.plan.memory import _lora_params
    from lora_tui.core.train.setup import build_model

    model_dir = tiny_family(key)
    dims = model_dims(str(model_dir))
    for experts in (False, True):
        config = apply_overrides(Config(), [f"model.name={model_dir}", f"data.train={train_file}", "lora.r=4",
                                            "lora.dropout=0", f"lora.targets={'all-linear,experts' if experts else 'all-linear'}"])
        assert family_problem(config) is None
        model, targets = build_model(config, "cpu", "fp32")
        trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
        on_experts = [n for n in trainable if ".experts." in n]
        assert bool(on_experts) == experts, on_experts
        assert sum(trainable.values()) == _lora_params(dims, dims.target_modules("all-linear"), 4, experts)
    dropout = apply_overrides(config.copy(), ["lora.dropout=0.05"])
    assert family_problem(dropout).startswith("lora.targets=all-linear,experts with lora.dropout=0.05:")
    dense = apply_overrides(Config(), [f"model.name={tiny_family('llama')}", "lora.dropout=0", "lora.targets=qv,experts"])
    assert "not a mixture-of-experts model" in family_problem(dense)


def test_the_model_screen_claims_only_the_matrix_families():
    """The Steps column (core/export/family_support.py): every step for a family this file takes through the
    flow, GGUF as the export itself says, and nothing for a model type outside the matrix."""
    from lora_tui.core.export.family_support import STEPS, family_steps, steps_cell, steps_line
    from lora_tui.core.export.gguf import gguf_support

    for fam in FAMILIES:
        for model_type in fam.model_types:
            rows = dict((step, ok) for step, ok, _ in family_steps(model_type))
            assert list(rows) == list(STEPS)
            assert rows["GGUF"] == gguf_support(model_type)[0]
            assert all(ok for step, ok in rows.items() if step != "GGUF")
    assert steps_cell("qwen3_5_text") == steps_cell("qwen3_5") == steps_cell("gemma4_text") == "all 8"
    assert steps_cell("gemma4") == "no GGUF" and "multimodal" in steps_line("gemma4")  # trained with its vision tower
    assert steps_cell("llama") == "all 8"
    assert steps_cell("bert") == "untested" and "no step is proven" in steps_line("bert")


@pytest.mark.parametrize("key", ["llama", "gpt_oss"])
def test_qlora_after_an_evaluation_keeps_its_gradients(key, tiny_family, train_file):
    """An evaluation before training (the default: a held-out share) ran the 4-bit layers in eval mode, and
    bitsandbytes repacked them for AVX512-BF16 inference for good: layer 0's LoRA gradients were then wrong
    (Llama) or the step failed (gpt-oss, biased projections). The trainer's model keeps training layouts."""
    import torch
    from peft import get_peft_model

    from lora_tui.core.config import Config, apply_overrides
    from lora_tui.core.train.setup import load_base_for_lora, lora_config

    config = apply_overrides(Config(), [f"model.name={tiny_family(key)}", f"data.train={train_file}",
                                        "model.load_in=4bit", "lora.dropout=0", "lora.targets=qv", "lora.r=4"])
    ids = torch.randint(5, 1000, (2, 16), generator=torch.Generator().manual_seed(0))

    def layer0_grads(evaluate_first: bool):
        torch.manual_seed(0)
        base, available = load_base_for_lora(config, "cpu", "fp32")
        packs = any(getattr(m, "support_avx512bf16_for_cpu", None) is not None for m in base.modules())
        model = get_peft_model(base, lora_config(config, available)[0])
        for name, param in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.1)  # so that gradients reach lora_A
        if evaluate_first:
            model.eval()
            with torch.no_grad():
                model(input_ids=ids)
        model.train()
        model(input_ids=ids, labels=ids).loss.backward()
        grads = [p.grad for n, p in model.named_parameters() if "layers.0." in n and "lora_A" in n]
        return packs, grads

    packs, fresh = layer0_grads(False)
    _, after_eval = layer0_grads(True)
    assert packs, "bitsandbytes' Linear4bit has no support_avx512bf16_for_cpu: the repacking this guards is gone"
    assert all(g is not None for g in after_eval) and all(torch.allclose(a, b) for a, b in zip(fresh, after_eval))


@pytest.mark.parametrize("key", KEYS)
def test_the_estimate_knows_which_loss_head_the_trainer_takes(key, tiny_family):
    """The lean head is not installed for MoE and scaled logits (Granite): TRL's own head then scores in
    32768-wide tiles, +166 MiB on the tiny models' measured peaks; the estimate must count those tiles."""
    from transformers import AutoModelForCausalLM

    from lora_tui.core.model.catalogue import model_dims
    from lora_tui.core.train.engine import install_lean_head

    model = AutoModelForCausalLM.from_pretrained(tiny_family(key))
    assert model_dims(str(tiny_family(key))).lean_head == install_lean_head(model, 8192)
