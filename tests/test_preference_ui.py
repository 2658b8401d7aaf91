"""The wizard and the plain-terminal clients with preference data (issue 28 items 2, 4, must-holds): the
Dataset step takes pairs as dpo data and previews the prompt (masked) and each answer as scored; the
Parameters step explains beta, loss_type and the rest in one line like the others; the Training screen's
panel, `attach` and `runs` show the reward margin and accuracy."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from screenshots.fixed import FixedBackend, snapshot_state
from tests.support.ui import goto, wizard_at
from tests.support.wait import until

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(300)


def test_dataset_step_previews_pairs_as_scored(monkeypatch, embedded_model_dir):
    monkeypatch.chdir(REPO)
    state = snapshot_state(data__train=str(REPO / "sample_data/bad/preference_faults.jsonl"), data__max_seq_len=512)
    assert state.config.training.method == "sft"

    async def go():
        async with wizard_at("dataset", size=(120, 40), state=state, backend=FixedBackend()) as pilot:
            app = pilot.app
            await until(pilot, lambda: state.dataset_current() is not None, what="validation")
            screen = app.screen
            assert state.config.training.method == "dpo"  # the rows are pairs: the method follows them
            preview = str(screen.query_one("#preview").render())
            assert "chosen: Ahoy! " in preview and "<|im_end|>" in preview and "rejected: " in preview
            assert "<|im_start|>assistant" in preview  # the masked prompt ends with the generation header
            assert "Preference data: trains with training.method=dpo" in str(screen.query_one("#data-summary").render())
            lengths = str(screen.query_one("#histogram").render())
            assert "prompt tokens:" in lengths and "chosen tokens:" in lengths and "1 skipped" in lengths
            await pilot.press("ctrl+n")
            assert app.current_mode == "parameters"  # one trainable pair: it may go on
            await goto(pilot, "parameters")
            from lora_tui.core.config import field_help

            for key in ("method", "beta", "loss_type", "init_adapter"):
                row = app.screen.query_one(f"#field-training-{key}")
                assert row.help == field_help("training", key) and "\n" not in row.help and len(row.help) < 160
            editor = app.screen.query_one("#field-training-init_adapter").editor  # the SFT run to start from
            editor.focus()
            await pilot.press(*"runs/sft", "tab")
            await until(pilot, lambda: state.config.training.init_adapter == "runs/sft", what="the typed adapter")

    asyncio.run(go())


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_panels_attach_and_runs_show_the_preference_metrics(tmp_path, monkeypatch, capsys):
    """A dpo run's events as the trainer writes them: the Training screen's panel, `attach` and `runs`."""
    from lora_tui.commands.progress import follow
    from lora_tui.commands.runs import _list
    from lora_tui.core.config import Config, save_config
    from lora_tui.core.run.history import RunHistory
    from lora_tui.core.run.runs import RunDirectory
    from lora_tui.ui.widgets.run_panels import now_panel

    run = RunDirectory(tmp_path / "runs" / "pairs")
    run.path.mkdir(parents=True)
    config = Config()
    config.training.method = "dpo"
    save_config(config, run.config_path)
    pref = {"beta": 0.1, "loss_type": "sigmoid", "reference": "the base model, the adapter switched off (no second copy)"}
    run.append_event("started", method="LoRA", training_method="dpo", preference=pref, model="embedded", max_steps=2)
    run.append_event("eval", step=0, phase="before", eval_loss=0.6931, reward_margin=0.0, reward_accuracy=0.0)
    run.append_event("step", step=2, max_steps=2, epoch=0.1, loss=0.61, lr=1e-4, reward_margin=0.42, reward_accuracy=0.75,
                     logp_chosen=-41.2, logp_rejected=-55.0)
    run.append_event("eval", step=2, phase="after", eval_loss=0.55, reward_margin=0.8, reward_accuracy=0.9375)
    run.append_event("finished", step=2, adapter=str(run.adapter_dir))
    run.write_status("finished", step=2, max_steps=2, eval_reward_accuracy=0.9375)

    panel = str(now_panel(RunHistory.of(run)))
    assert "margin    0.42" in panel and "reward acc75%" in panel  # labels are 10 cells wide
    assert "eval acc  94% (before 0%)" in panel and "logp c/r  -41.2 / -55.0" in panel
    follow(run, live=False)  # sys.stdout as it is now (capsys's), not as it was when progress was imported
    out = capsys.readouterr().out
    assert "LoRA DPO (beta 0.1, sigmoid loss; reference: the base model" in out
    assert "margin 0.420 acc 75% logp -41.2/-55.0" in out and "eval (after) at step 2: loss 0.5500  margin 0.800 acc 94%" in out

    class Args:
        dir, json = str(tmp_path / "runs"), False

    _list(Args())
    listing = capsys.readouterr().out
    assert "METHOD" in listing.splitlines()[0]
    assert " dpo " in listing.splitlines()[1] and "(eval reward acc 94%)" in listing
