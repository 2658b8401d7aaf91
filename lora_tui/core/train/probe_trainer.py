"""The probe's hands on the real trainer (core/train/probe.py decides, this module measures and applies).

Times a candidate plan's training steps with the trainer's own ``training_step`` on its heaviest
micro-batch, switches checkpointing / batch sizes / token budgets (TRL re-packing) / Liger on the built
trainer, and puts back everything a probe step could change (RNG states, gradients, TRL's metrics).
torch / transformers are imported inside functions; must not import textual.
"""

from __future__ import annotations

import copy
import random
import time

from lora_tui.core.train.probe_types import MEMORY_SHARE, TIMED_STEPS, WARMUP_STEPS, Candidate, Measurement


class Untouched:
    """Everything a probe step could change, put back afterwards: RNGs, gradients, TRL's metrics."""

    def __init__(self, trainer) -> None:
        import numpy as np
        import torch

        self.trainer = trainer
        self.torch_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        self.py_rng = random.getstate()
        self.np_rng = np.random.get_state()
        self.metrics = copy.deepcopy(getattr(trainer, "_metrics", None))
        self.tokens = getattr(trainer, "_total_train_tokens", None)
        self.had_accum = "current_gradient_accumulation_steps" in vars(trainer)
        self.accum = getattr(trainer, "current_gradient_accumulation_steps", None)

    def restore(self) -> None:
        import numpy as np
        import torch

        t = self.trainer
        for param in t.model.parameters():
            param.grad = None
        torch.set_rng_state(self.torch_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        random.setstate(self.py_rng)
        np.random.set_state(self.np_rng)
        if self.metrics is not None:
            t._metrics = self.metrics
        if self.tokens is not None:
            t._total_train_tokens = self.tokens
        if self.had_accum:
            t.current_gradient_accumulation_steps = self.accum
        else:
            vars(t).pop("current_gradient_accumulation_steps", None)


class LigerPatch:
    """Liger applied the way transformers applies it, and undone: instance methods and the modeling module's
    functions it replaced are put back (its kernels patch in place and offer no way back)."""

    def __init__(self, model, apply=None) -> None:
        self.model, self.apply = model, apply
        self.saved: list[tuple[object, dict]] = []
        self.globals: dict[object, dict] = {}
        self.on = False

    def enable(self) -> None:
        import sys

        if self.on:
            return
        modules = list(self.model.modules())
        self.saved = [(m, dict(vars(m))) for m in modules]
        owners = {sys.modules.get(type(m).__module__) for m in modules} - {None}
        self.globals = {mod: dict(vars(mod)) for mod in owners}
        if self.apply is None:
            from transformers.integrations.liger import apply_liger_kernel

            from lora_tui.core.train.engine import LIGER_KERNELS

            apply_liger_kernel(self.model, dict(LIGER_KERNELS))
        else:
            self.apply(self.model)
        self.on = True

    def disable(self) -> None:
        if not self.on:
            return
        for module, before in self.saved:
            now = vars(module)
            for key in [k for k in now if k not in before and not k.startswith("_")]:
                del now[key]  # attributes and bound methods Liger added (forward, extra_repr, offset, ...)
            for key in ("forward", "extra_repr"):
                if key in before and now.get(key) is not before[key]:
                    now[key] = before[key]
        for mod, before in self.globals.items():
            for name, value in before.items():
                if vars(mod).get(name) is not value and callable(value):
                    setattr(mod, name, value)
        self.on = False


def set_checkpointing(model, on: bool) -> None:
    """Turn activation checkpointing on / off the way the Trainer turns it on (non-reentrant)."""
    if on:
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        if hasattr(model, "activation_checkpointing_disable"):
            model.activation_checkpointing_disable()
        else:
            model.gradient_checkpointing_disable()


def checkpointing_on(model) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


def lengths_of(dataset) -> list[int]:
    if "length" in dataset.column_names:
        return [int(n) for n in dataset["length"]]
    return [len(ids) for ids in dataset["input_ids"]]


def rows_for(trainer, candidate: Candidate) -> list[dict]:
    """The candidate's heaviest micro-batch: its longest rows (the grouped sampler runs the longest batch
    first, too); with a token budget, the fullest packed row. Columns as the trainer's dataloader keeps them."""
    ds = trainer.train_dataset
    lengths = lengths_of(ds)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    picked = [order[k % len(order)] for k in range(candidate.micro_batch)]
    rows = [dict(ds[i]) for i in picked]
    try:
        used = set(trainer._signature_columns or []) | {"labels", "seq_lengths", "completion_mask", "assistant_masks"}
        if trainer._signature_columns:
            rows = [{k: v for k, v in row.items() if k in used} for row in rows]
    except AttributeError:
        pass
    return [{k: v for k, v in row.items() if k != "length"} for row in rows]


def _tokens_in(batch) -> int:
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())


def measure(trainer, candidate: Candidate, rows: list[dict], device: str, budget: int | None) -> Measurement:
    import torch

    m = Measurement(candidate)
    batch = trainer.data_collator(rows)
    labels = batch.get("labels")
    items = int((labels[:, 1:] != -100).sum()) if labels is not None else None
    tokens = _tokens_in(batch)
    cuda = device == "cuda"
    try:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        trainer.current_gradient_accumulation_steps = candidate.grad_accum
        times = []
        for step in range(WARMUP_STEPS + TIMED_STEPS):
            started = time.perf_counter()
            trainer.training_step(trainer.model, dict(batch), items)
            if cuda:
                torch.cuda.synchronize()
            if step >= WARMUP_STEPS:
                times.append(time.perf_counter() - started)
        m.tokens_per_s = round(tokens / (sum(times) / len(times)), 1)
        if cuda:
            m.peak_bytes = int(torch.cuda.max_memory_reserved())
            m.over = budget is not None and m.peak_bytes > budget
    except torch.OutOfMemoryError:
        m.over, m.note = True, "out of memory"
    except Exception as exc:  # a plan that cannot run here (a kernel, a shape) is not taken; the run goes on
        m.over, m.note = True, f"failed: {type(exc).__name__}: {str(exc)[:120]}"
    finally:
        for param in trainer.model.parameters():
            param.grad = None
        if cuda:
            torch.cuda.empty_cache()
    return m


def memory_budget(device: str) -> int | None:
    if device != "cuda":
        return None
    import torch

    free, _total = torch.cuda.mem_get_info()
    return int(MEMORY_SHARE * (free + torch.cuda.memory_reserved()))


def estimate(config, hardware, device: str, candidate: Candidate, longest: int | None) -> int | None:
    """The estimate of ``config`` trained with the candidate's batch (workload.workload_of's ``batch``)."""
    from lora_tui.core.plan.batch import Batch
    from lora_tui.core.plan.memory import estimate_memory
    from lora_tui.core.plan.workload import workload_of

    batch = Batch(candidate.micro_batch, candidate.grad_accum, candidate.gradient_checkpointing, candidate.tokens_per_batch)
    try:
        plan = workload_of(config, hardware, device=device, longest=longest, batch=batch)
        if candidate.liger and hasattr(plan, "liger"):
            plan = plan.replace(liger=True)
        return estimate_memory(plan).total_bytes
    except Exception:
        return None


def _repack(trainer, tokens: int) -> None:
    """Token budgets are TRL packing bins (engine.sft_engine_kwargs): re-pack the unpacked rows into bins of
    ``tokens``, the way SFTTrainer packed them when it was built."""
    source = getattr(trainer, "_probe_unpacked", None)
    if source is None:
        return
    trainer.args.max_length = tokens
    trainer.train_dataset = trainer._prepare_dataset(source, trainer.processing_class, trainer.args, True, None, "train")


def apply(trainer, candidate: Candidate, liger: LigerPatch | None = None) -> None:
    """Make the built trainer run ``candidate``: batch sizes, accumulation, checkpointing, Liger."""
    args = trainer.args
    if candidate.tokens_per_batch and getattr(args, "packing", False) and args.max_length != candidate.tokens_per_batch:
        _repack(trainer, candidate.tokens_per_batch)
    args.per_device_train_batch_size = candidate.micro_batch
    trainer._train_batch_size = args.train_batch_size
    args.gradient_accumulation_steps = candidate.grad_accum
    name = "activation_checkpointing" if hasattr(args, "activation_checkpointing") else "gradient_checkpointing"
    setattr(args, name, candidate.gradient_checkpointing)
    setattr(args, f"{name}_kwargs", {"use_reentrant": False} if candidate.gradient_checkpointing else None)
    if checkpointing_on(trainer.model) != candidate.gradient_checkpointing:
        set_checkpointing(trainer.model, candidate.gradient_checkpointing)
    if liger is not None:
        (liger.enable if candidate.liger else liger.disable)()
        args.use_liger_kernel = candidate.liger
