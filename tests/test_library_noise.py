"""bitsandbytes' two import-time lines (issue 24 item 9) are gone from `doctor`, `chat`, `merge` and train.log,
offline as a user's machine is (HF_HUB_OFFLINE=1 gives the second one, "Skipping publisher trust check"), and
nothing else those loggers say is hidden."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from tests.support.chat import make_fake_run

pytestmark = pytest.mark.timeout(600)
NOISE = ("Skipping publisher trust check", "Failed to load CPU gemm_4bit_forward", "pip install kernels")


def lora_tui(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "lora_tui", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


def test_bitsandbytes_imports_quietly_in_the_commands(tmp_path, tiny_model_dir):
    run = make_fake_run(tmp_path, tiny_model_dir)
    for args in (["doctor"], ["chat", run, "--prompt", "hi", "--greedy", "--max-new-tokens", 2],
                 ["merge", run, tmp_path / "merged"]):
        result = lora_tui(*args)
        assert result.returncode == 0, result.stderr
        said = result.stdout + result.stderr
        assert not [line for line in said.splitlines() if any(n in line for n in NOISE)], (args, said)


def test_train_log_starts_without_them(tmp_path, tiny_model_dir, train_file):
    from lora_tui.core.run.runs import RunDirectory

    result = lora_tui("train", f"model.name={tiny_model_dir}", f"data.train={train_file}", "data.validation=",
                      "data.max_seq_len=64", "training.max_steps=1", "training.save_steps=0", "training.eval_steps=0",
                      "--run-dir", tmp_path / "run")
    log = RunDirectory(tmp_path / "run").log_path.read_text()
    assert result.returncode == 0, result.stderr + log[-2000:]
    assert not [line for line in log.splitlines() if any(n in line for n in NOISE)], log[:2000]


def test_only_those_two_messages_are_dropped(caplog):
    from lora_tui.core.machine.library_noise import NOISE as KNOWN, drop_library_noise

    drop_library_noise()
    drop_library_noise()  # twice: one filter each
    for name, openings in KNOWN.items():
        logger = logging.getLogger(name)
        assert len(logger.filters) == 1
        with caplog.at_level(logging.WARNING, logger=name):
            caplog.clear()
            logger.warning(openings[0] + " whatever follows %s", "here")
            logger.warning("Another warning from %s", name)
            logger.error("A real error")
        assert [r.getMessage() for r in caplog.records] == [f"Another warning from {name}", "A real error"]
