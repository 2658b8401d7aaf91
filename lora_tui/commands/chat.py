"""`lora-tui chat RUN`: streaming multi-turn chat in the terminal (plain input/print, no Textual),
or one answer for scripts with --prompt. All model work is lora_tui.core.chat; this module
only reads lines, prints pieces, and turns ChatError into one line and exit code 2.
"""

from __future__ import annotations

import dataclasses
import sys

from lora_tui.core.adapters import AdapterError, find_adapter
from lora_tui.core.chat import ChatError, ChatSession, GenerationSettings

HELP = """Commands:
  /adapter on|off     answer with the adapter, or with the base model alone
  /both               answer your last prompt again with both, one after the other
  /reset              forget the conversation (the system message stays)
  /system TEXT        set the system message (/system alone removes it)
  /settings [k=v ...] show or change temperature, top_p, top_k, max_new_tokens, greedy, repetition_penalty, seed
  /help               this list
  /quit               leave (Ctrl-D works too; Ctrl-C stops an answer)"""


def quiet_libraries() -> None:
    """Progress bars and library warnings would bury the answer in the terminal."""
    import logging
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)


def _error(message: str) -> int:
    print(f"lora-tui chat: {message}", file=sys.stderr)
    return 2


def check_settings(settings: GenerationSettings) -> str | None:
    """Why these settings cannot be used, or None."""
    if not settings.greedy and not settings.temperature > 0:
        return "temperature must be above 0 (or use --greedy)."
    if not 0 < settings.top_p <= 1:
        return "top_p must be in (0, 1]."
    if settings.top_k < 0:
        return "top_k must be 0 (off) or more."
    if settings.max_new_tokens < 1:
        return "max_new_tokens must be at least 1."
    if settings.repetition_penalty <= 0:
        return "repetition_penalty must be above 0 (1.0 = off)."
    return None


def change_settings(settings: GenerationSettings, items: list[str]) -> GenerationSettings:
    """Apply 'key=value' words; raises ValueError with a plain reason."""
    kinds = {f.name: f.type for f in dataclasses.fields(GenerationSettings)}
    changes: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in kinds:
            raise ValueError(f"'{item}' is not key=value with a key among {', '.join(kinds)}.")
        kind = str(kinds[key])
        try:
            if "bool" in kind:
                if value.lower() not in ("true", "false", "on", "off", "1", "0"):
                    raise ValueError
                changes[key] = value.lower() in ("true", "on", "1")
            elif key == "seed" and value.lower() in ("", "none", "off"):
                changes[key] = None
            else:
                changes[key] = (int if "int" in kind else float)(value)
        except ValueError:
            raise ValueError(f"{key}: '{value}' is not a valid value.") from None
    new = dataclasses.replace(settings, **changes)
    problem = check_settings(new)
    if problem:
        raise ValueError(problem)
    return new


def _print_stream(pieces) -> str:
    text = []
    try:
        for piece in pieces:
            text.append(piece)
            print(piece, end="", flush=True)
    except KeyboardInterrupt:
        print(" [stopped]", end="")
    print(flush=True)
    return "".join(text)


def run(args) -> int:
    settings = GenerationSettings(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                                  max_new_tokens=args.max_new_tokens, greedy=args.greedy)
    problem = check_settings(settings)
    if problem:
        return _error(problem)
    try:
        find_adapter(args.run, require_adapter=not args.no_adapter)  # a wrong path fails before torch loads
    except AdapterError as exc:
        return _error(str(exc))
    quiet_libraries()
    try:
        session = ChatSession.from_run(args.run, require_adapter=not args.no_adapter,
                                       on_progress=lambda message, fraction: print(f"  {message}", file=sys.stderr))
    except AdapterError as exc:
        return _error(str(exc))
    system = [{"role": "system", "content": args.system}] if args.system else []
    if args.prompt is not None:
        return _answer_once(session, system + [{"role": "user", "content": args.prompt}], args, settings)
    return _repl(session, system, settings, use_adapter=session.has_adapter and not args.no_adapter)


def _answer_once(session: ChatSession, messages: list[dict], args, settings: GenerationSettings) -> int:
    try:
        if args.both:
            if not session.has_adapter:
                return _error("--both needs an adapter; this run has none loaded.")
            with_adapter, base = session.compare(messages, settings=settings)
            print(f"[with adapter]\n{with_adapter}\n\n[base model]\n{base}")
        else:
            _print_stream(session.stream(messages, use_adapter=not args.no_adapter, settings=settings))
    except ChatError as exc:
        return _error(str(exc))
    return 0


def _repl(session: ChatSession, system: list[dict], settings: GenerationSettings, use_adapter: bool) -> int:
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    source = session.source
    where = source.adapter_dir if source and source.adapter_dir else "no adapter"
    print(f"Chatting with {source.base_model if source else 'the model'} + {where}"
          + (f" ({source.note})" if source and source.note else "") + ". /help for commands.")
    history: list[dict] = []
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not line:
            continue
        if line.startswith("/"):
            command, _, rest = line.partition(" ")
            rest = rest.strip()
            if command in ("/quit", "/exit", "/q"):
                return 0
            if command == "/help":
                print(HELP)
            elif command == "/adapter":
                if rest not in ("on", "off"):
                    print(f"Adapter is {'on' if use_adapter else 'off'}. Use /adapter on or /adapter off.")
                elif rest == "on" and not session.has_adapter:
                    print("No adapter is loaded, so only the base model can answer.")
                else:
                    use_adapter = rest == "on"
                    print(f"Answers now come from the {'adapter' if use_adapter else 'base model alone'}.")
            elif command == "/reset":
                history = []
                print("Conversation cleared.")
            elif command == "/system":
                system = [{"role": "system", "content": rest}] if rest else []
                print(f"System message {'set' if rest else 'removed'}.")
            elif command == "/settings":
                try:
                    settings = change_settings(settings, rest.split()) if rest else settings
                    print(settings.describe())
                except ValueError as exc:
                    print(f"Not changed: {exc}")
            elif command == "/both":
                _both(session, system, history, settings)
            else:
                print(f"Unknown command {command}. /help lists them.")
            continue
        history.append({"role": "user", "content": line})
        print("adapter> " if use_adapter else "base> ", end="", flush=True)
        try:
            answer = _print_stream(session.stream(system + history, use_adapter=use_adapter, settings=settings))
        except ChatError as exc:
            print(f"\n{exc}")
            history.pop()
            continue
        history.append({"role": "assistant", "content": answer})


def _both(session: ChatSession, system: list[dict], history: list[dict], settings: GenerationSettings) -> None:
    if not session.has_adapter:
        print("No adapter is loaded, so there is nothing to compare.")
        return
    last_user = max((i for i, m in enumerate(history) if m["role"] == "user"), default=None)
    if last_user is None:
        print("Ask something first; /both answers your last prompt with and without the adapter.")
        return
    messages = system + history[:last_user + 1]
    if settings.seed is None and not settings.greedy:  # one seed for both, so only the adapter differs
        import random

        settings = dataclasses.replace(settings, seed=random.randrange(2**31))
    try:
        print("adapter> ", end="", flush=True)
        _print_stream(session.stream(messages, use_adapter=True, settings=settings))
        print("base>    ", end="", flush=True)
        _print_stream(session.stream(messages, use_adapter=False, settings=settings))
    except ChatError as exc:
        print(f"\n{exc}")
