"""Starting, resuming and stopping trainer processes.

The trainer runs as its own OS process in a new session (setsid), with output to
the run's train.log: closing the terminal or losing SSH does not stop it. Callers
(CLI, wizard) follow it through the run directory. No torch here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from lora_tui.core.run import claim as run_claim
from lora_tui.core.run.checkpoints import training_done
from lora_tui.core.config import Config, save_config
from lora_tui.core.model.embedded import is_embedded
from lora_tui.core.paths import resolve_data_path, runs_dir
from lora_tui.core.run.runs import RUN_MARKER, STATES_DONE, RunDirectory, RunError, quoted


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
    from lora_tui.core.data.hub_data import absolute_source  # hub ids stay ids; `snapshot:split` keeps its split

    config = config.copy()
    config.data.train = absolute_source(config.data.train)
    if config.data.validation:
        config.data.validation = absolute_source(config.data.validation)
    model = Path(config.model.name).expanduser()
    if not model.is_absolute() and model.exists():  # a local folder typed relative: resumes and chat run elsewhere
        config.model.name = str(model.resolve())
    if config.training.init_adapter:  # the adapter folder itself: a run name means another thing elsewhere
        from lora_tui.core.run.init_adapter import init_adapter_dir

        try:
            config.training.init_adapter = str(init_adapter_dir(config))
        except RunError:
            pass  # refused before this by _check_startable; the trainer says it again
    return config


def _spawn(run: RunDirectory, resume: bool, lock=None, node_args: list[str] | None = None) -> int:
    """Start the detached trainer; `lock` (the claimed lock file) is handed over to it.
    `node_args`: --nodes/--node-rank/--master of a multi-machine run (distributed.node_args)."""
    cmd = [sys.executable, "-m", "lora_tui.core.trainer_main", str(run.path)] + (["--resume"] if resume else [])
    cmd += node_args or []
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    extra = run_claim.spawn_kwargs(lock) if lock is not None else {"pass_fds": (), "env_extra": {}}
    env.update(extra["env_extra"])
    run.stop_path.unlink(missing_ok=True)  # an old request; one made from now on is honoured by the trainer
    run.write_status("starting", launched=round(time.time(), 3), message="starting trainer")
    with open(run.log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, pass_fds=extra["pass_fds"], env=env)
    run.write_status("starting", pid=proc.pid, message="starting trainer")
    return proc.pid


def start_run(config: Config, run_dir: str | os.PathLike | None = None, *, overwrite: bool = False,
              node_args: list[str] | None = None) -> RunDirectory:
    """Create the run directory, write config.yaml, and start the detached trainer."""
    path = plan_run_dir(config, run_dir)
    run = RunDirectory(path)
    run_claim.replaceable_entries(path, overwrite)  # early answer (nothing deleted); decided again under the claim
    _check_startable(config)
    try:
        lock = run_claim.claim(run)  # before anything is written: of two launches, one wins here
    except OSError as exc:
        raise RunError(f"cannot create {path}: {exc.strerror or exc}. Fix: check the folder's permissions "
                       "and free space.") from None
    try:
        run_claim.clear_for_start(run, overwrite)
        save_config(_absolute_data(config), run.config_path,
                    header=f"lora-tui run '{path.name}', created {datetime.now():%Y-%m-%d %H:%M:%S}.\n"
                           f"Reproduce with: lora-tui train {quoted(run.config_path)} --run-dir NEW_DIR")
        run.write_status("created")
        _spawn(run, resume=False, lock=lock, node_args=node_args)
    except OSError as exc:  # a full disk or a read-only folder: one line, and nothing half-written is kept
        for leftover in (run.config_path, run.status_path, run.path / RUN_MARKER):
            leftover.unlink(missing_ok=True)
        raise RunError(f"cannot start a run in {path}: {exc.strerror or exc}. Fix: free disk space there (or "
                       "choose another --run-dir) and start again.") from None
    finally:
        lock.close()  # the trainer holds its own copy of the lock now
    return run


def _check_plan_env() -> None:
    """A LORA_TUI_PLAN in the user's environment would have overridden the config's batch, silently (4096 rows:
    5.7 GB, 8.5 min for 2 steps): it is refused, whatever it holds."""
    from lora_tui.core.plan.run_plan import ENV_PLAN

    if os.environ.get(ENV_PLAN):
        raise RunError(f"{ENV_PLAN} is set in your environment: it is the plan lora-tui hands to the ranks of its own "
                       f"multi-device runs, never a setting. Fix: `unset {ENV_PLAN}`, and choose the batch with "
                       "training.micro_batch / training.grad_accum.")


def _check_startable(config: Config) -> None:
    """Settings and data that would fail (or hang) the trainer, refused before anything is written."""
    from lora_tui.core.data import DataError
    from lora_tui.core.data.bounds import check_regular
    from lora_tui.core.data.precheck import check_trainable_prefix

    _check_plan_env()
    if config.training.max_steps == 0:
        raise RunError("training.max_steps=0 would train nothing. Fix: a positive number of steps, or -1 to train "
                       "for training.epochs epochs.")
    from lora_tui.core.plan.family_rules import family_problem

    if problem := family_problem(config):  # an attention or batching this model's family cannot train with
        raise RunError(problem)
    from lora_tui.core.config import method_problem
    from lora_tui.core.run.init_adapter import init_adapter_dir

    if problem := method_problem(config):
        raise RunError(problem)
    init_adapter_dir(config)  # a missing, unfinished or other-base adapter: refused here
    hub = _check_hub_data(config)
    train = resolve_data_path(config.data.train)
    if config.data.train not in hub and not train.exists():
        raise RunError(f"Training data {config.data.train} does not exist. Fix: set data.train to your file.")
    if config.data.validation and config.data.validation not in hub and \
            not resolve_data_path(config.data.validation).exists():
        raise RunError(f"Validation data {config.data.validation} does not exist. Fix: set data.validation, "
                       "or leave it empty to hold out part of the training data.")
    for value in (config.data.train, config.data.validation):
        try:
            if value and value not in hub:
                check_regular(resolve_data_path(value))  # a FIFO as data would block the trainer in open() forever
                # empty, garbage, unreadable, or rows of another method's kind: refused here
                check_trainable_prefix(resolve_data_path(value), method=config.training.method)
        except DataError as exc:
            raise RunError(str(exc)) from None


def _check_hub_data(config: Config) -> set[str]:
    """The data values read through `datasets` (hub ids org/name[:split], snapshot folders). A hub id is loaded
    here once, into the HF cache: an offline machine without a cached copy, or a wrong id, split or subset,
    is refused in one line before the run directory exists, and the trainer then reads the cached copy."""
    from lora_tui.core.data import DataError
    from lora_tui.core.data.hub_data import is_hub_source, open_hub, parse_hub_id

    hub = set()
    for value in (config.data.train, config.data.validation):
        spec = parse_hub_id(value) if value else None
        if spec is None:
            if value and is_hub_source(value):  # a local snapshot folder (maybe with :split)
                hub.add(value)
            continue
        try:
            open_hub(spec, config.data.subset)
        except DataError as exc:
            raise RunError(str(exc)) from None
        hub.add(value)
    return hub


def resume_run(run_dir: str | os.PathLike) -> RunDirectory:
    """Start the trainer on an existing run. ``run.resume_note`` says which checkpoint and steps."""
    from lora_tui.core.config import ConfigError, load_config

    run = RunDirectory.find(run_dir)
    _check_plan_env()
    deadline = time.monotonic() + 15  # a trainer that has just written its end may still be exiting
    while run.is_locked() and run.read_status().get("state") in STATES_DONE and time.monotonic() < deadline:
        time.sleep(0.1)
    if run.is_locked():
        raise RunError(f"A trainer is already running in {run.path}. Fix: `lora-tui attach {quoted(run.path)}`.")
    lock = run_claim.claim(run, "resume")  # of two resumes at the same instant, one wins here
    try:
        if run.state() == "finished" or training_done(run):  # also when its finished line is torn, status garbage
            raise RunError(f"{run.path} already finished; its adapter is in {run.adapter_dir}. "
                           "Fix: start a new run, or raise training.max_steps/epochs in a copy of its config.")
        try:
            config = load_config(run.config_path)
        except ConfigError as exc:
            raise RunError(str(exc)) from None
        plan = run_claim.plan_resume(run, config)
        try:
            _spawn(run, resume=True, lock=lock)
        except OSError as exc:  # e.g. the disk is still full: one line, no temp files left
            raise RunError(f"cannot start the trainer in {run.path}: {exc.strerror or exc}. Fix: free disk space, "
                           "then resume again.") from None
    finally:
        lock.close()
    run.resume_note = plan.message
    return run


def stop_run(run: RunDirectory, wait: float = 0.0, *, kill_after_wait: bool = False,
             on_wait=None) -> str:
    """Ask the trainer to stop gracefully (checkpoint + adapter) and optionally wait for it.

    With ``kill_after_wait``, a trainer still running after `wait` seconds (the grace period,
    ``run_claim.STOP_GRACE_S`` by default in the CLI) is killed with SIGKILL; ``run.kill_note`` says so.
    ``on_wait(seconds waited)`` is called while waiting (four times a second), for a clock on screen."""
    state = run.state()
    if state in STATES_DONE:
        return state
    if state in ("dead", "created"):
        return state
    run.request_stop()
    if run.read_status().get("state") in ("starting", "running"):
        run.write_status("stopping", message="stop requested")
    began = time.monotonic()
    deadline = began + wait
    while time.monotonic() < deadline:
        state = run.state()
        # Done means the trainer has also exited (lock released), so a resume can start at once.
        if (state in STATES_DONE and not run.is_locked()) or state == "dead":
            return state
        if on_wait is not None:
            on_wait(time.monotonic() - began)
        time.sleep(0.25)
    if kill_after_wait and run.is_locked():
        run.kill_note = run_claim.kill_trainer(run, wait)
    return run.state()


def wait_until_started(run: RunDirectory, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run.is_locked() or run.read_status().get("state") in STATES_DONE:
            break
        time.sleep(0.1)
    return run.state()
