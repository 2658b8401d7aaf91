"""How the training step runs: loss head, batching, attention, kernels and the CPU allocator.

The run plan (core/plan/run_plan.py, ``choose_engine``) turns the config's ``auto`` values into concrete
choices (with the reason for each); ``sft_engine_kwargs`` turns them into TRL ``SFTConfig`` arguments,
``prepare_model`` and ``install_lean_head`` apply them to the model. Everything goes through the libraries' own
mechanisms (TRL padding-free / bfd packing, TRL's chunked log-prob kernel, transformers'
attention implementations, Liger's layer kernels); no hand-written kernels.

The lean head: TRL 1.16's fused LM head already never builds the [tokens x vocab] logits, but
off-Triton (CPU) it scores every position, padding and prompt included, in [4096 x 32768] fp32
tiles, and computes entropy and top-1 over every position for two log lines. The lean head
scores only positions with a label, in narrower vocabulary tiles on CPU, and estimates the two
metrics on a fixed, evenly spread sample of positions (no RNG use, so resume stays bit-identical).

Must not import torch / transformers / trl at module top: the trainer imports it before torch.
"""

from __future__ import annotations

import os

from lora_tui.core.plan.run_plan import RunPlan

# Vocabulary columns per tile of the chunked log-prob. CPU: narrower tiles keep its ~7 fp32 tile-sized
# temporaries small (measured: same speed); CUDA keeps TRL's Triton tile width.
CPU_VOCAB_TILE, CUDA_VOCAB_TILE = 8192, 32768
METRIC_SAMPLE = 64  # positions per micro-batch scored in full for entropy / mean_token_accuracy
LIGER_KERNELS = {"rope": True, "rms_norm": True, "swiglu": True, "cross_entropy": False,
                 "fused_linear_cross_entropy": False}  # TRL's fused head owns the loss


def sft_engine_kwargs(choice, max_seq_len: int) -> dict:
    """SFTConfig arguments for the chosen batching and kernels (``choice``: a RunPlan)."""
    kwargs: dict = {}
    if choice.batching == "token_budget":
        # TRL's best-fit-decreasing packing with bins of tokens_per_batch tokens, one bin per micro-batch:
        # whole rows (ours are already truncated to max_seq_len, so none is cut), position ids restarting
        # at each row (FlashAttention varlen, or transformers' packed-sequence mask for sdpa / flex).
        kwargs.update(packing=True, packing_strategy="bfd", max_length=int(choice.tokens_per_batch or max_seq_len),
                      per_device_train_batch_size=1, per_device_eval_batch_size=1)
    elif choice.batching == "grouped":
        # Rows of similar length share a batch: less padding, more real tokens per second.
        kwargs["train_sampling_strategy"] = "group_by_length"
    elif choice.batching == "padding_free":
        # Rows are already truncated by our tokenizer; TRL refuses max_length with padding-free and no packing.
        kwargs.update(padding_free=True, max_length=None)
    elif choice.batching == "packed":
        kwargs.update(packing=True, packing_strategy="bfd", max_length=max_seq_len)
    if "liger" in choice.kernels:
        kwargs.update(use_liger_kernel=True, liger_kernel_config=dict(LIGER_KERNELS))
    return kwargs


def prefer_huge_pages() -> None:
    """Ask PyTorch's CPU allocator for transparent huge pages on large tensors (2 MiB aligned, madvise).

    Must run before torch is imported (PyTorch reads the variable once). Fewer page faults, and glibc keeps
    far less freed activation memory once checkpointing frees it. Measured on a checkpointed 8 x 512
    step (lean head): 83.0 s CPU / 6.67 GiB peak RSS with 4 KiB pages, 71.9 s / 3.64 GiB with huge pages."""
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def prepare_model(model, choice: RunPlan) -> None:
    """Apply the attention implementation to a loaded base model (before PEFT wraps it)."""
    if choice.attention and getattr(model.config, "_attn_implementation", None) != choice.attention:
        model.set_attn_implementation(choice.attention)


def _plain_logits_model(config) -> bool:
    """True when the LM head is a plain projection (no logit scaling the lean head would have to mirror)."""
    text = config.get_text_config()
    return all(getattr(text, name, None) is None for name in ("logit_scale", "output_multiplier",
                                                               "lm_head_multiplier", "logits_scaling"))


def install_lean_head(model, vocab_tile: int, metric_sample: int = METRIC_SAMPLE, exact_metrics: bool = False) -> bool:
    """Replace TRL's fused LM head on ``model`` (a PEFT model or a plain one, after SFTTrainer patched it)
    with the lean one. Returns False (TRL's head stays) for models whose logits are scaled or MoE.

    ``exact_metrics`` (TRL's DPO / KTO trainers, which log from them and need ``is_top1`` as booleans): entropy,
    mean logits and top-1 come from the same chunked kernel at every labelled position, as TRL's head gives them
    (the same values: TRL's head zeroes the unlabelled positions too), instead of from a sample."""
    import functools
    import types

    try:  # TRL >= 1.16; older TRL keeps its own head
        from trl.kernels import ChunkedLogProbFunction
        from trl.trainer.utils import FusedCausalLMOutput
    except ImportError:
        return False

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    text = base.config.get_text_config()
    if not _plain_logits_model(base.config) or getattr(text, "num_experts", None) or getattr(text, "num_local_experts", None):
        return False
    previous = base.forward
    softcap = getattr(text, "final_logit_softcapping", None)

    @functools.wraps(type(base).forward)
    def lean_forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head or shift_labels is not None or labels is None:
            return previous(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels,
                            num_items_in_batch=num_items_in_batch, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        head = self.get_output_embeddings()
        labels = labels[:, 1:].to(head.weight.device)
        mask = labels != -100
        hidden = hidden.to(head.weight.device)[mask]  # only labelled positions are scored
        targets = labels[mask]
        outputs = ("log_probs", "entropy", "mean_logits", "is_top1") if exact_metrics else ("log_probs",)
        scored = ChunkedLogProbFunction.apply(hidden, head.weight, head.bias, targets, 1.0, vocab_tile,
                                              softcap, 1.0, outputs)
        log_probs = scored[0]
        denominator = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        mean_logits = None
        if exact_metrics:
            entropy, mean_logits, is_top1 = (x.new_zeros(mask.shape).masked_scatter(mask, x) for x in
                                             (scored[1].detach(), scored[3], scored[4]))
        else:
            entropy, is_top1 = _sampled_metrics(hidden.detach(), targets, head, mask, softcap, metric_sample)
        return FusedCausalLMOutput(
            loss=-log_probs.sum() / denominator,
            # masked_scatter keeps an all-masked micro-batch connected to the graph (a differentiable zero)
            log_probs=log_probs.new_zeros(mask.shape).masked_scatter(mask, log_probs),
            entropy=entropy, mean_logits=mean_logits, is_top1=is_top1, label_mask=mask)

    base.forward = types.MethodType(lean_forward, base)
    return True


def _sampled_metrics(hidden, targets, head, mask, softcap, sample: int):
    """Entropy and top-1 hit per position, estimated from ``sample`` evenly spread labelled positions.

    Each sampled position stands for n/k positions, so TRL's sum / count gives the sample mean."""
    import torch

    entropy = torch.zeros(mask.shape, device=mask.device, dtype=torch.float32)
    top1 = torch.zeros(mask.shape, device=mask.device, dtype=torch.float32)
    n = targets.numel()
    if n == 0 or sample <= 0:
        return entropy, top1
    with torch.no_grad():
        k = min(n, sample)
        pick = torch.linspace(0, n - 1, k, device=targets.device).round().long()
        logits = torch.nn.functional.linear(hidden[pick], head.weight, head.bias).float()
        if softcap:
            logits = softcap * torch.tanh(logits / softcap)
        log_p = logits.log_softmax(-1)
        where = mask.nonzero()[pick]
        scale = n / k
        entropy[where[:, 0], where[:, 1]] = -(log_p.exp() * log_p).sum(-1) * scale
        top1[where[:, 0], where[:, 1]] = (logits.argmax(-1) == targets[pick]).float() * scale
    return entropy, top1
