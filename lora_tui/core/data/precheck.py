"""A fast, bounded look at a dataset before a run directory is claimed: is there anything to train on?

`lora-tui train` and the wizard's launch call ``check_trainable_prefix`` so that an empty file, an
empty folder, random bytes or a file that cannot be read is refused in one line before anything is
written, instead of starting a trainer that fails. It reuses the readers and the normaliser that
``validate`` uses, on the first PREFIX_ITEMS rows (or faults) only. It does not tokenise (that
needs the model's tokenizer; ``validate`` and the trainer do it) and never writes or prints.
"""

from __future__ import annotations

import shlex
from itertools import islice

from lora_tui.core.safe_read import clip

from .formats import Normaliser
from .preference import PreferenceNormaliser, label_findings
from .hub_data import open_dataset
from .records import DataError
from .rows import RawRow

PREFIX_ITEMS = 1000  # rows or faulty lines looked at; each line is at most bounds.MAX_LINE_BYTES


def check_trainable_prefix(path, *, subset: str | None = None, method: str = "sft") -> int:
    """The number of usable rows among the first PREFIX_ITEMS of `path` (at least 1); DataError, with the
    fix, when there is none or the data cannot be read. `method` dpo / kto: preference rows
    (``preference.PreferenceNormaliser``): SFT rows, KTO rows for dpo, or pairs with no usable row are refused."""
    try:
        read = open_dataset(path, subset=subset)  # missing, empty, FIFO, unsupported: DataError here
        items = list(islice(read.items(), PREFIX_ITEMS))
    except OSError as exc:  # an I/O error while reading (a failing disk, a file the kernel will not give)
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}). Fix: check the file and its disk "
                        "(`lora-tui validate` reads it the same way).") from None
    rows = [item for item in items if isinstance(item, RawRow)]
    faults = [item for item in items if not isinstance(item, RawRow)]
    normaliser = Normaliser(rows) if method == "sft" else PreferenceNormaliser(rows, method)
    usable = 0
    for row in rows:
        example, findings = normaliser.row(row)
        usable += bool(example)
        faults.extend(findings)
    if usable and method == "kto":
        examples = [e for row in rows for e in normaliser.row(row)[0]]
        one_sided = [f for f in label_findings(examples, method) if f.severity == "error"]
        if one_sided and len(items) < PREFIX_ITEMS:  # the whole file was read: nothing to contrast
            raise DataError(f"{path}: {one_sided[0].message}. Fix: {one_sided[0].fix}.")
    if usable:
        return usable
    first = min((f for f in faults + normaliser.findings if f.severity == "error"),
                key=lambda f: f.line if f.line is not None else 0, default=None)
    n = len(items)
    looked = f"the first {n:,} rows" if n >= PREFIX_ITEMS else f"the {n:,} row{'s' if n != 1 else ''} it holds"
    why = f" ({f'line {first.line}: ' if first and first.line is not None else ''}{clip(first.message, 160)})" if first else ""
    if first is not None and "training.method" in (first.fix or ""):  # rows for another method: say which
        raise DataError(f"{path}: no usable row in {looked}{why}. Fix: {first.fix}.")
    raise DataError(f"{path}: no usable row in {looked}{why}. Fix: `lora-tui validate {shlex.quote(str(path))}` lists every "
                    "problem; point data.train at your dataset file.")
