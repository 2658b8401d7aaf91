"""Reliability of dataset reading (issue 10 items 1 and 5, issue 8 item 5): hostile files are
findings with line numbers or one-line refusals, never a hang, a traceback or unbounded memory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lora_tui.core.data import DataError, load_examples, validate_dataset
from lora_tui.core.data import bounds


def _codes(result):
    return [(f.line, f.code) for f in result.findings]


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "lora_tui", "validate", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("kind", ["fifo", "socket", "device"])
def test_non_regular_files_are_refused_without_blocking(tmp_path, kind):
    path = tmp_path / "data.jsonl"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
    else:
        path = Path("/dev/zero")
    with pytest.raises(DataError) as info:  # a FIFO would block open() forever before the fix
        load_examples(path)
    assert "not a dataset file" in str(info.value) and "Fix" in str(info.value)


def test_cli_refuses_dev_zero_at_once():
    result = _cli("/dev/zero", timeout=60)
    assert result.returncode == 2 and "character device" in result.stderr and "Traceback" not in result.stderr


def test_over_long_line_is_a_finding_and_reading_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(bounds, "MAX_LINE_BYTES", 1000)
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"text": "x" * 5000}) + "\n"
                    + json.dumps({"text": "after"}) + "\n")
    loaded = load_examples(path)
    assert _codes(loaded) == [(2, "line_too_long")]
    assert [e.text for e in loaded.examples] == ["ok", "after"] and loaded.rows == 3


def test_over_long_csv_field_is_a_finding(tmp_path, monkeypatch):
    monkeypatch.setattr("lora_tui.core.data.readers.MAX_LINE_BYTES", 1000)
    path = tmp_path / "big.csv"
    path.write_text('text\nfine\n"' + "y" * 3000 + '"\nlater\n')
    loaded = load_examples(path)
    assert [c for _, c in _codes(loaded)] == ["malformed_csv"] and loaded.findings[0].line == 3
    assert [e.text for e in loaded.examples][0] == "fine"


def test_lone_surrogate_and_deep_nesting_are_line_numbered_findings(tmp_path):
    path = tmp_path / "hostile.jsonl"
    deep = '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path.write_text('{"text": "fine"}\n{"text": "\\ud800"}\n' + deep + '\n{"text": "also fine"}\n')
    loaded = load_examples(path)
    assert _codes(loaded) == [(2, "hostile_text"), (3, "hostile_text")]
    assert "lone surrogate" in loaded.findings[0].message and "nested" in loaded.findings[1].message
    assert [e.text for e in loaded.examples] == ["fine", "also fine"]


def test_hostile_rows_in_validate_with_the_tokenizer(tmp_path, embedded_tokenizer):
    path = tmp_path / "hostile.jsonl"
    rows = ['{"messages": [{"role": "user", "content": "\\udfff hi"}, {"role": "assistant", "content": "yo"}]}',
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}']
    path.write_text("\n".join(rows) + "\n")
    report = validate_dataset(path, tokenizer=embedded_tokenizer, max_seq_len=64)
    assert [(f.line, f.code) for f in report.errors] == [(1, "hostile_text")] and report.valid_rows == 1


def test_a_huge_answer_is_tokenised_clipped(tmp_path, embedded_tokenizer):
    path = tmp_path / "huge.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "word " * 400_000}]}) + "\n")
    report = validate_dataset(path, tokenizer=embedded_tokenizer, max_seq_len=64)
    truncated = [f for f in report.findings if f.code == "truncated"]
    assert len(truncated) == 1 and "more than" in truncated[0].message
    assert report.token_stats.max < 400_000  # only max_seq_len * 256 characters were tokenised


@pytest.mark.parametrize("content, code", [('[{"text": "a"}', "unclosed_array"), ("[", "unclosed_array"),
                                           ("[]", "no_rows")])
def test_truncated_json_arrays_are_not_clean(tmp_path, content, code):
    path = tmp_path / "cut.json"
    path.write_text(content)
    report = validate_dataset(path)
    assert code in [f.code for f in report.errors]


def test_json_scalar_says_what_it_holds(tmp_path):
    path = tmp_path / "n.json"
    path.write_text("42\n")
    with pytest.raises(DataError, match="holds a number"):
        load_examples(path)


def test_utf16_without_bom_is_read_and_noted(tmp_path):
    path = tmp_path / "u16.jsonl"
    path.write_bytes('{"text": "héllo"}\n{"text": "b"}\n'.encode("utf-16-le"))
    loaded = load_examples(path)
    assert [e.text for e in loaded.examples] == ["héllo", "b"]
    assert [f.code for f in loaded.findings] == ["utf16_no_bom"] and "iconv -f utf-16-le" in loaded.findings[0].fix


def test_cli_report_edges(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("Some text to train on.\n")
    (folder / "empty.txt").write_text("")
    out = _cli(str(folder)).stdout
    assert "Notes on files: 1" in out and "Warnings (rows kept)" not in out
    masked = tmp_path / "masked.jsonl"
    long_prompt = "word " * 200
    masked.write_text("".join(json.dumps({"messages": [{"role": "user", "content": long_prompt + str(i)},
                                                       {"role": "assistant", "content": "ok"}]}) + "\n"
                              for i in range(3)))
    result = _cli(str(masked), "--max-seq-len", "32")
    assert result.returncode == 1 and "3 of 3 rows can be trained" not in result.stdout
    assert "none has a trained token" in result.stdout


def test_offline_fix_names_the_installed_hub_client():
    from lora_tui.core.model.models import _hub_error

    message = str(_hub_error("someone/model", OSError("We couldn't connect")))
    assert "hf download" in message and "huggingface-cli" not in message
