"""`lora-tui doctor` and `lora-tui estimate` as a user runs them (subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _sees_a_gpu() -> bool:
    """What `--device auto` looks at: the GPUs the hardware probe finds."""
    from lora_tui.core.machine.hardware import probe_hardware

    return bool(probe_hardware(check_libraries=False).gpus)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lora_tui", *args], capture_output=True, text=True, timeout=300)


def test_estimate_json_shape(embedded_model_dir):
    result = _cli("estimate", "--model", "embedded", "--batch", "2", "--seq-len", "256", "--r", "8",
                  "--targets", "qv", "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert isinstance(out["total_bytes"], int) and out["total_bytes"] > 0
    assert all(isinstance(v, int) and v >= 0 for v in out["breakdown"].values())
    assert sum(out["breakdown"].values()) == out["total_bytes"]
    assert {"base_weights", "lora_weights", "optimizer_states", "activations", "process"} <= set(out["breakdown"])
    assert out["verdict"] in ("fits", "tight", "wont_fit")
    assert isinstance(out["available_bytes"], int) and isinstance(out["fixes"], list)
    assert out["plan"]["targets"] == ["q_proj", "v_proj"] and out["plan"]["device"] == "cpu"


def test_estimate_that_does_not_fit_lists_fixes_as_json():
    result = _cli("estimate", "--model", "Llama-3.1-8B", "--batch", "16", "--seq-len", "4096", "--device", "cpu", "--json")
    assert result.returncode == 1, result.stderr  # issue 8: a plan that will not fit exits 1
    out = json.loads(result.stdout)
    assert out["verdict"] == "wont_fit" and out["fixes"]
    for fix in out["fixes"]:
        assert set(fix) == {"title", "changes", "new_total_bytes", "verdict", "overrides", "command"}
        assert fix["new_total_bytes"] < out["total_bytes"]


def test_estimate_human_output_has_breakdown_verdict_and_fixes():
    result = _cli("estimate", "--model", "Qwen2.5-7B", "--seq-len", "4096", "--device", "cpu", "--no-grad-checkpointing")
    assert result.returncode == 1, result.stderr  # issue 8: a plan that will not fit exits 1
    text = result.stdout
    assert "base model weights" in text and "estimated peak" in text
    assert "Verdict: WON'T FIT" in text and "Fixes, strongest first:" in text and "1. " in text


@pytest.mark.skipif(_sees_a_gpu(), reason="--device auto picks the GPU here; the CPU RAM note is for a machine without one")
def test_estimate_without_gpu_says_it_uses_cpu_ram():
    result = _cli("estimate", "--model", "SmolLM2-135M", "--json")
    out = json.loads(result.stdout)
    assert out["plan"]["device"] == "cpu"  # auto on a machine without a GPU
    assert any("CPU RAM" in note for note in out["notes"])


def test_unknown_model_is_one_line_and_exit_2():
    result = _cli("estimate", "--model", "nobody/no-such-model")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Unknown model" in result.stderr


def test_doctor_json():
    result = _cli("doctor", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert {"gpus", "cpu_count", "ram_total", "ram_available", "torch_version", "bitsandbytes_ok", "nvml_error", "cpu_only"} <= set(out)
    assert out["cpu_count"] >= 1 and out["ram_total"] > 0
    assert out["cpu_only"] == (out["gpus"] == [])
    human = _cli("doctor")
    assert human.returncode == 0 and "RAM" in human.stdout and "GPUs" in human.stdout
