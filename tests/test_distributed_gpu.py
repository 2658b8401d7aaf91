"""Multi-GPU paths that need CUDA (DDP over NCCL, FSDP, QLoRA + FSDP). Skipped without 2 GPUs.
Written against accelerate 1.15 / transformers 5.23 / peft 0.21 / bitsandbytes 0.50; run them
on a machine with two or more GPUs:  python -m pytest -q -m gpu tests/test_distributed_gpu.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.wait import wait_until

pytestmark = pytest.mark.gpu


def _gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


needs_two = pytest.mark.skipif(_gpus() < 2, reason="needs 2 CUDA GPUs")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gpu-data") / "train.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                          {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]} for i in range(32)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _train(model: Path, data: Path, run_dir: Path, *overrides: str):
    from lora_tui.core.config import Config, apply_overrides
    from lora_tui.core.run.launcher import start_run

    config = apply_overrides(Config(), [
        f"model.name={model}", f"data.train={data}", "data.validation=", "data.max_seq_len=64",
        "training.micro_batch=2", "training.grad_accum=1", "training.max_steps=4", "training.eval_steps=0",
        "training.save_steps=2", "lora.r=4", "lora.alpha=8", "training.devices=2", *overrides])
    run = start_run(config, run_dir)
    wait_until(lambda: run.state() in ("finished", "failed", "stopped", "dead") and not run.is_locked(), 600,
               interval=0.5, what="the run to end and let go of its lock")
    return run


def _check(run, strategy: str) -> None:
    assert run.state() == "finished", run.log_path.read_text()[-4000:]
    events = run.read_events()
    started = next(e for e in events if e["type"] == "started")
    assert started["world_size"] == 2 and started["strategy"] == strategy
    assert sorted(r["device"] for r in started["ranks"]) == ["cuda:0", "cuda:1"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
    from safetensors.torch import load_file

    weights = load_file(run.adapter_dir / "adapter_model.safetensors")
    assert any(float(v.abs().max()) > 0 for k, v in weights.items() if "lora_B" in k), "the adapter trained"
    system = [e for e in events if e["type"] == "system"]
    if system:
        assert len(system[-1]["gpus"]) >= 2, "every GPU in the system events"


@needs_two
def test_ddp_on_two_gpus(tiny_model_dir, data, tmp_path):
    _check(_train(tiny_model_dir, data, tmp_path / "ddp", "training.strategy=ddp"), "ddp")


@needs_two
def test_fsdp_on_two_gpus(tiny_model_dir, data, tmp_path):
    run = _train(tiny_model_dir, data, tmp_path / "fsdp", "training.strategy=fsdp")
    _check(run, "fsdp")
    import yaml

    assert yaml.safe_load((run.path / "accelerate_config.yaml").read_text())["distributed_type"] == "FSDP"


@needs_two
def test_qlora_fsdp_on_two_gpus(tiny_model_dir, data, tmp_path):
    run = _train(tiny_model_dir, data, tmp_path / "qlora-fsdp", "training.strategy=fsdp", "model.load_in=4bit",
                 "training.precision=bf16")
    _check(run, "fsdp")
    started = next(e for e in run.read_events() if e["type"] == "started")
    assert started["quantized_layers"] > 0
