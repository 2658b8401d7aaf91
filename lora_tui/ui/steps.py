"""The wizard's steps, in order: the one table the app (its modes, Next and Back), the step bar and the
screens read, so none of them imports the app module and no second table keys the same names.

Must not: import textual or any screen (it is read while the first screen paints). The app imports a
step's screen by name (``Step.module``, ``Step.screen``) when the step is first shown;
tests/test_import_layers.py resolves those names, so the import map sees the app -> screen edges.
"""

from __future__ import annotations

from dataclasses import dataclass

SCREENS_PACKAGE = "lora_tui.ui.screens"


@dataclass(frozen=True)
class Step:
    name: str  # the app's mode name and the screen's STEP; also its module under lora_tui.ui.screens
    label: str  # what the step bar shows
    screen: str  # the screen class in that module

    @property
    def module(self) -> str:
        return f"{SCREENS_PACKAGE}.{self.name}"


STEPS: tuple[Step, ...] = (
    Step("model", "Model", "ModelScreen"),
    Step("hardware", "Hardware", "HardwareScreen"),
    Step("dataset", "Dataset", "DatasetScreen"),
    Step("parameters", "Parameters", "ParametersScreen"),
    Step("training", "Training", "TrainingScreen"),
    Step("chat", "Chat", "ChatScreen"),
    Step("export", "Export", "ExportScreen"),
)
STEP_NAMES: tuple[str, ...] = tuple(step.name for step in STEPS)
