"""Command-line entry point: argument parsing only.

Each subcommand's behaviour lives in ``lora_tui.commands.<name>.run(args) -> int``
(headless front-ends that call ``lora_tui.core``) or in ``lora_tui.ui`` (the
wizard). Imports are lazy so ``lora-tui --help`` and the wizard start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lora_tui import __version__


def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a dataset file or folder and report every problem")
    p.add_argument("path", help="dataset: .jsonl, .json, .csv, .parquet, a folder of .txt files, or a save_to_disk folder")
    p.add_argument("--model", default=None, help="model whose tokenizer and chat template measure token lengths (default: the embedded model)")
    p.add_argument("--max-seq-len", type=int, default=1024, help="rows longer than this many tokens are reported as truncated")
    p.add_argument("--template", choices=["auto", "chatml", "alpaca"], default="auto", help="fallback prompt format for models without a chat template")
    p.add_argument("--train-on-prompt", action="store_true", help="count prompt tokens as trained (default: responses only)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the report")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a LoRA / QLoRA adapter (default: embedded model on the sample data)")
    p.add_argument("config", nargs="?", default=None, help="a config YAML (see `lora-tui train --print-config`)")
    p.add_argument("overrides", nargs="*", default=[], help="section.key=value overrides, e.g. training.max_steps=20")
    p.add_argument("--run-dir", default=None, help="run directory (default: runs/<run name>)")
    p.add_argument("--detach", action="store_true", help="start the trainer in the background and return at once")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue a stopped, failed or killed run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="allow replacing an existing run directory")
    p.add_argument("--preset", choices=["lora", "qlora", "lora-8bit"], default=None, help="start from a preset before applying the config and overrides")
    p.add_argument("--print-config", action="store_true", help="print the resulting config as commented YAML and exit")


def _add_runs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list runs and their state")
    p.add_argument("--dir", default=None, help="folder holding run directories (default: ./runs)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("attach", help="follow a run live, or show the history of a finished one")
    p.add_argument("run", help="run directory (or its name under ./runs)")
    p.add_argument("--no-follow", action="store_true", help="print the history and exit")

    p = sub.add_parser("stop", help="stop a run gracefully: checkpoint, save the adapter, state 'stopped'")
    p.add_argument("run", help="run directory (or its name under ./runs)")
    p.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the trainer to finish stopping")


def _add_chat(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="chat with a trained adapter (or the base model)")
    p.add_argument("run", help="run directory, adapter directory, or run name")
    p.add_argument("--prompt", default=None, help="answer this one prompt and exit")
    p.add_argument("--system", default=None, help="system message")
    p.add_argument("--no-adapter", action="store_true", help="answer with the base model alone")
    p.add_argument("--both", action="store_true", help="with --prompt: answer with the adapter and with the base model")
    p.add_argument("--greedy", action="store_true", help="deterministic decoding (no sampling)")
    p.add_argument("--temperature", type=float, default=0.3)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--max-new-tokens", type=int, default=256)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="show or package a run's adapter (zip)")
    p.add_argument("run", help="run directory or run name")
    p.add_argument("--zip", action="store_true", help="write <run>/<name>-adapter.zip")
    p.add_argument("--out", default=None, help="where to write the zip")
    p.add_argument("--overwrite", action="store_true", help="replace an existing zip")

    p = sub.add_parser("merge", help="merge the adapter into the base model and save a standalone model")
    p.add_argument("run", help="run directory or run name")
    p.add_argument("out", help="output directory for the merged model")
    p.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"], default="auto")
    p.add_argument("--overwrite", action="store_true", help="allow replacing an existing output directory")


def _add_hardware(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="report GPUs (NVML), CPU, RAM and library versions")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("estimate", help="estimate peak memory of a planned run, with a verdict and fixes")
    p.add_argument("--model", default="embedded", help="catalogue name, hub id, local model directory, or 'embedded'")
    p.add_argument("--quant", choices=["4bit", "8bit", "none"], default="none")
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--targets", default="all-linear", help="'qv', 'attention', 'all-linear', or a comma list of module names")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--batch", type=int, default=4)
    gc = p.add_mutually_exclusive_group()
    gc.add_argument("--grad-checkpointing", dest="grad_checkpointing", action="store_true", default=None)
    gc.add_argument("--no-grad-checkpointing", dest="grad_checkpointing", action="store_false")
    p.add_argument("--device", default="auto", help="'auto', 'cpu', or a GPU index (cuda:0)")
    p.add_argument("--json", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lora-tui",
        description="Fine-tune a LoRA adapter from your terminal. With no command, opens the wizard.",
    )
    parser.add_argument("--version", action="version", version=f"lora-tui {__version__}")
    parser.add_argument("--model", dest="wizard_model", default=None, help="wizard: preselect this model")
    parser.add_argument("--data", dest="wizard_data", default=None, help="wizard: preselect this dataset")
    parser.add_argument("--run", dest="wizard_run", default=None, help="wizard: open this run's training screen")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("wizard", help="open the wizard (the default)")
    _add_validate(sub)
    _add_train(sub)
    _add_runs(sub)
    _add_chat(sub)
    _add_export(sub)
    _add_hardware(sub)
    return parser


# command name -> module under lora_tui.commands that has run(args) -> int
COMMANDS = {
    "validate": "validate",
    "train": "train",
    "runs": "runs",
    "attach": "runs",
    "stop": "runs",
    "chat": "chat",
    "export": "export",
    "merge": "export",
    "doctor": "hardware",
    "estimate": "hardware",
    "wizard": "wizard",
    None: "wizard",
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(f"lora_tui.commands.{COMMANDS[args.command]}")
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130
