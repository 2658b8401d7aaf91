"""Raw rows as read from a file, and the helpers every reader shares.

A raw row is a plain dict tied to its line; what it means is decided in
``formats``. Helpers here turn decoding and JSON faults into findings with a
line and a fix. No I/O beyond reading bytes, no printing.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .records import DataError, Finding


@dataclass
class RawRow:
    line: int
    value: Any  # a dict for structured rows
    source: str | None = None


@dataclass
class ReadResult:
    container: str
    rows: list[RawRow] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    rows_total: int = 0  # rows seen, readable or not (grows while `stream` is read)
    # Streaming readers leave rows and findings here (RawRow | Finding, in file order) instead of in the
    # lists: a caller iterates ``items()`` and holds one row at a time. ``drain()`` fills the lists.
    stream: Iterator | None = None

    def items(self) -> Iterator:
        """Every finding and row, each once: first those already in the lists, then the stream's."""
        if self.stream is None:
            yield from self.findings
            yield from self.rows
            return
        yield from self.findings
        yield from self.rows
        stream, self.stream = self.stream, None
        yield from stream

    def drain(self) -> "ReadResult":
        if self.stream is not None:
            stream, self.stream = self.stream, None
            for item in stream:
                (self.rows if isinstance(item, RawRow) else self.findings).append(item)
        return self


ARROW_BATCH_ROWS = 1024  # rows per Arrow batch: memory-mapped tables are read a batch at a time, never whole


def arrow_rows(result: ReadResult, batches) -> Iterator[RawRow]:
    """The rows of an iterable of Arrow record batches (Parquet, a ``datasets`` table), numbered from 1;
    counts ``result.rows_total`` as it goes. One batch is in memory at a time."""
    number = 0
    for batch in batches:
        for record in batch.to_pylist():
            number += 1
            result.rows_total += 1
            yield RawRow(number, record)


def training_split(loaded, label: str, empty_fix: str, choose_fix: str):
    """(Dataset, split name or None, findings) for a ``datasets`` Dataset or DatasetDict: a DatasetDict
    gives its "train" split (else its first), with a warning naming the others when there are several
    (``{other}`` in ``choose_fix`` becomes the last split's name)."""
    import datasets

    if isinstance(loaded, datasets.Dataset):
        return loaded, None, []
    names = list(loaded.keys())
    if not names:
        raise DataError(f"{label}: {empty_fix}")
    split = "train" if "train" in names else names[0]
    notes = []
    if len(names) > 1:
        notes.append(Finding(None, "warning", f"using split '{split}' of {', '.join(names)}", choose_fix.replace("{other}", names[-1]), "split_chosen"))
    return loaded[split], split, notes

def read_bytes(p: Path) -> bytes:
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise DataError(f"{p}: cannot be read ({exc.strerror or exc}). Fix: check the file's permissions.") from None
    if not raw.strip(b" \t\r\n\xef\xbb\xbf"):
        raise DataError(f"{p}: the file is empty. Fix: add at least one example row.")
    return raw


def decode_whole(raw: bytes) -> str | None:
    """The file as text when it decodes cleanly (BOM dropped), else None."""
    if raw.startswith(codecs.BOM_UTF16_LE) or raw.startswith(codecs.BOM_UTF16_BE):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            return None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def undecodable(raw: bytes, pos: int, line: int | None = None, source: str | None = None) -> Finding:
    """Finding for the bad byte at `pos` of `raw` (a whole file, or one line when `line` is given)."""
    line_start = 0 if line is not None else raw.rfind(b"\n", 0, pos) + 1
    if line is None:
        line = raw.count(b"\n", 0, pos) + 1
    bad = raw[pos:pos + 4]
    if b"\x00" in raw[max(0, pos - 64):pos + 64]:  # NUL bytes beside text: UTF-16 (or binary), not Latin-1
        fix = "re-save the file as UTF-8 (if it is UTF-16: `iconv -f utf-16le -t utf-8 IN > OUT`)"
    else:
        fix = "re-save the file as UTF-8 (if it is Latin-1: `iconv -f latin1 -t utf-8 IN > OUT`)"
    return Finding(line, "error", f"undecodable bytes {bad!r} at column {pos - line_start + 1} (not valid UTF-8)",
                   fix, "undecodable_bytes", source)


def malformed(line: int, exc: json.JSONDecodeError, what: str = "line") -> Finding:
    hint = "fix the JSON on this line (each line must be one complete JSON object)"
    if what == "element":
        hint = "fix the JSON of this array element"
    if "Unterminated string" in exc.msg or "Expecting" in exc.msg and exc.pos >= len(exc.doc) - 1:
        hint += "; the line may have been cut short"
    where = f"file line {exc.lineno}, column {exc.colno}" if what == "element" else f"column {exc.colno}"
    return Finding(line, "error", f"malformed JSON: {exc.msg} ({where})", hint, "malformed_json")


def not_an_object(line: int, value: Any) -> Finding:
    kind = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true/false"}.get(
        type(value), "null")
    return Finding(line, "error", f"row is {kind}, not a JSON object",
                   'write each row as an object, e.g. {"instruction": ..., "output": ...}', "wrong_type")


def skip_ws(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in " \t\r\n":
        i += 1
    return i
