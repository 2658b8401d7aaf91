"""Does the export still prefer what preference training preferred? The round-trip check's part for dpo /
kto runs (``check.verify_export`` adds it beside the gain kept).

Held-out preference rows of the run (its validation pairs, else the rows training held out, else the last
ones) are tokenised as the trainer scored them (``data.preference_tokens``), and each answer's trained
tokens are scored under the base (the adapter switched off), the adapter and the artefact with the same
ids (``scoring.score_rows``). An answer's reward is its log-likelihood over the base's; a pair's margin is
reward(chosen) - reward(rejected) (DPO's implicit reward margin, over beta, against the base); a kto row's
is its reward signed by its label. Reported:

- reward accuracy: the share of held-out items whose margin is positive, adapter vs artefact;
- preference kept: sum(artefact margins) / sum(adapter margins) with its 95 % interval over items
  (``gain._interval``: the statistics of the gain kept).

It fails when the artefact's accuracy is more than ACCURACY_SLACK below the adapter's, or the whole interval
of the share kept lies below ``gain.KEEP_MIN``. Must not: import torch at module top, print, write files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lora_tui.core.export.gain import KEEP_MIN, MIN_ROWS, _interval, pct, share_text

ACCURACY_SLACK = 0.10  # the artefact may prefer the chosen answer on this much fewer held-out items


@dataclass
class PreferenceKept:
    items: int  # pairs (dpo) or labelled rows (kto)
    adapter_accuracy: float
    artefact_accuracy: float
    adapter_margin: float  # mean margin, nats
    artefact_margin: float
    kept: float | None
    kept_low: float | None
    kept_high: float | None
    ok: bool
    words: str

    def to_dict(self) -> dict:
        return asdict(self)


def judge_preferences(adapter_margins: list[float], artefact_margins: list[float]) -> PreferenceKept:
    """The judgement from per-item margins under the adapter and under the artefact (both against the base)."""
    n = len(adapter_margins)
    acc = sum(m > 0 for m in adapter_margins) / n
    art_acc = sum(m > 0 for m in artefact_margins) / n
    total = sum(adapter_margins)
    kept = sum(artefact_margins) / total if total > 0 else None
    low, high = _interval(artefact_margins, adapter_margins) if total > 0 and n >= MIN_ROWS else (None, None)
    failed = art_acc < acc - ACCURACY_SLACK or (high is not None and high < KEEP_MIN)
    share = share_text(kept, low, high) if low is not None else ("not judged" if kept is None else pct(kept))
    words = (f"prefers the chosen answer on {pct(art_acc)} of {n} held-out items (the adapter: {pct(acc)}); "
             f"keeps {share} of the preference margin")
    return PreferenceKept(n, acc, art_acc, total / n, sum(artefact_margins) / n, kept, low, high, not failed, words)


def held_out_items(source, tokenizer, n_rows: int) -> list:
    """The run's held-out preference rows as ``PreferenceTokens`` (empty for an sft run or unreadable data)."""
    from lora_tui.core.config import load_config
    from lora_tui.core.data import DataError
    from lora_tui.core.data.load import hold_out
    from lora_tui.core.data.preference_load import load_preferences
    from lora_tui.core.data.preference_tokens import tokenize_preferences
    from lora_tui.core.data.template import training_formatter

    if source.run is None:
        return []
    config = load_config(source.run.config_path)
    method = config.training.method
    if method == "sft":
        return []
    d = config.data
    try:
        rows = load_preferences(d.validation or d.train, method, subset=d.subset, max_seq_len=d.max_seq_len).examples
    except DataError:
        return []
    if not d.validation:  # the rows training held out (by source row, as it split them), else the last ones
        lines = list(dict.fromkeys((e.source, e.line) for e in rows))
        held = set(hold_out(lines, d.val_fraction, config.training.seed)[1] or lines[-n_rows:])
        rows = [e for e in rows if (e.source, e.line) in held]
    tokens, _ = tokenize_preferences(training_formatter(tokenizer, d.template), rows, d.max_seq_len)
    return tokens[:n_rows]


def check_preferences(reference, artefact, items: list, *, llamacpp: bool) -> PreferenceKept | None:
    """Score ``items`` under the base (``reference`` with its adapter off), the adapter and ``artefact``."""
    from lora_tui.core.export.scoring import score_rows

    rows, signs, groups = [], [], []
    for index, item in enumerate(items):
        answers = [(item.chosen_ids, 1.0)] + ([(item.rejected_ids, -1.0)] if item.rejected_ids is not None else [])
        if item.rejected_ids is None and not item.label:  # kto: an undesirable answer should lose likelihood
            answers = [(item.chosen_ids, -1.0)]
        for ids, sign in answers:
            full = item.prompt_ids + ids
            rows.append({"input_ids": full, "labels": [-100] * len(item.prompt_ids) + list(ids)})
            signs.append(sign)
            groups.append(index)
    if not rows:
        return None
    scores = score_rows(reference, rows, artefact, llamacpp=llamacpp)
    if len(scores.base) != len(rows):  # a row llama.cpp could not score: compare only what both sides saw
        return None
    adapter, art = [0.0] * len(items), [0.0] * len(items)
    for group, sign, base, ours, theirs in zip(groups, signs, scores.base, scores.adapter, scores.artefact):
        adapter[group] += sign * float(ours.sum() - base.sum())
        art[group] += sign * float(theirs.sum() - base.sum())
    return judge_preferences(adapter, art)
