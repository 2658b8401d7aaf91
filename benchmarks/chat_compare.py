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

    flock /tmp/lora_tui_heavy.lock python3 benchmarks/chat_compare.py [--tokens 48] [--turns 2] [--load 2] [--rounds 2]
    python3 benchmarks/chat_compare.py --ui-only [--tokens 100]   # the wizard's own CPU per token, no model
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
            # The wizard's start-up work (data check, estimate, catalogue, imports) done first, as it is long
            # before a user's ctrl+r: it took half a core for seconds and ran into the clock.
            await until(pilot, lambda: not [w for w in pilot.app.workers if not w.is_finished and w.group != "follow"],
                        600, what="the wizard's start-up work", interval=0.25)
            if conversations is not None:
                chat.conversations = conversations
            chat.query_one("#greedy").value = True
            chat.query_one("#set-max_new_tokens", Input).value = str(tokens)
            chat.query_one("#prompt", Input).value = PROMPT
            # The clock stops in the screen's own handler when the last pane is done, so the wait below can look
            # rarely: a pilot looking every 10 ms took ~13 % of a core from the model (a look is a full
            # message-queue round). A tree from before issue 24 has no such handler: looked at every 50 ms.
            finished = []
            if hasattr(chat, "_compare_progress"):
                handler = chat._compare_progress

                def timed(message):
                    handler(message)
                    if not chat._busy and not finished:
                        finished.append(time.perf_counter())

                chat._compare_progress = timed
            started = time.perf_counter()
            await pilot.press("ctrl+r")
            await until(pilot, lambda: not chat._busy, 3600, what="both answers",
                        interval=0.25 if hasattr(chat, "_compare_progress") else 0.05)
            result["seconds"] = (finished[0] if finished else time.perf_counter()) - started
            panes = [w for w in chat.query(".compare-side Static") if type(w) is Static]
            texts = [str(w.render()).split("\n\n", 1)[-1] for w in panes]
            result["tokens"] = sum(len(tokenizer(t)["input_ids"]) for t in texts)

    asyncio.run(go())
    return result["seconds"], result["tokens"]


def ui_only(tokens: int, gap: float) -> None:
    """The wizard's own CPU while it streams a comparison: a stand-in model (no torch work) writes ``tokens``
    words per side, one every ``gap`` seconds; the process's CPU time over that is the UI's (repaints, messages,
    the pilot's looks every 0.25 s), per token and as a share of a core. Light: needs no lock."""
    import torch  # noqa: F401  (imported before the clock, as in a wizard that has loaded a chat model)
    from screenshots.fixed import FakeSource, FixedBackend, snapshot_state
    from tests.support.wait import until
    from textual.widgets import Input

    from lora_tui.ui.app import make_app

    class StandIn:
        has_adapter, device, source, default_adapter = True, "cpu", FakeSource(), "adapter"

        def stream(self, messages, *, adapter=None, settings=None, should_stop=None, prompt_format=None, **_):
            for index in range(tokens):
                if should_stop is not None and should_stop():
                    return
                time.sleep(gap)
                yield f" word{index}"

    session = StandIn()

    class Backend(FixedBackend):
        def open_chat(self, run, on_progress=None):
            return session

    app = make_app(run="tests/snapshot_apps/runs/capn-lora-demo", state=snapshot_state(), backend=Backend())

    async def go():
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.current_mode == "training", 60)
            app.goto("chat")
            await until(pilot, lambda: app.current_mode == "chat" and app.screen.session is session, 60)
            await until(pilot, lambda: not [w for w in app.workers if not w.is_finished and w.group != "follow"],
                        120, what="the wizard's start-up work (warm imports)", interval=0.25)
            chat = app.screen
            for what in ("idle", "compare", "idle", "compare"):  # the second of each is the figure
                cpu, wall = time.process_time(), time.perf_counter()
                if what == "idle":
                    await pilot.pause(5.0)
                else:
                    chat.query_one("#prompt", Input).value = PROMPT
                    await pilot.press("ctrl+r")
                    await until(pilot, lambda: not chat._busy, 600, interval=0.25)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                per_token = f" = {1000 * cpu / (2 * tokens):.1f} ms per token" if what == "compare" else ""
                print(f"UI only, {what}: {wall:.1f} s, the wizard's CPU {cpu:.2f} s{per_token}, "
                      f"{100 * cpu / wall:.0f} % of a core (load {os.getloadavg()[0]:.2f})", flush=True)

    asyncio.run(go())


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
    parser.add_argument("--ui-only", action="store_true",
                        help="no model: the wizard's own CPU per streamed token, with a stand-in that writes a word "
                             "every 50 ms (--tokens words a side; light, no lock needed)")
    args = parser.parse_args()
    os.chdir(REPO)
    if args.ui_only:
        return ui_only(args.tokens, 0.05)
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
