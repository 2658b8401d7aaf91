"""The dpo / kto part of the training recipe (``training.method``): datasets of token ids, the model and
its reference, TRL's trainer, and the preference metrics the run's events carry.

``training.run_training`` calls ``build_datasets`` and ``trainer_for_run`` where the SFT recipe builds its
own; everything else (plan, callbacks, checkpoints, evaluation, saving, events) is the same recipe, so
exit codes and the run directory are the same for every method.

- Data: ``data/preference_tokens`` tokenises the rows (the preview shows exactly these ids); TRL's trainers
  get them as they are (``_pretokenized``: their own text preparation, which would render the rows again
  without our template choice, is skipped). kto: each row's KL completion is its micro-batch neighbour's
  answer, as TRL's ``KTOTrainer._prepare_dataset`` builds it.
- Reference: a fresh adapter is handed to TRL as a ``peft_config``, and TRL computes the reference
  log-probabilities with the adapter switched off: the base itself, no second copy. A run started from an
  adapter (``training.init_adapter``) keeps training that adapter's weights; TRL then freezes a copy of the
  adapter (adapter "ref", its LoRA weights only) as the reference: the start model, not the bare base.
  ``adapter/`` holds only the trained adapter ("default"): one self-contained PEFT adapter on the base.

Must not import torch / transformers / peft / trl at module top (the trainer imports it before torch).
"""

from __future__ import annotations

from lora_tui.core.config import Config, loss_for

# TRL's logged names -> the step / eval event fields (runs, attach, the Training screen, the model card).
METRICS = {"rewards/margins": "reward_margin", "rewards/accuracies": "reward_accuracy",
           "rewards/chosen": "reward_chosen", "rewards/rejected": "reward_rejected",
           "logps/chosen": "logp_chosen", "logps/rejected": "logp_rejected", "kl": "kl"}
REFERENCE_FRESH = "the base model, the adapter switched off (no second copy)"
REFERENCE_START = "the starting adapter, frozen (a copy of its LoRA weights)"


def metric_fields(logs: dict, prefix: str = "") -> dict:
    """The preference metrics in a trainer log (``prefix`` "eval_" for evaluations), under the event names."""
    return {name: round(float(logs[prefix + key]), 6) for key, name in METRICS.items() if logs.get(prefix + key) is not None}


# ----------------------------------------------------------------------------------------------- data
def build_datasets(config: Config, tokenizer):
    """(train, eval or None, facts) as datasets of token ids, with a ``length`` column (prompt + longest answer,
    cut at max_seq_len) for the plan. TrainingFailure when no row can be trained."""
    from datasets import Dataset

    from lora_tui.core.data.load import hold_out, skipped_summary, validation_line
    from lora_tui.core.data.preference import kto_weights, label_findings
    from lora_tui.core.data.preference_load import load_preferences
    from lora_tui.core.data.preference_tokens import tokenize_preferences
    from lora_tui.core.data.records import row_unit
    from lora_tui.core.data.template import ChatFormatter
    from lora_tui.core.train.setup import TrainingFailure, data_sha256

    d, method = config.data, config.training.method
    fix = f"Run `lora-tui validate {d.train} --method {method}` to see every problem."
    train_set = load_preferences(d.train, method, subset=d.subset, max_seq_len=d.max_seq_len)
    train_rows, eval_rows, eval_set = train_set.examples, [], None
    if d.validation:
        eval_set = load_preferences(d.validation, method, subset=d.subset, max_seq_len=d.max_seq_len)
        eval_rows = eval_set.examples
    else:  # held out by source row: a pair that kto splits in two stays on one side
        lines = list(dict.fromkeys((e.source, e.line) for e in train_rows))
        kept, held = hold_out(lines, d.val_fraction, config.training.seed)
        held = set(held)
        train_rows, eval_rows = ([e for e in train_rows if (e.source, e.line) not in held],
                                 [e for e in train_rows if (e.source, e.line) in held])
    formatter = ChatFormatter(tokenizer, template=d.template)
    train_tok, problems = tokenize_preferences(formatter, _kto_order(train_rows, method), d.max_seq_len)
    eval_tok, _ = tokenize_preferences(formatter, _kto_order(eval_rows, method), d.max_seq_len)
    if not train_tok:
        first = next((f for f in train_set.findings + problems if f.severity == "error"), None)
        raise TrainingFailure(f"{d.train} has no trainable preference row"
                              + (f" (line {first.line}: {first.message})" if first and first.line else
                                 f" ({first.message})" if first else "") + ".", fix)
    one_sided = [f for f in label_findings([r for r in train_tok], method) if f.severity == "error"]
    if one_sided:
        raise TrainingFailure(f"{d.train}: {one_sided[0].message}.", one_sided[0].fix)
    skipped = skipped_summary(train_set.findings + problems, unit=row_unit(train_set.container, train_set.source))
    train_ds, eval_ds = _columns(train_tok, method, d.max_seq_len), _columns(eval_tok, method, d.max_seq_len)
    facts = {
        "train": {"path": str(d.train), "sha256": data_sha256(train_set, d.train), "rows": len(train_tok),
                  "skipped": skipped, "format": train_set.format},
        "validation": ({"path": str(d.validation or d.train), "rows": len(eval_tok),
                        "sha256": data_sha256(eval_set, d.validation) if eval_set else None} if eval_tok else None),
        "validation_line": validation_line(d.train, d.validation, d.val_fraction, len(train_tok) + len(eval_tok) if not d.validation
                                           else len(train_tok), len(eval_tok)),
    }
    if method == "kto":
        good = sum(1 for r in train_tok if r.label)
        facts["kto"] = {"desirable": good, "undesirable": len(train_tok) - good,
                        "weights": list(kto_weights(good, len(train_tok) - good))}
    return Dataset.from_dict(train_ds), Dataset.from_dict(eval_ds) if eval_tok else None, facts


def _kto_order(rows: list, method: str) -> list:
    """kto rows from pairs in TRL's unpaired order: per block of 1,000 pairs the desirable halves, then the
    undesirable ones, so a row's KL neighbour is another prompt's answer (unpair_preference_dataset's order)."""
    keys = [(r.source, r.line) for r in rows]
    if method != "kto" or len(set(keys)) == len(keys):  # unpaired rows keep the file's order
        return rows
    out = []
    for start in range(0, len(rows), 2000):  # a pair is two adjacent rows: a block of 2,000 holds 1,000 pairs
        block = rows[start:start + 2000]
        out += [r for r in block if r.label] + [r for r in block if not r.label]
    return out


def _columns(rows: list, method: str, max_seq_len: int) -> dict:
    if method == "kto":
        return {"prompt_ids": [r.prompt_ids for r in rows], "completion_ids": [r.chosen_ids for r in rows],
                "label": [bool(r.label) for r in rows], "length": [min(r.length(), max_seq_len) for r in rows]}
    return {"prompt_ids": [r.prompt_ids for r in rows], "chosen_ids": [r.chosen_ids for r in rows],
            "rejected_ids": [r.rejected_ids for r in rows], "length": [min(r.length(), max_seq_len) for r in rows]}


def with_kl_completions(dataset, micro_batch: int):
    """kto's KL pairs: in each micro-batch of consecutive rows, row i gets row i-1's answer (TRL's rotation)."""
    def rotate(batch):
        batch["KL_completion_ids"] = [batch["completion_ids"][-1]] + batch["completion_ids"][:-1]
        return batch

    return dataset.map(rotate, batched=True, batch_size=micro_batch)


# --------------------------------------------------------------------------------------------- trainer
def _pretokenized(trainer_class):
    class Pretokenized(trainer_class):
        """TRL's trainer on rows already in token ids (core/data/preference_tokens.py)."""

        def _prepare_dataset(self, dataset, *args, **kwargs):
            return dataset

    Pretokenized.__name__ = Pretokenized.__qualname__ = trainer_class.__name__
    return Pretokenized


def preference_arguments(config: Config, common: dict, choice, facts: dict):
    """DPOConfig / KTOConfig: the common arguments (``setup.trainer_arguments``) and the method's."""
    from trl import DPOConfig, KTOConfig

    t = config.training
    kwargs = {**common, "beta": t.beta, "loss_type": loss_for(config), "max_length": config.data.max_seq_len,
              "remove_unused_columns": False}  # our columns are the ones TRL's collators read
    if t.method == "kto":
        desirable, undesirable = (facts.get("kto") or {}).get("weights") or (1.0, 1.0)
        return KTOConfig(**kwargs, desirable_weight=desirable, undesirable_weight=undesirable,
                         train_sampling_strategy="sequential")  # the KL pairs need the rows in order
    # Length-grouped micro-batches pad less; TRL 1.16's DPO has no packing and its padding_free falls back.
    return DPOConfig(**kwargs, train_sampling_strategy="group_by_length" if choice.batching == "grouped" else "random")


def trainer_for_run(config: Config, run, device: str, precision: str, choice, tokenizer, train_ds, eval_ds,
                    callbacks: list, facts: dict):
    """(the TRL trainer for the method, the adapter's target modules). A fresh adapter goes to TRL as a
    ``peft_config`` (reference: adapter off); a starting adapter is loaded trainable first (reference: TRL's
    frozen copy of it)."""
    from trl import DPOTrainer, KTOTrainer

    from lora_tui.core.train.setup import load_base_for_lora, load_start_adapter, lora_config, trainer_arguments

    model, available = load_base_for_lora(config, device, precision, choice)
    peft_config = None
    if config.training.init_adapter:
        model, targets = load_start_adapter(model, config.training.init_adapter)
        model.lora_tui_linear_layers = available
    else:
        peft_config, targets = lora_config(config, available)
    common = trainer_arguments(config, run, device, precision, eval_ds is not None, choice)
    args = preference_arguments(config, common, choice, facts)
    kto = config.training.method == "kto"
    if kto and loss_for(config) == "kto":
        train_ds = with_kl_completions(train_ds, choice.micro_batch)
        eval_ds = with_kl_completions(eval_ds, choice.micro_batch) if eval_ds is not None else None
    trainer_class = _pretokenized(KTOTrainer if kto else DPOTrainer)
    trainer = trainer_class(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                            processing_class=tokenizer, callbacks=callbacks, peft_config=peft_config)
    return trainer, targets


def started_fields(config: Config, facts: dict) -> dict:
    """What the started event (and the model card) records of the method."""
    t = config.training
    if t.method == "sft":
        return {"training_method": "sft", "init_adapter": t.init_adapter}
    return {"training_method": t.method, "init_adapter": t.init_adapter,
            "preference": {"beta": t.beta, "loss_type": loss_for(config),
                           "reference": REFERENCE_START if t.init_adapter else REFERENCE_FRESH,
                           **({"kto": facts["kto"]} if facts.get("kto") else {})}}
