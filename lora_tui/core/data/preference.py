"""Preference data for ``training.method`` dpo and kto: TRL's preference formats, detected from a row's
keys like the SFT formats (``formats``), each row normalised and checked with its line.

Formats (TRL's "dataset formats" guide):

- ``preference``: explicit prompt, ``{"prompt", "chosen", "rejected"}``. Strings (the prompt is the user's
  turn, as in an SFT prompt/completion row; an optional "system"), or TRL's conversational form: the
  prompt a list of turns, each answer a list holding the assistant's turn.
- ``preference_implicit``: ``{"chosen", "rejected"}``, each the whole conversation (or text); the prompt
  is their common start, as TRL's ``extract_prompt`` takes it (text rows stay plain text, no template).
- ``unpaired_preference``: KTO's ``{"prompt", "completion", "label"}``, label true (desirable) or false.

dpo needs pairs; kto takes unpaired rows and pairs alike (a pair gives a desirable and an undesirable row,
as TRL's ``unpair_preference_dataset`` does). Row errors (the row is skipped): a missing or empty side,
chosen identical to rejected, a label that is not true / false. ``label_findings`` adds the file-level
ones: KTO labels all one way, or unbalanced (with the weights the trainer then applies, ``kto_weights``).
Lengths need the tokenizer: ``preference_tokens``. No I/O, no printing, no torch / trl imports.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from .formats import PREFERENCE_FIELDS, _content_text, _conversation, _err, _maybe_json, _text_field, \
    _type_name, detect_row_format
from .records import Finding
from .rows import RawRow

ACCEPTED = ("prompt+chosen+rejected, chosen+rejected (implicit prompt), as text or as TRL's conversational "
            "lists; for kto also prompt+completion+label")


@dataclass
class PreferenceExample:
    """One normalised preference row: a prompt and its answers, as the trainer will render them."""

    line: int
    prompt: list[dict] | str  # chat turns (rendered with the chat template); a str is plain text the answers continue
    chosen: str | None = None  # dpo: the preferred answer
    rejected: str | None = None  # dpo: the other one
    completion: str | None = None  # kto: the answer ...
    label: bool | None = None  # ... and whether it is desirable
    source: str | None = None

    def where(self) -> str:
        return f"{self.source} chunk {self.line}" if self.source else f"line {self.line}"

    @property
    def paired(self) -> bool:
        return self.completion is None

    def answers(self) -> list[tuple[str, str]]:
        """(name, answer text) in the order the preview shows them."""
        if self.paired:
            return [("chosen", self.chosen or ""), ("rejected", self.rejected or "")]
        return [("desirable" if self.label else "undesirable", self.completion or "")]


def detect_preference_format(row) -> str | None:
    if not isinstance(row, dict):
        return None
    for name, required in PREFERENCE_FIELDS.items():
        if all(k in row for k in required):
            return name
    return None


def common_prefix_text(chosen: str, rejected: str) -> int:
    """Where the answers of an implicit-prompt text row start: TRL's ``extract_prompt`` rule (the common
    prefix, less a space right before the answers)."""
    n = min(len(chosen), len(rejected))
    idx = next((i for i in range(n) if chosen[i] != rejected[i]), n)
    if idx < n and idx > 0 and chosen[idx - 1] == " ":
        idx -= 1
    return idx


class PreferenceNormaliser:
    """Normalises preference rows one at a time for ``method`` (dpo | kto), once the file's format is known
    from a sample of its rows (as ``formats.Normaliser`` does for SFT rows)."""

    def __init__(self, sample: list[RawRow], method: str) -> None:
        self.method = method
        self.findings: list[Finding] = []
        detected = [detect_preference_format(r.value) for r in sample]
        counts = Counter(d for d in detected if d)
        self.format = counts.most_common(1)[0][0] if counts else "unknown"
        if not sample:
            return
        first = sample[0]
        if not counts:
            sft = Counter(f for f in (detect_row_format(r.value) for r in sample[:1000]) if f)
            if sft:
                what = sft.most_common(1)[0][0]
                message = f"these rows are {what} (SFT) rows, with no chosen / rejected answers to prefer"
                fix = "train them with training.method=sft, or give preference rows: " + ACCEPTED
            else:
                keys = ", ".join(sorted({k for r in sample[:1000] if isinstance(r.value, dict) for k in r.value}))
                message = f"no row has a preference format; the keys found are: {keys or '(none)'}"
                fix = "use one of: " + ACCEPTED
            self.findings.append(Finding(first.line, "error", message, fix, "unknown_format", first.source))
        elif method == "dpo" and self.format == "unpaired_preference":
            self.findings.append(Finding(first.line, "error", "these are KTO rows (prompt, completion, label): dpo "
                                         "needs a chosen and a rejected answer to the same prompt",
                                         "train them with training.method=kto, or pair the answers", "unpaired_for_dpo",
                                         first.source))
            self.format = "unknown"

    def row(self, row: RawRow) -> tuple[list[PreferenceExample], list[Finding]]:
        """(examples of this row: one, or two for a pair under kto; findings of this row)."""
        out: list[Finding] = []
        if self.format == "unknown":
            return [], out
        fmt = detect_preference_format(row.value)
        if fmt != self.format:
            required = PREFERENCE_FIELDS[self.format]
            missing = [k for k in required if not isinstance(row.value, dict) or k not in row.value]
            what = (f"missing field{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}" if missing
                    else f"this row is {fmt} but the rest of the file is {self.format}")
            out.append(_err(row, what, f"every row needs {', '.join(map(repr, required))}", "missing_field"))
            return [], out
        if fmt == "unpaired_preference":
            example = _unpaired(row, out)
            return ([example] if example else []), out
        example = _explicit(row, out) if fmt == "preference" else _implicit(row, out)
        if example is None:
            return [], out
        if example.chosen.strip() == example.rejected.strip():
            out.append(_err(row, "chosen and rejected are the same answer: the pair teaches nothing",
                            "write the worse answer in 'rejected', or remove the row", "same_answers"))
            return [], out
        if self.method == "kto":
            return unpair(example), out
        return [example], out


def unpair(example: PreferenceExample) -> list[PreferenceExample]:
    """A pair as KTO rows: the chosen answer desirable, the rejected one not (TRL's unpair_preference_dataset)."""
    return [PreferenceExample(example.line, example.prompt, completion=example.chosen, label=True, source=example.source),
            PreferenceExample(example.line, example.prompt, completion=example.rejected, label=False, source=example.source)]


def _prompt_turns(row: RawRow, out: list[Finding]) -> list[dict] | None:
    value = _maybe_json(row.value.get("prompt"))
    if isinstance(value, list):
        # Checked as a conversation whose answer is still to come (a placeholder turn stands for it).
        example = _conversation(row, value + [{"role": "assistant", "content": "·"}], out, "prompt", "role", "content")
        return example.messages[:-1] if example is not None else None
    text = _text_field(row, "prompt", out)
    if text is None:
        return None
    system = row.value.get("system")
    system = system if isinstance(system, str) and system.strip() else ""
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]


def _answer(row: RawRow, key: str, out: list[Finding]) -> str | None:
    """A string answer, or TRL's conversational one: a list holding one assistant turn."""
    value = _maybe_json(row.value.get(key))
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return _text_field(row, key, out)
    turns = [t for t in value if isinstance(t, dict)]
    if len(turns) != 1 or len(value) != 1 or str(turns[0].get("role", "")).lower() not in ("assistant", "gpt", "model"):
        what = f"a {turns[0].get('role')!r} turn" if len(turns) == len(value) == 1 else f"{len(value)} turns"
        out.append(_err(row, f"'{key}' holds {what}; expected one assistant turn",
                        f'write \'{key}\' as [{{"role": "assistant", "content": ...}}] or as text', "wrong_type"))
        return None
    text = _content_text(turns[0].get("content"))
    if text is None:
        out.append(_err(row, f"'{key}' content is {_type_name(turns[0].get('content'))}, expected a string",
                        f"write the {key} answer as text", "wrong_type"))
        return None
    if not text.strip():
        out.append(_err(row, f"field '{key}' is empty", f"fill in '{key}' or remove the row", "empty_field"))
        return None
    return text


def _explicit(row: RawRow, out: list[Finding]) -> PreferenceExample | None:
    prompt = _prompt_turns(row, out)
    chosen, rejected = _answer(row, "chosen", out), _answer(row, "rejected", out)
    if prompt is None or chosen is None or rejected is None:
        return None
    return PreferenceExample(row.line, prompt, chosen=chosen, rejected=rejected, source=row.source)


def _implicit(row: RawRow, out: list[Finding]) -> PreferenceExample | None:
    chosen, rejected = _maybe_json(row.value.get("chosen")), _maybe_json(row.value.get("rejected"))
    if isinstance(chosen, list) and isinstance(rejected, list):
        a = _conversation(row, chosen, out, "chosen", "role", "content")
        b = _conversation(row, rejected, out, "rejected", "role", "content") if a is not None else None
        if a is None or b is None:
            return None
        a, b = a.messages, b.messages
        shared = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        if shared != len(a) - 1 or shared != len(b) - 1 or a[-1]["role"] != "assistant" or b[-1]["role"] != "assistant":
            out.append(_err(row, "chosen and rejected must be the same conversation up to their last (assistant) turn",
                            "give the shared turns once in 'prompt' and one answer each in 'chosen' / 'rejected'",
                            "answers_differ_early"))
            return None
        return PreferenceExample(row.line, a[:-1], chosen=a[-1]["content"], rejected=b[-1]["content"], source=row.source)
    chosen, rejected = _text_field(row, "chosen", out), _text_field(row, "rejected", out)
    if chosen is None or rejected is None:
        return None
    cut = common_prefix_text(chosen, rejected)
    if cut == 0:
        out.append(_err(row, "chosen and rejected share no beginning, so there is no prompt",
                        "add a 'prompt' field (explicit prompt)", "no_prompt"))
        return None
    return PreferenceExample(row.line, chosen[:cut], chosen=chosen[cut:], rejected=rejected[cut:], source=row.source)


LABEL_WORDS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def _unpaired(row: RawRow, out: list[Finding]) -> PreferenceExample | None:
    prompt = _prompt_turns(row, out)
    completion = _answer(row, "completion", out)
    raw = row.value.get("label")
    label = raw if isinstance(raw, bool) else LABEL_WORDS.get(str(raw).strip().lower()) if isinstance(raw, (str, int)) else None
    if label is None:
        out.append(_err(row, f"'label' is {raw!r}; expected true (a desirable answer) or false",
                        "write label as true or false", "bad_label"))
    if prompt is None or completion is None or label is None:
        return None
    return PreferenceExample(row.line, prompt, completion=completion, label=label, source=row.source)


# KTO paper, eq. 8: desirable_weight x n_desirable / (undesirable_weight x n_undesirable) in [1, 4/3].
KTO_BALANCE = (1.0, 4 / 3)


def kto_weights(desirable: int, undesirable: int) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) that put the label balance inside KTO_BALANCE: (1, 1) when the
    data already is; else the rarer side is weighted up (rounded so the ratio stays at least 1)."""
    if not desirable or not undesirable:
        return 1.0, 1.0
    ratio = desirable / undesirable
    if KTO_BALANCE[0] <= ratio <= KTO_BALANCE[1]:
        return 1.0, 1.0
    if ratio < 1:
        return math.ceil(100 * undesirable / desirable) / 100, 1.0
    return 1.0, math.floor(100 * ratio) / 100


def label_findings(examples: list[PreferenceExample], method: str) -> list[Finding]:
    """File-level findings on KTO labels: all one way (error: nothing to contrast), unbalanced (warning)."""
    if method != "kto" or not examples:
        return []
    good = sum(1 for e in examples if e.label)
    bad = len(examples) - good
    if not good or not bad:
        side = "desirable (true)" if good else "undesirable (false)"
        return [Finding(None, "error", f"every label is {side}: kto needs desirable and undesirable answers",
                        "add rows with the other label, or train pairs with training.method=dpo", "labels_one_sided")]
    weights = kto_weights(good, bad)
    if weights == (1.0, 1.0):
        return []
    return [Finding(None, "warning", f"labels are unbalanced: {good} desirable, {bad} undesirable; the trainer weights "
                    f"desirable x{weights[0]:g}, undesirable x{weights[1]:g} (KTO paper's range)",
                    "nothing to do; or balance the labels", "labels_unbalanced")]
