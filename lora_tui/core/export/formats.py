"""The one table of export formats: what `lora-tui export` / `merge` / `push`, the wizard's Export screen
and the docs offer, so a format is added here and nowhere else.

Each row says what the format is called (``name``, ``label``), how it is asked for (the wizard's
``key``, the `export` ``flag``, the `push` ``push_flag``), its ``options`` and their ``default``
(the GGUF weight types, the merge dtypes), the function that writes it and the one that checks it
(``"module:function"``, imported only when used, so the CLI and the wizard start without torch),
and where it lands (``file_name``, relative to the run directory).

The GGUF weight types, their default and the merge dtypes are written once, in ``choices`` (the writers
check against them; this table, above the writers, offers them).

Must not: import anything beyond the standard library and ``export.choices`` at module top, print, or
write files.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from lora_tui.core.export.choices import DEFAULT_GGUF_TYPE, GGUF_TYPE_NOTES, GGUF_TYPES, MERGE_DTYPES  # noqa: F401


@dataclass(frozen=True)
class ExportFormat:
    name: str  # the kind recorded in <run>/exports.json and shown in summaries
    label: str
    key: str  # the Export screen's key
    short: str  # the Export screen's button
    flag: str | None  # `lora-tui export` flag; None: its own command (`lora-tui merge RUN OUT`)
    writer: str  # "module:function", called as writer(run, out, overwrite=..., on_progress=..., **{option_arg: option})
    file_name: str  # relative to the run directory; {name}: the run's export name, {option}: the chosen option
    help: str = ""
    options: tuple[str, ...] = ()
    default: str | None = None
    option_flag: str | None = None  # the `export` option that picks among options
    option_help: str = ""
    option_arg: str | None = None  # the writer's keyword for the option
    check: str | None = None  # "module:function" checking what was written (verify_export's signature)
    push_flag: str | None = None  # `lora-tui push` flag that uploads the recorded files of this kind
    push_help: str = ""
    progress: bool = True  # the writer takes on_progress
    llamacpp_only: bool = False  # its check can run nowhere else (a LoRA GGUF applied on its base)

    def function(self, which: str = "writer") -> Callable:
        module, _, attr = getattr(self, which).partition(":")
        return getattr(importlib.import_module(module), attr)

    def write(self, run, out=None, *, option: str | None = None, overwrite: bool = False, on_progress=None):
        """Write this format for ``run``; returns the path written."""
        kwargs: dict = {"overwrite": overwrite}
        if self.progress:
            kwargs["on_progress"] = on_progress
        if self.option_arg:
            kwargs[self.option_arg] = option or self.default
        return self.function()(run, out, **kwargs)

    def check_target(self, written) -> tuple:
        """(artefact, gguf_file, lora) for the check of what ``write`` returned: a merged folder, a GGUF file, or a
        LoRA GGUF (an info with ``path`` and ``base_path``) that llama.cpp applies on its base file."""
        from pathlib import Path

        if hasattr(written, "base_path"):
            return written.base_path.parent, written.base_path.name, written.path
        written = Path(written)
        return (written.parent, written.name, None) if written.suffix == ".gguf" else (written, None, None)


EXPORT_FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat("zip", "Adapter zip", "z", "Zip", "--zip", "lora_tui.core.export.artefacts:zip_adapter",
                 "{name}-adapter.zip", help="write <run>/<name>-adapter.zip (default: only show the adapter)",
                 progress=False),
    ExportFormat("merged", "Merged model (safetensors)", "m", "Merge", None, "lora_tui.core.export.artefacts:merge_adapter",
                 "merged", help="the base model with the adapter merged in, loads with plain transformers",
                 options=MERGE_DTYPES, default="auto", option_arg="dtype",
                 option_help="dtype of the saved weights; auto keeps the base model's",
                 check="lora_tui.core.export.check:verify_export", push_flag="--merged",
                 push_help="upload the run's latest merged model instead of the adapter"),
    ExportFormat("gguf_adapter", "GGUF LoRA adapter (llama.cpp --lora, Ollama ADAPTER)", "a", "LoRA GGUF", "--gguf-adapter",
                 "lora_tui.core.export.gguf_adapter:write_adapter_gguf", "gguf/{name}-lora.gguf",
                 help="write the adapter alone as a llama.cpp LoRA GGUF (<run>/gguf/<name>-lora.gguf) and the base "
                      "model's f16 GGUF once, shared by every adapter of that base, with an Ollama Modelfile-lora "
                      "(FROM base, ADAPTER lora)",
                 check="lora_tui.core.export.check:verify_export", llamacpp_only=True),
    ExportFormat("gguf", "GGUF (merged, llama.cpp / Ollama)", "g", "GGUF…", "--gguf", "lora_tui.core.export.artefacts:export_gguf",
                 "gguf/{name}-{option}.gguf", help="write the merged model as one GGUF file (llama.cpp, Ollama)",
                 options=GGUF_TYPES, default=DEFAULT_GGUF_TYPE, option_flag="--gguf-type", option_arg="gguf_type",
                 option_help=f"GGUF weight type (default {DEFAULT_GGUF_TYPE}; k-quants q6_k, q5_k_m, q4_k_m: "
                             'pip install "lora-tui[gguf-kquant]")',
                 check="lora_tui.core.export.check:verify_export", push_flag="--gguf",
                 push_help="upload the run's GGUF file(s) and their Modelfiles instead of the adapter"),
)


def export_format(name: str) -> ExportFormat:
    for fmt in EXPORT_FORMATS:
        if fmt.name == name:
            return fmt
    raise KeyError(f"no export format {name!r}: one of {', '.join(f.name for f in EXPORT_FORMATS)}")


def pushable() -> tuple[ExportFormat, ...]:
    return tuple(f for f in EXPORT_FORMATS if f.push_flag)
