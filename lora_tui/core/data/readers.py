"""Read a dataset file or folder into raw rows, each tied to its line number.

Containers: JSON Lines, a JSON array (or an object wrapping one), CSV/TSV,
Parquet, a folder of .txt files (chunked to the max length), and a folder
written by `datasets`' ``save_to_disk``. Rows come back as plain dicts; what
they mean (alpaca, messages, ...) is decided in ``formats``.

This module picks the reader by extension and content, and reads CSV and
Parquet itself; JSON is in ``json_files``, folders in ``folders``. Faults that
stop a single row (undecodable bytes, malformed JSON, a line over the limit,
hostile text) become findings with the line number; only a file that cannot be
read at all raises ``DataError`` (FIFOs, sockets and devices are refused before
they are opened). ``open_path`` streams rows within the limits of ``bounds``.
This module never writes to the user's files and never prints.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from .bounds import MAX_JSON_ARRAY_BYTES, MAX_LINE_BYTES, capped_lines, check_regular, open_regular, sniff_encoding, too_long
from .folders import read_hf_disk, read_txt_files, txt_files
from .json_files import iter_jsonl, nul_block, read_json
from .records import DataError, Finding
from .rows import ARROW_BATCH_ROWS, RawRow, ReadResult, arrow_rows, undecodable

__all__ = ["RawRow", "ReadResult", "open_path", "read_path"]

JSONL_SUFFIXES = {".jsonl", ".ndjson"}
CSV_SUFFIXES = {".csv", ".tsv"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
SUPPORTED = ".jsonl, .json, .csv, .tsv, .parquet, .txt, a folder of .txt files, or a save_to_disk folder"


def read_path(path: str | Path, *, tokenizer=None, max_seq_len: int = 1024) -> ReadResult:
    """Read any supported container into lists. Raises DataError when nothing can be read."""
    return open_path(path, tokenizer=tokenizer, max_seq_len=max_seq_len).drain()


def open_path(path: str | Path, *, tokenizer=None, max_seq_len: int = 1024) -> ReadResult:
    """Like ``read_path``, but rows and findings stream from ``items()``: memory stays bounded.

    Faults of the whole file (missing, empty, FIFO, unsupported) raise DataError here, before any row.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{p}: no such file or folder. Fix: check the path (supported: {SUPPORTED}).")
    check_regular(p)
    if p.is_dir():
        if (p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists() or (p / "state.json").exists():
            return read_hf_disk(p)
        files = txt_files(p)  # bounded: the root folder or a whole disk is refused, not walked
        if files:
            return read_txt_files(p, files, tokenizer, max_seq_len, container="txt-folder")
        raise DataError(f"{p}: this folder holds no .txt files and is not a `datasets` save_to_disk folder. "
                        f"Fix: point at a dataset file ({SUPPORTED}).")
    suffix = p.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return read_parquet(p)
    if suffix == ".txt":
        return read_txt_files(p.parent, [p], tokenizer, max_seq_len, container="txt")
    fh = open_regular(p)
    try:
        return _open_text_file(p, fh, suffix)
    except BaseException:
        fh.close()
        raise


def _open_text_file(p: Path, fh, suffix: str) -> ReadResult:
    head = fh.read(65536)
    size = os.fstat(fh.fileno()).st_size
    encoding, bom = sniff_encoding(head)
    text_head = head[bom:].decode(encoding, errors="ignore").lstrip(" \t\r\n\ufeff\x00")
    if not text_head and size <= len(head):
        raise DataError(f"{p}: the file is empty. Fix: add at least one example row.")
    notes = []
    if encoding != "utf-8" and not bom:
        notes.append(Finding(None, "warning", f"the file is {encoding.upper()} without a byte-order mark; read as such",
                             f"re-save it as UTF-8 (`iconv -f {encoding} -t utf-8 IN > OUT`)", "utf16_no_bom"))
    first = text_head[:1]
    if suffix in CSV_SUFFIXES:
        result = read_csv_stream(p, fh, encoding, bom, delimiter="\t" if suffix == ".tsv" else ",")
    elif first == "[" or suffix == ".json" and not (first == "{" and size > MAX_JSON_ARRAY_BYTES and _first_line_is_object(fh, encoding, bom)):
        if size > MAX_JSON_ARRAY_BYTES:
            raise DataError(f"{p}: a JSON array of {size / 2**20:,.0f} MiB is over the {MAX_JSON_ARRAY_BYTES // 2**20} MiB "
                            "that is read at once. Fix: convert it to JSON Lines, which is read a line at a time: "
                            f"`jq -c '.[]' {p.name} > {p.stem}.jsonl`.")
        fh.seek(0)
        raw = fh.read()
        fh.close()
        result = read_json(p, raw, encoding, bom)
    elif suffix in JSONL_SUFFIXES or first == "{":
        result = ReadResult("jsonl")
        result.stream = iter_jsonl(fh, encoding, bom, result)
    else:
        raise DataError(f"{p}: unsupported file type {suffix or '(no extension)'}. Fix: use {SUPPORTED}.")
    result.findings[:0] = notes
    return result


def _first_line_is_object(fh, encoding: str, bom: int) -> bool:
    """Whether a big .json file starting with '{' is JSON Lines (its first line is a whole object)."""
    for _, line, _ in capped_lines(fh, encoding, bom):
        try:
            return isinstance(json.loads(line), dict)
        except (TypeError, ValueError, RecursionError):
            return False
    return False


def read_csv_stream(p: Path, fh, encoding: str, bom: int, delimiter: str = ",") -> ReadResult:
    """CSV/TSV with a header row, streamed; a row's line is the file line it starts on (the header is line 1)."""
    result = ReadResult("csv")
    faults: list[Finding] = []  # line faults found by lines(), reported with the row they fall in

    def lines():
        for number, line, size in capped_lines(fh, encoding, bom):
            if line is None:
                faults.append(too_long(number, size))
                yield "\n"  # an empty line: the csv reader skips it
                continue
            if isinstance(line, bytes):
                try:
                    line = line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    faults.append(undecodable(line, exc.start, number))
                    line = line.decode("utf-8", errors="replace")
            if "\x00" in line:  # a zeroed block (a crash, a full disk): around a line ignored, inside it spoils it
                body = line.rstrip("\r\n")
                nuls, body = body.count("\x00"), body.strip("\x00")
                spoiled = "\x00" in body or not body.strip()
                faults.append(nul_block(number, nuls, spoiled=spoiled))
                line = "\n" if spoiled else body + "\n"
            yield line
        fh.close()

    csv.field_size_limit(MAX_LINE_BYTES)  # long answers exceed the default 128 KiB; a 200 MB one is refused
    reader = csv.reader(lines(), delimiter=delimiter)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as exc:
        raise DataError(f"{p}: no CSV header row could be read ({exc}). Fix: the first line must name the columns.") from None
    if any(f.severity == "error" for f in faults):  # the header line itself is spoiled: no column names
        raise DataError(f"{p}: line 1, the header, {faults[0].message.split(': row skipped')[0]}. "
                        f"Fix: {faults[0].fix}.")
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        raise DataError(f"{p}: the header repeats a column name ({', '.join(header)}). Fix: give each column a unique name.")
    result.findings.extend(faults)
    faults.clear()
    result.stream = _csv_rows(reader, header, faults, result)
    return result


def _csv_rows(reader, header: list[str], faults: list[Finding], result: ReadResult):
    previous_end = reader.line_num
    while True:
        start = previous_end + 1
        try:
            fields = next(reader)
        except StopIteration:
            yield from faults
            return
        except csv.Error as exc:
            result.rows_total += 1
            yield from faults
            faults.clear()
            yield Finding(start, "error", f"CSV row cannot be parsed: {exc}", "check the quoting on this row "
                          f"(one field is limited to {MAX_LINE_BYTES // 2**20} MiB)", "malformed_csv")
            previous_end = reader.line_num
            continue
        previous_end = reader.line_num
        spoiled = any(f.severity == "error" for f in faults)  # a line of this row was undecodable, too long, zeroed
        yield from faults
        faults.clear()
        if spoiled:  # read and not valid (a line over the limit reaches the csv reader as an empty line)
            result.rows_total += 1
            continue
        if not any(f.strip() for f in fields):
            continue
        result.rows_total += 1
        if len(fields) != len(header):
            yield Finding(start, "error", f"row has {len(fields)} fields but the header has {len(header)} columns",
                          "quote fields that contain the delimiter, or add the missing fields", "schema_mismatch")
            continue
        yield RawRow(start, dict(zip(header, fields)))


def read_parquet(p: Path) -> ReadResult:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(p)
    except Exception as exc:  # pyarrow raises several types for a corrupt or non-Parquet file
        raise DataError(f"{p}: cannot be read as Parquet ({exc}). Fix: re-export the file, or use .jsonl.") from None
    result = ReadResult("parquet")

    result.stream = arrow_rows(result, table.iter_batches(batch_size=ARROW_BATCH_ROWS))  # a batch at a time
    return result
