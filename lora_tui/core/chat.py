"""Chat with a trained adapter, or with the base model alone, for the CLI and the wizard.

``ChatSession.from_run`` finds the adapter (a run directory, a run name, or a bare
PEFT adapter directory), loads the base model the way the run trained it (16-bit,
8-bit or 4-bit, from the run's config.yaml) and wraps it in a ``PeftModel``. The
prompt is built with the chat template saved beside the adapter, so chat sees the
same format training did. ``stream`` yields text pieces while a background thread
generates; the adapter is switched off with PEFT's ``disable_adapter()``.

Must not: print, import textual, or import torch / transformers / peft at module
top (the wizard imports this at start-up). Callers talk to it through return
values, ``ChatError`` and the ``on_progress`` / ``should_stop`` callables.
"""

from __future__ import annotations

import json
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from lora_tui.core.data.template import ALPACA_PREAMBLE
from lora_tui.core.adapters import AdapterError, AdapterSource, find_adapter  # noqa: F401  (re-exported)

Progress = Callable[[str, float], None]

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


class ChatError(AdapterError):
    """Chat cannot start or continue; the message says why and how to fix it."""


@dataclass
class GenerationSettings:
    temperature: float = 0.3
    top_p: float = 0.9
    top_k: int = 40
    max_new_tokens: int = 256
    greedy: bool = False
    repetition_penalty: float = 1.0
    seed: int | None = None  # set to repeat a sampled answer; compare() uses one seed for both answers

    def describe(self) -> str:
        if self.greedy:
            return f"greedy, max_new_tokens {self.max_new_tokens}, repetition_penalty {self.repetition_penalty}"
        return (f"temperature {self.temperature}, top_p {self.top_p}, top_k {self.top_k}, "
                f"max_new_tokens {self.max_new_tokens}, repetition_penalty {self.repetition_penalty}")


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


def _auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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


class ChatSession:
    """A loaded base model (+ adapter) that answers chat messages."""

    def __init__(self, model, tokenizer, *, has_adapter: bool, device: str = "cpu",
                 source: AdapterSource | None = None, template: str | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.has_adapter = has_adapter
        self.device = device
        self.source = source
        # Prompts are rendered exactly as training rendered them (same formatter, same BOS rule).
        self.formatter = training_formatter(tokenizer, template or (source.template if source else "auto"))
        self.eos_ids = end_of_turn_ids(tokenizer, model)
        vocab = tokenizer.get_vocab()
        special = set(tokenizer.all_special_tokens)
        self.eos_ids = sorted(set(self.eos_ids) | {vocab[s] for s in self.formatter.stop_strings if s in special})
        # Stops that are not one special token (Alpaca's next "### Instruction:") are cut from the text.
        self.stop_strings = [s for s in self.formatter.stop_strings if s not in special]
        self._lock = threading.Lock()  # one generation at a time: disable_adapter() flips shared state

    @classmethod
    def from_run(cls, run: str | Path, *, device: str = "auto", on_progress: Progress | None = None,
                 require_adapter: bool = True) -> "ChatSession":
        report = on_progress or (lambda message, fraction: None)
        source = find_adapter(run, require_adapter=require_adapter)
        from lora_tui.core.config import Config, effective_precision
        from lora_tui.core.models import ModelSourceError, load_base_model, load_tokenizer, resolve_model_path

        device = _auto_device() if device == "auto" else device
        bf16 = False
        if device.startswith("cuda"):
            import torch

            bf16 = torch.cuda.is_bf16_supported()
        # CPU chat stays fp32 even where training picks bf16: one reply at a time gains little from bf16,
        # and greedy answers (export round-trip checks, adapter vs base) must not move with rounding.
        precision = "fp32" if device == "cpu" else effective_precision(Config(), "cuda", bf16)
        try:
            resolve_model_path(source.base_model, on_progress)  # converts the embedded model once, with progress
            if source.adapter_dir is not None and (source.adapter_dir / "tokenizer_config.json").is_file():
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(source.adapter_dir, trust_remote_code=source.trust_remote_code)
            else:
                tokenizer = load_tokenizer(source.base_model, source.trust_remote_code, source.revision)
            report(f"Loading {source.base_model} ({source.load_in}, {precision}) on {device}", 0.2)
            model = load_base_model(source.base_model, load_in=source.load_in, precision=precision,
                                    double_quant=source.double_quant, device=device,
                                    trust_remote_code=source.trust_remote_code, revision=source.revision)
        except ModelSourceError as exc:
            raise ChatError(str(exc)) from None
        except (OSError, ValueError) as exc:
            raise ChatError(f"Cannot load the base model '{source.base_model}': {exc}") from None
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        has_adapter = source.adapter_dir is not None
        if has_adapter:
            report(f"Loading the adapter from {source.adapter_dir}", 0.8)
            from peft import PeftModel

            try:
                model = PeftModel.from_pretrained(model, str(source.adapter_dir), is_trainable=False)
            except (RuntimeError, ValueError, KeyError, OSError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ChatError(f"The adapter in {source.adapter_dir} does not fit {source.base_model}: {first}. "
                                "Fix: chat with the run that trained it, on the same base model.") from None
        model.eval()
        report("Ready", 1.0)
        return cls(model, tokenizer, has_adapter=has_adapter, device=device, source=source)

    # --- prompts -------------------------------------------------------------------
    def _max_context(self) -> int | None:
        config = getattr(self.model, "config", None)
        return getattr(config, "max_position_embeddings", None)

    def encode(self, messages: list[dict], max_new_tokens: int = 0):
        """Token ids of the prompt; the oldest turns are dropped when the context would overflow."""
        if not messages:
            raise ChatError("Nothing to answer: the conversation is empty.")
        limit = self._max_context()
        messages = list(messages)
        while True:
            text = self.formatter.prompt_text(messages)
            ids = self.tokenizer(text, add_special_tokens=self.formatter.template != "model", return_tensors="pt")
            length = ids["input_ids"].shape[-1]
            first = 1 if messages[0].get("role") == "system" else 0
            if limit is None or length + max_new_tokens <= limit or len(messages) - first <= 1:
                return ids
            del messages[first]  # forget the oldest turn, keep the system message

    # --- generation ----------------------------------------------------------------------
    def stream(self, messages: list[dict], *, use_adapter: bool = True, settings: GenerationSettings | None = None,
               should_stop: Callable[[], bool] | None = None) -> Iterator[str]:
        """Yield the answer in pieces as it is generated."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        settings = settings or GenerationSettings()
        if use_adapter and not self.has_adapter:
            raise ChatError("No adapter is loaded: answer with use_adapter=False (the base model).")
        inputs = self.encode(messages, settings.max_new_tokens).to(self.model.device)
        cancel = threading.Event()

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                stop = cancel.is_set() or bool(should_stop and should_stop())
                return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(**inputs, streamer=streamer, max_new_tokens=settings.max_new_tokens,
                      eos_token_id=self.eos_ids, pad_token_id=self.tokenizer.pad_token_id,
                      repetition_penalty=settings.repetition_penalty,
                      stopping_criteria=StoppingCriteriaList([_Cancel()]), do_sample=not settings.greedy)
        if not settings.greedy:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
        if self.stop_strings:
            kwargs.update(stop_strings=self.stop_strings, tokenizer=self.tokenizer)
        failure: list[BaseException] = []

        def generate() -> None:
            try:
                if settings.seed is not None:
                    torch.manual_seed(settings.seed)
                if use_adapter or not self.has_adapter:
                    self.model.generate(**kwargs)
                else:
                    with self.model.disable_adapter():
                        self.model.generate(**kwargs)
            except BaseException as exc:  # re-raised in the caller's thread below
                failure.append(exc)
                streamer.end()

        trimmer = _StopTrimmer(self.stop_strings)
        with self._lock:
            worker = threading.Thread(target=generate, name="lora-tui-generate", daemon=True)
            worker.start()
            try:
                for piece in streamer:
                    out = trimmer.feed(piece)
                    if out:
                        yield out
                    if trimmer.done or (should_stop and should_stop()):
                        break
                tail = "" if trimmer.done else trimmer.flush()
                if tail:
                    yield tail
            finally:
                cancel.set()
                worker.join()
        if failure:
            exc = failure[0]
            if type(exc).__name__ == "OutOfMemoryError":
                raise ChatError("Out of memory while answering. Fix: lower max_new_tokens, /reset the history, "
                                "or load the base model in 4-bit.") from exc
            raise exc

    def reply(self, messages: list[dict], *, use_adapter: bool = True, settings: GenerationSettings | None = None,
              should_stop: Callable[[], bool] | None = None) -> str:
        return "".join(self.stream(messages, use_adapter=use_adapter, settings=settings, should_stop=should_stop))

    def compare(self, messages: list[dict], *, settings: GenerationSettings | None = None) -> tuple[str, str]:
        """(with adapter, base model) for the same prompt; sampled answers share one seed, so only the adapter differs."""
        import dataclasses

        settings = settings or GenerationSettings()
        if settings.seed is None and not settings.greedy:
            settings = dataclasses.replace(settings, seed=random.randrange(2**31))
        return (self.reply(messages, use_adapter=True, settings=settings),
                self.reply(messages, use_adapter=False, settings=settings))
