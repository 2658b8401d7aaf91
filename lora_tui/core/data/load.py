"""Load a dataset into normalised examples, and split off a validation set.

What the training engine calls: ``load_examples`` (read + detect format +
normalise, with row findings) and ``hold_out`` (the validation split of training
data given without a validation file, also what the wizard shows); ``validation_line``
says in one line where the eval rows come from. No printing, and the user's file is
only ever read.
"""

from __future__ import annotations

import random
from pathlib import Path

from .formats import normalise_rows
from .hub_data import open_dataset
from .records import Example, LoadedDataset


def load_examples(path, *, tokenizer=None, max_seq_len: int = 1024, subset: str | None = None) -> LoadedDataset:
    """Read `path` (file, folder or hub id) and normalise its rows; raises DataError if it cannot be read at all.

    `tokenizer` and `max_seq_len` are only used to cut a folder of .txt files into chunks; `subset` is
    the config name of a hub dataset.
    """
    read = open_dataset(path, subset=subset, tokenizer=tokenizer, max_seq_len=max_seq_len).drain()
    fmt, examples, findings = normalise_rows(read.rows)
    return LoadedDataset(
        path=str(Path(path)), format=fmt, container=read.container, rows=read.rows_total,
        examples=examples, findings=sort_findings(read.findings + findings), source=getattr(read, "source", None),
    )


def skipped_summary(findings: list, shown: int = 3, unit: str = "line") -> str | None:
    """One line naming the rows training skips (error findings) and where, or None when none is.

    `unit`: what a finding's number counts ("row" for a hub dataset, whose rows have no file lines)."""
    errors = [f for f in findings if f.severity == "error"]
    if not errors:
        return None
    where = "; ".join(f"{f.source + ' ' if f.source else ''}{unit} {f.line}: {f.message}" if f.line is not None
                      else f"{f.source or 'file'}: {f.message}" for f in errors[:shown])
    more = f" (and {len(errors) - shown} more)" if len(errors) > shown else ""
    return f"{len(errors)} row(s) skipped: {where}{more}. `lora-tui validate` lists every one."


def sort_findings(findings: list) -> list:
    """By file (for folders), then line; findings without a line first. Stable within a line."""
    return sorted(findings, key=lambda f: (f.source or "", f.line or 0))


def split_examples(examples: list[Example], val_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, validation): a seeded random `val_fraction` of the rows, each part kept in file order.

    With any fraction > 0 and at least two rows, validation gets at least one row and train keeps at least one.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = len(examples)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(1, n_val), n - 1)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held_out = set(order[:n_val])
    train = [e for i, e in enumerate(examples) if i not in held_out]
    val = [e for i, e in enumerate(examples) if i in held_out]
    return train, val


# Fewer training rows than this: every one is kept for training, and no validation split is held out
# (one or two held-out rows would measure nothing and cost a share of tiny data).
MIN_ROWS_TO_HOLD_OUT = 20


def hold_out(examples: list, val_fraction: float, seed: int) -> tuple[list, list]:
    """(train, held out) for training data given without a validation file: ``split_examples`` with
    ``val_fraction``, or nothing held out below MIN_ROWS_TO_HOLD_OUT rows. The trainer and the wizard's
    Dataset step both call this, so they hold out the same rows."""
    if val_fraction <= 0 or len(examples) < MIN_ROWS_TO_HOLD_OUT:
        return list(examples), []
    return split_examples(examples, val_fraction, seed)


def validation_line(train: str, validation: str | None, val_fraction: float, rows: int, eval_rows: int) -> str:
    """Where the eval rows come from, in the user's words: the run's output, its started event, the wizard's
    Dataset step and the model card say this. ``rows``: valid training rows before any were held out."""
    plural = "s" if eval_rows != 1 else ""
    if validation:
        return f"{eval_rows} row{plural} from {validation}"
    if eval_rows:
        return f"{eval_rows} row{plural} held out of the {rows} in {train} (data.val_fraction {val_fraction:.0%})"
    if val_fraction <= 0:
        return "none (data.val_fraction is 0 and no data.validation is given): no eval loss"
    return (f"none: {rows} row{'s are' if rows != 1 else ' is'} too few to hold out "
            f"{val_fraction:.0%} ({MIN_ROWS_TO_HOLD_OUT} needed; or set data.validation)")
