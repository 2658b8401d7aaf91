"""How chat talks to a model in the format training used: the prompt format with its stop tokens, and
the trimmer that cuts an answer at a stop string. The format itself (the fallback templates as Jinja,
the training formatter, the end-of-turn tokens) lives with training's in lora_tui.core.data.template.
Must not print, import textual, or import torch / transformers at module top.
"""

from __future__ import annotations

from lora_tui.core.data.template import end_of_turn_ids, training_formatter


class _StopTrimmer:
    """Holds back text that could be the start of a stop string, and cuts the answer at one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.buffer = ""
        self.done = False

    def feed(self, piece: str) -> str:
        if not self.stops:
            return piece
        self.buffer += piece
        cut = min((i for i in (self.buffer.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self.buffer, self.done = self.buffer[:cut], "", True
            return out
        keep = len(self.buffer) - self.hold
        out, self.buffer = (self.buffer[:keep], self.buffer[keep:]) if keep > 0 else ("", self.buffer)
        return out

    def flush(self) -> str:
        out, self.buffer = self.buffer, ""
        return out


class PromptFormat:
    """How prompts are written and answers end for one training format (auto, chatml, alpaca)."""

    def __init__(self, tokenizer, model, template: str) -> None:
        self.formatter = training_formatter(tokenizer, template)
        vocab = tokenizer.get_vocab()
        special = set(tokenizer.all_special_tokens)
        self.eos_ids = sorted(set(end_of_turn_ids(tokenizer, model))
                              | {vocab[s] for s in self.formatter.stop_strings if s in special})
        # Stops that are not one special token (Alpaca's next "### Instruction:") are cut from the text.
        self.stop_strings = [s for s in self.formatter.stop_strings if s not in special]
