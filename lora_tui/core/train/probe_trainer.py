"""The probe's hands (core/train/probe.py decides, this module measures).

Each plan is measured on a throwaway trainer built for it by the run's own builder (the same call that
builds the run's trainer afterwards, so collator, loss head, autocast and backward are the run's), on the
rows of its heaviest micro-batch, with the trainer's public ``get_train_dataloader`` and ``training_step``.
``Untouched`` puts back everything a throwaway trainer and its steps could change on the shared model
(RNG states, the adapter's weights and dtypes, gradients, forward patches and hooks, checkpointing), so the
run's trainer, built after the probe with the chosen plan, starts exactly as without a probe.
torch / transformers are imported inside functions; must not import textual.
"""

from __future__ import annotations

import gc
import random
import time

from lora_tui.core.train.probe_types import MEMORY_SHARE, TIMED_STEPS, WARMUP_STEPS, Measurement


class Untouched:
    """The model and RNG state before the probe, put back after each throwaway trainer (``restore``).

    A trainer being built patches the model it is given: TRL's fused LM head and our lean head replace the
    instance's ``forward``, TRL hooks the input embeddings for checkpointing, and casts a quantized model's
    adapter to bf16 (which the run's trainer does again, once, from the untouched fp32 weights)."""

    def __init__(self, model) -> None:
        import numpy as np
        import torch

        self.model = model
        self.torch_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        self.py_rng = random.getstate()
        self.np_rng = np.random.get_state()
        self.training = model.training
        self.checkpointing = checkpointing_on(model)
        self.modules = list(model.modules())
        self.forwards = [vars(m).get("forward") for m in self.modules]
        # torch keeps a module's hooks in these dicts and offers no public listing of them
        self.hooks = [(set(m._forward_hooks), set(m._forward_pre_hooks)) for m in self.modules]
        self.weights = {p: p.data.clone() for p in model.parameters() if p.requires_grad}

    def restore_model(self) -> None:
        for module, forward, (hooks, pre_hooks) in zip(self.modules, self.forwards, self.hooks):
            if forward is None:
                vars(module).pop("forward", None)
            else:
                module.forward = forward
            for key in [k for k in module._forward_hooks if k not in hooks]:
                del module._forward_hooks[key]
            for key in [k for k in module._forward_pre_hooks if k not in pre_hooks]:
                del module._forward_pre_hooks[key]
        for param in self.model.parameters():
            param.grad = None
        for param, saved in self.weights.items():
            param.data = saved.clone()
        if checkpointing_on(self.model) != self.checkpointing:
            set_checkpointing(self.model, self.checkpointing)
        self.model.train(self.training)

    def restore(self) -> None:
        import numpy as np
        import torch

        self.restore_model()
        torch.set_rng_state(self.torch_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        random.setstate(self.py_rng)
        np.random.set_state(self.np_rng)


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


def heaviest_rows(dataset, plan) -> list[int]:
    """Indices of the rows that make ``plan``'s heaviest micro-batch: its longest rows (the grouped sampler
    runs the longest batch first, too); packed (a token budget, or packing), the longest rows up to the
    micro-batch's tokens and the shortest ones that fill the bins' gaps, so its fullest micro-batch is as
    full as the whole data's."""
    lengths = lengths_of(dataset)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    budget = (plan.tokens_per_batch if plan.batching == "token_budget" else
              plan.micro_batch * plan.max_seq_len if plan.batching == "packed" else None)
    if not budget:
        return [order[k % len(order)] for k in range(plan.micro_batch)]
    picked, tokens = [], 0
    for i in order:
        if tokens >= budget:
            break
        picked.append(i)
        tokens += lengths[i]
    fillers, tokens = [], 0
    for i in reversed(order[len(picked):]):
        if tokens >= budget:
            break
        fillers.append(i)
        tokens += lengths[i]
    return picked + fillers


def _tokens_in(batch) -> int:
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())


def fullest_batch(trainer) -> dict:
    """The micro-batch with the most tokens among those the trainer's own dataloader makes of its rows."""
    return max(trainer.get_train_dataloader(), key=_tokens_in)


def measure(build_trainer, plan, dataset, device: str, budget: int | None, untouched: Untouched,
            liger=None) -> Measurement:
    """Time ``plan`` on a throwaway trainer ``build_trainer(plan, rows)`` built on its heaviest rows: one
    warm-up and TIMED_STEPS training steps; on CUDA its peak reserved memory. The model is put back after."""
    import torch

    m = Measurement(plan.batch, "liger" in plan.kernels)
    cuda = device == "cuda"
    trainer = None
    try:
        trainer = build_trainer(plan, dataset.select(heaviest_rows(dataset, plan)))
        if checkpointing_on(trainer.model) != plan.gradient_checkpointing:  # a trainer turns it on in train()
            set_checkpointing(trainer.model, plan.gradient_checkpointing)
        if liger is not None:  # a trainer applies Liger in train(); patched here, undone after the probe
            (liger.enable if m.liger else liger.disable)()
        batch = fullest_batch(trainer)
        labels = batch.get("labels")
        items = int((labels[:, 1:] != -100).sum()) if labels is not None else None
        tokens = _tokens_in(batch)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        trainer.current_gradient_accumulation_steps = plan.grad_accum  # what train() sets before each step
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
        del trainer
        untouched.restore_model()
        if cuda:  # the throwaway trainer's cycles freed before the next plan's peak is read (0.3 s on CPU: skipped)
            gc.collect()
            torch.cuda.empty_cache()
    return m


def memory_budget(device: str) -> int | None:
    if device != "cuda":
        return None
    import torch

    free, _total = torch.cuda.mem_get_info()
    return int(MEMORY_SHARE * (free + torch.cuda.memory_reserved()))


def estimate(config, hardware, plan) -> int | None:
    """The memory estimate of ``config`` trained with ``plan`` (its batch and kernels: ``RunPlan.workload``)."""
    from lora_tui.core.plan.memory import estimate_memory

    try:
        return estimate_memory(plan.workload(config, hardware)).total_bytes
    except Exception:
        return None
