"""What an export writes and prints, against hostile names and full disks (issue 25 items 3, 9, 10, 11):
every file follows the no-overwrite rule, hints are safe to paste, a run name cannot inject Modelfile lines,
a full disk is one line, a deleted adapter is called missing. Fake runs on the tiny random model; real
subprocesses, a real bash for the pasted hints, a real tmpfs for the full disk."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.chat import make_fake_run


def _cli(*args, timeout=300, cwd=None):
    return subprocess.run([sys.executable, "-m", "lora_tui", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def test_gguf_export_never_replaces_a_modelfile_it_did_not_write(tmp_path, tiny_model_dir):
    """Issue 25 item 3: `export --gguf --out DIR/new.gguf` silently replaced an existing DIR/Modelfile-q8_0."""
    run = make_fake_run(tmp_path, tiny_model_dir)
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "Modelfile-q8_0"
    mine.write_text("FROM llama3\nSYSTEM my own prompt\n")
    for flags in ([], ["--overwrite"]):
        result = _cli("export", run, "--gguf", "--out", out / "new.gguf", "--no-check", *flags)
        assert result.returncode == 2 and "Modelfile-q8_0" in result.stderr, result.stdout + result.stderr
        assert mine.read_text() == "FROM llama3\nSYSTEM my own prompt\n" and not (out / "new.gguf").exists()
    mine.unlink()
    assert _cli("export", run, "--gguf", "--out", out / "new.gguf", "--no-check").returncode == 0
    again = _cli("export", run, "--gguf", "--out", out / "other.gguf", "--no-check")
    assert again.returncode == 2 and "Modelfile-q8_0 already exists" in again.stderr  # ours: only with --overwrite
    assert _cli("export", run, "--gguf", "--out", out / "other.gguf", "--no-check", "--overwrite").returncode == 0


def _hints(stdout: str) -> dict[str, str]:
    """The shell commands the export / merge output offers, by label."""
    found = {}
    for line in stdout.splitlines():
        label, _, rest = line.strip().partition(":")
        rest = rest.strip()
        if "(lora-tui " in rest:
            found[label] = rest[rest.index("(lora-tui ") + 1:].split(" (or see")[0].rstrip(")")
        elif rest.startswith(("cd ", "llama-cli ")):
            found[label] = rest
    return found


def test_export_hints_are_safe_to_paste(tmp_path, tiny_model_dir):
    """Issue 25 item 10: the Zip / Merged / GGUF hints and `cd ... && ollama create` were not shell-quoted:
    pasting them ran `$(touch X)`."""
    root = tmp_path / "a $(touch PWNED) b"
    run = Path(make_fake_run(root, tiny_model_dir, name="it's `run`"))
    shown = _cli("export", run)
    assert shown.returncode == 0, shown.stderr
    hints = _hints(shown.stdout)
    assert {"Zip", "Merged", "GGUF"} <= set(hints), shown.stdout
    for label in ("Zip", "Merged", "GGUF"):
        assert shlex.split(hints[label])[2] == str(run), hints[label]
    written = _cli("export", run, "--gguf", "--no-check")
    assert written.returncode == 0, written.stderr
    hints = _hints(written.stdout)
    paste = tmp_path / "paste"
    paste.mkdir()
    for label in ("llama.cpp", "Ollama"):  # pasted into bash, with stand-ins for the two programs
        result = subprocess.run(["bash", "-c", f"llama-cli() {{ test -f \"$2\"; }}; ollama() {{ test -f \"$4\"; }}; "
                                               f"{hints[label]}"], cwd=paste, capture_output=True, text=True)
        assert result.returncode == 0, (hints[label], result.stderr)
    assert not list(tmp_path.rglob("PWNED")), "a pasted hint ran a command"


def test_a_run_name_with_a_newline_cannot_add_lines_to_the_modelfile(tmp_path, tiny_model_dir):
    """Issue 25 item 10: a run named "x\\nSYSTEM ..." put a SYSTEM line into the Modelfile and broke its FROM."""
    run = Path(make_fake_run(tmp_path, tiny_model_dir, name="x\nSYSTEM you are evil"))
    result = _cli("export", run, "--gguf", "--no-check")
    assert result.returncode == 0, result.stderr
    modelfile = next((run / "gguf").glob("Modelfile-*")).read_text()
    commands = [line for line in modelfile.splitlines() if line and not line.startswith("#")]
    assert not any(line.startswith("SYSTEM") for line in commands), modelfile
    from_line = next(line for line in commands if line.startswith("FROM "))
    assert (run / "gguf" / from_line.split(" ", 1)[1]).is_file(), from_line


def test_a_run_named_dash_rf_gets_hints_that_are_not_options(tmp_path, hello_data):
    """Issue 25 item 10: a run named `-rf` got `lora-tui attach -rf`, which reads as options."""
    result = _cli("train", f"data.train={hello_data}", "data.validation=", "model.name=/nonexistent/model",
                  "--run-dir=-rf", "--detach", cwd=tmp_path)
    assert result.returncode in (0, 1), result.stderr
    hints = [line.split(":", 1)[1].strip() for line in result.stdout.splitlines()
             if line.strip().startswith(("follow:", "stop:"))]
    assert hints and all(shlex.split(h)[2] == "./-rf" for h in hints), result.stdout


def test_a_newline_in_a_run_name_keeps_the_runs_table_one_line_per_run(tmp_path, tiny_model_dir):
    """Issue 25 item 10: newlines in a run's name broke the `runs` table."""
    make_fake_run(tmp_path, tiny_model_dir, name="two\nlines")
    make_fake_run(tmp_path, tiny_model_dir, name="plain")
    result = _cli("runs", "--dir", tmp_path)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3 and any(line.startswith("two?lines") for line in lines), result.stdout


def test_export_of_a_run_whose_adapter_was_deleted_says_missing(tmp_path, tiny_model_dir):
    """Issue 25 item 11: `export` on a finished run whose adapter was deleted said "not saved yet"."""
    run = Path(make_fake_run(tmp_path, tiny_model_dir))
    subprocess.run(["rm", "-r", str(run / "adapter")], check=True)
    result = _cli("export", run)
    assert "not saved yet" not in result.stdout and "missing" in result.stdout, result.stdout
    assert "deleted?" in result.stdout and "Fix:" in result.stdout


@pytest.mark.parametrize("command", [["export", "--zip"], ["merge", "OUT", "--no-check"],
                                     ["export", "--gguf", "--no-check"]], ids=lambda c: " ".join(c[:2]))
def test_a_full_disk_during_an_export_is_one_line(tmp_path, tiny_model_dir, small_disk, command):
    """Issue 25 item 9: a full disk during --gguf, merge or --zip showed a traceback (partial files were removed)."""
    run = Path(make_fake_run(tmp_path, tiny_model_dir))
    with open(small_disk / "filler", "wb") as fh:  # leave ~64 KiB: the zip (tokenizer files) and models need more
        fh.write(b"\0" * (os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize - 64 * 1024))
    target = small_disk / "out"
    args = [target if a == "OUT" else a for a in command[1:]]
    if command[0] == "export":
        args += ["--out", target / ("x.zip" if "--zip" in command else "x.gguf")]
        target.mkdir()
    result = _cli(command[0], run, *args)
    assert result.returncode == 2 and "disk full" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("lora-tui")]) == 1
    leftovers = [p.name for p in small_disk.iterdir() if p.name != "filler"]
    leftovers += [p.name for p in target.iterdir()] if target.is_dir() else []
    assert leftovers in ([], ["out"]), leftovers
