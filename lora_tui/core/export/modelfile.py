"""Ollama ``Modelfile`` whose TEMPLATE reproduces the chat template used in training.

The model's Jinja chat template is rendered with placeholder messages and cut into
the few literal pieces a conversation is made of (system block, user turn, answer
hand-over, turn separator); those pieces become a Go template. The pieces are checked
by rendering several conversations both ways: if they disagree (an exotic template),
a named format (ChatML, Llama-3, Mistral [INST], Alpaca) is used instead and the
Modelfile says so. Stop parameters are the special tokens that end a turn.

Must not: import torch or textual, or load model weights; it needs only a tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lora_tui.core.data.template import ALPACA_PREAMBLE

# Mixed case, so a template that rewrites content (upper, lower, title) is caught rather than mistranslated.
_SYS, _U1, _A1, _U2, _A2, _U3 = "sysQxz7", "usrQxz1", "astQxz1", "usrQxz2", "astQxz2", "usrQxz3"


class TemplateError(ValueError):
    """The chat template cannot be expressed as an Ollama template."""


@dataclass
class TurnFormat:
    """A chat format as literal pieces: [system_prefix SYSTEM after_system | first_user] then per message
    USER + after_user (hands over to the assistant) or ANSWER + after_answer (opens the next user turn)."""

    name: str
    system_prefix: str
    after_system: str
    first_user: str
    after_user: str
    after_answer: str
    stops: list[str] = field(default_factory=list)
    note: str = ""

    def render(self, messages: list[dict]) -> str:
        """The prompt for ``messages`` (ending with a user message), as Ollama will build it."""
        rest = list(messages)
        if rest and rest[0]["role"] == "system" and rest[0]["content"]:
            out = self.system_prefix + rest.pop(0)["content"] + self.after_system
        else:
            rest = rest[1:] if rest and rest[0]["role"] == "system" else rest
            out = self.first_user
        for message in rest:
            out += message["content"] + (self.after_user if message["role"] == "user" else self.after_answer)
        return out

    def go_template(self) -> str:
        q = _go_literal
        return (f"{{{{ if .System }}}}{q(self.system_prefix)}{{{{ .System }}}}{q(self.after_system)}"
                f"{{{{ else }}}}{q(self.first_user)}{{{{ end }}}}"
                f"{{{{ range .Messages }}}}{{{{ if eq .Role \"user\" }}}}{{{{ .Content }}}}{q(self.after_user)}"
                f"{{{{ else if eq .Role \"assistant\" }}}}{{{{ .Content }}}}{q(self.after_answer)}{{{{ end }}}}{{{{ end }}}}")


def _go_literal(text: str) -> str:
    if '"""' in text:
        raise TemplateError('the chat template contains """, which a Modelfile TEMPLATE cannot hold')
    return text.replace("{{", '{{ "{{" }}')


# Named formats, for tokenizers without a template or templates that cannot be cut into pieces.
def named_format(name: str, eos: str = "</s>") -> TurnFormat:
    if name == "chatml":
        return TurnFormat("chatml", "<|im_start|>system\n", "<|im_end|>\n<|im_start|>user\n", "<|im_start|>user\n",
                          "<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>\n<|im_start|>user\n",
                          ["<|im_end|>", "<|im_start|>"])
    if name == "llama3":
        head = "<|start_header_id|>{}<|end_header_id|>\n\n".format
        return TurnFormat("llama3", head("system"), "<|eot_id|>" + head("user"), head("user"),
                          "<|eot_id|>" + head("assistant"), "<|eot_id|>" + head("user"),
                          ["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"])
    if name == "mistral":  # no system role: the system text opens the first [INST]
        return TurnFormat("mistral", "[INST] ", "\n\n", "[INST] ", " [/INST]", f"{eos}[INST] ", [eos, "[INST]", "[/INST]"])
    if name == "alpaca":  # as lora_tui.core.data.ChatFormatter renders it: preamble unless a system text is given
        return TurnFormat("alpaca", "", "\n\n### Instruction:\n", f"{ALPACA_PREAMBLE}\n\n### Instruction:\n",
                          "\n\n### Response:\n", "\n\n### Instruction:\n", [eos, "### Instruction:"])
    raise TemplateError(f"Unknown chat format '{name}'. Formats: chatml, llama3, mistral, alpaca.")


def guess_family(template: str | None) -> str:
    text = template or ""
    if "<|im_start|>" in text:
        return "chatml"
    if "<|start_header_id|>" in text:
        return "llama3"
    if "[INST]" in text:
        return "mistral"
    if "### Instruction" in text:
        return "alpaca"
    return "chatml"


def _render(tokenizer, messages: list[dict]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _strip_bos(text: str, tokenizer) -> str:
    """Ollama's runner adds BOS itself; a BOS written by the template would be doubled."""
    bos = getattr(tokenizer, "bos_token", None)
    if bos and "bos_token" in (tokenizer.chat_template or "") and text.startswith(bos):
        return text[len(bos):]
    return text


def _between(text: str, start: str, end: str) -> str:
    i = text.index(start) + len(start)
    return text[i:text.index(end, i)]


def derive_format(tokenizer) -> TurnFormat:
    """Cut the tokenizer's chat template into a TurnFormat; raises TemplateError when it will not fit."""
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError("the tokenizer has no chat template")
    user, answer = lambda c: {"role": "user", "content": c}, lambda c: {"role": "assistant", "content": c}
    system = {"role": "system", "content": _SYS}
    try:
        plain = _strip_bos(_render(tokenizer, [user(_U1), answer(_A1), user(_U2)]), tokenizer)
        first_user = plain[:plain.index(_U1)]
        after_user = _between(plain, _U1, _A1)
        after_answer = _between(plain, _A1, _U2)
    except Exception as exc:  # a placeholder missing from the output, or the template's own exception
        raise TemplateError(f"the chat template could not be cut into turns ({exc})") from None
    if not plain.endswith(_U2 + after_user):
        raise TemplateError("the hand-over to the assistant differs between turns")
    try:
        with_system = _strip_bos(_render(tokenizer, [system, user(_U1)]), tokenizer)
        system_prefix, after_system = with_system[:with_system.index(_SYS)], _between(with_system, _SYS, _U1)
        note = ""
    except Exception:  # raise_exception("System role not supported"), or the system text dropped
        # Gemma, older Mistral: the system text opens the first user turn instead.
        system_prefix, after_system, note = first_user, "\n\n", "this chat template has no system role"
    separators = after_user + after_answer + after_system
    family = guess_family(tokenizer.chat_template)
    stops = _stop_tokens(tokenizer, separators, first_user)
    stops += [s for s in named_format(family).stops if s in separators and s not in stops]
    fmt = TurnFormat(f"the tokenizer's chat template ({family}-style)", system_prefix, after_system, first_user,
                     after_user, after_answer, stops, note)
    check_format(fmt, tokenizer, with_system=not note)
    return fmt


def _stop_tokens(tokenizer, separators: str, first_user: str) -> list[str]:
    special = set(getattr(tokenizer, "all_special_tokens", [])) | {
        str(t) for t in getattr(tokenizer, "added_tokens_decoder", {}).values()}
    stops = sorted((t for t in special if t and t in separators), key=separators.index)
    eos = getattr(tokenizer, "eos_token", None)
    if eos and eos not in stops:
        stops.insert(0, eos)
    header = first_user.strip().splitlines()[-1] if first_user.strip() else ""
    if header and not any(t in first_user for t in special if t):
        stops.append(header)  # plain-text formats (Alpaca, [INST]): the next user header ends the answer
    return stops


def check_format(fmt: TurnFormat, tokenizer, *, with_system: bool = True) -> None:
    """Render conversations with the Jinja template and with ``fmt``; raise TemplateError where they differ."""
    user, answer = lambda c: {"role": "user", "content": c}, lambda c: {"role": "assistant", "content": c}
    cases = [[user(_U1)], [user(_U1), answer(_A1), user(_U2)], [user(_U1), answer(_A1), user(_U2), answer(_A2), user(_U3)]]
    if with_system:
        cases += [[{"role": "system", "content": _SYS}] + case for case in cases]
    for case in cases:
        expected = _strip_bos(_render(tokenizer, case), tokenizer)
        if fmt.render(case) != expected:
            raise TemplateError(f"the derived Ollama template renders {fmt.render(case)!r} where the chat "
                                f"template renders {expected!r}")


def modelfile_text(fmt: TurnFormat, *, system: str | None = None, source: str = ".", adapter: str | None = None) -> str:
    where = ("# FROM . imports this safetensors folder; `lora-tui export RUN --gguf` writes a Modelfile for the GGUF."
             if source == "." else f"# FROM {source}: the GGUF file beside this Modelfile (tokenizer, template and EOS inside)."
             if not adapter else "# FROM: the base model's GGUF, shared by its adapters; ADAPTER: this run's LoRA GGUF.")
    lines = ["# Ollama Modelfile written by lora-tui. Build with:  ollama create my-model -f <this file>",
             where,
             f"# Chat format: {fmt.name}" + (f" ({fmt.note})" if fmt.note else ""),
             f"FROM {source}", *([f"ADAPTER {adapter}"] if adapter else []), "", f'TEMPLATE """{fmt.go_template()}"""', ""]
    if system:
        lines += [f'SYSTEM """{_go_literal(system)}"""', ""]
    lines += [f'PARAMETER stop "{stop}"' for stop in fmt.stops if '"' not in stop]
    return "\n".join(lines) + "\n"


def format_for(tokenizer, template_name: str = "auto") -> TurnFormat:
    """The chat format to export: the tokenizer's own template where it can be expressed, else a named one."""
    eos = getattr(tokenizer, "eos_token", None) or "</s>"
    if template_name not in ("auto", None, ""):
        return named_format(template_name, eos)
    if not getattr(tokenizer, "chat_template", None):
        return named_format("chatml", eos)
    try:
        return derive_format(tokenizer)
    except TemplateError as exc:
        fmt = named_format(guess_family(tokenizer.chat_template), eos)
        fmt.note = f"closest named format; the model's template could not be translated exactly: {exc}"
        return fmt


def write_modelfile(out_dir: str | Path, tokenizer, *, template_name: str = "auto", system: str | None = None) -> Path:
    path = Path(out_dir) / "Modelfile"
    path.write_text(modelfile_text(format_for(tokenizer, template_name), system=system), encoding="utf-8")
    return path
