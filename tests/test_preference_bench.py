"""`lora-tui bench --method dpo` (issue 28 item 6): the plain TRL arm gets the user's pairs in TRL's own
conversational preference format, there is no packed arm for dpo, and the CLI picks the sample pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lora_tui.core.config import Config, apply_overrides

REPO = Path(__file__).resolve().parent.parent


def _config(*overrides: str) -> Config:
    return apply_overrides(Config(), [f"data.train={REPO / 'sample_data/preference.jsonl'}", "data.validation=",
                                      "training.method=dpo", *overrides])


def test_the_trl_arm_reads_the_pairs_as_trl_documents_them(tmp_path):
    from trl.data_utils import is_conversational

    from lora_tui.core.bench.runner import trl_data

    path = trl_data(_config(), tmp_path / "trl.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    source = [json.loads(line) for line in (REPO / "sample_data/preference.jsonl").read_text().splitlines()]
    assert len(rows) == len(source) == 303 and all(is_conversational(r) for r in rows)
    assert rows[0] == {"prompt": [{"role": "user", "content": source[0]["prompt"]}],
                       "chosen": [{"role": "assistant", "content": source[0]["chosen"]}],
                       "rejected": [{"role": "assistant", "content": source[0]["rejected"]}]}
    kto = trl_data(_config("training.method=kto", f"data.train={REPO / 'sample_data/formats/kto.jsonl'}"),
                   tmp_path / "kto.jsonl")
    assert [json.loads(line)["label"] for line in kto.read_text().splitlines()] == [True, False] * 4


def test_dpo_has_no_packed_arm(monkeypatch):
    from lora_tui.core.bench.runner import BenchError, check_inputs

    with pytest.raises(BenchError, match="no packing. Fix: --arms ours,trl"):
        check_inputs(_config("model.name=embedded"), 4, ["ours", "trl", "trl_packing"])


def test_bench_method_flag_picks_the_sample_pairs(monkeypatch):
    """`lora-tui bench --method dpo` without data: the sample pairs, ours against the plain DPOTrainer only."""
    from lora_tui.cli import build_parser
    from lora_tui.commands import bench

    seen = {}

    def fake_run_bench(config, **kwargs):
        seen.update(config=config, **kwargs)
        raise bench_error("stop here")

    from lora_tui.core.bench import runner

    bench_error = runner.BenchError
    monkeypatch.setattr(runner, "run_bench", fake_run_bench)
    args = build_parser().parse_args(["bench", "--method", "dpo", "--steps", "2", "--json"])
    assert bench.run(args) == bench.EXIT_BAD_INPUT
    assert seen["config"].training.method == "dpo" and seen["config"].data.train.endswith("sample_data/preference.jsonl")
    assert seen["arms"] == ["ours", "trl"]
