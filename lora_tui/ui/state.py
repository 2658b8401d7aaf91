"""The wizard's state: everything the user chose, in one object owned by the app.

Screens read and write this object and re-read it when they are shown again,
so going back a screen never loses a choice. It holds plain values and core
results; it never touches widgets and never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lora_tui.core.config import Config


@dataclass
class PreviewRow:
    """One dataset row as the model sees it: (text, trained) segments."""

    line: int
    segments: list[tuple[str, bool]]
    tokens: int | None = None


@dataclass
class PreferencePreviewRow:
    """One dpo / kto row as the trainer scores it: the prompt (masked) and each answer."""

    line: int
    prompt: str
    answers: list[tuple[str, str, int]]  # (chosen / rejected / desirable / undesirable, text, tokens cut)


@dataclass
class DatasetView:
    """What the dataset screen shows: the validation report and rendered rows."""

    path: str
    report: Any  # lora_tui.core.data.ValidationReport
    preview: list[PreviewRow] = field(default_factory=list)
    validation_path: str | None = None
    validation_rows: int | None = None  # rows in the validation file, or held out from train
    validation_note: str = ""
    key: tuple = ()  # WizardState.dataset_key() it was computed for
    method: str = "sft"  # the training.method the rows were checked for (the rows decide sft vs dpo / kto)

    def refusal(self) -> str | None:
        """Why training cannot start on this data, or None when it can."""
        report = self.report
        if not report.valid_rows:
            return (f"{self.path} has no valid row ({report.rows} rows read). "
                    "Fix the errors listed on the Dataset step's Findings tab, or pick another file.")
        if getattr(report, "trained_tokens", None) == 0:
            return ("Every label is masked: no token of any row would be trained. "
                    "Fix: check that rows have an answer (assistant/output/completion), "
                    "or turn on data.train_on_prompt.")
        return None


@dataclass
class WizardState:
    config: Config = field(default_factory=Config)
    model_check: Any = None  # lora_tui.core.model.models.ModelCheck for config.model.name
    linear_layers: dict[str, list[str]] = field(default_factory=dict)  # model name -> layer names
    layer_errors: dict[str, str] = field(default_factory=dict)  # model name -> why its layers are unknown
    hardware: Any = None  # lora_tui.core.machine.hardware.HardwareReport
    dataset: DatasetView | None = None
    run: Any = None  # lora_tui.core.run.runs.RunDirectory being shown on the training screen
    config_path: str | None = None  # last YAML saved or loaded
    data_lengths: tuple | None = None  # (dataset_key(), core.train.data_lengths.DataLengths) last measured

    def layers_for_model(self) -> list[str] | None:
        return self.linear_layers.get(self.config.model.name)

    def dataset_key(self) -> tuple:
        """What a validation depends on: a change to any of these needs a new one."""
        d, m = self.config.data, self.config.model
        return (m.name, d.train, d.validation, d.val_fraction, d.template, d.train_on_prompt,
                d.max_seq_len, d.subset, m.trust_remote_code, m.revision)

    def lengths(self):
        """The data's measured lengths (DataLengths) for the current data and model, or None until measured."""
        measured = self.data_lengths
        return measured[1] if measured is not None and measured[0] == self.dataset_key() else None

    def longest_row(self) -> int | None:
        """Tokens in the data's longest row, train and eval, as the trainer tokenizes it (it plans memory with
        it); None until measured, or when the data cannot be read (the plan then assumes max_seq_len)."""
        lengths = self.lengths()
        return lengths.longest if lengths is not None else None

    def dataset_current(self) -> DatasetView | None:
        view = self.dataset
        if view is not None and getattr(view, "key", None) == self.dataset_key():
            return view
        return None
