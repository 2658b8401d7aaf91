"""Read a dataset file or folder into raw rows, each tied to its line number.

Containers: JSON Lines, a JSON array (or an object wrapping one), CSV/TSV,
Parquet, a folder of .txt files (chunked to the max length), and a folder
written by `datasets`' ``save_to_disk``. Rows come back as plain dicts; what
they mean (alpaca, messages, ...) is decided in ``formats``.

This module picks the reader by extension and content, and reads CSV and
Parquet itself; JSON is in ``json_files``, folders in ``folders``. Faults that
stop a single row (undecodable bytes, malformed JSON) become
findings with the line number; only a file that cannot be read at all raises
``DataError``. This module never writes to the user's files and never prints.
"""

from __future__ import annotations

import codecs
import csv
import io
from pathlib import Path

from .folders import read_hf_disk, read_txt_files
from .json_files import read_json, read_jsonl
from .records import DataError, Finding
from .rows import RawRow, ReadResult, decode_whole, read_bytes, rows_from_records, undecodable

__all__ = ["RawRow", "ReadResult", "read_path"]

JSONL_SUFFIXES = {".jsonl", ".ndjson"}
CSV_SUFFIXES = {".csv", ".tsv"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
SUPPORTED = ".jsonl, .json, .csv, .tsv, .parquet, .txt, a folder of .txt files, or a save_to_disk folder"


def read_path(path: str | Path, *, tokenizer=None, max_seq_len: int = 1024) -> ReadResult:
    """Read any supported container. Raises DataError when nothing can be read."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{p}: no such file or folder. Fix: check the path (supported: {SUPPORTED}).")
    if p.is_dir():
        if (p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists() or (p / "state.json").exists():
            return read_hf_disk(p)
        if any(p.rglob("*.txt")):
            return read_txt_files(p, sorted(p.rglob("*.txt")), tokenizer, max_seq_len, container="txt-folder")
        raise DataError(f"{p}: this folder holds no .txt files and is not a `datasets` save_to_disk folder. "
                        f"Fix: point at a dataset file ({SUPPORTED}).")
    suffix = p.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return read_parquet(p)
    if suffix == ".txt":
        return read_txt_files(p.parent, [p], tokenizer, max_seq_len, container="txt")
    raw = read_bytes(p)
    if suffix in CSV_SUFFIXES:
        return read_csv(p, raw, delimiter="\t" if suffix == ".tsv" else ",")
    first = raw.lstrip()[:1]
    if first == b"[" or (suffix == ".json" and first == b"{"):
        return read_json(p, raw)
    if suffix in JSONL_SUFFIXES or first == b"{":
        return read_jsonl(p, raw)
    raise DataError(f"{p}: unsupported file type {suffix or '(no extension)'}. Fix: use {SUPPORTED}.")


def read_csv(p: Path, raw: bytes, delimiter: str = ",") -> ReadResult:
    """CSV/TSV with a header row; a row's line is the file line it starts on (the header is line 1)."""
    result = ReadResult("csv")
    text = decode_whole(raw)
    bad_lines: set[int] = set()
    if text is None:
        raw = raw[3:] if raw.startswith(codecs.BOM_UTF8) else raw
        parts = []
        for number, chunk in enumerate(raw.split(b"\n"), 1):
            try:
                parts.append(chunk.decode("utf-8"))
            except UnicodeDecodeError as exc:
                result.findings.append(undecodable(chunk, exc.start, number))
                bad_lines.add(number)
                parts.append(chunk.decode("utf-8", errors="replace"))
        text = "\n".join(parts)
    csv.field_size_limit(2**31 - 1)  # long answers exceed the default 128 KiB cell limit
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as exc:
        raise DataError(f"{p}: no CSV header row could be read ({exc}). Fix: the first line must name the columns.") from None
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        raise DataError(f"{p}: the header repeats a column name ({', '.join(header)}). Fix: give each column a unique name.")
    previous_end = reader.line_num
    while True:
        start = previous_end + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.rows_total += 1
            result.findings.append(Finding(start, "error", f"CSV row cannot be parsed: {exc}",
                                           "check the quoting on this row", "malformed_csv"))
            previous_end = reader.line_num
            continue
        end, previous_end = reader.line_num, reader.line_num
        if not any(f.strip() for f in fields):
            continue
        result.rows_total += 1
        if bad_lines.intersection(range(start, end + 1)):
            continue  # already reported as undecodable
        if len(fields) != len(header):
            result.findings.append(Finding(
                start, "error", f"row has {len(fields)} fields but the header has {len(header)} columns",
                "quote fields that contain the delimiter, or add the missing fields", "schema_mismatch"))
            continue
        result.rows.append(RawRow(start, dict(zip(header, fields))))
    return result


def read_parquet(p: Path) -> ReadResult:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(p)
    except Exception as exc:  # pyarrow raises several types for a corrupt or non-Parquet file
        raise DataError(f"{p}: cannot be read as Parquet ({exc}). Fix: re-export the file, or use .jsonl.") from None
    return rows_from_records("parquet", table.to_pylist())
