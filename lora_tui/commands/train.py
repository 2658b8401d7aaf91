"""`lora-tui train`: build the config, start the detached trainer, follow it in the foreground."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lora_tui.commands.progress import follow
from lora_tui.core.config import Config, ConfigError, apply_overrides, apply_preset, config_to_yaml, load_config
from lora_tui.core.run.runs import RunError, quoted


def is_override(word: str) -> bool:
    """`section.key=value`, as opposed to a config path (which may hold '=' in a folder name)."""
    key = word.split("=", 1)[0]
    return "=" in word and "/" not in key and not key.endswith((".yaml", ".yml")) and not Path(word).is_file()


def split_positionals(args) -> tuple[str | None, list[str]]:
    """The config file and the overrides, wherever they stood on the command line
    (argparse puts the first word in `config`, so `train lora.r=8` lands there)."""
    words = [w for w in [args.config, *args.overrides] if w is not None]
    files = [w for w in words if not is_override(w)]
    if len(files) > 1:
        raise ConfigError(f"One config file at most, got {', '.join(files)}; "
                          "overrides are section.key=value (e.g. training.max_steps=20).")
    return (files[0] if files else None), [w for w in words if is_override(w)]


def build_config(args) -> Config:
    config_path, overrides = split_positionals(args)
    config = Config()
    if args.preset:
        apply_preset(config, args.preset)
    if config_path:
        config = load_config(config_path, base=config)
    return apply_overrides(config, overrides)


def _one_key(prompt: str) -> str:
    """One key press, no Enter needed: the terminal reads keys one by one (cbreak) for that key only, and is put
    back as it was. Ctrl-C and Ctrl-D count as 'd'. Without termios (Windows) a line is read instead."""
    try:
        import termios
        import tty
    except ImportError:
        try:
            return input(prompt).strip().lower()[:1]
        except (EOFError, KeyboardInterrupt):
            return "d"
    print(prompt, end="", flush=True)
    fd = sys.stdin.fileno()
    before = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        typed = os.read(fd, 64).decode("utf-8", errors="replace")  # a whole key: an arrow is 3 bytes (ESC [ A)
    except KeyboardInterrupt:
        typed = "d"
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, before)
    key = "d" if typed in ("", "\x04") else "?" if typed.startswith("\x1b") else typed[:1]
    print(key if key.isprintable() and key != "?" else "")
    return key.strip().lower()


def _ask_on_interrupt(run) -> str:
    from lora_tui.core.run.launcher import stop_run

    if not sys.stdin.isatty():  # no terminal to ask on (a script, nohup, CI): stop, and say so
        stop_run(run)
        print("\nSIGINT (Ctrl-C) without a terminal to ask on: stopping the run gracefully (checkpoint + adapter); "
              "following it until it stops.", flush=True)
        return "stop"
    question = "\nTraining continues in the background. [s]top it, [d]etach (Enter), or [c]ontinue watching? "
    while True:
        answer = _one_key(question)
        question = "Press s, d (or Enter) or c: "  # another key (an arrow, a letter): asked again in one short line
        if answer.startswith("s"):
            stop_run(run)
            print("Stopping: saving a checkpoint and the adapter...")
            return "stop"
        if answer.startswith("d") or not answer:
            print(f"Detached. Follow with `lora-tui attach {quoted(run.path)}`, stop with `lora-tui stop {quoted(run.path)}`.")
            return "detach"
        if answer.startswith("c"):
            return "continue"


def _node_args(args) -> list[str] | None:
    """--nodes/--node-rank/--master checked here (one-line errors) and handed to the trainer."""
    from lora_tui.core.plan.devices import Nodes

    if not getattr(args, "nodes", None):
        return None
    from lora_tui.core.config import DistributedError

    try:
        Nodes(args.nodes, args.node_rank, args.master).check()
    except DistributedError as exc:
        raise ConfigError(str(exc)) from None
    return ["--nodes", str(args.nodes), "--node-rank", str(args.node_rank)] + (["--master", args.master] if args.master else [])


def run(args) -> int:
    from lora_tui.core.run.launcher import resume_run, start_run, wait_until_started

    try:
        if args.resume:
            run_dir = resume_run(args.resume)
            print(getattr(run_dir, "resume_note", f"Resuming {run_dir.path}."))
        else:
            config = build_config(args)
            if args.print_config:
                print(config_to_yaml(config), end="")
                return 0
            run_dir = start_run(config, args.run_dir, overwrite=args.overwrite, node_args=_node_args(args))
            print(f"Run directory: {run_dir.path}")
    except (ConfigError, RunError) as exc:
        print(f"lora-tui train: {exc}", file=sys.stderr)
        return 2
    if args.detach:
        wait_until_started(run_dir)
        print(f"Trainer started in the background (pid {run_dir.read_status().get('pid')}).\n"
              f"  follow: lora-tui attach {quoted(run_dir.path)}\n  stop:   lora-tui stop {quoted(run_dir.path)}")
        return 0
    return _follow_in_foreground(run_dir)


class _Terminated(Exception):
    """SIGTERM arrived while following a run in the foreground."""


def _raise_terminated(signum, frame):
    raise _Terminated()


def _follow_in_foreground(run_dir) -> int:
    """Follow until the run ends. Ctrl-C asks (or stops, without a terminal); SIGTERM stops it gracefully,
    the same choice as Ctrl-C without a terminal, and says so; a second SIGTERM leaves at once."""
    import signal

    from lora_tui.core.run.launcher import stop_run, wait_until_started

    from lora_tui.core.run.history import RunHistory

    signal.signal(signal.SIGTERM, _raise_terminated)
    started, terms = False, 0
    history = RunHistory()  # kept across Ctrl-C / SIGTERM: following again prints only what is new
    while True:
        try:
            if not started:  # a Ctrl-C here (start-up, before the first event) is honoured too
                wait_until_started(run_dir)
                started = True
            state = follow(run_dir, history=history)
            break
        except KeyboardInterrupt:
            if _ask_on_interrupt(run_dir) == "detach":
                return 0
        except _Terminated:
            terms += 1
            if terms > 1:
                print(f"\nSIGTERM again: leaving now; the trainer finishes stopping by itself "
                      f"(`lora-tui attach {quoted(run_dir.path)}`).", file=sys.stderr, flush=True)
                return 143
            stop_run(run_dir)
            print(f"\nSIGTERM: stopping the run gracefully (checkpoint + adapter), as Ctrl-C does without a "
                  f"terminal; following it until it stops. SIGTERM again leaves at once.", flush=True)
    return 0 if state in ("finished", "stopped") else 1
