"""The plain records the dataset layer hands out: rows, findings, reports.

Only dataclasses and one exception here; no I/O, no heavy imports, no printing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


class DataError(Exception):
    """The dataset cannot be read at all (missing, empty, unsupported, corrupt).

    The message names the file and says how to fix it; it is meant to be shown
    to the user as is.
    """


@dataclass
class Example:
    """One normalised row."""

    line: int  # 1-based line (row number for Parquet/hf-disk/hub, file line for CSV, chunk index for .txt)
    messages: list[dict] | None  # [{"role": "system"|"user"|"assistant", "content": str}, ...]
    text: str | None = None  # plain-text rows: everything is trained
    source: str | None = None  # file name, for folders of .txt files

    def where(self) -> str:
        """'line 12' or 'notes.txt chunk 3', for messages."""
        if self.source:
            return f"{self.source} chunk {self.line}"
        return f"line {self.line}"


ROW_NUMBERED = ("json",)  # containers whose numbers count rows: a JSON array is often a single line


def row_unit(container: str, source: dict | None = None) -> str:
    """What a row's number counts, for messages: "row" (a JSON array's element, a hub dataset's row) or "line"."""
    return "row" if source or container in ROW_NUMBERED else "line"


@dataclass
class Finding:
    """One problem found in a dataset, tied to a line where it has one."""

    line: int | None
    severity: str  # "error" (row skipped) | "warning" (row kept)
    message: str
    fix: str | None = None
    code: str = ""  # short machine code, e.g. "malformed_json"
    source: str | None = None  # file name, for folders

    def to_dict(self) -> dict:
        out = asdict(self)
        if out["source"] is None:
            del out["source"]
        return out


@dataclass
class LoadedDataset:
    path: str
    format: str  # alpaca | messages | sharegpt | prompt_completion | instruction_response | text | unknown
    container: str  # jsonl | json | csv | parquet | txt-folder | txt | hf-disk | hub | hub-snapshot
    rows: int  # rows read (valid or not)
    examples: list[Example]  # valid examples only
    findings: list[Finding]
    source: dict | None = None  # hub id or snapshot folder: {"dataset", "subset", "split", "revision"}


@dataclass
class TokenStats:
    """Token lengths of the valid rows, rendered with the real template."""

    count: int
    min: int
    median: int
    p95: int
    max: int
    mean: float
    over_max: int  # rows longer than max_seq_len (they are truncated)
    max_seq_len: int
    histogram: list[tuple[int, int, int]] = field(default_factory=list)  # (bin_start, bin_end, count), end exclusive


@dataclass
class ValidationReport:
    path: str
    format: str
    container: str
    rows: int
    valid_rows: int
    findings: list[Finding]
    token_stats: TokenStats | None
    trained_tokens: int = 0  # label tokens != -100 over the valid rows; 0 means every label is masked
    template: str = ""  # which prompt format measured the tokens, in words
    # The valid rows, so a caller can preview them without reading the file twice. For a very big file only
    # the first ones (validate.KEEP_CHARS of text): then examples_complete is False.
    examples: list[Example] = field(default_factory=list, repr=False)
    trainable_rows: int | None = None  # valid rows with at least one trained token (None: no tokenizer)
    examples_complete: bool = True
    source: dict | None = None  # hub id or snapshot folder: {"dataset", "subset", "split", "revision"}
    # dpo / kto data (data/preference_tokens.PreferenceStats): prompt and answer lengths, rows cut, KTO labels
    preference: object = None

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def to_dict(self) -> dict:
        """The `lora-tui validate --json` object."""
        stats = None
        if self.token_stats is not None:
            stats = asdict(self.token_stats)
            stats["histogram"] = [list(b) for b in self.token_stats.histogram]
        return {
            "path": self.path,
            "format": self.format,
            "container": self.container,
            "rows": self.rows,
            "valid_rows": self.valid_rows,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "findings": [f.to_dict() for f in self.findings],
            "token_stats": stats,
            "trained_tokens": self.trained_tokens,
            "trainable_rows": self.trainable_rows,
            "template": self.template,
            **({"dataset": self.source} if self.source else {}),
            **({"preference": self.preference.to_dict()} if self.preference is not None else {}),
        }
