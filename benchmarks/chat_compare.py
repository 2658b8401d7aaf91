"""What two answers side by side cost in the wizard (Chat step, ctrl+r) against headless
`lora-tui chat --compare` (issue 24 item 3), on the embedded SmolLM2-135M-Instruct with a small
adapter, greedy, the same prompt and the same conversation before it.

Headless: the core call the CLI makes (stream_sides on one ChatSession, pieces consumed as they
come). Wizard: the real app under a Textual pilot (headless driver, so the screen is laid out and
rendered, not written to a terminal) with the real backend: the chat loads, the prompt is typed,
ctrl+r, and the clock stops when both panes are done. Model loading is left out of both. Reported
per path: seconds, tokens written, seconds per token, and the wizard / headless ratio (over all rounds, and
best round against best round, since other users' load comes and goes between rounds). ``--load K``
runs K busy processes (one torch thread each) during both, as on a shared machine; the load
average is printed. Rounds alternate the order.

    python3 benchmarks/chat_compare.py [--tokens 48] [--turns 2] [--load 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
PROMPT = "How do I read a map scale?"
EARLIER = ["Hello! Who are you?", "What should I pack for a long walk?", "How far can I walk in a day?"]
BUSY = "import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\nwhile True:\n    a = (a @ a).tanh()\n"


def make_run(root: Path) -> Path:
    from lora_tui.core.model.embedded import ensure_embedded_model
    from tests.support.chat import make_adapter, make_fake_run

    base = ensure_embedded_model()
    run = make_fake_run(root, base, name="emb", with_adapter=False)
    make_adapter(base, run / "adapter", scale=0.02)
    return run


def history(session, turns: int, settings) -> dict:
    """Each side's own conversation: ``turns`` earlier prompts and that side's own greedy answers."""
    try:
        from lora_tui.core.chat.conversations import Conversations
    except ImportError:  # a tree from before issue 24 (PYTHONPATH=an older worktree): no history, compare()
        return None

    conversations = Conversations()
    for who in (session.default_adapter, "base"):
        own = conversations.of(who)
        for prompt in EARLIER[:turns]:
            own.append({"role": "user", "content": prompt})
            own.append({"role": "assistant", "content": session.reply(list(own), adapter=who, settings=settings)})
    return conversations


def headless(session, conversations, settings) -> tuple[float, int]:
    sides = (session.default_adapter, "base")
    if conversations is None:  # before issue 24
        started = time.perf_counter()
        texts = session.compare([{"role": "user", "content": PROMPT}], settings=settings, sides=sides)
        return time.perf_counter() - started, sum(len(session.tokenizer(t)["input_ids"]) for t in texts)
    from lora_tui.core.chat.conversations import stream_sides

    requests = [(who, conversations.asking(who, PROMPT)) for who in sides]
    texts = ["", ""]
    started = time.perf_counter()
    for index, piece in stream_sides(session, requests, settings=settings):
        texts[index] += piece
    return time.perf_counter() - started, sum(len(session.tokenizer(t)["input_ids"]) for t in texts)


def wizard(run: Path, conversations, tokens: int, tokenizer) -> tuple[float, int]:
    from screenshots.fixed import FixedBackend
    from tests.support.ui import wizard_at
    from tests.support.wait import until
    from textual.widgets import Input, Static

    from lora_tui.ui.backend import Backend

    class RealChat(FixedBackend):  # fixed hardware report; the chat is the real one
        def open_chat(self, run, on_progress=None):
            return Backend.open_chat(self, run, on_progress)

    result = {}

    async def go():
        async with wizard_at("chat", (80, 24), run=str(run), backend=RealChat()) as pilot:
            chat = pilot.app.screen
            await until(pilot, lambda: chat.session is not None, 600, what="the chat model")
            if conversations is not None:
                chat.conversations = conversations
            chat.query_one("#greedy").value = True
            chat.query_one("#set-max_new_tokens", Input).value = str(tokens)
            chat.query_one("#prompt", Input).value = PROMPT
            started = time.perf_counter()
            await pilot.press("ctrl+r")
            await until(pilot, lambda: not chat._busy, 3600, what="both answers", interval=0.01)
            result["seconds"] = time.perf_counter() - started
            panes = [w for w in chat.query(".compare-side Static") if type(w) is Static]
            texts = [str(w.render()).split("\n\n", 1)[-1] for w in panes]
            result["tokens"] = sum(len(tokenizer(t)["input_ids"]) for t in texts)

    asyncio.run(go())
    return result["seconds"], result["tokens"]


@contextlib.contextmanager
def busy(count: int):
    procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(count)]
    try:
        time.sleep(2 if count else 0)
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=48, help="max_new_tokens per answer")
    parser.add_argument("--turns", type=int, default=2, help="earlier turns in each side's conversation")
    parser.add_argument("--load", type=int, default=0, help="busy processes running meanwhile")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    os.chdir(REPO)
    with contextlib.suppress(ImportError):  # as the CLI does: bitsandbytes' two import-time lines (not in older trees)
        from lora_tui.core.machine.library_noise import drop_library_noise

        drop_library_noise()
    from lora_tui.core.chat.session import ChatSession, GenerationSettings

    settings = GenerationSettings(greedy=True, max_new_tokens=args.tokens)
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp))
        session = ChatSession.from_run(run, device="cpu")
        conversations = history(session, args.turns, settings)
        figures = {"headless": [], "wizard": []}
        with busy(args.load):
            for round_ in range(args.rounds):
                order = ["headless", "wizard"] if round_ % 2 == 0 else ["wizard", "headless"]
                for path in order:
                    if path == "headless":
                        seconds, tokens = headless(session, conversations, settings)
                    else:
                        seconds, tokens = wizard(run, conversations, args.tokens, session.tokenizer)
                    figures[path].append((seconds, tokens))
                    print(f"round {round_ + 1} {path:8s} {seconds:7.1f} s  {tokens:4d} tokens  "
                          f"{seconds / max(tokens, 1):.3f} s/token  load {os.getloadavg()[0]:.2f}", flush=True)
    per_token = {path: sum(s for s, _ in rows) / max(sum(t for _, t in rows), 1) for path, rows in figures.items()}
    # The best round too: on a shared machine the other users' load comes and goes between rounds.
    best = {path: min(s / max(t, 1) for s, t in rows) for path, rows in figures.items()}
    print(f"wizard / headless, seconds per token: {per_token['wizard'] / per_token['headless']:.2f} over all rounds, "
          f"{best['wizard'] / best['headless']:.2f} best round against best round "
          f"(load {args.load} busy processes, {args.turns} earlier turns, max {args.tokens} tokens)")


if __name__ == "__main__":
    main()
