"""Round-trip check of an export: load the written artefact back and compare it with the adapter on its base.

A GGUF file runs in llama.cpp itself when the optional runtime is installed (``llamacpp_runtime``),
otherwise through transformers' GGUF loader (which dequantises); the result names the runtime.

Three comparisons, all on the run's own data (or the user's prompts):
- greedy answers to a few validation prompts, the artefact answering with its own tokenizer,
  chat template and stop tokens (as a user's runtime will);
- held-out rows' trained tokens scored under the base model, the adapter and the artefact
  (``scoring``; same token ids fed to all, so this measures the weights), judged by ``gain``: the
  fine-tune's gain, the share of it the artefact keeps (with a 95 % interval over rows), the KL
  divergence from the adapter and the same-top-token share beside the band normal for the type;
- the chat template and the stop token: one conversation rendered both ways, and the end-of-turn
  token training taught must be a stop token of the artefact.

Must not: print, write files, or import torch / transformers / peft at module top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lora_tui.core.config import load_config
from lora_tui.core.data import DataError, Example, load_examples
from lora_tui.core.data.load import hold_out
from lora_tui.core.data.template import apply_training_template, end_of_turn_ids, training_formatter
from lora_tui.core.export.gguf import read_gguf_facts
from lora_tui.core.export.llamacpp import LlamaCppModel, llamacpp_missing, llamacpp_version
from lora_tui.core.model.models import load_base_model
from lora_tui.core.run.adapters import find_adapter
from lora_tui.core.safe_read import UnsafeFile, read_bounded
from lora_tui.core.export.preference_check import PreferenceKept, check_preferences, held_out_items
from lora_tui.core.export.gain import THRESHOLDS, Judgement, judge, verdict_rows  # noqa: F401  (THRESHOLDS: public here too)
from lora_tui.core.export.scoring import score_rows

IDENTICAL_NATS = 1e-3  # |difference in mean log-likelihood| per token, for "identical"
DEFAULT_PROMPTS = ("Hello! What can you help me with?", "Explain in two sentences why the sky is blue.")


@dataclass
class AnswerPair:
    prompt: str
    reference: str
    artefact: str
    reference_stopped: bool = True
    artefact_stopped: bool = True
    reference_ids: list[int] = field(default_factory=list)
    artefact_ids: list[int] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return self.reference_ids == self.artefact_ids


@dataclass
class RoundTrip:
    artefact: str
    kind: str  # merged | gguf
    answers: list[AnswerPair] = field(default_factory=list)
    reference_loglik: float | None = None
    artefact_loglik: float | None = None
    scored_tokens: int = 0
    agreement: float | None = None
    template_same: bool = False
    template_note: str = ""
    tokens_same: bool = False
    learned_eos: str | None = None
    artefact_stops: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    runtime: str = "transformers"  # what ran the artefact: transformers | llama.cpp, with its version
    base_loglik: float | None = None
    gguf_type: str | None = None  # the GGUF weight type; None for a merged folder
    judgement: Judgement | None = None  # what the artefact keeps of the fine-tune (export.gain)
    preference: PreferenceKept | None = None  # dpo / kto runs: does it still prefer the chosen answers

    @property
    def delta(self) -> float | None:
        if self.reference_loglik is None or self.artefact_loglik is None:
            return None
        return self.artefact_loglik - self.reference_loglik

    @property
    def eos_ok(self) -> bool:
        return self.learned_eos is not None and self.learned_eos in self.artefact_stops

    @property
    def identical(self) -> bool:
        delta = self.delta
        return delta is not None and abs(delta) <= IDENTICAL_NATS and self.agreement == 1.0 and \
            all(a.same for a in self.answers)

    @property
    def verdict(self) -> str:
        """identical | keeps | loses | normal | abnormal (export.gain), or unchecked when nothing was scored."""
        if self.judgement is None:
            return "unchecked"
        return "identical" if self.identical and self.judgement.ok else self.judgement.verdict

    @property
    def verdict_words(self) -> str:
        if self.judgement is None:
            return "not judged: no held-out rows were scored"
        words = self.judgement.words
        return ("identical to the adapter in every answer and next-token choice; " + words) if self.verdict == "identical" else words

    @property
    def ok(self) -> bool:
        return self.judgement is not None and self.judgement.ok and self.template_same and self.eos_ok and \
            not self.problems and (self.preference is None or self.preference.ok)

    def summary(self) -> str:
        return (f"Verdict: {self.verdict_words}. Template {'same' if self.template_same else 'DIFFERENT'}; "
                f"stop token {self.learned_eos!r} {'stops it' if self.eos_ok else 'does NOT stop it'}; ran in {self.runtime}")

    def table(self, width: int = 38) -> str:
        """The greedy answers side by side, then the verdict table."""
        def cut(text: str) -> str:
            text = " ".join(text.split())
            return text if len(text) <= width else text[:width - 1] + "…"

        label = self.kind.upper() + " artefact" + (" in llama.cpp" if self.runtime.startswith("llama.cpp") else "")
        lines = [f"{'Prompt':<{width}} | {'Adapter on base':<{width}} | {label:<{width}} | same",
                 "-" * (width * 3 + 13)]
        for a in self.answers:
            mark = "yes" if a.same else "no"
            if not a.artefact_stopped and a.reference_stopped:
                mark += " (artefact did not stop)"
            lines.append(f"{cut(a.prompt):<{width}} | {cut(a.reference):<{width}} | {cut(a.artefact):<{width}} | {mark}")
        lines.append("")
        lines += [f"{name:<16} {value}" for name, value in self.verdict_rows()]
        return "\n".join(lines)

    def verdict_rows(self) -> list[tuple[str, str]]:
        """(what, measured) rows: the fine-tune's gain, what the artefact keeps, how far it moves, template, stop token."""
        return verdict_rows(self.to_dict())

    def to_dict(self) -> dict:
        return {"artefact": self.artefact, "kind": self.kind, "runtime": self.runtime, "verdict": self.verdict,
                "verdict_words": self.verdict_words, "ok": self.ok, "notes": self.notes, "gguf_type": self.gguf_type,
                "judgement": self.judgement.to_dict() if self.judgement else None,
                "preference": self.preference.to_dict() if self.preference else None,
                "delta_loglik": self.delta, "reference_loglik": self.reference_loglik,
                "artefact_loglik": self.artefact_loglik, "base_loglik": self.base_loglik,
                "scored_tokens": self.scored_tokens, "agreement": self.agreement,
                "template_same": self.template_same, "tokens_same": self.tokens_same, "eos_ok": self.eos_ok,
                "learned_eos": self.learned_eos, "artefact_stops": self.artefact_stops, "problems": self.problems,
                "answers": [a.__dict__ for a in self.answers], "thresholds": THRESHOLDS}


def learned_end_token(tokenizer, template: str = "auto") -> int | None:
    """The token id that ends an answer in training: the last trained label of a rendered conversation."""
    formatter = training_formatter(tokenizer, template)
    item = formatter.tokenize(Example(1, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]), 256)
    trained = [label for label in item["labels"] if label != -100]
    return trained[-1] if trained else None


def _prompt_messages(example) -> list[dict] | None:
    messages = example.messages or []
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    return messages[:last_user + 1] if last_user is not None else None


MAX_PROMPTS_BYTES = 4 * 2**20  # each prompt is generated in turn: more than this is the wrong file


def check_data(source, check_prompts: str | None, n_prompts: int, n_rows: int):
    """(prompts as message lists, held-out conversations) from --check-prompts or the run's validation data."""
    rows = []
    if source.run is not None:
        config = load_config(source.run.config_path)
        data = config.data.validation or config.data.train
        try:
            rows = load_examples(data, subset=config.data.subset).examples
        except DataError:
            rows = []
        if not config.data.validation:  # the rows training held out (as it split them), else the tail
            _, held = hold_out(rows, config.data.val_fraction, config.training.seed)
            rows = held or rows[-n_rows:]
        rows = [e for e in rows if e.messages]
    held_out = [e for e in rows if any(m["role"] == "assistant" for m in e.messages)][:n_rows]
    if check_prompts:
        path = Path(check_prompts).expanduser()
        if path.suffix.lower() in (".txt", ""):
            try:  # a FIFO is refused before it is opened; a prompts file is small
                raw = read_bounded(path, MAX_PROMPTS_BYTES, "a prompts file", "one prompt per line in a text file")
                lines = [line.strip() for line in raw.decode("utf-8").splitlines() if line.strip()]
            except UnsafeFile as exc:
                raise ValueError(f"--check-prompts {exc}") from None
            except UnicodeDecodeError as exc:
                raise ValueError(f"--check-prompts {path}: not UTF-8 text (byte {exc.start}). Fix: one prompt per "
                                 "line in a UTF-8 text file.") from None
            prompts = [[{"role": "user", "content": line}] for line in lines]
        else:
            try:
                prompts = [m for m in (_prompt_messages(e) for e in load_examples(path).examples) if m]
            except DataError as exc:
                raise ValueError(f"--check-prompts {path}: {exc}") from None
        if not prompts:
            raise ValueError(f"--check-prompts {path} holds no prompts. Fix: one prompt per line, or a chat JSONL file.")
    else:
        prompts = [m for m in (_prompt_messages(e) for e in rows) if m]
    if not prompts:
        prompts = [[{"role": "user", "content": text}] for text in DEFAULT_PROMPTS]
    return prompts[:n_prompts] if not check_prompts else prompts, held_out


def _greedy(model, tokenizer, messages, stops: list[int], max_new_tokens: int,
            template: str | None = None) -> tuple[str, bool, list[int]]:
    import torch

    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, chat_template=template)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens,
                             eos_token_id=stops or None, pad_token_id=stops[0] if stops else None)
    new = out[0, ids.shape[1]:].tolist()
    stopped = bool(new) and new[-1] in stops
    # Special tokens stay visible (a random or broken model answers with them); the final stop token does not.
    return tokenizer.decode(new[:-1] if stopped else new), stopped, new


def _stop_ids(model, tokenizer) -> list[int]:
    """The stop tokens the artefact itself declares (generation config and tokenizer), nothing guessed."""
    ids: set[int] = set()
    for value in (getattr(model.generation_config, "eos_token_id", None), getattr(model.config, "eos_token_id", None),
                  tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    return sorted(ids)


def verify_export(run, artefact: str | Path, *, gguf_file: str | None = None, check_prompts: str | None = None,
                  n_prompts: int = 3, n_rows: int = 40, max_new_tokens: int = 40, runtime: str = "auto",
                  lora: str | Path | None = None,
                  on_progress: Callable[[str, float], None] | None = None) -> RoundTrip:
    """Load ``artefact`` (a merged model folder, or the folder of ``gguf_file``) and compare it with the adapter.

    ``runtime`` (GGUF only): ``llama.cpp``, ``transformers``, or ``auto`` (llama.cpp when installed).
    ``lora``: a LoRA adapter GGUF that llama.cpp applies on ``gguf_file`` (the base): only llama.cpp can."""
    if lora is not None:
        runtime = "llama.cpp"
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report = on_progress or (lambda message, fraction: None)
    cpp_runtime = resolve_runtime(runtime, gguf_file) == "llama.cpp"  # ValueError (one line) when it cannot run
    source = find_adapter(run, allow_checkpoint=False)
    artefact = Path(artefact)
    result = RoundTrip(str(artefact / gguf_file) if gguf_file else str(artefact), "gguf" if gguf_file else "merged")
    prompts, held_out = check_data(source, check_prompts, n_prompts, n_rows)

    report("Check: loading the adapter on its base model", 0.05)
    ref_tok = AutoTokenizer.from_pretrained(source.adapter_dir)
    apply_training_template(ref_tok, source.template)
    base = load_base_model(source.base_model, load_in="16bit", precision="fp32", device="cpu",
                           trust_remote_code=source.trust_remote_code, revision=source.revision)
    ref = PeftModel.from_pretrained(base, str(source.adapter_dir)).eval()
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    art_tok = None  # in llama.cpp the file's template and vocabulary are llama.cpp's own (art.render / tokenize)
    if cpp_runtime:
        report("Check: loading the GGUF file in llama.cpp", 0.3)
        result.runtime = f"llama.cpp, {llamacpp_version()}"
        art = LlamaCppModel(artefact / gguf_file, n_ctx=max(2048, 512 + max_new_tokens + 64), lora=lora)
    else:
        report("Check: loading the artefact back" + (" (transformers, gguf_file=)" if gguf_file else ""), 0.3)
        art_tok = AutoTokenizer.from_pretrained(artefact, **kwargs)  # the file's template and vocabulary, as written
        art = AutoModelForCausalLM.from_pretrained(artefact, dtype=torch.float32, **kwargs).eval()
        if gguf_file:
            result.notes.append("the GGUF file ran in transformers' GGUF loader (weights dequantised to float32), "
                                f"not llama.cpp; {LLAMACPP_HINT}")

    formatter = training_formatter(ref_tok, source.template)
    end_id = learned_end_token(ref_tok, source.template)
    result.learned_eos = ref_tok.convert_ids_to_tokens(end_id) if end_id is not None else None
    if cpp_runtime:  # what llama.cpp itself ends a completion on, among the tokens that could matter
        facts = read_gguf_facts(artefact / gguf_file)
        candidates = {i for i in (end_id, facts["eos_token_id"], facts["eot_token_id"]) if isinstance(i, int)}
        probe = ref_tok("Hello", add_special_tokens=False)["input_ids"] or [0]
        stops = sorted(i for i in candidates if art.stops_on(i, probe))
    else:
        stops = _stop_ids(art, art_tok)
    if gguf_file and not cpp_runtime:
        facts = read_gguf_facts(artefact / gguf_file)  # what llama.cpp / Ollama will stop on
        stops = sorted(set(stops) | {i for i in (facts["eos_token_id"], facts["eot_token_id"]) if isinstance(i, int)})
    result.artefact_stops = [ref_tok.convert_ids_to_tokens(i) for i in stops if i < len(ref_tok)]

    conversation = held_out[0].messages if held_out else (prompts[0] + [{"role": "assistant", "content": "OK."}])
    # a whole answered turn and the next reply's header, as a runtime renders a chat (llama.cpp renders a conversation
    # ending in an answer as an answer to continue, so the probe ends with a question)
    conversation = conversation + [{"role": "user", "content": "Thank you."}]
    expected = ref_tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    art_template = None
    if not (facts["chat_template"] if cpp_runtime else getattr(art_tok, "chat_template", None)):
        result.template_note = "the artefact has no chat template"
        result.problems.append("The artefact carries no chat template: runtimes will guess a format.")
        art_template = ref_tok.chat_template  # still compare the weights, with the training format
    else:
        got = art.render(conversation) if cpp_runtime else \
            art_tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        result.template_same = got == expected
        if not result.template_same:
            result.template_note = f"training renders {expected[:120]!r}, the artefact renders {got[:120]!r}"
    file_ids = art.tokenize(expected) if cpp_runtime else art_tok(expected, add_special_tokens=False)["input_ids"]
    result.tokens_same = ref_tok(expected, add_special_tokens=False)["input_ids"] == file_ids

    report("Check: greedy answers", 0.5)
    ref_stops = end_of_turn_ids(ref_tok, ref)
    for messages in prompts:
        ref_text, ref_stopped, ref_ids = _greedy(ref, ref_tok, messages, ref_stops, max_new_tokens)
        if cpp_runtime:
            art_text, art_stopped, art_ids, n_prompt = art.greedy(messages, max_new_tokens)
            if art_ids is None:  # compare what a user sees: the text and whether it stopped
                same = art_text == ref_text and art_stopped == ref_stopped
                art_ids = list(ref_ids) if same else [-1]
                result.notes.append(f"llama.cpp did not list every token of the answer to "
                                    f"{messages[-1]['content'][:40]!r}: compared as text")
            rendered = ref_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            n_expected = len(ref_tok(rendered, add_special_tokens=False)["input_ids"])
            if n_prompt != n_expected:  # a note: the answers show whether it matters
                result.notes.append(f"llama.cpp's prompt for {messages[-1]['content'][:40]!r} is {n_prompt} tokens, "
                                    f"training's {n_expected}: its rendering of the chat template differs")
        else:
            art_text, art_stopped, art_ids = _greedy(art, art_tok, messages, stops, max_new_tokens, art_template)
        result.answers.append(AnswerPair(messages[-1]["content"], ref_text, art_text, ref_stopped, art_stopped,
                                         ref_ids, art_ids))

    report("Check: scoring held-out rows under the base, the adapter and the artefact", 0.7)
    if check_prompts:  # the user's own file counts too: its answers as written, else the adapter's answers to it
        answered = _answered(check_prompts) or [
            Example(i + 1, m + [{"role": "assistant", "content": a.reference}])
            for i, (m, a) in enumerate(zip(prompts, result.answers)) if a.reference_stopped and a.reference.strip()]
        held_out = held_out + answered
    if not held_out:
        # No validation data to hand: score the adapter's own answers, which still compares the weights.
        held_out = [Example(i + 1, m + [{"role": "assistant", "content": a.reference or "OK."}])
                    for i, (m, a) in enumerate(zip(prompts, result.answers))]
        result.notes.append("no validation data found: the scores are of the adapter's own answers")
    rows = formatter.tokenize_many(held_out, 512) if held_out else []
    rows = [r for r in rows if any(label != -100 for label in r["labels"][1:])]
    if rows:
        progress = lambda done, total: report(f"Check: scored {done} of {total} held-out rows", 0.7 + 0.29 * done / total)  # noqa: E731
        scores = score_rows(ref, rows, art, llamacpp=cpp_runtime, on_row=progress)
        if scores.skipped:
            result.notes.append(f"{scores.skipped} scored positions left out: llama.cpp's server withholds tokens "
                                "that end inside a UTF-8 character")
        result.scored_tokens = scores.tokens
        result.reference_loglik, result.artefact_loglik = scores.mean("adapter"), scores.mean("artefact")
        result.base_loglik = scores.mean("base")
        result.agreement = sum(float(r.sum()) for r in scores.same_top) / max(scores.tokens, 1)
        result.gguf_type = _gguf_type(artefact / gguf_file) if gguf_file else None
        result.judgement = judge(scores.base, scores.adapter, scores.artefact, scores.kl, scores.same_top,
                                 gguf_type=result.gguf_type or "f16", rest_mass=scores.rest_mass)
        if result.artefact_loglik is None or not math.isfinite(result.artefact_loglik):
            result.problems.append("The artefact's log-likelihood is not finite (broken weights).")
    else:
        result.problems.append("No held-out rows with answers to score: the fine-tune's gain was not measured.")
    items = held_out_items(source, ref_tok, n_rows)
    if items:  # a dpo / kto run: the preference itself, on its held-out pairs (export.preference_check)
        report("Check: scoring held-out preference pairs", 0.95)
        result.preference = check_preferences(ref, art, items, llamacpp=cpp_runtime)
    if cpp_runtime:
        art.close()
    report("Check done", 1.0)
    return result


def _answered(check_prompts: str) -> list:
    """The conversations of a chat JSONL --check-prompts file that end in an answer (none for a text file)."""
    path = Path(check_prompts).expanduser()
    if path.suffix.lower() in (".txt", ""):
        return []
    try:
        return [e for e in load_examples(path).examples if e.messages and e.messages[-1]["role"] == "assistant"]
    except DataError:
        return []


def _gguf_type(path: Path) -> str | None:
    """The weight type a GGUF file says it holds (general.file_type), as lora-tui names it."""
    import gguf

    from lora_tui.core.export.choices import GGUF_TYPES

    value = read_gguf_facts(path)["file_type"]
    try:
        name = gguf.LlamaFileType(int(value)).name.removeprefix("MOSTLY_").lower()
    except (TypeError, ValueError):
        return None
    return name if name in GGUF_TYPES else ("f16" if name in ("all_f32", "bf16") else None)


LLAMACPP_HINT = 'pip install "lora-tui[llamacpp]" runs it in llama.cpp itself'
RUNTIMES = ("auto", "llama.cpp", "transformers")


def resolve_runtime(runtime: str, gguf_file: str | None) -> str:
    """The runtime a check will use: transformers for merged folders; for GGUF, llama.cpp when asked or installed."""
    if runtime not in RUNTIMES:
        raise ValueError(f"check runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}.")
    if not gguf_file or runtime == "transformers":
        return "transformers"
    missing = llamacpp_missing()
    if runtime == "llama.cpp" and missing:
        raise ValueError(missing)
    return "transformers" if missing else "llama.cpp"
