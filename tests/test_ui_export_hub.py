"""Export screen (issues 11, 26): the GGUF button offers every type with its size before writing and shows the
verdict table after, Push lists what it would send and sends nothing until confirmed. The backend is faked: the real work is covered in test_export_gguf."""

from __future__ import annotations

import asyncio

import pytest

from screenshots.fixed import ExportBackend
from tests.support.ui import export_screen
from tests.support.wait import until

pytestmark = pytest.mark.timeout(300)


class HubBackend(ExportBackend):
    def __init__(self, tmp_path) -> None:
        super().__init__(out=tmp_path)
        self.tmp_path, self.pushed, self.checked = tmp_path, [], []

    def export_summary(self, run) -> dict:
        lora = self.tmp_path / "gguf" / "capn-lora-demo-lora.gguf"  # recorded once it has been written
        return {**super().export_summary(run),
                **({"gguf_adapter": [{"path": str(lora), "bytes": 9 * 2**20}]} if self.written else {})}

    def verify_export(self, run, artefact, gguf_file=None, on_progress=None, lora=None):
        self.checked.append((str(artefact), gguf_file, str(lora) if lora else None))
        return super().verify_export(run, artefact, gguf_file, on_progress, lora)

    def upload_plan(self, run, repo_id, kind="adapter"):
        from lora_tui.core.export.hub import UploadPlan

        card = self.tmp_path / "README.md"
        card.write_text("card")
        return UploadPlan(repo_id, kind, [(card, "README.md")])

    def push(self, plan, private=False):
        self.pushed.append(plan.repo_id)
        return f"https://huggingface.co/{plan.repo_id}"


def test_gguf_button_shows_the_check_and_push_asks_first(tmp_path):
    from textual.widgets import Input, OptionList, Static

    from lora_tui.core.export.formats import GGUF_TYPES

    backend = HubBackend(tmp_path)

    async def scenario():
        async with export_screen(tmp_path, backend) as pilot:
            app = pilot.app
            await until(pilot, lambda: app.screen._sizes, what="the size estimates")
            await pilot.press("g")  # every type, each with its size before writing; q8_0 (the default) highlighted
            await until(pilot, lambda: type(app.screen).__name__ == "GGUFChoice", what="the GGUF types")
            listed = app.screen.query_one(OptionList)
            shown = [str(listed.get_option_at_index(i).prompt) for i in range(listed.option_count)]
            assert [s.split()[0] for s in shown] == [*GGUF_TYPES, "lora"] and "~100.6 MiB" in shown[4], shown
            assert "the adapter alone" in shown[-1] and "~9.3 MiB" in shown[-1]  # the LoRA GGUF, on the f16 base
            assert listed.highlighted == 1 and "default" in shown[1]
            await pilot.press("down", "down", "down", "enter")  # q4_k_m
            text = lambda: str(app.screen.query_one("#export-text", Static).render())  # noqa: E731
            await until(pilot, lambda: "PASS" in text(), what="the verdict table")
            assert backend.written == [("gguf", "q4_k_m", False)]
            for shown in ("keeps 96 % (96-96 %) of what training taught; moves as much as a q4_k_m normally does",
                          "Gain kept", "KL from adapter", "Same top token", "Chat template", "Stop token",
                          "GGUF artefact in llama.cpp"):
                assert shown in " ".join(text().split()), text()
            assert "Modelfile-q4_k_m" in str(app.screen.query_one("#export-result", Static).render())
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


def test_the_lora_gguf_is_written_by_the_table_and_checked_applied_on_its_base(tmp_path):
    """The chooser's last row: the LoRA GGUF goes through formats.py's writer like every type, its check runs with
    the adapter applied on the shared f16 base file (lora=), and once recorded it asks before writing it again."""
    from textual.widgets import Static

    backend = HubBackend(tmp_path)
    lora = tmp_path / "gguf" / "capn-lora-demo-lora.gguf"

    async def scenario():
        async with export_screen(tmp_path, backend) as pilot:
            app = pilot.app
            screen = app.screen
            await until(pilot, lambda: screen._sizes, what="the size estimates")
            text = lambda: str(screen.query_one("#export-text", Static).render())  # noqa: E731
            result = lambda: str(screen.query_one("#export-result", Static).render())  # noqa: E731
            await pilot.press("g")
            await until(pilot, lambda: type(app.screen).__name__ == "GGUFChoice", what="the GGUF types")
            await pilot.press("end", "enter")
            await until(pilot, lambda: "PASS" in text() and not screen._busy, what="the LoRA GGUF's verdict")
            base = backend.BASE_FILE
            assert backend.written == [("gguf_adapter", None, False)]
            assert backend.checked == [(str(base.parent), base.name, str(lora))]
            assert "Gain kept" in text() and "Stop token" in text(), text()
            assert f"✓ GGUF lora: {lora}" in result() and "ollama create my-model -f Modelfile-lora" in result(), result()
            await until(pilot, lambda: screen._summary_data.get("gguf_adapter"), what="the recorded LoRA GGUF")
            for answer in ("escape", "y"):
                await pilot.press("g")
                await until(pilot, lambda: type(app.screen).__name__ == "GGUFChoice", what="the GGUF types")
                await pilot.press("end", "enter")
                await until(pilot, lambda: getattr(app.screen, "title_text", "") == "Replace the LoRA GGUF?",
                            what="the replace question")
                await pilot.press(answer)
                await until(pilot, lambda: app.screen is screen, what="the export screen")
                if answer == "escape":
                    assert not screen._busy and len(backend.written) == 1  # no: nothing written
            await until(pilot, lambda: len(backend.checked) == 2 and not screen._busy, what="the second check")
            assert backend.written == [("gguf_adapter", None, False), ("gguf_adapter", None, True)]

    asyncio.run(scenario())
