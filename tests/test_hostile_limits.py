"""Bounded memory, no hangs and one-line answers for hostile values (issue 25 items 5, 6, 7, 9; issue 24 item 10):
a path component over 255 bytes, a FIFO / /dev/zero / 1 GB file as the probe cache or the stop request, a 1 GB
adapter_config.json, LORA_TUI_PLAN garbage or set by hand, bad numbers for bench and stop. Real FIFOs and
devices; memory is the child's max RSS (getrusage)."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lora_tui.core.config import save_config
from lora_tui.core.run.runs import RunDirectory, write_run_marker
from tests.support.training import no_model_config, stubborn_trainer

LONG = "z" * 300


def _cli(*args, timeout=120, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "lora_tui", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=cwd)


def _one_line(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


def _python(code: str, timeout: float = 60, env=None) -> tuple[str, float]:
    """Run ``code`` in a child; (its stdout, its peak RSS in MiB). A hang fails the test at ``timeout``."""
    probe = ("import json, resource, subprocess, sys; p = subprocess.run([sys.executable, '-c', sys.argv[1]], "
             "capture_output=True, text=True, timeout=float(sys.argv[2])); "
             "print(json.dumps([p.returncode, p.stdout, p.stderr, "
             "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024]))")
    out = subprocess.run([sys.executable, "-c", probe, code, str(timeout)], capture_output=True, text=True,
                         timeout=timeout + 30, env={**os.environ, **(env or {})})
    assert out.returncode == 0, f"the child hung or failed: {out.stderr[-2000:]}"
    code, stdout, stderr, mib = json.loads(out.stdout)
    assert code == 0, stderr[-2000:]
    return stdout, mib


# ------------------------------------------------------------------ item 9 / 24.10: names over 255 bytes
@pytest.mark.parametrize("args", [
    ["validate", LONG], ["train", f"data.train={LONG}", "--detach"], ["train", "--run-dir", f"/tmp/{LONG}", "--detach"],
    ["estimate", "--model", LONG], ["chat", LONG, "--prompt", "hi"], ["export", LONG], ["attach", LONG],
    ["stop", LONG], ["merge", LONG, "out"]], ids=lambda a: " ".join(a)[:24])
def test_a_name_over_255_bytes_gets_one_line(args, tmp_path):
    """Issue 25 item 9 and issue 24 item 10: `OSError: [Errno 36] File name too long` with a traceback."""
    result = _cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "too long for a file or folder name" in _one_line(result) and "255" in result.stderr


# ------------------------------------------------------------------ items 5, 6: the probe cache
@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "1 GB file", "a list", "wrong types", "entries not a table"])
def test_a_hostile_probe_cache_is_a_miss_said_plainly_and_rewritten(tmp_path, kind):
    """Issue 25 items 5 and 6, issue 24 item 10: a FIFO as probe.json blocked the trainer forever, /dev/zero
    took 5.4 GB, a 1 GB file 4.4 GB (and was written back), a garbage entry gave "probe failed (AttributeError)"."""
    cache = tmp_path / "cache"
    cache.mkdir()
    path = cache / "probe.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "/dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "1 GB file":
        with open(path, "wb") as fh:
            fh.truncate(2**30)
    elif kind == "a list":
        path.write_text("[1, 2, 3]")
    elif kind == "wrong types":
        from lora_tui.core.train.probe_cache import CACHE_VERSION

        path.write_text(json.dumps({"version": CACHE_VERSION, "entries": {"k": {"chosen": {"micro_batch": "4", "grad_accum": 1}},
                                                              "j": [1]}}))
    else:
        from lora_tui.core.train.probe_cache import CACHE_VERSION

        path.write_text(json.dumps({"version": CACHE_VERSION, "entries": 5}))
    code = textwrap.dedent("""
        from lora_tui.core.train import probe_cache
        hit, problem = probe_cache.lookup("k")
        print(repr(hit), "|", problem)
        probe_cache.store("k", {"chosen": {"micro_batch": 2, "grad_accum": 2, "gradient_checkpointing": False},
                                "measurements": [], "reason": "test"})
        print(probe_cache.lookup("k")[0]["chosen"]["micro_batch"], probe_cache.lookup("k")[1])
    """)
    out, mib = _python(code, env={"LORA_TUI_CACHE": str(cache)})
    first, second = out.strip().splitlines()
    assert first.startswith("None |") and "None" not in first.split("|")[1], first
    assert second == "2 None", second  # rewritten: a regular file, the damaged entries gone
    assert path.is_file() and not path.is_symlink() and path.stat().st_size < 4096
    assert mib < 400, f"peak RSS {mib:.0f} MiB"


# ------------------------------------------------------------------ items 5, 6: the stop request
@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_stop_with_a_hostile_stop_request_file_returns(tmp_path, hello_data, kind):
    """Issue 25 items 5 and 6: a FIFO as stop_requested made `stop --wait 30` hang forever; /dev/zero there
    took 6.6 GB in the trainer and left the run dead."""
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    save_config(no_model_config(hello_data), run.config_path)
    proc = stubborn_trainer(run)
    try:
        if kind == "fifo":
            os.mkfifo(run.stop_path)
        else:
            run.stop_path.symlink_to("/dev/zero")
        result = _cli("stop", run.path, "--wait", "1", timeout=60)
        assert "killed it (SIGKILL)" in result.stdout, result.stdout + result.stderr
        assert proc.wait(20) == -signal.SIGKILL
    finally:
        proc.kill()
    run.stop_path.unlink(missing_ok=True)
    (os.mkfifo if kind == "fifo" else lambda p: Path(p).symlink_to("/dev/zero"))(run.stop_path)
    run.write_status("starting", launched=1e12)
    out, mib = _python(f"from lora_tui.core.run.runs import RunDirectory; "
                       f"RunDirectory({str(run.path)!r}).clear_stale_stop(); print('cleared')")
    assert out.strip() == "cleared" and not os.path.lexists(run.stop_path) and mib < 400, (out, mib)


# ------------------------------------------------------------------ item 6: adapter_config.json of 1 GB
@pytest.mark.parametrize("command", [["chat", "--prompt", "hi", "--max-new-tokens", "2"], ["merge", "OUT"],
                                     ["export", "--gguf", "--no-check"]], ids=lambda c: c[0] + (" --gguf" if "--gguf" in c else ""))
def test_a_1_gb_adapter_config_is_refused_without_reading_it(tmp_path, tiny_model_dir, command):
    """Issue 25 item 6: chat / merge / GGUF read a 1 GB adapter_config.json whole (2.48 GB), then "'peft_type'"."""
    from tests.support.chat import make_fake_run

    run = Path(make_fake_run(tmp_path, tiny_model_dir))
    with open(run / "adapter" / "adapter_config.json", "wb") as fh:
        fh.write(b'{"peft_type": "LORA", "pad": "')
        fh.truncate(2**30)
    args = [a if a != "OUT" else tmp_path / "merged" for a in command]
    probe = ("import json, resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "print(json.dumps([p.returncode, p.stderr, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024]))")
    out = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "lora_tui", args[0], str(run),
                          *map(str, args[1:])], capture_output=True, text=True, timeout=300)
    code, stderr, mib = json.loads(out.stdout)
    assert code == 2 and "adapter_config.json" in stderr and "over the 1 MiB limit" in stderr, stderr
    assert "Traceback" not in stderr and mib < 1024, f"peak RSS {mib:.0f} MiB"


@pytest.mark.parametrize("content", ["1 GB", "a list"])
def test_a_checkpoints_adapter_config_is_read_bounded_before_a_resume(tmp_path, hello_data, content):
    """Issue 25 item 6: the resume's shape check (claim.plan_resume) read the checkpoint's adapter_config.json whole
    (1 GB: about 2 GiB of memory before it gave up) and called .get on any JSON there (a list: AttributeError)."""
    from lora_tui.core.run.runs import CHECKPOINT_MARKER

    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    save_config(no_model_config(hello_data), run.config_path)
    checkpoint = run.checkpoints_dir / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    (checkpoint / CHECKPOINT_MARKER).write_text("2")
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 2, "max_steps": 8}))
    (checkpoint / "adapter_model.safetensors").write_bytes(b"")
    (checkpoint / "optimizer.pt").write_bytes(b"")
    with open(checkpoint / "adapter_config.json", "wb") as fh:
        if content == "a list":
            fh.write(b"[1, 2]")
        else:
            fh.write(b'{"r": 8, "pad": "')
            fh.truncate(2**30)
    out, mib = _python(f"from lora_tui.core.config import load_config; from lora_tui.core.run.claim import plan_resume; "
                       f"from lora_tui.core.run.runs import RunDirectory; run = RunDirectory({str(run.path)!r}); "
                       f"print(plan_resume(run, load_config(run.config_path)).step)")
    assert out.strip() == "2" and mib < 400, (out, f"peak RSS {mib:.0f} MiB")


# ------------------------------------------------------------------ item 6 / 24.10: LORA_TUI_PLAN
@pytest.mark.parametrize("plan", ['{"micro_batch": 4096}', "{not json", '[1, 2]'])
def test_lora_tui_plan_in_the_environment_is_refused_before_a_run(tmp_path, hello_data, plan):
    """Issue 25 item 6 / issue 24 item 10: LORA_TUI_PLAN={"micro_batch":4096} silently overrode the config
    (5.7 GB, 8.5 min for 2 steps); garbage there failed the run with a traceback in train.log."""
    run_dir = tmp_path / "run"
    result = _cli("train", f"data.train={hello_data}", "data.validation=", "--run-dir", run_dir, "--detach",
                  env={"LORA_TUI_PLAN": plan})
    assert result.returncode == 2 and "LORA_TUI_PLAN" in _one_line(result)
    assert not run_dir.exists()


@pytest.mark.parametrize("plan,words", [("{not json", "is not JSON"), ('[1]', "not a JSON object"),
                                        ('{"micro_batch": -3, "grad_accum": 0}', "micro_batch must be at least 1"),
                                        ('{"micro_batch": 4, "grad_accum": 1, "precision": "fp8"}', "precision"),
                                        ('{"micro_batch": 4, "grad_accum": 1, "kernels": {"a": 1}}', "kernels")])
def test_a_rank_given_a_garbage_plan_fails_in_one_line(tmp_path, tiny_model_dir, train_file, plan, words):
    """A rank (LORA_TUI_WORKER=1) reads the supervisor's plan: garbage is a failed run with one reason, no
    traceback in train.log (was JSONDecodeError, `'list' object has no attribute 'items'`, KeyError: 'fp8',
    or a run started with "batch -3 x 0")."""
    from tests.support.training import train_only_config

    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    write_run_marker(run.path)
    save_config(train_only_config(tiny_model_dir, train_file), run.config_path)
    env = {**os.environ, "LORA_TUI_WORKER": "1", "LORA_TUI_PLAN": plan}
    result = subprocess.run([sys.executable, "-m", "lora_tui.core.trainer_main", str(run.path), "--worker"],
                            capture_output=True, text=True, timeout=240, env=env)
    failed = run.read_events()[-1]
    assert result.returncode == 1 and failed["type"] == "failed", result.stdout[-2000:] + result.stderr[-2000:]
    assert "LORA_TUI_PLAN" in failed["reason"] and words in failed["reason"], failed["reason"]
    assert "Traceback" not in result.stdout + result.stderr
    assert not any(e["type"] == "step" for e in run.read_events())


# ------------------------------------------------------------------ item 7: bad numbers
@pytest.mark.parametrize("flags", [["--timeout", "-5"], ["--timeout", "0"], ["--timeout", "nan"], ["--batch", "0"],
                                   ["--peak-tflops", "-1"], ["--peak-tflops", "nan"], ["--arms", "ours,ours"]],
                         ids=lambda f: " ".join(f))
def test_bench_refuses_numbers_it_cannot_use(tmp_path, tiny_model_dir, hello_data, flags):
    """Issue 25 item 7: --timeout -5 / 0 / nan, --batch 0, --peak-tflops -1 / nan, --arms ours,ours were accepted."""
    result = _cli("bench", "--model", tiny_model_dir, f"data.train={hello_data}", "--arms", "ours", *flags,
                  env={"TMPDIR": str(tmp_path)})
    assert result.returncode == 2 and flags[0] in _one_line(result), result.stdout + result.stderr
    assert not list(tmp_path.glob("lora-tui-bench-*")), "an arm was started"


@pytest.mark.parametrize("wait", ["nan", "-5", "inf"])
def test_stop_wait_nan_or_negative_is_refused_and_kills_nothing(tmp_path, hello_data, wait):
    """Issue 25 item 7: `stop --wait nan` / `--wait -5` SIGKILLed the trainer at once."""
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    save_config(no_model_config(hello_data), run.config_path)
    proc = stubborn_trainer(run)
    try:
        result = _cli("stop", run.path, "--wait", wait)
        assert result.returncode == 2 and "--wait" in result.stderr and "seconds" in result.stderr, result.stderr
        assert proc.poll() is None, "the trainer was killed"
    finally:
        proc.kill()


def test_a_lock_file_that_is_a_fifo_is_named_with_the_fix(tmp_path, hello_data):
    """Issue 25 item 9: a FIFO as trainer.lock got "not seekable ... check permissions and free space"."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.mkfifo(run_dir / "trainer.lock")
    result = _cli("train", f"data.train={hello_data}", "data.validation=", "--run-dir", run_dir, "--detach", timeout=60)
    message = _one_line(result)
    assert result.returncode == 2 and "trainer.lock is a FIFO" in message and "Fix: `rm" in message, message
    assert "free space" not in message and sorted(p.name for p in run_dir.iterdir()) == ["trainer.lock"]
