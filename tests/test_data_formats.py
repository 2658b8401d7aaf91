"""Format detection, normalisation to chat messages, and each row fault with its line number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lora_tui.core.data import load_examples, split_examples
from lora_tui.core.data.records import Example


def _jsonl(tmp_path: Path, rows: list, name: str = "d.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


@pytest.mark.parametrize("row, fmt, messages", [
    ({"instruction": "Add.", "input": "2 and 3", "output": "5"}, "alpaca",
     _msgs(("user", "Add.\n\n2 and 3"), ("assistant", "5"))),
    ({"instruction": "Hi?", "input": "", "output": "Hello"}, "alpaca", _msgs(("user", "Hi?"), ("assistant", "Hello"))),
    ({"instruction": "Hi?", "response": "Hello", "system": "Be brief."}, "instruction_response",
     _msgs(("system", "Be brief."), ("user", "Hi?"), ("assistant", "Hello"))),
    ({"instruction": "Sum it", "context": "1, 2", "response": "3"}, "instruction_response",
     _msgs(("user", "Sum it\n\n1, 2"), ("assistant", "3"))),
    ({"prompt": "Hi?", "completion": "Hello"}, "prompt_completion", _msgs(("user", "Hi?"), ("assistant", "Hello"))),
    ({"prompt": _msgs(("user", "Hi?")), "completion": _msgs(("assistant", "Hello"))}, "prompt_completion",
     _msgs(("user", "Hi?"), ("assistant", "Hello"))),
    ({"messages": _msgs(("system", "S"), ("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"))},
     "messages", _msgs(("system", "S"), ("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"))),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}, {"role": "assistant",
                                                                               "content": "Yo"}]},
     "messages", _msgs(("user", "Hi"), ("assistant", "Yo"))),
    ({"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "a"},
                        {"from": "gpt", "value": "b"}]}, "sharegpt",
     _msgs(("system", "S"), ("user", "a"), ("assistant", "b"))),
])
def test_formats_normalise_to_messages(tmp_path, row, fmt, messages):
    loaded = load_examples(_jsonl(tmp_path, [row]))
    assert loaded.format == fmt and loaded.findings == []
    assert loaded.examples[0].messages == messages


def test_text_format_keeps_plain_text(tmp_path):
    loaded = load_examples(_jsonl(tmp_path, [{"text": "Once upon a time."}]))
    assert loaded.format == "text" and loaded.examples[0].text == "Once upon a time."
    assert loaded.examples[0].messages is None


GOOD = {"messages": _msgs(("user", "Q?"), ("assistant", "A."))}


@pytest.mark.parametrize("bad_row, code, words", [
    ({"messages": "hello"}, "wrong_type", "expected a list"),
    ({"messages": []}, "empty_field", "empty list"),
    ({"messages": [["user", "hi"]]}, "wrong_type", "expected an object"),
    ({"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}, "missing_field", "'content'"),
    ({"messages": _msgs(("user", "hi"), ("wizard", "x"))}, "unknown_role", "'wizard'"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 42}]}, "wrong_type",
     "number content"),
    ({"messages": _msgs(("user", "hi"))}, "no_assistant", "no assistant turn"),
    ({"messages": _msgs(("user", "hi"), ("assistant", "   "))}, "empty_turn", "empty assistant turn"),
    ({"messages": _msgs(("user", ""), ("assistant", "x"))}, "empty_turn", "empty user turn"),
    ({"prompt": "hi", "completion": "x"}, "schema_mismatch", "prompt_completion"),
    ({"mesages": _msgs(("user", "hi"), ("assistant", "x"))}, "missing_field", "'mesages'"),
])
def test_each_row_fault_is_an_error_on_its_line(tmp_path, bad_row, code, words):
    loaded = load_examples(_jsonl(tmp_path, [GOOD, GOOD | {"messages": _msgs(("user", "R?"), ("assistant", "B."))},
                                             bad_row, GOOD]))
    errors = [f for f in loaded.findings if f.severity == "error"]
    assert [(f.line, f.code) for f in errors] == [(3, code)], loaded.findings
    assert words in errors[0].message and errors[0].fix
    assert [e.line for e in loaded.examples] == [1, 2, 4]


@pytest.mark.parametrize("bad_row, code", [
    ({"instruction": "Q?", "output": None}, "wrong_type"),
    ({"instruction": "Q?", "output": 7}, "wrong_type"),
    ({"instruction": "  ", "output": "x"}, "empty_field"),
    ({"instruction": "Q?", "output": ""}, "empty_field"),
    ({"instruction": "Q?"}, "missing_field"),
])
def test_alpaca_field_faults(tmp_path, bad_row, code):
    good = {"instruction": "Q?", "output": "A."}
    loaded = load_examples(_jsonl(tmp_path, [good, bad_row]))
    assert [(f.line, f.code, f.severity) for f in loaded.findings] == [(2, code, "error")]


def test_extra_key_is_a_schema_warning_and_row_is_kept(tmp_path):
    rows = [{"instruction": "Q?", "output": "A."}, {"instruction": "R?", "output": "B.", "score": 3},
            {"instruction": "S?", "input": "", "output": "C."}]  # 'input' is optional: no warning
    loaded = load_examples(_jsonl(tmp_path, rows))
    assert [(f.line, f.code, f.severity) for f in loaded.findings] == [(2, "schema_differs", "warning")]
    assert "'score'" in loaded.findings[0].message and len(loaded.examples) == 3


def test_conversation_warnings(tmp_path):
    rows = [
        {"messages": _msgs(("user", "a"), ("assistant", "b"), ("user", "c"))},
        {"messages": _msgs(("user", "a"), ("user", "again"), ("assistant", "b"))},
        {"messages": _msgs(("user", "a"), ("system", "late"), ("assistant", "b"))},
    ]
    loaded = load_examples(_jsonl(tmp_path, rows))
    assert [(f.line, f.code) for f in loaded.findings] == [
        (1, "trailing_user_turn"), (2, "roles_not_alternating"), (3, "system_not_first")]
    assert len(loaded.examples) == 3


def test_unknown_format_is_one_clear_error(tmp_path):
    loaded = load_examples(_jsonl(tmp_path, [{"question": "q", "answer": "a"}] * 3))
    assert loaded.format == "unknown" and loaded.examples == []
    assert [(f.line, f.code) for f in loaded.findings] == [(1, "unknown_format")]
    assert "question" in loaded.findings[0].message and "instruction" in loaded.findings[0].fix


def test_split_examples_is_seeded_disjoint_and_complete():
    examples = [Example(i, _msgs(("user", str(i)), ("assistant", "x"))) for i in range(1, 101)]
    train, val = split_examples(examples, 0.1, seed=3)
    assert len(val) == 10 and len(train) == 90
    assert sorted(e.line for e in train + val) == list(range(1, 101))
    assert [e.line for e in train] == sorted(e.line for e in train)  # file order kept
    again = split_examples(examples, 0.1, seed=3)
    other = split_examples(examples, 0.1, seed=4)
    assert [e.line for e in again[1]] == [e.line for e in val]
    assert [e.line for e in other[1]] != [e.line for e in val]
    assert split_examples(examples[:2], 0.01, seed=0)[1] != []  # a tiny fraction still validates on one row
    assert split_examples(examples, 0.0, seed=0) == (examples, [])
    with pytest.raises(ValueError):
        split_examples(examples, 1.0, seed=0)
