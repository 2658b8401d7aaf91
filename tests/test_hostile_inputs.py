"""Hostile inputs (issue 16 items 2, 3, 6 and the data-side items of 8): every file the CLI reads is
bounded in size and time and refuses special files before opening them; bad data is refused by
`train` before a run directory exists; findings name the right row and the right fix."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from lora_tui.core.config import ConfigError, load_config

MEMORY_CAP = 2 * 2**30  # a subprocess under this address-space cap fails (MemoryError) instead of eating the machine


def _cli(*args, timeout=60, cwd=None):
    """`lora-tui ARGS` in a subprocess with its address space capped: an unbounded read fails, not the host."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    return subprocess.run([sys.executable, "-m", "lora_tui", *args], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=cap, cwd=cwd)


def _one_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return lines[0]


def alias_bomb() -> str:
    """Billion laughs in one value: 9 levels of 9 aliases (~400 bytes), 9**9 strings when expanded."""
    levels = ["&a [lol,lol,lol,lol,lol,lol,lol,lol,lol]"]
    names = "abcdefghi"
    for prev, name in zip(names, names[1:]):
        levels.append(f"&{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "model:\n  name: [" + ", ".join(levels) + "]\n"


# --- item 2: config files -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_config_that_is_a_fifo_or_device_is_refused_before_reading(tmp_path, kind):
    path = tmp_path / "cfg.yaml"
    if kind == "fifo":
        os.mkfifo(path)  # before the fix: open() blocked forever (the timeout fails the test)
    else:
        path = Path("/dev/zero")  # before the fix: read until MemoryError
    for command in (["train", str(path), "--print-config"], ["estimate", str(path)]):
        result = _cli(*command)
        line = _one_line(result)
        expected = "FIFO" if kind == "fifo" else "character device"
        assert result.returncode == 2 and expected in line, line
        assert "Fix:" in line


def test_config_over_the_size_limit_is_refused_with_the_limit(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# padding\n" * (500 * 1024))  # 5 MiB of comments: valid YAML, far over any real config
    with pytest.raises(ConfigError, match="4 MiB"):
        load_config(path)


def test_yaml_alias_bomb_is_refused_without_expanding(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    assert path.stat().st_size < 600
    result = _cli("train", str(path), "--print-config")
    line = _one_line(result)  # before the fix: the expanded value went into the message (GBs on stderr)
    assert result.returncode == 2 and "alias" in line and len(result.stderr) < 600, line


def test_a_huge_value_is_cut_in_the_message(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text("training:\n  max_steps: " + "9x" * 50_000 + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "training.max_steps" in str(info.value) and len(str(info.value)) < 300


def test_binary_garbage_as_config_is_one_line(tmp_path):
    path = tmp_path / "garbage.yaml"
    path.write_bytes(bytes(range(256)) * 40)
    result = _cli("train", str(path), "--print-config")
    line = _one_line(result)  # before the fix: a UnicodeDecodeError traceback, exit 1
    assert result.returncode == 2 and str(path) in line


def test_deeply_nested_yaml_is_one_line(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("model:\n  name: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError, match="nested"):
        load_config(path)


def _returns_within(fn, seconds: float = 20.0, unblock: Path | None = None):
    """fn()'s result, or a test failure when it has not returned in `seconds` (a FIFO open() blocks
    forever): the blocked thread is then freed by opening `unblock` for writing."""
    import threading

    out = {}
    thread = threading.Thread(target=lambda: out.update(value=_catch(fn)), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if unblock is not None:
            os.close(os.open(unblock, os.O_WRONLY | os.O_NONBLOCK))  # a reader is blocked: this frees it
        pytest.fail(f"still blocked after {seconds} s")
    return out["value"]


def _catch(fn):
    try:
        return fn()
    except Exception as exc:  # returned, to be checked by the test
        return exc


def test_check_prompts_fifo_and_oversize_are_refused(tmp_path):
    from types import SimpleNamespace

    from lora_tui.core.export.check import check_data

    source = SimpleNamespace(run=None)
    fifo = tmp_path / "prompts.txt"
    os.mkfifo(fifo)
    result = _returns_within(lambda: check_data(source, str(fifo), 3, 3), unblock=fifo)
    assert isinstance(result, ValueError) and "FIFO" in str(result) and "Fix:" in str(result)
    big = tmp_path / "big.txt"
    big.write_bytes(b"a prompt\n" * (600 * 1024))  # 5.3 MiB
    result = _catch(lambda: check_data(source, str(big), 3, 3))
    assert isinstance(result, ValueError) and "MiB limit" in str(result)
    garbage = tmp_path / "garbage.txt"
    garbage.write_bytes(bytes(range(256)) * 4)
    result = _catch(lambda: check_data(source, str(garbage), 3, 3))
    assert isinstance(result, ValueError) and "UTF-8" in str(result)


@pytest.mark.parametrize("name", ["status.json", "events.jsonl", "config.yaml"])
def test_run_files_that_are_fifos_never_block_a_reader(tmp_path, name):
    from lora_tui.core.run.runs import RunDirectory

    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    if name != "config.yaml":
        (run.path / "config.yaml").write_text("model:\n  name: embedded\n")
    os.mkfifo(run.path / name)
    summary = _returns_within(run.summary, unblock=run.path / name)  # reads status, events and config
    assert not isinstance(summary, Exception), summary
    assert _returns_within(run.read_status, unblock=run.path / name) == {} or name != "status.json"
    assert _returns_within(run.read_events, unblock=run.path / name) == [] or name != "events.jsonl"


def test_accelerate_config_fifo_does_not_block_resume_planning(tmp_path):
    from lora_tui.core.plan.devices import ACCELERATE_CONFIG, Nodes, saved_nodes

    os.mkfifo(tmp_path / ACCELERATE_CONFIG)
    assert _returns_within(lambda: saved_nodes(tmp_path), unblock=tmp_path / ACCELERATE_CONFIG) == Nodes()


# --- item 3: a block of NUL bytes ----------------------------------------------------------------------------

def _rows(n: int) -> bytes:
    return "".join(json.dumps({"instruction": f"question {i}", "output": f"answer {i}"}) + "\n"
                   for i in range(n)).encode()


def test_a_nul_block_at_the_head_is_not_utf16_and_keeps_the_rows(tmp_path):
    from lora_tui.core.data import load_examples, validate_dataset
    from lora_tui.core.data.bounds import sniff_encoding

    path = tmp_path / "zeroed.jsonl"
    path.write_bytes(b"\x00" * 2048 + _rows(303))
    assert sniff_encoding(path.read_bytes()[:65536]) == ("utf-8", 0)  # before the fix: utf-16-be
    loaded = load_examples(path)
    assert loaded.rows == 303 and len(loaded.examples) == 303  # before the fix: 1 read, 0 valid
    assert [(f.line, f.severity, f.code) for f in loaded.findings] == [(1, "warning", "nul_bytes")]
    report = validate_dataset(path)
    assert report.valid_rows == 303 and not any("iconv" in (f.fix or "") for f in report.findings)
    assert "2048 NUL" in report.findings[0].message


def test_a_nul_block_inside_a_row_is_a_finding_on_that_line(tmp_path):
    from lora_tui.core.data import load_examples

    rows = _rows(10).split(b"\n")
    rows[4] = rows[4][:20] + b"\x00" * 3000 + rows[4][20:]  # a zeroed block in the middle of line 5
    path = tmp_path / "holed.jsonl"
    path.write_bytes(b"\n".join(rows))
    loaded = load_examples(path)
    assert len(loaded.examples) == 9 and [(f.line, f.code) for f in loaded.findings] == [(5, "nul_bytes")]
    assert loaded.findings[0].severity == "error" and "iconv" not in loaded.findings[0].fix


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_without_bom_is_still_recognised(tmp_path, encoding):
    from lora_tui.core.data import load_examples

    path = tmp_path / "u16.jsonl"
    path.write_bytes(_rows(5).decode().encode(encoding))
    loaded = load_examples(path)
    assert len(loaded.examples) == 5 and [f.code for f in loaded.findings] == ["utf16_no_bom"]
    assert f"iconv -f {encoding}" in loaded.findings[0].fix


# --- item 6: bad dataset contents are refused before a run directory exists ------------------------------------

def _bad_data(tmp_path: Path, kind: str) -> Path:
    if kind == "empty-file":
        path = tmp_path / "empty.jsonl"
        path.write_bytes(b"")
    elif kind == "empty-folder":
        path = tmp_path / "empty_folder"
        path.mkdir()
    elif kind == "random-bytes":
        path = tmp_path / "random.jsonl"
        path.write_bytes(bytes((i * 7919 + 13) % 256 for i in range(200_000)))
    elif kind == "no-usable-row":
        path = tmp_path / "unknown.jsonl"
        path.write_text("".join(json.dumps({"foo": i}) + "\n" for i in range(50)))
    else:  # unreadable: tests run as root, where chmod 000 changes nothing; a read that fails with EIO
        path = tmp_path / "unreadable.jsonl"  # (as a failing disk gives) stands in: /proc/self/mem at offset 0
        if os.geteuid() != 0:
            path.write_text('{"text": "x"}\n')
            path.chmod(0)
        else:
            path.symlink_to("/proc/self/mem")
    return path


@pytest.mark.parametrize("kind", ["empty-file", "empty-folder", "random-bytes", "no-usable-row", "unreadable"])
def test_train_refuses_bad_data_before_claiming_a_run_dir(tmp_path, kind):
    data = _bad_data(tmp_path, kind)
    run_dir = tmp_path / "run"
    result = _cli("train", "--run-dir", str(run_dir), "--detach", f"data.train={data}", "data.validation=",
                  "training.max_steps=1", timeout=120)
    line = _one_line(result)  # before the fix: a trainer started (exit 0 with --detach) and failed later
    assert result.returncode == 2 and "Fix:" in line, line
    assert str(data) in line or kind == "unreadable" and "cannot be read" in line  # shown resolved: /proc/PID/mem
    assert not run_dir.exists()


def test_precheck_passes_good_data_and_counts_its_usable_rows(tmp_path):
    from lora_tui.core.data.precheck import check_trainable_prefix

    path = tmp_path / "good.jsonl"
    path.write_bytes(b"not json\n" + _rows(5))
    assert check_trainable_prefix(path) == 5


# --- item 8 (data side): the right row, the right fix, consistent counts ---------------------------------------

def test_deep_nesting_has_its_own_fix_not_the_surrogate_one(tmp_path):
    from lora_tui.core.data import load_examples

    path = tmp_path / "deep.jsonl"
    path.write_text('{"text": ' + "[" * 40 + "]" * 40 + '}\n{"text": "\\ud800"}\n{"text": "fine"}\n')
    deep, surrogate = load_examples(path).findings
    assert "nested" in deep.message and "surrogate" not in deep.fix and "flatten" in deep.fix
    assert "surrogate" in surrogate.message and "surrogate pair" in surrogate.fix


def test_the_surrogate_finding_names_the_first_lone_surrogate(tmp_path):
    from lora_tui.core.data import load_examples

    path = tmp_path / "surrogates.jsonl"
    row = {"messages": [{"role": "user", "content": "a \ud801 b \ud802"},
                        {"role": "assistant", "content": "c \ud803"}]}
    path.write_text(json.dumps(row) + "\n")
    (finding,) = load_examples(path).findings
    assert "\\ud801" in finding.message, finding.message  # before the fix: \ud803, the last one


def test_a_json_array_names_rows_by_their_index(tmp_path):
    from lora_tui.core.data import validate_dataset
    from lora_tui.core.data.records import row_unit

    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(20)]
    rows[16] = {"instruction": "q2", "output": "a2"}  # row 17 repeats row 3
    rows[9] = {"instruction": "no output"}  # row 10 lacks a field
    path = tmp_path / "minified.json"
    path.write_text(json.dumps(rows))  # one line: every row was "line 1"
    report = validate_dataset(path)
    assert row_unit(report.container, report.source) == "row"
    where = {f.code: (f.line, f.message) for f in report.findings}
    assert where["duplicate"] == (17, "exact duplicate of row 3")
    assert where["missing_field"][0] == 10
    out = subprocess.run([sys.executable, "-m", "lora_tui", "validate", str(path)], capture_output=True,
                         text=True, timeout=120).stdout
    assert "row 17: exact duplicate of row 3" in out and "line 1" not in out


def test_csv_counts_an_over_long_row_as_read_and_not_valid(tmp_path, monkeypatch):
    from lora_tui.core.data import validate_dataset

    monkeypatch.setattr("lora_tui.core.data.readers.MAX_LINE_BYTES", 1000)
    monkeypatch.setattr("lora_tui.core.data.bounds.MAX_LINE_BYTES", 1000)  # stands for the 200 MB field
    path = tmp_path / "big.csv"
    path.write_text('instruction,output\nq1,a1\n"' + "y" * 3000 + '",a2\nq3,a3\n')
    report = validate_dataset(path)
    # before the fix: "2 read, 2 valid, 1 errors"
    assert (report.rows, report.valid_rows, len(report.errors)) == (3, 2, 1)
    assert report.errors[0].line == 3


def test_validate_of_a_file_whose_read_fails_is_one_line(tmp_path):
    data = _bad_data(tmp_path, "unreadable")
    result = _cli("validate", str(data), timeout=120)
    line = _one_line(result)  # before the fix: an OSError (EIO) traceback
    assert result.returncode == 2 and "cannot be read" in line and "Fix:" in line


# ----------------------------------------------------------------------------- issue 25 item 11: zeroed blocks
def _csv(n: int, start: int = 0) -> bytes:
    return "".join(f"q{i},a{i}\n" for i in range(start, start + n)).encode()


def test_a_nul_block_before_a_csv_header_keeps_the_rows_and_is_not_echoed(tmp_path):
    """Issue 25 item 11: a NUL block before a CSV header gave 0 valid of 303 and echoed 3,072 NULs."""
    path = tmp_path / "zeroed.csv"
    path.write_bytes(b"\x00" * 3072 + b"instruction,output\n" + _csv(303))
    result = _cli("validate", str(path))
    assert "303 read, 303 valid" in result.stdout, result.stdout[-2000:]
    assert "\x00" not in result.stdout + result.stderr and "3072 NUL bytes" in result.stdout


def test_a_nul_block_inside_a_csv_never_merges_rows_silently(tmp_path):
    """Issue 25 item 11: a zeroed block inside a CSV merged lines into one row that was never trained, unsaid."""
    from lora_tui.core.data import load_examples

    body = _csv(303)
    hole = body.index(b"q150,")
    holed = tmp_path / "holed.csv"  # a 4 KiB block zeroed over rows 150-..., as a crash leaves it
    holed.write_bytes(b"instruction,output\n" + body[:hole + 3] + b"\x00" * 4096 + body[hole + 3 + 64:])
    loaded = load_examples(holed)
    errors = [f for f in loaded.findings if f.severity == "error"]
    assert [f.code for f in errors] == ["nul_bytes"] and errors[0].line == 152, loaded.findings
    assert len(loaded.examples) == loaded.rows - 1 and all("\x00" not in str(e.messages) for e in loaded.examples)
    padded = tmp_path / "padded.csv"  # the block between two whole lines: ignored, every row read
    padded.write_bytes(b"instruction,output\n" + body[:hole] + b"\x00" * 3072 + body[hole:])
    loaded = load_examples(padded)
    assert len(loaded.examples) == 303 and [f.severity for f in loaded.findings] == ["warning"]


def test_a_nul_block_between_json_array_elements_keeps_the_valid_row(tmp_path):
    """Issue 25 item 11: inside a .json array a valid row after a zeroed block was called malformed."""
    from lora_tui.core.data import load_examples

    text = json.dumps([{"instruction": f"q{i}", "output": f"a{i}"} for i in range(10)], indent=1)
    cut = text.index("{", text.index('"a4"'))
    path = tmp_path / "rows.json"
    path.write_text(text[:cut] + "\x00" * 100 + text[cut:])
    loaded = load_examples(path)
    assert len(loaded.examples) == 10, loaded.findings
    assert [(f.line, f.severity, f.code) for f in loaded.findings] == [(6, "warning", "nul_bytes")]


@pytest.mark.parametrize("where", ["/", "../..", "home"])
def test_a_data_folder_that_is_a_whole_disk_is_refused_at_once(tmp_path, where):
    """Issue 25 items 6 and 8: `data.train=/` passed the pre-check and the trainer walked the file system (2.2 GB,
    a PermissionError traceback); `../..` was recursed as a local folder (still running at 120 s)."""
    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    value = {"/": "/", "../..": "../..", "home": str(tmp_path)}[where]
    env = {**os.environ, "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "lora_tui", "train", f"data.train={value}", "--run-dir", "run",
                             "--detach"], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)
    assert result.returncode == 2 and "not a dataset" in _one_line(result), result.stdout + result.stderr
    assert not (cwd / "run").exists()


def test_a_folder_with_more_entries_than_a_dataset_is_refused(tmp_path, monkeypatch):
    from lora_tui.core.data import DataError
    from lora_tui.core.data import folders
    from lora_tui.core.data.readers import open_path

    monkeypatch.setattr(folders, "MAX_FOLDER_ENTRIES", 50)
    for i in range(60):
        (tmp_path / f"{i}.log").write_text("x")
    (tmp_path / "a.txt").write_text("hello there")
    with pytest.raises(DataError, match="more than 50 files and folders"):
        open_path(tmp_path)


def test_a_hub_id_without_the_offline_setting_is_one_line_without_retries(tmp_path):
    """Issue 25 item 8: with no network and no offline setting, 24-28 s (58 s here under load) and 11 lines of
    `Retrying in 8s` came before the one-line message; a short reachability check comes first now."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                                                            "HF_DATASETS_OFFLINE")}
    env["HF_HOME"] = str(tmp_path / "hf")  # nothing cached
    result = subprocess.run([sys.executable, "-m", "lora_tui", "train", "data.train=no-such-org/no-such-data",
                             "--run-dir", str(tmp_path / "run"), "--detach"], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 2 and "Retrying" not in result.stderr, result.stderr
    assert "no-such-org/no-such-data" in _one_line(result) and not (tmp_path / "run").exists()
