"""Starting, resuming and stopping trainer processes.

The trainer runs as its own OS process in a new session (setsid), with output to
the run's train.log: closing the terminal or losing SSH does not stop it. Callers
(CLI, wizard) follow it through the run directory. No torch here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from lora_tui.core.config import Config, save_config
from lora_tui.core.embedded import is_embedded
from lora_tui.core.paths import resolve_data_path, runs_dir
from lora_tui.core.runs import STATES_DONE, RunDirectory, RunError


def default_run_name(config: Config) -> str:
    model = "smollm2-135m" if is_embedded(config.model.name) else Path(config.model.name.rstrip("/")).name
    model = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-").lower() or "model"
    return f"{model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def plan_run_dir(config: Config, run_dir: str | os.PathLike | None = None) -> Path:
    if run_dir:
        return Path(run_dir)
    return runs_dir(config.output.runs_dir) / (config.output.run_name or default_run_name(config))


def _absolute_data(config: Config) -> Config:
    """Store absolute data paths so the trainer and later resumes find them from any directory."""
    config = config.copy()
    config.data.train = str(resolve_data_path(config.data.train))
    if config.data.validation:
        config.data.validation = str(resolve_data_path(config.data.validation))
    return config


def _spawn(run: RunDirectory, resume: bool) -> int:
    cmd = [sys.executable, "-m", "lora_tui.core.trainer_main", str(run.path)] + (["--resume"] if resume else [])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(run.log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, env=env)
    run.write_status("starting", pid=proc.pid, message="starting trainer")
    return proc.pid


def start_run(config: Config, run_dir: str | os.PathLike | None = None, *, overwrite: bool = False) -> RunDirectory:
    """Create the run directory, write config.yaml, and start the detached trainer."""
    path = plan_run_dir(config, run_dir)
    run = RunDirectory(path)
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise RunError(f"{path} already exists and is not empty. Fix: choose another run name or --run-dir, "
                           f"`lora-tui train --resume {path}` to continue it, or --overwrite to replace it.")
        if run.is_locked():
            raise RunError(f"A trainer is running in {path}; stop it first (`lora-tui stop {path}`).")
        shutil.rmtree(path)
    train = resolve_data_path(config.data.train)
    if not train.exists():
        raise RunError(f"Training data {config.data.train} does not exist. Fix: set data.train to your file.")
    if config.data.validation and not resolve_data_path(config.data.validation).exists():
        raise RunError(f"Validation data {config.data.validation} does not exist. Fix: set data.validation, "
                       "or leave it empty to hold out part of the training data.")
    path.mkdir(parents=True, exist_ok=True)
    save_config(_absolute_data(config), run.config_path,
                header=f"lora-tui run '{path.name}', created {datetime.now():%Y-%m-%d %H:%M:%S}.\n"
                       f"Reproduce with: lora-tui train {run.config_path} --run-dir NEW_DIR")
    run.write_status("created")
    _spawn(run, resume=False)
    return run


def resume_run(run_dir: str | os.PathLike) -> RunDirectory:
    run = RunDirectory.find(run_dir)
    if run.is_locked():
        raise RunError(f"A trainer is already running in {run.path}. Fix: `lora-tui attach {run.path}`.")
    if run.state() == "finished":
        raise RunError(f"{run.path} already finished; its adapter is in {run.adapter_dir}. "
                       "Fix: start a new run, or raise training.max_steps/epochs in a copy of its config.")
    _spawn(run, resume=True)
    return run


def stop_run(run: RunDirectory, wait: float = 0.0) -> str:
    """Ask the trainer to stop gracefully (checkpoint + adapter) and optionally wait for it."""
    state = run.state()
    if state in STATES_DONE:
        return state
    if state in ("dead", "created"):
        return state
    run.request_stop()
    if run.read_status().get("state") in ("starting", "running"):
        run.write_status("stopping", message="stop requested")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        state = run.state()
        # Done means the trainer has also exited (lock released), so a resume can start at once.
        if (state in STATES_DONE and not run.is_locked()) or state == "dead":
            return state
        time.sleep(0.25)
    return run.state()


def wait_until_started(run: RunDirectory, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run.is_locked() or run.read_status().get("state") in STATES_DONE:
            break
        time.sleep(0.1)
    return run.state()
