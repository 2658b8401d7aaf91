"""What a careless or hostile user does to run directories and exports (issue 16 items 1, 4, 5, 7, 8):
--overwrite replaces only lora-tui runs, honest resumes, garbage status.json, a disk too small for the
adapter, absurd step counts, torn event lines, checkpoint exports and shell-quoted hints."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lora_tui.core.run import launcher
from lora_tui.core.config import Config, apply_overrides, save_config
from lora_tui.core.run.runs import CHECKPOINT_MARKER, RunDirectory, RunError, write_run_marker
from tests.support.training import no_model_config, train_only_config, wait_run
from tests.support.wait import until


def _cli(*args, cwd=None, timeout=120, env=None):
    return subprocess.run([sys.executable, "-m", "lora_tui", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env={**os.environ, **(env or {})})


def _user_folder(path: Path) -> dict[str, bytes]:
    """A folder of someone's work: what --overwrite must never delete."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "thesis.tex").write_text("\\chapter{Results}")
    (path / "notes").mkdir()
    (path / "notes" / "ideas.md").write_text("- try r=32")
    return _snapshot(path)


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(path.rglob("*"))}


# ----------------------------------------------------------------------------- item 1: --overwrite
def test_overwrite_refuses_a_folder_that_is_not_a_run_and_deletes_nothing(tmp_path, hello_data):
    folder = tmp_path / "work"
    before = _user_folder(folder)
    for overwrite in (False, True):
        with pytest.raises(RunError) as info:
            launcher.start_run(no_model_config(hello_data), folder, overwrite=overwrite)
        message = str(info.value)
        assert "not a lora-tui run" in message and "thesis.tex" in message, message
        assert "--overwrite to replace" not in message and "--resume" not in message, message
        assert _snapshot(folder) == before


def test_overwrite_cli_refuses_dot_and_home_in_one_line(tmp_path, hello_data):
    folder = tmp_path / "here"
    before = _user_folder(folder)
    home = tmp_path / "home"
    home_before = _user_folder(home)
    for run_dir, cwd in ((".", folder), (str(home), folder)):
        result = _cli("train", f"data.train={hello_data}", "data.validation=", "model.name=/nonexistent/model",
                      "--run-dir", run_dir, "--overwrite", cwd=cwd, env={"HOME": str(home)})
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    assert _snapshot(folder) == before and _snapshot(home) == home_before


def test_overwrite_replaces_a_run_and_an_empty_folder_is_used(tmp_path, hello_data, monkeypatch):
    monkeypatch.setattr(launcher, "_spawn", lambda *a, **k: 0)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert launcher.start_run(no_model_config(hello_data), empty).config_path.is_file()

    run = launcher.start_run(no_model_config(hello_data), tmp_path / "old-run")  # a run, as train writes it
    run.append_event("started", max_steps=4)
    (run.checkpoints_dir / "checkpoint-2").mkdir(parents=True)
    with pytest.raises(RunError, match="--overwrite to replace it"):  # a run: the flag is the right advice
        launcher.start_run(no_model_config(hello_data, "lora.r=8"), run.path)
    launcher.start_run(no_model_config(hello_data, "lora.r=8"), run.path, overwrite=True)
    assert not run.checkpoints_dir.exists() and not run.events_path.exists()
    assert "r: 8" in run.config_path.read_text()


def test_overwrite_refuses_a_look_alike_folder_with_config_and_status(tmp_path, hello_data):
    """Issue 25 item 1: config.yaml + status.json (any content) beside someone's files is not a run."""
    folder = tmp_path / "look-alike"
    before = _user_folder(folder)
    (folder / "config.yaml").write_text("model:\n  name: mine\n")
    (folder / "status.json").write_text('{"state": "failed"}')
    (folder / "nested").mkdir()
    (folder / "nested" / "data.csv").write_text("a,b\n1,2\n")
    before = _snapshot(folder)
    result = _cli("train", f"data.train={hello_data}", "data.validation=", "model.name=/nonexistent/model",
                  "--run-dir", folder, "--overwrite", "--detach")
    assert result.returncode == 2 and "not a lora-tui run" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert _snapshot(folder) == before


def test_overwrite_of_a_real_run_refuses_when_other_files_live_beside_it(tmp_path, hello_data, monkeypatch):
    """Issue 25 item 1: --overwrite removes only the files a run consists of; anything else is a refusal."""
    monkeypatch.setattr(launcher, "_spawn", lambda *a, **k: 0)
    run = launcher.start_run(no_model_config(hello_data), tmp_path / "run")
    run.append_event("started", max_steps=4)
    (run.path / "thesis.tex").write_text("\\chapter{Results}")
    (run.path / "gguf").mkdir()
    (run.path / "gguf" / "run-q8_0.gguf").write_bytes(b"GGUF....")
    before = _snapshot(run.path)
    with pytest.raises(RunError, match="not part of a run") as info:
        launcher.start_run(no_model_config(hello_data, "lora.r=8"), run.path, overwrite=True)
    assert "thesis.tex" in str(info.value) and "gguf/" in str(info.value)
    assert {k: v for k, v in _snapshot(run.path).items() if k != "trainer.lock"} == \
        {k: v for k, v in before.items() if k != "trainer.lock"}
    (run.path / "thesis.tex").unlink()
    subprocess.run(["rm", "-r", str(run.path / "gguf")], check=True)
    launcher.start_run(no_model_config(hello_data, "lora.r=8"), run.path, overwrite=True)  # only a run: replaced
    assert "r: 8" in run.config_path.read_text() and not run.events_path.exists()


def test_run_dir_that_is_a_file_is_refused_in_one_line(tmp_path, hello_data):
    target = tmp_path / "thesis.pdf"
    target.write_bytes(b"%PDF-1.7")
    result = _cli("train", f"data.train={hello_data}", "data.validation=", "model.name=/nonexistent/model",
                  "--run-dir", target, "--overwrite")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert target.read_bytes() == b"%PDF-1.7"


def test_overwrite_never_empties_the_current_folder_even_when_it_is_a_run(tmp_path, hello_data):
    run = RunDirectory(tmp_path / "a-run")
    run.path.mkdir()
    write_run_marker(run.path)
    save_config(no_model_config(hello_data), run.config_path)
    run.write_status("failed")
    before = _snapshot(run.path)
    result = _cli("train", f"data.train={hello_data}", "data.validation=", "model.name=/nonexistent/model",
                  "--run-dir", ".", "--overwrite", cwd=run.path)
    assert result.returncode == 2 and "current folder" in result.stderr, result.stderr
    assert _snapshot(run.path) == before


def test_merge_overwrite_replaces_only_a_merged_model(tmp_path, tiny_model_dir):
    from lora_tui.core.export.artefacts import ExportError, merge_adapter
    from tests.support.chat import make_fake_run

    run = make_fake_run(tmp_path, tiny_model_dir)
    folder = tmp_path / "work"
    before = _user_folder(folder)
    with pytest.raises(ExportError, match="not a merged model") as info:
        merge_adapter(run, folder, overwrite=True)
    assert "thesis.tex" in str(info.value)
    assert _snapshot(folder) == before


def test_zip_overwrite_replaces_only_a_zip(tmp_path, tiny_model_dir):
    from lora_tui.core.export.artefacts import ExportError, zip_adapter
    from tests.support.chat import make_fake_run

    run = make_fake_run(tmp_path, tiny_model_dir)
    precious = tmp_path / "thesis.pdf"
    precious.write_bytes(b"%PDF-1.7 my thesis")
    with pytest.raises(ExportError, match="not a zip"):
        zip_adapter(run, precious, overwrite=True)
    assert precious.read_bytes() == b"%PDF-1.7 my thesis"
    written = zip_adapter(run, tmp_path / "a.zip")
    assert zip_adapter(run, written, overwrite=True) == written  # our own zip is replaced


def test_gguf_overwrite_replaces_only_a_gguf_file(tmp_path, tiny_model_dir):
    from lora_tui.core.export.artefacts import ExportError, export_gguf
    from tests.support.chat import make_fake_run

    run = make_fake_run(tmp_path, tiny_model_dir)
    precious = tmp_path / "thesis.gguf.txt"
    precious.write_text("not a model")
    with pytest.raises(ExportError, match="not a GGUF file"):
        export_gguf(run, precious, overwrite=True)
    assert precious.read_text() == "not a model"


# ----------------------------------------------------------------------------- item 5: garbage status.json
@pytest.fixture
def finished_garbage(tmp_path) -> RunDirectory:
    """A finished run (60 of 60 steps, checkpoints, adapter) whose status.json is garbage."""
    from screenshots.make_demo_run import write_demo_run

    run = RunDirectory(write_demo_run(tmp_path / "done-run", finished=True))
    for step in (40, 60):
        ckpt = run.checkpoints_dir / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        (ckpt / "adapter_config.json").write_text(json.dumps({"r": 16, "lora_alpha": 32}))
        (ckpt / CHECKPOINT_MARKER).write_text(str(step))
    run.status_path.write_bytes(b"\xff\x00{{ garbage")
    return run


def test_garbage_status_of_a_finished_run_reads_finished_from_the_events(finished_garbage):
    run = finished_garbage
    assert run.state() == "finished"
    summary = run.summary()
    assert (summary.state, summary.step, summary.max_steps) == ("finished", 60, 60)
    listed = _cli("runs", "--dir", run.path.parent)
    line = next(l for l in listed.stdout.splitlines() if l.startswith(run.name))
    assert "finished" in line and "60/60" in line, listed.stdout


def test_resume_of_a_finished_run_with_garbage_status_is_refused_and_changes_nothing(finished_garbage):
    run = finished_garbage
    before = _snapshot(run.path)
    result = _cli("train", "--resume", run.path)
    assert result.returncode == 2 and "already finished" in result.stderr, result.stderr + result.stdout
    after = {k: v for k, v in _snapshot(run.path).items() if k != "trainer.lock"}  # the claim's empty lock file
    assert after == before  # no step 61 of 60, no new final record, no checkpoint rotated


def test_attach_to_a_finished_run_with_garbage_status_does_not_advise_resume(finished_garbage):
    for args in (["attach", finished_garbage.path, "--no-follow"], ["attach", finished_garbage.path]):
        result = _cli(*args, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "finished at step 60" in result.stdout and "--resume" not in result.stdout, result.stdout


def test_wizard_quits_a_finished_run_with_garbage_status_without_asking(finished_garbage):
    import asyncio

    from lora_tui.ui.app import make_app
    from screenshots.fixed import FixedBackend

    async def go():
        app = make_app(run=str(finished_garbage.path), backend=FixedBackend())
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.current_mode == "training" and app.screen.history.step == 60, 60,
                        what="the training screen to show the run")
            assert app.screen.run_state == "finished"
            await pilot.press("ctrl+q")
            await until(pilot, lambda: app.return_code is not None or type(app.screen).__name__ == "QuitDuringTraining",
                        what="the wizard to quit or to ask")
            assert type(app.screen).__name__ != "QuitDuringTraining", "it claims training is still running"
        assert app.return_code == 0

    asyncio.run(go())


# ----------------------------------------------------------------------------- item 4: lora.targets on resume
def _tiny(model: Path, data: Path, *overrides: str) -> Config:
    return train_only_config(model, data, "training.max_steps=400", "training.save_steps=2", *overrides)


_until = wait_run


@pytest.fixture(scope="module")
def stopped_tiny_run(tiny_model_dir, train_file, tmp_path_factory) -> RunDirectory:
    """A real run on the tiny model (all-linear targets), stopped after its first checkpoints."""
    run = launcher.start_run(_tiny(tiny_model_dir, train_file), tmp_path_factory.mktemp("targets") / "run")
    _until(lambda: run.last_checkpoint(), run)
    assert launcher.stop_run(run, wait=240) == "stopped", run.log_path.read_text()[-3000:]
    return run


def _set_targets(run: RunDirectory, text: str) -> None:
    import re

    config = run.config_path.read_text()
    run.config_path.write_text(re.sub(r"(?m)^  targets: .*$", f"  targets: {text}", config))


@pytest.mark.parametrize("targets", ["qv", "q_proj,v_proj", "'q_proj, k_proj, v_proj, o_proj'"])
def test_resume_with_changed_lora_targets_is_refused_and_names_the_setting(stopped_tiny_run, targets):
    run = stopped_tiny_run
    original = run.config_path.read_text()
    events = run.events_path.read_bytes()
    try:
        _set_targets(run, targets)
        result = _cli("train", "--resume", run.path)
        assert result.returncode == 2, result.stdout[-2000:] + result.stderr
        message = result.stderr.strip()
        assert len(message.splitlines()) == 1 and "lora.targets" in message and "Traceback" not in message, message
        assert "down_proj" in message, message  # what the checkpoint holds, to set it back
        assert run.events_path.read_bytes() == events and run.state() == "stopped"
    finally:
        run.config_path.write_text(original)


def test_trainer_refuses_changed_targets_when_the_launcher_cannot_tell(stopped_tiny_run, tmp_path):
    """A run from before linear_layers was recorded: the trainer's own check names the setting."""
    import shutil

    copy = RunDirectory(tmp_path / "old-run")
    shutil.copytree(stopped_tiny_run.path, copy.path, ignore=shutil.ignore_patterns("trainer.lock"))
    lines = [json.loads(l) for l in copy.events_path.read_text().splitlines()]
    for event in lines:
        event.pop("linear_layers", None)
    copy.events_path.write_text("".join(json.dumps(e) + "\n" for e in lines))
    _set_targets(copy, "qv")
    launcher.resume_run(copy.path)
    assert _until(lambda: copy.state() if copy.state() in ("failed", "finished", "stopped", "dead") else None,
                  copy) == "failed"
    failed = copy.read_events()[-1]
    assert failed["type"] == "failed" and "lora.targets" in failed["reason"], failed
    assert "load_state_dict" not in failed["reason"]


# ----------------------------------------------------------------------------- item 7: no room for the adapter
def test_no_room_for_the_adapter_without_checkpoints_is_refused_before_training(tiny_model_dir, train_file,
                                                                                 small_disk):
    # save_steps=0: the adapter (~4.5 MB with the tokenizer, + 8 MB margin) is the only thing ever saved, and
    # 10 MB cannot hold it: training all steps would end with nothing kept.
    run = launcher.start_run(_tiny(tiny_model_dir, train_file, "training.max_steps=30", "training.save_steps=0"),
                             small_disk / "run")
    assert _until(lambda: run.state() if run.state() in ("failed", "finished", "stopped", "dead") else None,
                  run) == "failed"
    failed = run.read_events()[-1]
    assert failed["type"] == "failed" and failed["reason"].startswith("disk full:"), failed
    assert "MB needed" in failed["reason"] and "adapter" in failed["reason"] and str(small_disk) in failed["reason"]
    assert not any(e["type"] == "step" for e in run.read_events()), "it trained steps it could never save"
    assert "checkpoints are kept" not in failed["fix"] and "no checkpoint" in failed["fix"], failed["fix"]


# ----------------------------------------------------------------------------- item 8: the smaller ones
@pytest.mark.parametrize("setting", ["training.max_steps=1e30", "training.max_steps=10000001",
                                     "training.save_steps=1e30", "training.eval_steps=1e18",
                                     "training.logging_steps=1e30", "training.early_stopping_patience=1e30",
                                     "training.seed=1e30"])
def test_absurd_step_counts_are_refused_with_the_bound(setting):
    result = _cli("train", setting, "--print-config")
    assert result.returncode == 2, result.stdout[-500:]
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "at most" in message and setting.split("=")[0] in message, message
    assert "Traceback" not in message and len(message) < 300, message


def test_sane_large_max_steps_is_accepted():
    assert apply_overrides(Config(), ["training.max_steps=10000000"]).training.max_steps == 10_000_000


def test_event_after_a_torn_last_line_does_not_reuse_its_seq(tmp_path):
    run = RunDirectory(tmp_path)
    run.events_path.write_text('{"seq": 1, "type": "log", "message": "a"}\n{"seq": 2, "type": "st')
    assert run.append_event("log", message="after the tear")["seq"] == 3


def test_event_seq_continues_past_the_first_read_slice(tmp_path):
    run = RunDirectory(tmp_path)
    line = '{"seq": %d, "type": "log", "message": "' + "x" * 1000 + '"}\n'
    with open(run.events_path, "w") as fh:  # ~10 MB: more than one read slice (8 MB)
        for seq in range(1, 10_001):
            fh.write(line % seq)
    assert run.append_event("log", message="next")["seq"] == 10_001


def test_zip_of_a_checkpoint_leaves_the_trainer_state_out(tmp_path, tiny_model_dir):
    import shutil
    import zipfile

    from tests.support.chat import make_fake_run

    run = RunDirectory(make_fake_run(tmp_path, tiny_model_dir))
    ckpt = run.checkpoints_dir / "checkpoint-12"
    shutil.copytree(run.adapter_dir, ckpt)
    for name in ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth", "rng_state_0.pth", "training_args.bin",
                 "trainer_state.json", CHECKPOINT_MARKER):
        (ckpt / name).write_bytes(b"state")
    result = _cli("export", ckpt, "--zip", "--out", tmp_path / "ckpt.zip")
    assert result.returncode == 0, result.stderr
    names = {n.split("/", 1)[1] for n in zipfile.ZipFile(tmp_path / "ckpt.zip").namelist()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json"} <= names, names
    leaked = names & {"optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth", "rng_state_0.pth",
                      "training_args.bin", "trainer_state.json", CHECKPOINT_MARKER}
    assert not leaked, leaked
    from lora_tui.core.export.hub import upload_plan

    pushed = {name for _, name in upload_plan(ckpt, "me/adapter").files}  # `push` of the checkpoint: the same
    assert "adapter_model.safetensors" in pushed and not pushed & {"optimizer.pt", "rng_state.pth", "training_args.bin"}


def test_printed_hints_are_shell_quoted_for_paths_with_spaces(tmp_path, hello_data):
    run_dir = tmp_path / "my runs" / "it's a run"
    result = _cli("train", f"data.train={hello_data}", "data.validation=", "model.name=/nonexistent/model",
                  "training.max_steps=4", "--run-dir", run_dir, "--detach")
    assert result.returncode == 0, result.stderr
    hints = [l.split(":", 1)[1].strip() for l in result.stdout.splitlines() if l.strip().startswith(("follow:", "stop:"))]
    assert len(hints) == 2, result.stdout
    for hint in hints:
        assert shlex.split(hint)[-1] == str(run_dir), hint
    run = RunDirectory(run_dir)
    _until(lambda: run.state() == "failed" and not run.is_locked(), run, 120)  # the trainer (no such model) ended
    run.write_status("running", pid=0)  # as if it died without a word: attach and stop advise --resume
    for args in (["stop", run_dir], ["attach", run_dir, "--no-follow"]):
        out = _cli(*args).stdout
        command = out.split("lora-tui train --resume ", 1)[1].split("`")[0].strip()
        assert shlex.split(command) == [str(run_dir)], out


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_history_is_printed_once_after_ctrl_c_or_sigterm(tiny_model_dir, train_file, tmp_path, sig):
    import signal

    run_dir = tmp_path / "fg"
    proc = subprocess.Popen([sys.executable, "-m", "lora_tui", "train", f"model.name={tiny_model_dir}",
                             f"data.train={train_file}", "data.validation=", "data.max_seq_len=64",
                             "training.max_steps=400", "training.save_steps=0", "training.eval_steps=0",
                             "--run-dir", str(run_dir)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            # a suite started in the background hands its children SIGINT ignored: as a terminal would
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    run = RunDirectory(run_dir)
    _until(lambda: sum(e["type"] == "step" for e in run.read_events()) >= 2, run)
    proc.send_signal(getattr(signal, sig))
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0 and run.state() == "stopped", out
    assert out.count("started: LoRA") == 1, out  # the history is not printed again after the signal
    assert out.count("step 1/400") == 1, out
    assert "stopped at step" in out
