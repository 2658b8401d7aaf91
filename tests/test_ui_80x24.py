"""Nothing a user must read is cut at 80x24 (issue 24 item 7): what each screen shows is read off the terminal
the way a user reads it (scrolling down, never sideways) and must hold every word of the texts that matter:
the Findings' fixes, every Parameters help line, the Hardware memory breakdown (at 120 columns too), the
Training panel's estimate on its own line, the compare panes beside a conversation, a long toast.
The snapshots (tests/test_ui_snapshots.py) pin the looks; these pin the words."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import REPO
from tests.support.ui import on_screen, read_all, run_scene, words
from tests.support.wait import until

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch, embedded_model_dir):
    monkeypatch.chdir(REPO)  # the scenes use paths relative to the repository


def test_findings_fixes_are_read_without_scrolling_sideways():
    async def check(pilot, app):
        findings = app.state.dataset.report.findings
        assert [f for f in findings if f.fix]
        shown = words(await read_all(pilot, app.screen.query_one("#findings")))
        for finding in findings:
            assert words(finding.message) in shown
            if finding.fix:
                assert words(f"fix: {finding.fix}") in shown, finding.fix

    run_scene("dataset_findings", check)


def test_every_parameters_help_line_is_whole():
    from lora_tui.ui.widgets.fields import FieldRow

    async def check(pilot, app):
        form = app.screen.query_one("#form")
        shown = words(await read_all(pilot, form))
        rows = [row for row in app.screen.query(FieldRow) if row.display and not row.custom]
        assert len(rows) > 30
        missing = [row.dotted for row in rows if words(row.help) not in shown]
        assert not missing, missing
        preset_help = words(str(app.screen.query_one("#preset-help").render()))
        assert preset_help and preset_help in words(on_screen(app.screen.query_one("#preset-help")))
        for line in ("#engine-line", "#batch-line", "#memory-line"):  # the plan panel under the form
            widget = app.screen.query_one(line)
            assert words(str(widget.render())) == words(on_screen(widget)), line

    run_scene("parameters", check)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_hardware_memory_breakdown_is_whole(size):
    async def check(pilot, app):
        verdict = app.current_judgement().verdict
        shown = words(await read_all(pilot, app.screen.query_one("#hardware-body")))
        for name, value in verdict.estimate.breakdown.items():
            assert f"{name.replace('_', ' ')} {value / 1024 ** 3:.2f}" in shown, name

    run_scene("hardware", check, size)


def test_training_estimate_is_on_its_own_line(tmp_path, monkeypatch):
    """On a CPU the system panel ends with the RAM bar; the estimate used to run into it."""
    import json

    from lora_tui.ui.app import make_app
    from screenshots.fixed import FixedBackend, snapshot_state
    from screenshots.make_demo_run import write_demo_run
    from lora_tui.ui.widgets.format import gib

    run = write_demo_run(tmp_path / "cpu-run")
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    for event in events:
        if event["type"] == "started":
            event.update(device="cpu", memory_estimate={"total_bytes": int(2.4 * 1024 ** 3)})
        if event["type"] == "system":
            event["gpus"] = []
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))

    async def go():
        app = make_app(run=str(run), state=snapshot_state(), backend=FixedBackend())
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.current_mode == "training" and app.screen.history.outcome is not None)
            await pilot.pause()
            lines = on_screen(app.screen.query_one("#system"))
            assert any(line.startswith("RAM") for line in lines), lines
            assert f"estimated {gib(int(2.4 * 1024 ** 3))}," in [line.strip() for line in lines], lines

    asyncio.run(go())


def test_compare_panes_take_the_conversations_room():
    """ctrl+r after a few turns: the panes get the room the conversation had (they were 3-5 lines)."""
    from textual.widgets import Input

    async def check(pilot, app):
        chat = app.screen
        for text in ("Hello", "Where is the map?"):
            chat.query_one("#prompt", Input).value = text
            chat.query_one("#prompt", Input).focus()
            await pilot.press("enter")
            await until(pilot, lambda: not chat._busy and chat.messages[-1]["role"] == "assistant")
        await pilot.press(*"And the compass?", "ctrl+r")
        await until(pilot, lambda: not chat._busy, what="the comparison")
        await pilot.pause()
        panes = list(chat.query(".compare-side"))
        assert all(pane.region.height >= 10 for pane in panes), [pane.region for pane in panes]
        for pane in panes:
            assert "Q: And the compass?" in words(on_screen(pane))

    run_scene("chat", check)


def test_a_long_toast_is_read_whole():
    """The wizard's longest kind of toast (a run that would not start) at 80x24: every word on screen, inside
    the right edge. (A guard: Textual 8.2's toasts already wrap at half the width; not reproduced cut here.)"""
    message = ("runs/capn-lora-demo already holds a run named capn-lora-demo. Fix: give output.run_name another "
               "name (in the form above), or open that run on the Training step to watch it or chat with it.")

    async def check(pilot, app):
        app.notify(message, title="Training not started", severity="error", timeout=30)
        await until(pilot, lambda: app.screen.query("Toast") and app.screen.query_one("Toast").region.area,
                    what="the toast laid out")
        await pilot.wait_for_scheduled_animations()
        toast = app.screen.query_one("Toast")
        assert toast.region.right <= 80 and toast.region.bottom <= 24, toast.region
        assert words(message) in words(on_screen(toast, toast.content_region))

    run_scene("parameters", check, notifications=True)


def test_round_trip_answers_are_whole_at_80_columns(tmp_path):
    """The Export step's round-trip answers, one under the other and whole: the side-by-side table needed 80
    columns for its rows alone (they wrapped into each other) and cut every answer to 21 characters."""
    from textual.widgets import Static

    from lora_tui.core.export.check import AnswerPair, RoundTrip
    from lora_tui.core.export.gain import judge
    from screenshots.fixed import FixedBackend
    from tests.support.ui import export_screen

    answers = [AnswerPair("Hello! What can you help me with?",
                          "Ahoy! I can help ye chart a course, read a map scale and find north without a compass.",
                          "Ahoy! I can help ye chart a course, read a map scale and find north with the stars.",
                          True, True, [1, 2], [1, 3]),
               AnswerPair("Explain in two sentences why the sky is blue.",
                          "Sunlight scatters off the air, and blue light scatters the most. So the sky looks blue.",
                          "Sunlight scatters off the air, and blue light scatters the most. So the sky looks blue.",
                          True, True, [4], [4])]

    class Backend(FixedBackend):
        def export_sizes(self, run):
            return {"q8_0": 144 * 2**20}

        def write_export(self, run, name, option=None, overwrite=False, on_progress=None):
            path = tmp_path / "gguf" / f"demo-{option}.gguf"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(b"GGUF")
            return path

        def verify_export(self, run, artefact, gguf_file=None, on_progress=None):
            rows = [[-3.0, -2.0, -1.0]] * 8
            judgement = judge(rows, [[r + 1.0 for r in row] for row in rows], [[r + 0.99 for r in row] for row in rows],
                              [[0.01] * 3] * 8, [[True, True, True]] * 8, gguf_type="q8_0")
            return RoundTrip(str(artefact), "gguf", answers, -1.0, -1.01, 24, 1.0, True, "", True, "<|im_end|>",
                             ["<|im_end|>"], runtime="llama.cpp, xllamacpp test", gguf_type="q8_0",
                             judgement=judgement)

    async def go():
        async with export_screen(tmp_path, Backend(), size=(80, 24)) as pilot:
            app = pilot.app
            await until(pilot, lambda: app.screen._sizes, what="the size estimates")
            await pilot.press("g")
            await until(pilot, lambda: type(app.screen).__name__ == "GGUFChoice", what="the GGUF types")
            await pilot.press("enter")
            await until(pilot, lambda: "PASS" in str(app.screen.query_one("#export-text", Static).render()),
                        what="the check")
            shown = words(await read_all(pilot, app.screen.query_one("#export-detail")))
            for pair in answers:
                for text in (pair.prompt, pair.reference, pair.artefact):
                    assert words(text) in shown, text
            assert "GGUF artefact in llama.cpp:" in shown and "different" in shown

    asyncio.run(go())
