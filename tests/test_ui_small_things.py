"""The small ones of issue 24 item 9, each as a user meets it: the Dataset verdict for a file with errors, the
refusal that points at the Findings tab, the chat's loading line, a run name already taken in the wizard,
a finished run's footer, the Training header's numbers, and `lora-tui train`'s rounded losses.
(bitsandbytes' two lines of noise: tests/test_library_noise.py.)"""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from textual.widgets import Footer, TabbedContent

from screenshots.fixed import FakeChatSession, FixedBackend, snapshot_state
from screenshots.make_demo_run import write_demo_run
from screenshots.scenes import settle
from tests.conftest import REPO
from tests.support.ui import on_screen, run_scene, words
from tests.support.wait import until

pytestmark = pytest.mark.timeout(300)


def _run(coro) -> None:
    asyncio.run(coro)


def test_a_file_with_errors_is_not_a_green_ready(monkeypatch, embedded_model_dir):
    monkeypatch.chdir(REPO)

    async def check(pilot, app):
        report = app.state.dataset.report
        assert report.valid_rows < report.rows
        verdict = words(on_screen(app.screen.query_one("#data-verdict")))
        assert f"{report.valid_rows} usable, {report.rows - report.valid_rows} skipped" in verdict
        assert "Ready to train" not in verdict

    run_scene("dataset", check)


def test_no_valid_row_points_at_the_findings_tab_and_shows_it(tmp_path, monkeypatch, embedded_model_dir):
    from lora_tui.ui.app import make_app

    monkeypatch.chdir(REPO)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "robot", "content": "hi"}]}\n{"nope": 1\n')
    state = snapshot_state()
    state.config.data.train = str(bad)

    async def go():
        app = make_app(state=state, backend=FixedBackend())
        async with app.run_test(size=(80, 24)) as pilot:
            app.goto("dataset")
            await until(pilot, lambda: app.current_mode == "dataset" and app.state.dataset_current() is not None,
                        60, what="the check of the bad file")
            await pilot.pause()
            verdict = words(on_screen(app.screen.query_one("#data-verdict")))
            assert "Findings tab" in verdict and "listed below" not in verdict
            assert app.screen.query_one("#data-tabs", TabbedContent).active == "tab-findings"

    _run(go())


def test_the_chat_loading_line_says_loading_once(monkeypatch):
    from lora_tui.ui.app import make_app

    monkeypatch.chdir(REPO)
    release = threading.Event()

    class Backend(FixedBackend):
        def open_chat(self, run, on_progress=None):
            on_progress("Loading embedded:SmolLM2-135M-Instruct (16bit, fp32) on cpu", 0.2)
            release.wait(30)
            return FakeChatSession()

    async def go():
        app = make_app(run="tests/snapshot_apps/runs/capn-lora-demo", state=snapshot_state(), backend=Backend())
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.current_mode == "training")
            app.goto("chat")
            def header() -> str:
                found = app.screen.query("#chat-header") if app.current_mode == "chat" else []
                return words(on_screen(found[0])) if found else ""

            await until(pilot, lambda: "on cpu" in header(), what="the progress")
            release.set()
            assert header().startswith("Loading embedded:SmolLM2-135M-Instruct") and "Loading: Loading" not in header()

    _run(go())


def test_a_run_name_already_taken_is_said_in_the_wizards_words(tmp_path, monkeypatch, embedded_model_dir):
    """The toast names the form field to change, not the CLI's --run-dir / --overwrite; nothing starts."""
    from lora_tui.ui.app import make_app
    from lora_tui.ui.backend import Backend

    monkeypatch.chdir(REPO)
    taken = write_demo_run(tmp_path / "runs" / "taken")
    state = snapshot_state(output__runs_dir=str(tmp_path / "runs"), output__run_name="taken")
    before = (taken / "events.jsonl").read_bytes()

    class Starting(FixedBackend):
        def start_run(self, config):
            return Backend.start_run(self, config)

    async def go():
        app = make_app(state=state, backend=Starting())
        async with app.run_test(size=(80, 24)) as pilot:
            app.goto("parameters")
            await until(pilot, lambda: app.current_mode == "parameters" and app.screen.is_mounted)
            said = []
            monkeypatch.setattr(app.screen, "notify", lambda message, **kw: said.append(message))
            await until(pilot, lambda: app.screen.next_refusal() is None, 60, what="the form to be ready")
            app.screen.action_start()
            await until(pilot, lambda: said, 120, what="the refusal")
            assert "already holds a run" in said[-1] and "output.run_name" in said[-1], said
            assert "--run-dir" not in said[-1] and "--overwrite" not in said[-1]
            assert app.current_mode == "parameters"
    _run(go())
    assert (taken / "events.jsonl").read_bytes() == before


def test_a_finished_runs_footer_offers_no_stop_or_detach(monkeypatch):
    monkeypatch.chdir(REPO)

    async def check(pilot, app):
        footer = words(on_screen(app.screen.query_one(Footer)))
        assert "Chat" in footer and "Stop" not in footer and "Detach" not in footer

    run_scene("training", check)


def test_train_prints_losses_rounded():
    from lora_tui.commands.progress import describe

    line = describe({"type": "finished", "step": 24, "runtime_s": 81.0, "train_loss": 1.9843053817749023,
                     "eval_loss": 2.0123456789, "adapter": "runs/x/adapter"})
    assert "train loss 1.9843, eval loss 2.0123" in line


def _training_header(tmp_path, change, check) -> None:
    """The demo run written to ``tmp_path``, changed by ``change(run_path)``, opened on the Training step."""
    from lora_tui.ui.app import make_app

    run = write_demo_run(tmp_path / "demo-run")
    change(run)

    async def go():
        app = make_app(run=str(run), state=snapshot_state(), backend=FixedBackend())
        async with app.run_test(size=(80, 24)) as pilot:
            # the run read, every worker but the run's follower done, and what they posted painted
            await settle(pilot, lambda: app.current_mode == "training" and app.screen.run_state != "missing",
                         "the Training step's header for the changed run")
            check(app, words(on_screen(app.screen.query_one("#run-header"))),
                  words(on_screen(app.screen.query_one("#outcome"))))

    _run(go())


def _rewrite_events(run, change) -> None:
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    (run / "events.jsonl").write_text("".join(json.dumps(change(e) or e) + "\n" for e in events))


def test_the_header_counts_the_planned_steps_before_the_trainer_starts(tmp_path):
    def created(run):  # config.yaml says training.max_steps=60; the trainer has written nothing yet
        (run / "events.jsonl").write_text("")
        (run / "status.json").write_text(json.dumps({"state": "created"}))

    def check(app, header, outcome):
        assert "step 0/60" in header and "step 0/?" not in header, header

    _training_header(tmp_path, created, check)


def test_a_run_capped_by_steps_shows_no_epoch_total(tmp_path):
    def capped(run):  # 60 steps cover 0.6 of the 3 epochs asked for
        _rewrite_events(run, lambda e: e.update(epoch=round(e["step"] * 0.01, 4)) if e["type"] == "step" else None)

    def check(app, header, outcome):
        assert "epoch 0.60" in header and "epoch 0.60/3" not in header, header

    _training_header(tmp_path, capped, check)


def test_a_finished_runs_elapsed_is_its_finished_time(tmp_path):
    import re

    def check(app, header, outcome):
        finished = re.search(r"Finished in (\S+):", outcome).group(1)
        assert f"elapsed {finished}" in header, (header, outcome)

    _training_header(tmp_path, lambda run: None, check)

