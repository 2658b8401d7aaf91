"""Which steps of the flow work for a model's family: what the Model screen shows beside each model.

``family_steps(model_type)`` lists the steps (train, QLoRA, resume, chat, adapters, merge, GGUF, Modelfile)
with whether each works and, where one does not, the one line that refuses it. A family of the matrix
(core/model/families.py) is claimed for a step only because tests/test_families.py takes its tiny model
through that step (GGUF: the export's own ``gguf_support``, checked in llama.cpp by
tests/test_export_gguf*.py); a model type outside the matrix is "untested", never claimed.

Reads tables only: no torch, no transformers (the wizard shows it while it paints).
"""

from __future__ import annotations

from lora_tui.core.export.gguf import gguf_support
from lora_tui.core.model.families import family_of

STEPS = ("train", "QLoRA", "resume", "chat", "adapters", "merge", "GGUF", "Modelfile")


def family_steps(model_type: str | None) -> list[tuple[str, bool, str]]:
    """(step, works, why not) for each step; [] for a model type outside the family matrix (untested)."""
    fam = family_of(model_type)
    if fam is None:
        return []
    gguf_ok, line = gguf_support(str(model_type))
    rows = [(step, True, "") for step in STEPS if step not in ("GGUF", "Modelfile")]
    return rows + [("GGUF", gguf_ok, "" if gguf_ok else line),
                   ("Modelfile", True, "")]  # written with the merged model, and beside each GGUF file


def steps_cell(model_type: str | None) -> str:
    """A table cell: "all 8", "no GGUF" (the steps that do not work), or "untested"."""
    rows = family_steps(model_type)
    if not rows:
        return "untested"
    missing = [step for step, ok, _ in rows if not ok]
    return f"all {len(rows)}" if not missing else "no " + ", ".join(missing)


def steps_line(model_type: str | None) -> str:
    """One line for the chosen model: its family and each step, with why a step does not work."""
    fam = family_of(model_type)
    rows = family_steps(model_type)
    if fam is None:
        return (f"{model_type or 'This model'} is outside the family matrix (benchmarks/family_matrix.py): "
                "it may train, but no step is proven for it.")
    works = ", ".join(step for step, ok, _ in rows if ok)
    not_ok = "; ".join(f"{step}: {why}" for step, ok, why in rows if not ok)
    return f"{fam.label}: {works} work" + (f"; {not_ok}" if not_ok else "")
