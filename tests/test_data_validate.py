"""validate_dataset (hygiene, token statistics) and the `lora-tui validate` command."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lora_tui.core.data import DataError, validate_dataset

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data"


def _chat(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def _jsonl(tmp_path: Path, rows: list[dict], name: str = "d.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _codes(report, severity=None) -> list[tuple[int | None, str]]:
    return [(f.line, f.code) for f in report.findings if severity in (None, f.severity)]


def test_hygiene_warnings_with_line_numbers(tmp_path):
    rows = [
        _chat("What is rain?", "Water falling from clouds."),  # 1
        _chat("What is rain?", "Water falling from clouds."),  # 2 exact duplicate of 1
        _chat("what is RAIN", "water falling from clouds!"),  # 3 near duplicate of 1
        _chat("Are you human?", "As an AI language model, I cannot say."),  # 4 boilerplate
        _chat("Where is the manual?", "It is at https://example.com/manual."),  # 5 URL
        _chat("Tell a story.", " ".join(["word"] * 30) + "."),  # 6 long sentence
        _chat("Short?", "Yes. " + " ".join(["ok."] * 40)),  # 7 many short sentences: fine
        _chat("Special?", "Use <|im_end|> here."),  # 8 control token typed into the text
    ]
    report = validate_dataset(_jsonl(tmp_path, rows))
    assert _codes(report) == [(2, "duplicate"), (3, "near_duplicate"), (4, "ai_boilerplate"), (5, "url"),
                              (6, "long_sentence")]
    assert report.valid_rows == 8 and all(f.severity == "warning" for f in report.findings)
    assert "line 1" in report.findings[0].message and "line 1" in report.findings[1].message


def test_control_token_warning_needs_the_tokenizer(tmp_path, embedded_tokenizer):
    report = validate_dataset(_jsonl(tmp_path, [_chat("Special?", "Use <|im_end|> here.")]),
                              tokenizer=embedded_tokenizer)
    assert _codes(report) == [(1, "control_token")]


def test_token_stats_and_truncation(tmp_path, embedded_tokenizer):
    rows = [_chat(f"Question {i}?", "Answer " * (5 * i)) for i in range(1, 11)]
    path = _jsonl(tmp_path, rows)
    full = validate_dataset(path, tokenizer=embedded_tokenizer, max_seq_len=4096)
    lengths = sorted(len(embedded_tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=True)
                         ["input_ids"]) for r in rows)
    stats = full.token_stats
    assert (stats.count, stats.min, stats.max, stats.over_max) == (10, lengths[0], lengths[-1], 0)
    assert stats.min <= stats.median <= stats.p95 <= stats.max
    assert sum(c for _, _, c in stats.histogram) == 10
    assert full.trained_tokens > 0 and full.template == "the model's own chat template"

    cut_at = lengths[5]
    cut = validate_dataset(path, tokenizer=embedded_tokenizer, max_seq_len=cut_at)
    over = sum(1 for n in lengths if n > cut_at)
    assert cut.token_stats.over_max == over == 4
    truncated = [f for f in cut.findings if f.code == "truncated"]
    assert [f.line for f in truncated] == [7, 8, 9, 10] and all(f.severity == "warning" for f in truncated)
    assert cut.trained_tokens < full.trained_tokens
    above_cut = [c for start, _, c in cut.token_stats.histogram if start > cut_at]
    assert sum(above_cut) == over  # a histogram edge sits exactly at the cut


def test_prompt_filling_the_max_length_means_nothing_trained(tmp_path, embedded_tokenizer):
    report = validate_dataset(_jsonl(tmp_path, [_chat("word " * 200, "Short answer.")]),
                              tokenizer=embedded_tokenizer, max_seq_len=64)
    assert (None, "all_masked") in _codes(report, "error")
    assert (1, "no_trained_tokens") in _codes(report, "warning")
    assert report.trained_tokens == 0


def test_template_refusing_a_row_is_an_error_not_a_crash(tmp_path, embedded_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                         "{{ raise_exception('no system messages') }}{% endif %}"
                         "{{ m['role'] }}: {{ m['content'] }}{{ eos_token }}{% endfor %}")
    rows = [_chat("a", "b"), {"messages": [{"role": "system", "content": "s"}, *_chat("c", "d")["messages"]]}]
    report = validate_dataset(_jsonl(tmp_path, rows), tokenizer=tok)
    assert _codes(report, "error") == [(2, "template_error")] and report.valid_rows == 1
    assert "no system messages" in report.findings[0].message


def test_sample_data_is_clean_and_short(embedded_tokenizer):
    for name, rows in (("train.jsonl", 303), ("valid.jsonl", 40)):
        report = validate_dataset(SAMPLE / name, tokenizer=embedded_tokenizer)
        assert (report.rows, report.valid_rows, report.findings) == (rows, rows, [])
        assert report.token_stats.max < 100
        for example in report.examples:
            answer = example.messages[-1]["content"]
            assert answer.startswith("Ahoy! ") and answer.endswith(" — Cap'n LoRA")
    held_out = (SAMPLE / "heldout_prompts.txt").read_text(encoding="utf-8").splitlines()
    seen = {json.loads(line)["messages"][0]["content"] for name in ("train.jsonl", "valid.jsonl")
            for line in (SAMPLE / name).read_text(encoding="utf-8").splitlines()}
    assert len(held_out) == 10 and not seen.intersection(held_out)


def test_the_shipped_bad_file_shows_each_fault(embedded_tokenizer):
    report = validate_dataset(SAMPLE / "bad" / "faults.jsonl", tokenizer=embedded_tokenizer)
    assert _codes(report) == [
        (2, "duplicate"), (3, "near_duplicate"), (4, "malformed_json"), (5, "no_assistant"), (6, "empty_turn"),
        (7, "unknown_role"), (8, "wrong_type"), (9, "schema_mismatch"), (10, "ai_boilerplate"), (11, "url"),
        (12, "long_sentence"), (13, "undecodable_bytes")]


def test_validation_leaves_the_file_byte_identical(tmp_path, embedded_tokenizer):
    raw = b"\xef\xbb\xbf" + (json.dumps(_chat("Hi?", "Hello.")) + "\r\n").encode() + b'{"broken\r\n'
    path = tmp_path / "keep.jsonl"
    path.write_bytes(raw)
    before = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    validate_dataset(path, tokenizer=embedded_tokenizer)
    assert (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.jsonl"]


def test_unreadable_file_raises_data_error(tmp_path):
    with pytest.raises(DataError):
        validate_dataset(tmp_path / "nope.jsonl")


def test_report_dict_shape(tmp_path, embedded_tokenizer):
    report = validate_dataset(_jsonl(tmp_path, [_chat("a?", "b."), {"messages": "x"}]), tokenizer=embedded_tokenizer)
    data = json.loads(json.dumps(report.to_dict()))
    assert {"format", "rows", "valid_rows", "findings", "token_stats"} <= set(data)
    assert (data["format"], data["rows"], data["valid_rows"]) == ("messages", 2, 1)
    assert data["findings"][0] | {} == {"line": 2, "severity": "error", "message": data["findings"][0]["message"],
                                        "fix": data["findings"][0]["fix"], "code": "wrong_type"}
    assert data["token_stats"]["count"] == 1 and isinstance(data["token_stats"]["histogram"], list)


# ----- the command, in a subprocess ---------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "lora_tui", "validate", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)


def test_cli_report_and_exit_zero_on_the_bad_sample():
    result = _cli(str(SAMPLE / "bad" / "faults.jsonl"), "--max-seq-len", "64")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Format    messages (jsonl)" in out and "13 read, 6 valid" in out
    assert "line 4: malformed JSON" in out and "line 13: undecodable bytes" in out
    assert "cut at 64 tokens" in out  # the histogram marks the truncation cut
    assert "Traceback" not in result.stderr


def test_cli_json_and_exit_codes(tmp_path):
    none_valid = _jsonl(tmp_path, [{"messages": "x"}, {"messages": []}])
    result = _cli(str(none_valid), "--json")
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    assert (data["rows"], data["valid_rows"]) == (2, 0)
    assert [(f["line"], f["severity"]) for f in data["findings"]] == [(1, "error"), (2, "error")]
    assert all(f["message"] for f in data["findings"])

    result = _cli(str(tmp_path / "missing.jsonl"), "--json")
    assert result.returncode == 2 and "missing.jsonl" in json.loads(result.stdout)["error"]


def test_cli_unreadable_inputs_exit_two_without_traceback(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = _cli(str(empty))
    assert result.returncode == 2 and "empty" in result.stderr and "Traceback" not in result.stderr
    result = _cli(str(SAMPLE / "train.jsonl"), "--model", str(tmp_path / "no-such-model"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "no-such-model" in result.stderr
    result = _cli(str(SAMPLE / "train.jsonl"), "--model", "someone/not-downloaded-model")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "not-downloaded-model" in result.stderr


def test_token_counting_in_chunks_keeps_row_order_and_reports_progress(tmp_path, embedded_tokenizer, monkeypatch):
    from lora_tui.core.data import validate as validate_module

    monkeypatch.setattr(validate_module, "CHUNK_ROWS", 3)
    rows = [_chat(f"Q{i}?", "word " * i) for i in range(1, 9)]
    rows.insert(4, {"messages": [{"role": "system", "content": "s"}, *_chat("x", "y")["messages"]]})
    tok = embedded_tokenizer.__class__.from_pretrained(embedded_tokenizer.name_or_path)
    tok.chat_template = embedded_tokenizer.chat_template.replace(
        "{% for message in messages %}",
        "{% for message in messages %}{% if message['role'] == 'system' %}{{ raise_exception('no') }}{% endif %}")
    seen = []
    report = validate_dataset(_jsonl(tmp_path, rows), tokenizer=tok, max_seq_len=40,
                              on_progress=lambda message, fraction: seen.append(fraction))
    assert _codes(report, "error") == [(5, "template_error")]
    assert [e.line for e in report.examples] == [1, 2, 3, 4, 6, 7, 8, 9]
    chunked = validate_dataset(_jsonl(tmp_path, rows, "b.jsonl"), tokenizer=tok, max_seq_len=40)
    monkeypatch.setattr(validate_module, "CHUNK_ROWS", 10_000)
    whole = validate_dataset(_jsonl(tmp_path, rows, "c.jsonl"), tokenizer=tok, max_seq_len=40)
    assert chunked.token_stats == whole.token_stats and chunked.trained_tokens == whole.trained_tokens
    assert _codes(chunked) == _codes(whole)
    assert seen == sorted(seen) and len(seen) > 5 and seen[-1] == 1.0
