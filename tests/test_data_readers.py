"""Reading every container, with line numbers for the faults that stop a row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lora_tui.core.data import DataError, load_examples

REPO = Path(__file__).resolve().parent.parent
FORMATS = REPO / "sample_data" / "formats"


def _write(path: Path, data: bytes | str) -> Path:
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def _codes(loaded) -> list[tuple[int | None, str]]:
    return [(f.line, f.code) for f in loaded.findings]


@pytest.mark.parametrize("name, fmt, container, rows", [
    ("alpaca.jsonl", "alpaca", "jsonl", 4),
    ("messages.jsonl", "messages", "jsonl", 4),
    ("sharegpt.json", "sharegpt", "json", 5),
    ("prompt_completion.csv", "prompt_completion", "csv", 5),
    ("instruction_response.parquet", "instruction_response", "parquet", 5),
    ("text.jsonl", "text", "jsonl", 5),
    ("hf_disk", "messages", "hf-disk", 5),
])
def test_each_shipped_format_example_loads(name, fmt, container, rows):
    loaded = load_examples(FORMATS / name)
    assert (loaded.format, loaded.container, loaded.rows, len(loaded.examples)) == (fmt, container, rows, rows)
    assert loaded.findings == []
    for example in loaded.examples:
        if fmt == "text":
            assert example.text and example.messages is None
        else:
            assert example.messages[-1]["role"] == "assistant"
            assert example.messages[-1]["content"].startswith("Ahoy! ")


def test_txt_folder_is_chunked_to_the_max_length(embedded_tokenizer, tmp_path):
    folder = tmp_path / "books"
    folder.mkdir()
    words = " ".join(f"word{i}" for i in range(600))
    _write(folder / "a.txt", words)
    _write(folder / "b.txt", "A short note.\n")
    loaded = load_examples(folder, tokenizer=embedded_tokenizer, max_seq_len=128)
    assert loaded.container == "txt-folder" and loaded.format == "text"
    by_file = {}
    for e in loaded.examples:
        by_file.setdefault(e.source, []).append(e)
    assert [e.line for e in by_file["a.txt"]] == list(range(1, len(by_file["a.txt"]) + 1))
    assert len(by_file["a.txt"]) > 3 and len(by_file["b.txt"]) == 1
    assert "".join(e.text for e in by_file["a.txt"]) == words  # nothing lost at the cuts
    for e in by_file["a.txt"]:
        assert len(embedded_tokenizer(e.text, add_special_tokens=False)["input_ids"]) <= 128


def test_shipped_txt_folder_loads_without_tokenizer():
    loaded = load_examples(FORMATS / "txt_folder")
    assert loaded.format == "text" and {e.source for e in loaded.examples} == {"harbour_notes.txt",
                                                                               "log_of_the_lora.txt"}


def test_bom_and_crlf_are_read_normally(tmp_path):
    rows = [{"instruction": f"Question {i}?", "output": f"Answer {i}."} for i in range(3)]
    body = "\r\n".join(json.dumps(r) for r in rows) + "\r\n"
    path = _write(tmp_path / "bom.jsonl", b"\xef\xbb\xbf" + body.encode())
    loaded = load_examples(path)
    assert loaded.findings == [] and len(loaded.examples) == 3
    assert loaded.examples[0].messages[0]["content"] == "Question 0?"
    csv_path = _write(tmp_path / "bom.csv", b"\xef\xbb\xbfprompt,completion\r\nHi?,Hello.\r\nBye?,Bye.\r\n")
    loaded = load_examples(csv_path)
    assert loaded.format == "prompt_completion" and [e.line for e in loaded.examples] == [2, 3]


def test_jsonl_faults_have_their_line_numbers(tmp_path):
    good = json.dumps({"instruction": "Q?", "output": "A."})
    raw = (good + "\n" + '{"instruction": "cut short", \n' + "\n" + good.replace("Q?", "R?") + "\n").encode()
    raw += b'{"instruction": "caf\xe9", "output": "x"}\n' + b'["not", "an", "object"]\n'
    loaded = load_examples(_write(tmp_path / "f.jsonl", raw))
    assert _codes(loaded) == [(2, "malformed_json"), (5, "undecodable_bytes"), (6, "wrong_type")]
    assert loaded.rows == 5  # the blank line 3 is not a row
    assert [e.line for e in loaded.examples] == [1, 4]


def test_json_array_elements_are_numbered_by_row(tmp_path):
    # by element, not file line: a minified array is one line (issue 16 item 8); messages keep the file line
    text = ('[\n  {"prompt": "a?", "completion": "b."},\n  {"prompt": "c?",\n   "completion": 3},\n'
            '  {"prompt": "d?" "completion": "e."},\n  {"prompt": "f?", "completion": "g."}\n]\n')
    loaded = load_examples(_write(tmp_path / "arr.json", text))
    assert loaded.container == "json"
    assert _codes(loaded) == [(2, "wrong_type"), (3, "malformed_json")]
    assert "file line 5" in loaded.findings[1].message
    assert [e.line for e in loaded.examples] == [1, 4]


def test_json_object_wrapping_a_list_and_jsonl_named_json(tmp_path):
    wrapped = {"name": "demo", "data": [{"text": "one"}, {"text": "two"}]}
    loaded = load_examples(_write(tmp_path / "w.json", json.dumps(wrapped, indent=2)))
    assert [e.text for e in loaded.examples] == ["one", "two"]
    assert [e.line for e in loaded.examples] == [1, 2]
    lines = _write(tmp_path / "l.json", '{"text": "one"}\n{"text": "two"}\n')
    loaded = load_examples(lines)
    assert loaded.container == "jsonl" and len(loaded.examples) == 2


def test_csv_rows_carry_file_line_numbers(tmp_path):
    text = 'prompt,completion\n"multi\nline?",yes\nshort?\n"ok?","fine."\n'
    loaded = load_examples(_write(tmp_path / "c.csv", text))
    assert _codes(loaded) == [(4, "schema_mismatch")]  # the row with one field
    assert [e.line for e in loaded.examples] == [2, 5]
    assert loaded.examples[0].messages[0]["content"] == "multi\nline?"


def test_csv_messages_column_holding_json(tmp_path):
    conv = json.dumps([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Ahoy!"}])
    text = "messages\n" + '"' + conv.replace('"', '""') + '"\n'
    loaded = load_examples(_write(tmp_path / "m.csv", text))
    assert loaded.format == "messages" and loaded.examples[0].messages[1]["content"] == "Ahoy!"


def test_parquet_row_numbers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": "a"}, {"text": ""}, {"text": "c"}]), path)
    loaded = load_examples(path)
    assert _codes(loaded) == [(2, "empty_field")] and [e.line for e in loaded.examples] == [1, 3]


def test_hf_disk_dataset_dict_uses_train_split(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list([{"text": "x"}, {"text": "y"}]),
                 "test": Dataset.from_list([{"text": "z"}])}).save_to_disk(str(tmp_path / "dd"))
    loaded = load_examples(tmp_path / "dd")
    assert loaded.container == "hf-disk" and [e.text for e in loaded.examples] == ["x", "y"]
    assert _codes(loaded) == [(None, "split_chosen")]
    assert "using split 'train' of train, test" in loaded.findings[0].message
    assert [e.line for e in loaded.examples] == [1, 2]  # rows numbered from 1, as in every other reader


def _empty_folder(d: Path) -> Path:
    folder = d / "nothing"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("make, needle", [
    (lambda d: d / "missing.jsonl", "no such file"),
    (lambda d: _write(d / "empty.jsonl", "\n \n"), "empty"),
    (lambda d: _write(d / "data.xlsx", "PK\x03\x04"), "unsupported"),
    (_empty_folder, "no .txt files"),
    (lambda d: _write(d / "broken.parquet", "not parquet"), "Parquet"),
])
def test_unreadable_inputs_raise_data_error_naming_the_file(tmp_path, make, needle):
    path = make(tmp_path)
    with pytest.raises(DataError) as info:
        load_examples(path)
    assert needle in str(info.value) and str(path.name) in str(info.value) and "Fix" in str(info.value)


def test_undecodable_txt_file_is_reported_and_skipped(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    _write(folder / "good.txt", "Plain text.\n")
    _write(folder / "bad.txt", b"line one\nline \xff two\n")
    loaded = load_examples(folder)
    assert [(f.source, f.line, f.code) for f in loaded.findings] == [("bad.txt", 2, "undecodable_bytes")]
    assert [e.source for e in loaded.examples] == ["good.txt"]
    single = load_examples(folder / "good.txt")
    assert single.container == "txt" and single.examples[0].text == "Plain text.\n"


def test_undecodable_bytes_in_a_json_array_skip_only_that_element(tmp_path):
    raw = b'[\n{"text": "fine"},\n{"text": "caf\xe9"},\n{"text": "also fine"}\n]\n'
    loaded = load_examples(_write(tmp_path / "a.json", raw))
    assert _codes(loaded) == [(2, "undecodable_bytes")] and "(file line 3)" in loaded.findings[0].message
    assert [e.text for e in loaded.examples] == ["fine", "also fine"]
