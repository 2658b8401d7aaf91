"""The started event as one typed record (core/run/started.py) and the batch as one value (core/plan/batch.py)."""

from __future__ import annotations

from lora_tui.core.plan.batch import Batch
from lora_tui.core.run.history import RunHistory
from lora_tui.core.run.started import Started

EVENT = {"seq": 3, "time": 1.0, "type": "started", "model": "m", "device": "cpu", "precision": "fp32",
         "micro_batch": 8, "grad_accum": 2, "gradient_checkpointing": True, "tokens_per_batch": None,
         "batching": "grouped", "attention": "sdpa", "kernels": ["lean_head"], "max_steps": 6,
         "engine_reasons": {"micro_batch": "auto: 8 rows fit", "batching": "CPU"}, "from_a_newer_trainer": 1}


def test_the_record_reads_by_attribute_and_writes_back_what_it_read():
    started = Started.from_event(EVENT)
    assert (started.model, started.device, started.max_steps) == ("m", "cpu", 6)
    assert started.extra == {"from_a_newer_trainer": 1}, "a key this version does not know is kept, not dropped"
    written = started.event()
    assert {k: written[k] for k in EVENT if k not in ("seq", "time", "type")} == \
        {k: v for k, v in EVENT.items() if k not in ("seq", "time", "type")}
    assert all(v is None for k, v in written.items() if k not in EVENT)


def test_a_run_from_before_a_key_reads_none():
    old = Started.from_event({"type": "started", "model": "m"})
    assert old.micro_batch is None and old.batch is None and old.training_method is None and old.extra == {}


def test_the_batch_of_a_start_is_one_value_with_one_description():
    batch = Started.from_event(EVENT).batch
    assert batch == Batch(8, 2, True) and batch.reasons["micro_batch"] == "auto: 8 rows fit"
    assert batch.describe() == "8 x 2 = 16 rows per step"
    budget = Started.from_event({**EVENT, "micro_batch": 1, "grad_accum": 4, "tokens_per_batch": 4096,
                                 "batching": "token_budget"}).batch
    assert budget.describe() == "4096 tokens x 4 = 16384 tokens per step"
    # a token count recorded beside row batching is not a budget
    assert Started.from_event({**EVENT, "tokens_per_batch": 4096}).batch.tokens_per_batch is None


def test_the_history_holds_the_latest_start_as_the_record():
    history = RunHistory()
    history.add([EVENT, {**EVENT, "seq": 9, "max_steps": 12, "training_method": "dpo"}])
    assert isinstance(history.started, Started) and history.max_steps == 12 and history.method == "dpo"
