"""Read a dataset file or folder into raw rows, each tied to its line number.

Containers: JSON Lines, a JSON array (or an object wrapping one), CSV/TSV,
Parquet, a folder of .txt files (chunked to the max length), and a folder
written by `datasets`' ``save_to_disk``. Rows come back as plain dicts; what
they mean (alpaca, messages, ...) is decided in ``formats``.

Faults that stop a single row (undecodable bytes, malformed JSON) become
findings with the line number; only a file that cannot be read at all raises
``DataError``. This module never writes to the user's files and never prints.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .records import DataError, Finding

JSONL_SUFFIXES = {".jsonl", ".ndjson"}
CSV_SUFFIXES = {".csv", ".tsv"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
SUPPORTED = ".jsonl, .json, .csv, .tsv, .parquet, .txt, a folder of .txt files, or a save_to_disk folder"


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
    rows_total: int = 0  # rows seen, readable or not


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
    raw = _read_bytes(p)
    if suffix in CSV_SUFFIXES:
        return read_csv(p, raw, delimiter="\t" if suffix == ".tsv" else ",")
    first = raw.lstrip()[:1]
    if first == b"[" or (suffix == ".json" and first == b"{"):
        return read_json(p, raw)
    if suffix in JSONL_SUFFIXES or first == b"{":
        return read_jsonl(p, raw)
    raise DataError(f"{p}: unsupported file type {suffix or '(no extension)'}. Fix: use {SUPPORTED}.")


def _read_bytes(p: Path) -> bytes:
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise DataError(f"{p}: cannot be read ({exc.strerror or exc}). Fix: check the file's permissions.") from None
    if not raw.strip(b" \t\r\n\xef\xbb\xbf"):
        raise DataError(f"{p}: the file is empty. Fix: add at least one example row.")
    return raw


def _decode_whole(raw: bytes) -> str | None:
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


def _undecodable(raw: bytes, pos: int, line: int | None = None, source: str | None = None) -> Finding:
    """Finding for the bad byte at `pos` of `raw` (a whole file, or one line when `line` is given)."""
    line_start = 0 if line is not None else raw.rfind(b"\n", 0, pos) + 1
    if line is None:
        line = raw.count(b"\n", 0, pos) + 1
    bad = raw[pos:pos + 4]
    return Finding(line, "error", f"undecodable bytes {bad!r} at column {pos - line_start + 1} (not valid UTF-8)",
                   "re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)", "undecodable_bytes", source)


def _malformed(line: int, exc: json.JSONDecodeError, what: str = "line") -> Finding:
    hint = "fix the JSON on this line (each line must be one complete JSON object)"
    if what == "element":
        hint = "fix the JSON of this array element"
    if "Unterminated string" in exc.msg or "Expecting" in exc.msg and exc.pos >= len(exc.doc) - 1:
        hint += "; the line may have been cut short"
    return Finding(line, "error", f"malformed JSON: {exc.msg} (column {exc.colno})", hint, "malformed_json")


def _not_an_object(line: int, value: Any) -> Finding:
    kind = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true/false"}.get(
        type(value), "null")
    return Finding(line, "error", f"row is {kind}, not a JSON object",
                   'write each row as an object, e.g. {"instruction": ..., "output": ...}', "wrong_type")


def read_jsonl(p: Path, raw: bytes) -> ReadResult:
    result = ReadResult("jsonl")
    text = _decode_whole(raw)
    if text is not None:
        lines: list = text.split("\n")
    else:  # decode line by line so the bad line gets its own finding
        raw = raw[3:] if raw.startswith(codecs.BOM_UTF8) else raw
        lines = raw.split(b"\n")
    loads = json.loads
    for number, line in enumerate(lines, 1):
        if isinstance(line, bytes):
            if not line.strip():
                continue
            result.rows_total += 1
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                result.findings.append(_undecodable(line, exc.start, number))
                continue
        elif not line or line.isspace():
            continue
        else:
            result.rows_total += 1
        try:
            value = loads(line)
        except json.JSONDecodeError as exc:
            result.findings.append(_malformed(number, exc))
            continue
        if not isinstance(value, dict):
            result.findings.append(_not_an_object(number, value))
            continue
        result.rows.append(RawRow(number, value))
    return result


def _skip_ws(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in " \t\r\n":
        i += 1
    return i


def read_json(p: Path, raw: bytes) -> ReadResult:
    """A JSON array of rows (or an object wrapping one); rows keep the line their element starts on."""
    text = _decode_whole(raw)
    bad: list[Finding] = []
    if text is None:  # report each bad byte, read the rest with replacement characters
        raw = raw[3:] if raw.startswith(codecs.BOM_UTF8) else raw
        pos = 0
        while True:
            try:
                raw[pos:].decode("utf-8")
                break
            except UnicodeDecodeError as exc:
                bad.append(_undecodable(raw, pos + exc.start))
                pos += exc.end
        text = raw.decode("utf-8", errors="replace")
    start = _skip_ws(text, 0)
    if text[start] == "{":
        try:
            whole = json.loads(text)
        except json.JSONDecodeError as exc:
            if exc.msg == "Extra data":  # JSON Lines saved as .json
                return read_jsonl(p, raw)
            return ReadResult("json", findings=bad + [_malformed(exc.lineno, exc, "element")])
        if isinstance(whole, dict):
            key = next((k for k, v in whole.items() if isinstance(v, list) and v and isinstance(v[0], dict)), None)
            if key is None:  # a single row written as one object
                rows = [] if bad else [RawRow(text.count("\n", 0, start) + 1, whole)]
                return ReadResult("json", rows=rows, findings=bad, rows_total=1)
            start = _find_key_array(text, start, key)
    result = _scan_array(text, start, {f.line for f in bad})
    result.findings[:0] = bad
    return result


def _find_key_array(text: str, start: int, key: str) -> int:
    """Position of the '[' holding `key`'s value in the top-level object starting at `start`."""
    decoder = json.JSONDecoder()
    i = _skip_ws(text, start + 1)
    while i < len(text) and text[i] != "}":
        name, i = decoder.raw_decode(text, i)
        i = _skip_ws(text, _skip_ws(text, i) + 1)  # past ':'
        if name == key:
            return i
        _, i = decoder.raw_decode(text, i)
        i = _skip_ws(text, i)
        if text[i] == ",":
            i = _skip_ws(text, i + 1)
    return start


_NEXT_OBJECT = re.compile(r"\}\s*,\s*(?=\{)")


def _scan_array(text: str, start: int, bad_lines: set) -> ReadResult:
    result = ReadResult("json")
    decoder = json.JSONDecoder()
    i = _skip_ws(text, start + 1)
    line, counted_to = 1, 0

    def line_at(pos: int) -> int:
        nonlocal line, counted_to
        line += text.count("\n", counted_to, pos)
        counted_to = pos
        return line

    n = len(text)
    while i < n and text[i] != "]":
        element_line = line_at(i)
        result.rows_total += 1
        try:
            value, end = decoder.raw_decode(text, i)
            j = _skip_ws(text, end)
            if j < n and text[j] not in ",]":
                raise json.JSONDecodeError("Expecting ',' delimiter", text, j)
        except json.JSONDecodeError as exc:
            result.findings.append(_malformed(line_at(exc.pos) if exc.pos >= counted_to else element_line, exc, "element"))
            # Resume at the next object element: "}" "," "{" after the fault.
            nxt = _NEXT_OBJECT.search(text, max(exc.pos, i + 1))
            if nxt is None:
                break
            i = nxt.end()
            continue
        if bad_lines and bad_lines.intersection(range(element_line, line_at(end) + 1)):
            pass  # already reported as undecodable
        elif isinstance(value, dict):
            result.rows.append(RawRow(element_line, value))
        else:
            result.findings.append(_not_an_object(element_line, value))
        i = _skip_ws(text, j + 1) if j < n and text[j] == "," else j
    return result


def read_csv(p: Path, raw: bytes, delimiter: str = ",") -> ReadResult:
    """CSV/TSV with a header row; a row's line is the file line it starts on (the header is line 1)."""
    result = ReadResult("csv")
    text = _decode_whole(raw)
    bad_lines: set[int] = set()
    if text is None:
        raw = raw[3:] if raw.startswith(codecs.BOM_UTF8) else raw
        parts = []
        for number, chunk in enumerate(raw.split(b"\n"), 1):
            try:
                parts.append(chunk.decode("utf-8"))
            except UnicodeDecodeError as exc:
                result.findings.append(_undecodable(chunk, exc.start, number))
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
    return _rows_from_records("parquet", table.to_pylist())


def read_hf_disk(p: Path) -> ReadResult:
    try:
        from datasets import Dataset, load_from_disk

        loaded = load_from_disk(str(p))
    except Exception as exc:  # datasets raises FileNotFoundError, ValueError, pyarrow errors...
        raise DataError(f"{p}: cannot be read as a `datasets` save_to_disk folder ({exc}). "
                        "Fix: save it again with Dataset.save_to_disk.") from None
    notes: list[Finding] = []
    if not isinstance(loaded, Dataset):  # a DatasetDict: pick the training split
        names = list(loaded.keys())
        if not names:
            raise DataError(f"{p}: the DatasetDict has no splits. Fix: save a dataset with rows.")
        split = "train" if "train" in names else names[0]
        if len(names) > 1:
            notes.append(Finding(None, "warning", f"using split '{split}' of {', '.join(names)}",
                                 "save the split you want to train on by itself to choose another", "split_chosen"))
        loaded = loaded[split]
    result = _rows_from_records("hf-disk", loaded.to_list())
    result.findings[:0] = notes
    return result


def _rows_from_records(container: str, records: list[dict]) -> ReadResult:
    rows = [RawRow(i, r) for i, r in enumerate(records, 1)]
    return ReadResult(container, rows=rows, rows_total=len(rows))


def read_txt_files(root: Path, files: list[Path], tokenizer, max_seq_len: int, container: str) -> ReadResult:
    """Each .txt file is cut into chunks that fit max_seq_len tokens; a chunk becomes a {"text": ...} row."""
    result = ReadResult(container)
    budget = max(8, max_seq_len - _special_token_count(tokenizer))
    for f in files:
        name = str(f.relative_to(root)) if f.is_relative_to(root) else f.name
        try:
            raw = f.read_bytes()
        except OSError as exc:
            result.findings.append(Finding(None, "error", f"cannot be read ({exc.strerror})", "check its permissions",
                                           "unreadable_file", name))
            continue
        text = _decode_whole(raw)
        if text is None:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                finding = _undecodable(raw, exc.start, source=name)
                finding.message += "; the file was skipped"
                result.findings.append(finding)
            continue
        if not text.strip():
            result.findings.append(Finding(None, "warning", "empty file, skipped", "remove it or add text",
                                           "empty_file", name))
            continue
        for number, chunk in enumerate(_chunks(text, tokenizer, budget), 1):
            result.rows_total += 1
            result.rows.append(RawRow(number, {"text": chunk}, name))
    return result


def _special_token_count(tokenizer) -> int:
    """Tokens the text format adds around a chunk (BOS if the tokenizer adds one, plus the final EOS)."""
    if tokenizer is None:
        return 1
    return len(tokenizer("", add_special_tokens=True)["input_ids"]) + 1


def _chunks(text: str, tokenizer, budget: int) -> list[str]:
    if tokenizer is None:  # no tokenizer: about 4 characters per token, cut at whitespace
        size, out, i = budget * 4, [], 0
        while i < len(text):
            j = min(len(text), i + size)
            if j < len(text):
                space = text.rfind(" ", i + size // 2, j)
                j = space + 1 if space > 0 else j
            out.append(text[i:j])
            i = j
    else:
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        starts = [offsets[k][0] for k in range(0, len(offsets), budget)]
        out = [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]
        if out and starts[0] > 0:
            out[0] = text[:starts[1] if len(starts) > 1 else len(text)]
    return [c for c in out if c.strip()]
