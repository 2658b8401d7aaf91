"""Experiment tracking: ``training.report_to`` (checked by ``config.normalise_report_to``) turned into the
trainer's ``report_to``.

TensorBoard writes into ``<run>/tensorboard`` (so ``tensorboard --logdir runs/`` shows every run)
and is installed with lora-tui; trackio, wandb and mlflow are optional extras. A tracker that is
not installed is refused before the model loads, with the pip command that fixes it.

Must not: import torch / transformers or any tracker at module top, or print.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


# tracker -> (modules that provide it, pip extra / package that installs it)
PROVIDERS = {"tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
             "trackio": (("trackio",), "trackio"), "wandb": (("wandb",), "wandb"), "mlflow": (("mlflow",), "mlflow")}


def trackers(report_to: str) -> list[str]:
    return [] if report_to in ("", "none", None) else report_to.split(",")


def missing_trackers(report_to: str) -> list[str]:
    """One line per wanted tracker that is not installed, with the fix."""
    lines = []
    for name in trackers(report_to):
        modules, package = PROVIDERS[name]
        if not any(importlib.util.find_spec(m) is not None for m in modules):
            lines.append(f"training.report_to includes {name}, but {package} is not installed. "
                         f"Fix: pip install \"lora-tui[{name}]\" (or pip install {package}), or drop it from report_to.")
    return lines


def trainer_report_to(report_to: str, run_dir: str | Path) -> list[str] | str:
    """The value for TrainingArguments.report_to; points TensorBoard at <run>/tensorboard."""
    names = trackers(report_to)
    if "tensorboard" in names:
        # transformers' TensorBoardCallback reads this; without it logs land under checkpoints/runs/<date>.
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(run_dir) / "tensorboard")
    if "wandb" in names:
        os.environ.setdefault("WANDB_DIR", str(Path(run_dir)))
    if "mlflow" in names:
        os.environ.setdefault("MLFLOW_TRACKING_URI", (Path(run_dir) / "mlruns").resolve().as_uri())
    return names or "none"
