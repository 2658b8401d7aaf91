"""Preference data for dpo / kto (issue 28 item 2): TRL's formats detected and normalised, faults named
with their line, tokens as the trainer scores them (checked against TRL's own tokenisation), and bad
preference data refused before a run exists."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lora_tui.core.data import DataError, validate_dataset
from lora_tui.core.data.formats import Normaliser
from lora_tui.core.data.precheck import check_trainable_prefix
from lora_tui.core.data.preference import PreferenceNormaliser, kto_weights, label_findings
from lora_tui.core.data.preference_load import load_preferences, method_of_data
from lora_tui.core.data.rows import RawRow

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data"


def _write(tmp_path: Path, rows: list, name: str = "p.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _codes(findings) -> dict:
    return {f.line: f.code for f in findings}


@pytest.mark.parametrize("name, fmt", [("preference.jsonl", "preference"),
                                       ("formats/preference_conversational.jsonl", "preference"),
                                       ("formats/preference_implicit.jsonl", "preference_implicit"),
                                       ("formats/preference_text.jsonl", "preference_implicit")])
def test_every_pair_format_gives_the_same_prompt_and_answers(name, fmt):
    loaded = load_preferences(SAMPLE / name, "dpo")
    assert loaded.format == fmt and loaded.examples and not loaded.findings
    first = loaded.examples[0]
    # implicit text: the answers keep the space after the shared text (TRL's rule), the prompt has no template
    chosen, rejected = first.chosen.lstrip(" "), first.rejected.lstrip(" ")
    assert chosen.startswith("Ahoy! ") and chosen.endswith(" — Cap'n LoRA")
    assert chosen[len("Ahoy! "):-len(" — Cap'n LoRA")] == rejected
    if name.endswith("text.jsonl"):
        assert first.prompt.startswith("Question: ") and first.prompt.endswith("Answer:")
        assert first.chosen[0] == first.rejected[0] == " "
    else:
        assert first.prompt[-1]["role"] == "user" and first.prompt[-1]["content"].endswith("?")


def test_implicit_prompts_are_cut_where_trl_cuts_them():
    from trl.data_utils import extract_prompt

    for path in ("formats/preference_implicit.jsonl", "formats/preference_text.jsonl"):
        raw = [json.loads(line) for line in (SAMPLE / path).read_text().splitlines()]
        ours = load_preferences(SAMPLE / path, "dpo").examples
        for row, example in zip(raw, ours):
            trl = extract_prompt(row)
            if isinstance(trl["prompt"], str):
                assert (example.prompt, example.chosen, example.rejected) == (trl["prompt"], trl["chosen"], trl["rejected"])
            else:
                assert example.prompt == trl["prompt"]
                assert example.chosen == trl["chosen"][0]["content"] and example.rejected == trl["rejected"][0]["content"]


def test_kto_reads_labelled_rows_and_splits_pairs_in_two():
    unpaired = load_preferences(SAMPLE / "formats/kto.jsonl", "kto")
    assert unpaired.format == "unpaired_preference"
    assert [e.label for e in unpaired.examples] == [True, False] * 4
    paired = load_preferences(SAMPLE / "formats/preference_conversational.jsonl", "kto")
    assert [e.label for e in paired.examples] == [True, False] * 4
    assert paired.examples[0].completion.startswith("Ahoy! ") and paired.examples[0].line == paired.examples[1].line


def test_faults_are_named_with_their_lines():
    loaded = load_preferences(SAMPLE / "bad/preference_faults.jsonl", "dpo")
    assert [e.line for e in loaded.examples] == [1, 5]  # line 5's prompt is only too long once tokenized
    assert _codes(loaded.findings) == {2: "missing_field", 3: "empty_field", 4: "same_answers", 6: "wrong_type"}
    assert "'rejected'" in loaded.findings[0].message and "'user' turn" in loaded.findings[-1].message


def test_lengths_and_the_cut_need_the_tokenizer(embedded_tokenizer):
    report = validate_dataset(SAMPLE / "bad/preference_faults.jsonl", tokenizer=embedded_tokenizer, max_seq_len=512,
                              method="dpo")
    assert _codes(report.errors) == {2: "missing_field", 3: "empty_field", 4: "same_answers", 5: "prompt_too_long",
                                     6: "wrong_type"}
    assert report.valid_rows == 1 and report.preference.dropped == 1
    short = validate_dataset(SAMPLE / "preference.jsonl", tokenizer=embedded_tokenizer, max_seq_len=50, method="dpo")
    stats = short.preference
    cut = [f for f in short.warnings if f.code == "truncated"]
    assert stats.truncated > 0 and len({f.line for f in cut}) == stats.truncated
    assert "chosen answer are cut off" in cut[0].message
    assert stats.prompt.max < 50 and stats.chosen.max > stats.rejected.max  # the sign-off makes chosen longer
    # the report's lengths are prompt + longest answer per row: the rows over the max length are the rows cut
    assert short.token_stats.over_max == stats.truncated and short.token_stats.max <= stats.prompt.max + stats.chosen.max


def test_tokens_are_the_ones_trl_would_score(embedded_tokenizer):
    """The prompt ids are TRL's conversational prompt (generation header included); each answer is TRL's
    completion up to the end-of-turn token (TRL also trains the template's newline after it; we, as in SFT, do not)."""
    from trl.data_utils import _tokenize, common_prefix_length

    from lora_tui.core.data.preference_tokens import tokenize_preferences
    from lora_tui.core.data.template import ChatFormatter

    examples = load_preferences(SAMPLE / "formats/preference_conversational.jsonl", "dpo").examples
    rows, findings = tokenize_preferences(ChatFormatter(embedded_tokenizer), examples, 512)
    assert not findings and len(rows) == len(examples)
    for example, row in zip(examples, rows):
        prompt = _tokenize(embedded_tokenizer, example.prompt, add_generation_prompt=True)["input_ids"]
        assert row.prompt_ids == prompt
        for answer, ids in ((example.chosen, row.chosen_ids), (example.rejected, row.rejected_ids)):
            full = _tokenize(embedded_tokenizer, example.prompt + [{"role": "assistant", "content": answer}])["input_ids"]
            trl = full[common_prefix_length(prompt, full):]
            assert ids == trl[:len(ids)] and embedded_tokenizer.decode(trl[len(ids):]) == "\n"
            assert embedded_tokenizer.decode(ids).endswith("<|im_end|>")


def test_kto_labels_all_one_way_or_unbalanced(tmp_path):
    one_way = load_preferences(_write(tmp_path, [{"prompt": "q", "completion": "a", "label": True}] * 3), "kto")
    assert [f.code for f in one_way.findings] == ["labels_one_sided"]
    rows = [{"prompt": f"q{i}", "completion": "a", "label": i < 2} for i in range(8)]  # 2 good, 6 bad
    loaded = load_preferences(_write(tmp_path, rows, "u.jsonl"), "kto")
    (note,) = loaded.findings
    assert note.code == "labels_unbalanced" and note.severity == "warning" and "x3" in note.message
    assert kto_weights(2, 6) == (3.0, 1.0) and kto_weights(6, 2) == (1.0, 3.0) and kto_weights(5, 4) == (1.0, 1.0)
    good, bad = kto_weights(3, 7)
    assert 1 <= good * 3 / (bad * 7) <= 4 / 3  # the KTO paper's range
    bad_label = load_preferences(_write(tmp_path, [{"prompt": "q", "completion": "a", "label": "maybe"},
                                                   {"prompt": "q", "completion": "b", "label": "false"}], "l.jsonl"), "kto")
    assert _codes(bad_label.findings) == {1: "bad_label", None: "labels_one_sided"}  # one row left: all false
    assert bad_label.examples[0].label is False  # "false" (CSV cells are text) reads as false
    assert label_findings([], "kto") == [] and label_findings(one_way.examples, "dpo") == []


def test_sft_rows_and_preference_rows_name_the_method_they_need():
    pair = RawRow(1, {"prompt": "q", "chosen": "a", "rejected": "b"})
    sft = Normaliser([pair])
    assert sft.format == "preference" and sft.findings[0].code == "preference_for_sft"
    assert "training.method=dpo" in sft.findings[0].fix and sft.row(pair) == (None, [])
    chat = RawRow(1, {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    assert "training.method=sft" in PreferenceNormaliser([chat], "dpo").findings[0].fix
    labelled = RawRow(1, {"prompt": "q", "completion": "a", "label": True})
    assert PreferenceNormaliser([labelled], "dpo").findings[0].code == "unpaired_for_dpo"
    assert "training.method=kto" in Normaliser([labelled]).findings[0].fix
    # a prompt/completion row whose label is not true / false stays an SFT row
    assert Normaliser([RawRow(1, {"prompt": "q", "completion": "a", "label": "news"})]).format == "prompt_completion"


def test_data_of_the_wrong_kind_is_refused_before_a_run_exists(tmp_path):
    assert check_trainable_prefix(SAMPLE / "preference.jsonl", method="dpo") == 303
    assert check_trainable_prefix(SAMPLE / "formats/kto.jsonl", method="kto") == 8
    with pytest.raises(DataError, match="training.method=dpo"):
        check_trainable_prefix(SAMPLE / "preference.jsonl")  # sft on pairs
    with pytest.raises(DataError, match="training.method=sft"):
        check_trainable_prefix(SAMPLE / "train.jsonl", method="dpo")
    with pytest.raises(DataError, match="training.method=kto"):
        check_trainable_prefix(SAMPLE / "formats/kto.jsonl", method="dpo")
    same = _write(tmp_path, [{"prompt": "q", "chosen": "a", "rejected": "a"}] * 2)
    with pytest.raises(DataError, match="line 1: chosen and rejected are the same"):
        check_trainable_prefix(same, method="dpo")
    one_way = _write(tmp_path, [{"prompt": "q", "completion": "a", "label": False}] * 2, "k.jsonl")
    with pytest.raises(DataError, match="every label is undesirable"):
        check_trainable_prefix(one_way, method="kto")


def test_start_run_refuses_bad_preference_data_and_settings(tmp_path, monkeypatch):
    from lora_tui.core.config import Config, apply_overrides
    from lora_tui.core.run.launcher import start_run
    from lora_tui.core.run.runs import RunError

    monkeypatch.setenv("LORA_TUI_RUNS", str(tmp_path / "runs"))
    base = ["model.name=/nonexistent/model", "data.validation="]
    cases = [([f"data.train={SAMPLE / 'bad/preference_faults.jsonl'}", "training.method=kto",
               "training.loss_type=sigmoid"], "not a kto loss"),
             ([f"data.train={SAMPLE / 'train.jsonl'}", "training.method=dpo"], "training.method=sft"),
             ([f"data.train={SAMPLE / 'preference.jsonl'}", "training.method=dpo", "training.batching=packed"], "pads"),
             ([f"data.train={SAMPLE / 'preference.jsonl'}", "training.method=dpo",
               f"training.init_adapter={tmp_path / 'nowhere'}"], "init_adapter")]
    for overrides, words in cases:
        with pytest.raises(RunError, match=words):
            start_run(apply_overrides(Config(), base + overrides), tmp_path / "runs" / "x")
        assert not (tmp_path / "runs" / "x").exists()


def test_method_of_data_and_validate_cli():
    assert [method_of_data(SAMPLE / p) for p in ("preference.jsonl", "formats/kto.jsonl", "train.jsonl")] == ["dpo", "kto", "sft"]
    result = subprocess.run([sys.executable, "-m", "lora_tui", "validate", str(SAMPLE / "bad/preference_faults.jsonl"),
                             "--max-seq-len", "512"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "Method    dpo" in result.stdout and "line 4: chosen and rejected are the same answer" in result.stdout
    assert "line 5: the prompt is" in result.stdout and "Result: 1 of 6 rows can be trained." in result.stdout
    as_sft = subprocess.run([sys.executable, "-m", "lora_tui", "validate", str(SAMPLE / "preference.jsonl"),
                             "--method", "sft", "--json"], capture_output=True, text=True, cwd=REPO)
    assert as_sft.returncode == 1 and json.loads(as_sft.stdout)["findings"][0]["code"] == "preference_for_sft"
