"""The rows of `benchmarks/torture.py --only turn4`: issue 25's findings (nothing lost, nothing hangs, nothing
left running) and issue 24 item 10, each tried again as the adversary did, with its figure.

Not run on its own: torture.py passes itself (``t``: record, cli, timed, wait_state, overrides, ROOT, ENV,
mount_tmpfs, adapter_diff) to ``section``. Slow and heavy: under the shared lock, as torture.py is.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

LONG = "z" * 300


def section(t, model: Path, data: Path) -> None:
    for case in (overwrite_look_alike, lock_file_removed, modelfile_kept, kill_after_final_checkpoint,
                 finished_not_reopened, fifo_hangs, memory_bounds, bench_processes, hub_and_whole_disk,
                 tracebacks, hints, smaller):
        try:
            case(t, model, data)
        except Exception as exc:  # one broken case must not hide the others' rows
            t.record(f"turn4 {case.__name__}", False, f"the case itself failed: {type(exc).__name__}: {exc}"[:200])


def _py(t, code: str, timeout: float = 120, env: dict | None = None) -> tuple[int | None, float, float, str]:
    """(exit, peak RSS GiB, seconds, output) of a Python snippet (a hang is killed at ``timeout``)."""
    return t.timed([sys.executable, "-c", code], timeout=timeout) if env is None else \
        _timed_env(t, [sys.executable, "-c", code], env, timeout)


def _timed_env(t, cmd, env, timeout):
    """t.timed with ``env`` added: torture.py's children get t.ENV (not os.environ), so the variables go there
    (set in os.environ they never reached the child: the probe-cache rows wrote the user's own cache)."""
    saved = dict(t.ENV)
    t.ENV.update(env)
    try:
        return t.timed(cmd, timeout=timeout)
    finally:
        t.ENV.clear()
        t.ENV.update(saved)


def _tree(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(path.rglob("*"))}


def _finished(t, model, data, name: str, *extra: str) -> Path:
    run_dir = t.ROOT / name
    t.cli("train", *t.overrides(model, data, 4, 2), *extra, "--run-dir", run_dir, "--detach")
    t.wait_state(run_dir)
    return run_dir


# ----------------------------------------------------------------------------------------------- item 1
def overwrite_look_alike(t, model, data):
    folder = t.ROOT / "look-alike"
    (folder / "nested").mkdir(parents=True)
    (folder / "config.yaml").write_text("model:\n  name: mine\n")
    (folder / "status.json").write_text('{"state": "failed"}')
    (folder / "thesis.tex").write_text("\\chapter{Results}")
    (folder / "nested" / "data.csv").write_text("a,b\n1,2\n")
    before = _tree(folder)
    started = time.monotonic()
    out = t.cli("train", *t.overrides(model, data, 2, 0), "--run-dir", folder, "--overwrite", "--detach")
    t.record("25.1 --overwrite on config.yaml + status.json beside thesis.tex", out.returncode == 2
             and _tree(folder) == before, f"exit {out.returncode}, {'nothing deleted' if _tree(folder) == before else 'FILES LOST'}, "
                                          f"{time.monotonic() - started:.1f} s")
    run_dir = _finished(t, model, data, "overwrite-run")
    (run_dir / "notes.md").write_text("mine")
    out = t.cli("train", *t.overrides(model, data, 2, 0), "--run-dir", run_dir, "--overwrite", "--detach")
    t.record("25.1 --overwrite on a run with notes.md beside it", out.returncode == 2 and (run_dir / "notes.md").exists(),
             f"exit {out.returncode}: {out.stderr.strip()[:90]}")


# ----------------------------------------------------------------------------------------------- item 2
def lock_file_removed(t, model, data):
    from lora_tui.core.run.runs import RunDirectory

    for how in ("removed", "replaced"):
        run_dir = t.ROOT / f"lock-{how}"
        t.cli("train", *t.overrides(model, data, 4000, 0), "--run-dir", run_dir, "--detach")
        run = RunDirectory(run_dir)
        deadline = time.monotonic() + 300
        while not any(e["type"] == "step" for e in run.read_events()) and time.monotonic() < deadline:
            time.sleep(0.2)
        run.lock_path.unlink()
        if how == "replaced":
            run.lock_path.write_text("1")
        listed = [r["state"] for r in json.loads(t.cli("runs", "--dir", run_dir.parent, "--json").stdout)
                  if r["name"] == run_dir.name]
        resumed = t.cli("train", "--resume", run_dir, "--detach")
        stopped = t.cli("stop", run_dir, "--wait", "120")
        t.wait_state(run_dir)
        seqs = [e["seq"] for e in run.read_events()]
        starts = sum(e["type"] == "started" for e in run.read_events())
        ok = listed == ["running"] and resumed.returncode == 2 and "State: stopped" in stopped.stdout and \
            starts == 1 and len(seqs) == len(set(seqs))
        t.record(f"25.2 trainer.lock {how} mid-run: runs / --resume / stop", ok,
                 f"runs {listed}, --resume exit {resumed.returncode}, stop: {stopped.stdout.strip().splitlines()[-1][:40]}, "
                 f"{starts} trainer(s), {len(seqs) - len(set(seqs))} duplicate seqs")


# ----------------------------------------------------------------------------------------------- item 3
def modelfile_kept(t, model, data):
    run_dir = _finished(t, model, data, "modelfile-run")
    out_dir = t.ROOT / "modelfile-out"
    out_dir.mkdir()
    (out_dir / "Modelfile-q8_0").write_text("FROM llama3\nSYSTEM mine\n")
    out = t.cli("export", run_dir, "--gguf", "--out", out_dir / "new.gguf", "--no-check", "--overwrite")
    kept = (out_dir / "Modelfile-q8_0").read_text() == "FROM llama3\nSYSTEM mine\n"
    t.record("25.3 export --gguf --out DIR/new.gguf beside the user's Modelfile-q8_0 (even --overwrite)",
             out.returncode == 2 and kept, f"exit {out.returncode}, Modelfile {'kept' if kept else 'REPLACED'}")


# ----------------------------------------------------------------------------------------------- item 4
def kill_after_final_checkpoint(t, model, data):
    from lora_tui.core.run.runs import CHECKPOINT_MARKER, RunDirectory

    valid = t.ROOT / "big-valid.jsonl"
    valid.write_text(data.read_text() * 30)  # a final evaluation of seconds after checkpoint-4
    extra = [f"data.validation={valid}", "training.eval_steps=3", "training.scheduler=constant"]
    base = _finished(t, model, data, "final-base", *extra)
    run_dir = t.ROOT / "final-killed"
    t.cli("train", *t.overrides(model, data, 4, 2), *extra, "--run-dir", run_dir, "--detach")
    run = RunDirectory(run_dir)
    marker = run_dir / "checkpoints" / "checkpoint-4" / CHECKPOINT_MARKER
    deadline = time.monotonic() + 300
    while not marker.exists() and not run.adapter_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(run.read_status()["pid"], signal.SIGKILL)
    hit = not run.adapter_dir.exists()
    t.wait_state(run_dir, ("dead", "finished", "failed"))
    t.cli("train", "--resume", run_dir, "--detach")
    t.wait_state(run_dir)
    steps = max(e["step"] for e in run.read_events() if e["type"] == "step")
    diff = t.adapter_diff(base / "adapter", run_dir / "adapter")
    t.record("25.4 kill -9 after checkpoint-4 of 4, then --resume (constant lr)", hit and steps == 4 and diff == 0.0,
             f"{'window hit' if hit else 'window MISSED'}, last step {steps}/4, max abs diff vs uninterrupted {diff}")


def finished_not_reopened(t, model, data):
    base = _finished(t, model, data, "reopen-base")
    for damage in ("torn finished line", "empty events"):
        run_dir = t.ROOT / f"reopen-{damage.split()[0]}"
        subprocess.run(["cp", "-a", str(base), str(run_dir)], check=True)
        events = (run_dir / "events.jsonl").read_bytes()
        cut = events.rstrip(b"\n").rfind(b"\n") + 1 + 30
        (run_dir / "events.jsonl").write_bytes(events[:cut] if damage.startswith("torn") else b"")
        (run_dir / "status.json").write_bytes(b"\xff garbage")
        before = (run_dir / "adapter" / "adapter_model.safetensors").read_bytes()
        out = t.cli("train", "--resume", run_dir, "--detach")
        same = (run_dir / "adapter" / "adapter_model.safetensors").read_bytes() == before
        t.record(f"25.4 finished run, {damage} + garbage status.json: --resume", out.returncode == 2 and same,
                 f"exit {out.returncode}, adapter {'unchanged' if same else 'REWRITTEN'}: {out.stderr.strip()[:60]}")


# ----------------------------------------------------------------------------------------------- item 5
def fifo_hangs(t, model, data):
    run_dir = t.ROOT / "fifo-stop"
    t.cli("train", *t.overrides(model, data, 4000, 0), "--run-dir", run_dir, "--detach")
    time.sleep(5)
    os.mkfifo(run_dir / "stop_requested") if not (run_dir / "stop_requested").exists() else None
    started = time.monotonic()
    try:
        out = t.cli("stop", run_dir, "--wait", "30", timeout=240)
        t.record("25.5 stop --wait 30 with stop_requested a FIFO", "State: stopped" in out.stdout,
                 f"returned in {time.monotonic() - started:.1f} s: {out.stdout.strip().splitlines()[-1][:50]}")
    except subprocess.TimeoutExpired:
        t.record("25.5 stop --wait 30 with stop_requested a FIFO", False, "hung (240 s)")
    cache = t.ROOT / "fifo-cache"
    cache.mkdir()
    os.mkfifo(cache / "probe.json")
    run_dir = t.ROOT / "fifo-probe"
    started = time.monotonic()
    _timed_env(t, [sys.executable, "-m", "lora_tui", "train", *map(str, t.overrides(model, data, 2, 0)),
                   "training.probe=on", "--run-dir", str(run_dir), "--detach"], {"LORA_TUI_CACHE": str(cache)}, 120)
    state = t.wait_state(run_dir, timeout=400)
    t.record("25.5 the probe cache a FIFO (training.probe=on)", state == "finished" and (cache / "probe.json").is_file(),
             f"{state} in {time.monotonic() - started:.0f} s; cache now a regular file: {(cache / 'probe.json').is_file()}")


# ----------------------------------------------------------------------------------------------- item 6
def memory_bounds(t, model, data):
    lookup = ("from lora_tui.core.train import probe_cache as c; print(c.lookup('k')[1]); "
              "c.store('k', {'chosen': {'micro_batch': 2, 'grad_accum': 2, 'gradient_checkpointing': False}})")
    for kind in ("/dev/zero", "1 GB file"):
        cache = t.ROOT / f"cache-{kind.split()[0].strip('/').replace('/', '-')}"
        cache.mkdir()
        if kind == "/dev/zero":
            (cache / "probe.json").symlink_to("/dev/zero")
        else:
            with open(cache / "probe.json", "wb") as fh:
                fh.truncate(2**30)
        code, gib, seconds, _ = _py(t, lookup, env={"LORA_TUI_CACHE": str(cache)})
        size, link = (cache / "probe.json").stat().st_size, (cache / "probe.json").is_symlink()  # /dev/zero's size is 0
        t.record(f"25.6 probe cache {kind}: lookup + store", code == 0 and gib < 0.5 and size < 4096 and not link,
                 f"exit {code}, peak RSS {gib:.2f} GiB, {seconds:.1f} s, "
                 + ("still the link to /dev/zero" if link else f"rewritten to {size} bytes"))
    from lora_tui.core.run.runs import RunDirectory

    run = RunDirectory(t.ROOT / "stop-zero")
    run.path.mkdir()
    run.stop_path.symlink_to("/dev/zero")
    code, gib, seconds, _ = _py(t, f"from lora_tui.core.run.runs import RunDirectory; "
                                   f"RunDirectory({str(run.path)!r}).clear_stale_stop()")
    t.record("25.6 stop_requested -> /dev/zero in the trainer", code == 0 and gib < 0.5,
             f"exit {code}, peak RSS {gib:.2f} GiB, {seconds:.1f} s")
    run_dir = _finished(t, model, data, "big-adapter-config")
    with open(run_dir / "adapter" / "adapter_config.json", "wb") as fh:
        fh.write(b'{"peft_type": "LORA", "pad": "')
        fh.truncate(2**30)
    for command in (["chat", run_dir, "--prompt", "hi", "--max-new-tokens", "2"], ["merge", run_dir, t.ROOT / "m"],
                    ["export", run_dir, "--gguf", "--no-check"]):
        code, gib, seconds, tail = t.timed([sys.executable, "-m", "lora_tui", *map(str, command)])
        t.record(f"25.6 1 GB adapter_config.json: {command[0]}{' --gguf' if '--gguf' in command else ''}",
                 code == 2 and gib < 1.0 and "Traceback" not in tail, f"exit {code}, peak RSS {gib:.2f} GiB, {seconds:.1f} s")
    code, gib, seconds, tail = t.timed([sys.executable, "-m", "lora_tui", "train", "data.train=/", "--run-dir",
                                        str(t.ROOT / "slash"), "--detach"])
    t.record("25.6 data.train=/", code == 2 and not (t.ROOT / "slash").exists(),
             f"exit {code}, peak RSS {gib:.2f} GiB, {seconds:.1f} s")
    code, gib, seconds, tail = _timed_env(t, [sys.executable, "-m", "lora_tui", "train", *map(str, t.overrides(model, data, 2, 0)),
                                              "--run-dir", str(t.ROOT / "plan4096"), "--detach"],
                                          {"LORA_TUI_PLAN": '{"micro_batch": 4096}'}, 120)
    t.record("25.6 / 24.10 LORA_TUI_PLAN={\"micro_batch\":4096} in the environment", code == 2
             and not (t.ROOT / "plan4096").exists(), f"exit {code}, {seconds:.1f} s: {tail.strip()[:70]}")


# ----------------------------------------------------------------------------------------------- item 7
def _left(marker: str) -> list[tuple[int, str]]:
    """(pid, command line) of the live processes whose command line holds ``marker``."""
    import psutil

    found = [(p.pid, " ".join(p.info["cmdline"] or [])) for p in psutil.process_iter(["cmdline", "status"])
             if p.info["status"] != psutil.STATUS_ZOMBIE]
    return [(pid, cmd) for pid, cmd in found if marker in cmd]


def _sigint_default() -> None:
    """In the child: SIGINT as a terminal's Ctrl-C finds it. Started from a background job (nohup ... &), the
    torture inherits SIGINT ignored, and so would the bench or train: the SIGINT rows hung (the bench's 458 s)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def bench_processes(t, model, data):
    for how in ("Ctrl-C", "SIGTERM", "--timeout 30"):
        work = t.ROOT / f"bench-{how.split()[0].strip('-')}"
        work.mkdir()
        cmd = [sys.executable, "-m", "lora_tui", "bench", "--model", str(model), f"data.train={data}",
               "data.max_seq_len=64", "--arms", "ours", "--steps", "100000", "--device", "cpu"]
        cmd += ["--timeout", "30"] if how.startswith("--") else []
        bench = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 env={**t.ENV, "TMPDIR": str(work)}, start_new_session=True, preexec_fn=_sigint_default)
        deadline = time.monotonic() + 240
        while not any("trainer_main" in cmd for _, cmd in _left(str(work))) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(10)  # the trainer loading its model
        started = time.monotonic()
        if how == "Ctrl-C":
            os.killpg(bench.pid, signal.SIGINT)
        elif how == "SIGTERM":
            bench.send_signal(signal.SIGTERM)
        bench.communicate(timeout=600)
        ended = time.monotonic() - started
        left = _left(str(work))
        for pid, _ in left:
            os.kill(pid, signal.SIGKILL)
        folder = list(work.glob("lora-tui-bench-*"))
        t.record(f"25.7 bench then {how}: processes and temp folder left", not left and not folder,
                 f"exit {bench.returncode} after {ended:.1f} s, {len(left)} process(es) left, temp folder "
                 f"{'left' if folder else 'removed'}")
    for flags in (["--timeout", "-5"], ["--timeout", "0"], ["--timeout", "nan"], ["--batch", "0"],
                  ["--peak-tflops", "-1"], ["--peak-tflops", "nan"], ["--arms", "ours,ours"]):
        out = t.cli("bench", "--model", model, f"data.train={data}", "--arms", "ours", *flags)
        t.record(f"25.7 bench {' '.join(flags)}", out.returncode == 2, f"exit {out.returncode}: {out.stderr.strip()[:70]}")
    for wait in ("nan", "-5"):
        out = t.cli("stop", t.ROOT / "modelfile-run", "--wait", wait)
        t.record(f"25.7 stop --wait {wait}", out.returncode == 2, f"exit {out.returncode}: {out.stderr.strip()[-70:]}")


# ----------------------------------------------------------------------------------------------- item 8
def hub_and_whole_disk(t, model, data):
    env = {k: v for k, v in t.ENV.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")}
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "lora_tui", "validate", "no-such-org/no-such-data"], capture_output=True,
                         text=True, env=env, timeout=300)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    t.record("25.8 hub id, no network, no offline setting", out.returncode == 2 and len(lines) <= 1,
             f"exit {out.returncode} in {time.monotonic() - started:.1f} s, {len(lines)} line(s) on stderr")
    deep = t.ROOT / "a" / "b"
    deep.mkdir(parents=True)
    started = time.monotonic()
    out = t.cli("train", "data.train=../..", "--run-dir", "run", "--detach", cwd=deep)
    t.record("25.8 data.train=../.. (the torture root's parent)", out.returncode == 2,
             f"exit {out.returncode} in {time.monotonic() - started:.1f} s: {out.stderr.strip()[:70]}")


# ----------------------------------------------------------------------------------------------- item 9
def tracebacks(t, model, data):
    for args in (["validate", LONG], ["train", f"data.train={LONG}", "--detach"], ["train", "--run-dir", f"/tmp/{LONG}", "--detach"],
                 ["estimate", "--model", LONG], ["chat", LONG, "--prompt", "hi"], ["export", LONG], ["attach", LONG],
                 ["stop", LONG]):
        out = t.cli(*args)
        t.record(f"25.9 a 300-byte name: {' '.join(args)[:22]}", out.returncode == 2 and "Traceback" not in out.stderr
                 and len(out.stderr.strip().splitlines()) == 1, f"exit {out.returncode}, {len(out.stderr)} chars")
    base = _finished(t, model, data, "damaged-base")
    for damage in ("fake checkpoint marker", "garbage trainer_state.json"):
        run_dir = t.ROOT / f"damaged-{damage.split()[0]}"
        subprocess.run(["cp", "-a", str(base), str(run_dir)], check=True)
        subprocess.run(["rm", "-r", str(run_dir / "adapter")], check=True)
        (run_dir / "status.json").write_text('{"state": "running", "step": 4}')
        if damage.startswith("fake"):
            (run_dir / "checkpoints" / "checkpoint-9").mkdir()
            (run_dir / "checkpoints" / "checkpoint-9" / "lora_tui_complete").write_text("9")
        else:
            (run_dir / "checkpoints" / "checkpoint-4" / "trainer_state.json").write_text("{not json")
        out = t.cli("train", "--resume", run_dir, "--detach")
        state = t.wait_state(run_dir)
        t.record(f"25.9 --resume past a {damage}", out.returncode == 0 and state == "finished"
                 and "is damaged" in out.stdout, f"exit {out.returncode}, {state}: {out.stdout.strip()[:80]}")
    fifo_run = t.ROOT / "fifo-lock"
    fifo_run.mkdir()
    os.mkfifo(fifo_run / "trainer.lock")
    out = t.cli("train", *t.overrides(model, data, 2, 0), "--run-dir", fifo_run, "--detach", timeout=60)
    t.record("25.9 trainer.lock a FIFO", out.returncode == 2 and "FIFO" in out.stderr, out.stderr.strip()[:100])
    small = t.ROOT / "export-small"
    why = t.mount_tmpfs(small, "10m")
    if why:
        t.record("25.9 full disk during zip / merge / gguf", None, f"skipped: {why}")
        return
    try:
        filler = small / "filler"
        with open(filler, "wb") as fh:
            st = os.statvfs(small)
            fh.write(b"\0" * (st.f_bavail * st.f_frsize - 64 * 1024))
        for args in (["export", base, "--zip", "--out", small / "x.zip"], ["merge", base, small / "m", "--no-check"],
                     ["export", base, "--gguf", "--out", small / "x.gguf", "--no-check"]):
            out = t.cli(*args)
            left = sorted(p.name for p in small.iterdir() if p.name != "filler")
            t.record(f"25.9 full disk during {args[0]} {args[2] if args[0] == 'export' else ''}", out.returncode == 2
                     and "disk full" in out.stderr and "Traceback" not in out.stderr and not left,
                     f"exit {out.returncode}, partial files {left or 'none'}: {out.stderr.strip()[:60]}")
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)


# ----------------------------------------------------------------------------------------------- item 10
def hints(t, model, data):
    odd = t.ROOT / "a $(touch PWNED) b"
    odd.mkdir()
    run_dir = odd / "run"
    t.cli("train", *t.overrides(model, data, 4, 2), "--run-dir", run_dir, "--detach")
    t.wait_state(run_dir)
    shown = t.cli("export", run_dir, "--gguf", "--no-check").stdout
    pasted = [line.split(":", 1)[1].strip() for line in shown.splitlines() if line.strip().startswith(("Ollama:", "llama.cpp:"))]
    for line in pasted:
        subprocess.run(["bash", "-c", f"llama-cli() {{ :; }}; ollama() {{ :; }}; {line}"], cwd=t.ROOT, capture_output=True)
    t.record("25.10 export hints pasted into bash ($(touch PWNED) in the path)", pasted and not list(t.ROOT.rglob("PWNED")),
             f"{len(pasted)} hints pasted, PWNED {'created' if list(t.ROOT.rglob('PWNED')) else 'not created'}")
    run_dir = t.ROOT / "x\nSYSTEM evil"
    t.cli("train", *t.overrides(model, data, 2, 0), "--run-dir", run_dir, "--detach")
    t.wait_state(run_dir)
    t.cli("export", run_dir, "--gguf", "--no-check")
    modelfiles = list((run_dir / "gguf").glob("Modelfile-*"))
    injected = any(line.startswith("SYSTEM") for m in modelfiles for line in m.read_text().splitlines())
    t.record("25.10 run name with a newline: Modelfile lines", modelfiles and not injected,
             f"{len(modelfiles)} Modelfile(s), SYSTEM line {'INJECTED' if injected else 'absent'}")
    out = t.cli("train", *t.overrides(model, data, 2, 0), "--run-dir=-rf", "--detach", cwd=t.ROOT)
    hint = next((line.split(":", 1)[1].strip() for line in out.stdout.splitlines() if "follow:" in line), "")
    t.record("25.10 a run named -rf: its follow hint", hint and shlex.split(hint)[2] == "./-rf", hint)
    listed = t.cli("runs", "--dir", t.ROOT).stdout
    t.record("25.10 runs table with a newline in a run name", "x?SYSTEM evil" in listed
             and not any(line.startswith("SYSTEM") for line in listed.splitlines()), f"{len(listed.splitlines())} lines")


# ----------------------------------------------------------------------------------------------- item 11
def smaller(t, model, data):
    rows = "".join(f"q{i},a{i}\n" for i in range(303)).encode()
    head = t.ROOT / "nul-head.csv"
    head.write_bytes(b"\0" * 3072 + b"instruction,output\n" + rows)
    out = t.cli("validate", head)
    t.record("25.11 NUL block before a CSV header", "303 read, 303 valid" in out.stdout and "\0" not in out.stdout,
             next((line for line in out.stdout.splitlines() if line.startswith("Rows")), "?"))
    cut = rows.index(b"q150,")
    hole = t.ROOT / "nul-hole.csv"
    hole.write_bytes(b"instruction,output\n" + rows[:cut + 3] + b"\0" * 4096 + rows[cut + 67:])
    out = t.cli("validate", hole)
    t.record("25.11 NUL block inside a CSV", "nul_bytes" in out.stdout,
             next((line for line in out.stdout.splitlines() if line.startswith("Rows")), "?"))
    array = json.dumps([{"instruction": f"q{i}", "output": f"a{i}"} for i in range(10)], indent=1)
    at = array.index("{", array.index('"a4"'))
    path = t.ROOT / "nul.json"
    path.write_text(array[:at] + "\0" * 100 + array[at:])
    out = t.cli("validate", path)
    t.record("25.11 NUL block between .json array elements", "10 read, 10 valid" in out.stdout,
             next((line for line in out.stdout.splitlines() if line.startswith("Rows")), "?"))
    small = t.ROOT / "first-save"
    why = t.mount_tmpfs(small, "10m")
    if why:
        t.record("25.11 full disk: refused before step 1", None, f"skipped: {why}")
    else:
        try:
            started = time.monotonic()
            t.cli("train", *t.overrides(model, data, 8, 3), "--run-dir", small / "run", "--detach")
            state = t.wait_state(small / "run")
            from lora_tui.core.run.runs import RunDirectory

            steps = sum(e["type"] == "step" for e in RunDirectory(small / "run").read_events())
            t.record("25.11 first checkpoint cannot fit: refused before step 1", state == "failed" and steps == 0,
                     f"{state} after {steps} steps, {time.monotonic() - started:.0f} s")
        finally:
            subprocess.run(["umount", "-l", str(small)], capture_output=True)
    run_dir = t.ROOT / "sigint"
    proc = subprocess.Popen([sys.executable, "-m", "lora_tui", "train", *map(str, t.overrides(model, data, 4000, 0)),
                             "--run-dir", str(run_dir)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=t.ENV, preexec_fn=_sigint_default)
    time.sleep(20)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    t.record("25.11 SIGINT without a terminal says why it stops", "SIGINT (Ctrl-C) without a terminal" in out,
             f"exit {proc.returncode}")
    base = _finished(t, model, data, "deleted-adapter")
    subprocess.run(["rm", "-r", str(base / "adapter")], check=True)
    out = t.cli("export", base)
    t.record("25.11 export of a run whose adapter was deleted", "missing" in out.stdout and "not saved yet" not in out.stdout,
             next((line for line in out.stdout.splitlines() if line.startswith("Adapter:")), "?")[:90])
