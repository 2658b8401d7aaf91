"""`lora-tui export` and `lora-tui merge` in subprocesses: exit codes and no overwrite without the flag."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from tests.support.chat import make_fake_run


def lora_tui(*args):
    return subprocess.run([sys.executable, "-m", "lora_tui", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_export_shows_paths_and_writes_the_zip_once(tmp_path, tiny_model_dir):
    run = make_fake_run(tmp_path, tiny_model_dir)
    shown = lora_tui("export", run)
    assert shown.returncode == 0, shown.stderr
    assert str(run / "adapter") in shown.stdout and "none yet" in shown.stdout
    zipped = lora_tui("export", run, "--zip")
    assert zipped.returncode == 0, zipped.stderr
    path = run / f"{run.name}-adapter.zip"
    assert str(path) in zipped.stdout and "adapter_config.json" in "".join(zipfile.ZipFile(path).namelist())
    again = lora_tui("export", run, "--zip")
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    assert lora_tui("export", run, "--zip", "--overwrite").returncode == 0
    out = lora_tui("export", run, "--zip", "--out", tmp_path / "elsewhere.zip")
    assert out.returncode == 0 and (tmp_path / "elsewhere.zip").is_file()


def test_merge_command(tmp_path, tiny_model_dir):
    run = make_fake_run(tmp_path, tiny_model_dir)
    out = tmp_path / "merged"
    merged = lora_tui("merge", run, out)
    assert merged.returncode == 0, merged.stderr
    assert (out / "model.safetensors").is_file() and (out / "Modelfile").is_file()
    assert "Loading weights" not in merged.stderr  # library progress bars are kept out of the way
    again = lora_tui("merge", run, out)
    assert again.returncode == 2 and "--overwrite" in again.stderr and "Traceback" not in again.stderr
    assert lora_tui("merge", run, out, "--overwrite", "--dtype", "float32").returncode == 0
    listed = lora_tui("export", run)
    assert f"Merged:      {out}" in listed.stdout


def test_missing_run_exits_2(tmp_path):
    for args in (("export", tmp_path / "nope"), ("export", tmp_path / "nope", "--zip"),
                 ("merge", tmp_path / "nope", tmp_path / "out")):
        result = lora_tui(*args)
        assert result.returncode == 2 and "No run at" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
