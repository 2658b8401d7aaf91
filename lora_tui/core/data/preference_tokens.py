"""Preference rows as the dpo / kto trainer gets them: prompt ids and answer ids, their lengths, what the
max length cuts, and the pieces the Dataset screen previews.

The trainer (core/train/preference.py) hands TRL these ids as they are: TRL's own tokenisation renders
text rows without our template choice and appends a second end token, so tokenising here keeps the
preview, ``lora-tui validate`` and training the same. Each answer is rendered after its prompt with
``ChatFormatter.render_answer`` (the template, the answer and its end-of-turn token, as in SFT); the
prompt is the common start of the answers' token ids (TRL's ``common_prefix_length`` rule).

TRL's collators put prompt + answer together and cut at max_length keeping the start: an answer past
the cut loses its end (a warning), and a prompt of max_length tokens or more leaves no answer token at
all: TRL drops such rows, so they are errors here. No I/O; the tokenizer is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .bounds import CHARS_PER_TOKEN_BOUND
from .preference import PreferenceExample
from .records import Finding
from .stats import token_stats

CHUNK = 4096  # rows rendered and tokenized per batch


@dataclass
class PreferenceTokens:
    """One row in tokens. Paired (dpo): chosen and rejected; unpaired (kto): the completion in ``chosen``."""

    line: int
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int] | None = None
    label: bool | None = None
    source: str | None = None

    def length(self) -> int:
        """Tokens of the longest sequence this row puts in a batch (prompt + its longest answer)."""
        return len(self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids or []))


def _clip(example: PreferenceExample, max_seq_len: int) -> PreferenceExample:
    """Texts cut to the characters that can reach max_seq_len tokens (a 10 MB answer stays bounded)."""
    limit = max(65536, max_seq_len * CHARS_PER_TOKEN_BOUND)

    def cut(text):
        return text[:limit] if isinstance(text, str) else text

    prompt = cut(example.prompt) if isinstance(example.prompt, str) else \
        [{**m, "content": cut(m["content"])} for m in example.prompt]
    return PreferenceExample(example.line, prompt, cut(example.chosen), cut(example.rejected), cut(example.completion),
                             example.label, example.source)


def _common(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def _split(ids: list[int], ranges: list[tuple[int, int]]) -> tuple[int, int]:
    """(first answer token, one past the last trained token) of a rendered prompt + answer."""
    if not ranges:
        return len(ids), len(ids)
    return ranges[0][0], ranges[-1][1] + 1


def tokenize_preferences(formatter, examples: list[PreferenceExample], max_seq_len: int
                         ) -> tuple[list[PreferenceTokens], list[Finding]]:
    """Token ids of each row and the findings on lengths: an error (row dropped) for a prompt that leaves no
    room for an answer, or an answer with no token; a warning for an answer the max length cuts."""
    out: list[PreferenceTokens] = []
    findings: list[Finding] = []
    for start in range(0, len(examples), CHUNK):
        chunk = [_clip(e, max_seq_len) for e in examples[start:start + CHUNK]]
        rendered = []
        for e in chunk:
            for _, answer in e.answers():
                rendered.append(formatter.render_answer(e.prompt, answer))
        encoded = iter(formatter.encode(rendered))
        for e in chunk:
            sides = [next(encoded) for _ in e.answers()]
            row, problems = _row_tokens(e, sides, max_seq_len)
            findings.extend(problems)
            if row is not None:
                out.append(row)
    return out, findings


def _row_tokens(e: PreferenceExample, sides: list, max_seq_len: int) -> tuple[PreferenceTokens | None, list[Finding]]:
    def finding(severity: str, message: str, fix: str, code: str) -> Finding:
        return Finding(e.line, severity, message, fix, code, e.source)

    cuts = [_split(ids, ranges) for ids, ranges in sides]
    prompt_len = min(first for first, _ in cuts)
    if len(sides) == 2:
        prompt_len = min(prompt_len, _common(sides[0][0], sides[1][0]))
    answers = [ids[prompt_len:end] for (ids, _), (_, end) in zip(sides, cuts)]
    names = [name for name, _ in e.answers()]
    empty = [name for name, (first, end) in zip(names, cuts) if end <= first]
    if empty:
        return None, [finding("error", f"the {empty[0]} answer has no token once rendered", f"write the {empty[0]} answer",
                              "empty_answer")]
    if len(answers) == 2 and answers[0] == answers[1]:
        return None, [finding("error", "chosen and rejected are the same tokens (they differ only in spacing)",
                              "write the worse answer in 'rejected', or remove the row", "same_answers")]
    if prompt_len >= max_seq_len:
        return None, [finding("error", f"the prompt is {prompt_len} tokens, at or over the max length {max_seq_len}: no "
                              "answer token fits, so training skips the row", "shorten the prompt, or raise "
                              "data.max_seq_len", "prompt_too_long")]
    problems = []
    for name, answer in zip(names, answers):
        over = prompt_len + len(answer) - max_seq_len
        if over > 0:
            problems.append(finding("warning", f"prompt + {name} answer is {prompt_len + len(answer)} tokens, over the max "
                                    f"length {max_seq_len}: the last {over} tokens of the {name} answer are cut off",
                                    "shorten the answer, or raise data.max_seq_len", "truncated"))
    ids = sides[0][0]
    row = PreferenceTokens(e.line, ids[:prompt_len], answers[0], answers[1] if len(answers) == 2 else None,
                           e.label, e.source)
    return row, problems


def trained_tokens(row: PreferenceTokens, max_seq_len: int) -> int:
    """Answer tokens the max length keeps, over the row's answers."""
    room = max(0, max_seq_len - len(row.prompt_ids))
    return sum(min(len(a), room) for a in (row.chosen_ids, row.rejected_ids) if a is not None)


def truncated(row: PreferenceTokens, max_seq_len: int) -> bool:
    return row.length() > max_seq_len


@dataclass
class PreferenceStats:
    """Token lengths of the prompt and of each answer, what the max length cuts, and KTO's labels."""

    prompt: object  # records.TokenStats (None when no row)
    chosen: object  # kto: the completions
    rejected: object | None
    truncated: int  # rows with an answer cut by the max length
    dropped: int  # rows whose prompt leaves no room for an answer (errors, not trained)
    max_seq_len: int
    desirable: int | None = None  # kto
    undesirable: int | None = None
    names: tuple[str, str] = field(default=("chosen", "rejected"))

    def to_dict(self) -> dict:
        from dataclasses import asdict

        def stats(s):
            return None if s is None else {k: v for k, v in asdict(s).items() if k != "histogram"}

        return {"prompt": stats(self.prompt), self.names[0]: stats(self.chosen),
                **({self.names[1]: stats(self.rejected)} if self.rejected is not None else {}),
                "truncated": self.truncated, "dropped": self.dropped, "max_seq_len": self.max_seq_len,
                **({"desirable": self.desirable, "undesirable": self.undesirable} if self.desirable is not None else {})}


def preference_stats(rows: list[PreferenceTokens], max_seq_len: int, dropped: int = 0) -> PreferenceStats:
    paired = any(r.rejected_ids is not None for r in rows) or not rows
    stats = PreferenceStats(
        prompt=token_stats([len(r.prompt_ids) for r in rows], max_seq_len),
        chosen=token_stats([len(r.chosen_ids) for r in rows], max_seq_len),
        rejected=token_stats([len(r.rejected_ids) for r in rows if r.rejected_ids is not None], max_seq_len) if paired else None,
        truncated=sum(truncated(r, max_seq_len) for r in rows), dropped=dropped, max_seq_len=max_seq_len,
        names=("chosen", "rejected") if paired else ("completion", ""))
    if not paired:
        stats.desirable = sum(1 for r in rows if r.label)
        stats.undesirable = len(rows) - stats.desirable
    return stats


def preview_pieces(tokenizer, row: PreferenceTokens, names: list[str], max_seq_len: int
                   ) -> tuple[str, list[tuple[str, str, int]]]:
    """(the prompt as trained, [(answer name, the answer as trained, tokens the max length cuts)]): the ids
    decoded, special tokens included, so the preview shows exactly what the trainer scores."""
    room = max(0, max_seq_len - len(row.prompt_ids))
    answers = [a for a in (row.chosen_ids, row.rejected_ids) if a is not None]
    shown = [(name, tokenizer.decode(a[:room], skip_special_tokens=False), max(0, len(a) - room))
             for name, a in zip(names, answers)]
    return tokenizer.decode(row.prompt_ids, skip_special_tokens=False), shown
