"""JSON Lines and JSON array files, read row by row with line numbers.

A malformed line or array element becomes a finding on its line and reading
goes on with the next one. JSON Lines are streamed (one capped line in memory);
an array is parsed whole, so ``readers`` refuses arrays over
``bounds.MAX_JSON_ARRAY_BYTES``. Never writes to the file, never prints.
"""

from __future__ import annotations

import codecs
import json
import re
from pathlib import Path
from typing import BinaryIO, Iterator

from .bounds import MAX_FINDINGS, capped_lines, hostile, hostile_finding, too_long
from .records import DataError, Finding
from .rows import RawRow, ReadResult, decode_whole, malformed, not_an_object, skip_ws, undecodable


def iter_jsonl(fh: BinaryIO, encoding: str, bom: int, result: ReadResult) -> Iterator:
    """Rows and findings of a JSON Lines file, one line in memory at a time (see ``bounds``)."""
    loads = json.loads
    for number, line, size in capped_lines(fh, encoding, bom):
        if line is None:
            result.rows_total += 1
            yield too_long(number, size)
            continue
        if not line.strip():
            continue
        result.rows_total += 1
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield undecodable(line, exc.start, number)
                continue
        body = line.rstrip("\r\n")  # without the newline, so a cut line's column is where it ends
        if "\x00" in body:  # a zeroed block: NULs around a row are dropped (with a note), inside one they spoil it
            nuls, body = body.count("\x00"), body.strip("\x00")
            if "\x00" in body or not body.strip():
                yield nul_block(number, nuls, spoiled=True)
                continue
            yield nul_block(number, nuls, spoiled=False)
        try:
            value = loads(body)
        except json.JSONDecodeError as exc:
            yield malformed(number, exc)
            continue
        except RecursionError:
            yield hostile_finding(number, "is nested too deeply to parse")
            continue
        if not isinstance(value, dict):
            yield not_an_object(number, value)
            continue
        why = hostile(value)
        if why:
            yield hostile_finding(number, why)
            continue
        yield RawRow(number, value)
    fh.close()


def nul_block(line: int, count: int, spoiled: bool) -> Finding:
    """A run of NUL bytes on a line: what a crash or a full disk leaves where a block was never written."""
    what = f"line holds {count} NUL bytes (a zeroed block, as a crash or a full disk leaves)"
    if spoiled:
        return Finding(line, "error", f"{what} inside or instead of the row: row skipped",
                       "restore this row from a backup or delete the line; the other rows are read", "nul_bytes")
    return Finding(line, "warning", f"{what} before or after the row: they were ignored and the row read",
                   "remove them: `tr -d '\\000' < IN > OUT`", "nul_bytes")


def read_jsonl(p: Path, raw: bytes) -> ReadResult:
    """A JSON Lines file already in memory (small files, tests)."""
    import io

    from .bounds import sniff_encoding

    result = ReadResult("jsonl")
    encoding, bom = sniff_encoding(raw[:65536])
    result.stream = iter_jsonl(io.BytesIO(raw), encoding, bom, result)
    return result.drain()


def read_json(p: Path, raw: bytes, encoding: str = "utf-8", bom: int = 0) -> ReadResult:
    """A JSON array of rows (or an object wrapping one). Rows and findings are numbered by element (row 1,
    row 2, ...: a JSON array is often one line); a finding's message gives the file line where it helps."""
    text = decode_whole(raw) if encoding == "utf-8" else raw[bom:].decode(encoding, errors="replace")
    bad: list[Finding] = []
    if text is None:  # report each bad byte, read the rest with replacement characters
        raw = raw[3:] if raw.startswith(codecs.BOM_UTF8) else raw
        pos = 0
        while len(bad) < MAX_FINDINGS:
            try:
                raw[pos:].decode("utf-8")
                break
            except UnicodeDecodeError as exc:
                bad.append(undecodable(raw, pos + exc.start))
                pos += exc.end
        text = raw.decode("utf-8", errors="replace")
    start = skip_ws(text, 0)
    if start >= len(text) or text[start] not in "[{":
        kind = _scalar_kind(text[start:start + 40])
        raise DataError(f"{p}: holds {kind}, not rows. Fix: write a JSON array of objects "
                        '([{"instruction": ..., "output": ...}, ...]) or one object per line (.jsonl).')
    if text[start] == "{":
        try:
            whole = json.loads(text)
        except json.JSONDecodeError as exc:
            if exc.msg == "Extra data":  # JSON Lines saved as .json
                return read_jsonl(p, raw)
            return ReadResult("json", findings=bad + [malformed(1, exc, "element")], rows_total=1)
        except RecursionError:
            return ReadResult("json", findings=bad + [hostile_finding(1, "is nested too deeply to parse")], rows_total=1)
        if isinstance(whole, dict):
            key = next((k for k, v in whole.items() if isinstance(v, list) and v and isinstance(v[0], dict)), None)
            if key is None:  # a single row written as one object
                line = 1  # the one row
                why = hostile(whole)
                if why:
                    return ReadResult("json", findings=bad + [hostile_finding(line, why)], rows_total=1)
                rows = [] if bad else [RawRow(line, whole)]
                return ReadResult("json", rows=rows, findings=bad, rows_total=1)
            start = _find_key_array(text, start, key)
    result = _scan_array(text, start, bad)
    result.findings[:0] = bad
    return result


def _scalar_kind(head: str) -> str:
    head = head.strip()
    if not head:
        return "nothing"
    if head[0] == '"':
        return "a string"
    if head[0] in "-0123456789":
        return f"a number ({head.split()[0][:20]})"
    for word, kind in (("true", "true/false"), ("false", "true/false"), ("null", "null")):
        if head.startswith(word):
            return kind
    return f"no JSON value (it starts with {head[:10]!r})"


def _find_key_array(text: str, start: int, key: str) -> int:
    """Position of the '[' holding `key`'s value in the top-level object starting at `start`."""
    decoder = json.JSONDecoder()
    i = skip_ws(text, start + 1)
    while i < len(text) and text[i] != "}":
        name, i = decoder.raw_decode(text, i)
        i = skip_ws(text, skip_ws(text, i) + 1)  # past ':'
        if name == key:
            return i
        _, i = decoder.raw_decode(text, i)
        i = skip_ws(text, i)
        if text[i] == ",":
            i = skip_ws(text, i + 1)
    return start


_NEXT_OBJECT = re.compile(r"\}[\s\x00]*,[\s\x00]*(?=\{)")


def _scan_array(text: str, start: int, bad: list[Finding]) -> ReadResult:
    """The elements of the array at `start`, numbered 1, 2, ...; `bad` (undecodable bytes, by file line)
    are renumbered to the element they fall in."""
    result = ReadResult("json")
    bad_lines = {f.line for f in bad}
    decoder = json.JSONDecoder()
    i = skip_ws(text, start + 1)
    line, counted_to = 1, 0

    def line_at(pos: int) -> int:
        nonlocal line, counted_to
        line += text.count("\n", counted_to, pos)
        counted_to = pos
        return line

    n = len(text)

    def skip(pos: int) -> int:
        """Past whitespace and any zeroed block between elements (a crash or a full disk leaves one): the block
        is noted and the rows around it read (it made the next valid row "malformed")."""
        while True:
            pos = skip_ws(text, pos)
            if pos >= n or text[pos] != "\x00":
                return pos
            end = pos
            while end < n and text[end] == "\x00":
                end += 1
            result.findings.append(nul_block(result.rows_total + 1, end - pos, spoiled=False))
            pos = end

    i = skip(i)
    closed = i < n and text[i] == "]"
    while i < n and text[i] != "]":
        element_line = line_at(i)
        result.rows_total += 1
        row = result.rows_total
        try:
            value, end = decoder.raw_decode(text, i)
            j = skip(end)
            if j < n and text[j] not in ",]":
                raise json.JSONDecodeError("Expecting ',' delimiter", text, j)
        except RecursionError:
            result.findings.append(hostile_finding(row, "is nested too deeply to parse"))
            nxt = _NEXT_OBJECT.search(text, i + 1)
            if nxt is None:
                break
            i = nxt.end()
            continue
        except json.JSONDecodeError as exc:
            result.findings.append(malformed(row, exc, "element"))
            # Resume at the next object element: "}" "," "{" after the fault.
            nxt = _NEXT_OBJECT.search(text, max(exc.pos, i + 1))
            if nxt is None:
                break
            i = nxt.end()
            continue
        if bad_lines and bad_lines.intersection(range(element_line, line_at(end) + 1)):
            for finding in bad:  # already reported as undecodable: named by this row from now on
                if finding.line in range(element_line, line + 1):
                    finding.message += f" (file line {finding.line})"
                    finding.line = row
        elif isinstance(value, dict):
            why = hostile(value)
            if why:
                result.findings.append(hostile_finding(row, why))
            else:
                result.rows.append(RawRow(row, value))
        else:
            result.findings.append(not_an_object(row, value))
        i = skip(j + 1) if j < n and text[j] == "," else j
        closed = j < n and text[j] == "]"
    if i >= n and not closed:  # ran off the end: no closing bracket
        result.findings.append(Finding(None, "error", f"the JSON array is not closed (no final ']' by file line "
                                       f"{line_at(n)}): the file may have been cut short", "restore the end of the file, or close the array "
                                       "with ']'", "unclosed_array"))
    elif not result.rows_total:
        result.findings.append(Finding(None, "error", "the JSON array holds no rows",
                                       'add rows: [{"instruction": ..., "output": ...}, ...]', "no_rows"))
    return result
