"""Datasets by hub id (`data.train=org/name[:split]`) and local hub-snapshot folders, through datasets.load_dataset.

No network here, ever. The hub id path is exercised for real offline: each test lays out a Hugging Face hub
cache (``datasets--org--name/snapshots/<sha>/`` + ``refs/main``, what `hf download --repo-type dataset` leaves)
holding a snapshot folder (parquet shards under data/ + a README.md card with YAML ``configs:``), and points
HF_HUB_CACHE / HF_DATASETS_CACHE at tmp folders with HF_HUB_OFFLINE=1. No fake stands in for the hub:
load_dataset really fails offline, and the cached snapshot is really found and loaded. Only the online path
(load_dataset resolving the id on the Hub) cannot run here; its one piece of our own logic, reading the commit
sha from datasets' cache folder, is tested on its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.wait import wait_until

REPO = Path(__file__).resolve().parent.parent
HUB_ID = "lora-tui-test/tiny-alpaca"
SHA = "0123456789abcdef0123456789abcdef01234567"
README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: test
    path: data/test-*
---
# tiny-alpaca

Twelve arithmetic rows, for tests.
"""


def _rows(n: int, start: int = 0) -> list[dict]:
    return [{"instruction": f"What is {i} plus {i}?", "input": "", "output": f"{i} plus {i} is {2 * i}."}
            for i in range(start, start + n)]


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    """A folder laid out like a hub dataset snapshot; train row 4 has an empty output (one finding)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("snapshot") / "tiny-alpaca"
    (folder / "data").mkdir(parents=True)
    train = _rows(12)
    train[3]["output"] = ""
    pq.write_table(pa.Table.from_pylist(train[:7]), folder / "data" / "train-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(train[7:]), folder / "data" / "train-00001-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(_rows(3, start=50)), folder / "data" / "test-00000-of-00001.parquet")
    (folder / "README.md").write_text(README)
    return folder


@pytest.fixture
def hub_env(tmp_path, monkeypatch, snapshot) -> dict:
    """An offline hub cache holding HUB_ID at revision SHA; env for subprocesses, constants for this process."""
    import datasets.config
    import huggingface_hub.constants

    hub, cache = tmp_path / "hub", tmp_path / "datasets-cache"
    repo = hub / f"datasets--{HUB_ID.replace('/', '--')}"
    shutil.copytree(snapshot, repo / "snapshots" / SHA)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SHA)
    env = {"HF_HUB_CACHE": str(hub), "HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))  # read at import time
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return {**os.environ, **env}


def _cli(*args, env=None, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lora_tui", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def test_hub_id_or_local_path(tmp_path, monkeypatch):
    from lora_tui.core.data.hub_data import HubSpec, parse_hub_id

    monkeypatch.chdir(tmp_path)
    assert parse_hub_id("yahma/alpaca-cleaned") == HubSpec("yahma/alpaca-cleaned", None)
    assert parse_hub_id("org/name:test") == HubSpec("org/name", "test")
    for not_an_id in ("data/train.jsonl", "a/b/c", "./org/name", "/abs/org", "name", "org/", "sample_data/x",
                      "org/../etc", "org/name:"):
        assert parse_hub_id(not_an_id) is None, not_an_id
    (tmp_path / "org" / "name").mkdir(parents=True)  # a local path of that name wins
    assert parse_hub_id("org/name") is None


def test_snapshot_folder_loads_with_row_numbers(snapshot, tmp_path, monkeypatch):
    import datasets.config

    from lora_tui.core.data import load_examples

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    loaded = load_examples(snapshot)
    assert (loaded.container, loaded.format, loaded.rows, len(loaded.examples)) == ("hub-snapshot", "alpaca", 12, 11)
    assert [(f.line, f.code) for f in loaded.findings if f.severity == "error"] == [(4, "empty_field")]
    assert loaded.source == {"dataset": str(snapshot), "split": "train", "revision": "local snapshot"}
    chosen = [f for f in loaded.findings if f.code == "split_chosen"]  # train of train, test: said, not silent
    assert len(chosen) == 1 and "using split 'train' of train, test" in chosen[0].message
    assert f"e.g. {snapshot}:test" in chosen[0].fix  # how to pick the other one, named
    test = load_examples(f"{snapshot}:test")
    assert test.rows == 3 and test.examples[0].messages[-1]["content"] == "50 plus 50 is 100."


def test_validate_hub_id_shows_row_numbers_and_revision(hub_env):
    proc = _cli("validate", HUB_ID, env=hub_env)
    assert proc.returncode == 0, proc.stderr
    assert "row 4: field 'output' is empty" in proc.stdout and "line 4" not in proc.stdout
    assert f"Dataset   {HUB_ID} (split train; revision {SHA})" in proc.stdout
    assert "Format    alpaca (hub)" in proc.stdout and "11 of 12 rows can be trained" in proc.stdout
    proc = _cli("validate", f"{HUB_ID}:test", "--json", env=hub_env)
    report = json.loads(proc.stdout)
    assert (report["rows"], report["container"]) == (3, "hub")
    assert report["dataset"] == {"dataset": HUB_ID, "split": "test", "revision": SHA}


def test_wrong_split_or_subset_is_one_line(hub_env):
    from lora_tui.core.data import DataError, validate_dataset

    with pytest.raises(DataError, match=r"Unknown split \"valid\".*Fix: name one of its splits"):
        validate_dataset(f"{HUB_ID}:valid")
    with pytest.raises(DataError, match=r"subset 'fr' not found.*Fix: set data.subset="):
        validate_dataset(HUB_ID, subset="fr")


def test_offline_without_cached_copy_is_one_line_exit_2(hub_env, tmp_path):
    absent = "lora-tui-test/not-cached"
    proc = _cli("validate", absent, env=hub_env)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "not in the local cache, and offline mode is on" in lines[0]
    assert f"`hf download --repo-type dataset {absent}`" in lines[0] and "local copy" in lines[0]
    run_dir = tmp_path / "runs" / "offline"
    proc = _cli("train", f"data.train={absent}", "training.max_steps=1", "--run-dir", run_dir, env=hub_env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"lora-tui train: {lines[0].removeprefix('Cannot read the dataset: ')}"]
    assert not run_dir.exists() and not run_dir.parent.exists()


def test_wizard_backend_validates_a_hub_id(hub_env, tiny_model_dir):
    from lora_tui.core.config import Config
    from lora_tui.ui.backend import Backend
    from lora_tui.ui.widgets.dataset_views import group_findings, group_label

    config = Config()
    config.model.name, config.data.train, config.data.validation = str(tiny_model_dir), HUB_ID, f"{HUB_ID}:test"
    view = Backend().validate(config)
    assert view.report.container == "hub" and view.report.source["revision"] == SHA
    assert view.validation_rows == 3
    errors = [items for (severity, _), items in group_findings(view.report.findings).items() if severity == "error"]
    assert "row 4" in group_label("error", errors[0], "row").plain


def test_revision_is_read_from_the_datasets_cache_folder():
    from types import SimpleNamespace

    from lora_tui.core.data.hub_data import _revision

    online = SimpleNamespace(cache_files=[{"filename": f"/c/org___name/default/0.0.0/{SHA}/name-train.arrow"}])
    local = SimpleNamespace(cache_files=[{"filename": "/c/snap/default/0.0.0/48b4f065061724e7/snap-train.arrow"}])
    assert _revision(online) == SHA and _revision(local) is None


def test_tiny_training_from_a_hub_id_records_id_and_revision(hub_env, snapshot, tmp_path, tiny_model_dir):
    from lora_tui.core.config import Config, apply_overrides, load_config
    from lora_tui.core.run.launcher import start_run

    config = apply_overrides(Config(), [
        f"model.name={tiny_model_dir}", f"data.train={HUB_ID}", f"data.validation={snapshot}:test",
        "data.max_seq_len=64", "training.micro_batch=4", "training.grad_accum=1", "training.max_steps=2",
        "training.eval_steps=0", "training.save_steps=0", "lora.r=4", "lora.alpha=8"])
    run = start_run(config, tmp_path / "runs" / "hub")
    wait_until(lambda: run.state() in ("finished", "failed", "stopped", "dead"), 300, interval=0.3, what="the run to end")
    assert run.state() == "finished", run.log_path.read_text()[-3000:]
    assert load_config(run.config_path).data.train == HUB_ID  # kept as an id, not made a path
    card = (run.adapter_dir / "README.md").read_text()
    assert f"| train | `{HUB_ID}` (split train) | 11 | revision `{SHA}` |" in card
    assert f"| validation | `{snapshot}` (split test) | 3 | local snapshot |" in card
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["datasets"] == [HUB_ID]
    assert meta["lora_tui"]["data_revision"] == {"train": SHA, "validation": "local snapshot"}
    assert "data_sha256" not in meta["lora_tui"]  # no file hash for a dataset read by id
    warnings = [e for e in map(json.loads, run.events_path.read_text().splitlines()) if e.get("level") == "warning"]
    assert any("row 4: field 'output' is empty" in e["message"] for e in warnings)
