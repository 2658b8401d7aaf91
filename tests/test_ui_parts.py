"""The wizard's pure parts, without a terminal: event folding, the equivalent train
command, presets, memory fixes mapped back onto the config, renderings."""

from __future__ import annotations

import shlex

import pytest

from lora_tui.core.config import Config, apply_overrides, apply_preset
from lora_tui.core.config import config_overrides, matching_preset, train_command
from lora_tui.core.plan.workload import workload_of
from lora_tui.core.run.history import RunHistory
from screenshots.make_demo_run import MAX_STEPS, demo_events


def test_run_history_folds_events_once_and_in_order():
    events = demo_events(last_step=30, finished=False)
    history = RunHistory()
    assert history.add(events[:10]) is True  # steps arrived: the plot must redraw
    history.add(events)  # a re-read of the whole file must not double anything
    steps = [e for e in events if e["type"] == "step"]
    assert history.steps == [e["step"] for e in steps]
    assert history.losses == [e["loss"] for e in steps]
    assert history.eval_steps == [0, 20]
    assert history.evals_by_phase["before"]["eval_loss"] == pytest.approx(2.7411)
    assert history.step == 30 and history.max_steps == MAX_STEPS
    assert history.fraction == pytest.approx(0.5)
    assert history.system["gpus"][0]["util"] == 97
    assert history.outcome is None
    assert history.add([]) is False


def test_run_history_outcome_and_resume():
    history = RunHistory()
    history.add(demo_events(finished=True))
    assert history.outcome["type"] == "finished" and history.fraction == 1.0
    last = history.last_seq
    history.add([{"seq": last + 1, "type": "started", "max_steps": 80}])  # a resumed run starts again
    assert history.outcome is None and history.max_steps == MAX_STEPS  # the last step still says 60


def _changed_config() -> Config:
    config = Config()
    apply_preset(config, "qlora")
    config.lora.targets = "q_proj,v_proj"
    config.lora.use_dora = True
    config.training.learning_rate = 3e-5
    config.training.max_steps = 20
    config.data.validation = None
    config.data.train = "my data/with space.jsonl"
    config.output.run_name = "it's mine"
    return config


def test_train_command_reproduces_the_config():
    config = _changed_config()
    command = train_command(config)
    argv = shlex.split(command)
    assert argv[:2] == ["lora-tui", "train"]
    rebuilt = apply_overrides(Config(), argv[2:])
    assert rebuilt == config
    assert "lora.r=64" in argv and "data.validation=" in argv
    assert train_command(Config()) == "lora-tui train"  # defaults: nothing to say
    assert train_command(config, "configs/my run.yaml") == "lora-tui train 'configs/my run.yaml'"


def test_overrides_only_name_what_differs():
    config = Config()
    config.lora.r = 32
    assert config_overrides(config) == ["lora.r=32"]


def test_matching_preset():
    config = Config()
    assert matching_preset(config) == "lora"
    apply_preset(config, "qlora")
    assert matching_preset(config) == "qlora"
    config.lora.r = 8
    assert matching_preset(config) is None


def test_the_workload_follows_the_config():
    from screenshots.fixed import fixed_hardware

    config = _changed_config()
    config.training.micro_batch = 2
    config.training.gradient_checkpointing = True
    plan = workload_of(config, fixed_hardware(gpu=True))
    assert (plan.quant, plan.r, plan.targets, plan.batch, plan.grad_checkpointing, plan.device) == \
        ("4bit", 64, "q_proj,v_proj", 2, True, "cuda")
    assert plan.seq_len == config.data.max_seq_len
    cpu_plan = workload_of(config, fixed_hardware(gpu=False), model="Qwen/Qwen2.5-0.5B")
    assert cpu_plan.device == "cpu" and cpu_plan.model == "Qwen/Qwen2.5-0.5B"


def test_a_memory_fix_lands_in_the_config():
    from lora_tui.core.plan.workload import apply_fix

    config = Config()
    config.training.micro_batch, config.training.grad_accum = 16, 2
    changed = apply_fix(config, {"quant": "4bit", "batch": 4, "grad_checkpointing": True, "seq_len": 256})
    assert config.model.load_in == "4bit"
    assert config.training.micro_batch == 4 and config.training.grad_accum == 8  # effective batch kept: 32
    assert config.training.gradient_checkpointing is True and config.data.max_seq_len == 256
    assert "model.load_in=4bit" in changed


def test_histogram_marks_the_cut():
    from lora_tui.core.data import TokenStats
    from lora_tui.ui.widgets.dataset_views import histogram_text

    stats = TokenStats(count=6, min=10, median=40, p95=120, max=120, mean=50.0, over_max=2, max_seq_len=64,
                       histogram=[(10, 38, 2), (38, 65, 2), (65, 93, 1), (93, 121, 1)])
    text = histogram_text(stats).plain
    lines = text.splitlines()
    cut = next(i for i, line in enumerate(lines) if "cut here" in line)
    assert lines[cut - 1].lstrip().startswith("38-64") and lines[cut + 1].lstrip().startswith("65-92")
    assert "2 rows are longer than the max length 64" in text
    fits = TokenStats(count=1, min=10, median=10, p95=10, max=10, mean=10.0, over_max=0, max_seq_len=64,
                      histogram=[(10, 11, 1)])
    assert "no row reaches it" in histogram_text(fits).plain


def test_findings_grouped_errors_first():
    from lora_tui.core.data import Finding
    from lora_tui.ui.widgets.dataset_views import group_findings, group_label

    findings = [Finding(3, "warning", "url", code="url"), Finding(7, "error", "bad json", code="malformed_json"),
                Finding(9, "error", "bad json", code="malformed_json"), Finding(None, "error", "all", code="all_masked")]
    groups = list(group_findings(findings).items())
    assert [key for key, _ in groups] == [("error", "malformed_json"), ("error", "all_masked"), ("warning", "url")]
    assert "line 7, line 9" in group_label("error", groups[0][1]).plain


def test_log_tail_keeps_the_last_redraw_of_progress_bars(tmp_path):
    from lora_tui.ui.screens.training import read_log_tail

    log = tmp_path / "train.log"
    log.write_text("loading\n 10%|#   |\r 50%|##  |\r100%|####|\nsaved\n\n")
    assert read_log_tail(log, lines=2) == ["100%|####|", "saved"]
    assert read_log_tail(tmp_path / "missing.log") == []


RACE = """
import sys, threading
from lora_tui.core.config import Config
from lora_tui.ui.backend import Backend

config = Config()
config.model.name = sys.argv[1]
backend, errors = Backend(), []
barrier = threading.Barrier(2)

def run(call):
    barrier.wait()
    try:
        call()
    except Exception as exc:
        errors.append(repr(exc))

threads = [threading.Thread(target=run, args=(lambda: backend.tokenizer(config),)),
           threading.Thread(target=run, args=(lambda: backend.linear_layers(config.model.name),))]
[t.start() for t in threads]
[t.join() for t in threads]
print(errors)
sys.exit(1 if errors else 0)
"""


def test_workers_can_reach_transformers_at_the_same_time(tiny_model_dir):
    """Two wizard workers touching transformers at once (the dataset's tokenizer, the model's
    layers) once failed with "cannot import name 'AutoTokenizer'" about one time in five."""
    import subprocess
    import sys

    for _ in range(2):  # fresh interpreters: the race is on the first import only
        result = subprocess.run([sys.executable, "-c", RACE, str(tiny_model_dir)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr[-2000:]
