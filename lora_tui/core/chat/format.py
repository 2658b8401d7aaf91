"""How chat talks to a model in the format training used: the fallback chat templates as Jinja,
the training formatter, the end-of-turn tokens, and the trimmer that cuts an answer at a stop string.

Shared by chat (lora_tui.core.chat.session) and the exports (merged model, GGUF, round-trip check).
Must not print, import textual, or import torch / transformers at module top.
"""

from __future__ import annotations

from lora_tui.core.data.template import ALPACA_PREAMBLE

# Jinja versions of lora_tui.core.data.ChatFormatter's fallback formats, so a merged model carries the
# format it was trained in (tests check they render exactly what ChatFormatter renders).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
ALPACA_TEMPLATE = (
    "{%- set system = messages | selectattr('role', 'equalto', 'system') | map(attribute='content') | join(' ') -%}"
    "{{ (system if system else '" + ALPACA_PREAMBLE + "') + '\n\n' }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{ '### Instruction:\n' + message['content'] + '\n\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ '### Response:\n' + message['content'] }}"
    "{%- if not loop.last %}{{ '\n\n' }}{% else %}{{ eos_token }}{% endif -%}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '### Response:\n' }}{%- endif -%}"
)
FALLBACK_TEMPLATES = {"chatml": CHATML_TEMPLATE, "alpaca": ALPACA_TEMPLATE}
# Single special tokens that end a turn in common chat formats.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>")


def training_formatter(tokenizer, template: str = "auto"):
    """The ChatFormatter training used: the model's own template (auto), or the ChatML / Alpaca fallback."""
    from lora_tui.core.data import ChatFormatter

    return ChatFormatter(tokenizer, template=template if template in ("auto", "chatml", "alpaca") else "auto")


def adds_bos(tokenizer) -> bool:
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bos is not None and bool(ids) and ids[0] == bos and tokenizer("a", add_special_tokens=False)["input_ids"][:1] != [bos]


def apply_training_template(tokenizer, template: str = "auto") -> str:
    """Set ``tokenizer.chat_template`` to the format training used, so a saved tokenizer carries it.
    Returns the format's name: model | chatml | alpaca."""
    kind = training_formatter(tokenizer, template).template
    if kind != "model":
        # Training tokenized fallback text with the tokenizer's own BOS; chat templates must write it themselves.
        tokenizer.chat_template = ("{{ bos_token }}" if adds_bos(tokenizer) else "") + FALLBACK_TEMPLATES[kind]
    return kind


def end_of_turn_ids(tokenizer, model=None) -> list[int]:
    ids = set()
    for source in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(i for i in source if isinstance(i, int))
    vocab = tokenizer.get_vocab()
    # Only special tokens: a word piece that merely looks like "</s>" must not end an answer.
    special = set(tokenizer.all_special_tokens) | {str(t) for t in getattr(tokenizer, "added_tokens_decoder", {}).values()}
    ids.update(vocab[token] for token in END_OF_TURN_TOKENS if token in vocab and token in special)
    return sorted(ids)


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
