"""``validate_dataset``: every problem in a dataset, with line numbers, before any GPU time is spent.

Reads (never writes) the file, normalises it, runs the hygiene checks and, with
a tokenizer, measures token lengths with the real chat template. Returns a
``ValidationReport``; printing is the caller's job (``lora_tui.commands.validate``
or the wizard).

Memory stays bounded whatever the file holds: rows stream from the reader; the
format is decided on a sample (the whole file when it fits SAMPLE_CHARS);
tokens are counted CHUNK_ROWS rows at a time; duplicates are remembered by
hash; the report keeps at most KEEP_CHARS of example text for previews and
MAX_FINDINGS findings (see ``bounds`` for the per-line limits).
"""

from __future__ import annotations

from array import array
from collections import deque
from pathlib import Path
from typing import Callable

from .bounds import MAX_FINDINGS
from .checks import Hygiene
from .formats import Normaliser
from .load import sort_findings
from .hub_data import open_dataset
from .records import Finding, ValidationReport, row_unit
from .rows import RawRow
from .stats import token_stats
from .template import ChatFormatter

Progress = Callable[[str, float], None]
CHUNK_ROWS = 8192  # rows tokenized per batch: big enough for the fast tokenizer, small enough for progress
CHUNK_CHARS = 8 * 2**20  # ...and at most this much text per batch (the encodings cost ~100 bytes a token)
SAMPLE_CHARS = 64 * 2**20  # rows held to decide the format (the whole file, for most files)
KEEP_CHARS = 64 * 2**20  # example text kept in the report for previews


def validate_dataset(path, *, tokenizer=None, max_seq_len: int = 1024, template: str = "auto",
                     train_on_prompt: bool = False, on_progress: Progress | None = None,
                     subset: str | None = None, method: str = "sft") -> ValidationReport:
    """Check `path` (a file, folder or hub id; `subset`: a hub dataset's config name) and report.
    Raises DataError only when the data cannot be read at all.

    Without a tokenizer the token statistics are skipped (token_stats is None).
    `on_progress(message, fraction)` is called between stages. `method` dpo / kto: preference rows
    (``preference_load.validate_preferences``).
    """
    if method in ("dpo", "kto"):
        from .preference_load import validate_preferences

        return validate_preferences(path, method, tokenizer=tokenizer, max_seq_len=max_seq_len, template=template,
                                    on_progress=on_progress, subset=subset)
    progress = on_progress or (lambda message, fraction: None)
    progress("Reading rows", 0.0)
    read = open_dataset(path, subset=subset, tokenizer=tokenizer, max_seq_len=max_seq_len)
    findings = _Findings()
    items = read.items()
    sample: deque = deque()
    held, whole = 0, True
    for item in items:
        if isinstance(item, RawRow):
            sample.append(item)
            held += _chars(item.value)
            if held > SAMPLE_CHARS:
                whole = False
                break
        else:
            findings.add(item)
    progress("Checking fields", 0.2)
    normaliser = Normaliser(list(sample))
    findings.extend(normaliser.findings)
    specials = list(getattr(tokenizer, "all_special_tokens", []) or []) if tokenizer is not None else []
    hygiene = Hygiene(specials, row_unit(read.container, getattr(read, "source", None)))
    formatter = None
    if tokenizer is not None:
        formatter = ChatFormatter(tokenizer, template=template, train_on_prompt=train_on_prompt)
    counter = _TokenCounter(formatter, max_seq_len, findings)
    expected = len(sample)
    progress("Looking for duplicates and boilerplate", 0.35)

    def rows():
        while sample:  # popped, so the sample's memory is given back as it is processed
            yield sample.popleft()
        if not whole:
            yield from items

    done = 0
    for item in rows():
        if not isinstance(item, RawRow):
            findings.add(item)
            continue
        example, out = normaliser.row(item)
        findings.extend(out)
        if example is None:
            continue
        findings.extend(hygiene.check(example))
        counter.add(example)
        done += 1
        if counter.full():
            share = done / expected if whole else 1 - 1 / (1 + done / max(expected, 1))
            progress(f"Counting tokens ({done:,} rows)", 0.5 + 0.45 * min(share, 1.0))
            counter.flush()
    counter.flush()
    findings.extend(hygiene.summary())
    stats = token_stats(counter.lengths, max_seq_len) if formatter is not None else None
    if formatter is not None and counter.kept and counter.trained_total == 0:
        findings.add(Finding(None, "error", "every label is masked: nothing would be trained",
                             "check the answers are not empty and fit in --max-seq-len", "all_masked"))
    if read.rows_total == 0 and not findings.items:
        findings.add(Finding(None, "error", "the file holds no rows", "add at least one example row", "no_rows"))
    progress("Done", 1.0)
    return ValidationReport(
        path=str(Path(path)), format=normaliser.format, container=read.container, rows=read.rows_total,
        valid_rows=counter.kept, findings=sort_findings(findings.done()), token_stats=stats,
        trained_tokens=counter.trained_total, template=formatter.description if formatter else "",
        examples=counter.examples, trainable_rows=counter.trainable if formatter is not None else None,
        examples_complete=counter.examples_complete, source=getattr(read, "source", None),
    )


class _Findings:
    """Findings, at most MAX_FINDINGS of them kept; the rest are counted and summarised."""

    def __init__(self) -> None:
        self.items: list[Finding] = []
        self.dropped = 0

    def add(self, finding: Finding) -> None:
        if len(self.items) < MAX_FINDINGS:
            self.items.append(finding)
        else:
            self.dropped += 1

    def extend(self, findings) -> None:
        for f in findings:
            self.add(f)

    def done(self) -> list[Finding]:
        if self.dropped:
            self.items.append(Finding(None, "error" if any(f.severity == "error" for f in self.items) else "warning",
                                      f"{self.dropped:,} more findings are not listed (the first {MAX_FINDINGS:,} "
                                      "are)", "fix the ones listed and validate again", "too_many_findings"))
        return self.items


class _TokenCounter:
    """Token lengths in bounded batches; keeps lengths compactly and a bounded preview of examples."""

    def __init__(self, formatter, max_seq_len: int, findings: _Findings) -> None:
        self.formatter, self.max_seq_len, self.findings = formatter, max_seq_len, findings
        self.batch: list = []
        self.batch_chars = 0
        self.lengths = array("l")
        self.kept = self.trained_total = self.trainable = 0
        self.examples: list = []
        self.kept_chars, self.examples_complete = 0, True

    def add(self, example) -> None:
        chars = _example_chars(example)
        if self.formatter is None:
            self._keep(example, chars)
            return
        self.batch.append(example)
        self.batch_chars += chars

    def full(self) -> bool:
        return len(self.batch) >= CHUNK_ROWS or self.batch_chars >= CHUNK_CHARS

    def flush(self) -> None:
        batch, self.batch, self.batch_chars = self.batch, [], 0
        if not batch:
            return
        refused: dict[int, str] = {}
        measured = self.formatter.measure(batch, self.max_seq_len, on_error=refused.__setitem__)
        limit = self.max_seq_len
        for i, (example, (length, trained)) in enumerate(zip(batch, measured)):
            if i in refused:
                self.findings.add(Finding(example.line, "error", f"the chat template refuses this row: {refused[i]}",
                                          "reshape the conversation (e.g. alternate user/assistant), or pick "
                                          "--template chatml", "template_error", example.source))
                continue
            self._keep(example, _example_chars(example))
            self.lengths.append(length)
            self.trained_total += trained
            self.trainable += trained > 0
            if length > limit:
                clipped = length > limit and _example_chars(example) > 65536 and length >= 4 * limit
                size = f"more than {length:,} tokens" if clipped else f"{length} tokens"
                self.findings.add(Finding(example.line, "warning",
                                          f"{size}, over the max length {limit}: the last "
                                          f"{'' if not clipped else 'more than '}{length - limit} tokens "
                                          "(the end of the answer) are cut off",
                                          "shorten the row, or raise --max-seq-len", "truncated", example.source))
            if trained == 0:
                self.findings.add(Finding(example.line, "warning", "no token of this row is trained (every label "
                                          "is masked): the prompt alone fills the max length; training skips it",
                                          "shorten the prompt, or raise --max-seq-len", "no_trained_tokens",
                                          example.source))

    def _keep(self, example, chars: int) -> None:
        self.kept += 1
        if self.examples_complete and self.kept_chars + chars <= KEEP_CHARS:
            self.examples.append(example)
            self.kept_chars += chars
        else:
            self.examples_complete = False


def _example_chars(example) -> int:
    if example.messages is None:
        return len(example.text or "")
    return sum(len(m["content"]) for m in example.messages)


def _chars(value) -> int:
    """About how many characters a raw row holds (strings at any depth; rows are at most MAX_DEPTH deep)."""
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            total += 8
    return total
