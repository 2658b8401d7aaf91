"""Issue 11 end to end on the tiny model through the real `lora-tui` entry point: a run trained with
TensorBoard logging and a canary HF_TOKEN, every export (zip, merge, GGUF) with its round-trip check,
`push --dry-run`, and an offline push. The canary must appear in no file the run or the exports wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CANARY = "hf_CANARYtoken0123456789abcdefNEVERwrite"


def _rows(start: int, stop: int) -> str:
    return "".join(json.dumps({"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                                            {"role": "assistant", "content": f"Ahoy! {2 * i}."}]}) + "\n"
                   for i in range(start, stop))


def test_token_is_never_written_and_every_export_is_checked(tmp_path, tiny_model_dir):
    train, valid = tmp_path / "train.jsonl", tmp_path / "valid.jsonl"
    train.write_text(_rows(0, 16))
    valid.write_text(_rows(16, 20))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_TOKEN=CANARY, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")

    def cli(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "lora_tui", *args], capture_output=True, text=True,
                              cwd=tmp_path, timeout=600, env=env)
        assert CANARY not in done.stdout + done.stderr
        return done

    run = tmp_path / "runs" / "canary"
    trained = cli("train", f"model.name={tiny_model_dir}", f"data.train={train}", f"data.validation={valid}",
                  "data.max_seq_len=64", "training.max_steps=3", "training.micro_batch=2", "training.grad_accum=1",
                  "training.eval_steps=0", "training.save_steps=0", "lora.r=4", "training.report_to=tensorboard",
                  "--run-dir", str(run))
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    assert list((run / "tensorboard").rglob("events.out.tfevents.*")), "TensorBoard logs belong in the run directory"
    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        str(tiny_model_dir.resolve())  # a local base stays a path, and the card says so
    assert "only on the training machine" in (run / "adapter" / "README.md").read_text()

    assert cli("export", str(run), "--zip").returncode == 0
    merged = cli("merge", str(run), str(tmp_path / "merged"))
    assert merged.returncode == 0, merged.stdout[-3000:] + merged.stderr[-2000:]
    assert "PASS: identical to the adapter" in merged.stdout and "Adapter on base" in merged.stdout
    gguf = cli("export", str(run), "--gguf", "--gguf-type", "f16")
    assert gguf.returncode == 0, gguf.stdout[-3000:] + gguf.stderr[-2000:]
    assert "GGUF artefact" in gguf.stdout and "Stop token       <|im_end|> (taught) stops it" in gguf.stdout

    dry = cli("push", str(run), "me/canary-adapter", "--dry-run")
    assert dry.returncode == 0 and "adapter_model.safetensors" in dry.stdout and "nothing was sent" in dry.stdout
    assert "HF_TOKEN from the environment" in dry.stdout
    dry_gguf = cli("push", str(run), "me/canary-gguf", "--gguf", "--dry-run")
    assert dry_gguf.returncode == 0 and "canary-f16.gguf" in dry_gguf.stdout and "Modelfile-f16" in dry_gguf.stdout
    offline = cli("push", str(run), "me/canary-adapter")
    assert offline.returncode == 2 and offline.stderr.strip().count("\n") == 0
    assert "no network" in offline.stderr and "Traceback" not in offline.stderr

    written = [p for folder in (run, tmp_path / "merged") for p in folder.rglob("*") if p.is_file()]
    assert len(written) > 15
    leaked = [str(p) for p in written if CANARY.encode() in p.read_bytes()]
    assert leaked == []
    exports = json.loads((run / "exports.json").read_text())
    assert exports["merged"][0]["check"]["verdict"] == "identical" and exports["gguf"][0]["check"]["ok"]
