"""The adapter's model card (``adapter/README.md``), written from the run's own records.

Everything comes from ``config.yaml`` and ``events.jsonl`` (started / eval / step /
finished / stopped events), so the card states what happened, not what was planned.
Built with ``huggingface_hub.ModelCard`` / ``ModelCardData``, so the hub parses its metadata
(base_model, library_name: peft, tags, eval results as model-index, data hashes, memory)
and the folder can be pushed as is (`lora-tui push`).

Must not: import torch / transformers / peft, print, or write anywhere but adapter/README.md.
"""

from __future__ import annotations

import os
from pathlib import Path

from lora_tui.core.config import ConfigError, load_config
from lora_tui.core.model.embedded import EMBEDDED_HUB_ID, is_embedded
from lora_tui.core.plan.batch import Batch
from lora_tui.core.run.history import RunHistory
from lora_tui.core.run.runs import RunDirectory, RunError, file_sha256
from lora_tui.core.run.started import Started
from lora_tui.core.units import gib, human_size
EMBEDDED_LICENSE = "apache-2.0"
MISSING = "not recorded"


def _run(run: str | Path | RunDirectory) -> RunDirectory:
    return run if isinstance(run, RunDirectory) else RunDirectory.find(run)


def _num(value, digits: int = 4) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 else f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


def _sha256(path: str | None) -> str | None:
    """Hash the data (file or folder) when the trainer did not record it and it is still where the config says."""
    return file_sha256(Path(path).expanduser()) if path else None


def _adapter_config(run: RunDirectory) -> dict:
    import json

    try:
        return json.loads((run.adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def hub_base_model(name: str) -> str | None:
    """The hub id to put in base_model, or None for a local directory (the hub would reject a path)."""
    if is_embedded(name):
        return EMBEDDED_HUB_ID
    from lora_tui.core.model.models import model_kind

    return name if model_kind(name) == "hub" else None


def render_model_card(run: str | Path | RunDirectory) -> str:
    run = _run(run)
    try:
        config = load_config(run.config_path)
    except ConfigError as exc:
        raise RunError(str(exc)) from None
    history = RunHistory.of(run)
    started = history.started or Started()
    finished, stopped = history.finished, history.stopped
    before, after = history.eval_before, history.eval_after
    last_step = history.last_step or {}
    m, lo, tr, data = config.model, config.lora, config.training, config.data

    base_id = hub_base_model(m.name)
    saved = _adapter_config(run)  # what the adapter really holds wins over the plan in config.yaml
    base_label = EMBEDDED_HUB_ID + " (embedded copy)" if is_embedded(m.name) else m.name
    method = started.method or {"4bit": "QLoRA", "8bit": "LoRA-8bit"}.get(m.load_in, "LoRA")
    recorded = started.data or {}
    memory = _memory(run, history)
    card_data = _card_data(run, base_id, method, is_embedded(m.name), recorded, before, finished or after, memory,
                           objective=history.method)

    load = {"16bit": "16-bit (fp32 on CPU)", "8bit": "8-bit (bitsandbytes)",
            "4bit": "4-bit NF4" + (" + double quantisation" if m.double_quant else "")}[m.load_in]
    r, alpha = saved.get("r", lo.r), saved.get("lora_alpha", lo.alpha)
    dropout = saved.get("lora_dropout", lo.dropout)
    rslora, dora = saved.get("use_rslora", lo.use_rslora), saved.get("use_dora", lo.use_dora)
    targets = started.target_modules or saved.get("target_modules") or lo.targets
    targets = ", ".join(sorted(targets)) if isinstance(targets, (list, tuple, set)) else str(targets)
    trainable, total = started.trainable_params, started.total_params
    params = (f"{trainable:,} of {total:,} ({100 * trainable / total:.3f}%)" if trainable and total else MISSING)
    steps_done = (finished or stopped or {}).get("step", last_step.get("step"))
    max_steps = started.max_steps if started.max_steps is not None else tr.max_steps if tr.max_steps > 0 else None
    epochs_planned = f"{tr.epochs:g}" if tr.max_steps <= 0 else f"max_steps {tr.max_steps}"
    epoch_done = last_step.get("epoch")
    outcome = ("finished" if finished else f"stopped at step {stopped.get('step')} ({stopped.get('reason', 'by request')})"
               if stopped else run.state())

    lines = [f"# {run.name}: {method} adapter for {base_label}", "",
             f"A {method} adapter trained with lora-tui. Run state: {outcome}.", "",
             _base_note(m.name, saved.get("base_model_name_or_path"), base_id), "",
             "## Training", "", "| Setting | Value |", "|---|---|",
             f"| Base model | `{m.name}`{f' (revision {m.revision})' if m.revision else ''} |",
             f"| Base weights | {load} |",
             f"| Method | {method} |",
             *_objective_row(started),
             f"| Rank (r) | {r} |", f"| Alpha | {alpha} |", f"| Dropout | {dropout:g} |",
             f"| rsLoRA / DoRA | {'on' if rslora else 'off'} / {'on' if dora else 'off'} |",
             f"| Target modules | {targets} |",
             f"| Trainable parameters | {params} |",
             f"| Epochs | {epochs_planned} planned; {_num(epoch_done, 3)} done |",
             f"| Steps | {_num(steps_done)} of {_num(max_steps)} |",
             f"| Learning rate | {tr.learning_rate:g} ({tr.scheduler}, warm-up {tr.warmup_ratio:g}, weight decay {tr.weight_decay:g}) |",
             _batch_row(tr, started),
             f"| Max sequence length | {data.max_seq_len} |",
             f"| Precision / device | {started.precision or MISSING} / {started.device or MISSING} |",
             _engine_row(started),
             *_probe_row(started),
             f"| Seed | {tr.seed} |", ""]

    lines += ["## Data", "", "| Split | Path | Rows | SHA-256 / revision |", "|---|---|---|---|"]
    for split, path in (("train", data.train), ("validation", data.validation)):
        info = recorded.get(split) or {}
        if split == "validation" and not data.validation:  # rows held out of train, or none: the run said which
            said = recorded.get("validation_line") or f"held out from train ({data.val_fraction:g})"
            lines.append(f"| {split} | {said} | {_num(started.num_eval_rows)} | - |")
            continue
        path = info.get("path") or path
        if info.get("dataset"):  # a hub id (or a snapshot folder): the id and the revision datasets resolved
            lines.append(_hub_data_row(split, info))
            continue
        sha = info.get("sha256") or _sha256(path)
        lines.append(f"| {split} | `{path}` | {_num(info.get('rows'))} | `{sha or MISSING}` |")
    lines += ["", f"Prompt format: {data.template}; trained on {'prompts and answers' if data.train_on_prompt else 'answers only'}.", ""]

    train_loss = (finished or {}).get("train_loss", last_step.get("loss"))
    lines += ["## Results", "", "| | Eval loss | Perplexity |", "|---|---|---|",
              f"| Before training | {_num((before or {}).get('eval_loss'))} | {_num((before or {}).get('perplexity'), 3)} |",
              f"| After training | {_num((finished or after or {}).get('eval_loss'))} | "
              f"{_num((finished or after or {}).get('perplexity'), 3)} |", "",
              f"Final train loss: {_num(train_loss)}.", ""]
    lines += _preference_results(history, before, after)
    measure = f" ({memory['measure']})" if memory.get("measure") else ""
    error = f"{memory['error_pct']:+g}%" if memory.get("error_pct") is not None else MISSING
    lines += ["## Memory", "", "| Estimate before training | Measured peak | Error |", "|---|---|---|",
              f"| {_gib(memory.get('estimate'))} | {_gib(memory.get('peak'))}{measure} | {error} |", ""]

    lines += _exports_section(run)

    command = started.command
    lines += ["## Reproduce", "", "```bash"]
    if command:
        lines.append(command)
    if not command or str(run.config_path) not in command:  # e.g. a resume command: also give the plain recipe
        lines += ["# from the config saved with this run:", f"lora-tui train {run.config_path} --run-dir runs/{run.name}-again"]
    lines += ["```", ""]

    base_path = started.model_path or m.name
    lines += ["## Use", "", "With plain PEFT:", "", "```python",
              "from peft import PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              f'base = AutoModelForCausalLM.from_pretrained("{base_id or base_path}")'
              + (f"  # or the local copy {base_path}" if base_id and base_id != base_path else ""),
              f'model = PeftModel.from_pretrained(base, "{run.adapter_dir}")',
              f'tokenizer = AutoTokenizer.from_pretrained("{run.adapter_dir}")  # chat template used in training',
              "```", "",
              *([f'Or in one line: `AutoPeftModelForCausalLM.from_pretrained("{run.adapter_dir}")` (downloads `{base_id}`).', ""]
                if base_id else []),
              f"Or: `lora-tui chat {run.path}`; a standalone model: `lora-tui merge {run.path} OUT`.", "",
              "## License", "",
              "This adapter is a derivative of the base model: use it under the base model's license"
              + (f" ({EMBEDDED_LICENSE})" if is_embedded(m.name) else "")
              + " and the terms of the training data.", ""]
    from huggingface_hub import ModelCard

    return str(ModelCard("---\n" + card_data.to_yaml() + "\n---\n\n" + "\n".join(lines)))


def _exports_section(run: RunDirectory) -> list[str]:
    """The merged models and GGUF files written from this run (<run>/exports.json, kept by core/export), each
    with its round-trip check's measured columns (core/export/gain.py: what it keeps of the fine-tune)."""
    import json

    try:
        recorded = json.loads((run.path / "exports.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    rows = []
    for kind in sorted(recorded):
        for item in recorded.get(kind) or []:
            path = Path(item.get("path", ""))
            if not path.exists():
                continue
            size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            columns = (item.get("check") or {}).get("columns") or {}
            kind_shown = f"LoRA on the {item.get('type')} base" if kind == "gguf_adapter" else \
                item.get("type") or item.get("dtype") or kind
            rows.append(f"| `{path.name}` | {kind_shown} | {human_size(size)} | "
                        + " | ".join(columns.get(c, "not checked") for c in EXPORT_COLUMNS) + " |")
    if not rows:
        return []
    return ["## Exports", "", "Checked by loading each file back (GGUF in llama.cpp) and scoring held-out rows under the "
            "base model, the adapter and the file: the share of what training taught that the file keeps (95 % "
            "interval over rows), how far it moves from the adapter (KL divergence, nats/token) and how often both "
            "pick the same next token.", "",
            "| File | Type | Size | " + " | ".join(EXPORT_COLUMNS) + " |", "|---" * (3 + len(EXPORT_COLUMNS)) + "|",
            *rows, ""]


# the measured columns of an export's check (core/export/gain.py's columns() fills them)
EXPORT_COLUMNS = ("Gain kept", "KL mean / p99", "Same top token", "Template", "Stop token", "Verdict")


def _hub_data_row(split: str, info: dict) -> str:
    """A Data row for a dataset read through `datasets`: id, subset and split, and the resolved revision."""
    source = info["dataset"]
    where = ", ".join(f"{k} {source[k]}" for k in ("subset", "split") if source.get(k))
    revision = source.get("revision")
    shown = "local snapshot" if revision == "local snapshot" else f"revision `{revision}`" if revision else \
        f"revision {MISSING}"
    return f"| {split} | `{source['dataset']}`{f' ({where})' if where else ''} | {_num(info.get('rows'))} | {shown} |"


def _hub_datasets(recorded: dict) -> list[str]:
    """Hub ids the run trained or evaluated on, for the card's `datasets` metadata (local snapshots are not ids)."""
    ids = []
    for split in ("train", "validation"):
        source = (recorded.get(split) or {}).get("dataset") or {}
        if source.get("dataset") and source.get("revision") != "local snapshot" and source["dataset"] not in ids:
            ids.append(source["dataset"])
    return ids


def _objective_row(started: Started) -> list[str]:
    """dpo / kto: what was optimised, against which reference, from which adapter (the started event)."""
    objective, pref = started.training_method, started.preference or {}
    start = f"; started from the adapter `{started.init_adapter}`" if started.init_adapter else ""
    if not objective or objective == "sft":
        return [f"| Objective | SFT{start} |"] if start else []
    weights = (pref.get("kto") or {}).get("weights")
    kto = f"; desirable / undesirable weights {weights[0]:g} / {weights[1]:g}" if weights else ""
    return [f"| Objective | {objective.upper()}: beta {pref.get('beta')}, {pref.get('loss_type')} loss; reference: "
            f"{pref.get('reference')}{kto}{start} |"]


PREFERENCE_COLUMNS = (("reward_accuracy", "Reward accuracy"), ("reward_margin", "Reward margin"),
                      ("logp_chosen", "log p(chosen)"), ("logp_rejected", "log p(rejected)"))


def _preference_results(history, before, after) -> list[str]:
    """dpo / kto: the evaluations' reward accuracy (share of held-out pairs whose chosen answer gains more than the
    rejected one, against the reference), reward margin and answers' log-probabilities, before and after."""
    if history.method == "sft" or not any((e or {}).get("reward_margin") is not None for e in (before, after)):
        return []
    last = history.last_step or {}
    lines = ["Preference metrics on the validation pairs (rewards are beta x log-ratio to the reference):", "",
             "| | " + " | ".join(label for _, label in PREFERENCE_COLUMNS) + " |", "|---" * (1 + len(PREFERENCE_COLUMNS)) + "|"]
    for label, event in (("Before training", before), ("After training", after), ("Last train step", last)):
        if event and any(event.get(key) is not None for key, _ in PREFERENCE_COLUMNS):
            lines.append(f"| {label} | " + " | ".join(_num(event.get(key), 3) for key, _ in PREFERENCE_COLUMNS) + " |")
    return lines + [""]


def _gib(value) -> str:
    return gib(value, 2) if isinstance(value, (int, float)) and value else MISSING


def _engine_row(started: Started) -> str:
    """Batching, attention, kernels and checkpointing the run trained with (the `started` event)."""
    if not started.batching:
        return f"| Engine | {MISSING} |"
    ckpt = "on" if started.gradient_checkpointing else "off"
    return (f"| Engine | {started.batching} batching, {started.attention or MISSING} attention, "
            f"kernels {'+'.join(started.kernels or []) or 'none'}, gradient checkpointing {ckpt} |")


def _probe_row(started: Started) -> list[str]:
    """What the probe measured before step 1 (core/train/probe.py): each plan's tokens/s and peak, and the choice."""
    probe = started.probe
    if not probe or not probe.get("chosen"):
        return []
    figures = []
    for m in probe.get("measurements") or []:
        label = (m.get("candidate") or {}).get("label", "?")
        if m.get("over"):
            figures.append(f"{label}: {m.get('note') or 'over the memory budget'}")
        elif m.get("tokens_per_s"):
            peak = f", {m['peak_bytes'] / 2**30:.1f} GiB" if m.get("peak_bytes") else ""
            figures.append(f"{label}: {m['tokens_per_s']:,.0f} tokens/s{peak}")
    how = "cached from an earlier measurement" if probe.get("cached") else f"measured in {probe.get('seconds', 0):.1f} s"
    return [f"| Probe | chose {probe['chosen'].get('label', '?')} ({probe.get('reason', '')}; {how})"
            + (f"; {'; '.join(figures)}" if figures else "") + " |"]


def _batch_row(tr, started: Started) -> str:
    """Micro-batch x accumulation as the run trained (micro_batch auto is resolved when the run starts)."""
    batch = started.batch
    if batch is None and tr.micro_batch is None:
        return f"| Batch | auto, {4 * tr.grad_accum} rows per step (decided when training starts) |"
    batch = batch or Batch(tr.micro_batch, tr.grad_accum, bool(tr.gradient_checkpointing))  # a run from before the record
    auto = " (micro-batch auto)" if tr.micro_batch is None else ""
    if batch.tokens_per_batch:
        return f"| Batch | {batch.describe()}, rows packed whole{auto.replace('micro-batch', 'token budget')} |"
    return f"| Batch | {batch.describe()}{auto} |"


def _memory(run: RunDirectory, history) -> dict:
    """The memory estimate and measured peak the trainer recorded (events, else status.json); {} when none."""
    event = history.memory or {}
    status = run.read_status() or {}
    started = history.started or Started()
    estimate = event.get("memory_estimate_bytes") or status.get("memory_estimate_bytes") or \
        (started.memory_estimate or {}).get("comparable_bytes")
    return {"estimate": estimate, "peak": event.get("memory_peak_bytes") or status.get("memory_peak_bytes"),
            "error_pct": event.get("memory_error_pct", status.get("memory_error_pct")),
            "measure": event.get("memory_measure") or status.get("memory_measure")}


def _base_note(name: str, saved_base: str | None, base_id: str | None) -> str:
    """Say plainly what adapter_config.json names as the base, and what that means elsewhere."""
    if is_embedded(name):
        return (f"Trained on lora-tui's embedded copy of `{EMBEDDED_HUB_ID}` (its Q4_1 GGUF, dequantised to float32). "
                f"`adapter_config.json` names the hub id `{EMBEDDED_HUB_ID}`, so plain PEFT loads it anywhere; on the hub's "
                "full-precision weights, answers can differ slightly from the ones seen in training.")
    if base_id:
        return f"`adapter_config.json` names the hub id `{base_id}`: plain PEFT downloads the base wherever it runs."
    return (f"The base is a local directory: `adapter_config.json` names the path `{saved_base or name}`, which exists "
            "only on the training machine. Elsewhere, load your copy of the base and pass it to `PeftModel.from_pretrained`.")


def _card_data(run: RunDirectory, base_id, method: str, embedded: bool, recorded: dict, before, after, memory: dict,
               objective: str = "sft"):
    """The hub-parsed metadata: base model, library, tags, eval results (model-index), data hashes, memory."""
    from huggingface_hub import EvalResult, ModelCardData

    tags = ([method.lower()] if method != "LoRA" else []) + ["lora", "peft", objective, "trl", "lora-tui"]
    hashes = {split: (recorded.get(split) or {}).get("sha256") for split in ("train", "validation")}
    revisions = {split: ((recorded.get(split) or {}).get("dataset") or {}).get("revision")
                 for split in ("train", "validation")}
    mine = {"data_sha256": {k: v for k, v in hashes.items() if v},
            "data_revision": {k: v for k, v in revisions.items() if v}, "memory": {
        k: v for k, v in (("estimate_bytes", memory.get("estimate")), ("peak_bytes", memory.get("peak")),
                          ("measure", memory.get("measure"))) if v}}
    extra: dict = {"lora_tui": {k: v for k, v in mine.items() if v}} if any(mine.values()) else {}
    if base_id:
        extra["base_model_relation"] = "adapter"
    results = []
    dataset = Path(str((recorded.get("validation") or {}).get("path") or "validation")).name
    for phase, event in (("before training", before), ("after training", after)):
        if event and event.get("eval_loss") is not None:
            results.append(EvalResult(task_type="text-generation", dataset_type="json", dataset_name=dataset,
                                      metric_type="loss", metric_name=f"eval loss ({phase})",
                                      metric_value=round(float(event["eval_loss"]), 6)))
    return ModelCardData(base_model=base_id, datasets=_hub_datasets(recorded) or None, library_name="peft",
                         pipeline_tag="text-generation", tags=tags,
                         license=EMBEDDED_LICENSE if embedded else None, model_name=run.name if results else None,
                         eval_results=results or None, **extra)


def write_model_card(run: str | Path | RunDirectory) -> Path:
    """Write adapter/README.md (replacing PEFT's placeholder card) and return its path."""
    run = _run(run)
    if not run.adapter_dir.is_dir():
        raise RunError(f"{run.adapter_dir} does not exist yet: the model card is written after the adapter is saved.")
    text = render_model_card(run)
    path = run.adapter_dir / "README.md"
    tmp = path.with_name(f".README.md.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
