"""Folder datasets: a folder of .txt files (chunked to the max length) and a `datasets` save_to_disk folder.

Never writes into the folder, never prints; `datasets` is imported only when needed.
"""

from __future__ import annotations

from pathlib import Path

from .records import DataError, Finding
from .rows import ReadResult, RawRow, decode_whole, rows_from_records, undecodable


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
    result = rows_from_records("hf-disk", loaded.to_list())
    result.findings[:0] = notes
    return result


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
        text = decode_whole(raw)
        if text is None:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                finding = undecodable(raw, exc.start, source=name)
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
