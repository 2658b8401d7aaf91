"""The documented limits that keep reading a dataset bounded in memory and time.

Whatever a file holds, a reader here never blocks (FIFOs, sockets and devices
are refused before they are opened for reading), never holds more than one
line of at most ``MAX_LINE_BYTES`` at a time, and never lets one hostile row
(a lone surrogate, lists nested thousands deep, a 200 MB field) become a
traceback: each is a finding with its line, and the row is skipped.

Pure helpers: no printing, nothing written, no heavy imports.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from lora_tui.core import safe_read

from .records import DataError, Example, Finding

MAX_LINE_BYTES = 16 * 2**20  # one JSONL line / CSV line / CSV field; longer ones are skipped with a finding
MAX_JSON_ARRAY_BYTES = 128 * 2**20  # a .json array is parsed whole; above this, JSON Lines is asked for
MAX_TXT_PIECE_CHARS = 2**20  # a .txt file is read and chunked this many characters at a time
MAX_DEPTH = 32  # nesting of lists/objects inside one row (a conversation needs 3)
MAX_FINDINGS = 100_000  # findings kept per report; the rest are counted
CHARS_PER_TOKEN_BOUND = 256  # no vocabulary token is longer: clipping text here keeps the first N tokens exact
_SURROGATE = re.compile("[\ud800-\udfff]")
DATA_FIX = "copy the data into a regular file (e.g. `cat SOURCE > data.jsonl`) and use that"


def check_regular(path: str | os.PathLike) -> None:
    """Raise DataError unless `path` is a regular file or a folder. Never opens it (a FIFO would block)."""
    try:
        safe_read.check_regular(path, "a dataset file", DATA_FIX, folders=True)
    except safe_read.UnsafeFile as exc:
        raise DataError(str(exc)) from None


def open_regular(p: Path) -> BinaryIO:
    """Open a regular file for reading without ever blocking; DataError for anything else."""
    try:
        return safe_read.open_regular(p, "a dataset file", DATA_FIX)
    except safe_read.UnsafeFile as exc:
        raise DataError(str(exc)) from None


def sniff_encoding(head: bytes) -> tuple[str, int]:
    """(encoding, BOM length) from a file's first bytes: utf-8, or utf-16 with or without a BOM.

    Without a BOM, UTF-16 is recognised by its pattern, not by a count of NULs: ASCII as UTF-16 has a
    NUL in the same position of nearly every byte pair and a character in the other. A block of NULs
    (what a crash or a full disk often leaves) has both bytes NUL and says nothing: it is skipped.
    """
    if head.startswith(b"\xef\xbb\xbf"):
        return "utf-8", 3
    if head.startswith(b"\xff\xfe"):
        return "utf-16-le", 2
    if head.startswith(b"\xfe\xff"):
        return "utf-16-be", 2
    start = len(head) - len(head.lstrip(b"\x00"))
    sample = head[start - start % 2:][:4096]  # from the first pair that is not two NULs: pairs stay aligned
    le = be = other = 0
    for first, second in zip(sample[0::2], sample[1::2]):
        if not second and first:
            le += 1
        elif not first and second:
            be += 1
        elif first or second:
            other += 1  # a block of NULs inside the sample (both zero) counts for nothing
    pairs = le + be + other
    for count, rival, name in ((le, be, "utf-16-le"), (be, le, "utf-16-be")):
        if pairs >= 2 and count * 3 > pairs and rival * 10 <= count:
            return name, 0
    return "utf-8", 0


def capped_lines(fh: BinaryIO, encoding: str, bom: int) -> Iterator[tuple[int, Any, int]]:
    """(line number, line, 0) per line, or (line number, None, size) for a line over MAX_LINE_BYTES.

    UTF-8 lines come as bytes (each decoded by the caller, so one bad line is one finding);
    UTF-16 lines come as str. At most MAX_LINE_BYTES of a line is ever held.
    """
    fh.seek(bom)
    if encoding != "utf-8":
        stream = io.TextIOWrapper(fh, encoding=encoding, errors="replace", newline="")
        limit, newline, read = MAX_LINE_BYTES // 2, "\n", stream.readline
    else:
        limit, newline, read = MAX_LINE_BYTES, b"\n", fh.readline
    number = 0
    while True:
        line = read(limit + 1)
        if not line:
            return
        number += 1
        if len(line) > limit and not line.endswith(newline):
            size = len(line)
            while True:  # skip the rest of the over-long line in bounded pieces
                rest = read(1 << 20)
                size += len(rest)
                if not rest or rest.endswith(newline):
                    break
            yield number, None, size * (2 if encoding != "utf-8" else 1)
            continue
        yield number, line, 0


def too_long(line: int, size: int, what: str = "line") -> Finding:
    return Finding(line, "error", f"{what} is {size / 2**20:.0f} MiB, over the {MAX_LINE_BYTES // 2**20} MiB limit "
                   "per line: row skipped", "split the text into several rows (a row over the max length is cut "
                   "anyway)", "line_too_long")


def hostile(value: Any) -> str | None:
    """Why a parsed row cannot be used as text (lone surrogate, nesting too deep), or None. Iterative."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                at = _SURROGATE.search(item).group(0)
                return (f"contains a lone surrogate ({ascii(at)[1:-1]}), which is not valid Unicode text "
                        "and cannot be tokenised")
        elif isinstance(item, (list, dict)):
            if depth >= MAX_DEPTH:
                return f"is nested more than {MAX_DEPTH} levels deep"
            children = list(item.items()) if isinstance(item, dict) else [(None, x) for x in item]
            for key, child in reversed(children):  # pushed in reverse: popped in the row's order, key first
                stack.append((child, depth + 1))
                if key is not None:
                    stack.append((key, depth + 1))
    return None


SURROGATE_FIX = "fix or remove this row (a lone \\ud800-\\udfff escape must be part of a surrogate pair)"
NESTING_FIX = (f"flatten this row (a conversation needs 3 levels: a list of messages, each an object of strings; "
               f"more than {MAX_DEPTH} is refused) or remove it")


def hostile_finding(line: int, reason: str, source: str | None = None) -> Finding:
    return Finding(line, "error", f"row {reason}: row skipped", SURROGATE_FIX if "surrogate" in reason else NESTING_FIX,
                   "hostile_text", source)


def clip_example(example: Example, max_seq_len: int) -> tuple[Example, bool]:
    """The example with every text cut to the characters that can reach `max_seq_len` tokens.

    A token never spans more than CHARS_PER_TOKEN_BOUND characters, so the first
    max_seq_len tokens (all that training keeps) are unchanged, while a 10 MB
    answer is tokenised in bounded memory. Returns (example, clipped?).
    """
    limit = max(65536, max_seq_len * CHARS_PER_TOKEN_BOUND)
    if example.text is not None:
        if len(example.text) <= limit:
            return example, False
        return Example(example.line, None, text=example.text[:limit], source=example.source), True
    if example.messages is None or all(len(m["content"]) <= limit for m in example.messages):
        return example, False
    messages = [{**m, "content": m["content"][:limit]} for m in example.messages]
    return Example(example.line, messages, source=example.source), True
