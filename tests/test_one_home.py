"""One definition each (issue 8): the memory-plan translation, states, formatters, the runs
folder, and screens that do not import the app module."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from lora_tui.core.config import Config, apply_overrides

PACKAGE = Path(__file__).resolve().parent.parent / "lora_tui"


# --- the workload and its fixes -- -------------------------------------------------------------
def test_fix_becomes_overrides_that_keep_the_effective_batch():
    from lora_tui.core.plan.memory import Fix
    from lora_tui.core.plan.workload import apply_fix, fix_overrides

    config = Config()
    config.training.micro_batch, config.training.grad_accum = 8, 3  # effective 24
    fix = Fix("combine", {"quant": "4bit", "batch": 2, "targets": ["q_proj", "v_proj"], "seq_len": 256}, 1, "fits")
    overrides = fix_overrides(config, fix)
    assert overrides == ["model.load_in=4bit", "training.micro_batch=2", "training.grad_accum=12",
                         "lora.targets=q_proj,v_proj", "data.max_seq_len=256"]
    assert apply_fix(config, fix) == overrides
    assert config.training.micro_batch * config.training.grad_accum == 24
    assert (config.model.load_in, config.lora.targets, config.data.max_seq_len) == ("4bit", "q_proj,v_proj", 256)


def test_fix_is_all_or_nothing():
    from lora_tui.core.config import ConfigError
    from lora_tui.core.plan.workload import apply_fix

    config = Config()
    with pytest.raises(ConfigError):
        apply_fix(config, ["lora.r=8", "data.max_seq_len=1"])  # the second is below the minimum
    assert config.lora.r == Config().lora.r


def test_plan_round_trips_through_overrides():
    """A fix applied as overrides gives the plan the fix describes (same vocabulary both ways)."""
    from lora_tui.core.plan.workload import fix_overrides, workload_of

    config = Config()
    changes = {"quant": "8bit", "r": 4, "grad_checkpointing": True, "batch": 1}
    planned = workload_of(config).replace(**changes)
    applied = workload_of(apply_overrides(config.copy(), fix_overrides(config, changes)))
    assert applied == planned


def test_screens_keep_no_copy_of_the_translation():
    source = (PACKAGE / "ui" / "screens" / "hardware.py").read_text()
    assert "PLAN_TO_CONFIG" not in source and "QUANT_TO_LOAD" not in source and "def apply_fix" not in source


# --- one definition each --------------------------------------------------------------------------
def test_active_states_are_defined_once():
    from lora_tui.core.run.runs import STATES_ACTIVE, STATES_DONE

    assert not set(STATES_ACTIVE) & set(STATES_DONE)
    for path in (PACKAGE / "ui").rglob("*.py"):
        assert '"starting", "running", "stopping"' not in path.read_text(), path


def test_sizes_read_the_same_in_cli_and_wizard():
    from lora_tui.core.units import human_duration, human_size
    from lora_tui.ui.widgets import format as ui_format

    assert human_size(19_713_024) == "18.8 MiB" and human_size(1536) == "1.5 KiB" and human_size(12) == "12 B"
    assert human_size(3 * 1024**3, 2) == "3.00 GiB"
    assert ui_format.human_size is human_size and ui_format.duration is human_duration
    assert human_duration(5) == "5s" and human_duration(185) == "3m05s" and human_duration(7620) == "2h07m"
    assert human_duration(None) == "?"
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert "def human_size" not in text or path.name == "units.py", path
        assert '"KB"' not in text and "def fmt_duration" not in text, path


def test_screens_and_widgets_do_not_import_the_app():
    for folder in ("screens", "widgets"):
        for path in (PACKAGE / "ui" / folder).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    assert node.module != "lora_tui.ui.app", f"{path.name} imports lora_tui.ui.app"


def test_plain_error_keeps_core_words():
    from lora_tui.core.config import ConfigError
    from lora_tui.ui.errors import plain_error

    assert plain_error(ConfigError("Unknown key 'x.y'.")) == "Unknown key 'x.y'."
    assert plain_error(KeyError("k")) == "KeyError: 'k'"


# --- one runs folder ------------------------------------------------------------------------------
def _fake_run(path: Path) -> Path:
    from lora_tui.core.config import save_config

    path.mkdir(parents=True)
    save_config(Config(), path / "config.yaml")
    return path


def test_train_writes_where_runs_and_attach_look(tmp_path, monkeypatch):
    """$LORA_TUI_RUNS moves every run: train's default run directory, `runs`, `attach NAME`, the wizard."""
    import subprocess
    import sys

    from lora_tui.core.run.launcher import plan_run_dir
    from lora_tui.core.paths import runs_dir
    from lora_tui.core.run.runs import RunDirectory, list_runs

    monkeypatch.setenv("LORA_TUI_RUNS", str(tmp_path / "env-runs"))
    config = Config()
    config.output.run_name = "mine"
    planned = plan_run_dir(config)
    assert planned == tmp_path / "env-runs" / "mine"
    _fake_run(planned)
    assert RunDirectory.find("mine").path == planned  # attach / stop / chat by name
    assert [r.name for r in list_runs()] == ["mine"]  # `lora-tui runs`
    assert [r.name for r in list_runs(config.output.runs_dir)] == ["mine"]  # the wizard's Training step
    listed = subprocess.run([sys.executable, "-m", "lora_tui", "runs", "--json"], capture_output=True, text=True)
    assert [r["name"] for r in json.loads(listed.stdout)] == ["mine"]
    # A config that names its own folder wins for its run (and says so in its path).
    config.output.runs_dir = str(tmp_path / "elsewhere")
    assert plan_run_dir(config) == tmp_path / "elsewhere" / "mine"
    monkeypatch.delenv("LORA_TUI_RUNS")
    assert runs_dir() == Path("runs") and runs_dir("") == Path("runs")


# --- one home per name (issue 18 item 3) ---------------------------------------------------------
def _homes(name: str) -> list[str]:
    """The modules of lora_tui that define ``name`` at module level (def, class or assignment)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names = [node.name] if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else []
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
            if name in names:
                found.append(path.relative_to(PACKAGE.parent).as_posix())
    return found


def _string_collections(pred) -> list[str]:
    """file:line of every tuple / list / set literal of strings in lora_tui for which ``pred(values)`` holds."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and node.elts and all(
                    isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
                if pred([e.value for e in node.elts]):
                    found.append(f"{path.relative_to(PACKAGE.parent).as_posix()}:{node.lineno}")
    return found


def test_template_names_have_one_home():
    """config.TEMPLATE_CHOICES; data/template and chat once kept their own copies. The CLI's argparse
    list stays literal (--help imports no core module) and must say the same."""
    from lora_tui.cli import build_parser
    from lora_tui.core.config import TEMPLATE_CHOICES

    copies = _string_collections(lambda values: set(values) == set(TEMPLATE_CHOICES))
    assert [c.split(":")[0] for c in copies] == ["lora_tui/cli.py", "lora_tui/core/config.py"], copies
    validate = build_parser()._subparsers._group_actions[0].choices["validate"]
    assert next(a for a in validate._actions if a.dest == "template").choices == list(TEMPLATE_CHOICES)
    assert _homes("TEMPLATE_CHOICES") == ["lora_tui/core/config.py"] and _homes("TEMPLATES") == []


def test_end_of_turn_tokens_have_one_home():
    """Training's END_MARKERS is the one list: chat once kept a second one that differed from it
    (see tests/test_chat.py for what that broke). A format's own stop strings (a Modelfile's) name one."""
    from lora_tui.core.data.template import END_MARKERS

    copies = _string_collections(lambda values: len(set(values) & set(END_MARKERS)) >= 2)
    assert [c.split(":")[0] for c in copies] == ["lora_tui/core/data/template.py"], copies
    assert _homes("END_OF_TURN_TOKENS") == []


@pytest.mark.parametrize("name", ["CHATML_TEMPLATE", "ALPACA_TEMPLATE", "FALLBACK_TEMPLATES", "training_formatter",
                                  "apply_training_template", "end_of_turn_ids", "adds_bos"])
def test_the_training_formats_helpers_live_with_training(name):
    """The template helpers chat and the exports share live in data/template.py, beside ChatFormatter."""
    assert _homes(name) == ["lora_tui/core/data/template.py"]


@pytest.mark.parametrize("name, home", [("EMBEDDED_HUB_ID", "model/embedded.py"), ("portable_base", "model/hub_ids.py"),
                                        ("local_base", "model/hub_ids.py"), ("plan_record", "train/probe_types.py"),
                                        ("Measurement", "train/probe_types.py"),
                                        ("parse_devices", "config.py"), ("DistributedError", "config.py"),
                                        ("normalise_report_to", "config.py"), ("TRACKERS", "config.py"),
                                        ("TARGET_CHOICES", "config.py"), ("STRATEGY_CHOICES", "config.py"),
                                        ("strategy_line", "plan/devices.py"), ("per_gpu_summary", "plan/devices.py"),
                                        ("liger_available", "machine/kernels.py"),
                                        ("kernel_libraries", "machine/kernels.py"),
                                        ("choose_kernels", "plan/engine_choice.py"),
                                        ("choose_batch", "plan/workload.py"), ("PLAN_FIELDS", "plan/workload.py")])
def test_names_moved_down_to_break_cycles_have_one_home(name, home):
    assert _homes(name) == [f"lora_tui/core/{home}"]


def test_train_command_has_one_home():
    """One writer of `lora-tui train` lines for the wizard (a config) and `lora-tui estimate` (its fixes)."""
    from lora_tui.core.config import train_command

    assert _homes("train_command") == ["lora_tui/core/config.py"]
    assert train_command(None, "my run.yaml", preset="qlora", overrides=["lora.r=8", "data.max_seq_len=256", "lora.r=16"]) \
        == "lora-tui train --preset qlora 'my run.yaml' data.max_seq_len=256 lora.r=16"
    assert train_command(None, None, overrides=[]) == "lora-tui train"


def test_binary_units_have_one_home():
    """GiB and MiB are defined in core/units.py only; a second `GIB = 2**30` is how two screens drift apart."""
    for name in ("GiB", "MiB", "GIB"):
        assert _homes(name) in ([], ["lora_tui/core/units.py"]), (name, _homes(name))
    assert _homes("GiB") == ["lora_tui/core/units.py"]


def test_estimate_shorthands_use_the_plan_vocabulary():
    """`estimate --batch 2` sets the key workload.PLAN_FIELDS names for 'batch': one mapping, not two."""
    from lora_tui.commands.hardware import SHORTHANDS
    from lora_tui.core.plan.workload import PLAN_FIELDS

    assert set(SHORTHANDS) <= set(PLAN_FIELDS)
    assert _homes("PLAN_FIELDS") == ["lora_tui/core/plan/workload.py"]
