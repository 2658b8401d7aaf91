"""Render examples with a chat template and build the training labels.

``ChatFormatter`` turns an ``Example`` into exactly the text the model sees
and into ``input_ids`` / ``labels``. The labels are built from character spans
of the rendered text (assistant content plus its end-of-turn token), never from
pad ids, so the final EOS stays trained even when pad == eos.

Templates: ``auto`` uses the tokenizer's own chat template (ChatML when it has
none); ``chatml`` and ``alpaca`` are the documented fallbacks a user can pick.
The same format outside training (chat, exports): ``training_formatter``, the
fallbacks as Jinja (``apply_training_template``) and ``end_of_turn_ids``.
Transformers is never imported here: the tokenizer object is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

from lora_tui.core.config import TEMPLATE_CHOICES

from .bounds import clip_example
from .records import DataError, Example

ALPACA_PREAMBLE = ("Below is an instruction that describes a task. "
                   "Write a response that appropriately completes the request.")
# End-of-turn markers of common chat templates; the one right after an answer is trained with it.
END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>", "<|endoftext|>", "<|end_of_text|>",
               "<|END_OF_TURN_TOKEN|>", "<｜end▁of▁sentence｜>")
IGNORE = -100


@dataclass
class Rendered:
    text: str
    spans: list[tuple[int, int]]  # trained character ranges, end exclusive
    add_special_tokens: bool  # let the tokenizer add its own BOS (fallback templates and plain text)


class ChatFormatter:
    """Render and tokenize examples the way training will see them."""

    def __init__(self, tokenizer, template: str = "auto", train_on_prompt: bool = False):
        if template not in TEMPLATE_CHOICES:
            raise ValueError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATE_CHOICES)}")
        self.tokenizer = tokenizer
        self.train_on_prompt = train_on_prompt
        self.eos = getattr(tokenizer, "eos_token", None) or ""
        own = None
        if template == "auto":
            try:
                own = tokenizer.get_chat_template()
            except (ValueError, AttributeError):  # raised when the tokenizer has no template
                own = None
        self.template = "model" if own else ("chatml" if template == "auto" else template)
        self._compiled = None
        if own:
            from transformers.utils.chat_template_utils import _compile_jinja_template

            # Compiled once: rendering is then ~10 µs per row, half of apply_chat_template's cost.
            self._compiled = _compile_jinja_template(own)
            self._template_vars = dict(getattr(tokenizer, "special_tokens_map", {}) or {})
            self._header = self._assistant_header()
        self._markers = tuple(dict.fromkeys(m for m in (self.eos,) + END_MARKERS if m))

    @property
    def description(self) -> str:
        return {"model": "the model's own chat template", "chatml": "ChatML (fallback)",
                "alpaca": "Alpaca (fallback)"}[self.template]

    @property
    def stop_strings(self) -> list[str]:
        """Strings that end an answer under this template (for generation)."""
        stops = [self.eos] if self.eos else []
        if self.template == "chatml" and "<|im_end|>" not in stops:
            stops.append("<|im_end|>")
        if self.template == "alpaca":
            stops.append("### Instruction:")
        return stops

    # ----- rendering -------------------------------------------------------------------------------------------

    def render(self, example: Example) -> str:
        """Exactly the text the model sees for this example."""
        return self._render(example).text

    def prompt_text(self, messages: list[dict]) -> str:
        """The conversation so far plus the header that asks the model for an answer (for chat)."""
        if self.template == "model":
            return self._compiled.render(messages=messages, add_generation_prompt=True, **self._template_vars)
        if self.template == "chatml":
            return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + \
                "<|im_start|>assistant\n"
        text, _ = self._alpaca(messages + [{"role": "assistant", "content": ""}], final_eos=False)
        return text

    def _render(self, example: Example) -> Rendered:
        if example.messages is None:  # plain text: every token trained, EOS appended
            text = example.text or ""
            if self.eos and not text.endswith(self.eos):
                text += self.eos
            return Rendered(text, [(0, len(text))], True)
        if self.template == "model":
            text, spans = self._model_template(example.messages)
        elif self.template == "chatml":
            text, spans = self._chatml(example.messages)
        else:
            text, spans = self._alpaca(example.messages)
        if self.train_on_prompt:
            spans = [(0, len(text))]
        return Rendered(text, spans, self.template != "model")

    def render_answer(self, prompt: list[dict] | str, answer: str) -> Rendered:
        """The prompt followed by one answer, only that answer (and its end-of-turn token) trained, whatever
        train_on_prompt says: what dpo / kto score (``preference_tokens``). A str prompt is plain text that the
        answer continues (EOS appended, as for text rows)."""
        if isinstance(prompt, str):
            text = prompt + answer
            if self.eos and not text.endswith(self.eos):
                text += self.eos
            return Rendered(text, [(len(prompt), len(text))], True)
        messages = [*prompt, {"role": "assistant", "content": answer}]
        if self.template == "model":
            text, spans = self._model_template(messages)
        elif self.template == "chatml":
            text, spans = self._chatml(messages)
        else:
            text, spans = self._alpaca(messages)
        return Rendered(text, spans[-1:], self.template != "model")

    def encode(self, rendered: list[Rendered]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Token ids and trained token ranges (inclusive) of rendered texts, untruncated."""
        return self._encode(rendered)

    def _answer_end(self, text: str, end: int) -> int:
        """Extend an answer's span over the end-of-turn marker that directly follows it."""
        tail = text[end:end + 64]
        best = None
        for marker in self._markers:
            at = tail.find(marker)
            if at >= 0 and not tail[:at].strip() and (best is None or at < best[0]):
                best = (at, len(marker))
        return end + best[0] + best[1] if best else end

    def _with_final_eos(self, text: str, spans: list, messages: list[dict]) -> tuple[str, list]:
        """Append a trained EOS when the template does not end the last answer with one."""
        if not self.eos or not spans or messages[-1]["role"] != "assistant":
            return text, spans
        start, end = spans[-1]
        if self.eos in text[start:end]:
            return text, spans
        return text + self.eos, spans + [(len(text), len(text) + len(self.eos))]

    def _assistant_header(self) -> str:
        """The text the template writes just before an answer (e.g. "<|im_start|>assistant\\n"), or "".

        An answer is only accepted where this header precedes it, so a short answer such as "end"
        is never mistaken for template text like "<|im_end|>".
        """
        probe = [{"role": "user", "content": "Probe question?"}]
        try:
            bare = self._compiled.render(messages=probe, add_generation_prompt=False, **self._template_vars)
            asking = self._compiled.render(messages=probe, add_generation_prompt=True, **self._template_vars)
        except Exception:  # a template that refuses the probe: accept the first match instead
            return ""
        return asking[len(bare):] if asking.startswith(bare) else ""

    def _model_template(self, messages: list[dict]) -> tuple[str, list]:
        render = self._compiled.render
        text = render(messages=messages, add_generation_prompt=False, **self._template_vars)
        spans, cursor = [], 0
        for i, message in enumerate(messages):
            content = message["content"]
            at = text.find(content, cursor)
            if message["role"] == "assistant" and self._header:
                while at >= 0 and not text.endswith(self._header, 0, at):
                    at = text.find(content, at + 1)
            if at < 0:
                return text, self._spans_by_prefix(text, messages)
            cursor = at + len(content)
            if message["role"] == "assistant":
                cursor = self._answer_end(text, cursor)
                spans.append((at, cursor))
        return self._with_final_eos(text, spans, messages)

    def _spans_by_prefix(self, text: str, messages: list[dict]) -> list:
        """Slow path for templates that rewrite content: diff renders of growing prefixes."""
        render = self._compiled.render
        spans = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            start = len(render(messages=messages[:i], add_generation_prompt=True, **self._template_vars))
            end = len(render(messages=messages[:i + 1], add_generation_prompt=False, **self._template_vars))
            spans.append((start, start + len(text[start:end].rstrip())))  # the template's trailing newline is prompt
        return spans

    def _chatml(self, messages: list[dict]) -> tuple[str, list]:
        parts, spans, length = [], [], 0
        for m in messages:
            header = f"<|im_start|>{m['role']}\n"
            piece = f"{header}{m['content']}<|im_end|>\n"
            if m["role"] == "assistant":
                spans.append((length + len(header), length + len(piece) - 1))  # content + <|im_end|>
            parts.append(piece)
            length += len(piece)
        return self._with_final_eos("".join(parts), spans, messages)

    def _alpaca(self, messages: list[dict], final_eos: bool = True) -> tuple[str, list]:
        system = " ".join(m["content"] for m in messages if m["role"] == "system") or ALPACA_PREAMBLE
        text, spans = f"{system}\n\n", []
        for m in messages:
            if m["role"] == "user":
                text += f"### Instruction:\n{m['content']}\n\n"
            elif m["role"] == "assistant":
                text += "### Response:\n"
                spans.append((len(text), len(text) + len(m["content"])))
                text += m["content"]
                if m is not messages[-1]:
                    text += "\n\n"
        if final_eos:
            return self._with_final_eos(text, spans, messages)
        return text, spans

    # ----- tokenizing ------------------------------------------------------------------------------------------

    def tokenize(self, example: Example, max_seq_len: int) -> dict:
        """{"input_ids", "labels", "truncated"}: labels are -100 wherever the token is not trained."""
        return self.tokenize_many([example], max_seq_len)[0]

    def tokenize_many(self, examples: list[Example], max_seq_len: int) -> list[dict]:
        """``tokenize`` for many examples at once (one batched call to the fast tokenizer).

        Raises DataError naming the row when the model's chat template refuses it
        (``validate_dataset`` reports such rows as errors beforehand).
        """
        rendered = []
        for e in examples:
            try:  # clipped: a 10 MB answer is tokenised only as far as max_seq_len can reach
                rendered.append(self._render(clip_example(e, max_seq_len)[0]))
            except Exception as exc:  # jinja raise_exception() in the model's own template
                raise DataError(f"{e.where()}: the chat template refuses this row: {exc}. Fix: reshape the "
                                "conversation, or pick the chatml template.") from None
        out = []
        for r, (ids, ranges) in zip(rendered, self._encode(rendered)):
            labels = [IGNORE] * len(ids)
            for first, last in ranges:
                labels[first:last + 1] = ids[first:last + 1]
            out.append({"input_ids": ids[:max_seq_len], "labels": labels[:max_seq_len],
                        "truncated": len(ids) > max_seq_len})
        return out

    def measure(self, examples: list[Example], max_seq_len: int, on_error=None) -> list[tuple[int, int]]:
        """(token length, trained tokens kept after truncation) per example; fast path for validation.

        A row the template refuses to render gets (-1, 0) and ``on_error(index, message)``.
        """
        rendered: list[Rendered | None] = []
        for i, e in enumerate(examples):
            try:
                rendered.append(self._render(clip_example(e, max_seq_len)[0]))
            except Exception as exc:  # jinja raise_exception() in the model's template, e.g. roles must alternate
                rendered.append(None)
                if on_error:
                    on_error(i, str(exc))
        results = [(-1, 0)] * len(examples)
        good = [i for i, r in enumerate(rendered) if r is not None]
        for i, (ids, ranges) in zip(good, self._encode([rendered[i] for i in good])):
            trained = sum(max(0, min(last, max_seq_len - 1) - first + 1) for first, last in ranges)
            results[i] = (len(ids), trained)
        return results

    def segments(self, example: Example, max_seq_len: int) -> list[tuple[str, bool]]:
        """The rendered text cut into (piece, trained?) spans, stopping where truncation cuts."""
        r = self._render(clip_example(example, max_seq_len)[0])
        enc = self._batch([r.text], r.add_special_tokens)
        if enc is None:  # slow tokenizer: no offsets, show the character spans untruncated
            bounds = sorted({0, len(r.text)} | {b for span in r.spans for b in span})
            return [(r.text[a:b], any(s <= a and b <= e for s, e in r.spans)) for a, b in zip(bounds, bounds[1:])]
        (ids, ranges), = self._encode([r])
        trained = [False] * len(ids)
        for first, last in ranges:
            trained[first:last + 1] = [True] * (last - first + 1)
        runs: list[tuple[int, bool]] = []  # (start char, trained) where the trained flag changes
        end_char = len(r.text)
        for i in range(len(ids)):
            chars = enc[0].offsets[i]
            if chars[1] <= chars[0]:  # special tokens added by the tokenizer (BOS) cover no text
                continue
            if i >= max_seq_len:
                end_char = chars[0]
                break
            if not runs or runs[-1][1] != trained[i]:
                runs.append((chars[0] if runs else 0, trained[i]))
        bounds = [s for s, _ in runs[1:]] + [end_char]
        return [(r.text[s:e], t) for (s, t), e in zip(runs, bounds) if e > s]

    def _batch(self, texts: list[str], add_special_tokens: bool):
        """One `tokenizers.Encoding` per text (None for slow tokenizers, which have no offsets)."""
        tok = self.tokenizer
        if not getattr(tok, "is_fast", False):
            return None
        backend = getattr(tok, "_tokenizer", None)
        # The Rust backend directly saves ~20% over tok(...) on 100k rows; only when no truncation,
        # padding or special-token splitting was left switched on by an earlier call.
        if (backend is not None and getattr(backend, "truncation", 1) is None and getattr(backend, "padding", 1) is None
                and not getattr(backend, "encode_special_tokens", True)):
            return backend.encode_batch(texts, add_special_tokens=add_special_tokens)
        return tok(texts, add_special_tokens=add_special_tokens).encodings

    def _encode(self, rendered: list[Rendered]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Token ids and trained token ranges (inclusive) for each rendered example."""
        out: list = [None] * len(rendered)
        for flag in (False, True):
            idx = [i for i, r in enumerate(rendered) if r.add_special_tokens == flag]
            if not idx:
                continue
            enc = self._batch([rendered[i].text for i in idx], flag)
            for j, i in enumerate(idx):
                if enc is None:
                    out[i] = self._encode_pieces(rendered[i])
                    continue
                encoding = enc[j]
                out[i] = (list(encoding.ids), _token_ranges(encoding, rendered[i].spans))
        return out

    def _encode_pieces(self, r: Rendered) -> tuple[list[int], list[tuple[int, int]]]:
        """Slow tokenizers (no offsets): encode trained and untrained pieces separately."""
        tok, ids, ranges, pos = self.tokenizer, [], [], 0
        if r.add_special_tokens:
            ids += tok("", add_special_tokens=True)["input_ids"]
        for start, end in r.spans + [(len(r.text), len(r.text))]:
            ids += tok.encode(r.text[pos:start], add_special_tokens=False) if start > pos else []
            piece = tok.encode(r.text[start:end], add_special_tokens=False) if end > start else []
            if piece:
                ranges.append((len(ids), len(ids) + len(piece) - 1))
            ids += piece
            pos = end
        return ids, ranges


def _token_ranges(encoding, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Map trained character spans to inclusive token index ranges."""
    ranges = []
    for start, end in spans:
        first = next((t for t in (encoding.char_to_token(c) for c in range(start, end)) if t is not None), None)
        if first is None:
            continue
        last = next(t for t in (encoding.char_to_token(c) for c in range(end - 1, start - 1, -1)) if t is not None)
        ranges.append((first, last))
    return ranges


# ----- the training format outside training: chat, merged models, GGUF files, the round-trip check --------------
# Jinja versions of ChatFormatter's fallback formats, so a merged model carries the
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


def training_formatter(tokenizer, template: str = "auto"):
    """The ChatFormatter training used: the model's own template (auto), or the ChatML / Alpaca fallback."""
    return ChatFormatter(tokenizer, template=template if template in TEMPLATE_CHOICES else "auto")


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
    """The ids that end an answer in chat and in exports' generation: the tokenizer's EOS, the model's
    generation_config EOS ids, and the end-of-turn markers training teaches (END_MARKERS) that are one
    special token here. A marker training never teaches is no stop (the model was not taught to emit it)."""
    ids = set()
    for source in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(i for i in source if isinstance(i, int))
    vocab = tokenizer.get_vocab()
    # Only special tokens: a word piece that merely looks like "</s>" must not end an answer.
    special = set(tokenizer.all_special_tokens) | {str(t) for t in getattr(tokenizer, "added_tokens_decoder", {}).values()}
    ids.update(vocab[token] for token in END_MARKERS if token in vocab and token in special)
    return sorted(ids)
