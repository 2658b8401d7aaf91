"""Pilot tests of what each screen promises: live following of a run (and quitting
while it trains), refusals on bad data, YAML save/load, presets, trust_remote_code
behind a warning, and memory fixes.

The training-screen tests write events.jsonl themselves, holding the run's lock as
a trainer would, so the screen's live following is tested without a training run
(the real run is covered by tests/test_ui_flow.py).
"""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import REPO
from screenshots.fixed import DATA, FixedBackend, snapshot_state
from screenshots.make_demo_run import MAX_STEPS, demo_events, write_demo_run
from tests.support.ui import goto, wizard_at
from tests.support.wait import until, wait_until

pytestmark = pytest.mark.timeout(300)


def _run(coro):
    return asyncio.run(coro)


# --- training screen ---------------------------------------------------------------------------------
@pytest.fixture
def live_run(tmp_path):
    """A run 'in progress': 10 steps written, the trainer's lock held by this test."""
    from lora_tui.core.run.runs import RunDirectory

    path = write_demo_run(tmp_path / "live-run", last_step=10, finished=False)
    run = RunDirectory(path)
    lock = run.acquire_lock()
    yield run
    lock.close()


def test_training_screen_follows_a_live_run_and_quit_asks(live_run):
    from lora_tui.ui.app import make_app

    async def go():
        app = make_app(run=str(live_run.path), backend=FixedBackend())
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.current_mode == "training" and app.screen.history.step == 10,
                        what="the history so far")
            screen = app.screen
            assert screen.run_state == "running"
            assert "step 10/60" in str(screen.query_one("#run-header").render())
            # The trainer writes more: the screen picks it up without any key press.
            for event in demo_events(last_step=20, finished=False):
                if event["type"] == "step" and event["step"] > 10:
                    fields = {k: v for k, v in event.items() if k not in ("seq", "time", "type")}
                    live_run.append_event("step", **fields)
            await until(pilot, lambda: screen.history.step == 20, what="new steps")
            assert len(screen.history.steps) == 20
            # Quitting while it trains asks first; Escape keeps the wizard open.
            await pilot.press("ctrl+q")
            await until(pilot, lambda: type(app.screen).__name__ == "QuitDuringTraining", what="the question")
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is screen, what="back to training")
            assert app.is_running
            # Detach: the wizard ends, the trainer is left alone (no stop request).
            await pilot.press("ctrl+q")
            await until(pilot, lambda: type(app.screen).__name__ == "QuitDuringTraining", what="the question")
            await pilot.press("d")
        assert app.return_code == 0
        assert not live_run.stop_requested()

    _run(go())


def test_stop_key_asks_then_requests_a_graceful_stop(live_run):
    from lora_tui.ui.app import make_app

    async def go():
        app = make_app(run=str(live_run.path), backend=FixedBackend())
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.current_mode == "training" and app.screen.history.step == 10)
            await pilot.press("s")
            await until(pilot, lambda: type(app.screen).__name__ == "Confirm", what="the confirmation")
            await pilot.press("n")
            assert not live_run.stop_requested()
            await pilot.press("s")
            await until(pilot, lambda: type(app.screen).__name__ == "Confirm", what="the confirmation")
            await pilot.press("y")
            await until(pilot, live_run.stop_requested, what="the stop request")
            assert live_run.read_status()["state"] == "stopping"

    _run(go())


def test_finished_run_shows_its_whole_history(tmp_path):
    from lora_tui.ui.app import make_app

    path = write_demo_run(tmp_path / "done-run")

    async def go():
        app = make_app(run=str(path), backend=FixedBackend())
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.current_mode == "training" and app.screen.history.outcome is not None)
            screen = app.screen
            assert screen.run_state == "finished"
            assert len(screen.history.steps) == MAX_STEPS
            assert screen.history.eval_steps == [0, 20, 40, 60]
            assert "Finished" in str(screen.query_one("#outcome").render())
            assert "Adapter saved" in str(screen.query_one("#log-tail").render())
            await pilot.press("ctrl+q")  # nothing trains: no question
        assert app.return_code == 0

    _run(go())


def test_unknown_run_is_reported_not_raised(tmp_path):
    from lora_tui.ui.app import make_app

    async def go():
        app = make_app(run=str(tmp_path / "nope"), backend=FixedBackend())
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: getattr(app.screen, "STEP", None) is not None, what="the first step")
            assert app.current_mode == "model"
            assert any("No run at" in n.message for n in app._notifications)

    _run(go())


# --- dataset refusals ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, reason", [("no_valid_rows.jsonl", "has no valid row"),
                                          ("all_masked.jsonl", "Every label is masked")])
def test_dataset_refuses_data_that_cannot_train(monkeypatch, embedded_model_dir, name, reason):
    monkeypatch.chdir(REPO)
    state = snapshot_state(data__train=str(DATA / name))

    async def go():
        async with wizard_at("dataset", state=state, backend=FixedBackend()) as pilot:
            app = pilot.app
            await until(pilot, lambda: state.dataset_current() is not None, what="validation")
            assert reason in str(app.screen.query_one("#data-verdict").render())
            await pilot.press("ctrl+n")
            assert app.current_mode == "dataset"  # refused
            assert any(reason in n.message for n in app._notifications)

    _run(go())


def test_dataset_unreadable_path_is_a_message(monkeypatch, embedded_model_dir, tmp_path):
    monkeypatch.chdir(REPO)
    state = snapshot_state()

    async def go():
        async with wizard_at("dataset", state=state, backend=FixedBackend()) as pilot:
            app = pilot.app
            await until(pilot, lambda: state.dataset_current() is not None)
            screen = app.screen
            screen.query_one("#data-path").focus()
            await pilot.press("end", *["backspace"] * 60, *str(tmp_path / "missing.jsonl"), "enter")
            await until(pilot, lambda: screen._checking is None, what="the check")
            assert "missing.jsonl" in str(screen.query_one("#data-verdict").render())
            await pilot.press("ctrl+n")
            assert app.current_mode == "dataset"

    _run(go())


# --- parameters --------------------------------------------------------------------------------------------
def test_parameters_save_and_load_yaml(monkeypatch, embedded_model_dir, tmp_path):
    from lora_tui.core.config import load_config

    monkeypatch.chdir(REPO)
    state = snapshot_state()
    target = tmp_path / "my-run.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora:\n  r: lots\n")
    other = tmp_path / "other.yaml"
    other.write_text("lora:\n  r: 64\n")

    async def type_path(pilot, path):
        await until(pilot, lambda: type(pilot.app.screen).__name__ == "PathPrompt", what="the path prompt")
        await pilot.press("ctrl+a", "ctrl+k", *str(path), "enter")

    async def go():
        async with wizard_at("parameters", state=state, backend=FixedBackend()) as pilot:
            app = pilot.app
            screen = app.screen
            await pilot.press("ctrl+s")
            await type_path(pilot, target)
            await until(pilot, target.is_file, what="the saved file")
            assert load_config(target) == state.config
            assert f"lora-tui train {target}" in str(screen.query_one("#command-line").render())
            # Saving over an existing file asks first.
            await pilot.press("ctrl+s")
            await type_path(pilot, target)
            await until(pilot, lambda: type(app.screen).__name__ == "Confirm", what="the overwrite question")
            await pilot.press("n")
            # A broken file is refused with its reason; nothing changes.
            await pilot.press("ctrl+o")
            await type_path(pilot, bad)
            await until(pilot, lambda: any("lora.r" in n.message for n in app._notifications), what="the error")
            assert state.config.lora.r == 16
            # A good one replaces the config and every field shows it.
            await pilot.press("ctrl+o")
            await type_path(pilot, other)
            await until(pilot, lambda: state.config.lora.r == 64, what="the loaded config")
            assert screen.query_one("#field-lora-r Input").value == "64"
            assert f"lora-tui train {other}" in str(screen.query_one("#command-line").render())

    _run(go())


def test_preset_by_keyboard(monkeypatch, embedded_model_dir):
    monkeypatch.chdir(REPO)
    state = snapshot_state()

    async def go():
        async with wizard_at("parameters", state=state, backend=FixedBackend()) as pilot:
            app = pilot.app
            app.screen.query_one("#preset").focus()
            await pilot.press("enter", "down", "enter")  # LoRA -> QLoRA
            await until(pilot, lambda: state.config.model.load_in == "4bit", what="the preset")
            assert (state.config.lora.r, state.config.lora.alpha, state.config.training.learning_rate) == (64, 16, 2e-4)
            assert app.screen.query_one("#field-model-load_in Select").value == "4bit"
            assert app.screen.query_one("#field-lora-r Input").value == "64"

    _run(go())


# --- model and hardware ----------------------------------------------------------------------------------------
def test_trust_remote_code_needs_a_confirmed_warning(monkeypatch, embedded_model_dir):
    from lora_tui.ui.app import make_app

    monkeypatch.chdir(REPO)
    state = snapshot_state()

    async def go():
        app = make_app(state=state, backend=FixedBackend())
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: getattr(app.screen, "STEP", None) == "model" and app.screen.is_mounted)
            await pilot.pause()
            app.screen.query_one("#trust").focus()
            await pilot.press("space")
            await until(pilot, lambda: type(app.screen).__name__ == "Confirm", what="the warning")
            await pilot.press("n")
            await until(pilot, lambda: getattr(app.screen, "STEP", None) == "model"
                        and app.screen.query_one("#trust").value is False, what="the declined warning to untick the box")
            assert state.config.model.trust_remote_code is False
            await pilot.press("space")
            await until(pilot, lambda: type(app.screen).__name__ == "Confirm", what="the warning")
            await pilot.press("y")
            await until(pilot, lambda: state.config.model.trust_remote_code is True)

    _run(go())


def test_hardware_fix_is_applied_with_a_key(monkeypatch, embedded_model_dir):
    monkeypatch.chdir(REPO)
    state = snapshot_state(data__max_seq_len=4096, training__micro_batch=16,
                           training__gradient_checkpointing=False)  # auto would switch it on and fit

    async def go():
        async with wizard_at("hardware", state=state, backend=FixedBackend()) as pilot:
            app = pilot.app
            await until(pilot, lambda: app.current_judgement() is not None, what="the verdict")
            assert app.current_judgement().verdict.verdict == "wont_fit"
            first = app.screen._fixes[0]
            await pilot.press("f")
            for plan_key, value in first.changes.items():
                if plan_key == "grad_checkpointing":
                    assert state.config.training.gradient_checkpointing is value
            await until(pilot, lambda: app.current_judgement() is not None, what="the new verdict")
            assert app.current_judgement().verdict.estimate.total_bytes == first.new_total_bytes
            assert app.current_judgement().verdict.verdict == first.verdict

    _run(go())


def test_custom_target_modules_checked_against_the_models_layers(monkeypatch, embedded_model_dir):
    monkeypatch.chdir(REPO)
    state = snapshot_state()

    async def go():
        async with wizard_at("parameters", state=state, backend=FixedBackend()) as pilot:
            app = pilot.app
            await until(pilot, lambda: state.layers_for_model() is not None, what="the model's layers")
            screen = app.screen
            custom = screen.query_one("#field-lora-targets-custom")
            assert not custom.display
            screen.query_one("#field-lora-targets Select").focus()
            await pilot.press("enter", "down", "enter")  # all-linear -> custom
            await until(pilot, lambda: custom.display, what="the custom row")
            await pilot.press(*"q_proj,v_proj")
            assert state.config.lora.targets == "q_proj,v_proj"
            assert not custom.error
            await pilot.press(*",wq_nope")
            assert state.config.lora.targets == "q_proj,v_proj"  # refused: the model has no such layer
            assert "wq_nope" in custom.error
            await pilot.press("ctrl+n")
            assert state.run is None  # starting refused while a value is refused

    _run(go())


def test_chat_loads_the_model_once_even_when_the_run_ends_meanwhile(tmp_path):
    """Two loads at once once left the chat model with meta tensors: one load per run."""
    from lora_tui.core.run.runs import RunDirectory
    from lora_tui.ui.app import make_app

    class CountingBackend(FixedBackend):
        loads = 0
        run_end_seen = staticmethod(lambda: False)  # set below: the Training step has seen the run end

        def open_chat(self, run, on_progress=None):
            CountingBackend.loads += 1
            # A load takes a while: the run ends meanwhile, and the wizard hears of it before the load is done.
            wait_until(self.run_end_seen, 60, what="the Training step to see the run end")
            return super().open_chat(run, on_progress)

    path = write_demo_run(tmp_path / "ending-run", last_step=59, finished=False)
    run = RunDirectory(path)
    lock = run.acquire_lock()

    async def go():
        backend = CountingBackend()
        app = make_app(run=str(path), backend=backend)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.current_mode == "training" and app.screen.history.step == 59)
            training = app.screen
            backend.run_end_seen = lambda: training.run_state == "finished"  # its follower then tells the chat step
            await goto(pilot, "chat")
            chat = app.screen
            finished = demo_events(finished=True)[-1]
            run.append_event("finished", **{k: v for k, v in finished.items() if k not in ("seq", "time", "type")})
            run.write_status("finished")
            lock.close()
            await until(pilot, lambda: chat.session is not None, what="the chat model")
            await until(pilot, lambda: all(w.is_finished for w in app.workers if w.group == "chat-load"),
                        what="every chat load to end")  # a second load, started when the run ended, included
            assert CountingBackend.loads == 1

    _run(go())


def test_reopening_the_wizard_mentions_a_run_in_progress(live_run):
    """A run trains in the runs folder: the wizard says so at start, and its Training step opens it."""
    from lora_tui.ui.app import make_app

    state = snapshot_state(output__runs_dir=str(live_run.path.parent))

    async def go():
        app = make_app(state=state, backend=FixedBackend())
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: any("live-run" in n.message for n in app._notifications),
                        what="the notice")
            await goto(pilot, "training")
            table = app.screen.query_one("#runs")
            assert table.row_count == 1
            table.focus()
            await pilot.press("enter")
            await until(pilot, lambda: app.screen.history.step == 10, what="the run's history")
            assert app.state.run.path == live_run.path

    _run(go())


def test_q_in_a_text_field_is_a_letter_not_quit(monkeypatch, embedded_model_dir):
    monkeypatch.chdir(REPO)
    state = snapshot_state()

    async def go():
        async with wizard_at("parameters", state=state, backend=FixedBackend()) as pilot:
            app = pilot.app
            app.screen.query_one("#field-output-run_name Input").focus()
            await pilot.press(*"quick-q")
            assert app.is_running and state.config.output.run_name == "quick-q"
            app.screen.query_one("#form").scroll_home()
            app.screen.query_one("#preset").focus()
            await pilot.press("q")  # outside a text field, q quits
            await until(pilot, lambda: not app.is_running, what="quit")

    _run(go())


def test_training_header_shows_the_batch_auto_chose(tmp_path):
    """The `started` event's micro-batch x accumulation (micro_batch=auto resolved) is in the header."""
    import json

    from lora_tui.ui.app import make_app

    path = write_demo_run(tmp_path / "auto-run", last_step=10, finished=True)
    events = [json.loads(line) for line in (path / "events.jsonl").read_text().splitlines()]
    for event in events:
        if event["type"] == "started":
            event.update(micro_batch=8, grad_accum=2, gradient_checkpointing=True)
    (path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))

    async def go():
        app = make_app(run=str(path), backend=FixedBackend())
        async with app.run_test(size=(200, 30)) as pilot:
            await until(pilot, lambda: app.current_mode == "training" and app.screen.history.step == 10,
                        what="the history")
            assert "batch 8 x 2, checkpointing" in str(app.screen.query_one("#run-header").render())

    _run(go())


def test_plan_uses_the_datas_longest_row_from_the_first_estimate(monkeypatch, embedded_model_dir):
    """The memory plan (and the auto batch) assume the data's longest row, as the trainer does, from the first
    estimate on: the wizard reads the data's lengths before it shows a figure, and checking the dataset later
    changes nothing (issue 24 item 6: it used to show rows of max_seq_len until the Dataset step)."""
    monkeypatch.chdir(REPO)
    state = snapshot_state()
    state.config.data.max_seq_len = 2048
    # Row micro-batches: a token budget (the CUDA default) is filled to its tokens whatever the rows' lengths.
    state.config.training.batching = "grouped"

    async def go():
        async with wizard_at("parameters", (160, 40), state=state, backend=FixedBackend()) as pilot:
            app = pilot.app
            await until(pilot, lambda: app.current_judgement() is not None, timeout=120, what="the first estimate")
            first = app.current_judgement().verdict.estimate.total_bytes
            longest = state.longest_row()
            assert longest is not None and longest < 2048
            batch_line = str(app.screen.query_one("#batch-line").render())
            assert f"rows up to {longest} tokens" in batch_line, batch_line
            await goto(pilot, "dataset")
            await until(pilot, lambda: state.dataset_current() is not None, what="validation")
            await goto(pilot, "parameters")
            await until(pilot, lambda: app.current_judgement() is not None, what="the estimate again")
            assert app.current_judgement().verdict.estimate.total_bytes == first

    _run(go())
