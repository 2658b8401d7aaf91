"""Command-line parsing: help texts, exit codes, completion, overrides anywhere,
top-level options before a command, and the wizard without a terminal.

Nothing here trains or loads a model; `--print-config` is the probe for what `train` would do.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lora_tui.cli import apply_top_level_options, build_parser, main
from lora_tui.core.config import Config, ConfigError, apply_overrides

REPO = Path(__file__).resolve().parent.parent


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return dict(parser._subparsers._group_actions[0].choices)


def _print_config(argv, capsys) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


# --- unknown section ------------------------------------------------------------

def test_unknown_section_is_one_line_not_a_traceback(capsys):
    assert main(["train", "foo.bar=1", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0
    assert "Unknown config section 'foo'" in err and "training" in err


def test_unknown_section_and_unknown_key_are_both_config_errors():
    for override in ("foo.bar=1", "training.nope=1", "a.b.c=1"):
        with pytest.raises(ConfigError):
            apply_overrides(Config(), [override])


# --- overrides anywhere ------------------------------------------------------------

def test_overrides_after_options_are_read(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("training:\n  max_steps: 9\n", encoding="utf-8")
    out = _print_config(["train", str(cfg), "--print-config", "training.max_steps=5", "lora.r=4"], capsys)
    assert "  max_steps: 5\n" in out and "  r: 4\n" in out


def test_config_file_after_overrides_and_options(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("lora:\n  r: 2\n", encoding="utf-8")
    out = _print_config(["train", "training.max_steps=3", "--print-config", str(cfg)], capsys)
    assert "  max_steps: 3\n" in out and "  r: 2\n" in out


def test_later_override_wins_wherever_it_stands(capsys):
    out = _print_config(["train", "lora.r=4", "--print-config", "lora.r=8"], capsys)
    assert "  r: 8\n" in out


def test_estimate_reads_overrides_between_its_options():
    args = build_parser().parse_args(["estimate", "--json", "lora.r=4", "--device", "cpu", "training.micro_batch=2"])
    assert [args.config, *args.overrides] == ["lora.r=4", "training.micro_batch=2"]
    assert args.json and args.device == "cpu"


def test_two_config_files_are_refused(tmp_path, capsys):
    assert main(["train", str(tmp_path / "a.yaml"), "--print-config", str(tmp_path / "b.yaml")]) == 2
    assert "One config file at most" in capsys.readouterr().err


# --- top-level --model / --data / --run before a command ---------------------------

def _parse(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_top_level_options(parser, args)
    return args


def test_top_level_model_applies_to_validate():
    assert _parse(["--model", "my/model", "validate", "f.jsonl"]).model == "my/model"


def test_top_level_model_applies_to_estimate():
    assert _parse(["--model", "my/model", "estimate"]).model == "my/model"


def test_top_level_model_and_data_apply_to_train(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "a"}\n', encoding="utf-8")
    out = _print_config(["--model", "some/model", "--data", str(data), "train", "--print-config"], capsys)
    assert "  name: some/model\n" in out
    assert f"  train: {data}\n" in out


def test_top_level_option_given_twice_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        _parse(["--model", "a/b", "validate", "--model", "c/d", "f.jsonl"])
    assert exc.value.code == 2
    assert "given twice" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--model", "x", "runs"], ["--data", "d.jsonl", "validate", "f.jsonl"],
                                  ["--run", "r", "attach", "r"], ["--data", "d.jsonl", "chat", "r"]])
def test_top_level_option_without_a_use_is_refused(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "has no meaning there" in err and argv[0] in err


# --- help texts, exit codes, completion ------------------------------------------------

def test_every_option_of_every_command_has_help_with_its_default():
    parser = build_parser()
    missing = []
    for name, sub in {"lora-tui": parser, **_subparsers(parser)}.items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            text = formatter._get_help_string(action) if action.help else ""
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not text.strip():
                missing.append(f"{label}: no help")
            elif (action.option_strings and action.nargs != 0 and not action.required and "default" not in text.lower()
                  and action.dest != "print_completion"):  # an action like --version, not a setting
                missing.append(f"{label}: help does not give the default")
    assert not missing, "\n".join(missing)


def test_help_output_shows_defaults(capsys):
    for argv, expected in ((["chat", "--help"], "(default: 0.3)"), (["stop", "--help"], "(default: 120.0)"),
                           (["validate", "--help"], "(default: 512)")):
        with pytest.raises(SystemExit):
            main(argv)
        assert expected in " ".join(capsys.readouterr().out.split())


def test_top_level_help_lists_exit_codes_and_completion(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "exit codes:" in out
    for code in ("0 ", "1 ", "2 ", "130 "):
        assert f"\n  {code}" in out
    assert "--print-completion bash" in out


def test_bash_completion_script_is_valid_bash(capsys, tmp_path):
    assert main(["--print-completion", "bash"]) == 0
    script = capsys.readouterr().out
    for word in ("validate", "train", "estimate", "--print-config", "--max-new-tokens", "_shtab_compgen_files"):
        assert word in script
    path = tmp_path / "lora-tui.bash"
    path.write_text(script, encoding="utf-8")
    subprocess.run(["bash", "-n", str(path)], check=True)
    # What TAB offers: commands after `lora-tui`, options after a command.
    probe = (f"source {path}; COMP_WORDS=(lora-tui tr); COMP_CWORD=1; _shtab_lora_tui; echo \"${{COMPREPLY[*]}}\"; "
             "COMP_WORDS=(lora-tui chat --te); COMP_CWORD=2; _shtab_lora_tui; echo \"${COMPREPLY[*]}\"")
    lines = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout.splitlines()
    assert lines == ["train", "--temperature"]


# --- the wizard without a terminal -------------------------------------------------------

def _wizard(stdin, stderr, timeout=60):
    env = {**os.environ, "TERM": "xterm-256color"}
    return subprocess.run([sys.executable, "-m", "lora_tui"], stdin=stdin, stdout=subprocess.PIPE, stderr=stderr,
                          cwd=REPO, env=env, timeout=timeout)


def test_wizard_with_stdin_from_dev_null_says_it_needs_a_terminal():
    with open(os.devnull) as devnull:
        proc = _wizard(devnull, subprocess.PIPE)
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert "needs a terminal" in err and "standard input" in err and "lora-tui train" in err
    assert "\x1b[" not in err + proc.stdout.decode()  # no escape codes written


def test_wizard_drawing_on_a_non_terminal_says_so():
    main_fd, tty_fd = os.openpty()  # stdin is a terminal, stderr (where Textual draws) a pipe
    try:
        proc = _wizard(tty_fd, subprocess.PIPE)
    finally:
        os.close(main_fd)
        os.close(tty_fd)
    assert proc.returncode == 2
    assert "needs a terminal" in proc.stderr.decode() and "standard error" in proc.stderr.decode()
