"""Closed-loop memory: the estimate a run starts with, the peak it reaches, and the error between them.

(``training.gradient_checkpointing=auto`` is decided with ``micro_batch=auto`` in ``workload.choose_batch``.)
``memory_estimate_facts`` is the estimate recorded in the ``started`` event; ``make_memory_callback``
measures the peak as training goes (``torch.cuda.max_memory_reserved`` on GPU, peak RSS on CPU),
keeps ``status.json`` current (the Training screen's "estimated X GiB, peak so far Y GiB") and
appends one ``memory`` event with the error in percent when training ends.

Must not import torch or textual at module top (the trainer imports it before torch);
must never take a run down: every measurement failure is swallowed.
"""

from __future__ import annotations

import resource
import sys

from lora_tui.core.plan.memory import estimate_memory, heaviest_concatenation
from lora_tui.core.plan.workload import workload_of

def memory_estimate_facts(config, hardware, device: str, longest: int | None = None,
                          lengths: list[int] | None = None, micro_batches: int | None = None,
                          run_plan=None) -> dict | None:
    """The pre-run estimate (total and breakdown) of the plan the trainer runs; None when unknown.
    ``longest``: the data's longest tokenized row (the plan's rows are no longer than that). ``lengths`` and
    ``micro_batches`` (the run's count): padding-free micro-batches are estimated at the heaviest the run is
    likely to draw (memory.heaviest_concatenation), not at micro-batch x longest. ``run_plan``: the run's
    ``RunPlan`` (its engine and batch), else the config's own, auto resolved here."""
    try:
        plan = run_plan.workload(config, hardware) if run_plan else workload_of(config, hardware, device=device,
                                                                                        longest=longest)
        batching = run_plan.batching if run_plan else config.training.batching
        if lengths and plan.batching == "padding_free" and batching == "padding_free" and plan.batch > 1:
            t = config.training
            accum = run_plan.grad_accum if run_plan else t.grad_accum
            draws = micro_batches or (t.max_steps * accum if t.max_steps > 0
                                      else int(t.epochs * len(lengths) / plan.batch) + 1)
            heaviest = heaviest_concatenation(list(lengths), plan.batch, draws, config.data.max_seq_len, config.training.seed)
            if heaviest:
                plan = plan.replace(tokens_per_batch=min(heaviest, plan.batch * plan.seq_len))
        estimate = estimate_memory(plan)
    except Exception:
        return None
    comparable = estimate.total_bytes - estimate.breakdown.get("cuda_context", 0)
    return {"total_bytes": estimate.total_bytes, "breakdown": dict(estimate.breakdown), "seq_len": plan.seq_len,
            # torch's reserved counter never sees the CUDA context: compare without it
            "comparable_bytes": comparable, "measure": "max_memory_reserved" if device == "cuda" else "peak_rss"}


def measured_peak(device: str) -> int:
    """Peak so far: torch.cuda.max_memory_reserved on GPU, this process's peak RSS on CPU, in bytes."""
    if device == "cuda":
        try:
            import torch

            return int(torch.cuda.max_memory_reserved())
        except Exception:
            return 0
    return peak_rss()


def peak_rss() -> int:
    """This process's own peak RSS in bytes: Linux's VmHWM, the high-water mark of the address space exec gave it.
    Not ru_maxrss, which Linux carries over exec from the process that forked it: a trainer started from a 2.2 GiB
    process (the test runner; the wizard with a model loaded for chat) reported 2265 MiB whatever it used."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def error_pct(estimate: int | None, peak: int | None) -> float | None:
    """(estimate - measured) / measured in percent: positive means the estimate was above the peak."""
    if not estimate or not peak:
        return None
    return round(100.0 * (estimate - peak) / peak, 1)


def memory_fields(facts: dict | None, peak: int) -> dict:
    estimate = facts.get("comparable_bytes") if facts else None
    return {"memory_estimate_bytes": estimate, "memory_peak_bytes": peak or None,
            "memory_error_pct": error_pct(estimate, peak), "memory_measure": facts.get("measure") if facts else None}


def make_memory_callback(run, facts: dict | None, device: str):
    from transformers import TrainerCallback

    class MemoryPeak(TrainerCallback):
        """Keeps the peak in status.json at every log; one `memory` event at the end of training."""

        def on_log(self, args, state, control, logs=None, **kw):
            try:
                if logs and "loss" in logs:
                    run.write_status(run.read_status().get("state", "running"), **memory_fields(facts, measured_peak(device)))
            except Exception:
                pass
            return control

        def on_train_end(self, args, state, control, **kw):
            try:
                fields = memory_fields(facts, measured_peak(device))
                run.append_event("memory", step=state.global_step, **fields,
                                 estimate_total_bytes=facts.get("total_bytes") if facts else None,
                                 breakdown=facts.get("breakdown") if facts else None)
                run.write_status(run.read_status().get("state", "running"), **fields)
            except Exception:
                pass
            return control

    return MemoryPeak()
