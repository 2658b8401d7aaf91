"""Render every wizard screen to PNG for the README.

Drives the same deterministic scenes as the snapshot tests (fixed hardware with
one GPU, canned chat answers, a hand-made run), plus a run in progress and the
question asked when quitting during training. Textual writes SVG; SVG becomes PNG
with `rsvg-convert` (Debian: librsvg2-bin) or, failing that, the `cairosvg`
package. Fonts are pinned to DejaVu Sans Mono so columns line up.

    python3 screenshots/make_screenshots.py [--size 100x32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "screenshots"
sys.path.insert(0, str(REPO))

_HELD: list = []
ORDER = [  # (file name, scene)
    ("1-model", "model"),
    ("2-hardware", "hardware"),
    ("2b-hardware-fixes", "hardware_fixes"),
    ("3-dataset", "dataset"),
    ("3b-dataset-findings", "dataset_findings"),
    ("3c-dataset-lengths", "dataset_lengths"),
    ("4-parameters", "parameters"),
    ("5-training", "training_live"),
    ("5b-training-finished", "training"),
    ("5c-quit-during-training", "quit_during_training"),
    ("6-chat", "chat"),
    ("6b-chat-compare", "chat_compare"),
    ("7-export", "export"),
]


def svg_to_png(svg: Path, png: Path) -> None:
    text = svg.read_text(encoding="utf-8")
    # Pin a monospace font that exists here; keep runs of spaces (rsvg collapses &#160; runs).
    text = re.sub(r"font-family: Fira Code, monospace", "font-family: DejaVu Sans Mono, monospace", text)
    text = text.replace("&#160;", " ").replace("<svg ", '<svg xml:space="preserve" ', 1)
    fixed = svg.with_suffix(".fixed.svg")
    fixed.write_text(text, encoding="utf-8")
    try:
        if shutil.which("rsvg-convert"):
            subprocess.run(["rsvg-convert", "-o", str(png), str(fixed)], check=True)
        else:
            import cairosvg  # pip install cairosvg

            cairosvg.svg2png(url=str(fixed), write_to=str(png))
    finally:
        fixed.unlink(missing_ok=True)


def live_scenes(tmp: Path) -> dict:
    """A run in progress (lock held by this process, as a trainer would) and the quit question."""
    from lora_tui.core.run.runs import RunDirectory
    from lora_tui.ui.app import make_app
    from screenshots.fixed import FixedBackend, snapshot_state
    from screenshots.make_demo_run import write_demo_run
    from screenshots.scenes import settle

    path = write_demo_run(tmp / "runs" / "capn-lora-demo", last_step=35, finished=False)
    run = RunDirectory(path)
    _HELD.append(run.acquire_lock())  # held until the process ends, so the run reads as running

    def make():
        os.chdir(tmp)  # the screen shows the run's path: make it runs/capn-lora-demo, as a user sees it
        return make_app(run="runs/capn-lora-demo", state=snapshot_state(), backend=FixedBackend())

    async def training(pilot):
        await settle(pilot, lambda: pilot.app.current_mode == "training" and pilot.app.screen.history.step == 35,
                     "the live run at step 35")

    async def quit_question(pilot):
        await training(pilot)
        await pilot.press("ctrl+q")
        await settle(pilot, lambda: type(pilot.app.screen).__name__ == "QuitDuringTraining", "the quit question")

    return {"training_live": (make, training), "quit_during_training": (make, quit_question)}


async def shoot(name: str, make, drive, size: tuple[int, int], workdir: Path) -> Path:
    app = make()
    async with app.run_test(size=size) as pilot:
        await drive(pilot)
        svg = workdir / f"{name}.svg"
        app.save_screenshot(filename=svg.name, path=str(workdir))
    png = OUT / f"{name}.png"
    svg_to_png(svg, png)
    return png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="100x32", help="terminal size, COLSxROWS")
    args = parser.parse_args()
    size = tuple(int(x) for x in args.size.split("x"))
    os.chdir(REPO)  # scenes show paths relative to the repository
    from screenshots.scenes import SCENES

    with tempfile.TemporaryDirectory() as tmp:
        scenes = {**SCENES, **live_scenes(Path(tmp))}
        for name, scene in ORDER:
            make, drive = scenes[scene]
            png = asyncio.run(shoot(name, make, drive, size, Path(tmp)))
            os.chdir(REPO)
            print(png.relative_to(REPO))


if __name__ == "__main__":
    main()
