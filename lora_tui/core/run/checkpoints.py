"""Which checkpoint a resume may use, and whether a run's training already reached its end.

A checkpoint folder counts as complete when it carries the marker the trainer writes after the save
(``runs.CHECKPOINT_MARKER``). A marker proves nothing about the files beside it, though: a copied or
hand-made folder, or a ``trainer_state.json`` damaged later, made the trainer fail with a raw
ValueError / JSONDecodeError. So before a resume each marked checkpoint is also checked (its
trainer state is a bounded JSON object whose step matches the folder name; the adapter weights and
optimizer state are there), a damaged one is passed over for the one before it, and the user is told.

A checkpoint whose step is the run's last (trainer_state.json: global_step >= max_steps) means the
training itself is done: a resume must not train a step past the end ("step 5/4"), and a run whose
adapter was saved from it is finished whatever a torn events line or a garbage status.json says.

Used by the launcher (before a resume) and the trainer (which checkpoint to load). No torch, no printing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lora_tui.core.run.runs import RunDirectory

TRAINER_STATE = "trainer_state.json"
TRAINER_STATE_BYTES = 64 * 2**20  # its log history grows with the run; a long run's is a few MiB
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
FSDP_WEIGHTS = "pytorch_model_fsdp"  # a sharded FSDP save (SHARDED_STATE_DICT): a folder or a .bin per rank


@dataclass
class CheckpointChoice:
    checkpoint: Path | None  # the newest usable one (None: train from step 0)
    passed_over: list[tuple[Path, str]] = field(default_factory=list)  # newer marked ones that are damaged

    def note(self) -> str:
        """One sentence per damaged checkpoint passed over ('' when none)."""
        return " ".join(f"{path.name} is damaged ({why}) and is not used." for path, why in self.passed_over)


def trainer_state(checkpoint: Path) -> dict | None:
    """A checkpoint's trainer_state.json as a dict; None when missing, garbage, huge or not a regular file."""
    from lora_tui.core.safe_read import read_bounded

    try:
        data = json.loads(read_bounded(checkpoint / TRAINER_STATE, TRAINER_STATE_BYTES))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why a marked checkpoint cannot be resumed from, in a few words; None when it can."""
    state = trainer_state(checkpoint)
    if state is None:
        return f"{TRAINER_STATE} is missing or not a JSON object"
    step = state.get("global_step")
    if not isinstance(step, int) or isinstance(step, bool) or str(step) != checkpoint.name.split("-", 1)[-1]:
        return f"{TRAINER_STATE} says step {str(step)[:20]}, the folder says {checkpoint.name}"
    names = [entry.name for entry in checkpoint.iterdir()]
    if not any(name in WEIGHTS or name.startswith(FSDP_WEIGHTS) for name in names):
        return "no adapter weights"
    if not any(name.startswith("optimizer") or name.endswith("-optimizer.pt") for name in names):
        return "no optimizer state"  # optimizer.pt; FSDP: optimizer.bin or optimizer_0/; XLA: rankN-of-M-optimizer.pt
    return None


def choose_checkpoint(run: RunDirectory) -> CheckpointChoice:
    """The newest marked checkpoint without a problem, and the newer ones passed over (with why)."""
    choice = CheckpointChoice(None)
    for checkpoint in reversed(run.complete_checkpoints()):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            choice.checkpoint = checkpoint
            break
        choice.passed_over.append((checkpoint, problem))
    return choice


def reached_end(checkpoint: Path | None) -> bool:
    """Whether the checkpoint was saved at the run's last step (nothing is left to train)."""
    state = trainer_state(checkpoint) if checkpoint is not None else None
    if not state:
        return False
    step, last = state.get("global_step"), state.get("max_steps")
    return isinstance(step, int) and isinstance(last, int) and 0 < last <= step


def training_done(run: RunDirectory) -> bool:
    """The run's adapter is saved and its newest usable checkpoint is at the last step: it finished, even when
    its finished event was torn or status.json is garbage."""
    return (run.adapter_dir / "adapter_config.json").is_file() and reached_end(choose_checkpoint(run).checkpoint)
