"""Scores of held-out rows for the round-trip check: each trained token under the base model, the adapter
and the artefact, and at each position how far the artefact's next-token distribution is from the adapter's.

The base model and the adapter run in transformers (PEFT: the adapter switched off for the base, so one
model is loaded); the artefact runs where it will be served: a merged folder in transformers, a GGUF file in
llama.cpp (or transformers' GGUF loader when llama.cpp is not installed). All three see the same token ids,
so the scores measure the weights, not the tokenizers.

KL(adapter || artefact) per position: exact from both full distributions in transformers. llama.cpp's server
lists only its ``TOP_K`` most likely tokens, so there the divergence is taken over those tokens plus one
bucket holding the rest of the vocabulary: a lower bound of the full KL (merging outcomes never increases a
divergence), equal to it when the bucket is empty; ``rest_mass`` says how much of the adapter's probability
fell in the bucket (under 1 % on the embedded model's held-out rows at TOP_K = 200).

Must not: import torch or xllamacpp at module top, print, or write files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TOP_K = 200  # tokens llama.cpp lists per position: the cost grows with it (27 ms a position at 1000, 17 at 100)


@dataclass
class Scores:
    """Per held-out row, per trained token (positions llama.cpp cannot report are left out on every side)."""

    base: list = field(default_factory=list)
    adapter: list = field(default_factory=list)
    artefact: list = field(default_factory=list)
    kl: list = field(default_factory=list)
    same_top: list = field(default_factory=list)
    rest_mass: list = field(default_factory=list)
    skipped: int = 0  # positions llama.cpp withheld (a token ending inside a UTF-8 character)

    @property
    def tokens(self) -> int:
        return sum(len(r) for r in self.base)

    def mean(self, which: str) -> float | None:
        n = self.tokens
        return sum(float(r.sum()) for r in getattr(self, which)) / n if n else None


def _positions(row: dict) -> list[int]:
    return [t for t in range(1, len(row["input_ids"])) if row["labels"][t] != -100]


def _reference(model, ids, positions):
    """(log-probs of the trained tokens, full log-distributions at their positions) under ``model``."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    logp = torch.log_softmax(logits[[t - 1 for t in positions]], -1)
    targets = ids[0, positions]
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1), logp


def _kl_exact(p_log, q_log):
    return (p_log.exp() * (p_log - q_log)).sum(-1)


def _kl_listed(p_log, ids, q_listed):
    """KL over the listed tokens plus one bucket for the rest of the vocabulary (a lower bound of the full KL)."""
    import torch

    listed = q_listed > -1e29  # short lists are padded
    p_at = p_log.gather(-1, ids)
    p_listed = torch.where(listed, p_at.exp(), torch.zeros_like(p_at))
    q = torch.where(listed, q_listed.exp(), torch.zeros_like(q_listed))
    kl = torch.where(listed, p_listed * (p_at - q_listed), torch.zeros_like(p_at)).sum(-1)
    p_rest = (1 - p_listed.sum(-1)).clamp(min=0)
    q_rest = (1 - q.sum(-1)).clamp(min=1e-12)
    rest_term = torch.where(p_rest > 1e-12, p_rest * (p_rest.clamp(min=1e-12).log() - q_rest.log()), torch.zeros_like(p_rest))
    return (kl + rest_term).clamp(min=0), p_rest


def score_rows(reference, rows: list[dict], artefact, *, llamacpp: bool, top_k: int = TOP_K,
               on_row=None) -> Scores:
    """Score ``rows`` (tokenised: input_ids, labels) under ``reference`` (a PeftModel: the adapter, and with it
    switched off the base) and ``artefact`` (a transformers model, or a ``LlamaCppModel`` when ``llamacpp``)."""
    import torch

    out = Scores()
    for index, row in enumerate(rows):
        positions = _positions(row)
        if not positions:
            continue
        ids = torch.tensor([row["input_ids"]])
        adapter, p_log = _reference(reference, ids, positions)
        with reference.disable_adapter():
            base, _ = _reference(reference, ids, positions)
        if llamacpp:
            logps, tops, listed = artefact.score(list(row["input_ids"]), positions, top_k=top_k)
            art = torch.tensor(logps, dtype=torch.float32)
            keep = ~torch.isnan(art)
            out.skipped += int((~keep).sum())
            vocab = p_log.shape[-1]
            width = max((len(i) for i, _ in listed), default=1)
            ids_k = torch.zeros((len(listed), width), dtype=torch.long)
            q_k = torch.full((len(listed), width), -1e30)
            for i, (tok_ids, tok_logps) in enumerate(listed):
                usable = [(t, lp) for t, lp in zip(tok_ids, tok_logps) if 0 <= t < vocab]
                if usable:
                    ids_k[i, :len(usable)] = torch.tensor([t for t, _ in usable])
                    q_k[i, :len(usable)] = torch.tensor([lp for _, lp in usable])
            kl, rest = _kl_listed(p_log, ids_k, q_k)
            same = p_log.argmax(-1) == torch.tensor(tops)
        else:
            art, q_log = _reference(artefact, ids, positions)
            keep = torch.ones_like(art, dtype=torch.bool)
            kl, rest = _kl_exact(p_log, q_log), torch.zeros_like(art)
            same = p_log.argmax(-1) == q_log.argmax(-1)
        out.base.append(base[keep].numpy())
        out.adapter.append(adapter[keep].numpy())
        out.artefact.append(art[keep].numpy())
        out.kl.append(kl[keep].numpy())
        out.same_top.append(same[keep].numpy())
        out.rest_mass.append(rest[keep].numpy())
        if on_row is not None:
            on_row(index + 1, len(rows))
    return out
