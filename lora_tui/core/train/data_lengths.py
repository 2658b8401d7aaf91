"""The data's longest row, as the trainer tokenizes it: the data input of every workload the estimate sizes.

The trainer plans rows no longer than its data's longest tokenized row (core/plan/workload.py:
short data needs no checkpointing). Whoever else shows a plan for the same config -- `lora-tui
estimate`, the wizard's Model, Hardware and Parameters steps -- must feed the plan the same figure,
or the same config shows two estimates (5.2 GiB at rows of max_seq_len, 2.7 GiB at the data's).
``measure_data`` reads the data exactly as the trainer does (``training.build_datasets``: the training
rows, their held-out split or the validation file, the chat template, ``data.max_seq_len``) and, when
it cannot, says why (the plan then assumes rows of ``data.max_seq_len``, and says so). Each figure is
kept on disk by what it depends on (core/train/data_lengths_cache.py): the next `estimate` or wizard on
the same data, tokenizer and settings reads it in milliseconds instead of loading the tokenizer.

Must not import torch, transformers or datasets at module top (the wizard imports it).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataLengths:
    """The longest tokenized row of the run's data (train and eval), or None and why it is unknown."""

    longest: int | None
    reason: str = ""

    def rows_text(self, max_seq_len: int) -> str:
        """How long the plan's rows are, in the user's words."""
        if self.longest is None:
            return f"rows of {max_seq_len} tokens (data.max_seq_len: the data's lengths are unknown: {self.reason})"
        if self.longest >= max_seq_len:
            return f"rows of {max_seq_len} tokens (data.max_seq_len; the data's longest row is cut to it)"
        return f"rows up to {self.longest} tokens (the data's longest; data.max_seq_len {max_seq_len})"


def measure_data(config, tokenizer=None, tokenizer_loader=None) -> DataLengths:
    """The data's longest row for ``config``; never raises.

    A figure kept for the same data, tokenizer and settings (core/train/data_lengths_cache.py) is returned
    without loading anything; otherwise the data is read as the trainer reads it and the figure kept.
    ``tokenizer`` (or ``tokenizer_loader()``, called only when the data must be read) must be the tokenizer
    of ``config.model``: its figure is kept under that model's key. Neither: the model's is loaded.
    """
    from lora_tui.core.train.data_lengths_cache import keep, lengths_key, recall

    key = lengths_key(config)  # before reading: a file edited meanwhile is measured again next time
    longest = recall(key)
    if longest is not None:
        return DataLengths(longest)
    from lora_tui.core.train.training import build_datasets, longest_row

    try:
        if tokenizer is None and tokenizer_loader is not None:
            tokenizer = tokenizer_loader()
        if tokenizer is None:
            from lora_tui.core.model.models import load_tokenizer

            tokenizer = load_tokenizer(config.model.name, config.model.trust_remote_code, config.model.revision)
        train_ds, eval_ds, _ = build_datasets(config, tokenizer)
        longest = longest_row(train_ds, eval_ds)
    except Exception as exc:  # noqa: BLE001 -- an unreadable dataset or tokenizer: the plan says it assumed max_seq_len
        text = str(getattr(exc, "reason", "") or exc).strip().splitlines()
        first = (text[0] if text else type(exc).__name__).split(". Fix:")[0]  # the cause; train names the fix
        return DataLengths(None, first if len(first) <= 200 else first[:199] + "…")
    keep(key or lengths_key(config), longest)  # no key before: the embedded model was converted just now
    return DataLengths(longest)

