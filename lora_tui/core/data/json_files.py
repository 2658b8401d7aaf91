"""JSON Lines and JSON array files, read row by row with line numbers.

A malformed line or array element becomes a finding on its line and reading
goes on with the next one. Never writes to the file, never prints.
"""

from __future__ import annotations

import codecs
import json
import re
from pathlib import Path

from .records import Finding
from .rows import RawRow, ReadResult, decode_whole, malformed, not_an_object, skip_ws, undecodable


def read_jsonl(p: Path, raw: bytes) -> ReadResult:
    result = ReadResult("jsonl")
    text = decode_whole(raw)
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
                result.findings.append(undecodable(line, exc.start, number))
                continue
        elif not line or line.isspace():
            continue
        else:
            result.rows_total += 1
        try:
            value = loads(line)
        except json.JSONDecodeError as exc:
            result.findings.append(malformed(number, exc))
            continue
        if not isinstance(value, dict):
            result.findings.append(not_an_object(number, value))
            continue
        result.rows.append(RawRow(number, value))
    return result


def read_json(p: Path, raw: bytes) -> ReadResult:
    """A JSON array of rows (or an object wrapping one); rows keep the line their element starts on."""
    text = decode_whole(raw)
    bad: list[Finding] = []
    if text is None:  # report each bad byte, read the rest with replacement characters
        raw = raw[3:] if raw.startswith(codecs.BOM_UTF8) else raw
        pos = 0
        while True:
            try:
                raw[pos:].decode("utf-8")
                break
            except UnicodeDecodeError as exc:
                bad.append(undecodable(raw, pos + exc.start))
                pos += exc.end
        text = raw.decode("utf-8", errors="replace")
    start = skip_ws(text, 0)
    if text[start] == "{":
        try:
            whole = json.loads(text)
        except json.JSONDecodeError as exc:
            if exc.msg == "Extra data":  # JSON Lines saved as .json
                return read_jsonl(p, raw)
            return ReadResult("json", findings=bad + [malformed(exc.lineno, exc, "element")])
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


_NEXT_OBJECT = re.compile(r"\}\s*,\s*(?=\{)")


def _scan_array(text: str, start: int, bad_lines: set) -> ReadResult:
    result = ReadResult("json")
    decoder = json.JSONDecoder()
    i = skip_ws(text, start + 1)
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
            j = skip_ws(text, end)
            if j < n and text[j] not in ",]":
                raise json.JSONDecodeError("Expecting ',' delimiter", text, j)
        except json.JSONDecodeError as exc:
            result.findings.append(malformed(line_at(exc.pos) if exc.pos >= counted_to else element_line, exc, "element"))
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
            result.findings.append(not_an_object(element_line, value))
        i = skip_ws(text, j + 1) if j < n and text[j] == "," else j
    return result
