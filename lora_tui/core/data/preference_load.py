"""Read preference data for dpo / kto: ``load_preferences`` (the trainer, ``bench`` and the export check)
and ``validate_preferences`` (``lora-tui validate`` and the wizard's Dataset step, through
``validate_dataset`` when the method is dpo or kto).

Both read with the readers every format uses (``hub_data.open_dataset``: files, folders, hub ids), normalise
with ``preference.PreferenceNormaliser`` and, with a tokenizer, measure with ``preference_tokens``. The
report is the SFT report (``ValidationReport``) with the preference statistics added, so every reader of a
report (findings, refusal, longest row for the memory plan) works unchanged. No printing, never writes.
"""

from __future__ import annotations

from pathlib import Path

from .hub_data import open_dataset
from .load import sort_findings
from .preference import PreferenceNormaliser, label_findings
from .preference_tokens import preference_stats, tokenize_preferences, trained_tokens
from .records import Finding, LoadedDataset, ValidationReport
from .stats import token_stats
from .template import ChatFormatter

PREVIEW_KEEP = 200  # examples kept in a report for the preview


def load_preferences(path, method: str, *, subset: str | None = None, max_seq_len: int = 1024) -> LoadedDataset:
    """Read ``path`` and normalise its preference rows for ``method`` (dpo | kto). DataError when it cannot
    be read at all; row problems are findings (error: the row is skipped)."""
    read = open_dataset(path, subset=subset, max_seq_len=max_seq_len).drain()
    normaliser = PreferenceNormaliser(read.rows, method)
    examples, findings = [], list(read.findings) + list(normaliser.findings)
    for row in read.rows:
        got, out = normaliser.row(row)
        examples.extend(got)
        findings.extend(out)
    findings.extend(label_findings(examples, method))
    return LoadedDataset(path=str(Path(path)), format=normaliser.format, container=read.container,
                         rows=read.rows_total, examples=examples, findings=sort_findings(findings),
                         source=getattr(read, "source", None))


def validate_preferences(path, method: str, *, tokenizer=None, max_seq_len: int = 1024, template: str = "auto",
                         on_progress=None, subset: str | None = None) -> ValidationReport:
    """Every problem of a preference file, with lines, and (with a tokenizer) the token lengths of prompts
    and answers as the trainer cuts them. ``token_stats`` holds prompt + longest answer per row."""
    progress = on_progress or (lambda message, fraction: None)
    progress("Reading preference rows", 0.0)
    loaded = load_preferences(path, method, subset=subset, max_seq_len=max_seq_len)
    findings = list(loaded.findings)
    rows, stats, template_name, trained = None, None, "", 0
    if tokenizer is not None and loaded.examples:
        progress(f"Counting tokens ({len(loaded.examples):,} rows)", 0.4)
        formatter = ChatFormatter(tokenizer, template=template)
        template_name = formatter.description
        rows, problems = tokenize_preferences(formatter, loaded.examples, max_seq_len)
        # kto splits a pair in two rows with one prompt: a prompt problem is said once per line
        problems = list({(f.source, f.line, f.code, f.message): f for f in problems}.values())
        findings.extend(problems)
        dropped = sum(1 for f in problems if f.severity == "error")
        stats = preference_stats(rows, max_seq_len, dropped)
        trained = sum(trained_tokens(r, max_seq_len) for r in rows)
        if not rows:
            findings.append(Finding(None, "error", "no row has an answer token left to train",
                                    "shorten the prompts, or raise data.max_seq_len", "all_masked"))
    if loaded.rows == 0 and not findings:
        findings.append(Finding(None, "error", "the file holds no rows", "add at least one preference row", "no_rows"))
    progress("Done", 1.0)
    # Rows of the file (a pair that kto splits in two is one row); kept: the examples left after the length checks.
    lines = {(r.source, r.line) for r in (rows if rows is not None else loaded.examples)}
    valid = len(lines)
    kept = [e for e in loaded.examples if (e.source, e.line) in lines]
    return ValidationReport(
        path=str(Path(path)), format=loaded.format, container=loaded.container, rows=loaded.rows, valid_rows=valid,
        findings=sort_findings(findings),
        token_stats=token_stats([r.length() for r in rows], max_seq_len) if rows else None,
        trained_tokens=trained, template=template_name, examples=kept[:PREVIEW_KEEP],
        trainable_rows=valid if rows is not None else None, examples_complete=len(kept) <= PREVIEW_KEEP,
        source=loaded.source, preference=stats)


def method_of_data(path, subset: str | None = None) -> str:
    """The training.method a dataset's rows are for, from its first rows: dpo (pairs), kto (prompt /
    completion / label rows), else sft. DataError when it cannot be read."""
    from collections import Counter
    from itertools import islice

    from .preference import detect_preference_format
    from .rows import RawRow

    read = open_dataset(path, subset=subset)
    rows = [item for item in islice(read.items(), 1000) if isinstance(item, RawRow)]
    found = Counter(detect_preference_format(r.value) for r in rows)
    found.pop(None, None)
    if not found or sum(found.values()) * 2 < len(rows):
        return "sft"
    return "kto" if found.most_common(1)[0][0] == "unpaired_preference" else "dpo"


def method_for(current: str, detected: str) -> str:
    """The method to train the data with: the rows decide between sft and preference training; between dpo and
    kto the user's choice holds where the rows allow it (pairs train with either; labelled rows only with kto)."""
    if detected == "sft":
        return "sft"
    if detected == "kto":
        return "kto"
    return current if current in ("dpo", "kto") else "dpo"


def preference_preview(examples: list, tokenizer, template: str, max_seq_len: int, rows: int) -> list[tuple]:
    """(line, prompt as trained, [(answer name, answer as trained, tokens cut)]) for the first ``rows`` examples:
    the ids the trainer scores, decoded (``preference_tokens.preview_pieces``)."""
    from .preference_tokens import preview_pieces

    formatter = ChatFormatter(tokenizer, template=template)
    shown, _ = tokenize_preferences(formatter, examples[:rows], max_seq_len)
    by_line = {(e.source, e.line, e.label): e for e in examples[:rows]}
    out = []
    for row in shown:
        example = by_line[(row.source, row.line, row.label)]
        prompt, answers = preview_pieces(tokenizer, row, [name for name, _ in example.answers()], max_seq_len)
        out.append((row.line, prompt, answers))
    return out
