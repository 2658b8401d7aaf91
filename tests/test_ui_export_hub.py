"""Export screen (issue 11): the GGUF button shows the round-trip table, Push lists what it would send
and sends nothing until confirmed. The backend is faked: the real work is covered in test_export_gguf."""

from __future__ import annotations

import asyncio

import pytest

from screenshots.fixed import FixedBackend
from tests.support.ui import export_screen
from tests.support.wait import until

pytestmark = pytest.mark.timeout(300)


class HubBackend(FixedBackend):
    def __init__(self, tmp_path) -> None:
        super().__init__()
        self.tmp_path, self.pushed = tmp_path, []

    def export_gguf(self, run, gguf_type="q8_0", overwrite=False, on_progress=None):
        path = self.tmp_path / "gguf" / f"demo-{gguf_type}.gguf"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"GGUF")
        return path

    def verify_export(self, run, artefact, gguf_file=None, on_progress=None):
        from lora_tui.core.export.check import AnswerPair, RoundTrip

        result = RoundTrip(str(artefact), "gguf", [AnswerPair("Hi?", "Ahoy!", "Ahoy!", True, True, [1], [1])],
                           -1.0, -1.01, 40, 0.975, True, "", True, "<|im_end|>", ["<|im_end|>"])
        return result

    def upload_plan(self, run, repo_id, kind="adapter"):
        from lora_tui.core.export.hub import UploadPlan

        card = self.tmp_path / "README.md"
        card.write_text("card")
        return UploadPlan(repo_id, kind, [(card, "README.md")])

    def push(self, plan, private=False):
        self.pushed.append(plan.repo_id)
        return f"https://huggingface.co/{plan.repo_id}"


def test_gguf_button_shows_the_check_and_push_asks_first(tmp_path):
    from textual.widgets import Input, Static

    backend = HubBackend(tmp_path)

    async def scenario():
        async with export_screen(tmp_path, backend) as pilot:
            app = pilot.app
            await pilot.press("g")
            text = lambda: str(app.screen.query_one("#export-text", Static).render())  # noqa: E731
            await until(pilot, lambda: "Round trip: close" in text(), what="the round-trip table")
            assert "GGUF artefact" in text() and "Δ -0.0100" in text()
            for answer in ("escape", "y"):
                await pilot.press("p")
                await until(pilot, lambda: bool(app.screen.query(Input)), what="the repository prompt")
                app.screen.query_one(Input).value = "me/demo"
                await pilot.press("enter")
                await until(pilot, lambda: type(app.screen).__name__ == "Confirm" and "Upload" in app.screen.title_text,
                            what="the upload confirmation")
                assert "README.md" in app.screen.text and backend.pushed == []  # nothing sent before a yes
                await pilot.press(answer)
                result = lambda: str(app.screen.query_one("#export-result", Static).render())  # noqa: E731
                await until(pilot, lambda: "nothing was sent" in result() if answer == "escape" else "Uploaded" in result(),
                            what="the push outcome")
            assert backend.pushed == ["me/demo"]

    asyncio.run(scenario())
