"""The adapter's model card (``adapter/README.md``), written from the run's own records.

Everything comes from ``config.yaml`` and ``events.jsonl`` (started / eval / step /
finished / stopped events), so the card states what happened, not what was planned.
It starts with Hugging Face model-card YAML front matter (base_model, library_name: peft,
tags) so the folder can be pushed to the hub as is.

Must not: import torch / transformers / peft, print, or write anywhere but adapter/README.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from lora_tui.core.config import ConfigError, load_config
from lora_tui.core.embedded import is_embedded
from lora_tui.core.run_history import RunHistory
from lora_tui.core.runs import RunDirectory, RunError, file_sha256

EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
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
    from lora_tui.core.models import model_kind

    return name if model_kind(name) == "hub" else None


def render_model_card(run: str | Path | RunDirectory) -> str:
    run = _run(run)
    try:
        config = load_config(run.config_path)
    except ConfigError as exc:
        raise RunError(str(exc)) from None
    history = RunHistory.of(run)
    started = history.started or {}
    finished, stopped = history.finished, history.stopped
    before, after = history.eval_before, history.eval_after
    last_step = history.last_step or {}
    m, lo, tr, data = config.model, config.lora, config.training, config.data

    base_id = hub_base_model(m.name)
    base_label = EMBEDDED_HUB_ID + " (embedded copy)" if is_embedded(m.name) else m.name
    method = started.get("method") or {"4bit": "QLoRA", "8bit": "LoRA-8bit"}.get(m.load_in, "LoRA")
    front: dict = {}
    if base_id:
        front["base_model"] = base_id
    front["library_name"] = "peft"
    front["pipeline_tag"] = "text-generation"
    front["tags"] = [method.lower(), "lora", "peft", "sft", "trl", "lora-tui"] if method != "LoRA" else \
        ["lora", "peft", "sft", "trl", "lora-tui"]
    if is_embedded(m.name):
        front["license"] = EMBEDDED_LICENSE

    load = {"16bit": "16-bit (fp32 on CPU)", "8bit": "8-bit (bitsandbytes)",
            "4bit": "4-bit NF4" + (" + double quantisation" if m.double_quant else "")}[m.load_in]
    saved = _adapter_config(run)  # what the adapter really holds wins over the plan in config.yaml
    r, alpha = saved.get("r", lo.r), saved.get("lora_alpha", lo.alpha)
    dropout = saved.get("lora_dropout", lo.dropout)
    rslora, dora = saved.get("use_rslora", lo.use_rslora), saved.get("use_dora", lo.use_dora)
    targets = started.get("target_modules") or saved.get("target_modules") or lo.targets
    targets = ", ".join(sorted(targets)) if isinstance(targets, (list, tuple, set)) else str(targets)
    trainable, total = started.get("trainable_params"), started.get("total_params")
    params = (f"{trainable:,} of {total:,} ({100 * trainable / total:.3f}%)" if trainable and total else MISSING)
    steps_done = (finished or stopped or {}).get("step", last_step.get("step"))
    max_steps = started.get("max_steps", tr.max_steps if tr.max_steps > 0 else None)
    epochs_planned = f"{tr.epochs:g}" if tr.max_steps <= 0 else f"max_steps {tr.max_steps}"
    epoch_done = last_step.get("epoch")
    outcome = ("finished" if finished else f"stopped at step {stopped.get('step')} ({stopped.get('reason', 'by request')})"
               if stopped else run.state())

    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {run.name}: {method} adapter for {base_label}", "",
             f"A {method} adapter trained with lora-tui. Run state: {outcome}.", "",
             "## Training", "", "| Setting | Value |", "|---|---|",
             f"| Base model | `{m.name}`{f' (revision {m.revision})' if m.revision else ''} |",
             f"| Base weights | {load} |",
             f"| Method | {method} |",
             f"| Rank (r) | {r} |", f"| Alpha | {alpha} |", f"| Dropout | {dropout:g} |",
             f"| rsLoRA / DoRA | {'on' if rslora else 'off'} / {'on' if dora else 'off'} |",
             f"| Target modules | {targets} |",
             f"| Trainable parameters | {params} |",
             f"| Epochs | {epochs_planned} planned; {_num(epoch_done, 3)} done |",
             f"| Steps | {_num(steps_done)} of {_num(max_steps)} |",
             f"| Learning rate | {tr.learning_rate:g} ({tr.scheduler}, warm-up {tr.warmup_ratio:g}, weight decay {tr.weight_decay:g}) |",
             f"| Batch | {tr.micro_batch} x {tr.grad_accum} accumulation = {tr.micro_batch * tr.grad_accum} |",
             f"| Max sequence length | {data.max_seq_len} |",
             f"| Precision / device | {started.get('precision', MISSING)} / {started.get('device', MISSING)} |",
             f"| Seed | {tr.seed} |", ""]

    recorded = started.get("data") or {}
    lines += ["## Data", "", "| Split | Path | Rows | SHA-256 |", "|---|---|---|---|"]
    for split, path in (("train", data.train), ("validation", data.validation)):
        info = recorded.get(split) or {}
        path = info.get("path") or path
        if not path:
            lines.append(f"| {split} | held out from train ({data.val_fraction:g}) | "
                         f"{_num(started.get('num_eval_rows'))} | - |")
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

    command = started.get("command")
    lines += ["## Reproduce", "", "```bash"]
    if command:
        lines.append(command)
    if not command or str(run.config_path) not in command:  # e.g. a resume command: also give the plain recipe
        lines += ["# from the config saved with this run:", f"lora-tui train {run.config_path} --run-dir runs/{run.name}-again"]
    lines += ["```", ""]

    base_path = started.get("model_path") or m.name
    lines += ["## Use", "", "With plain PEFT:", "", "```python",
              "from peft import PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              f'base = AutoModelForCausalLM.from_pretrained("{base_id or base_path}")'
              + (f"  # or the local copy {base_path}" if base_id and base_id != base_path else ""),
              f'model = PeftModel.from_pretrained(base, "{run.adapter_dir}")',
              f'tokenizer = AutoTokenizer.from_pretrained("{run.adapter_dir}")  # chat template used in training',
              "```", "",
              f"Or: `lora-tui chat {run.path}`; a standalone model: `lora-tui merge {run.path} OUT`.", "",
              "## License", "",
              "This adapter is a derivative of the base model: use it under the base model's license"
              + (f" ({EMBEDDED_LICENSE})" if is_embedded(m.name) else "")
              + " and the terms of the training data.", ""]
    return "\n".join(lines)


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
