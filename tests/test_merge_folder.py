"""Export -> Merge writes where it proposes (issue 24 item 2): ``<run>/merged``, inside the run folder
beside the zip and gguf/, is accepted; the run folder itself, a folder above it, its adapter and
checkpoints, and a folder holding other files are still refused, and nothing there is touched.

A real merge of a real (tiny random Llama) adapter, through the wizard's Export screen and the core.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.chat import make_fake_run
from tests.support.ui import wizard_at
from tests.support.wait import until

pytestmark = pytest.mark.timeout(300)


def test_the_export_screen_merges_into_the_folder_it_proposes(tmp_path, tiny_model_dir):
    run = make_fake_run(tmp_path, tiny_model_dir, name="merge-me")

    async def go():
        async with wizard_at("export", (120, 40), run=str(run)) as pilot:
            app = pilot.app
            screen = app.screen
            await pilot.press("m")
            await until(pilot, lambda: type(app.screen).__name__ == "PathPrompt", what="the folder prompt")
            proposed = app.screen.query_one("#path").value
            assert proposed == str(run / "merged")
            await pilot.press("enter")  # take the proposal as it is
            await until(pilot, lambda: not screen._busy and (run / "merged" / "config.json").is_file()
                        or "✗" in str(screen.query_one("#export-result").render()), timeout=240,
                        what="the merge to end")
            result = str(screen.query_one("#export-result").render())
            assert "✓ Merged model" in result, result

    asyncio.run(go())
    assert (run / "merged" / "model.safetensors").is_file()
    assert (run / "adapter" / "adapter_model.safetensors").is_file(), "the run's adapter is untouched"


@pytest.mark.parametrize("where, words", [
    ("run", "is the run folder"),
    ("above", "is the run folder (or holds it)"),
    ("adapter", "must not be touched"),
    ("checkpoints", "must not be touched"),
    ("gguf", "not a merged model"),
])
def test_merge_refuses_the_runs_own_files(tmp_path, tiny_model_dir, where, words):
    from lora_tui.core.export.artefacts import ExportError, merge_adapter

    run = make_fake_run(tmp_path / "runs", tiny_model_dir, name="r")
    (run / "checkpoints" / "checkpoint-6").mkdir(parents=True)
    (run / "gguf").mkdir()
    (run / "gguf" / "r-q8_0.gguf").write_bytes(b"GGUF")
    out = {"run": run, "above": tmp_path / "runs", "adapter": run / "adapter",
           "checkpoints": run / "checkpoints" / "merged", "gguf": run / "gguf"}[where]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ExportError, match=words.replace("(", r"\(").replace(")", r"\)")):
        merge_adapter(run, out, overwrite=True)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, "nothing written or removed"
