"""`lora-tui estimate` takes what `train` takes and prints fixes as overrides (issue 8, item 1)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest

from lora_tui import cli

BIG = ["--model", "Llama-3.1-8B", "--batch", "16", "--seq-len", "4096", "--no-grad-checkpointing", "--device", "cpu"]


def _estimate(capsys, *args: str) -> tuple[int, dict]:
    code = cli.main(["estimate", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_config_file_and_overrides_are_read_like_train(tmp_path, capsys):
    config = tmp_path / "plan.yaml"
    config.write_text("lora:\n  r: 8\n  targets: qv\ndata:\n  max_seq_len: 256\n")
    code, out = _estimate(capsys, str(config), "training.micro_batch=2", "model.load_in=8bit", "--device", "cpu")
    assert code == 0
    plan = out["plan"]
    assert (plan["r"], plan["targets"], plan["max_seq_len"], plan["batch"], plan["quant"]) == \
        (8, ["q_proj", "v_proj"], 256, 2, "8bit")
    assert plan["seq_len"] == min(plan["longest"], 256)  # the plan's rows: the data's longest, as the trainer's
    assert out["command"] == f"lora-tui train {shlex.quote(str(config))} training.micro_batch=2 model.load_in=8bit"


def test_shorthands_are_the_same_as_overrides(capsys):
    _, by_flags = _estimate(capsys, "--r", "8", "--batch", "2", "--quant", "none", "--device", "cpu")
    _, by_words = _estimate(capsys, "lora.r=8", "training.micro_batch=2", "model.load_in=16bit", "--device", "cpu")
    assert by_flags["total_bytes"] == by_words["total_bytes"]
    assert by_flags["plan"] == by_words["plan"]


def test_each_printed_fix_does_what_it_claims(capsys):
    """Round trip: run estimate again with a fix's printed overrides; the estimate is the one claimed."""
    code, out = _estimate(capsys, *BIG)
    assert code == 1 and out["verdict"] == "wont_fit"
    assert len(out["fixes"]) >= 3
    for fix in out["fixes"]:
        words = shlex.split(fix["command"])
        assert words[:2] == ["lora-tui", "train"] and all("=" in w for w in words[2:])
        assert set(fix["overrides"]) <= set(words[2:])
        again_code, again = _estimate(capsys, *words[2:], "--device", "cpu")
        assert again["total_bytes"] == fix["new_total_bytes"], fix["title"]
        assert again_code == (1 if again["verdict"] == "wont_fit" else 0)


def test_smaller_micro_batch_keeps_the_effective_batch(capsys):
    _, out = _estimate(capsys, *BIG, "training.grad_accum=2")  # effective batch 16 x 2 = 32
    fix = next(f for f in out["fixes"] if set(f["changes"]) == {"batch"})
    values = dict(w.split("=", 1) for w in fix["overrides"])
    assert int(values["training.micro_batch"]) * int(values["training.grad_accum"]) >= 32


def test_human_output_prints_the_train_line_and_exit_codes_are_documented():
    run = subprocess.run([sys.executable, "-m", "lora_tui", "estimate", *BIG], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr
    assert "Fixes, strongest first" in run.stdout
    assert "     lora-tui train model.name=Llama-3.1-8B" in run.stdout
    helptext = subprocess.run([sys.executable, "-m", "lora_tui", "estimate", "--help"], capture_output=True, text=True).stdout
    assert "exit codes:" in helptext and "1    the plan will not fit" in helptext


@pytest.mark.parametrize("args, words", [
    (["nope.key=1"], "Unknown config section 'nope'"),
    (["lora.r=0"], "lora.r"),
    (["--model", "nobody/no-such-model"], "Unknown model"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, args, words):
    assert cli.main(["estimate", *args, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
