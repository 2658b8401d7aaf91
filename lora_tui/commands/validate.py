"""`lora-tui validate PATH`: print what is wrong with a dataset, headless.

Loads the tokenizer (default: the embedded model), calls
``lora_tui.core.data.validate_dataset`` and prints a report or one JSON object.
Exit status: 0 with at least one trainable row, 1 with none (no valid row, or
every label masked), 2 when the file (or the model's tokenizer) cannot be read
(a FIFO, socket or device is refused without being opened). Never writes to the dataset.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from pathlib import Path

SHOWN_PER_GROUP = 5  # findings printed in full per kind; the rest are summarised by line number
LINES_LISTED = 20
BAR_WIDTH = 40


def run(args) -> int:
    from lora_tui.core.data import DataError, validate_dataset

    if args.max_seq_len < 16:
        print(f"--max-seq-len {args.max_seq_len} is too small. Fix: use at least 16 (typical: 512-4096).",
              file=sys.stderr)
        return 2
    if not Path(args.path).expanduser().exists():  # 'sample_data/...' works from any folder and any install
        from lora_tui.core.paths import resolve_data_path

        args.path = str(resolve_data_path(args.path))
    from lora_tui.core.data.bounds import check_regular
    from lora_tui.core.data.hub_data import parse_hub_id

    try:  # answer at once, before the tokenizer loads (a FIFO or /dev/zero is refused, never opened)
        if parse_hub_id(args.path) is None:  # org/name[:split] not found here: a hub dataset id
            check_regular(args.path)
    except DataError as exc:
        return _unreadable(args, exc)
    tokenizer = _tokenizer(args.model)
    if tokenizer is None:
        return 2
    show = sys.stderr.isatty() and not args.json  # progress for big files, never into pipes

    def progress(message: str, fraction: float) -> None:
        if show:
            print(f"\r  {message:<48}", end="" if fraction < 1 else "\r" + " " * 52 + "\r", file=sys.stderr,
                  flush=True)

    try:
        method = getattr(args, "method", "auto") or "auto"
        if method == "auto":  # preference rows are checked as dpo / kto reads them
            from lora_tui.core.data.preference_load import method_of_data

            method = method_of_data(args.path, getattr(args, "subset", None))
        report = validate_dataset(args.path, tokenizer=tokenizer, max_seq_len=args.max_seq_len,
                                  template=args.template, train_on_prompt=args.train_on_prompt, on_progress=progress,
                                  subset=getattr(args, "subset", None), method=method)
    except DataError as exc:
        return _unreadable(args, exc)
    except OSError as exc:  # a read that fails part-way (EIO from a failing disk): one line, not a traceback
        return _unreadable(args, DataError(f"{args.path}: cannot be read ({exc.strerror or exc}). "
                                           "Fix: check the file and its disk, or copy the data elsewhere."))
    if args.json:
        _emit(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        _emit(format_report(report, model_name=args.model or "embedded SmolLM2-135M-Instruct"))
    return 0 if _trainable(report) > 0 else 1


def _trainable(report) -> int:
    """Rows training will use: valid, with at least one trained token (when the tokenizer measured them)."""
    if any(f.code == "all_masked" for f in report.findings):
        return 0
    return report.valid_rows if report.trainable_rows is None else report.trainable_rows


def _emit(text: str) -> None:
    """Print, staying quiet when the reader went away (`lora-tui validate big.jsonl | head`)."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit


def _unreadable(args, exc: Exception) -> int:
    if args.json:
        print(json.dumps({"path": args.path, "error": str(exc)}))
    else:
        print(f"Cannot read the dataset: {exc}", file=sys.stderr)
    return 2


def _tokenizer(model: str | None):
    """The tokenizer measuring token lengths, or None after printing a one-line reason."""
    from lora_tui.core.model.models import ModelSourceError, load_tokenizer

    def progress(message: str, fraction: float) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)

    try:
        if model is None or model in ("embedded", "default"):
            from lora_tui.core.model.embedded import ensure_embedded_model, is_converted

            if not is_converted():
                print("Preparing the embedded model (once per machine):", file=sys.stderr)
            ensure_embedded_model(progress)
            return load_tokenizer("embedded")
        return load_tokenizer(model)
    except ModelSourceError as exc:
        print(f"Cannot load the tokenizer: {exc}", file=sys.stderr)
    except Exception as exc:  # a broken model folder: one line, not a traceback
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"Cannot load the tokenizer of {model!r}: {first}. Fix: pass --model with a model directory "
              "that has tokenizer files, or leave --model out to use the embedded model.", file=sys.stderr)
    return None


def format_report(report, model_name: str = "") -> str:
    """The human-readable report (also usable by other front-ends)."""
    from lora_tui.core.data.records import row_unit

    out = [
        f"Dataset   {report.path}",
        f"Format    {report.format} ({report.container})",
        f"Rows      {report.rows} read, {report.valid_rows} valid, "
        f"{len(report.errors)} errors, {len(report.warnings)} warnings",
    ]
    source = report.source or {}
    if source:  # read through `datasets`: which split of which revision
        revision = source.get("revision") or "revision not known"
        revision = revision if revision == "local snapshot" else f"revision {revision}"
        out[0] += f" ({', '.join(f'{k} {source[k]}' for k in ('subset', 'split') if source.get(k))}; {revision})"
    unit = row_unit(report.container, report.source)  # a hub dataset's rows, a JSON array's elements: "row"
    stats = report.token_stats
    if stats is not None:
        out.append(f"Template  {report.template}" + (f", tokenizer of {model_name}" if model_name else ""))
        out.append(f"Tokens    min {stats.min}  median {stats.median}  p95 {stats.p95}  max {stats.max}  "
                   f"mean {stats.mean}")
        cut = f"{stats.over_max} row{'s' if stats.over_max != 1 else ''} over the max length {stats.max_seq_len} " \
              f"(truncated)"
        out.append(f"          {cut}; {report.trained_tokens:,} trained tokens")
        out.extend(preference_lines(report.preference))
        out.append("")
        out.append("Token length histogram (tokens per row):")
        out.extend(_histogram(stats))
    # Findings about a whole file (line None: an empty .txt skipped, the split chosen) are notes, not row warnings.
    for severity, title, per_row in (("error", "Errors (rows skipped)", None), ("warning", "Warnings (rows kept)", True),
                                     ("warning", "Notes on files", False)):
        items = [f for f in report.findings if f.severity == severity
                 and (per_row is None or (f.line is not None) == per_row)]
        if items:
            out.append("")
            out.append(f"{title}: {len(items)}")
            out.extend(_grouped(items, unit))
    if not report.findings:
        out += ["", "No problems found."]
    out.append("")
    trainable = _trainable(report)
    if report.valid_rows == 0:
        out.append("Result: no valid rows; nothing can be trained from this file.")
    elif trainable == 0:
        out.append(f"Result: {report.valid_rows} valid rows, but none has a trained token; nothing can be trained "
                   "from this file.")
    else:
        out.append(f"Result: {trainable} of {report.rows} rows can be trained.")
    return "\n".join(out)


def preference_lines(stats) -> list[str]:
    """dpo / kto data: token lengths of the prompts and of each answer, the rows the max length cuts."""
    if stats is None:
        return []
    out = ["Method    " + ("kto: prompt + completion, labelled" if stats.desirable is not None
                         else "dpo: prompt + chosen / rejected answers (tokens as the trainer scores them)")]
    for name, part in (("prompt", stats.prompt), (stats.names[0], stats.chosen), (stats.names[1], stats.rejected)):
        if part is not None:
            out.append(f"  {name:<10}min {part.min}  median {part.median}  p95 {part.p95}  max {part.max}")
    out.append(f"  {stats.truncated} row{'s' if stats.truncated != 1 else ''} with an answer cut at {stats.max_seq_len} "
               f"tokens; {stats.dropped} skipped (the prompt alone fills it)")
    if stats.desirable is not None:
        out.append(f"  labels    {stats.desirable} desirable, {stats.undesirable} undesirable")
    return out


def _histogram(stats) -> list[str]:
    peak = max((c for _, _, c in stats.histogram), default=1) or 1
    width = len(str(stats.histogram[-1][1] - 1)) if stats.histogram else 1
    lines, marked = [], False
    for start, end, count in stats.histogram:
        if start > stats.max_seq_len and not marked:
            lines.append(f"  {'-' * (2 * width + 3)}+ cut at {stats.max_seq_len} tokens: rows below are truncated")
            marked = True
        bar = "█" * max(1 if count else 0, round(count / peak * BAR_WIDTH))
        lines.append(f"  {start:>{width}}-{end - 1:<{width}} | {bar} {count}")
    return lines


def _where(f, unit: str = "line") -> str:
    if f.line is None:
        return f.source or "file"
    return f"{f.source} chunk {f.line}" if f.source else f"{unit} {f.line}"


def _grouped(findings, unit: str = "line") -> list[str]:
    groups: dict[str, list] = defaultdict(list)
    for f in findings:
        groups[f.code or f.message].append(f)
    lines = []
    for code, items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"  {code} ({len(items)}):")
        last_fix = None
        for f in items[:SHOWN_PER_GROUP]:
            lines.append(f"    {_where(f, unit)}: {f.message}")
            if f.fix and f.fix != last_fix:
                lines.append(f"      fix: {f.fix}")
                last_fix = f.fix
        rest = items[SHOWN_PER_GROUP:]
        if rest:
            listed = ", ".join(str(f.line) for f in rest[:LINES_LISTED] if f.line is not None)
            more = f" and {len(rest) - LINES_LISTED} more" if len(rest) > LINES_LISTED else ""
            lines.append(f"    ... {len(rest)} more ({unit}s {listed}{more})")
    return lines
