"""Renderings of a dataset validation: rows as the model sees them (trained tokens
highlighted), findings grouped by kind, and the token-length histogram with the
truncation cut marked. Plain functions from core records to Rich text; no I/O.
"""

from __future__ import annotations

from collections import OrderedDict

from rich.text import Text

from lora_tui.ui.widgets.format import bar

TRAINED_STYLE = "bold black on green"
PROMPT_STYLE = "dim"
MAX_PREVIEW_CHARS = 1500


def preview_text(rows, unit: str = "line") -> Text:
    """Each PreviewRow: its line number (`unit` "row" for a hub dataset), then its text in trained / prompt styles."""
    text = Text()
    text.append("Highlighted: the tokens the adapter learns from; dim: the prompt (masked).\n", style="italic")
    for row in rows:
        text.append(f"── {unit} {row.line} ", style="bold cyan")
        text.append("─" * 20 + "\n", style="cyan")
        shown = 0
        for piece, trained in row.segments:
            if shown >= MAX_PREVIEW_CHARS:
                text.append(" …(more)", style="italic")
                break
            piece = piece[:MAX_PREVIEW_CHARS - shown]
            shown += len(piece)
            text.append(piece, style=TRAINED_STYLE if trained else PROMPT_STYLE)
        text.append("\n")
    if not rows:
        text.append("No valid row to show.", style="yellow")
    return text


REJECTED_STYLE = "bold white on red"
ANSWER_STYLES = {"chosen": TRAINED_STYLE, "desirable": TRAINED_STYLE, "rejected": REJECTED_STYLE,
                 "undesirable": REJECTED_STYLE}


def preference_preview_text(rows, unit: str = "line") -> Text:
    """dpo / kto rows (``PreferencePreviewRow``): the prompt once, dim (masked), then each answer after it as the
    trainer scores it (tokens decoded, the end-of-turn token included); what the max length cuts is said."""
    text = Text()
    text.append("Each answer follows its prompt as the trainer scores it. Dim: the prompt (masked); green: the chosen "
                "(desirable) answer; red: the rejected (undesirable) one.\n", style="italic")
    for row in rows:
        text.append(f"── {unit} {row.line} ", style="bold cyan")
        text.append("─" * 20 + "\n", style="cyan")
        text.append(row.prompt[-MAX_PREVIEW_CHARS:], style=PROMPT_STYLE)
        for name, answer, cut in row.answers:
            text.append(f"\n  {name}: ", style="bold")
            text.append(answer[:MAX_PREVIEW_CHARS], style=ANSWER_STYLES.get(name, TRAINED_STYLE))
            if cut:
                text.append(f" …({cut} tokens cut by the max length)", style="yellow")
        text.append("\n")
    if not rows:
        text.append("No valid row to show.", style="yellow")
    return text


def preference_lengths_text(stats) -> Text:
    """Token lengths of the prompts and of each answer, and the rows the max length cuts (dpo / kto)."""
    text = Text()
    if stats is None:
        return text
    for name, part in (("prompt", stats.prompt), (stats.names[0], stats.chosen), (stats.names[1], stats.rejected)):
        if part is not None:
            text.append(f"{name + ' tokens:':<19}", style="bold")
            text.append(f"min {part.min}  median {part.median}  p95 {part.p95}  max {part.max}\n")
    style = "yellow" if stats.truncated or stats.dropped else "green"
    text.append(f"{stats.truncated} row{'s' if stats.truncated != 1 else ''} with an answer cut at {stats.max_seq_len} "
                f"tokens (prompt + answer); {stats.dropped} skipped: the prompt alone fills it.\n", style=style)
    if stats.desirable is not None:
        text.append(f"Labels: {stats.desirable} desirable, {stats.undesirable} undesirable.\n")
    return text


def group_findings(findings) -> "OrderedDict[tuple[str, str], list]":
    """Findings grouped by (severity, code), errors first, in file order inside a group."""
    groups: OrderedDict[tuple[str, str], list] = OrderedDict()
    for f in sorted(findings, key=lambda f: (f.severity != "error",)):
        groups.setdefault((f.severity, f.code or f.message), []).append(f)
    return groups


def where(finding, unit: str = "line") -> str:
    if finding.line is None:
        return "file"
    return f"{finding.source + ' ' if finding.source else ''}{unit} {finding.line}"


def group_label(severity: str, items: list, unit: str = "line") -> Text:
    lines = [where(f, unit) for f in items]
    shown = ", ".join(lines[:8]) + (f", … (+{len(lines) - 8})" if len(lines) > 8 else "")
    mark, style = ("✗", "red") if severity == "error" else ("!", "yellow")
    label = Text(f"{mark} {len(items)} × ", style=f"bold {style}")
    label.append(_kind(items[0]), style="bold")
    label.append(f" — {shown}", style="dim")
    return label


def _kind(finding) -> str:
    code = (finding.code or "").replace("_", " ")
    return code or finding.message[:40]


def finding_label(finding, unit: str = "line") -> Text:
    text = Text(f"{where(finding, unit)}: ", style="bold")
    text.append(finding.message)
    if finding.fix:
        text.append(f"\n    fix: {finding.fix}", style="green")
    return text


def findings_text(findings, unit: str = "line", per_group: int = 200) -> Text:
    """Every finding, grouped (errors first), each with its fix on its own line: one text that wraps at any
    width, so nothing needs sideways scrolling at 80 columns."""
    text = Text()
    if not findings:
        text.append("No problems found.", style="green")
        return text
    for (severity, _), items in group_findings(findings).items():
        text.append_text(group_label(severity, items, unit))
        text.append("\n")
        for finding in items[:per_group]:
            text.append("  ")
            text.append_text(finding_label(finding, unit))
            text.append("\n")
        if len(items) > per_group:
            text.append(f"  … {len(items) - per_group} more (lora-tui validate lists them all)\n", style="dim")
    text.rstrip()
    return text


def histogram_text(stats, width: int = 40) -> Text:
    """One bar per length bin; bins past the max length are red, with the cut marked."""
    text = Text()
    if stats is None:
        text.append("No token statistics (no valid row, or no tokenizer).", style="yellow")
        return text
    text.append(f"Tokens per row: min {stats.min}  median {stats.median}  p95 {stats.p95}  max {stats.max}  "
                f"mean {stats.mean:.0f}\n", style="bold")
    if stats.over_max:
        rows = "1 row is" if stats.over_max == 1 else f"{stats.over_max} rows are"
        text.append(f"{rows} longer than the max length {stats.max_seq_len} and will be truncated "
                    f"(data.max_seq_len).\n", style="yellow")
    else:
        text.append(f"Every row fits in the max length {stats.max_seq_len}.\n", style="green")
    peak = max((c for _, _, c in stats.histogram), default=0) or 1
    digits = len(str(max((e for _, e, _ in stats.histogram), default=0)))
    cut_drawn = False
    for start, end, n in stats.histogram:
        if not cut_drawn and start > stats.max_seq_len:
            text.append(f"{'':>{2 * digits + 1}} ┄┄ max length {stats.max_seq_len}: cut here ┄┄\n", style="bold red")
            cut_drawn = True
        over = start > stats.max_seq_len
        text.append(f"{start:>{digits}}-{end - 1:<{digits}} ", style="dim")
        filled = bar(n / peak, width).rstrip("░")
        text.append(filled or ("▏" if n else ""), style="red" if over else "green")
        text.append(f" {n}\n")
    if not cut_drawn:
        text.append(f"{'':>{2 * digits + 1}} ┄┄ max length {stats.max_seq_len} (no row reaches it) ┄┄\n",
                    style="dim")
    return text
