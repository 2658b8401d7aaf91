"""Auto that measures: a short probe settles the memory-for-speed choices before step 1.

The estimate (core/plan/memory.py) says what should fit; only a measurement says what is faster. On CUDA
(``training.probe=auto``; on CPU only with ``training.probe=on``) the trainer, fully built, times a few
real training steps per candidate plan on the user's model and data: its own collator, loss head,
autocast and backward (``trainer.training_step``), on the longest rows, after one warm-up step, with
``torch.cuda.max_memory_reserved`` reset between candidates. Candidates differ in what trades memory for
speed: rows (or tokens) per micro-batch with the effective batch kept, gradient checkpointing, and Liger's
kernels. They are walked lightest first and a walk stops at the first plan that is over the memory
budget or not faster; the choice is the lightest plan unless a heavier one is at least ``FASTER_BY``
faster (``choose``, a pure function). The result is cached per GPU / model / shape / LoRA / library
versions (``cache_dir()/probe.json``), so the next run starts at once.

Probing leaves no trace on the run: gradients are dropped, the RNG states and TRL's metrics are put
back, no optimizer exists yet, and Liger patches are undone when Liger is not chosen, so a run that
probed trains exactly like one configured with the chosen plan (tests/test_probe.py).

``probe_types`` holds the plans and measurements; ``probe_trainer`` measures and applies plans on the
built trainer; ``probe_cache`` keeps the results.
Not probed: ``torch.compile`` (its first compile takes longer than the whole probe; see the README).
Must not import torch / transformers at module top, nor touch textual.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace

from lora_tui.core.run.started import Started
from lora_tui.core.train.probe_cache import cache_key, lookup, store
from lora_tui.core.train.probe_trainer import (LigerPatch, Untouched, apply, checkpointing_on, estimate, lengths_of, measure,
                                               memory_budget, rows_for)
from lora_tui.core.train.probe_types import TIMED_STEPS, WARMUP_STEPS, Candidate, Measurement

PROBE_CHOICES = ("auto", "on", "off")
FASTER_BY = 1.05  # a heavier plan is taken only when this much faster (tokens/s) than the lighter one
MAX_CANDIDATES = 12  # measured at most; the walks usually stop well before
MAX_SECONDS = {"cuda": 90.0, "cpu": 600.0}  # stop measuring past this (a slow GPU or a huge model)
ESTIMATE_SLACK = 1.5  # candidates whose estimate is over budget x this are not even tried (no OOM fishing)


@dataclass
class ProbeResult:
    chosen: Candidate
    measurements: list[Measurement] = field(default_factory=list)
    cached: bool = False
    seconds: float = 0.0
    key: str = ""
    budget_bytes: int | None = None
    reason: str = ""

    def facts(self) -> dict:
        """What the started event and the model card record."""
        return {"chosen": {**asdict(self.chosen), "label": self.chosen.label()}, "cached": self.cached,
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


def sizes(total: int, cap: int, smallest: int = 1) -> list[int]:
    """Divisors of ``total`` from ``smallest`` up to ``cap``: micro-batches that keep the effective batch."""
    return [m for m in range(max(1, smallest), min(total, cap) + 1) if total % m == 0]


def candidates(config, choice, device: str, liger: bool | None = None) -> list[Candidate]:
    """Candidate plans with the engine's effective batch kept (rows, or tokens with a token budget): the
    micro-batch / budget ladder x checkpointing x Liger, for what the config leaves to auto. ``liger``: True
    when the probe decides Liger; else the engine's choice stays. Used when ``run_plan.candidate_plans``
    is not there to ask."""
    from lora_tui.core.plan.workload import AUTO_BASE, MICRO_BATCH_CAP

    t = config.training
    tokens = getattr(choice, "tokens_per_batch", None) if getattr(choice, "batching", "") == "token_budget" else None
    sizes_: list[tuple[int, int, int | None]] = []  # (micro_batch, grad_accum, tokens_per_batch)
    if tokens:
        per_step = tokens * choice.grad_accum
        if getattr(t, "tokens_per_batch", None) is None:  # budgets from a quarter of the estimate's up
            budgets = {tokens * 2**k for k in range(-2, 4)} | {tokens}
            budgets = {b for b in budgets if per_step % b == 0 and config.data.max_seq_len <= b <= per_step}
        else:
            budgets = {tokens}
        sizes_ = [(1, per_step // b, b) for b in sorted(budgets or {tokens})]
    else:
        total = choice.micro_batch * choice.grad_accum
        if t.micro_batch is None:
            # From a quarter of the estimate's choice up: smaller steps waste a GPU; powers of two and the whole batch.
            floor = max(1, min(choice.micro_batch, AUTO_BASE) // 4, choice.micro_batch // 4)
            ladder = [m for m in sizes(total, MICRO_BATCH_CAP.get(device, 8), floor)
                      if m & (m - 1) == 0 or m in (total, choice.micro_batch)] or [choice.micro_batch]
        else:
            ladder = [choice.micro_batch]
        sizes_ = [(m, total // m, None) for m in sorted(set(ladder) | {choice.micro_batch})]
    ckpts = [True, False] if t.gradient_checkpointing is None else [bool(t.gradient_checkpointing)]
    ligers = [True, False] if liger else [bool(liger is None and "liger" in choice.kernels)]
    return [Candidate(m, a, c, lig, b) for lig in ligers for c in ckpts for m, a, b in sizes_]


def walks_for(config, choice, device: str, hardware=None, longest: int | None = None,
              liger: bool | None = None) -> list[list[Candidate]]:
    """The candidates in walks: one per (checkpointing, Liger) setting, each lightest first (growing
    micro-batch or token budget). The run plan's own candidates (``run_plan.candidate_plans``) when it
    offers them, else ``candidates``; the engine's choice is always among them."""
    found: list[Candidate] = []
    try:
        from lora_tui.core.plan.engine_choice import DeviceFacts
        from lora_tui.core.plan.run_plan import candidate_plans

        facts = DeviceFacts.from_hardware(hardware, device, getattr(choice, "world_size", 1),
                                          getattr(choice, "capability", None))
        for plan in candidate_plans(config, facts, hardware, longest):
            found.append(Candidate(plan.micro_batch, plan.grad_accum, plan.gradient_checkpointing,
                                   "liger" in plan.kernels, plan.tokens_per_batch if plan.batching == "token_budget" else None))
    except Exception:  # no run plan module (or it refused): our own ladder
        found = []
    if not found:
        found = candidates(config, choice, device, liger)
    engine_pick = Candidate(choice.micro_batch, choice.grad_accum, choice.gradient_checkpointing,
                            "liger" in choice.kernels,
                            getattr(choice, "tokens_per_batch", None) if getattr(choice, "batching", "") == "token_budget" else None)
    if liger:  # the probe decides Liger: both settings of every plan
        found = [c for x in found for c in (replace(x, liger=True), replace(x, liger=False))]
        engine_pick = replace(engine_pick, liger=True)
    else:
        found = [replace(c, liger=engine_pick.liger) for c in found]
    walks: dict[tuple, set] = {}
    for c in [engine_pick, *found]:
        walks.setdefault((c.liger, c.gradient_checkpointing), set()).add(c)
    size = lambda c: (c.tokens_per_batch or 0, c.micro_batch)  # noqa: E731
    # Checkpointing on (lighter) before off; without Liger before with (it is patched in once).
    order = sorted(walks, key=lambda k: (k[0], not k[1]))
    return [sorted(walks[k], key=size) for k in order]


def _from_facts(facts: dict) -> Candidate:
    chosen = {k: v for k, v in facts["chosen"].items() if k in Candidate.__dataclass_fields__}
    return Candidate(**chosen)


def settle(trainer, config, choice, device: str, *, hardware=None, lengths: list[int] | None = None,
           model_path: str = "", on_line=None, liger_patch=None) -> ProbeResult:
    """Measure the candidate plans on ``trainer`` (built, not yet trained) and leave it set to the chosen one.

    ``choice``: the engine's choice (its plan is among the candidates); ``lengths``: the train rows' token
    counts; ``liger_patch``: given when the probe decides Liger (the trainer was built without it);
    ``on_line``: called with each line worth showing (the Training screen's log tail)."""
    say = on_line or (lambda line: None)
    started = time.monotonic()
    lengths = list(lengths or [])
    longest = max(lengths) if lengths else None
    walks = walks_for(config, choice, device, hardware, longest, liger=liger_patch is not None)
    facts = _device_facts(device)
    key = cache_key(config, device, facts, model_path, lengths, choice, walks)
    hit, problem = lookup(key)
    if problem:  # a damaged cache is a miss, said in plain words; the store below rewrites it
        say(f"probe: {problem}: ignored" + ("" if hit else "; measuring again"))
    if hit is not None:
        chosen = _from_facts(hit)
        apply(trainer, chosen, liger_patch)
        say(f"probe: {chosen.label()} (cached from an earlier run on this {facts.get('name') or device}; "
            f"{hit.get('reason', '')})")
        return ProbeResult(chosen, [Measurement(Candidate(**{k: v for k, v in m["candidate"].items() if k != "label"}),
                                                **{k: v for k, v in m.items() if k != "candidate"})
                                    for m in hit.get("measurements", [])],
                           cached=True, seconds=time.monotonic() - started, key=key,
                           budget_bytes=hit.get("budget_bytes"), reason=hit.get("reason", ""))

    import torch

    budget = memory_budget(device)
    untouched = Untouched(trainer)
    initial_ckpt = checkpointing_on(trainer.model)
    measured: list[Measurement] = []
    say(f"probe: timing up to {sum(len(w) for w in walks)} plans, {WARMUP_STEPS} warm-up + {TIMED_STEPS} steps each"
        + (f", within {budget / 2**30:.1f} GiB" if budget else ""))
    try:
        # Walks without Liger first: Liger is patched in once, for the walks that use it.
        for walk in sorted(walks, key=lambda w: w[0].liger):
            best = None
            for cand in walk:
                if len(measured) >= MAX_CANDIDATES or time.monotonic() - started > MAX_SECONDS.get(device, 90):
                    break
                estimate_bytes = estimate(config, hardware, device, cand, longest)
                if budget and estimate_bytes and estimate_bytes > ESTIMATE_SLACK * budget:
                    m = Measurement(cand, estimate_bytes=estimate_bytes, over=True, note="estimate far over the budget: not tried")
                else:
                    apply(trainer, cand, liger_patch)
                    m = measure(trainer, cand, rows_for(trainer, cand), device, budget)
                    m.estimate_bytes = estimate_bytes
                measured.append(m)
                say(f"probe: {cand.label()}: " + (m.note or "over the memory budget" if m.over else
                    f"{m.tokens_per_s:,.0f} tokens/s" + (f", peak {m.peak_bytes / 2**30:.1f} GiB" if m.peak_bytes else "")))
                if m.over or (best is not None and walk_stops(best, m)):
                    break
                best = m if best is None or heavier_pays(best, m) else best
        winner = choose(measured)
        if winner is None:  # nothing measurable: the engine's own plan
            chosen = Candidate(choice.micro_batch, choice.grad_accum, initial_ckpt, "liger" in choice.kernels,
                               getattr(choice, "tokens_per_batch", None))
            reason = "no plan could be measured: the estimate's plan"
        else:
            chosen = winner.candidate
            lighter = [m for m in measured if not m.over and m.tokens_per_s and m.weight() < winner.weight()]
            reason = f"{winner.tokens_per_s:,.0f} tokens/s" + (f", {winner.peak_bytes / 2**30:.1f} GiB" if winner.peak_bytes else "")
            if lighter:
                reason += f"; at least {FASTER_BY - 1:.0%} faster than the lighter plans"
            elif len(measured) > 1:
                reason += f"; the lightest plan: no heavier one was {FASTER_BY - 1:.0%} faster"
        apply(trainer, chosen, liger_patch)  # before the RNGs are put back: re-packing must leave no trace either
    finally:
        untouched.restore()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()  # the run's recorded peak is its own plan's, not a probed one's
    result = ProbeResult(chosen, measured, cached=False, seconds=time.monotonic() - started, key=key,
                         budget_bytes=budget, reason=reason)
    if winner is not None:
        store(key, result.facts())
    say(f"probe: chose {chosen.label()} ({reason}) in {result.seconds:.1f} s")
    return result


def _device_facts(device: str) -> dict:
    if device != "cuda":
        import platform

        return {"name": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    import torch

    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "total_memory": int(props.total_memory),
            "capability": list(torch.cuda.get_device_capability(0))}


# ------------------------------------------------------------------ the trainer's two calls
def defer_liger(config, choice, device: str, world_size: int = 1) -> bool:
    """Before the trainer is built: when the probe will decide Liger, build without it (the probe patches it
    in where it pays). True when it does."""
    if not enabled(config, device) or world_size > 1 or not probes_liger(config, device):
        return False
    choice.kernels = [k for k in choice.kernels if k != "liger"]
    return True


def for_run(run, trainer, config, choice, device: str, *, resume: bool, hardware=None, train_dataset=None,
            model_path: str = "", liger_deferred: bool = False, world_size: int = 1) -> dict | None:
    """The trainer's probe step: measure (or reuse the cache / the run's first start), set ``trainer`` and
    ``choice`` to the chosen plan, show each line in train.log and the run's status. The facts for the
    ``started`` event, or None when the probe is off."""
    if not enabled(config, device) or world_size > 1:
        return None  # several ranks would have to agree on one measurement: not probed (yet)

    patch = LigerPatch(trainer.model) if liger_deferred else None
    train_dataset = train_dataset if train_dataset is not None else trainer.train_dataset
    trainer._probe_unpacked = train_dataset if getattr(trainer.args, "packing", False) else None
    lengths = lengths_of(train_dataset)

    def say(line: str) -> None:
        print(line, flush=True)
        run.write_status("starting", message=line)

    starts = (Started.from_event(e) for e in run.read_events() if e.get("type") == "started") if resume else ()
    first = next((s.probe for s in starts if s.probe), None)
    if first is not None:  # resume: the first start's plan, so the batches (and the adapter) are the same
        chosen = _from_facts(first)
        apply(trainer, chosen, patch)
        result = ProbeResult(chosen, cached=True, key=first.get("key", ""),
                             reason="kept from the run's first start (resume: the same batches)")
        say(f"probe: {chosen.label()} ({result.reason})")
    else:
        try:
            result = settle(trainer, config, choice, device, hardware=hardware, lengths=lengths, model_path=model_path,
                            on_line=say, liger_patch=patch)
        except Exception as exc:  # the probe must never take a run down: the estimate's plan, as without it
            pick = Candidate(choice.micro_batch, choice.grad_accum, choice.gradient_checkpointing, False,
                             getattr(choice, "tokens_per_batch", None) if getattr(choice, "batching", "") == "token_budget" else None)
            apply(trainer, pick, patch)
            result = ProbeResult(pick, reason=f"probe failed ({type(exc).__name__}: {str(exc)[:160]}): the estimate's plan")
            run.append_event("log", level="warning", message=result.reason)
    c = result.chosen
    if liger_deferred:
        choice.kernels = [k for k in choice.kernels if k != "liger"] + (["liger"] if c.liger else [])
        choice.reasons["kernels"] = f"probe: Liger {'on' if c.liger else 'off'} ({result.reason})"
    why = f"probe: {result.reason}" + (" (cached)" if result.cached and "first start" not in result.reason else "")
    for name in ("micro_batch", "gradient_checkpointing"):
        choice.reasons[name] = why
    choice.batch = choice.batch.replace(micro_batch=c.micro_batch, grad_accum=c.grad_accum,
                                        gradient_checkpointing=c.gradient_checkpointing,
                                        tokens_per_batch=c.tokens_per_batch or choice.batch.tokens_per_batch,
                                        reasons={"micro_batch": why, "gradient_checkpointing": why})
    run.append_event("log", level="info", message=f"probe chose {c.label()}: {result.reason}")
    return result.facts()
