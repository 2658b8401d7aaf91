"""Every call the wizard makes into the core, in one place.

Screens run these methods in thread workers (never on the UI thread), because
most of them import torch / transformers on first use. Keeping them together
lets tests substitute fixed answers where a screen must look the same on every
machine (a fixed HardwareReport for snapshots), while the pilot tests use the
real thing. No widget code here, and no training logic: only core calls and the
small glue that hands a Config to the core (core/plan/workload.py makes it the estimate's workload).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from lora_tui.core.config import Config

PREVIEW_ROWS = 6
_IMPORT_LOCK = threading.Lock()
# Building a model is not thread-safe here: accelerate's init_empty_weights (model layers) patches
# torch.nn.Module for the whole process, and a model loading meanwhile in another thread ends up
# with meta tensors. One model construction at a time.
_MODEL_LOCK = threading.Lock()
_imported = False


def warm_imports() -> None:
    """Import transformers (and what the core takes from it) once, from one thread at a time.

    transformers resolves its names lazily on first access; two workers doing that at the same
    moment can see a half-initialised module ("cannot import name 'AutoTokenizer'"). Every
    Backend method that reaches transformers calls this first.
    """
    global _imported
    if _imported:
        return
    with _IMPORT_LOCK:
        if _imported:
            return
        import transformers
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: F401
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES  # noqa: F401

        try:
            import accelerate  # noqa: F401  (linear_layer_names_from_config)
        except ImportError:
            pass
        _imported = bool(transformers)

Progress = Callable[[str, float], None]


class Backend:
    def __init__(self) -> None:
        self._tokenizers: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    # --- hardware and memory --------------------------------------------------------------
    def probe_hardware(self, check_libraries: bool = True):
        from lora_tui.core.machine.hardware import probe_hardware

        return probe_hardware(check_libraries=check_libraries)

    def workload(self, config: Config, hardware, model: str | None = None, longest: int | None = None):
        from lora_tui.core.plan.workload import workload_of

        return workload_of(config, hardware, model=model, longest=longest)

    def judge(self, config: Config, hardware, longest: int | None = None) -> tuple[Any, Any]:
        """(estimate, verdict) for the current plan on this hardware; rows no longer than ``longest`` when known."""
        from lora_tui.core.plan.memory import judge_fit

        plan = self.workload(config, hardware, longest=longest)
        verdict = judge_fit(plan, hardware)
        return verdict.estimate, verdict

    def batch(self, config: Config, hardware, longest: int | None = None):
        """Micro-batch, accumulation and checkpointing the run would use (auto resolved), with the reasons."""
        from lora_tui.core.plan.workload import choose_batch

        return choose_batch(config, hardware, longest=longest)

    def bench(self, config: Config, on_arm: Callable[[Any], None] | None = None,
              on_progress: Callable[[str, str], None] | None = None):
        """`lora-tui bench` on this plan: lora-tui's trainer against plain TRL, each arm in its own process;
        ``on_progress(arm, text)`` every second: which step the running arm is on."""
        from lora_tui.core.bench.runner import run_bench

        return run_bench(config, on_arm=on_arm, on_progress=on_progress)

    def catalogue(self, config: Config, hardware, longest: int | None = None) -> list[tuple[str, int | None, int | None, str | None]]:
        """(name, parameters, bytes needed with the current plan, verdict) for each catalogue model; rows no
        longer than ``longest`` (the data's longest, measured with the current model's tokenizer)."""
        from lora_tui.core.model.catalogue import CATALOGUE, model_dims
        from lora_tui.core.plan.memory import judge_fit

        from lora_tui.core.model.embedded import EMBEDDED_MODEL

        rows = []
        entries = [(EMBEDDED_MODEL, model_dims(EMBEDDED_MODEL))]
        entries += [(dims.hub_id or name, dims) for name, dims in CATALOGUE.items()]
        for name, dims in entries:
            try:
                verdict = judge_fit(self.workload(config, hardware, model=name, longest=longest), hardware)
                rows.append((name, dims.params, verdict.estimate.total_bytes, verdict.verdict))
            except Exception:  # one odd entry must not hide the rest of the table
                rows.append((name, dims.params, None, None))
        return rows

    # --- models ---------------------------------------------------------------------------
    def check_model(self, name: str, trust_remote_code: bool = False):
        from lora_tui.core.model.embedded import is_embedded
        from lora_tui.core.model.models import check_model_source

        if not is_embedded(name):  # the embedded check reads no config: no need to wait for transformers
            warm_imports()

        return check_model_source(name, trust_remote_code=trust_remote_code)

    def linear_layers(self, name: str, trust_remote_code: bool = False) -> list[str]:
        from lora_tui.core.model.models import linear_layer_names_from_config

        warm_imports()
        with _MODEL_LOCK:
            return linear_layer_names_from_config(name, trust_remote_code=trust_remote_code)

    def tokenizer(self, config: Config):
        key = (config.model.name, config.model.trust_remote_code, config.model.revision)
        warm_imports()
        with self._lock:
            if key not in self._tokenizers:
                from lora_tui.core.model.models import load_tokenizer

                self._tokenizers[key] = load_tokenizer(config.model.name, trust_remote_code=key[1], revision=key[2])
            return self._tokenizers[key]

    # --- data -----------------------------------------------------------------------------
    def validate(self, config: Config, on_progress: Progress | None = None):
        """Validate the training file with the model's tokenizer; render a few rows as training sees them."""
        from lora_tui.core.data import ChatFormatter, validate_dataset
        from lora_tui.core.data.load import hold_out, validation_line
        from lora_tui.core.data.hub_data import parse_hub_id
        from lora_tui.core.paths import resolve_data_path
        from lora_tui.ui.state import DatasetView, PreviewRow

        from lora_tui.core.model.models import resolve_model_path

        d = config.data
        with _MODEL_LOCK:  # the embedded model converts once, with progress (data_lengths may want it too)
            resolve_model_path(config.model.name, on_progress)
        tokenizer = self.tokenizer(config)
        train_path = d.train if parse_hub_id(d.train) else resolve_data_path(d.train)  # org/name: a hub dataset
        from lora_tui.core.data.preference_load import method_for, method_of_data, preference_preview
        from lora_tui.ui.state import PreferencePreviewRow

        method = method_for(config.training.method, method_of_data(train_path, d.subset))  # pairs: dpo / kto
        report = validate_dataset(train_path, tokenizer=tokenizer, max_seq_len=d.max_seq_len, template=d.template,
                                  train_on_prompt=d.train_on_prompt, on_progress=on_progress, subset=d.subset,
                                  method=method)
        if method != "sft":
            preview = [PreferencePreviewRow(*row) for row in
                       preference_preview(report.examples, tokenizer, d.template, d.max_seq_len, PREVIEW_ROWS)]
        else:
            formatter = ChatFormatter(tokenizer, template=d.template, train_on_prompt=d.train_on_prompt)
            preview = [PreviewRow(ex.line, formatter.segments(ex, d.max_seq_len)) for ex in report.examples[:PREVIEW_ROWS]]
        view = DatasetView(path=d.train, report=report, preview=preview, method=method)
        if d.validation:
            view.validation_path = d.validation
            try:
                vpath = d.validation if parse_hub_id(d.validation) else resolve_data_path(d.validation)
                vreport = validate_dataset(vpath, max_seq_len=d.max_seq_len, subset=d.subset, method=method)
                view.validation_rows = vreport.valid_rows
                view.validation_note = validation_line(d.train, d.validation, d.val_fraction, report.valid_rows,
                                                       vreport.valid_rows)
                if vreport.errors:
                    view.validation_note += f" ({len(vreport.errors)} rows with errors are skipped)"
            except Exception as exc:  # DataError: unreadable validation file
                view.validation_note = f"cannot read {d.validation}: {exc}"
        else:  # the trainer's own split of these rows (core.data.load.hold_out)
            _, held_out = hold_out([None] * report.valid_rows, d.val_fraction, config.training.seed)  # its size
            view.validation_rows = len(held_out)
            view.validation_note = validation_line(d.train, None, d.val_fraction, report.valid_rows, len(held_out))
        return view

    def data_lengths(self, config: Config):
        """The data's longest row as the trainer tokenizes it (core/train/data_lengths.py): what every memory
        plan the wizard shows assumes, so the wizard, `lora-tui estimate` and the run show one figure."""
        from lora_tui.core.model.models import resolve_model_path
        from lora_tui.core.train.data_lengths import measure_data

        with _MODEL_LOCK:
            resolve_model_path(config.model.name)
        # the tokenizer loads only when no figure is kept for this data (core/train/data_lengths_cache.py)
        return measure_data(config, tokenizer_loader=lambda: self.tokenizer(config))

    # --- runs -----------------------------------------------------------------------------
    def active_runs(self, runs_dir: str) -> list:
        """Runs in ``runs_dir`` whose trainer is starting, running or stopping."""
        from lora_tui.core.run.runs import STATES_ACTIVE, list_runs

        return [r for r in list_runs(runs_dir) if r.state in STATES_ACTIVE]

    def start_run(self, config: Config):
        from lora_tui.core.run.launcher import plan_run_dir, start_run
        from lora_tui.core.run.runs import RunError, is_run_directory, quoted

        path = plan_run_dir(config)
        if is_run_directory(path):  # said in the wizard's words: the CLI's --run-dir / --overwrite do not apply here
            raise RunError(f"{quoted(path)} already holds a run named {path.name}. Fix: give output.run_name another "
                           "name (in the form above), or open that run on the Training step to watch it or chat "
                           "with it.")
        return start_run(config)

    def stop_run(self, run, wait: float = 0.0) -> str:
        from lora_tui.core.run.launcher import stop_run

        return stop_run(run, wait=wait)

    # --- chat and export ------------------------------------------------------------------
    def open_chat(self, run, on_progress: Progress | None = None):
        from lora_tui.core.chat.session import ChatSession

        warm_imports()
        with _MODEL_LOCK:
            return ChatSession.from_run(run.path, on_progress=on_progress)

    def add_chat_adapter(self, session, run_path: str) -> str:
        """Load one more finished run's adapter into an open chat (same base); returns its name."""
        warm_imports()
        with _MODEL_LOCK:
            return session.add_adapter(run_path)

    def chat_runs(self, session, folder: str) -> list:
        """(name, path) of the finished runs in ``folder`` on the chat's base model that are not loaded yet."""
        from lora_tui.core.chat.adapters import runs_sharing_base

        source = getattr(session, "source", None)
        if getattr(source, "run", None) is None and getattr(source, "adapter_dir", None) is None:
            return []
        loaded = [s.run.path for s in getattr(session, "adapters", {}).values() if getattr(s, "run", None)]
        return runs_sharing_base(folder, source, exclude=loaded)

    def generation_settings(self, **values):
        from lora_tui.core.chat.session import GenerationSettings

        return GenerationSettings(**values)

    def export_summary(self, run) -> dict:
        from lora_tui.core.export.artefacts import export_summary

        return export_summary(run.path)

    def zip_adapter(self, run, overwrite: bool = False) -> Path:
        from lora_tui.core.export.artefacts import zip_adapter

        return zip_adapter(run.path, overwrite=overwrite)

    def merge(self, run, out: str, dtype: str = "auto", overwrite: bool = False,
              on_progress: Progress | None = None):
        from lora_tui.core.export.artefacts import merge_adapter

        warm_imports()
        with _MODEL_LOCK:
            return merge_adapter(run.path, out, dtype=dtype, overwrite=overwrite, on_progress=on_progress)

    def export_sizes(self, run) -> dict:
        """Estimated bytes of each GGUF type of the run's base model, before anything is written."""
        from lora_tui.core.config import load_config
        from lora_tui.core.export.sizes import gguf_sizes

        model = load_config(run.config_path).model
        sizes = gguf_sizes(model.name, trust_remote_code=model.trust_remote_code, revision=model.revision)
        if (run.adapter_dir / "adapter_config.json").is_file():  # the LoRA GGUF: its tensors at f16
            from lora_tui.core.export.sizes import adapter_values

            sizes["gguf_adapter"] = 2 * adapter_values(run.adapter_dir)
        return sizes

    def write_export(self, run, name: str, option: str | None = None, overwrite: bool = False,
                     on_progress: Progress | None = None):
        """Write one format of core/export/formats.py's table (its writer's result: a path, or an info)."""
        from lora_tui.core.export.formats import export_format

        warm_imports()
        with _MODEL_LOCK:
            return export_format(name).write(run.path, option=option, overwrite=overwrite, on_progress=on_progress)

    def verify_export(self, run, artefact, gguf_file: str | None = None, on_progress: Progress | None = None,
                      lora=None):
        """The round-trip check of a merged model, a GGUF, or a LoRA GGUF applied on its base GGUF (``lora``);
        recorded in the run's exports.json."""
        from lora_tui.core.export.artefacts import record_check
        from lora_tui.core.export.check import verify_export

        with _MODEL_LOCK:
            result = verify_export(run.path, artefact, gguf_file=gguf_file, on_progress=on_progress,
                                   **({"lora": lora} if lora else {}))
        record_check(run, str(lora or (Path(artefact) / gguf_file if gguf_file else artefact)), result.to_dict())
        return result

    def upload_plan(self, run, repo_id: str, kind: str = "adapter"):
        from lora_tui.core.export.hub import upload_plan

        return upload_plan(run.path, repo_id, kind)

    def push(self, plan, private: bool = False) -> str:
        from lora_tui.core.export.hub import push_run

        return push_run(plan, private=private)
