"""The wizard's steps, in order: (mode name, label). The app, the step bar and the
screens read them from here, so none of them imports the app module.

Must not: import textual or any screen (it is read while the first screen paints).
"""

from __future__ import annotations

STEPS: tuple[tuple[str, str], ...] = (
    ("model", "Model"),
    ("hardware", "Hardware"),
    ("dataset", "Dataset"),
    ("parameters", "Parameters"),
    ("training", "Training"),
    ("chat", "Chat"),
    ("export", "Export"),
)
STEP_NAMES: tuple[str, ...] = tuple(name for name, _ in STEPS)
