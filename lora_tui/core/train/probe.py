"""Auto that measures: a short probe settles the memory-for-speed choices before the trainer is built.

The estimate (core/plan/memory.py) says what should fit; only a measurement says what is faster. On CUDA
(``training.probe=auto``; on CPU only with ``training.probe=on``) the trainer process, with the model loaded
and before the run's trainer exists, times a few real training steps per candidate plan on the user's
model and data. Candidates are run plans (core/plan/run_plan.py) that differ only in what trades memory
for speed at the same effective batch: their ``Batch`` (rows or tokens per micro-batch, gradient
checkpointing) and Liger's kernels. Each is measured on a throwaway trainer that the run's own builder
makes for it (collator, loss head, autocast and backward as the run's; ``trainer.training_step`` on the
heaviest micro-batch after one warm-up step; ``torch.cuda.max_memory_reserved`` reset in between). They
are walked lightest first and a walk stops at the first plan that is over the memory budget or not
faster; the choice is the lightest plan unless a heavier one is at least ``FASTER_BY`` faster (``choose``,
a pure function). The chosen batch goes into the run plan as one value, and the run's trainer is built
with it, as if it had been configured. The result is cached per GPU / model / shape / LoRA / library
versions (``cache_dir()/probe.json``), so the next run starts at once.

Probing leaves no trace on the run: gradients are dropped, the RNG states, the adapter's weights and the
model's patches and hooks are put back after each throwaway trainer, and Liger patches are undone, so a
run that probed trains exactly like one configured with the chosen plan (tests/test_probe.py).

``probe_types`` holds measurements and the one way a plan is recorded; ``probe_trainer`` measures on the
throwaway trainers; ``probe_cache`` keeps the results.
Not probed: ``torch.compile`` (its first compile takes longer than the whole probe; see the README).
Must not import torch / transformers at module top, nor touch textual.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from lora_tui.core.plan.batch import Batch
from lora_tui.core.run.started import Started
from lora_tui.core.train.probe_cache import cache_key, lookup, store
from lora_tui.core.train.probe_trainer import (LigerPatch, Untouched, checkpointing_on, estimate, lengths_of, measure,
                                               memory_budget, set_checkpointing)
from lora_tui.core.train.probe_types import (TIMED_STEPS, WARMUP_STEPS, Measurement, plan_from_record, plan_label,
                                             plan_record)

PROBE_CHOICES = ("auto", "on", "off")
FASTER_BY = 1.05  # a heavier plan is taken only when this much faster (tokens/s) than the lighter one
MAX_CANDIDATES = 12  # measured at most; the walks usually stop well before
MAX_SECONDS = {"cuda": 90.0, "cpu": 600.0}  # stop measuring past this (a slow GPU or a huge model)
ESTIMATE_SLACK = 1.5  # candidates whose estimate is over budget x this are not even tried (no OOM fishing)


@dataclass
class ProbeResult:
    batch: Batch  # the chosen plan's batch
    liger: bool = False  # and whether Liger's kernels are in it
    measurements: list[Measurement] = field(default_factory=list)
    cached: bool = False
    seconds: float = 0.0
    key: str = ""
    budget_bytes: int | None = None
    reason: str = ""

    def label(self) -> str:
        return plan_label(self.batch, self.liger)

    def facts(self) -> dict:
        """What the started event and the model card record."""
        return {"chosen": plan_record(self.batch, self.liger), "cached": self.cached,
                "seconds": round(self.seconds, 2), "key": self.key, "budget_bytes": self.budget_bytes,
                "reason": self.reason, "faster_by": FASTER_BY,
                "measurements": [m.to_dict() for m in self.measurements]}


# ------------------------------------------------------------------ the rule (pure)
def heavier_pays(lighter: Measurement, heavier: Measurement, faster_by: float = FASTER_BY) -> bool:
    """True when ``heavier`` is measurably faster than ``lighter`` (its memory buys speed)."""
    if heavier.over or not heavier.tokens_per_s:
        return False
    if lighter.over or not lighter.tokens_per_s:
        return True
    return heavier.tokens_per_s >= lighter.tokens_per_s * faster_by


def choose(measurements: list[Measurement], faster_by: float = FASTER_BY) -> Measurement | None:
    """The lightest measured plan, replaced by a heavier one only when that one is ``faster_by`` faster
    than the plan taken so far. Plans over the budget never win. None when nothing was measured."""
    best = None
    for m in sorted(measurements, key=Measurement.weight):
        if m.over or not m.tokens_per_s:
            continue
        if best is None or heavier_pays(best, m, faster_by):
            best = m
    return best


def walk_stops(best: Measurement | None, latest: Measurement, faster_by: float = FASTER_BY) -> bool:
    """Stop a lightest-first walk: the latest plan is over the budget, or did not pay for its memory."""
    return latest.over or (best is not None and best is not latest and not heavier_pays(best, latest, faster_by))


# ------------------------------------------------------------------ settings and candidates
def enabled(config, device: str) -> bool:
    """``training.probe``: auto = on CUDA only; on / off as set (on: the CPU too, for tests)."""
    setting = str(getattr(config.training, "probe", "auto") or "auto")
    if setting == "off":
        return False
    return setting == "on" or device == "cuda"


def probes_liger(config, device: str) -> bool:
    """Liger is probed (not simply applied) when kernels=auto on CUDA with liger-kernel installed."""
    from lora_tui.core.machine.kernels import liger_available

    return device == "cuda" and getattr(config.training, "kernels", "auto") == "auto" and liger_available()


def with_plan(choice, batch: Batch, liger: bool):
    """``choice`` (a RunPlan) with ``batch`` and Liger on or off: one of the probe's candidates."""
    return choice.replace(batch=batch, kernels=[k for k in choice.kernels if k != "liger"] + (["liger"] if liger else []))


def _key(plan) -> tuple:
    return (plan.batch, "liger" in plan.kernels)


def walks_for(config, choice, device: str, hardware=None, longest: int | None = None,
              liger: bool | None = None) -> list[list]:
    """The candidates in walks: one per (checkpointing, Liger) setting, each lightest first (growing
    micro-batch or token budget). The candidates are the run plan's (``run_plan.candidate_plans``: every
    split of the effective batch the estimate says fits, from ``workload.batch_candidates``); the engine's
    choice is always among them. ``liger``: True when the probe decides Liger (both settings of each)."""
    from lora_tui.core.plan.engine_choice import DeviceFacts
    from lora_tui.core.plan.run_plan import candidate_plans

    facts = DeviceFacts.from_hardware(hardware, device, choice.world_size, choice.capability)
    found = candidate_plans(config, facts, hardware, longest)
    engine_liger = bool(liger) or "liger" in choice.kernels
    settings = (True, False) if liger else (engine_liger,)
    walks: dict[tuple, dict] = {}
    for plan in [with_plan(choice, choice.batch, engine_liger),
                 *(with_plan(choice, p.batch, on) for p in found for on in settings)]:
        walks.setdefault(("liger" in plan.kernels, plan.gradient_checkpointing), {}).setdefault(_key(plan), plan)
    size = lambda p: (p.tokens_per_batch or 0, p.micro_batch)  # noqa: E731
    # Checkpointing on (lighter) before off; without Liger before with (it is patched in once).
    order = sorted(walks, key=lambda k: (k[0], not k[1]))
    return [sorted(walks[k].values(), key=size) for k in order]


def settle(model, build_trainer, config, choice, device: str, *, train_dataset, hardware=None,
           model_path: str = "", on_line=None, liger_patch=None) -> ProbeResult:
    """Measure the candidate plans, each on a throwaway trainer ``build_trainer(plan, rows)`` over ``model``
    (loaded, the run's trainer not yet built), and return the choice; ``model`` is left as it was.

    ``choice``: the engine's run plan (among the candidates); ``liger_patch``: given when the probe decides
    Liger; ``on_line``: called with each line worth showing (the Training screen's log tail)."""
    say = on_line or (lambda line: None)
    started = time.monotonic()
    lengths = lengths_of(train_dataset)
    longest = max(lengths) if lengths else None
    walks = walks_for(config, choice, device, hardware, longest, liger=liger_patch is not None)
    facts = _device_facts(device)
    records = [[plan_record(p.batch, "liger" in p.kernels) for p in walk] for walk in walks]
    key = cache_key(config, device, facts, model_path, lengths, choice, records)
    hit, problem = lookup(key)
    if problem:  # a damaged cache is a miss, said in plain words; the store below rewrites it
        say(f"probe: {problem}: ignored" + ("" if hit else "; measuring again"))
    if hit is not None:
        batch, liger = plan_from_record(hit["chosen"])
        say(f"probe: {plan_label(batch, liger)} (cached from an earlier run on this {facts.get('name') or device}; "
            f"{hit.get('reason', '')})")
        return ProbeResult(batch, liger, [Measurement.from_dict(m) for m in hit.get("measurements", [])],
                           cached=True, seconds=time.monotonic() - started, key=key,
                           budget_bytes=hit.get("budget_bytes"), reason=hit.get("reason", ""))

    import torch

    budget = memory_budget(device)
    untouched = Untouched(model)
    measured: list[Measurement] = []
    say(f"probe: timing up to {sum(len(w) for w in walks)} plans, {WARMUP_STEPS} warm-up + {TIMED_STEPS} steps each"
        + (f", within {budget / 2**30:.1f} GiB" if budget else ""))
    try:
        # Walks without Liger first: Liger is patched in once, for the walks that use it.
        for walk in sorted(walks, key=lambda w: "liger" in w[0].kernels):
            best = None
            for plan in walk:
                if len(measured) >= MAX_CANDIDATES or time.monotonic() - started > MAX_SECONDS.get(device, 90):
                    break
                estimate_bytes = estimate(config, hardware, plan)
                if budget and estimate_bytes and estimate_bytes > ESTIMATE_SLACK * budget:
                    m = Measurement(plan.batch, "liger" in plan.kernels, estimate_bytes=estimate_bytes, over=True,
                                    note="estimate far over the budget: not tried")
                else:
                    m = measure(build_trainer, plan, train_dataset, device, budget, untouched, liger_patch)
                    m.estimate_bytes = estimate_bytes
                measured.append(m)
                say(f"probe: {m.label()}: " + (m.note or "over the memory budget" if m.over else
                    f"{m.tokens_per_s:,.0f} tokens/s" + (f", peak {m.peak_bytes / 2**30:.1f} GiB" if m.peak_bytes else "")))
                if m.over or (best is not None and walk_stops(best, m)):
                    break
                best = m if best is None or heavier_pays(best, m) else best
    finally:
        if liger_patch is not None:
            liger_patch.disable()  # the run's trainer applies Liger itself when it is chosen
        untouched.restore()
    winner = choose(measured)
    if winner is None:  # nothing measurable: the engine's own plan
        batch, liger = choice.batch, "liger" in choice.kernels and liger_patch is None
        reason = "no plan could be measured: the estimate's plan"
    else:
        batch, liger = winner.batch, winner.liger
        lighter = [m for m in measured if not m.over and m.tokens_per_s and m.weight() < winner.weight()]
        reason = f"{winner.tokens_per_s:,.0f} tokens/s" + (f", {winner.peak_bytes / 2**30:.1f} GiB" if winner.peak_bytes else "")
        if lighter:
            reason += f"; at least {FASTER_BY - 1:.0%} faster than the lighter plans"
        elif len(measured) > 1:
            reason += f"; the lightest plan: no heavier one was {FASTER_BY - 1:.0%} faster"
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()  # the run's recorded peak is its own plan's, not a probed one's
    result = ProbeResult(batch, liger, measured, cached=False, seconds=time.monotonic() - started, key=key,
                         budget_bytes=budget, reason=reason)
    if winner is not None:
        store(key, result.facts())
    say(f"probe: chose {result.label()} ({reason}) in {result.seconds:.1f} s")
    return result


def _device_facts(device: str) -> dict:
    if device != "cuda":
        import platform

        return {"name": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    import torch

    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "total_memory": int(props.total_memory),
            "capability": list(torch.cuda.get_device_capability(0))}


# ------------------------------------------------------------------ the trainer's call
def for_run(run, config, choice, device: str, *, model, build_trainer, train_dataset, resume: bool,
            hardware=None, model_path: str = "", world_size: int = 1) -> dict | None:
    """The trainer process's probe step, before the run's trainer is built: measure (or reuse the cache / the
    run's first start), put the chosen batch (and Liger) into ``choice``, the run plan the trainer is then
    built with, and show each line in train.log and the run's status. ``build_trainer(plan, rows)`` builds
    a trainer the way the run's is built. The facts for the ``started`` event, or None when the probe is off."""
    if not enabled(config, device) or world_size > 1:
        return None  # several ranks would have to agree on one measurement: not probed (yet)
    liger_decided = probes_liger(config, device)

    def say(line: str) -> None:
        print(line, flush=True)
        run.write_status("starting", message=line)

    starts = (Started.from_event(e) for e in run.read_events() if e.get("type") == "started") if resume else ()
    first = next((s.probe for s in starts if s.probe), None)
    if first is not None:  # resume: the first start's plan, so the batches (and the adapter) are the same
        batch, liger = plan_from_record(first["chosen"])
        result = ProbeResult(batch, liger, cached=True, key=first.get("key", ""),
                             reason="kept from the run's first start (resume: the same batches)")
        say(f"probe: {result.label()} ({result.reason})")
    else:
        try:
            result = settle(model, build_trainer, config, choice, device, train_dataset=train_dataset, hardware=hardware,
                            model_path=model_path, on_line=say, liger_patch=LigerPatch(model) if liger_decided else None)
        except Exception as exc:  # the probe must never take a run down: the estimate's plan, as without it
            result = ProbeResult(choice.batch, "liger" in choice.kernels and not liger_decided,
                                 reason=f"probe failed ({type(exc).__name__}: {str(exc)[:160]}): the estimate's plan")
            run.append_event("log", level="warning", message=result.reason)
    why = f"probe: {result.reason}" + (" (cached)" if result.cached and "first start" not in result.reason else "")
    chosen = with_plan(choice, result.batch.replace(reasons={"micro_batch": why, "gradient_checkpointing": why}),
                       result.liger)
    choice.batch, choice.kernels = chosen.batch, chosen.kernels
    choice.reasons.update(micro_batch=why, gradient_checkpointing=why)
    if liger_decided:
        choice.reasons["kernels"] = f"probe: Liger {'on' if result.liger else 'off'} ({result.reason})"
    if checkpointing_on(model) != choice.gradient_checkpointing:  # as the run's trainer will train it
        set_checkpointing(model, choice.gradient_checkpointing)
    run.append_event("log", level="info", message=f"probe chose {result.label()}: {result.reason}")
    return result.facts()
