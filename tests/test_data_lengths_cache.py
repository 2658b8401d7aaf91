"""The data's longest row is kept on disk (core/train/data_lengths_cache.py), so `lora-tui estimate` and the
wizard stop tokenizing the whole dataset on every call (0.26 s instead of 5.6 s on the sample data).

A hit is shown by what did not run: ``training.build_datasets`` (the trainer's own reader) is wrapped to
count its calls, or made to raise, so a figure that comes back anyway came from the cache. Every change
to what the figure depends on must read the data again and give the freshly measured figure; a damaged,
huge or special cache file is a miss that returns, never an error or a hang. The tokenizer is the
embedded model's, copied (without weights) into a folder the tests may edit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading

import pytest

from lora_tui.core.config import Config, apply_overrides
from tests.conftest import REPO

TOKENIZER_FILES = ("chat_template.jinja", "config.json", "generation_config.json", "tokenizer.json",
                   "tokenizer_config.json")


def rows(n: int, answer: str = "hello there ") -> str:
    return "".join(json.dumps({"messages": [{"role": "user", "content": f"hi {i}"},
                                            {"role": "assistant", "content": answer * (i + 1)}]}) + "\n"
                   for i in range(n))


@pytest.fixture
def setup(tmp_path, monkeypatch, embedded_model_dir):
    """A model folder (tokenizer files only), train and validation files, the cache in tmp_path, and a count
    of the trainer's data reads."""
    from lora_tui.core.train import data_lengths_cache, training

    model = tmp_path / "model"
    model.mkdir()
    for name in TOKENIZER_FILES:
        shutil.copy(embedded_model_dir / name, model / name)
    (tmp_path / "train.jsonl").write_text(rows(8))
    (tmp_path / "valid.jsonl").write_text(rows(2))
    cache = tmp_path / "cache" / "data_lengths.json"
    monkeypatch.setattr(data_lengths_cache, "lengths_path", lambda: cache)
    reads = []
    real = training.build_datasets

    def counted(config, tokenizer):
        reads.append(config.data.max_seq_len)
        return real(config, tokenizer)

    monkeypatch.setattr(training, "build_datasets", counted)
    config = apply_overrides(Config(), [f"model.name={model}", f"data.train={tmp_path / 'train.jsonl'}",
                                        f"data.validation={tmp_path / 'valid.jsonl'}"])
    return tmp_path, config, cache, reads


def measured(config) -> int:
    """The figure read without any cache: the trainer's own reader and row count."""
    from lora_tui.core.model.models import load_tokenizer
    from lora_tui.core.train.training import _build_datasets, longest_row

    train_ds, eval_ds, _ = _build_datasets(config, load_tokenizer(config.model.name))
    return longest_row(train_ds, eval_ds)


def test_second_measure_is_a_hit_with_the_same_figure(setup, monkeypatch):
    from lora_tui.core.model import models
    from lora_tui.core.train import training
    from lora_tui.core.train.data_lengths import measure_data

    _, config, cache, reads = setup
    first = measure_data(config)
    assert first.longest == measured(config) and reads == [512]
    assert cache.is_file()

    def refuse(*a, **k):
        raise AssertionError("a hit must not load the tokenizer or read the data")

    monkeypatch.setattr(training, "build_datasets", refuse)
    monkeypatch.setattr(models, "load_tokenizer", refuse)
    loader_calls = []
    again = measure_data(config.copy(), tokenizer_loader=lambda: loader_calls.append(1))
    assert again == first and not loader_calls


@pytest.mark.parametrize("change", ["data", "data_same_size_and_mtime", "validation", "no_validation",
                                    "val_fraction", "seed", "max_seq_len", "template", "train_on_prompt", "tokenizer"])
def test_a_change_reads_the_data_again(setup, change):
    from lora_tui.core.train.data_lengths import measure_data

    tmp_path, config, _, reads = setup
    before = measure_data(config).longest
    assert reads == [512]
    train = tmp_path / "train.jsonl"
    if change == "data":
        train.write_text(rows(8) + rows(1, "a much longer answer than any before it " * 4))
    elif change == "data_same_size_and_mtime":  # `cp -p`, or an editor that keeps the time: the change time moves
        st = train.stat()
        text = train.read_text()
        train.write_text(text.replace("hello there", "HELLO THERE"))
        os.utime(train, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert train.stat().st_size == st.st_size and train.stat().st_mtime_ns == st.st_mtime_ns
    elif change == "validation":
        (tmp_path / "valid.jsonl").write_text(rows(2, "the validation answers grow longer " * 5))
    elif change == "no_validation":
        config = apply_overrides(config, ["data.validation="])
    elif change == "val_fraction":
        config = apply_overrides(config, ["data.validation=", "data.val_fraction=0.3"])
        measure_data(config)
        reads.pop()
        config = apply_overrides(config, ["data.val_fraction=0.1"])
    elif change == "seed":  # another held-out split (the same longest here: train and eval both count)
        config = apply_overrides(config, ["data.validation=", "training.seed=1"])
        measure_data(config)
        reads.pop()
        config = apply_overrides(config, ["training.seed=2"])
    elif change == "max_seq_len":
        config = apply_overrides(config, [f"data.max_seq_len={before - 5}"])
    elif change == "template":
        config = apply_overrides(config, ["data.template=alpaca"])
    elif change == "train_on_prompt":
        config = apply_overrides(config, ["data.train_on_prompt=true"])
    elif change == "tokenizer":
        template = config.model.name + "/chat_template.jinja"
        with open(template, "a") as fh:
            fh.write("{{ ' a longer end to every conversation' }}")
    after = measure_data(config)
    assert len(reads) == 2, f"{change}: the kept figure was used for changed inputs"
    assert after.longest == measured(config)
    if change in ("data", "validation", "max_seq_len", "tokenizer"):
        assert after.longest != before


@pytest.mark.parametrize("damage", ["garbage", "fifo", "huge", "wrong_types", "old_version", "a_list", "folder"])
def test_a_damaged_cache_is_a_miss_then_repaired(setup, damage):
    from lora_tui.core.train import data_lengths_cache as dlc
    from lora_tui.core.train.data_lengths import measure_data

    _, config, cache, reads = setup
    key = dlc.lengths_key(config)
    assert key
    cache.parent.mkdir(parents=True)
    planted = {"version": dlc.LENGTHS_VERSION, "entries": {key: {"longest": 3, "time": 1.0}}}
    if damage == "garbage":
        cache.write_bytes(b"\x00{not json" * 100)
    elif damage == "fifo":
        os.mkfifo(cache)
    elif damage == "huge":  # a planted figure past the size limit: not read at all
        cache.write_text(json.dumps({**planted, "pad": "x" * dlc.LENGTHS_BYTES}))
    elif damage == "wrong_types":
        cache.write_text(json.dumps({"version": dlc.LENGTHS_VERSION, "entries": {key: {"longest": "3"}}}))
    elif damage == "old_version":
        cache.write_text(json.dumps({**planted, "version": dlc.LENGTHS_VERSION + 100}))
    elif damage == "a_list":
        cache.write_text(json.dumps([planted]))
    elif damage == "folder":
        cache.mkdir()
    result = []
    worker = threading.Thread(target=lambda: result.append(measure_data(config)), daemon=True)
    worker.start()
    worker.join(300)
    assert not worker.is_alive(), f"{damage}: measuring hung on the cache file"
    assert result[0].longest == measured(config) != 3 and reads == [512]
    if damage != "folder":  # the next store replaced the damaged file: the figure is kept now
        assert cache.is_file()
        assert measure_data(config).longest == result[0].longest and reads == [512]


def test_a_planted_figure_is_what_comes_back(setup):
    """The control for the damaged cases: the same figure in a sound file is used (so the cases above show
    that damage, not the key, made the miss)."""
    from lora_tui.core.train import data_lengths_cache as dlc
    from lora_tui.core.train.data_lengths import measure_data

    _, config, cache, reads = setup
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps({"version": dlc.LENGTHS_VERSION,
                                 "entries": {dlc.lengths_key(config): {"longest": 3, "time": 1.0}}}))
    assert measure_data(config).longest == 3 and reads == []


def test_the_trainers_figure_is_kept_for_estimate(setup):
    from lora_tui.core.train.data_lengths import measure_data
    from lora_tui.core.train.data_lengths_cache import keep_measured

    _, config, _, reads = setup
    keep_measured(config, 41)  # what training._train measured for this config
    assert measure_data(config).longest == 41 and reads == []


def test_the_runs_config_and_the_users_share_a_figure(setup, monkeypatch):
    """The trainer reads the run's config.yaml, which the launcher wrote with absolute data and model paths;
    `estimate` reads the user's relative ones: both name the same files, so one figure serves both."""
    from lora_tui.core.run.launcher import _absolute_data
    from lora_tui.core.train.data_lengths import measure_data
    from lora_tui.core.train.data_lengths_cache import keep_measured

    tmp_path, config, _, reads = setup
    monkeypatch.chdir(tmp_path)
    users = apply_overrides(config, ["model.name=model", "data.train=train.jsonl", "data.validation=valid.jsonl"])
    runs = _absolute_data(users)
    assert runs.data.train != users.data.train and runs.model.name != users.model.name
    keep_measured(runs, 41)
    assert measure_data(users).longest == 41 and reads == []


def test_failures_are_not_kept(setup):
    """A figure that could not be measured is measured again once the cause is gone."""
    from lora_tui.core.train.data_lengths import measure_data

    tmp_path, config, cache, reads = setup
    train = tmp_path / "train.jsonl"
    train.write_text("{\"messages\": []}\n")  # no valid row
    assert measure_data(config).longest is None and len(reads) == 1
    assert not cache.exists()
    assert measure_data(config).longest is None and len(reads) == 2


def test_the_cache_keeps_the_newest_entries_only(setup, monkeypatch):
    from lora_tui.core.train import data_lengths_cache as dlc

    _, _, cache, _ = setup
    from dataclasses import replace

    monkeypatch.setattr(dlc, "CACHE", replace(dlc.CACHE, max_entries=4))  # LENGTHS_ENTRIES, as the cache holds it
    for n in range(1, 11):
        dlc.keep(f"key{n}", n)
    entries = json.loads(cache.read_text())["entries"]
    assert sorted(entries) == ["key10", "key7", "key8", "key9"]
    assert dlc.recall("key10") == 10 and dlc.recall("key1") is None
    assert not [p for p in cache.parent.iterdir() if p.name != cache.name], "no temporary file is left"


def test_estimate_twice_gives_one_figure_without_reading_again(setup, monkeypatch, capsys):
    from lora_tui import cli
    from lora_tui.core.machine import hardware
    from lora_tui.core.model import models
    from tests.test_one_figure import cpu_report

    tmp_path, config, _, reads = setup
    monkeypatch.setattr(hardware, "probe_hardware", lambda *a, **k: cpu_report())
    words = ["estimate", "--json", f"model.name={config.model.name}", f"data.train={config.data.train}",
             f"data.validation={config.data.validation}"]
    assert cli.main(words) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["plan"]["longest"] == measured(config) and reads == [512]

    def refuse(*a, **k):
        raise OSError("the tokenizer was loaded on a hit")

    monkeypatch.setattr(models, "load_tokenizer", refuse)
    assert cli.main(words) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["plan"] == first["plan"] and second["total_bytes"] == first["total_bytes"] and reads == [512]


def test_a_hit_imports_no_heavy_library(setup, monkeypatch):
    """What made estimate slow was loading transformers, torch and datasets to tokenize: a hit needs none."""
    from lora_tui.core.train.data_lengths import measure_data

    tmp_path, config, _, _ = setup
    home = tmp_path / "home-cache"
    monkeypatch.setenv("LORA_TUI_CACHE", str(home))
    from lora_tui.core.train import data_lengths_cache as dlc

    monkeypatch.setattr(dlc, "lengths_path", lambda: home / "data_lengths.json")
    longest = measure_data(config).longest
    config_file = tmp_path / "config.yaml"
    config_file.write_text(json.dumps(config.to_dict()))
    code = ("import sys; from lora_tui.core.config import load_config; "
            "from lora_tui.core.train.data_lengths import measure_data; "
            f"print(measure_data(load_config({str(config_file)!r})).longest, "
            "sorted(m for m in ('torch', 'transformers', 'datasets', 'tokenizers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                         env={**os.environ, "LORA_TUI_CACHE": str(home)})
    assert out.stdout.split() == [str(longest), "[]"], out.stderr[-2000:]


def test_the_wizard_reads_the_kept_figure_without_its_tokenizer(setup, monkeypatch):
    """The wizard's Model and Hardware steps show a plan before the Dataset step has loaded the tokenizer."""
    from lora_tui.ui.backend import Backend

    _, config, _, reads = setup
    backend = Backend()
    assert backend.data_lengths(config).longest == measured(config) and reads == [512]

    def refuse(self, config):
        raise AssertionError("the wizard loaded the tokenizer on a hit")

    monkeypatch.setattr(Backend, "tokenizer", refuse)
    assert Backend().data_lengths(config.copy()).longest == measured(config) and reads == [512]


def test_a_real_run_keeps_its_figure_for_the_next_estimate(setup, tiny_model_dir, monkeypatch):
    """The detached trainer (training._train) keeps the longest row it measured; `estimate` of the same
    config then reads it without tokenizing the data again."""
    from lora_tui.core.run.launcher import start_run
    from lora_tui.core.train.data_lengths import measure_data
    from tests.support.wait import wait_until

    tmp_path, config, cache, reads = setup
    monkeypatch.setenv("LORA_TUI_CACHE", str(cache.parent))  # the trainer's cache_dir(): the same file
    config = apply_overrides(config, [f"model.name={tiny_model_dir}", "data.max_seq_len=64", "training.max_steps=1",
                                      "training.eval_steps=0", "training.save_steps=0", "lora.r=4"])
    assert not cache.exists()
    run = start_run(config, tmp_path / "run")
    wait_until(lambda: run.state() in ("finished", "failed", "dead"), 300, interval=0.3, what="the run to end",
               details=lambda: run.log_path.read_text()[-3000:])
    assert run.state() == "finished", run.log_path.read_text()[-3000:]
    assert cache.exists()
    assert measure_data(config).longest == measured(config) and reads == []  # kept by the trainer, not re-read
