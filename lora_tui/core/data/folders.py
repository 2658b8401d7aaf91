"""Folder datasets: a folder of .txt files (chunked to the max length) and a `datasets` save_to_disk folder.

Never writes into the folder, never prints; `datasets` is imported only when needed.
"""

from __future__ import annotations

import codecs
import io
from pathlib import Path

from .bounds import MAX_TXT_PIECE_CHARS, open_regular, sniff_encoding
from .records import DataError, Finding
from .rows import ARROW_BATCH_ROWS, RawRow, ReadResult, arrow_rows, training_split, undecodable


def read_hf_disk(p: Path) -> ReadResult:
    try:
        from datasets import load_from_disk

        loaded = load_from_disk(str(p))
    except Exception as exc:  # datasets raises FileNotFoundError, ValueError, pyarrow errors...
        raise DataError(f"{p}: cannot be read as a `datasets` save_to_disk folder ({exc}). "
                        "Fix: save it again with Dataset.save_to_disk.") from None
    loaded, _, notes = training_split(loaded, str(p), "the DatasetDict has no splits. Fix: save a dataset with rows.",
                                      "save the split you want to train on by itself to choose another")
    result = ReadResult("hf-disk", findings=notes)
    rows = arrow_rows(result, loaded.with_format("arrow").iter(batch_size=ARROW_BATCH_ROWS))  # memory-mapped
    result.stream = rows
    return result


MAX_FOLDER_ENTRIES = 100_000  # files and folders looked at under a dataset folder; more is not a dataset


def txt_files(root: Path) -> list[Path]:
    """The .txt files under a dataset folder, in order. Folders behind symlinks are not followed, unreadable
    ones are passed over, and the walk is bounded: `data.train=/` walked the whole file system (2.2 GB, then a
    PermissionError traceback) and `../..` ran for minutes; the root, the home folder and any folder with more
    than MAX_FOLDER_ENTRIES entries are refused in one line instead."""
    import os

    where = root.resolve()
    if where == Path(where.anchor) or where == Path.home().resolve():
        what = "the root folder" if where == Path(where.anchor) else "your home folder"
        raise DataError(f"{root}: is {what}, not a dataset. Fix: point data.train at your dataset file, or at the "
                        "folder that holds only its .txt files.")
    found, seen = [], 0
    for folder, subfolders, files in os.walk(root):  # followlinks=False; errors (permissions) are skipped
        seen += len(subfolders) + len(files)
        if seen > MAX_FOLDER_ENTRIES:
            raise DataError(f"{root}: holds more than {MAX_FOLDER_ENTRIES:,} files and folders, so it is not a dataset "
                            "folder. Fix: point data.train at your dataset file, or at the folder of its .txt files.")
        subfolders.sort()
        found += [Path(folder) / name for name in files if name.lower().endswith(".txt")]
    return sorted(found)


def read_txt_files(root: Path, files: list[Path], tokenizer, max_seq_len: int, container: str) -> ReadResult:
    """Each .txt file is cut into chunks that fit max_seq_len tokens; a chunk becomes a {"text": ...} row.

    Streamed: a file is read MAX_TXT_PIECE_CHARS characters at a time (cut at a newline or space),
    so a 1 GB file never sits in memory or in the tokenizer whole.
    """
    result = ReadResult(container)
    budget = max(8, max_seq_len - _special_token_count(tokenizer))
    result.stream = _txt_rows(root, files, tokenizer, budget, result)
    return result


def _txt_rows(root: Path, files: list[Path], tokenizer, budget: int, result: ReadResult):
    for f in files:
        name = str(f.relative_to(root)) if f.is_relative_to(root) else f.name
        try:
            fh = open_regular(f)
        except DataError as exc:
            yield Finding(None, "error", f"cannot be read: {str(exc).split(': ', 1)[-1]}; the file was skipped",
                          "check its permissions, or remove it", "unreadable_file", name)
            continue
        with fh:
            encoding, bom = sniff_encoding(fh.read(65536))
            fh.seek(bom)
            bad = _first_bad_byte(fh, encoding, name)
            if bad is not None:  # the whole file is skipped, as a half-read file would train on half a text
                yield bad
                continue
            fh.seek(bom)
            stream = io.TextIOWrapper(fh, encoding=encoding, newline="")
            number, carry = 0, ""
            while True:
                piece = stream.read(MAX_TXT_PIECE_CHARS)
                text = carry + piece
                carry = ""
                if len(piece) == MAX_TXT_PIECE_CHARS:  # more may follow: cut at the last newline or space
                    cut = max(text.rfind("\n"), text.rfind(" ")) + 1
                    if cut > len(text) // 2:
                        text, carry = text[:cut], text[cut:]
                if text.strip():
                    for chunk in _chunks(text, tokenizer, budget):
                        number += 1
                        result.rows_total += 1
                        yield RawRow(number, {"text": chunk}, name)
                if not piece:
                    break
        if not number:
            yield Finding(None, "warning", "empty file, skipped", "remove it or add text", "empty_file", name)


def _first_bad_byte(fh, encoding: str, name: str) -> Finding | None:
    """The undecodable-bytes finding for a file's first bad byte (read in bounded blocks), or None."""
    decoder = codecs.getincrementaldecoder(encoding)()
    line, consumed = 1, 0
    while True:
        block = fh.read(1 << 20)
        try:
            decoder.decode(block, final=not block)
        except UnicodeDecodeError as exc:
            pos = exc.start - len(exc.object) + len(block)  # exc.object = buffered tail + block
            pos = max(pos, 0)
            line += block.count(b"\n", 0, pos)
            start = block.rfind(b"\n", 0, pos) + 1
            finding = undecodable(block[start:pos + 64], pos - start, line, source=name)
            finding.message += "; the file was skipped"
            return finding
        if not block:
            return None
        line += block.count(b"\n")
        consumed += len(block)


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
