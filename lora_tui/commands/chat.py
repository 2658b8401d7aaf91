"""`lora-tui chat RUN [RUN ...]`: streaming multi-turn chat in the terminal (plain input/print, no
Textual), or one answer for scripts with --prompt. Several runs load their adapters on one base;
--adapter picks which answers, --both / --compare put two answers side by side. Each answerer keeps its
own conversation (core.chat.conversations): /adapter switches to another's, never hands it one's answers. All model work is
lora_tui.core.chat.session; this module only reads lines, prints pieces, and turns ChatError into one line
and exit code 2.
"""

from __future__ import annotations

import dataclasses
import sys

from lora_tui.core.run.adapters import AdapterError
from lora_tui.core.chat.session import BASE, ChatError, ChatSession, GenerationSettings
from lora_tui.core.chat.adapters import resolve_adapters
from lora_tui.core.chat.conversations import Conversations, stream_sides

HELP = """Commands:
  /adapter on|off     answer with the adapter, or with the base model alone
  /adapter NAME       answer with another loaded adapter (by run name), or 'base'; /adapter alone lists them
                      (each answerer has its own conversation: your turns and its own answers, never another's)
  /both               answer your last prompt again with the adapter and the base model, one after the other
  /compare A B        answer your last prompt again with two loaded adapters (or one and base), same seed
  /reset              forget every conversation (the system message stays)
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


def _pick(name: str, names: list[str]) -> str:
    """A loaded adapter's name, or BASE; ValueError names the choices."""
    if name == BASE or name in names:
        return name
    raise ValueError(f"no adapter named '{name}' is loaded. Choose one of: {', '.join(names + [BASE])}.")


def _label(side: str, names: list[str]) -> str:
    if side == BASE:
        return "base model"
    return "with adapter" if len(names) == 1 else side


def run(args) -> int:
    settings = GenerationSettings(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                                  max_new_tokens=args.max_new_tokens, greedy=args.greedy)
    problem = check_settings(settings)
    if problem:
        return _error(problem)
    try:  # wrong paths, runs on different bases and unknown names fail before torch loads
        _, adapters = resolve_adapters(args.runs, require_adapter=not args.no_adapter)
        names = list(adapters)
        who = BASE if args.no_adapter or not names else _pick(args.adapter or names[0], names)
        sides = None
        if args.compare is not None:
            sides = tuple(_pick(part.strip(), names) for part in args.compare.split(","))
            if len(sides) < 2 or len(set(sides)) != len(sides):  # e.g. sft,dpo,base: a DPO run beside its start
                raise ValueError(f"--compare takes two or more different names, A,B[,C] (loaded: {', '.join(names + [BASE])}).")
            if args.prompt is None:
                raise ValueError("--compare needs --prompt; in a chat, /compare A B answers your last prompt both ways.")
    except AdapterError as exc:
        return _error(str(exc))
    except ValueError as exc:
        return _error(str(exc))
    quiet_libraries()
    try:
        session = ChatSession.from_runs(args.runs, require_adapter=not args.no_adapter,
                                        on_progress=lambda message, fraction: print(f"  {message}", file=sys.stderr))
    except AdapterError as exc:
        return _error(str(exc))
    system = [{"role": "system", "content": args.system}] if args.system else []
    if args.prompt is not None:
        return _answer_once(session, system + [{"role": "user", "content": args.prompt}], args, settings, who, sides)
    return _repl(session, system, settings, who)


def _answer_once(session: ChatSession, messages: list[dict], args, settings: GenerationSettings, who: str,
                 sides: tuple[str, str] | None) -> int:
    try:
        if args.both and not sides:
            if not session.has_adapter:
                return _error("--both needs an adapter; this run has none loaded.")
            sides = (who if who != BASE else session.default_adapter, BASE)
        if sides:
            starts = [("" if i == 0 else "\n\n") + f"[{_label(side, session.names)}]\n" for i, side in enumerate(sides)]
            _print_sides(session, [(side, messages) for side in sides], settings, starts)
        else:
            _print_stream(session.stream(messages, adapter=who, settings=settings))
    except ChatError as exc:
        return _error(str(exc))
    return 0


def _prefix(who: str, names: list[str]) -> str:
    return "base> " if who == BASE else ("adapter> " if len(names) == 1 else f"{who}> ")


def _switch(session: ChatSession, rest: str, who: str, last: str | None, histories: Conversations) -> str:
    """The answerer after `/adapter REST`; prints what changed, and whose conversation it continues."""
    names = session.names
    if not rest:
        print(f"Answering: {_label(who, names) if who == BASE or len(names) > 1 else 'the adapter'}. "
              f"Loaded: {', '.join(names) or 'no adapter'} (and {BASE}). Use /adapter on|off|NAME.")
        return who
    if rest in ("on", "off") and not (rest == "on" and not names):
        who = (last or session.default_adapter) if rest == "on" else BASE
    elif rest == "on":
        print("No adapter is loaded, so only the base model can answer.")
        return who
    else:
        try:
            who = _pick(rest, names)
        except ValueError as exc:
            print(f"Not changed: {exc}")
            return who
    turns = histories.turns(who)
    own = f"It continues its own conversation ({turns} answer{'s' if turns != 1 else ''} so far); " \
          "it never sees another's answers."
    if who == BASE:
        print(f"Answers now come from the base model alone. {own}")
    else:
        print(("Answers now come from the adapter. " if len(names) == 1 else f"Answers now come from {who}. ") + own)
    return who


def _repl(session: ChatSession, system: list[dict], settings: GenerationSettings, who: str) -> int:
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    source = session.source
    if len(session.names) > 1:
        where = f"{len(session.names)} adapters ({', '.join(session.names)})"
    else:
        where = source.adapter_dir if source and source.adapter_dir else "no adapter"
    print(f"Chatting with {source.base_model if source else 'the model'} + {where}"
          + (f" ({source.note})" if source and source.note else "") + ". /help for commands.")
    histories = Conversations()
    last = who if who != BASE else None
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
                who = _switch(session, rest, who, last, histories)
                last = who if who != BASE else last
            elif command == "/reset":
                histories.clear()
                print("Conversation cleared. Every answerer starts afresh.")
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
                _both(session, system, histories, who, settings, (last or session.default_adapter, BASE))
            elif command == "/compare":
                try:
                    sides = tuple(_pick(name, session.names) for name in rest.replace(",", " ").split())
                    if len(sides) != 2 or sides[0] == sides[1]:
                        raise ValueError(f"/compare takes two different names (loaded: "
                                         f"{', '.join(session.names + [BASE])}).")
                except ValueError as exc:
                    print(f"Not compared: {exc}")
                    continue
                _both(session, system, histories, who, settings, sides)
            else:
                print(f"Unknown command {command}. /help lists them.")
            continue
        history = histories.of(who)
        history.append({"role": "user", "content": line})
        print(_prefix(who, session.names), end="", flush=True)
        try:
            answer = _print_stream(session.stream(system + history, adapter=who, settings=settings))
        except ChatError as exc:
            print(f"\n{exc}")
            history.pop()
            continue
        history.append({"role": "assistant", "content": answer})


def _both(session: ChatSession, system: list[dict], histories: Conversations, who: str,
          settings: GenerationSettings, sides: tuple[str | None, str]) -> None:
    """Answer the last prompt of ``who``'s conversation again by both ``sides``, each from its own conversation."""
    if not session.has_adapter:
        print("No adapter is loaded, so there is nothing to compare.")
        return
    prompt = histories.last_prompt(who)
    if prompt is None:
        print("Ask something first; /both and /compare answer your last prompt again, two ways.")
        return
    width = max(len(_prefix(side, session.names)) for side in sides)
    starts = [("" if i == 0 else "\n") + _prefix(side, session.names).ljust(width) for i, side in enumerate(sides)]
    try:
        _print_sides(session, [(side, system + histories.asking(side, prompt)) for side in sides], settings, starts)
    except ChatError as exc:
        print(f"\n{exc}")


def _print_sides(session: ChatSession, requests: list[tuple[str, list[dict]]], settings: GenerationSettings,
                 starts: list[str]) -> None:
    """Stream each side's answer as it comes, ``starts[i]`` printed where side i begins (an empty answer's too)."""
    shown = -1

    def reach(index: int) -> None:
        nonlocal shown
        while shown < index:
            shown += 1
            print(starts[shown], end="", flush=True)

    try:
        for index, piece in stream_sides(session, requests, settings=settings):
            reach(index)
            print(piece, end="", flush=True)
        reach(len(requests) - 1)
    except KeyboardInterrupt:
        print(" [stopped]", end="")
    print(flush=True)
