"""One fold of a run's events (core/run/history.py) serves the wizard, `attach` and the model card."""

from __future__ import annotations

import io
import json

from lora_tui.core.run.history import RunHistory
from lora_tui.core.run.runs import RunDirectory
from screenshots.make_demo_run import MAX_STEPS, demo_events, write_demo_run


def test_poll_reads_only_new_complete_lines(tmp_path):
    run = RunDirectory(tmp_path)
    events = demo_events(last_step=10, finished=False)
    lines = [json.dumps(e) + "\n" for e in events]
    (tmp_path / "events.jsonl").write_text("".join(lines[:5]) + lines[5][:7])  # the trainer is mid-write
    history = RunHistory()
    assert [e["seq"] for e in history.poll(run)] == [1, 2, 3, 4, 5]
    (tmp_path / "events.jsonl").write_text("".join(lines))
    assert [e["seq"] for e in history.poll(run)] == list(range(6, len(events) + 1))
    assert history.poll(run) == [] and history.step == 10


def test_outcome_and_eval_phases(tmp_path):
    run = RunDirectory(write_demo_run(tmp_path / "demo"))
    history = RunHistory.of(run)
    assert history.finished is not None and history.stopped is None and history.failed is None
    assert history.eval_before["phase"] == "before" and history.eval_after["phase"] == "after"
    assert history.max_steps == MAX_STEPS and history.fraction == 1.0


def test_model_card_reads_the_fold(tmp_path, monkeypatch):
    """The card takes its facts from RunHistory: a fold that says otherwise changes the card."""
    from lora_tui.core.run import model_card

    run = RunDirectory(write_demo_run(tmp_path / "demo"))
    real_of = RunHistory.of

    def fake_of(cls, run):
        history = real_of(run)
        history.evals_by_phase["before"] = {**history.eval_before, "eval_loss": 9.875}
        return history

    monkeypatch.setattr(RunHistory, "of", classmethod(fake_of))
    assert "| Before training | 9.875 |" in model_card.render_model_card(run)


def test_attach_output_uses_the_fold_for_missing_totals(tmp_path):
    from lora_tui.commands.progress import follow

    run = RunDirectory(write_demo_run(tmp_path / "demo"))
    events = [{k: v for k, v in e.items() if k != "max_steps" or e["type"] != "step"} for e in run.read_events()]
    run.events_path.write_text("".join(json.dumps(e) + "\n" for e in events))
    out = io.StringIO()
    assert follow(run, live=False, out=out) == "finished"
    assert f"step 1/{MAX_STEPS} " in out.getvalue()  # the total comes from the started event


def test_follow_writes_to_stdout_as_it_is_at_the_call(tmp_path, monkeypatch):
    """`follow`'s stream defaults to sys.stdout when called (a redirected CLI, pytest's capture), not the one
    bound when commands/progress.py was first imported."""
    import sys

    from lora_tui.commands.progress import follow

    run = RunDirectory(write_demo_run(tmp_path / "demo"))
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    assert follow(run, live=False) == "finished"
    assert f"step 1/{MAX_STEPS} " in out.getvalue()


def test_memory_events_are_folded_for_the_card():
    history = RunHistory()
    history.add([{"seq": 1, "type": "memory", "memory_peak_bytes": 5 * 2**30},
                 {"seq": 2, "type": "memory", "memory_peak_bytes": 6 * 2**30}])
    assert history.memory["memory_peak_bytes"] == 6 * 2**30
