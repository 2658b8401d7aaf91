"""Export screen (issues 11, 26): the GGUF button offers every type with its size before writing and shows the
verdict table after, Push lists what it would send and sends nothing until confirmed. The backend is faked: the real work is covered in test_export_gguf."""

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

    def export_sizes(self, run):
        return {"f16": 270 * 2**20, "q8_0": 144 * 2**20, "q6_k": 138 * 2**20, "q5_k_m": 113 * 2**20,
                "q4_k_m": 105 * 2**20, "q4_0": 92 * 2**20, "gguf_adapter": 9 * 2**20}

    def export_gguf(self, run, gguf_type="q8_0", overwrite=False, on_progress=None):
        self.written = gguf_type
        path = self.tmp_path / "gguf" / f"demo-{gguf_type}.gguf"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"GGUF")
        return path

    def verify_export(self, run, artefact, gguf_file=None, on_progress=None):
        from lora_tui.core.export.check import AnswerPair, RoundTrip
        from lora_tui.core.export.gain import judge

        rows = [[-3.0, -2.0, -1.0]] * 8  # the fine-tune's gain is 1 nat/token; the file keeps 96 % of it
        judgement = judge(rows, [[r + 1.0 for r in row] for row in rows], [[r + 0.96 for r in row] for row in rows],
                          [[0.03] * 3] * 8, [[True, True, False]] * 8, gguf_type=self.written)
        return RoundTrip(str(artefact), "gguf", [AnswerPair("Hi?", "Ahoy!", "Ahoy!", True, True, [1], [1])],
                         -1.0, -1.04, 24, 0.667, True, "", True, "<|im_end|>", ["<|im_end|>"],
                         runtime="llama.cpp, xllamacpp test", gguf_type=self.written, judgement=judgement)

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
            assert [s.split()[0] for s in shown] == [*GGUF_TYPES, "lora"] and "~105.0 MiB" in shown[4], shown
            assert "the adapter alone" in shown[-1] and "~9.0 MiB" in shown[-1]  # the LoRA GGUF, on the f16 base
            assert listed.highlighted == 1 and "default" in shown[1]
            await pilot.press("down", "down", "down", "enter")  # q4_k_m
            text = lambda: str(app.screen.query_one("#export-text", Static).render())  # noqa: E731
            await until(pilot, lambda: "PASS" in text(), what="the verdict table")
            assert backend.written == "q4_k_m"
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
