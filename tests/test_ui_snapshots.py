"""Snapshots of every wizard screen at 80x24 (the SSH default) and 120x40.

Deterministic by construction (screenshots/fixed.py): a fixed hardware
report, canned chat answers, a hand-made run directory, the embedded tokenizer on
a small committed dataset. Review a changed snapshot before accepting it:
`python3 -m pytest tests/test_ui_snapshots.py --snapshot-update`, then look at
the report pytest-textual-snapshot writes.
"""

from __future__ import annotations

import asyncio

import pytest

from screenshots.scenes import SCENES, settle
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(300)

SIZES = {"80x24": (80, 24), "120x40": (120, 40)}
MAIN = ["model", "hardware", "dataset", "parameters", "training", "chat", "export"]
EXTRA = ["hardware_fixes", "dataset_findings", "dataset_lengths", "file_picker", "chat_compare", "chat_base",
         "export_gguf_types", "export_verdict"]


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch, embedded_model_dir):
    # Scenes use paths relative to the repository (shown on screen, so they must not vary).
    monkeypatch.chdir(REPO)


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("scene", MAIN)
def test_screen(snap_compare, scene, size):
    make, drive = SCENES[scene]
    assert snap_compare(make(), terminal_size=SIZES[size], run_before=drive)


@pytest.mark.parametrize("scene", EXTRA)
def test_screen_detail(snap_compare, scene):
    make, drive = SCENES[scene]
    assert snap_compare(make(), terminal_size=SIZES["80x24"], run_before=drive)


def test_a_scene_that_never_settles_fails_naming_what_it_awaited():
    """A scene is never taken half-drawn: settle raises, where it once went on after its timeout."""
    from textual.app import App

    async def go():
        async with App().run_test(size=SIZES["80x24"]) as pilot:
            with pytest.raises(AssertionError, match="timed out after 0.5s waiting for the impossible, with every worker"):
                await settle(pilot, lambda: False, "the impossible", timeout=0.5)

    asyncio.run(go())
