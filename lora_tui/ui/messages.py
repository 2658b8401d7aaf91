"""Messages that thread workers post to screens.

Workers call the core and post one of these; ``@on`` handlers on the UI thread
own every widget. Each message is a small dataclass. High-rate messages (a reply
streaming token by token) carry the whole text so far and implement
``can_replace``, so a flood merges into the latest one instead of queueing.

Nothing here imports torch or the core's heavy modules: payloads are typed
loosely (``Any``) where their class lives in a lazily imported core module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message


@dataclass
class ModelChecked(Message):
    """``check_model_source`` answered for ``name``."""

    name: str
    check: Any  # lora_tui.core.model.models.ModelCheck


@dataclass
class LinearLayersFound(Message):
    """The model's actual linear layer names (for LoRA targets), or why they are unknown."""

    name: str
    layers: list[str] | None
    error: str | None = None


@dataclass
class HardwareProbed(Message):
    report: Any  # lora_tui.core.machine.hardware.HardwareReport
    error: str | None = None


@dataclass
class PlanJudged(Message):
    """Memory estimate and fit verdict for the current plan; ``key`` says which plan."""

    key: tuple
    verdict: Any  # lora_tui.core.plan.memory.FitVerdict | None
    estimate: Any = None  # lora_tui.core.plan.memory.MemoryEstimate | None
    error: str | None = None
    batch: Any = None  # lora_tui.core.plan.batch.Batch: micro-batch and checkpointing with auto resolved


@dataclass
class DataMeasured(Message):
    """The data's longest row for ``key`` (WizardState.dataset_key): core.train.data_lengths.DataLengths."""

    key: tuple
    lengths: Any


@dataclass
class CatalogueEstimated(Message):
    """Rows for the model table: (name, parameters, bytes needed, verdict) per catalogue model."""

    key: tuple
    rows: list[tuple[str, int | None, int | None, str | None]]
    error: str | None = None


@dataclass
class DatasetChecked(Message):
    """Validation of the training file finished (``view``) or failed (``error``)."""

    key: tuple
    view: Any  # lora_tui.ui.state.DatasetView | None
    error: str | None = None


@dataclass
class RunStarted(Message):
    run: Any  # lora_tui.core.run.runs.RunDirectory | None
    error: str | None = None


@dataclass
class RunUpdate(Message):
    """New events from a run directory since the last update, plus its state and log tail."""

    path: str
    events: list[dict]
    state: str
    log_tail: list[str] | None = None  # None: log unchanged since the last update


@dataclass
class ChatReady(Message):
    session: Any  # lora_tui.core.chat.session.ChatSession | None
    error: str | None = None
    path: str = ""  # the run it was loaded for


@dataclass
class ChatRunsFound(Message):
    """Finished runs on the chat's base model that are not loaded yet: (name, path) pairs."""

    runs: list
    path: str = ""  # the run the chat was loaded for


@dataclass
class AdapterAdded(Message):
    """A run's adapter joined the chat (its name), or could not (error)."""

    name: str | None
    error: str | None = None


@dataclass
class ReplyProgress(Message):
    """A streaming reply: the whole text so far (so a newer one can replace an older one). ``side``: which
    pane of a comparison (0 left, 1 right); None for a turn of the conversation."""

    reply_id: int
    text: str
    done: bool = False
    error: str | None = None
    side: int | None = None

    def can_replace(self, message: Message) -> bool:
        return (isinstance(message, ReplyProgress) and message.reply_id == self.reply_id
                and message.side == self.side and not message.done)


@dataclass
class ExportDone(Message):
    """An export action finished: ``what`` is 'summary', 'zip', 'merge' or 'modelfile'."""

    what: str
    result: Any = None
    error: str | None = None
    details: dict = field(default_factory=dict)


@dataclass
class WorkProgress(Message):
    """Progress of a slow worker ('dataset', 'chat', 'merge'...): newer replaces older."""

    source: str
    text: str
    fraction: float | None = None

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, WorkProgress) and message.source == self.source


@dataclass
class ActiveRuns(Message):
    """Runs found training when the wizard opened: one line each."""

    lines: list[str]


@dataclass
class BenchDone(Message):
    """`lora-tui bench` finished in a worker (the Hardware screen's b key): its report, or why not."""

    report: Any  # lora_tui.core.bench.runner.BenchReport | None
    error: str | None = None
