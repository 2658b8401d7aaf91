"""Who sees what when several answer in one chat, for the wizard's Chat step and `lora-tui chat`.

Each answerer (a loaded adapter by name, or "base", the base model alone) keeps its own
conversation: your turns and its own answers. Switching who answers never hands one answerer
another's replies, so the base model cannot copy an adapter's "Ahoy!" from the history and make
the adapter look leaked. ``stream_sides`` answers one prompt by two answerers, one after the other,
streamed, with one sampling seed, and stops between pieces when asked.

Must not print, import textual, or import torch / transformers at module top (the wizard's Chat
step imports it).
"""

from __future__ import annotations

import dataclasses
import random
from typing import Callable, Iterator


class Conversations:
    """Each answerer's own conversation (a list of chat messages, without the system message)."""

    def __init__(self) -> None:
        self._by: dict[str, list[dict]] = {}

    def of(self, who: str) -> list[dict]:
        """``who``'s conversation (the list itself: append to it)."""
        return self._by.setdefault(who, [])

    def turns(self, who: str) -> int:
        """How many answers ``who`` has given in its conversation."""
        return sum(1 for message in self._by.get(who, []) if message["role"] == "assistant")

    def last_prompt(self, who: str) -> str | None:
        return next((m["content"] for m in reversed(self._by.get(who, [])) if m["role"] == "user"), None)

    def asking(self, who: str, prompt: str) -> list[dict]:
        """The messages ``who`` answers ``prompt`` from: its own conversation, then the prompt. A prompt that
        is already its last turn is asked again (its answer left out), not asked twice."""
        own = list(self._by.get(who, []))
        if own and own[-1]["role"] == "assistant" and len(own) > 1 and own[-2] == {"role": "user", "content": prompt}:
            return own[:-1]
        if own and own[-1] == {"role": "user", "content": prompt}:
            return own
        return own + [{"role": "user", "content": prompt}]

    def clear(self) -> None:
        """Every answerer starts afresh."""
        self._by.clear()


def stream_sides(session, requests: list[tuple[str, list[dict]]], *, settings,
                 should_stop: Callable[[], bool] | None = None) -> Iterator[tuple[int, str]]:
    """Answer each (answerer, messages) of ``requests`` in turn on ``session``'s one model, yielding
    (index of the request, piece) as the pieces come. Sampled answers share one seed, so only the adapters
    differ; the base model writes its prompt in its partner's training format. Once ``should_stop()`` is
    true the answer being written ends and the next is not started."""
    from lora_tui.core.chat.adapters import BASE

    if settings.seed is None and not settings.greedy:
        settings = dataclasses.replace(settings, seed=random.randrange(2**31))
    partner = next((who for who, _ in requests if who != BASE), None)
    for index, (who, messages) in enumerate(requests):
        if should_stop is not None and should_stop():
            return
        fmt = partner if who == BASE and partner is not None else None
        for piece in session.stream(messages, adapter=who, settings=settings, should_stop=should_stop,
                                    prompt_format=fmt):
            yield index, piece
