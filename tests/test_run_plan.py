"""One run plan (issue 17 item 3): estimate, wizard, trainer and every rank decide from the same facts.

The GPU here is a HardwareReport as NVML would fill it (no GPU on the CI machine), and FlashAttention 3
"installed" is a monkeypatched detector (the package cannot be installed without CUDA): each test says so.
"""

from __future__ import annotations

import json

import pytest

from lora_tui.core.config import Config, apply_overrides
from lora_tui.core.machine.hardware import GPUInfo, HardwareReport

GiB = 1024**3


def h200(free_gib: float = 130) -> HardwareReport:
    gpu = GPUInfo(index=0, name="NVIDIA H200", memory_total=141 * GiB, memory_free=int(free_gib * GiB),
                  memory_used=0, compute_capability=(9, 0), bf16=True)
    return HardwareReport(gpus=[gpu], cpu_count=16, ram_total=128 * GiB, ram_available=100 * GiB)


@pytest.fixture
def flash3(monkeypatch):
    """FlashAttention 3 'installed' (only the detector is faked: the wheel needs CUDA)."""
    from lora_tui.core.machine import kernels

    monkeypatch.setattr(kernels, "flash_attention_available", lambda: "flash_attention_3")


def test_the_estimate_uses_the_compute_capability_the_trainer_uses(flash3):
    """Old code: workload called choose_attention without the capability, so with FlashAttention 3
    installed the estimate planned sdpa while the trainer (capability 9.0) ran FlashAttention 3."""
    from lora_tui.core.plan.workload import workload_of
    from lora_tui.core.plan.run_plan import DeviceFacts, decide_run_plan

    config, hw = Config(), h200()
    trainer_plan = decide_run_plan(config, DeviceFacts.from_hardware(hw, "cuda", capability=(9, 0), bf16=True), hw)
    assert trainer_plan.attention == "flash_attention_3"
    assert workload_of(config, hw).attention == "flash"


def test_wizard_and_trainer_make_equal_plans_for_the_same_facts(flash3, monkeypatch):
    """The wizard's estimate and batch (ui.backend) and the trainer's plan agree, field for field."""
    from lora_tui.core.plan.workload import workload_of
    from lora_tui.core.train.training import run_plan_of
    from lora_tui.ui.backend import Backend

    monkeypatch.delenv("LORA_TUI_PLAN", raising=False)
    config, hw, longest = apply_overrides(Config(), ["data.max_seq_len=1024"]), h200(), 300
    before = config.to_dict()
    plan = run_plan_of(None, config, hw, "cuda", longest=longest, capability=(9, 0), bf16_ok=True, world_size=1)
    assert config.to_dict() == before, "the plan is the choice: the config stays what the user asked for"
    wizard_batch = Backend().batch(config, hw, longest)
    assert (wizard_batch.micro_batch, wizard_batch.grad_accum, wizard_batch.gradient_checkpointing,
            wizard_batch.tokens_per_batch) == (plan.micro_batch, plan.grad_accum, plan.gradient_checkpointing,
                                               plan.tokens_per_batch)
    assert Backend().workload(config, hw, longest=longest) == plan.workload(config, hw)
    assert plan.batching == "token_budget" and plan.precision == "bf16" and plan.tokens_per_batch


def test_the_trainer_takes_the_batch_from_the_plan_not_from_the_config(tmp_path):
    """Old code wrote the chosen batch into the loaded config and built SFTConfig from it; with
    micro_batch=auto left in the config, SFTConfig got None."""
    from lora_tui.core.plan.run_plan import DeviceFacts, decide_run_plan
    from lora_tui.core.run.runs import RunDirectory
    from lora_tui.core.train.training import sft_config

    config = apply_overrides(Config(), ["training.micro_batch=auto", "training.grad_accum=2"])
    plan = decide_run_plan(config, DeviceFacts(), batch=None)
    plan = plan.replace(batch=plan.batch.replace(micro_batch=3, grad_accum=5))
    args = sft_config(config, RunDirectory(tmp_path / "run"), "cpu", "fp32", False, plan)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (3, 5)
    assert config.training.micro_batch is None and config.training.grad_accum == 2


def test_every_rank_gets_the_supervisors_plan_chosen_at_the_datas_longest_row(tmp_path, monkeypatch, embedded_model_dir):
    """Old code: the supervisor chose the batch without the data's longest row (rows of max_seq_len assumed),
    so a short-row dataset could get checkpointing or a smaller batch than a single-process run."""
    from lora_tui.core.train import distributed_run
    from lora_tui.core.plan.devices import DevicePlan, Nodes
    from lora_tui.core.plan.run_plan import ENV_PLAN, RunPlan, plan_from_env
    from lora_tui.core.run.runs import RunDirectory
    from lora_tui.core.train.data_lengths import measure_data

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"hi {i}"},
                                                     {"role": "assistant", "content": "hello there " * (i + 1)}]}) + "\n"
                            for i in range(6)))
    config = apply_overrides(Config(), [f"model.name={embedded_model_dir}", f"data.train={data}", "data.validation=",
                                        "data.max_seq_len=2048"])
    longest = measure_data(config).longest
    assert longest and longest < 100
    dp = DevicePlan(processes=2, cpu=True, strategy="ddp", reason="test", nodes=Nodes())
    monkeypatch.delenv(ENV_PLAN, raising=False)
    env = distributed_run._batch_env(RunDirectory(tmp_path / "run"), dp, config, resume=False)
    plan = RunPlan.from_dict(json.loads(env[ENV_PLAN]))
    assert plan.longest == longest and plan.world_size == 2
    monkeypatch.setenv(ENV_PLAN, env[ENV_PLAN])
    assert plan_from_env().to_dict() == plan.to_dict()  # what each rank reads back


def test_candidate_plans_keep_the_effective_batch():
    """What the probe chooses among (core/train/probe.py measures them; its `choose` is the one rule)."""
    from lora_tui.core.plan.run_plan import DeviceFacts, candidate_plans

    config, hw = apply_overrides(Config(), ["data.max_seq_len=512"]), h200()
    facts = DeviceFacts.from_hardware(hw, "cuda")
    plans = candidate_plans(config, facts, hw)
    assert len(plans) > 1 and all(p.batching == "token_budget" for p in plans)
    assert {p.tokens_per_step for p in plans} == {plans[0].tokens_per_step}
    assert len({p.tokens_per_batch for p in plans}) > 1  # budgets that trade memory for speed


def test_token_budget_is_the_cuda_default_and_cpu_keeps_grouped():
    from lora_tui.core.plan.run_plan import DeviceFacts, decide_run_plan

    cuda = decide_run_plan(Config(), DeviceFacts.from_hardware(h200(), "cuda"), h200())
    assert cuda.batching == "token_budget" and cuda.micro_batch == 1
    assert cuda.tokens_per_step == 16 * 512, "auto keeps the effective batch: 4 x grad_accum rows of max_seq_len"
    assert cuda.tokens_per_batch % 512 == 0 and cuda.tokens_per_batch > 512
    assert "tokens per step" in cuda.batch.describe()
    cpu = decide_run_plan(Config(), DeviceFacts())
    assert cpu.batching == "grouped" and cpu.tokens_per_batch is None and "rows per step" in cpu.batch.describe()
    fixed = decide_run_plan(apply_overrides(Config(), ["training.tokens_per_batch=3000"]), DeviceFacts.from_hardware(h200(), "cuda"), h200())
    assert fixed.tokens_per_batch == 3000 and fixed.tokens_per_step == 3000 * fixed.grad_accum


def test_sdpa_token_budget_is_capped_flash_is_not(monkeypatch):
    """Without FlashAttention's varlen kernel a packed micro-batch costs N^2 attention: auto stops at 8192 tokens."""
    from lora_tui.core.machine import kernels
    from lora_tui.core.plan.workload import SDPA_TOKEN_BUDGET_CAP
    from lora_tui.core.plan.run_plan import DeviceFacts, decide_run_plan

    config, hw = apply_overrides(Config(), ["data.max_seq_len=1024", "training.grad_accum=16"]), h200()
    monkeypatch.setattr(kernels, "flash_attention_available", lambda: None)
    sdpa = decide_run_plan(config, DeviceFacts.from_hardware(hw, "cuda"), hw)
    assert sdpa.attention == "sdpa" and sdpa.tokens_per_batch == SDPA_TOKEN_BUDGET_CAP
    assert sdpa.tokens_per_step == 64 * 1024 and "without FlashAttention" in sdpa.reasons["micro_batch"]
    monkeypatch.setattr(kernels, "flash_attention_available", lambda: "flash_attention_2")  # faked: needs CUDA
    flash = decide_run_plan(config, DeviceFacts.from_hardware(hw, "cuda"), hw)
    assert flash.attention == "flash_attention_2" and flash.tokens_per_batch > SDPA_TOKEN_BUDGET_CAP
