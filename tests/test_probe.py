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
from lora_tui.core.plan.batch import Batch
from lora_tui.core.plan.run_plan import RunPlan
from lora_tui.core.train.probe import Measurement, choose, heavier_pays, walk_stops
from tests.support.wait import wait_until


def _m(tps, peak, over=False, micro=4, ckpt=False):
    return Measurement(Batch(micro, 16 // micro, ckpt), tokens_per_s=tps, peak_bytes=peak, over=over)


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
    ckpt = Measurement(Batch(8, 2, True), tokens_per_s=900.0, estimate_bytes=5)
    plain = Measurement(Batch(4, 4, False), tokens_per_s=1000.0, estimate_bytes=9)
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
    """The candidates are the run plan's (run_plan.candidate_plans), walked lightest first per (Liger,
    checkpointing) setting; the engine's choice is always among them."""
    from lora_tui.core.plan.engine_choice import DeviceFacts
    from lora_tui.core.plan.run_plan import decide_run_plan
    from tests.test_run_plan import h200

    hw = h200()
    for overrides, batching in ((["training.batching=grouped", "training.grad_accum=4"], "grouped"),
                                (["data.max_seq_len=512"], "token_budget")):
        config = apply_overrides(Config(), overrides)  # micro-batch / budget and checkpointing auto
        choice = decide_run_plan(config, DeviceFacts.from_hardware(hw, "cuda"), hw)
        assert choice.batching == batching
        walks = probe.walks_for(config, choice, "cuda", hw)
        plans = [p for walk in walks for p in walk]
        assert all(isinstance(p, RunPlan) for p in plans) and len(plans) > 1  # what the trainer is built with
        assert {p.tokens_per_step for p in plans} == {choice.tokens_per_step}  # the effective batch is kept
        assert choice.batch in [p.batch for p in plans]  # the engine's choice is always measured
        for walk in walks:
            assert len({(p.gradient_checkpointing, "liger" in p.kernels) for p in walk}) == 1
            sizes = [(p.tokens_per_batch or 0, p.micro_batch) for p in walk]
            assert sizes == sorted(sizes)  # lightest first
        assert [w[0].gradient_checkpointing for w in walks] == sorted((w[0].gradient_checkpointing for w in walks),
                                                                      reverse=True)  # checkpointing on first
        both = probe.walks_for(config, choice, "cuda", hw, liger=True)  # the probe decides Liger: both settings
        assert sum(map(len, both)) == 2 * len({p.batch for p in plans})
        assert {"liger" in p.kernels for walk in both for p in walk} == {True, False}


def test_a_plan_record_reads_back_as_the_same_batch_and_liger():
    from lora_tui.core.train.probe_types import plan_from_record, plan_record

    for batch, liger in ((Batch(4, 2, True), False), (Batch(1, 8, False, 4096), True)):
        record = plan_record(batch, liger)
        assert plan_from_record(record) == (batch, liger)
        assert record["label"].startswith(batch.describe())
    # a record written before issue 27 (the Candidate's fields and label) still reads: an old run resumes
    old = {"micro_batch": 4, "grad_accum": 2, "gradient_checkpointing": False, "liger": False, "tokens_per_batch": None,
           "label": "4 rows x 2, checkpointing off"}
    assert plan_from_record(old) == (Batch(4, 2, False), False)


# ------------------------------------------------------------------ the cache
def test_cache_round_trip_is_keyed_by_what_the_measurement_depends_on(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_TUI_CACHE", str(tmp_path))
    from lora_tui.core.train.probe_types import plan_record

    config = Config()
    choice = RunPlan(device="cuda", batching="grouped", attention="sdpa", kernels=["lean_head"], batch=Batch(4, 4, False))
    gpu = {"name": "NVIDIA H200", "total_memory": 150 * 2**30}
    walks = [[plan_record(Batch(4, 4, False))]]
    key = probe_cache.cache_key(config, "cuda", gpu, "/no/such/model", [100, 50], choice, walks)
    assert probe_cache.cached(key) is None
    result = probe.ProbeResult(Batch(4, 4, False), measurements=[Measurement(Batch(4, 4, False), False, 123.0, 2**30)],
                               reason="r")
    probe_cache.store(key, result.facts())
    hit = probe_cache.cached(key)
    assert hit["chosen"]["micro_batch"] == 4
    assert [Measurement.from_dict(m) for m in hit["measurements"]] == result.measurements
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


def test_the_probe_measures_before_the_runs_trainer_exists_and_leaves_the_model_as_it_was(tiny_model_dir, train_file,
                                                                                          tmp_path, monkeypatch):
    """In process, on the tiny model: every plan is timed on a throwaway trainer built by the run's builder
    for that plan (no trainer is changed after it is built); the choice lands in the run plan as one Batch;
    the model (adapter weights, forward patches, hooks, checkpointing, RNG) is as it was before the probe."""
    import torch

    from lora_tui.core.machine import hardware as machine
    from lora_tui.core.model.models import load_tokenizer
    from lora_tui.core.run.runs import RunDirectory
    from lora_tui.core.train import training

    monkeypatch.setenv("LORA_TUI_CACHE", str(tmp_path / "cache"))
    # checkpointing on in every plan: each throwaway trainer hooks the embeddings (TRL, for checkpointing with PEFT)
    config = _config(tiny_model_dir, train_file, "training.probe=on", "training.gradient_checkpointing=true")
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    tokenizer = load_tokenizer(str(tiny_model_dir))
    train_ds, _, _ = training.build_datasets(config, tokenizer)
    choice = training.run_plan_of(run, config, machine.probe_hardware(), "cpu", longest=max(train_ds["length"]))
    model, _ = training.build_model(config, "cpu", "fp32", choice)
    probe.set_checkpointing(model, True)  # as the run's trainer will train it: the probe must add nothing to that
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    forwards = {n for n, m in model.named_modules() if "forward" in vars(m)}
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    rng = torch.get_rng_state()

    built = []

    def build(plan, rows, eval_rows=None, callbacks=None):
        trainer = training.sft_trainer(config, run, "cpu", "fp32", model, tokenizer, plan, rows, eval_rows, callbacks)
        built.append((plan.batch, trainer.args.per_device_train_batch_size, trainer.args.gradient_accumulation_steps,
                      len(rows)))
        return trainer

    facts = probe.for_run(run, config, choice, "cpu", model=model, build_trainer=build, train_dataset=train_ds, resume=False)
    measured = [Measurement.from_dict(m) for m in facts["measurements"]]
    assert len(built) == len(measured) >= 2
    # each throwaway trainer was built with its plan's batch, on that plan's heaviest rows only
    for (batch, micro, accum, rows), m in zip(built, measured):
        assert batch == m.batch and (micro, accum) == (batch.micro_batch, batch.grad_accum) and rows == batch.micro_batch
    chosen, _ = probe.plan_from_record(facts["chosen"])
    assert choice.batch == chosen and "probe" in choice.batch.reasons["micro_batch"]  # one value in the run plan
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters() if p.requires_grad)
    assert all(p.grad is None for p in model.parameters())
    assert {n for n, m in model.named_modules() if "forward" in vars(m)} == forwards
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks
    assert torch.equal(torch.get_rng_state(), rng)
    assert probe.checkpointing_on(model) == chosen.gradient_checkpointing  # as the run's trainer will train it


def test_the_probe_reads_no_private_attribute_of_a_trainer():
    """Issue 27: the probe changed a built trainer through TRL's private ``_train_batch_size`` and
    ``_prepare_dataset``. It now builds a trainer per plan and uses only its public calls."""
    import ast

    import lora_tui.core.train.probe as probe_module

    folder = Path(probe_module.__file__).parent
    private = []
    for name in ("probe.py", "probe_trainer.py", "probe_types.py", "probe_cache.py"):
        for node in ast.walk(ast.parse((folder / name).read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in ("trainer", "t", "args")):
                private.append(f"{name}:{node.lineno} {node.value.id}.{node.attr}")
    assert private == []


@pytest.mark.gpu
def test_cuda_probe_measures_peaks_within_the_budget_and_the_run_trains_its_choice(tiny_model_dir, train_file, tmp_path,
                                                                                    monkeypatch):
    """On a GPU (the default, training.probe=auto): each plan's peak reserved memory is measured against the
    budget, the run trains the chosen batch, and the run's recorded peak is its own plan's."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    run, started = _train(_config(tiny_model_dir, train_file, "training.probe=auto", "training.batching=token_budget",
                                  "training.micro_batch=auto"), tmp_path / "gpu", tmp_path / "cache", monkeypatch)
    facts = started["probe"]
    assert started["device"] == "cuda" and facts and facts["budget_bytes"] > 0
    measured = [m for m in facts["measurements"] if not m["over"]]
    assert measured and all(m["peak_bytes"] and m["peak_bytes"] <= facts["budget_bytes"] for m in measured)
    chosen = facts["chosen"]
    assert (started["micro_batch"], started["grad_accum"], started["tokens_per_batch"]) == \
        (chosen["micro_batch"], chosen["grad_accum"], chosen["tokens_per_batch"])
