"""One plan, one figure, everywhere (issue 24 item 6).

The trainer plans rows as long as its data's longest tokenized row. `lora-tui estimate` planned rows of
data.max_seq_len (5.16 GiB and checkpointing on where the run chose off at 2.4 GiB), and the wizard did
until its Dataset step had checked the training file (then it changed its figure). Both now read the
data as the trainer does (core/train/data_lengths.py) before they show a figure; `validate` measures
against training's max length (512), not 1024. A fixed CPU report stands in for the machine (its free
RAM moves between processes, and the auto batch follows it); the estimates and data are the real ones.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from lora_tui.core.config import Config
from tests.conftest import REPO

GIB = 2**30
# 25% of 12 GiB is 3 GiB: micro-batch 4 of 512-token rows needs checkpointing there, the sample's
# rows (77 tokens at most) do not.
RAM = 12 * GIB


def cpu_report():
    from lora_tui.core.machine.hardware import HardwareReport

    return HardwareReport(gpus=[], cpu_count=2, ram_total=24 * GIB, ram_available=RAM, nvml_error="no GPU here")


def trainers_plan(config: Config, tmp_path):
    """What the trainer (core/train/training.py) decides before step 1 on this data and report."""
    from lora_tui.core.model.models import load_tokenizer
    from lora_tui.core.plan import memory_record
    from lora_tui.core.run.runs import RunDirectory
    from lora_tui.core.train.training import build_datasets, run_plan_of

    tokenizer = load_tokenizer(config.model.name)
    train_ds, eval_ds, _ = build_datasets(config, tokenizer)
    longest = max([*train_ds["length"], *(eval_ds["length"] if eval_ds is not None else [])])
    choice = run_plan_of(RunDirectory(tmp_path / "run"), config, cpu_report(), "cpu", False, longest, None, False)
    facts = memory_record.memory_estimate_facts(config, cpu_report(), "cpu", longest, lengths=train_ds["length"],
                                                run_plan=choice)
    return choice, facts, longest


@pytest.fixture
def fixed_machine(monkeypatch, embedded_model_dir):
    from lora_tui.core.machine import hardware

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(hardware, "probe_hardware", lambda *a, **k: cpu_report())


def test_estimate_is_the_runs_plan(fixed_machine, capsys, tmp_path):
    from lora_tui import cli

    assert cli.main(["estimate", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    choice, facts, longest = trainers_plan(Config(), tmp_path)
    assert choice.gradient_checkpointing is False and longest < 512
    assert (out["plan"]["batch"], out["plan"]["grad_checkpointing"]) == (choice.micro_batch, choice.gradient_checkpointing)
    assert out["total_bytes"] == facts["total_bytes"], "estimate shows the figure the run records"
    assert out["plan"]["longest"] == longest and out["plan"]["seq_len"] == longest
    assert out["plan"]["rows"] == f"rows up to {longest} tokens (the data's longest; data.max_seq_len 512)"


def test_estimate_says_when_it_cannot_read_the_data(fixed_machine, capsys):
    from lora_tui import cli

    assert cli.main(["estimate", "--json", "data.train=no/such-file.jsonl"]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert plan["longest"] is None and plan["seq_len"] == 512
    assert plan["rows"].startswith("rows of 512 tokens (data.max_seq_len: the data's lengths are unknown: ")


def test_wizard_shows_one_figure_the_runs(fixed_machine, tmp_path):
    """Model -> Hardware -> Dataset -> Parameters on the defaults: every estimate the wizard posts, and the
    embedded model's row in the Model table, is the trainer's figure; none at rows of max_seq_len first."""
    from lora_tui.ui.backend import Backend
    from lora_tui.ui.messages import PlanJudged
    from lora_tui.ui.widgets.format import gib
    from tests.support.ui import goto, wizard_at
    from tests.support.wait import until

    class FixedCPU(Backend):
        def probe_hardware(self, check_libraries: bool = True):
            return cpu_report()

        def active_runs(self, runs_dir: str) -> list:
            return []

    _, facts, _ = trainers_plan(Config(), tmp_path)
    totals = []

    async def go():
        async with wizard_at("model", (120, 40), backend=FixedCPU()) as pilot:
            app = pilot.app
            real_post = app.post_message

            def post(message):  # every verdict the app hands its screens
                if isinstance(message, PlanJudged) and message.estimate is not None:
                    totals.append(message.estimate.total_bytes)
                return real_post(message)

            app.post_message = post
            table = app.screen.query_one("#models")
            await until(pilot, lambda: app.current_judgement() is not None and table.row_count > 1, timeout=120,
                        what="the estimate and the model table")
            assert str(table.get_row_at(0)[2]) == gib(facts["total_bytes"])
            await goto(pilot, "hardware")
            await goto(pilot, "dataset")
            await until(pilot, lambda: app.state.dataset_current() is not None, timeout=120, what="the check")
            await goto(pilot, "parameters")
            await until(pilot, lambda: app.current_judgement() is not None, what="the estimate")
            assert gib(facts["total_bytes"]) in str(app.screen.query_one("#memory-line").render())
            assert "checkpointing off" in str(app.screen.query_one("#engine-line").render())

    asyncio.run(go())
    assert totals and set(totals) == {facts["total_bytes"]}, [t / GIB for t in totals]


def test_validate_measures_against_trainings_max_length(tmp_path):
    long_row = {"messages": [{"role": "user", "content": "Say it. " * 10},
                             {"role": "assistant", "content": "word " * 700}]}
    data = tmp_path / "long.jsonl"
    data.write_text(json.dumps(long_row) + "\n")
    out = subprocess.run([sys.executable, "-m", "lora_tui", "validate", str(data), "--json"], capture_output=True,
                         text=True, cwd=REPO, timeout=300)
    report = json.loads(out.stdout)
    stats = report["token_stats"]
    assert stats["max_seq_len"] == Config().data.max_seq_len == 512
    assert 512 < stats["max"] < 1024 and stats["over_max"] == 1, "training cuts this row: validate says so"
