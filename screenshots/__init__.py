"""The README's screenshots (make_screenshots.py) and the deterministic wizard scenes behind them, which
the snapshot tests drive too: fixed.py (a fixed machine, canned chat), make_demo_run.py (the demo run),
scenes.py (each screen in a settled state), wait.py (waits that fail naming what they awaited).

The tests import these; nothing here imports the test package, so the screenshots script runs without it.
The scenes' files (a small dataset, the demo run) stay in tests/snapshot_apps/: the screens show their
paths, relative to the repository, and the committed snapshots hold those paths.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCENE_FILES = "tests/snapshot_apps"  # relative to REPO, where the scenes run
