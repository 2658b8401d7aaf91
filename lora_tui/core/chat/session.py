"""Chat with trained adapters, or with the base model alone, for the CLI and the wizard.

``ChatSession.from_runs`` finds each adapter (a run directory, a run name, or a bare PEFT
adapter directory; see core.chat_adapters for the names and the one-base rule), loads the
base model once the way the first run trained it (16-bit, 8-bit or 4-bit, from its
config.yaml), and loads every adapter on it with PEFT's ``load_adapter``. ``stream`` yields
text pieces while a background thread generates; it answers with the named adapter
(``set_adapter``) or the base alone (``disable_adapter()``). Prompts use the training format
of the adapter answering, so chat sees the same format training did.

Must not: print, import textual, or import torch / transformers / peft at module
top (the wizard imports this at start-up). Callers talk to it through return
values, ``ChatError`` and the ``on_progress`` / ``should_stop`` callables.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from lora_tui.core.chat.adapters import BASE, ChatError, adapter_label, check_same_base, resolve_adapters, unique_name
from lora_tui.core.chat.format import PromptFormat, _StopTrimmer
from lora_tui.core.config import Config, effective_precision
from lora_tui.core.model.models import ModelSourceError, load_base_model, load_tokenizer, resolve_model_path
from lora_tui.core.run.adapters import AdapterError, AdapterSource, find_adapter  # noqa: F401  (re-exported)

Progress = Callable[[str, float], None]


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


def _auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class ChatSession:
    """A base model loaded once, with zero or more named adapters on it, that answers chat messages."""

    def __init__(self, model, tokenizer, *, has_adapter: bool, device: str = "cpu",
                 source: AdapterSource | None = None, template: str | None = None,
                 adapters: dict[str, AdapterSource] | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.source = source  # the first run's: how the base model was loaded
        self.adapters: dict[str, AdapterSource] = dict(adapters or {})
        if has_adapter and not self.adapters:
            self.adapters["adapter"] = source
        self._peft_names = {name: "default" if i == 0 else f"adapter_{i}" for i, name in enumerate(self.adapters)}
        self._template = template or (source.template if source else "auto")
        self._formats: dict[str, PromptFormat] = {}
        default = self._format(None)  # prompts are rendered exactly as training rendered them
        self.formatter, self.eos_ids, self.stop_strings = default.formatter, default.eos_ids, default.stop_strings
        self._lock = threading.Lock()  # one generation at a time: the active adapter is shared state

    has_adapter = property(lambda self: bool(self.adapters))
    names = property(lambda self: list(self.adapters))
    default_adapter = property(lambda self: next(iter(self.adapters), None))

    def _format(self, name: str | None) -> PromptFormat:
        source = self.adapters.get(name) if name else None
        template = source.template if source is not None else self._template
        if template not in self._formats:
            self._formats[template] = PromptFormat(self.tokenizer, self.model, template)
        return self._formats[template]

    @classmethod
    def from_run(cls, run: str | Path, *, device: str = "auto", on_progress: Progress | None = None,
                 require_adapter: bool = True) -> "ChatSession":
        return cls.from_runs([run], device=device, on_progress=on_progress, require_adapter=require_adapter)

    @classmethod
    def from_runs(cls, runs: list[str | Path], *, device: str = "auto", on_progress: Progress | None = None,
                  require_adapter: bool = True) -> "ChatSession":
        """Load the base model once and every run's adapter on it (refused when their bases differ)."""
        report = on_progress or (lambda message, fraction: None)
        source, adapters = resolve_adapters(list(runs), require_adapter=require_adapter)

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
        model.eval()
        session = cls(model, tokenizer, has_adapter=False, device=device, source=source)
        for i, (name, adapter) in enumerate(adapters.items()):
            report(f"Loading the adapter from {adapter.adapter_dir}", 0.8 + 0.2 * i / len(adapters))
            session._load_adapter(name, adapter)
        report("Ready", 1.0)
        return session

    def _load_adapter(self, name: str, source: AdapterSource) -> None:
        from peft import PeftModel

        peft_name = "default" if not self._peft_names else f"adapter_{len(self._peft_names)}"
        try:
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(source.adapter_dir), adapter_name=peft_name, is_trainable=False)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(source.adapter_dir), adapter_name=peft_name,
                                                       is_trainable=False)
        except (RuntimeError, ValueError, KeyError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ChatError(f"The adapter in {source.adapter_dir} does not fit {source.base_model}: {first}. "
                            "Fix: chat with the run that trained it, on the same base model.") from None
        self.model.eval()
        self.adapters[name] = source
        self._peft_names[name] = peft_name

    def add_adapter(self, run: str | Path) -> str:
        """Load one more run's adapter on this base; returns its name (the existing one if already loaded)."""
        source = find_adapter(run)
        if self.source is not None:
            check_same_base(self.source, source, str(run))
        for name, loaded in self.adapters.items():
            if loaded is not None and loaded.adapter_dir is not None and \
                    loaded.adapter_dir.resolve() == source.adapter_dir.resolve():
                return name
        name = unique_name(adapter_label(source), self.adapters)
        with self._lock:
            self._load_adapter(name, source)
        return name

    def answerer(self, adapter: str | None = None, use_adapter: bool = True) -> str:
        """The adapter name that answers (BASE for the base model alone); refuses an unknown name."""
        who = BASE if not use_adapter or adapter == BASE else (adapter or self.default_adapter)
        if who is None:
            raise ChatError("No adapter is loaded: answer with use_adapter=False (the base model).")
        if who != BASE and who not in self.adapters:
            raise ChatError(f"No adapter named '{who}' is loaded. Loaded: {', '.join(self.adapters) or 'none'} "
                            f"(and '{BASE}', the base model alone).")
        return who

    # --- prompts -------------------------------------------------------------------
    def _max_context(self) -> int | None:
        config = getattr(self.model, "config", None)
        return getattr(config, "max_position_embeddings", None)

    def encode(self, messages: list[dict], max_new_tokens: int = 0, formatter=None):
        """Token ids of the prompt; the oldest turns are dropped when the context would overflow."""
        if not messages:
            raise ChatError("Nothing to answer: the conversation is empty.")
        formatter = formatter or self.formatter
        limit = self._max_context()
        messages = list(messages)
        while True:
            text = formatter.prompt_text(messages)
            ids = self.tokenizer(text, add_special_tokens=formatter.template != "model", return_tensors="pt")
            length = ids["input_ids"].shape[-1]
            first = 1 if messages[0].get("role") == "system" else 0
            if limit is None or length + max_new_tokens <= limit or len(messages) - first <= 1:
                return ids
            del messages[first]  # forget the oldest turn, keep the system message

    # --- generation ----------------------------------------------------------------------
    def stream(self, messages: list[dict], *, use_adapter: bool = True, adapter: str | None = None,
               settings: GenerationSettings | None = None, should_stop: Callable[[], bool] | None = None,
               prompt_format: str | None = None) -> Iterator[str]:
        """Yield the answer in pieces as it is generated, by ``adapter`` (default: the first loaded; BASE or
        ``use_adapter=False``: the base model alone). ``prompt_format``: whose training format the base uses."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        settings = settings or GenerationSettings()
        who = self.answerer(adapter, use_adapter)
        fmt = self._format(who if who != BASE else prompt_format or self.default_adapter)
        inputs = self.encode(messages, settings.max_new_tokens, fmt.formatter).to(self.model.device)
        cancel = threading.Event()

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                stop = cancel.is_set() or bool(should_stop and should_stop())
                return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(**inputs, streamer=streamer, max_new_tokens=settings.max_new_tokens,
                      eos_token_id=fmt.eos_ids, pad_token_id=self.tokenizer.pad_token_id,
                      repetition_penalty=settings.repetition_penalty,
                      stopping_criteria=StoppingCriteriaList([_Cancel()]), do_sample=not settings.greedy)
        if not settings.greedy:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
        if fmt.stop_strings:
            kwargs.update(stop_strings=fmt.stop_strings, tokenizer=self.tokenizer)
        failure: list[BaseException] = []

        def generate() -> None:
            try:
                if settings.seed is not None:
                    torch.manual_seed(settings.seed)
                if who != BASE:
                    peft_name = self._peft_names[who]
                    if len(self._peft_names) > 1 and self.model.active_adapter != peft_name:
                        self.model.set_adapter(peft_name, inference_mode=True)
                    self.model.generate(**kwargs)
                elif not self.has_adapter:
                    self.model.generate(**kwargs)
                else:
                    with self.model.disable_adapter():
                        self.model.generate(**kwargs)
            except BaseException as exc:  # re-raised in the caller's thread below
                failure.append(exc)
                streamer.end()

        trimmer = _StopTrimmer(fmt.stop_strings)
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

    def reply(self, messages: list[dict], *, use_adapter: bool = True, adapter: str | None = None,
              settings: GenerationSettings | None = None, should_stop: Callable[[], bool] | None = None,
              prompt_format: str | None = None) -> str:
        return "".join(self.stream(messages, use_adapter=use_adapter, adapter=adapter, settings=settings,
                                   should_stop=should_stop, prompt_format=prompt_format))

    def compare(self, messages: list[dict], *, settings: GenerationSettings | None = None,
                sides: tuple[str, str] | None = None) -> tuple[str, str]:
        """Two answers to the same messages, by ``sides`` (adapter names or BASE; default: the first adapter and
        the base model), as ``stream_sides`` writes them (one seed; the base in the other side's format)."""
        from lora_tui.core.chat.conversations import stream_sides

        left, right = sides or (self.answerer(), BASE)
        left, right = self.answerer(left), self.answerer(right)
        texts = ["", ""]
        for index, piece in stream_sides(self, [(left, messages), (right, messages)],
                                         settings=settings or GenerationSettings()):
            texts[index] += piece
        return texts[0], texts[1]
