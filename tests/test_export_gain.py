"""Does the fine-tune survive the export? (issue 26 items 1, 2): the judgement on measured numbers, the KL from
llama.cpp's listed tokens, and real GGUF files in llama.cpp, including files built to fail
(tests/support/broken_gguf.py) on a tiny model trained 30 steps until it answers in the taught way."""

from __future__ import annotations

import numpy as np
import pytest

from lora_tui.core.export.gain import BANDS, BROKEN_FACTOR, KEEP_MIN, MIN_ROWS, judge


def _rows(n_rows: int, keep: float, *, gain: float = 1.0, noise: float = 0.05, seed: int = 0, length: int = 20):
    """Per-row log-probs of trained tokens: base, adapter = base + gain, artefact = base + keep * gain + noise."""
    rng = np.random.default_rng(seed)
    base = [rng.normal(-3.0, 1.0, length) for _ in range(n_rows)]
    adapter = [b + rng.normal(gain, 0.3, length) for b in base]
    artefact = [b + keep * (a - b) + rng.normal(0, noise, length) for a, b in zip(adapter, base)]
    return base, adapter, artefact


def _judge(base, adapter, artefact, kl: float, gguf_type: str = "q4_k_m", same: float = 0.9):
    kls = [np.full(len(b), kl) for b in base]
    tops = [np.arange(len(b)) < same * len(b) for b in base]
    return judge(base, adapter, artefact, kls, tops, gguf_type=gguf_type)


def test_a_file_that_keeps_the_fine_tune_passes_and_says_how_much_with_its_interval():
    j = _judge(*_rows(40, 0.96), kl=BANDS["q4_k_m"]["small"][0] * 0.8)
    assert j.verdict == "keeps" and j.ok
    assert j.kept_low < 0.96 < j.kept_high and j.kept_high - j.kept_low < 0.1
    assert j.words == (f"keeps {round(j.kept * 100)} % ({round(j.kept_low * 100)}-{round(j.kept_high * 100)} %) "
                       "of what training taught; moves as much as a q4_k_m normally does")


def test_a_file_that_loses_the_fine_tune_fails():
    j = _judge(*_rows(40, 0.05), kl=0.5)
    assert j.verdict == "loses" and not j.ok and j.kept_high < KEEP_MIN
    assert j.words.startswith("LOSES the fine-tune: keeps 5 %")


def test_a_share_below_the_threshold_but_not_clearly_is_not_a_failure():
    """'Clearly below': the whole interval must lie under KEEP_MIN. Few noisy rows around 40 % do not fail."""
    j = _judge(*_rows(6, 0.4, noise=1.5, seed=3, length=6), kl=0.05)
    assert j.kept < KEEP_MIN and j.kept_high >= KEEP_MIN
    assert j.verdict == "keeps" and j.ok


def test_training_that_changed_too_little_is_judged_by_the_types_normal_band():
    base, adapter, artefact = _rows(40, 1.0, gain=0.0)
    normal = _judge(base, adapter, artefact, kl=BANDS["q8_0"]["small"][0] / 2, gguf_type="q8_0")
    assert normal.verdict == "normal" and normal.ok and "too little to judge" in normal.words
    assert "moves as much as a q8_0 normally does" in normal.words
    broken = _judge(base, adapter, artefact, kl=BANDS["q8_0"]["small"][0] * BROKEN_FACTOR * 2, gguf_type="q8_0")
    assert broken.verdict == "abnormal" and not broken.ok and "likely broken" in broken.words


def test_too_few_rows_are_not_judged_on_the_gain():
    j = _judge(*_rows(MIN_ROWS - 1, 0.0), kl=0.001, gguf_type="q8_0")
    assert j.kept_low is None and j.verdict == "normal" and f"only {MIN_ROWS - 1} held-out rows" in j.words


def test_the_interval_covers_the_true_share_about_95_percent_of_the_time():
    """The bootstrap over rows: on 60 simulated exports keeping 80 %, the 95 % interval holds 0.8 in most."""
    covered = 0
    for seed in range(60):
        j = _judge(*_rows(30, 0.8, noise=0.4, seed=seed), kl=0.05)
        covered += j.kept_low <= 0.8 <= j.kept_high
    assert covered >= 51, covered  # 95 % nominal; binomial(60, .95) is below 52 about 3 % of the time


def test_kl_from_listed_tokens_is_exact_when_all_are_listed_and_a_lower_bound_when_not():
    import torch

    from lora_tui.core.export.scoring import _kl_exact, _kl_listed

    torch.manual_seed(0)
    p_log = torch.log_softmax(torch.randn(5, 50) * 2, -1)
    q_log = torch.log_softmax(torch.randn(5, 50) * 2, -1)
    exact = _kl_exact(p_log, q_log)
    order = q_log.argsort(-1, descending=True)
    full, rest = _kl_listed(p_log, order, q_log.gather(-1, order))
    assert torch.allclose(full, exact, atol=1e-5) and float(rest.max()) < 1e-5
    top, rest = _kl_listed(p_log, order[:, :10], q_log.gather(-1, order[:, :10]))
    assert bool((top <= exact + 1e-6).all()) and bool((top < exact).any()) and float(rest.min()) > 0
    padded_ids = torch.cat([order[:, :10], torch.zeros(5, 3, dtype=torch.long)], -1)
    padded_q = torch.cat([q_log.gather(-1, order[:, :10]), torch.full((5, 3), -1e30)], -1)
    assert torch.allclose(_kl_listed(p_log, padded_ids, padded_q)[0], top)  # padding counts for nothing


# --- real files in llama.cpp ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def taught_run(tmp_path_factory, tiny_model_dir):
    """The tiny Llama trained 30 LoRA steps on 24 rows that all answer 'Ahoy! ... — Cap'n LoRA' (6 validation rows)."""
    from lora_tui.core.run.launcher import start_run
    from tests.support.training import tiny_config, wait_done, write_data_files

    root = tmp_path_factory.mktemp("gain")
    run = start_run(tiny_config(tiny_model_dir, write_data_files(root), "training.max_steps=30", "training.eval_steps=0",
                                "training.save_steps=0"), root / "taught")
    assert wait_done(run, 900) == "finished", run.log_path.read_text()[-3000:]
    return run.path


def _check(run, path):
    from lora_tui.core.export.check import verify_export

    return verify_export(run, path.parent, gguf_file=path.name, n_prompts=1, max_new_tokens=8, runtime="llama.cpp")


def test_a_k_quant_that_keeps_the_fine_tune_passes_in_llama_cpp(taught_run, capsys):
    """`lora-tui export RUN --gguf --gguf-type q4_k_m`: exit 0, and it says what it keeps and which runtime ran."""
    from lora_tui.cli import main

    assert main(["export", str(taught_run), "--gguf", "--gguf-type", "q4_k_m"]) == 0
    out = capsys.readouterr().out
    assert "Gain kept" in out and "PASS: keeps" in out and "Ran in:      llama.cpp, xllamacpp" in out, out
    written = taught_run / "gguf" / f"{taught_run.name}-q4_k_m.gguf"
    card = (taught_run / "adapter" / "README.md").read_text()
    assert "## Exports" in card and f"`{written.name}`" in card and "| keeps |" in card, card[-2000:]


@pytest.mark.parametrize("variant", ["base", "norm_offset"])
def test_a_file_without_the_fine_tune_fails(taught_run, tmp_path, variant):
    from tests.support.broken_gguf import write_broken_gguf

    result = _check(taught_run, write_broken_gguf(taught_run, tmp_path / f"{variant}.gguf", variant))
    assert result.template_same and result.eos_ok  # only the weights are wrong
    assert result.verdict == "loses" and not result.ok, result.table()
    assert result.judgement.kept_high < KEEP_MIN and result.judgement.gain_low > 0.05


def test_a_file_with_another_template_fails_however_much_it_keeps(taught_run, tmp_path):
    from tests.support.broken_gguf import write_broken_gguf

    result = _check(taught_run, write_broken_gguf(taught_run, tmp_path / "template.gguf", "template"))
    assert result.judgement.ok and not result.template_same and not result.ok
    assert "Chat template    DIFFERENT" in result.table()


def test_size_estimates_before_writing_match_the_files(taught_run, tmp_path, tiny_model_dir):
    from lora_tui.core.export.artefacts import export_gguf
    from lora_tui.core.export.sizes import gguf_sizes

    estimates = gguf_sizes(str(tiny_model_dir))
    for gguf_type in ("f16", "q8_0", "q4_0"):
        size = export_gguf(taught_run, tmp_path / f"{gguf_type}.gguf", gguf_type=gguf_type).stat().st_size
        assert abs(estimates[gguf_type] - size) / size < 0.02, (gguf_type, estimates[gguf_type], size)


def test_the_users_check_prompts_are_scored_too(taught_run, tmp_path):
    """--check-prompts FILE (a chat JSONL with answers): its conversations join the run's 6 validation rows."""
    import json

    from lora_tui.core.export.artefacts import export_gguf
    from lora_tui.core.export.check import verify_export

    mine = tmp_path / "mine.jsonl"
    mine.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                                                     {"role": "assistant", "content": f"Ahoy! {i} plus {i} is {2 * i}. — Cap'n LoRA"}]}) + "\n"
                            for i in (100, 200, 300)))
    path = export_gguf(taught_run, tmp_path / "q8_0.gguf", gguf_type="q8_0")
    result = verify_export(taught_run, path.parent, gguf_file=path.name, check_prompts=str(mine), max_new_tokens=4)
    assert len(result.answers) == 3 and result.judgement.rows == 9 and result.verdict == "keeps", result.table()


def test_the_lora_gguf_on_its_base_is_checked_the_same_way(taught_run, capsys):
    """`lora-tui export RUN --gguf-adapter` (a format of the table): llama.cpp applies the LoRA GGUF on the base
    file and the check says what it keeps; the model card lists it."""
    from lora_tui.cli import main

    assert main(["export", str(taught_run), "--gguf-adapter"]) == 0
    out = capsys.readouterr().out
    assert "LoRA adapter" in out and "Ran in:      llama.cpp" in out, out
    assert "Verdict          PASS: identical to the adapter" in out and "keeps 100 %" in out, out  # f16 base + LoRA
    assert f"LoRA GGUF:   {taught_run / 'gguf' / (taught_run.name + '-lora.gguf')}" in out
    card = (taught_run / "adapter" / "README.md").read_text()
    assert f"`{taught_run.name}-lora.gguf` | LoRA on the f16 base |" in card and "| keeps |" in card, card[-1500:]


def test_the_model_card_carries_each_checks_measured_columns(tmp_path, tiny_model_dir):
    """record_check stores the verdict table's columns; the card's Exports table shows them per file (no model run)."""
    import json

    from lora_tui.core.export.artefacts import record_check
    from lora_tui.core.export.gain import judge
    from lora_tui.core.run.model_card import EXPORT_COLUMNS, render_model_card
    from lora_tui.core.run.runs import RunDirectory
    from tests.support.chat import make_fake_run

    run = RunDirectory(make_fake_run(tmp_path, tiny_model_dir, with_adapter=False))
    written = run.path / "gguf" / "fake-run-q4_k_m.gguf"
    written.parent.mkdir()
    written.write_bytes(b"GGUF" + bytes(2**20))
    (run.path / "exports.json").write_text(json.dumps({"gguf": [{"path": str(written), "type": "q4_k_m"}]}))
    base, adapter, artefact = _rows(20, 0.9)
    j = judge(base, adapter, artefact, [np.full(20, 0.05)] * 20, [np.ones(20, bool)] * 20, gguf_type="q4_k_m")
    record_check(run, str(written), {"verdict": j.verdict, "ok": True, "judgement": j.to_dict(), "template_same": True,
                                     "eos_ok": True, "learned_eos": "<|im_end|>"})
    card = render_model_card(run)
    assert "| File | Type | Size | " + " | ".join(EXPORT_COLUMNS) + " |" in card
    row = next(line for line in card.splitlines() if line.startswith("| `fake-run-q4_k_m.gguf`"))
    assert f"| q4_k_m | 1.0 MiB | {round(j.kept * 100)} % (" in row and "| 0.0500 / 0.050 | 100.0% | same |" in row, row
    assert row.endswith("| <|im_end|> stops | keeps |"), row


def test_swapped_tensors_in_a_real_model_fail(embedded_run, tmp_path):
    """ffn_gate / ffn_up swapped in every layer (a fused gate_up split in the wrong order), in the embedded model's
    q8_0, in llama.cpp. On the tiny models the fault leaves the fine-tune's gain in place (README: 96-97 % kept), on a
    real model it does not. The fixture's adapter is small and random, so the gain is within noise and the file is
    judged by how far it moves against what a q8_0 normally moves a small model: far more, likely broken."""
    from lora_tui.core.export.check import verify_export
    from tests.support.broken_gguf import write_broken_gguf

    path = write_broken_gguf(embedded_run, tmp_path / "swapped.gguf", "swapped")
    result = verify_export(embedded_run, path.parent, gguf_file=path.name, n_prompts=1, n_rows=4, max_new_tokens=8,
                           runtime="llama.cpp")
    assert result.template_same and result.eos_ok, result.table()  # only the weights are wrong
    assert result.verdict == "abnormal" and not result.ok and "likely broken" in result.verdict_words, result.table()
    assert result.judgement.kl_mean > BROKEN_FACTOR * BANDS["q8_0"]["small"][0]


def test_a_file_failed_on_a_lower_bound_of_its_move_says_why():
    """The KL from llama.cpp's listed tokens is a lower bound; when it is already past what judge fails a file on, the
    words say so (they said "how far it moves cannot be told" beside FAIL, the embedded swapped q8_0 above)."""
    base, adapter, artefact = _rows(3, 1.0)  # too few rows to judge the gain: judged by the move
    limit = BROKEN_FACTOR * BANDS["q8_0"]["small"][0]
    kls = [np.full(len(b), limit * 20) for b in base]
    j = judge(base, adapter, artefact, kls, [np.zeros(len(b), bool) for b in base], gguf_type="q8_0",
              rest_mass=[np.full(len(b), 0.8) for b in base])
    assert j.verdict == "abnormal" and not j.ok and "likely broken" in j.words and "at least 4.00" in j.words, j.words
    j = judge(base, adapter, artefact, [k / 100 for k in kls], [np.ones(len(b), bool) for b in base],
              gguf_type="q8_0", rest_mass=[np.full(len(b), 0.8) for b in base])
    assert j.ok and "cannot be told" in j.words, j.words  # a small lower bound says nothing
