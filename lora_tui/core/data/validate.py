"""``validate_dataset``: every problem in a dataset, with line numbers, before any GPU time is spent.

Reads (never writes) the file, normalises it, runs the hygiene checks and, with
a tokenizer, measures token lengths with the real chat template. Returns a
``ValidationReport``; printing is the caller's job (``lora_tui.commands.validate``
or the wizard).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .checks import hygiene_findings
from .formats import normalise_rows
from .load import sort_findings
from .readers import read_path
from .records import Finding, ValidationReport
from .stats import token_stats
from .template import ChatFormatter

Progress = Callable[[str, float], None]
CHUNK_ROWS = 8192  # rows tokenized per batch: big enough for the fast tokenizer, small enough for progress


def validate_dataset(path, *, tokenizer=None, max_seq_len: int = 1024, template: str = "auto",
                     train_on_prompt: bool = False, on_progress: Progress | None = None) -> ValidationReport:
    """Check `path` and report. Raises DataError only when the file cannot be read at all.

    Without a tokenizer the token statistics are skipped (token_stats is None).
    `on_progress(message, fraction)` is called between stages.
    """
    progress = on_progress or (lambda message, fraction: None)
    progress("Reading rows", 0.0)
    read = read_path(path, tokenizer=tokenizer, max_seq_len=max_seq_len)
    progress("Checking fields", 0.2)
    fmt, examples, findings = normalise_rows(read.rows)
    findings = read.findings + findings
    progress("Looking for duplicates and boilerplate", 0.35)
    specials = list(getattr(tokenizer, "all_special_tokens", []) or []) if tokenizer is not None else []
    findings += hygiene_findings(examples, specials)

    stats, trained_total, description = None, 0, ""
    if tokenizer is not None and examples:
        progress("Counting tokens", 0.5)
        formatter = ChatFormatter(tokenizer, template=template, train_on_prompt=train_on_prompt)
        description = formatter.description
        refused: dict[int, str] = {}
        measured: list[tuple[int, int]] = []
        for start in range(0, len(examples), CHUNK_ROWS):  # chunks, so a big file shows progress
            if start:
                progress(f"Counting tokens ({start:,} of {len(examples):,} rows)",
                         0.5 + 0.5 * start / len(examples))
            measured += formatter.measure(examples[start:start + CHUNK_ROWS], max_seq_len,
                                          on_error=lambda i, msg, s=start: refused.__setitem__(s + i, msg))
        kept, lengths = [], []
        for i, (example, (length, trained)) in enumerate(zip(examples, measured)):
            if i in refused:
                findings.append(Finding(example.line, "error", f"the chat template refuses this row: {refused[i]}",
                                        "reshape the conversation (e.g. alternate user/assistant), or pick "
                                        "--template chatml", "template_error", example.source))
                continue
            kept.append(example)
            lengths.append(length)
            trained_total += trained
            if length > max_seq_len:
                findings.append(Finding(example.line, "warning",
                                        f"{length} tokens, over the max length {max_seq_len}: the last "
                                        f"{length - max_seq_len} tokens (the end of the answer) are cut off",
                                        "shorten the row, or raise --max-seq-len", "truncated", example.source))
            if trained == 0:
                findings.append(Finding(example.line, "warning", "no token of this row is trained (every label "
                                        "is masked): the prompt alone fills the max length",
                                        "shorten the prompt, or raise --max-seq-len", "no_trained_tokens",
                                        example.source))
        examples = kept
        stats = token_stats(lengths, max_seq_len)
        if examples and trained_total == 0:
            findings.append(Finding(None, "error", "every label is masked: nothing would be trained",
                                    "check the answers are not empty and fit in --max-seq-len", "all_masked"))
    progress("Done", 1.0)
    return ValidationReport(
        path=str(Path(path)), format=fmt, container=read.container, rows=read.rows_total,
        valid_rows=len(examples), findings=sort_findings(findings), token_stats=stats,
        trained_tokens=trained_total, template=description, examples=examples,
    )
