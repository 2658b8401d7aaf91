"""What a model family changes in the run plan: its attention implementation and whether rows may be packed.

``family_attention`` and ``family_batching`` adjust the attention and batching the device rules chose (core/plan/engine_choice.py)
for the config's model family (core/model/families.py), with the reason, so the ``started`` event says
why: Gemma 2 (logit soft-capping) and gpt-oss (attention sinks) have no SDPA path in transformers, and
where packed rows would see each other, rows stay padded: a hybrid model's linear-attention layers (Qwen3.5)
carry their recurrent state across rows, and gpt-oss builds its mask without the position ids.

``family_problem`` is the one line that refuses, before a run directory is written and again in the
trainer, a setting the family cannot train with (an explicit ``training.attention=sdpa`` on Gemma 2, an
explicit packing on Qwen3.5), naming what is missing and what works instead.

Reads the model's config.json through the catalogue (no torch, no transformers, no download).
"""

from __future__ import annotations

from lora_tui.core.model.families import Family, family_of

PACKED = ("padding_free", "packed", "token_budget")


def config_family(config) -> Family | None:
    """The family of the config's model (None: unknown here, or a hub model not in the local cache)."""
    from lora_tui.core.model.catalogue import model_dims

    try:
        return family_of(model_dims(config.model.name).model_type)
    except (LookupError, ValueError, OSError):
        return None


def family_attention(config, device: str, flash: str | None, attention: str, why: str) -> tuple[str, str]:
    """The attention the device rules chose, or the family's own where it has no SDPA path (auto only)."""
    fam = config_family(config) if config.training.attention == "auto" else None
    own = fam.attention(device, flash) if fam is not None else None
    return own or (attention, why)


def family_batching(config, batching: str, why: str) -> tuple[str, str]:
    """The batching the device rules chose, or padded rows where the family cannot pack them (auto only)."""
    fam = config_family(config) if batching in PACKED and config.training.batching == "auto" else None
    if fam is None or fam.packs_rows:
        return batching, why
    return "grouped", f"{fam.label}: {fam.no_packing}, so rows stay separate (length-grouped, padded)"


def family_problem(config) -> str | None:
    """One line for a setting this model's family cannot train with (None: nothing to refuse)."""
    from lora_tui.core.model.models import split_experts

    if split_experts(config.lora.targets)[1] and (problem := _experts_problem(config)):
        return problem
    fam = config_family(config)
    if fam is None:
        return None
    t = config.training
    if fam.needs and t.attention not in ("auto", "eager", *fam.cuda_attention):
        return (f"training.attention={t.attention}: {fam.label} needs {fam.needs}, which {t.attention} does not compute. "
                f"Fix: training.attention=auto (eager on a CPU, {' or '.join(fam.cuda_attention) or 'eager'} on a GPU).")
    if not fam.packs_rows and t.batching in PACKED:
        return (f"training.batching={t.batching}: rows would see each other in {fam.label} ({fam.no_packing}). "
                "Fix: training.batching=grouped (or auto).")
    return None


def _experts_problem(config) -> str | None:
    """``experts`` in lora.targets: PEFT's target_parameters adapts fused expert tensors without dropout or DoRA (peft 0.21's
    ParamWrapper refuses both), and only a mixture-of-experts model has them."""
    from lora_tui.core.model.catalogue import model_dims

    lo = config.lora
    try:
        experts = model_dims(config.model.name).experts
    except (LookupError, ValueError, OSError):
        experts = None
    if experts is not None and experts <= 1:
        return (f"lora.targets={lo.targets}: {config.model.name} is not a mixture-of-experts model. "
                "Fix: take experts out of lora.targets.")
    if lo.dropout > 0:
        return (f"lora.targets={lo.targets} with lora.dropout={lo.dropout}: PEFT cannot apply dropout inside the experts' "
                "fused weights. Fix: lora.dropout=0 (or take experts out of lora.targets).")
    if lo.use_dora:
        return (f"lora.targets={lo.targets} with lora.use_dora=true: PEFT has no DoRA for expert tensors. "
                "Fix: lora.use_dora=false.")
    if config.training.method != "sft":
        return (f"lora.targets={lo.targets}: experts are adapted in sft runs only. Fix: take experts out of lora.targets "
                f"for {config.training.method}.")
    return None
