"""Command-line entry point: argument parsing only.

Each subcommand's behaviour lives in ``lora_tui.commands.<name>.run(args) -> int``
(headless front-ends that call ``lora_tui.core``) or in ``lora_tui.ui`` (the
wizard). Imports are lazy so ``lora-tui --help`` and the wizard start fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from lora_tui import __version__

EPILOG = """\
exit codes:
  0    done (validate: at least one row can be trained; train, attach, stop: the run finished or stopped)
  1    the work did not succeed: the run failed or was killed, no row of the dataset can be
       trained, the planned run will not fit (estimate)
  2    bad input, nothing changed: a wrong option, config value, file, model or run (one line says which)
  130  interrupted with Ctrl-C

shell completion (bash; zsh and tcsh too):
  lora-tui --print-completion bash > ~/.local/share/bash-completion/completions/lora-tui
"""

ESTIMATE_DESCRIPTION = """\
Estimate the peak memory of the run `lora-tui train` would start from the same
config, preset and section.key=value overrides; judge it against the GPU (or the
RAM); print each fix as the `lora-tui train ...` line that applies it. The
--model/--quant/--r/... flags are shorthands for overrides and win over them.
"""
ESTIMATE_EPILOG = """\
exit codes:
  0    the plan fits (or is tight: it may run; the fixes are listed)
  1    the plan will not fit; each fix is printed as the `lora-tui train ...` line that applies it
  2    bad input: a wrong option, config value or model (one line says which)
"""

# shtab's completion actions, written out so building the parser never imports shtab.
FILE = {"bash": "_shtab_compgen_files", "zsh": "_files", "tcsh": "f"}
DIRECTORY = {"bash": "_shtab_compgen_dirs", "zsh": "_files -/", "tcsh": "d"}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends "(default: X)" to an option's help unless the text already names its
    default, or the option is an on/off flag or has no default (its help says what then)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text.lower() or action.nargs == 0 or not action.option_strings
                or action.default in (None, argparse.SUPPRESS)):
            return text
        return text + " (default: %(default)s)"


def seconds(text: str) -> float:
    """An argparse type: a number of seconds, 0 or more (nan, inf and negatives are refused, not acted on)."""
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more, not '{text[:40]}'")
    return value


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser: positionals may come anywhere among the options, so
    `train cfg.yaml --print-config training.max_steps=5` reads the override too."""

    _intermixing = False

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        # parse_known_intermixed_args calls parse_known_args itself on Python < 3.13.
        if self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a dataset file or folder and report every problem")
    p.add_argument("path", help="dataset: .jsonl, .json, .csv, .parquet, a folder of .txt files, a save_to_disk folder, or a hub dataset id org/name[:split]").complete = FILE
    p.add_argument("--subset", default=None, help="config name (subset) of a hub dataset (default: its default config)")
    p.add_argument("--model", default=None, help="model whose tokenizer and chat template measure token lengths (default: the embedded model)")
    from lora_tui.core.config import DataSection  # training's data.max_seq_len: validate measures what train will cut

    p.add_argument("--max-seq-len", type=int, default=DataSection().max_seq_len,
                   help="rows longer than this many tokens are reported as truncated, as training's data.max_seq_len")
    p.add_argument("--template", choices=["auto", "chatml", "alpaca"], default="auto", help="fallback prompt format for models without a chat template")
    p.add_argument("--train-on-prompt", action="store_true", help="count prompt tokens as trained (default: responses only)")
    p.add_argument("--method", choices=["auto", "sft", "dpo", "kto"], default="auto", help="check the rows as training.method would read them (default: auto, from the rows: preference pairs dpo, labelled rows kto, else sft)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the report (default: the report)")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a LoRA / QLoRA adapter (default: embedded model on the sample data)")
    p.add_argument("config", nargs="?", default=None, help="a config YAML (see `lora-tui train --print-config`; default: the built-in defaults)").complete = FILE
    p.add_argument("overrides", nargs="*", default=[], help="section.key=value overrides, anywhere on the line, e.g. training.max_steps=20")
    p.add_argument("--run-dir", default=None, help="run directory (default: <output.runs_dir, else $LORA_TUI_RUNS, else ./runs>/<run name>)").complete = DIRECTORY
    p.add_argument("--detach", action="store_true", help="start the trainer in the background and return at once")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue a stopped, failed or killed run from its last checkpoint (default: start a new run)").complete = DIRECTORY
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory (only a lora-tui run: never another folder)")
    p.add_argument("--preset", choices=["lora", "qlora", "lora-8bit"], default=None, help="start from a preset before applying the config and overrides (default: none, the built-in defaults)")
    p.add_argument("--print-config", action="store_true", help="print the resulting config as commented YAML and exit")
    p.add_argument("--nodes", type=int, default=None, metavar="N", help="machines taking part in this run (default: 1, this machine); run the same command on each")
    p.add_argument("--node-rank", type=int, default=0, metavar="R", help="this machine's place among --nodes, 0 to N-1; node 0 writes the run directory (default: 0)")
    p.add_argument("--master", default=None, metavar="ADDR:PORT", help="address of node 0 that every node can reach, e.g. 10.0.0.1:29500 (default: none; needed with --nodes > 1)")


def _add_runs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list runs and their state")
    p.add_argument("--dir", default=None, help="folder holding run directories (default: $LORA_TUI_RUNS, else ./runs)").complete = DIRECTORY
    p.add_argument("--json", action="store_true", help="print one JSON object per run (default: a table)")

    p = sub.add_parser("attach", help="follow a run live, or show the history of a finished one")
    p.add_argument("run", help="run directory, or its name under $LORA_TUI_RUNS (else ./runs)").complete = DIRECTORY
    p.add_argument("--no-follow", action="store_true", help="print the history and exit (default: follow a live run)")

    p = sub.add_parser("stop", help="stop a run gracefully: checkpoint, save the adapter, state 'stopped'")
    p.add_argument("run", help="run directory, or its name under $LORA_TUI_RUNS (else ./runs)").complete = DIRECTORY
    p.add_argument("--wait", type=seconds, default=120.0, help="seconds to wait for the trainer to finish stopping; after that it is killed (SIGKILL, no adapter saved)")


def _add_chat(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="chat with trained adapters (or the base model)")
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run directory, adapter directory, or run name; several load each adapter on one base model "
                        "(their bases must be the same), named after their run folders").complete = DIRECTORY
    p.add_argument("--prompt", default=None, help="answer this one prompt and exit (default: an interactive chat)")
    p.add_argument("--system", default=None, help="system message (default: none)")
    p.add_argument("--adapter", default=None, metavar="NAME", help="which loaded adapter answers, by run folder name, or 'base' (default: the first RUN's)")
    p.add_argument("--no-adapter", action="store_true", help="answer with the base model alone (default: with the adapter)")
    p.add_argument("--both", action="store_true", help="with --prompt: answer with the adapter and with the base model")
    p.add_argument("--compare", default=None, metavar="A,B[,C]", help="with --prompt: answer with two or more of the loaded adapters (and 'base') with the same seed, e.g. run-a,run-b or sft,dpo,base (default: one answer)")
    p.add_argument("--greedy", action="store_true", help="deterministic decoding (default: sampling)")
    p.add_argument("--temperature", type=float, default=0.3, help="sampling temperature; higher is more varied")
    p.add_argument("--top-p", type=float, default=0.9, help="sample from the smallest set of tokens whose probabilities add up to this")
    p.add_argument("--top-k", type=int, default=40, help="sample from this many most likely tokens (0: no limit)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="longest answer in tokens")


def _add_export(sub: argparse._SubParsersAction) -> None:
    from lora_tui.core.export.formats import EXPORT_FORMATS, export_format, pushable

    p = sub.add_parser("export", help="show or package a run's adapter (zip)")
    p.add_argument("run", help="the adapter to use: run directory or run name (its final adapter), or an adapter folder such as RUN/checkpoints/checkpoint-N").complete = DIRECTORY
    for fmt in EXPORT_FORMATS:  # one flag per format `export` writes: lora_tui/core/export/formats.py
        if fmt.flag:
            p.add_argument(fmt.flag, action="store_true", help=fmt.help)
        if fmt.flag and fmt.option_flag:
            p.add_argument(fmt.option_flag, choices=fmt.options, default=fmt.default, help=fmt.option_help)
    p.add_argument("--out", default=None, help="where to write the zip or GGUF (default: <run>/<name>-adapter.zip, <run>/gguf/)").complete = FILE
    p.add_argument("--overwrite", action="store_true", help="replace an existing zip or GGUF file (only one lora-tui wrote)")
    _add_export_checks(p, gguf=True)

    p = sub.add_parser("merge", help="merge the adapter into the base model and save a standalone model")
    p.add_argument("run", help="the adapter to use: run directory or run name (its final adapter), or an adapter folder such as RUN/checkpoints/checkpoint-N").complete = DIRECTORY
    p.add_argument("out", help="output directory for the merged model").complete = DIRECTORY
    merged = export_format("merged")
    p.add_argument("--dtype", choices=merged.options, default=merged.default, help=merged.option_help)
    p.add_argument("--overwrite", action="store_true", help="replace an existing merged model folder (only one lora-tui wrote)")
    _add_export_checks(p, gguf=False)

    p = sub.add_parser("push", help="upload the adapter (or merged model / GGUF) to the Hugging Face Hub")
    p.add_argument("run", help="run directory or run name").complete = DIRECTORY
    p.add_argument("repo_id", help="hub repository, e.g. your-name/my-adapter")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    for fmt in pushable():  # e.g. --merged, --gguf
        p.add_argument(fmt.push_flag, action="store_true", help=fmt.push_help)
    p.add_argument("--dry-run", action="store_true", help="list what would be uploaded; send nothing")


def _add_export_checks(p: argparse.ArgumentParser, gguf: bool) -> None:
    """Options of lora_tui.commands.export shared by export and merge (issue 11)."""
    if gguf:
        p.add_argument("--check-runtime", choices=["auto", "llama.cpp", "transformers"], default="auto",
                       help='what runs the GGUF in the round-trip check; auto: llama.cpp when installed '
                            '(pip install "lora-tui[llamacpp]"), else transformers\' GGUF loader')
    p.add_argument("--check-prompts", default=None, metavar="FILE",
                   help="round-trip check prompts: one per line, or a chat JSONL (default: the run's validation data)")
    p.add_argument("--no-check", action="store_true", help="skip loading the export back and comparing it with the adapter")


def _add_hardware(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="report GPUs (NVML), CPU, RAM and library versions")
    p.add_argument("--json", action="store_true", help="print one JSON object (default: the report)")

    p = sub.add_parser("estimate", help="estimate peak memory of a planned run, with a verdict and fixes",
                       description=ESTIMATE_DESCRIPTION,
                       epilog=ESTIMATE_EPILOG)
    p.add_argument("config", nargs="?", default=None, help="a config YAML, as for train (default: the built-in defaults)").complete = FILE
    p.add_argument("overrides", nargs="*", default=[], help="section.key=value overrides, as for train, e.g. training.micro_batch=2")
    p.add_argument("--preset", choices=["lora", "qlora", "lora-8bit"], default=None, help="start from a preset, as for train (default: none, the built-in defaults)")
    p.add_argument("--model", default=None, help="model.name: catalogue name, hub id, local model directory, or 'embedded' (default: the config's)")
    p.add_argument("--quant", choices=["4bit", "8bit", "16bit", "none"], default=None, help="model.load_in: base weights in 4-bit NF4 (QLoRA), 8-bit, or 16-bit (none) (default: the config's)")
    p.add_argument("--r", type=int, default=None, help="lora.r, the LoRA rank (default: the config's)")
    p.add_argument("--targets", default=None, help="lora.targets: 'qv', 'attention', 'all-linear', or a comma list of module names (default: the config's)")
    p.add_argument("--seq-len", type=int, default=None, help="data.max_seq_len, tokens per row (default: the config's)")
    p.add_argument("--batch", default=None, help="training.micro_batch, rows per forward pass, or auto (default: the config's)")
    gc = p.add_mutually_exclusive_group()
    gc.add_argument("--grad-checkpointing", dest="grad_checkpointing", action="store_true", default=None,
                    help="training.gradient_checkpointing=true: recompute activations in the backward pass (default: the config's)")
    gc.add_argument("--no-grad-checkpointing", dest="grad_checkpointing", action="store_false", help="training.gradient_checkpointing=false")
    p.add_argument("--device", default="auto", help="'auto' (GPU 0, else the CPU, as train does), 'cpu', or a GPU index (cuda:0)")
    p.add_argument("--json", action="store_true", help="print one JSON object (default: the report)")


BENCH_DESCRIPTION = """\
Time N optimiser steps of `lora-tui train` (your config, its defaults) against a plain TRL
SFTTrainer script with TRL's defaults, and the same with TRL's packing, on your model, data and
device. Each arm runs in its own process. Prints non-padding tokens/s, peak memory (GPU:
max_memory_reserved; CPU: max RSS), MFU on a GPU, lora-tui's memory estimate against its measured
peak, and the ratios.
"""


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="lora-tui train against plain TRL on your model, data and device: tokens/s, memory, MFU",
                       description=BENCH_DESCRIPTION)
    p.add_argument("config", nargs="?", default=None, help="a config YAML, as for train (default: the built-in defaults)").complete = FILE
    p.add_argument("overrides", nargs="*", default=[], help="section.key=value overrides, as for train, e.g. data.train=my.jsonl")
    p.add_argument("--preset", choices=["lora", "qlora", "lora-8bit"], default=None, help="start from a preset, as for train (default: none, the built-in defaults)")
    p.add_argument("--model", default=None, help="model.name: hub id, local model directory, or 'embedded' (default: the config's)")
    p.add_argument("--steps", type=int, default=12, help="optimiser steps per arm (the packed TRL arm runs half as many)")
    p.add_argument("--arms", default="ours,trl,trl_packing", help="comma list of ours, trl, trl_packing (dpo / kto: no trl_packing)")
    p.add_argument("--method", choices=["sft", "dpo", "kto"], default=None, help="training.method of every arm: dpo / kto against TRL's DPOTrainer / KTOTrainer (default: the config's, sft; dpo without data.train: the sample pairs)")
    p.add_argument("--batch", type=int, default=None, help="pin every arm's micro-batch to this (default: each its own default)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: the GPU when there is one, else the CPU")
    p.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 TFLOP/s for MFU (default: known for H200/H100/A100/L40S/L4/A10)")
    p.add_argument("--timeout", type=float, default=None, help="seconds each arm may run (default: no limit)")
    p.add_argument("--json", action="store_true", help="print one JSON object (default: the table)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lora-tui",
        description="Fine-tune a LoRA adapter from your terminal. With no command, opens the wizard.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lora-tui {__version__}")
    parser.add_argument("--model", dest="wizard_model", default=None, metavar="MODEL",
                        help="wizard: preselect this model; also the model of train, validate and estimate (default: none)")
    parser.add_argument("--data", dest="wizard_data", default=None, metavar="DATA",
                        help="wizard: preselect this dataset; also train's data.train (default: none)").complete = FILE
    parser.add_argument("--run", dest="wizard_run", default=None, metavar="RUN",
                        help="wizard: open this run's training screen (default: none)").complete = DIRECTORY
    parser.add_argument("--print-completion", choices=["bash", "zsh", "tcsh"], default=None, metavar="SHELL",
                        help="print the completion script for SHELL (bash, zsh or tcsh) and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    sub.add_parser("wizard", help="open the wizard (the default)")
    _add_validate(sub)
    _add_train(sub)
    _add_runs(sub)
    _add_chat(sub)
    _add_export(sub)
    _add_hardware(sub)
    _add_bench(sub)
    return parser


# command name -> module under lora_tui.commands that has run(args) -> int, imported by name (command_module)
COMMANDS = {
    "validate": "validate",
    "train": "train",
    "runs": "runs",
    "attach": "runs",
    "stop": "runs",
    "chat": "chat",
    "export": "export",
    "merge": "export",
    "push": "push",
    "doctor": "hardware",
    "estimate": "hardware",
    "bench": "bench",
    "wizard": "wizard",
    None: "wizard",
}


def command_module(command: str | None) -> str:
    """The module that runs ``command``: main() imports only that one; tests/test_import_layers.py reads the
    CLI's edges to the commands from here, so the import map sees them."""
    return f"lora_tui.commands.{COMMANDS[command]}"


# Top-level options that also mean something to a command: an attribute of its
# namespace (set when the command's own option was left at its default) or a
# config override put before the command's own. Elsewhere they are refused, never ignored.
TOP_LEVEL_USES = {
    "validate": {"--model": "model"},
    "train": {"--model": "model.name", "--data": "data.train"},
    "estimate": {"--model": "model"},
    "bench": {"--model": "model", "--data": "data.train"},
}


def apply_top_level_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.command in (None, "wizard"):
        return
    given = {"--model": args.wizard_model, "--data": args.wizard_data, "--run": args.wizard_run}
    subparser = parser._subparsers._group_actions[0].choices[args.command]
    uses = TOP_LEVEL_USES.get(args.command, {})
    for option, value in given.items():
        if value is None:
            continue
        target = uses.get(option)
        if target is None:
            takers = [name for name, opts in TOP_LEVEL_USES.items() if option in opts]
            parser.error(f"{option} before '{args.command}' has no meaning there (it is for the wizard"
                         f"{' and ' + ', '.join(takers) if takers else ''}); remove it or put the command's own arguments after '{args.command}'.")
        if "." in target:
            args.overrides = [f"{target}={value}", *getattr(args, "overrides", [])]
            continue
        current, default = getattr(args, target), subparser.get_default(target)
        if current not in (default, value):
            parser.error(f"{option} given twice, as {value} before '{args.command}' and as {current} after it; keep one.")
        setattr(args, target, value)


def name_too_long(exc: OSError) -> str:
    """One line for ENAMETOOLONG (a value typed as a path with a component over the file system's 255 bytes)."""
    path = str(exc.filename or "")
    longest = max(path.split("/"), key=lambda part: len(part.encode(errors="replace")), default="")
    shown = f"'{longest[:40]}...' ({len(longest.encode(errors='replace'))} bytes)" if longest else "a name"
    return (f"{shown} is too long for a file or folder name (the limit is 255 bytes per name), so it cannot be a "
            "path here. Fix: shorten that name, or check the value (a missing `=` or quote can glue words together).")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.print_completion:
        import shtab

        print(shtab.complete(parser, shell=args.print_completion))
        return 0
    apply_top_level_options(parser, args)
    from lora_tui.core.machine.library_noise import drop_library_noise

    drop_library_noise()  # bitsandbytes' two import-time lines in doctor, chat, merge, the wizard
    module = importlib.import_module(command_module(args.command))
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lora-tui runs | head`: the reader left; no traceback, like other Unix tools
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's exit flush must not fail again
        return 141
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
        print(f"lora-tui {args.command or 'wizard'}: {name_too_long(exc)}", file=sys.stderr)
        return 2
