"""The measuring probe (core/train/probe.py): the rule, the walks, the cache, and the real probe path on CPU.

The CPU runs use ``training.probe=on`` (the probe is CUDA-only by default) on the tiny random Llama,
through the real detached trainer: candidates are timed with the trainer's own training step, the
choice lands in the ``started`` event, the second run hits the cache, and a probed run trains exactly
like an unprobed run configured with the chosen plan.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lora_tui.core.train import probe, probe_cache
from lora_tui.core.config import Config, apply_overrides
from lora_tui.core.train.probe import Candidate, Measurement, choose, heavier_pays, walk_stops
from tests.support.wait import wait_until


def _m(tps, peak, over=False, micro=4, ckpt=False):
    return Measurement(Candidate(micro, 16 // micro, ckpt), tokens_per_s=tps, peak_bytes=peak, over=over)


# ------------------------------------------------------------------ the rule (injected measurements: pure function)
def test_heavier_plan_is_taken_only_when_measurably_faster():
    light, heavy = _m(1000.0, 10, micro=4), _m(1040.0, 20, micro=8)  # 4% faster: not worth its memory
    assert choose([heavy, light]) is light
    faster = _m(1060.0, 20, micro=8)  # 6% faster: taken
    assert choose([light, faster]) is faster
    assert heavier_pays(light, faster) and not heavier_pays(light, heavy)


def test_over_budget_plans_never_win_and_the_comparison_chains():
    a, b, c = _m(1000.0, 10, micro=2), _m(1100.0, 20, micro=4), _m(1150.0, 30, micro=8)
    # c is 15% faster than a but only 4.5% faster than b, the plan taken before it: b wins
    assert choose([c, b, a]) is b
    over = _m(5000.0, 40, over=True, micro=16)
    assert choose([a, over]) is a
    assert choose([]) is None and choose([over]) is None


def test_weight_is_the_measured_peak_else_the_estimate():
    ckpt = Measurement(Candidate(8, 2, True), tokens_per_s=900.0, estimate_bytes=5)
    plain = Measurement(Candidate(4, 4, False), tokens_per_s=1000.0, estimate_bytes=9)
    assert choose([plain, ckpt]) is plain  # heavier by estimate and 11% faster
    plain.tokens_per_s = 920.0
    assert choose([plain, ckpt]) is ckpt  # 2% faster: the lighter, checkpointed plan stays


def test_walk_stops_at_the_first_plan_that_does_not_pay_or_is_over():
    best = _m(1000.0, 10)
    assert walk_stops(best, _m(1010.0, 20))
    assert not walk_stops(best, _m(1200.0, 20))
    assert walk_stops(best, _m(None, None, over=True))
    assert not walk_stops(None, _m(10.0, 1))


def test_probe_setting_defaults_to_cuda_only():
    config = Config()
    assert probe.enabled(config, "cuda") and not probe.enabled(config, "cpu")
    assert probe.enabled(apply_overrides(Config(), ["training.probe=on"]), "cpu")
    assert not probe.enabled(apply_overrides(Config(), ["training.probe=off"]), "cuda")


def test_walks_are_lightest_first_and_keep_the_effective_batch():
    from types import SimpleNamespace

    config = apply_overrides(Config(), ["training.grad_accum=4"])  # micro_batch and checkpointing auto
    choice = SimpleNamespace(micro_batch=8, grad_accum=2, gradient_checkpointing=False, kernels=["lean_head"],
                             batching="grouped", tokens_per_batch=None)
    found = probe.candidates(config, choice, "cuda")
    assert {c.micro_batch * c.grad_accum for c in found} == {16}
    assert {c.gradient_checkpointing for c in found} == {True, False}
    assert Candidate(8, 2, False) in found
    liger = probe.candidates(config, choice, "cuda", liger=True)
    assert {c.liger for c in liger} == {True, False} and len(liger) == 2 * len(found)
    budget = SimpleNamespace(micro_batch=1, grad_accum=4, gradient_checkpointing=False, kernels=["lean_head"],
                             batching="token_budget", tokens_per_batch=2048)
    tokens = probe.candidates(apply_overrides(Config(), ["data.max_seq_len=512"]), budget, "cuda")
    assert {c.tokens_per_batch * c.grad_accum for c in tokens} == {8192}
    assert min(c.tokens_per_batch for c in tokens) >= 512 and all(c.micro_batch == 1 for c in tokens)


# ------------------------------------------------------------------ the cache
def test_cache_round_trip_is_keyed_by_what_the_measurement_depends_on(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_TUI_CACHE", str(tmp_path))
    from types import SimpleNamespace

    config = Config()
    choice = SimpleNamespace(micro_batch=4, grad_accum=4, gradient_checkpointing=False, kernels=["lean_head"],
                             batching="grouped", attention="sdpa")
    gpu = {"name": "NVIDIA H200", "total_memory": 150 * 2**30}
    walks = [[Candidate(4, 4, False)]]
    key = probe_cache.cache_key(config, "cuda", gpu, "/no/such/model", [100, 50], choice, walks)
    assert probe_cache.cached(key) is None
    result = probe.ProbeResult(Candidate(4, 4, False), [Measurement(Candidate(4, 4, False), 123.0, 2**30)], reason="r")
    probe_cache.store(key, result.facts())
    assert probe_cache.cached(key)["chosen"]["micro_batch"] == 4
    other_gpu = probe_cache.cache_key(config, "cuda", {**gpu, "total_memory": 80 * 2**30}, "/no/such/model", [100, 50], choice, walks)
    other_rows = probe_cache.cache_key(config, "cuda", gpu, "/no/such/model", [400, 50], choice, walks)
    other_lora = probe_cache.cache_key(apply_overrides(Config(), ["lora.r=64"]), "cuda", gpu, "/no/such/model", [100, 50], choice, walks)
    assert len({key, other_gpu, other_rows, other_lora}) == 4
    (tmp_path / "probe.json").write_text("{not json")  # a damaged cache is a miss, never an error
    assert probe_cache.cached(key) is None


def test_liger_patch_is_undone_completely():
    """Liger is not installed here (CUDA only): a stand-in patcher that does what Liger's instance patching
    does (binds a new forward, adds attributes, replaces a modeling-module function) is undone by disable()."""
    import sys
    import types

    import torch

    mod = types.ModuleType("fake_modeling")
    sys.modules["fake_modeling"] = mod

    def rope(x):
        return x

    mod.apply_rotary_pos_emb = rope

    class Norm(torch.nn.Module):
        def forward(self, x):
            return x + 1

    Norm.__module__ = "fake_modeling"
    model = torch.nn.Sequential(Norm())

    def patcher(m):
        norm = m[0]
        norm.__dict__["forward"] = (lambda self, x: x * 10).__get__(norm, Norm)
        norm.offset, norm.casting_mode = 0.0, "llama"
        mod.apply_rotary_pos_emb = lambda x: -x

    from lora_tui.core.train.probe_trainer import LigerPatch

    patch = LigerPatch(model, apply=patcher)
    x = torch.ones(2)
    patch.enable()
    assert torch.equal(model(x), x * 10) and mod.apply_rotary_pos_emb(1) == -1
    patch.disable()
    assert torch.equal(model(x), x + 1) and mod.apply_rotary_pos_emb is rope
    assert not hasattr(model[0], "offset") and "forward" not in vars(model[0])
    del sys.modules["fake_modeling"]


# ------------------------------------------------------------------ the real probe path on CPU
def _rows(n: int = 24) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"What is {i} plus {i}?" + " Think." * (i % 5)},
                          {"role": "assistant", "content": f"Ahoy! {i} plus {i} is {2 * i}."}]} for i in range(n)]


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("probe-data") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    return path


def _config(model_dir, train, *overrides) -> Config:
    return apply_overrides(Config(), [
        f"model.name={model_dir}", f"data.train={train}", "data.validation=", "data.val_fraction=0",
        "data.max_seq_len=64", "training.grad_accum=2", "training.learning_rate=0.01", "training.max_steps=4",
        "training.eval_steps=0", "training.save_steps=0", "lora.r=4", "lora.alpha=8", "training.batching=grouped",
        *overrides])


def _train(config: Config, run_dir: Path, cache: Path, monkeypatch) -> tuple:
    from lora_tui.core.run.launcher import start_run

    monkeypatch.setenv("LORA_TUI_CACHE", str(cache))
    run = start_run(config, run_dir)
    wait_until(lambda: run.state() in ("finished", "failed", "stopped", "dead"), 300, interval=0.3,
               what="the run to end", details=lambda: run.log_path.read_text()[-3000:])
    assert run.state() == "finished", run.log_path.read_text()[-3000:]
    started = next(e for e in run.read_events() if e["type"] == "started")
    return run, started


def _adapter(run) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run.adapter_dir / "adapter_model.safetensors"))


def test_cpu_probe_measures_records_caches_and_leaves_training_unchanged(tiny_model_dir, train_file, tmp_path, monkeypatch):
    import torch

    cache = tmp_path / "cache"
    # micro-batch and checkpointing auto: the probe times the candidates on the real trainer
    first, started = _train(_config(tiny_model_dir, train_file, "training.probe=on"), tmp_path / "a", cache, monkeypatch)
    facts = started["probe"]
    assert facts and not facts["cached"] and len(facts["measurements"]) >= 2
    assert all(m["tokens_per_s"] > 0 for m in facts["measurements"] if not m["over"])
    chosen = facts["chosen"]
    assert started["micro_batch"] == chosen["micro_batch"] and started["grad_accum"] == chosen["grad_accum"]
    assert started["gradient_checkpointing"] == chosen["gradient_checkpointing"]
    assert chosen["micro_batch"] * chosen["grad_accum"] == 8  # the effective batch (4 x grad_accum) is kept
    assert "probe" in started["engine_reasons"]["micro_batch"]
    assert "probe:" in first.log_path.read_text()  # the lines the Training screen's log tail shows
    assert json.loads((cache / "probe.json").read_text())["entries"]
    assert "| Probe | chose " in (first.adapter_dir / "README.md").read_text()  # the model card records it

    # the second run on the same model and data: a cache hit, nothing timed
    second, started2 = _train(_config(tiny_model_dir, train_file, "training.probe=on"), tmp_path / "b", cache, monkeypatch)
    assert started2["probe"]["cached"] and started2["probe"]["chosen"] == chosen
    assert "timing up to" not in second.log_path.read_text()

    # without the probe, configured with the chosen plan: the same adapter, bit for bit
    plain, started3 = _train(_config(tiny_model_dir, train_file, "training.probe=off",
                                     f"training.micro_batch={chosen['micro_batch']}", f"training.grad_accum={chosen['grad_accum']}",
                                     f"training.gradient_checkpointing={str(chosen['gradient_checkpointing']).lower()}"),
                             tmp_path / "c", cache, monkeypatch)
    assert started3.get("probe") is None
    a, c = _adapter(first), _adapter(plain)
    assert a.keys() == c.keys() and all(torch.equal(a[k], c[k]) for k in a)
    steps = lambda run: [e["loss"] for e in run.read_events() if e["type"] == "step"]  # noqa: E731
    assert steps(first) == steps(plain)


def test_probe_with_token_budgets_then_kill_9_and_resume_is_bit_identical(tiny_model_dir, train_file, tmp_path, monkeypatch):
    """The CUDA default (token budget, auto) with the probe: budgets re-packed per candidate, and a killed
    run resumed from its checkpoint keeps the first start's probed plan: the adapter is bit-identical."""
    import os
    import signal

    import torch

    from lora_tui.core.run.launcher import resume_run, start_run

    cache = tmp_path / "cache"
    overrides = ("training.probe=on", "training.batching=token_budget", "training.micro_batch=auto",
                 "training.max_steps=10", "training.save_steps=3")
    whole, started = _train(_config(tiny_model_dir, train_file, *overrides), tmp_path / "whole", cache, monkeypatch)
    chosen = started["probe"]["chosen"]
    assert chosen["tokens_per_batch"] and started["tokens_per_batch"] == chosen["tokens_per_batch"]
    assert len({m["candidate"]["tokens_per_batch"] for m in started["probe"]["measurements"]}) >= 2  # re-packed

    # unprobed, with the chosen budget: the same adapter (re-packing and probe steps left no trace)
    plain, _ = _train(_config(tiny_model_dir, train_file, "training.probe=off", "training.batching=token_budget",
                              f"training.tokens_per_batch={chosen['tokens_per_batch']}", f"training.grad_accum={chosen['grad_accum']}",
                              f"training.gradient_checkpointing={str(chosen['gradient_checkpointing']).lower()}",
                              "training.max_steps=10", "training.save_steps=3"), tmp_path / "plain", cache, monkeypatch)
    a, c = _adapter(whole), _adapter(plain)
    assert all(torch.equal(a[k], c[k]) for k in a)

    monkeypatch.setenv("LORA_TUI_CACHE", str(tmp_path / "fresh-cache"))  # the killed run measures for itself
    killed = start_run(_config(tiny_model_dir, train_file, *overrides), tmp_path / "killed")
    deadline = time.monotonic() + 300  # for the three waits together

    def log() -> str:
        return killed.log_path.read_text()[-3000:]

    def checkpointed():
        checkpoint = killed.last_checkpoint()
        if checkpoint is None:
            assert killed.state() not in ("failed", "finished"), log()  # it ended before it could be killed
        return checkpoint

    wait_until(checkpointed, deadline - time.monotonic(), interval=0.2, what="a checkpoint", details=log)
    os.kill(killed.read_status()["pid"], signal.SIGKILL)
    wait_until(lambda: killed.state() == "dead", deadline - time.monotonic(), interval=0.2, what="the killed run to read dead")
    resume_run(killed.path)
    wait_until(lambda: killed.state() in ("finished", "failed", "dead"), deadline - time.monotonic(), interval=0.3,
               what="the resumed run to end", details=log)
    assert killed.state() == "finished", killed.log_path.read_text()[-3000:]
    starts = [e for e in killed.read_events() if e["type"] == "started"]
    assert len(starts) == 2 and starts[1]["probe"]["chosen"] == starts[0]["probe"]["chosen"]
    assert "first start" in starts[1]["probe"]["reason"]
    if starts[0]["probe"]["chosen"] == chosen:  # the same plan chosen: the same adapter, bit for bit
        a, b = _adapter(whole), _adapter(killed)
        assert all(torch.equal(a[k], b[k]) for k in a)
