"""Torture run for issue 10: what an adversary does to lora-tui, and whether it holds.

    flock /tmp/lora_tui_heavy.lock python3 benchmarks/torture.py [--quick] [--only NAME ...]

Sections (each prints PASS/FAIL/SKIP lines with a figure, then a table at the end):
  kill     kill -9 at random steps and during checkpoint saves, then --resume: the final
           adapter must be bit-identical to an uninterrupted run's
  disk     ENOSPC on a small tmpfs (mounted as root; skipped with the reason otherwise):
           a checkpoint that cannot fit, and a disk filled by another process mid-run;
           the run ends `failed` with "disk full", no temp files, resume works after freeing
  race     concurrent launches (4 x `train --run-dir SAME`) and resumes (3 x `--resume`)
  corrupt  damaged run directories for runs, attach, chat, export and the wizard's --run
  hostile  hostile files for validate and train, with validate's peak RSS against the bound
           (RSS_BOUND_GIB), including a 1 GB file
  inputs   hostile configs (/dev/zero, FIFO, YAML alias bomb, 5 MiB, binary), a NUL block before
           good rows, bad data for train (refused before a run dir), a FIFO as --check-prompts
           (issue 16 items 2, 3, 6, 8): exit, peak RSS, time, stderr size
  runs     issue 16: --overwrite on folders that are not runs, merge/zip --overwrite, a garbage
           status.json on a finished run, changed lora.targets on --resume, no room for the adapter,
           absurd step counts, Ctrl-C/SIGTERM history, a torn events line, quoted hints
  turn4    issue 25 (and 24 item 10), in benchmarks/torture_turn4.py: a look-alike folder and --overwrite,
           trainer.lock removed mid-run, the Modelfile beside --out, kill -9 after the final checkpoint,
           a torn finished run, FIFOs as stop request and probe cache, /dev/zero and 1 GB files, bench
           and its processes, hub ids with no network, 300-byte names, full disks, pasted hints, NUL blocks

Slow (minutes) and heavy: run it under the shared lock. Not part of pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RSS_BOUND_GIB = 1.5  # documented in the README: peak RSS of `lora-tui validate`, tokenizer included
ROOT = Path(tempfile.mkdtemp(prefix="lora-torture-"))
RESULTS: list[tuple[str, str, str]] = []
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def record(test: str, ok: bool | None, figure: str) -> None:
    result = "SKIP" if ok is None else ("PASS" if ok else "FAIL")
    RESULTS.append((test, result, figure))
    print(f"{result:4}  {test}: {figure}", flush=True)


def cli(*args, timeout=300, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lora_tui", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=ENV, cwd=cwd)


def peak_rss(cmd: list[str], timeout=1800) -> tuple[int, float, str]:
    """(exit code, peak RSS GiB of the command, its stderr tail), measured in a fresh wrapper process."""
    probe = ("import resource,subprocess,sys,json;"
             "p=subprocess.run(json.loads(sys.argv[1]),capture_output=True,text=True);"
             "print(json.dumps([p.returncode,resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
             "(p.stderr+p.stdout)[-600:]]))")
    out = subprocess.run([sys.executable, "-c", probe, json.dumps(cmd)], capture_output=True, text=True,
                         timeout=timeout, env=ENV)
    code, kib, tail = json.loads(out.stdout)
    return code, kib / 2**20, tail


# ----------------------------------------------------------------------------------- fixtures
def tiny_model() -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from lora_tui.core.model.embedded import ensure_embedded_model

    out = ROOT / "tiny"
    tok = AutoTokenizer.from_pretrained(ensure_embedded_model())
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def train_data() -> Path:
    path = ROOT / "train.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                          {"role": "assistant", "content": f"Ahoy! {i} plus {i} is {2 * i}."}]} for i in range(24)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def overrides(model: Path, data: Path, steps: int = 30, save: int = 3) -> list[str]:
    return [f"model.name={model}", f"data.train={data}", "data.validation=", "data.max_seq_len=64",
            "training.micro_batch=4", "training.grad_accum=1", "training.learning_rate=0.01",
            "training.eval_steps=0", f"training.max_steps={steps}", f"training.save_steps={save}",
            "lora.r=4", "lora.alpha=8"]


def wait_state(run_dir: Path, states=("finished", "failed", "stopped", "dead"), timeout=300) -> str:
    from lora_tui.core.run.runs import RunDirectory

    run, deadline = RunDirectory(run_dir), time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = run.state()
        if state in states:
            return state
        time.sleep(0.05)
    return "timeout"


def adapter_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    x, y = load_file(str(a / "adapter_model.safetensors")), load_file(str(b / "adapter_model.safetensors"))
    if x.keys() != y.keys():
        return float("inf")
    return max(float((x[k].float() - y[k].float()).abs().max()) for k in x)


# ----------------------------------------------------------------------------------- sections
def section_kill(model: Path, data: Path, trials: int) -> None:
    from lora_tui.core.run.runs import CHECKPOINT_MARKER, RunDirectory

    base = ROOT / "kill-baseline"
    cli("train", *overrides(model, data), "--run-dir", base, "--detach")
    if wait_state(base) != "finished":
        record("kill -9: baseline run", False, "baseline did not finish")
        return
    rng = random.Random(10)
    for trial in range(trials):
        during_save = trial % 2 == 1
        run_dir = ROOT / f"kill-{trial}"
        run = RunDirectory(run_dir)
        cli("train", *overrides(model, data), "--run-dir", run_dir, "--detach")
        kills, deadline = 0, time.monotonic() + 600
        while kills < 2 and time.monotonic() < deadline and run.state() not in ("finished", "failed"):
            if during_save:  # a checkpoint folder without its marker: the save is in progress
                target = lambda: any(not (c / CHECKPOINT_MARKER).exists() for c in run.checkpoints_dir.glob("checkpoint-*"))
            else:
                goal = rng.randint(2, 27)
                target = lambda g=goal: (run.read_status().get("step") or 0) >= g
            while time.monotonic() < deadline and not target() and run.state() not in ("finished", "failed"):
                time.sleep(0.005)
            pid = run.read_status().get("pid")
            if run.state() in ("finished", "failed") or not pid:
                break
            try:
                os.kill(pid, signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                break
            wait_state(run_dir, ("dead", "finished", "failed"), 60)
            if run.state() == "dead":
                resumed = cli("train", "--resume", run_dir, "--detach")
                if resumed.returncode:
                    record(f"kill -9 trial {trial}", False, resumed.stderr.strip()[-200:])
                    break
        state = wait_state(run_dir)
        diff = adapter_diff(base / "adapter", run_dir / "adapter") if state == "finished" else float("nan")
        what = "during a save" if during_save else "at random steps"
        record(f"kill -9 {what} (trial {trial}, {kills} kills) then --resume", state == "finished" and diff == 0.0,
               f"max abs diff vs uninterrupted adapter {diff}")


def mount_tmpfs(path: Path, size: str) -> str | None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True)
    return None if done.returncode == 0 else (done.stderr.strip() or "mount failed")


def section_disk(model: Path, data: Path) -> None:
    from lora_tui.core.run.runs import RunDirectory

    small = ROOT / "disk-small"
    why = mount_tmpfs(small, "10m")
    if why:
        record("ENOSPC on a small tmpfs", None, f"skipped: cannot mount tmpfs ({why}); no loop device tried")
        return
    try:
        run_dir = small / "run"
        cli("train", *overrides(model, data, 8, 2), "--run-dir", run_dir, "--detach")
        state = wait_state(run_dir)
        run = RunDirectory(run_dir)
        last = (run.read_events() or [{}])[-1]
        litter = [p.name for p in run_dir.iterdir() if p.name.startswith(".")]
        record("checkpoint that cannot fit (10 MB tmpfs)", state == "failed" and "disk full" in str(last.get("reason"))
               and not litter, f"{state}: {last.get('reason')}; temp files {litter or 'none'}")
        subprocess.run(["mount", "-o", "remount,size=100m", str(small)], check=True)
        resumed = cli("train", "--resume", run_dir, "--detach")
        record("--resume after freeing space", resumed.returncode == 0 and wait_state(run_dir) == "finished",
               resumed.stdout.strip().splitlines()[0] if resumed.stdout.strip() else resumed.stderr.strip()[-200:])
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)

    filled = ROOT / "disk-filled"
    mount_tmpfs(filled, "40m")
    try:
        run_dir = filled / "run"
        cli("train", *overrides(model, data, 200, 5), "--run-dir", run_dir, "--detach")
        run = RunDirectory(run_dir)
        deadline = time.monotonic() + 300
        while not run.last_checkpoint() and time.monotonic() < deadline:
            time.sleep(0.1)
        fh = open(filled / "filler", "wb", buffering=0)  # another process takes every free byte
        try:
            while True:
                fh.write(b"\0" * 2**16)
        except OSError:
            pass
        finally:
            try:
                fh.close()
            except OSError:
                pass
        state = wait_state(run_dir, timeout=300)
        last = (run.read_events() or [{}])[-1]
        kept = run.last_checkpoint()
        litter = [p.name for p in run_dir.iterdir() if p.name.startswith(".")]
        record("disk filled by another process mid-run", state == "failed" and "disk full" in str(last.get("reason"))
               and kept is not None and not litter,
               f"{state}: {str(last.get('reason'))[:90]}; kept {kept.name if kept else None}; temp {litter or 'none'}")
        (filled / "filler").unlink()
        resumed = cli("train", "--resume", run_dir, "--detach")
        stopped = cli("stop", run_dir, "--wait", "120") if resumed.returncode == 0 else resumed
        record("--resume after the filler is removed", resumed.returncode == 0 and "State: stopped" in stopped.stdout,
               (resumed.stdout.strip().splitlines() or [resumed.stderr.strip()[-200:]])[0])
    finally:
        subprocess.run(["umount", "-l", str(filled)], capture_output=True)


def section_race(model: Path, data: Path) -> None:
    target = ROOT / "race"
    procs = [subprocess.Popen([sys.executable, "-m", "lora_tui", "train", *overrides(model, data, 6, 0),
                               f"lora.r={2 + 2 * i}", "--run-dir", str(target), "--detach"], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    outs = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    winners = [i for i, (_, _, rc) in enumerate(outs) if rc == 0]
    reasons = {err.strip().splitlines()[-1][:70] for _, err, rc in outs if rc}
    from lora_tui.core.config import load_config

    r = load_config(target / "config.yaml").lora.r if (target / "config.yaml").exists() else None
    record("4 x train --run-dir SAME at once", len(winners) == 1 and r == 2 + 2 * winners[0],
           f"winners {winners}, config r={r}, losers said: {sorted(reasons)}")
    wait_state(target)
    resumable = ROOT / "race-resume"
    cli("train", *overrides(model, data, 400, 2), "--run-dir", resumable, "--detach")
    time.sleep(8)
    cli("stop", resumable, "--wait", "120")
    procs = [subprocess.Popen([sys.executable, "-m", "lora_tui", "train", "--resume", str(resumable), "--detach"],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    codes = [p.wait(300) for p in procs]
    record("3 x train --resume at once", codes.count(0) == 1, f"exit codes {codes}")
    cli("stop", resumable, "--wait", "120")


def section_corrupt(model: Path, data: Path) -> None:
    base = ROOT / "corrupt-base"
    cli("train", *overrides(model, data, 4, 2), "--run-dir", base, "--detach")
    wait_state(base)
    damages = {
        "status.json garbage": lambda d: (d / "status.json").write_bytes(b"\xff\x00{{"),
        "status.json a folder": lambda d: ((d / "status.json").unlink(), (d / "status.json").mkdir()),
        "config.yaml garbage": lambda d: (d / "config.yaml").write_text("model: [\n - : :"),
        "config.yaml empty": lambda d: (d / "config.yaml").write_text(""),
        "events.jsonl torn + garbage": lambda d: (d / "events.jsonl").open("ab").write(b'{"seq": 99, "ty\x00\xff'),
        "events.jsonl 20 MB one line": lambda d: (d / "events.jsonl").write_bytes(b"x" * (20 * 2**20)),
        "adapter/ deleted": lambda d: subprocess.run(["rm", "-rf", str(d / "adapter")]),
        "checkpoint marker missing": lambda d: [m.unlink() for m in d.glob("checkpoints/*/lora_tui_complete")],
    }
    for name, damage in damages.items():
        run_dir = ROOT / f"corrupt-{len(RESULTS)}"
        subprocess.run(["cp", "-a", str(base), str(run_dir)], check=True)
        damage(run_dir)
        bad = []
        for args in (["runs", "--dir", ROOT], ["attach", run_dir], ["attach", run_dir, "--no-follow"],
                     ["export", run_dir], ["chat", run_dir, "--prompt", "hi", "--max-new-tokens", "4"]):
            try:
                out = cli(*args, timeout=120)
                if "Traceback" in out.stdout + out.stderr:
                    bad.append(f"{args[0]}: traceback")
            except subprocess.TimeoutExpired:
                bad.append(f"{args[0]}: hung")
        wizard = subprocess.run(["timeout", "-s", "INT", "15", "script", "-qec",
                                 f"{sys.executable} -m lora_tui --run {run_dir}", "/dev/null"],
                                capture_output=True, text=True, env={**ENV, "TERM": "xterm"})
        if "Traceback" in wizard.stdout + wizard.stderr:
            bad.append("wizard --run: traceback")
        record(f"corrupted run: {name}", not bad, "; ".join(bad) or "runs/attach/export/chat/wizard answered")


def section_hostile(model: Path, data: Path, big_gb: float) -> None:
    files = ROOT / "hostile"
    files.mkdir()
    cases: dict[str, Path] = {}
    cases["10 MB strings (31 MB JSONL)"] = files / "strings.jsonl"
    with open(cases["10 MB strings (31 MB JSONL)"], "w") as fh:
        for _ in range(3):
            fh.write(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                              {"role": "assistant", "content": "word " * (2 * 2**20)}]}) + "\n")
    cases["200 MB CSV field"] = files / "field.csv"
    with open(cases["200 MB CSV field"], "w") as fh:
        fh.write('text\n"' + "y" * (200 * 2**20) + '"\nok\n')
    cases["1 GB line without newline"] = files / "noline.jsonl"
    with open(cases["1 GB line without newline"], "wb") as fh:
        fh.write(b'{"text": "')
        for _ in range(1024):
            fh.write(b"z" * 2**20)
    cases["lone surrogate + 100k nesting"] = files / "hostile.jsonl"
    cases["lone surrogate + 100k nesting"].write_text(
        '{"text": "\\ud800"}\n{"text": ' + "[" * 100_000 + "]" * 100_000 + '}\n{"text": "ok"}\n')
    big = files / "big.jsonl"
    # ~256 KB rows: every byte is read, parsed, checked and (clipped to max_seq_len) tokenised.
    row = json.dumps({"messages": [{"role": "user", "content": "Tell me about item %d. " + "context " * 60},
                                   {"role": "assistant", "content": "It is a fine item. " * 13_500}]}) + "\n"
    with open(big, "w") as fh:
        written, i = 0, 0
        while written < big_gb * 2**30:
            line = row.replace("%d", str(i))
            fh.write(line)
            written += len(line)
            i += 1
    cases[f"{big_gb:g} GB JSONL, {i:,} rows"] = big
    fifo = files / "fifo.jsonl"
    os.mkfifo(fifo)
    cases["FIFO"] = fifo
    cases["/dev/zero"] = Path("/dev/zero")
    for name, path in cases.items():
        started = time.monotonic()
        try:
            code, gib, tail = peak_rss([sys.executable, "-m", "lora_tui", "validate", str(path),
                                        "--max-seq-len", "256"], timeout=3600)
        except subprocess.TimeoutExpired:
            record(f"validate {name}", False, "hung (over the time limit)")
            continue
        ok = gib < RSS_BOUND_GIB and "Traceback" not in tail and code in (0, 1, 2)
        record(f"validate {name}", ok, f"exit {code}, peak RSS {gib:.2f} GiB (bound {RSS_BOUND_GIB}), "
                                       f"{time.monotonic() - started:.0f} s")
    for name in ("lone surrogate + 100k nesting", "10 MB strings (31 MB JSONL)"):
        run_dir = ROOT / f"hostile-train-{len(RESULTS)}"
        mixed = files / f"mixed-{len(RESULTS)}.jsonl"
        mixed.write_bytes(cases[name].read_bytes() + data.read_bytes())
        out = cli("train", *overrides(model, mixed, 4, 0), "--run-dir", run_dir)
        state = wait_state(run_dir)
        record(f"train on {name} (+ good rows)", state == "finished" and "Traceback" not in out.stdout + out.stderr,
               f"{state}, exit {out.returncode}")


def timed(cmd: list[str], timeout: float = 120) -> tuple[int | None, float, float, str]:
    """(exit code or None when it hung, peak RSS GiB, seconds, stderr) of a command; a hang is killed."""
    started = time.monotonic()
    try:
        code, gib, tail = peak_rss(cmd, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, 0.0, time.monotonic() - started, ""
    return code, gib, time.monotonic() - started, tail


def section_inputs(model: Path, data: Path) -> None:
    files = ROOT / "inputs"
    files.mkdir()
    fifo = files / "fifo.yaml"
    os.mkfifo(fifo)
    levels = ["&a [lol,lol,lol,lol,lol,lol,lol,lol,lol]"] + \
        [f"&{n} [" + ",".join([f"*{p}"] * 9) + "]" for p, n in zip("abcdefgh", "bcdefghi")]
    bomb = files / "bomb.yaml"
    bomb.write_text("model:\n  name: [" + ", ".join(levels) + "]\n")
    big = files / "big.yaml"
    big.write_bytes(b"# padding\n" * (500 * 1024))
    garbage = files / "garbage.yaml"
    garbage.write_bytes(os.urandom(64 * 1024))
    configs = {"/dev/zero": Path("/dev/zero"), "FIFO": fifo, f"alias bomb ({bomb.stat().st_size} bytes)": bomb,
               "5 MiB config": big, "64 KiB random bytes": garbage}
    for name, path in configs.items():
        for command in (["train", path, "--print-config"], ["estimate", path]):
            code, gib, seconds, tail = timed([sys.executable, "-m", "lora_tui", *map(str, command)])
            lines = [line for line in tail.splitlines() if line.strip()]
            ok = code == 2 and len(lines) == 1 and "Traceback" not in tail
            record(f"config {name}: {command[0]}", ok, f"exit {code}, peak RSS {gib:.2f} GiB, {seconds:.1f} s, "
                                                      f"stderr {len(tail)} chars")
    zeroed = files / "zeroed.jsonl"
    zeroed.write_bytes(b"\x00" * 2048 + b"".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}).encode()
                                                  + b"\n" for i in range(303)))
    code, gib, seconds, tail = timed([sys.executable, "-m", "lora_tui", "validate", str(zeroed)])
    out = cli("validate", zeroed).stdout
    record("validate 2 KiB NUL block + 303 rows", "303 read, 303 valid" in out and "iconv" not in out,
           f"exit {code}, {out.splitlines()[2].split(None, 1)[1] if len(out.splitlines()) > 2 else '?'}, "
           f"peak RSS {gib:.2f} GiB, {seconds:.1f} s")
    field = files / "field.csv"
    with open(field, "w") as fh:
        fh.write('instruction,output\nq1,a1\n"' + "y" * (200 * 2**20) + '",a2\nq3,a3\n')
    code, gib, seconds, tail = timed([sys.executable, "-m", "lora_tui", "validate", str(field)], timeout=900)
    out = cli("validate", field, timeout=900).stdout
    rows = out.splitlines()[2].split(None, 1)[1] if len(out.splitlines()) > 2 else "?"
    record("validate 200 MB CSV field: counts", rows.startswith("3 read, 2 valid, 1 errors"),
           f"{rows}, peak RSS {gib:.2f} GiB, {seconds:.1f} s")
    bad: dict[str, Path] = {"empty file": files / "empty.jsonl", "empty folder": files / "empty_dir",
                            "random bytes": files / "random.jsonl", "EIO on read": files / "eio.jsonl"}
    bad["empty file"].write_bytes(b"")
    bad["empty folder"].mkdir()
    bad["random bytes"].write_bytes(os.urandom(256 * 1024))
    bad["EIO on read"].symlink_to("/proc/self/mem")
    for name, path in bad.items():
        run_dir = files / f"run-{name.replace(' ', '-')}"
        started = time.monotonic()
        out = cli("train", *overrides(model, path, 2, 0), "--run-dir", run_dir, "--detach")
        record(f"train on {name}", out.returncode == 2 and not run_dir.exists() and "Traceback" not in out.stderr,
               f"exit {out.returncode}, run dir {'left' if run_dir.exists() else 'not created'}, "
               f"{time.monotonic() - started:.1f} s")
    prompts = files / "prompts.txt"
    os.mkfifo(prompts)
    probe = ("import sys;from types import SimpleNamespace;from lora_tui.core.export.check import check_data\n"
             "try: check_data(SimpleNamespace(run=None), sys.argv[1], 3, 3)\nexcept ValueError as e: print(e)")
    started = time.monotonic()
    try:
        out = subprocess.run([sys.executable, "-c", probe, str(prompts)], capture_output=True, text=True, timeout=60)
        record("--check-prompts FIFO", "FIFO" in out.stdout, f"{time.monotonic() - started:.1f} s")
    except subprocess.TimeoutExpired:
        record("--check-prompts FIFO", False, "hung")


# ----------------------------------------------------------------------------------- issue 16: runs and exports
def _user_folder(path: Path) -> dict[str, bytes]:
    path.mkdir(parents=True, exist_ok=True)
    (path / "thesis.tex").write_text("\\chapter{Results}")
    (path / "notes").mkdir(exist_ok=True)
    (path / "notes" / "ideas.md").write_text("- try r=32")
    return _tree(path)


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(path.rglob("*"))}


def case_overwrite_non_run(model: Path, data: Path) -> None:
    """`train --run-dir X --overwrite` on a folder of someone's work, on `.` and on $HOME: refused, nothing lost."""
    folder, home = ROOT / "overwrite-work", ROOT / "overwrite-home"
    before, home_before = _user_folder(folder), _user_folder(home)
    for what, run_dir in (("a folder of files", folder), (".", Path(".")), ("$HOME", home)):
        started = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "lora_tui", "train", *overrides(model, data, 2, 0), "--run-dir",
                              str(run_dir), "--overwrite"], capture_output=True, text=True, timeout=120,
                             cwd=folder, env={**ENV, "HOME": str(home)})
        kept = _tree(folder) == before and _tree(home) == home_before
        one_line = len(out.stderr.strip().splitlines()) == 1
        record(f"train --overwrite on {what} (not a run)", out.returncode == 2 and kept and one_line
               and "--overwrite to replace" not in out.stderr,
               f"exit {out.returncode}, {'nothing deleted' if kept else 'FILES LOST'}, "
               f"{time.monotonic() - started:.1f} s: {out.stderr.strip()[:90]}")


def case_finished_run(model: Path, data: Path) -> Path:
    run_dir = ROOT / "issue16-finished"
    cli("train", *overrides(model, data, 4, 2), "--run-dir", run_dir, "--detach")
    wait_state(run_dir)
    return run_dir


def case_export_overwrite(run_dir: Path) -> None:
    """merge --overwrite into a user folder, --zip --overwrite over a PDF, zip / push of a checkpoint path."""
    import zipfile

    folder = ROOT / "merge-work"
    before = _user_folder(folder)
    out = cli("merge", run_dir, folder, "--overwrite", "--no-check")
    record("merge --overwrite into a folder of files", out.returncode == 2 and _tree(folder) == before,
           f"exit {out.returncode}: {out.stderr.strip()[:90]}")
    pdf = ROOT / "thesis.pdf"
    pdf.write_bytes(b"%PDF-1.7 my thesis")
    out = cli("export", run_dir, "--zip", "--out", pdf, "--overwrite")
    record("export --zip --overwrite over a PDF", out.returncode == 2 and pdf.read_bytes() == b"%PDF-1.7 my thesis",
           f"exit {out.returncode}: {out.stderr.strip()[:90]}")
    checkpoint = sorted((run_dir / "checkpoints").glob("checkpoint-*"))[-1]
    target = ROOT / "checkpoint.zip"
    out = cli("export", checkpoint, "--zip", "--out", target)
    names = sorted(n.split("/", 1)[1] for n in zipfile.ZipFile(target).namelist()) if target.exists() else []
    leaked = [n for n in names if n.endswith((".pt", ".pth", ".bin")) or n in ("trainer_state.json", "lora_tui_complete")]
    record("export --zip of a checkpoint path", out.returncode == 0 and names and not leaked,
           f"{len(names)} files ({target.stat().st_size / 2**20:.1f} MiB), trainer state left out: "
           f"{'yes' if not leaked else leaked}" if target.exists() else out.stderr.strip()[:120])


def case_garbage_status(run_dir: Path) -> None:
    """A finished run whose status.json is garbage: runs, attach, --resume read the events."""
    damaged = ROOT / "issue16-garbage-status"
    subprocess.run(["cp", "-a", str(run_dir), str(damaged)], check=True)
    (damaged / "status.json").write_bytes(b"\xff\x00{{ garbage")
    before = {k: v for k, v in _tree(damaged).items() if k != "trainer.lock"}
    listed = cli("runs", "--dir", ROOT).stdout
    line = next((l for l in listed.splitlines() if l.startswith(damaged.name)), "")
    attach = cli("attach", damaged, timeout=60)
    resume = cli("train", "--resume", damaged)
    after = {k: v for k, v in _tree(damaged).items() if k != "trainer.lock"}
    ok = ("finished" in line and resume.returncode == 2 and "already finished" in resume.stderr
          and "--resume" not in attach.stdout and after == before)
    record("finished run, garbage status.json: runs / attach / --resume", ok,
           f"runs: {' '.join(line.split()[1:3])}; attach exit {attach.returncode}; --resume exit {resume.returncode}, "
           f"run dir {'unchanged' if after == before else 'CHANGED'}")


def case_targets_changed(model: Path, data: Path) -> None:
    """Stop a run after a checkpoint, change lora.targets in config.yaml (a string), --resume."""
    import re

    run_dir = ROOT / "issue16-targets"
    cli("train", *overrides(model, data, 400, 2), "--run-dir", run_dir, "--detach")
    from lora_tui.core.run.runs import RunDirectory

    run, deadline = RunDirectory(run_dir), time.monotonic() + 300
    while run.last_checkpoint() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    cli("stop", run_dir, "--wait", "120")
    for targets in ("qv", "q_proj,v_proj"):
        text = run.config_path.read_text()
        run.config_path.write_text(re.sub(r"(?m)^  targets: .*$", f"  targets: {targets}", text))
        started = time.monotonic()
        out = cli("train", "--resume", run_dir)
        record(f"--resume after lora.targets -> {targets}", out.returncode == 2 and "lora.targets" in out.stderr
               and run.state() == "stopped", f"exit {out.returncode}, {time.monotonic() - started:.1f} s: "
                                             f"{out.stderr.strip()[:100]}")


def case_no_room_for_adapter(model: Path, data: Path) -> None:
    """save_steps=0 on a 10 MB tmpfs: the adapter cannot fit, so training must not start."""
    small = ROOT / "issue16-small"
    why = mount_tmpfs(small, "10m")
    if why:
        record("save_steps=0, no room for the adapter", None, f"skipped: cannot mount tmpfs ({why})")
        return
    try:
        from lora_tui.core.run.runs import RunDirectory

        run_dir = small / "run"
        started = time.monotonic()
        cli("train", *overrides(model, data, 30, 0), "--run-dir", run_dir, "--detach")
        state = wait_state(run_dir)
        events = RunDirectory(run_dir).read_events()
        last = events[-1] if events else {}
        steps = sum(e.get("type") == "step" for e in events)
        record("save_steps=0, no room for the adapter (10 MB tmpfs)", state == "failed" and steps == 0
               and "disk full" in str(last.get("reason")) and "checkpoints are kept" not in str(last.get("fix")),
               f"{state} after {steps} steps, {time.monotonic() - started:.1f} s: {last.get('reason')}")
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)


def case_absurd_steps() -> None:
    for setting in ("training.max_steps=1e30", "training.save_steps=1e30", "training.seed=1e30"):
        started = time.monotonic()
        out = cli("train", setting, "--print-config")
        record(f"train {setting}", out.returncode == 2 and "at most" in out.stderr,
               f"exit {out.returncode}, {time.monotonic() - started:.1f} s: {out.stderr.strip()[:90]}")


def case_signal_history(model: Path, data: Path) -> None:
    """Ctrl-C (no terminal: stop) and SIGTERM to a foreground train: the history is printed once."""
    from lora_tui.core.run.runs import RunDirectory

    for sig in (signal.SIGINT, signal.SIGTERM):
        run_dir = ROOT / f"issue16-signal-{sig.name}"
        proc = subprocess.Popen([sys.executable, "-m", "lora_tui", "train", *overrides(model, data, 400, 0),
                                 "--run-dir", str(run_dir)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=ENV)
        run, deadline = RunDirectory(run_dir), time.monotonic() + 300
        while sum(e.get("type") == "step" for e in run.read_events()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=300)
        record(f"{sig.name} to a foreground train: history printed once", out.count("started: ") == 1
               and out.count("step 1/") == 1 and run.state() == "stopped",
               f"'started' printed {out.count('started: ')}x, 'step 1/' {out.count('step 1/')}x, {run.state()}")


def case_torn_seq_and_quoting(model: Path, data: Path) -> None:
    import shlex

    from lora_tui.core.run.runs import RunDirectory

    run = RunDirectory(ROOT / "issue16-torn")
    run.path.mkdir()
    run.events_path.write_text('{"seq": 1, "type": "log", "message": "a"}\n{"seq": 2, "type": "st')
    seq = run.append_event("log", message="after the tear")["seq"]
    record("event after a torn last line", seq == 3, f"next seq {seq} (torn line had 2)")
    run_dir = ROOT / "my runs" / "it's a run"
    out = cli("train", *overrides(model, data, 2, 0), "--run-dir", run_dir, "--detach")
    hints = [l.split(":", 1)[1].strip() for l in out.stdout.splitlines() if l.strip().startswith(("follow:", "stop:"))]
    ok = len(hints) == 2 and all(shlex.split(h)[-1] == str(run_dir) for h in hints)
    record("attach/stop hints for a path with a space and a quote", ok, "; ".join(hints)[:120])
    wait_state(run_dir)


def section_runs(model: Path, data: Path) -> None:
    case_overwrite_non_run(model, data)
    finished = case_finished_run(model, data)
    case_export_overwrite(finished)
    case_garbage_status(finished)
    case_targets_changed(model, data)
    case_no_room_for_adapter(model, data)
    case_absurd_steps()
    case_signal_history(model, data)
    case_torn_seq_and_quoting(model, data)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 kill trials, a 0.2 GB big file")
    parser.add_argument("--only", nargs="*", default=None, help="sections: kill disk race corrupt hostile inputs runs turn4")
    parser.add_argument("--big-gb", type=float, default=1.0, help="size of the big validate file (default 1 GB)")
    args = parser.parse_args()
    os.environ.update(ENV)
    sections = args.only or ["kill", "disk", "race", "corrupt", "hostile", "inputs", "runs", "turn4"]
    print(f"scratch: {ROOT}; load before: {os.getloadavg()}", flush=True)
    model, data = tiny_model(), train_data()
    if "kill" in sections:
        section_kill(model, data, 2 if args.quick else 4)
    if "disk" in sections:
        section_disk(model, data)
    if "race" in sections:
        section_race(model, data)
    if "corrupt" in sections:
        section_corrupt(model, data)
    if "hostile" in sections:
        section_hostile(model, data, 0.2 if args.quick else args.big_gb)
    if "inputs" in sections:
        section_inputs(model, data)
    if "runs" in sections:
        section_runs(model, data)
    if "turn4" in sections:
        import torture_turn4

        torture_turn4.section(sys.modules[__name__], model, data)
    print(f"\nload after: {os.getloadavg()}\n\n| test | result | figure |\n|---|---|---|")
    for test, result, figure in RESULTS:
        print(f"| {test} | {result} | {figure} |")
    subprocess.run(["rm", "-rf", str(ROOT)])
    return 1 if any(r == "FAIL" for _, r, _ in RESULTS) else 0


if __name__ == "__main__":
    raise SystemExit(main())
