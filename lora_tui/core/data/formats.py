"""Detect a dataset's format and normalise every row to chat messages (or plain text).

Formats (detected from the keys of the rows):

- ``messages``: OpenAI style ``{"messages": [{"role": ..., "content": ...}, ...]}``
- ``sharegpt``: ``{"conversations": [{"from": "human"|"gpt"|"system", "value": ...}, ...]}``
- ``alpaca``: ``{"instruction", "input" (optional), "output"}``
- ``instruction_response``: ``{"instruction", "response", "context"/"system" (optional)}``
- ``prompt_completion``: ``{"prompt", "completion"}`` (strings, or message lists as in TRL)
- ``text``: ``{"text"}``, trained on everything (also .txt chunks)

Each faulty row becomes an error finding with its line (the row is skipped);
doubtful rows get a warning and are kept. No I/O and no printing here.
"""

from __future__ import annotations

from collections import Counter

from .readers import RawRow
from .records import Example, Finding

FORMAT_FIELDS = {  # format -> (required keys, optional keys)
    "messages": (("messages",), ("system",)),
    "sharegpt": (("conversations",), ("system",)),
    "alpaca": (("instruction", "output"), ("input", "system")),
    "instruction_response": (("instruction", "response"), ("context", "input", "system")),
    "prompt_completion": (("prompt", "completion"), ("system",)),
    "text": (("text",), ()),
}
ACCEPTED = "messages, conversations (ShareGPT), instruction+output (Alpaca), instruction+response, prompt+completion, text"

# Preference rows (training.method dpo / kto: ``preference`` normalises them); an sft run refuses them by name.
PREFERENCE_FIELDS = {"preference": ("prompt", "chosen", "rejected"), "preference_implicit": ("chosen", "rejected"),
                     "unpaired_preference": ("prompt", "completion", "label")}

ROLE_ALIASES = {
    "system": "system", "user": "user", "assistant": "assistant",
    "human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant", "chatgpt": "assistant",
}


def detect_row_format(row: dict) -> str | None:
    for name, required in PREFERENCE_FIELDS.items():  # before prompt_completion: a KTO row has prompt + completion too
        if all(k in row for k in required) and (name != "unpaired_preference" or isinstance(row["label"], bool)):
            return name
    for name, (required, _) in FORMAT_FIELDS.items():
        if all(k in row for k in required):
            return name
    return None


def normalise_rows(rows: list[RawRow]) -> tuple[str, list[Example], list[Finding]]:
    """(format of the file, valid examples, findings) for rows read by ``readers``."""
    normaliser = Normaliser(rows)
    examples: list[Example] = []
    findings: list[Finding] = list(normaliser.findings)
    for row in rows:
        example, out = normaliser.row(row)
        if example is not None:
            examples.append(example)
        findings.extend(out)
    return normaliser.format, examples, findings


class Normaliser:
    """Normalises rows one at a time, once the file's format is known from a sample of its rows.

    The sample is the whole file for files that fit the reading budget (the usual case), else its
    first rows: the majority format and key set of the sample apply to every row.
    """

    def __init__(self, sample: list[RawRow]) -> None:
        self.findings: list[Finding] = []
        detected = [detect_row_format(r.value) for r in sample]
        counts = Counter(d for d in detected if d)
        self.format = counts.most_common(1)[0][0] if counts else "unknown"
        if not counts:
            if sample:
                keys = ", ".join(sorted({k for r in sample[:1000] for k in r.value})) or "(none)"
                self.findings.append(Finding(sample[0].line, "error",
                                             f"no row has a recognised format; the keys found are: {keys}",
                                             f"rename the columns to one of: {ACCEPTED}", "unknown_format",
                                             sample[0].source))
            return
        if self.format in PREFERENCE_FIELDS:
            method = "kto" if self.format == "unpaired_preference" else "dpo (or kto)"
            self.findings.append(Finding(sample[0].line, "error", f"these are preference rows "
                                         f"({', '.join(PREFERENCE_FIELDS[self.format])}) and training.method is sft",
                                         f"train them with training.method={method}", "preference_for_sft", sample[0].source))
            return
        self.required, optional = FORMAT_FIELDS[self.format]
        self.usual_keys = Counter(frozenset(r.value) for r, d in zip(sample, detected)
                                  if d == self.format).most_common(1)[0][0]
        self.known = set(self.required) | set(optional)

    def row(self, row: RawRow) -> tuple[Example | None, list[Finding]]:
        """(the example or None, findings of this row)."""
        fmt = self.format
        if fmt == "unknown" or fmt in PREFERENCE_FIELDS:
            return None, []
        required, known, usual_keys = self.required, self.known, self.usual_keys
        row_format = detect_row_format(row.value)
        out: list[Finding] = []
        if row_format != fmt:
            if row_format is not None:
                out.append(_err(row, f"this row is {row_format} but the rest of the file is {fmt}",
                                f"convert it to {fmt} (keys: {', '.join(required)}) or move it to its own file",
                                "schema_mismatch"))
            else:
                missing = [k for k in required if k not in row.value]
                extra = sorted(set(row.value) - known)
                hint = f" (unexpected key{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))}: a typo?)" if extra else ""
                out.append(_err(row, f"missing field{'s' if len(missing) > 1 else ''} "
                                     f"{', '.join(map(repr, missing))}{hint}",
                                f"every {fmt} row needs {', '.join(map(repr, required))}", "missing_field"))
            return None, out
        if frozenset(row.value) != usual_keys:
            # Optional fields of the format (alpaca's "input") may come and go; other keys may not.
            extra = sorted(set(row.value) - usual_keys - known)
            lacking = sorted(usual_keys - set(row.value) - known)
            parts = ([f"extra {', '.join(map(repr, extra))}"] if extra else []) + \
                    ([f"lacks {', '.join(map(repr, lacking))}"] if lacking else [])
            if parts:
                out.append(_warn(row, f"keys differ from most rows: {'; '.join(parts)}",
                                 "give every row the same fields", "schema_differs"))
        example = _NORMALISERS[fmt](row, out)
        if example is not None and any(f.severity == "error" for f in out):
            example = None
        return example, out


def _err(row: RawRow, message: str, fix: str | None, code: str) -> Finding:
    return Finding(row.line, "error", message, fix, code, row.source)


def _warn(row: RawRow, message: str, fix: str | None, code: str) -> Finding:
    return Finding(row.line, "warning", message, fix, code, row.source)


def _type_name(value) -> str:
    return "null" if value is None else {"str": "string", "int": "number", "float": "number", "bool": "true/false",
                                         "list": "list", "dict": "object"}.get(type(value).__name__, type(value).__name__)


def _text_field(row: RawRow, key: str, out: list[Finding], *, required: bool = True) -> str | None:
    """The string under `key`; a finding when it is missing, empty or not a string."""
    value = row.value.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        out.append(_err(row, f"field '{key}' is {_type_name(value)}, expected a string",
                        f"write '{key}' as text in quotes", "wrong_type"))
        return None
    if required and not value.strip():
        out.append(_err(row, f"field '{key}' is empty", f"fill in '{key}' or remove the row", "empty_field"))
        return None
    return value


def _with_system(row: RawRow, messages: list[dict], out: list[Finding]) -> list[dict]:
    system = _text_field(row, "system", out, required=False) if "system" in row.value else ""
    return ([{"role": "system", "content": system}] if system and system.strip() else []) + messages


def _alpaca(row: RawRow, out: list[Finding], answer_key: str = "output", extra_keys=("input",)) -> Example | None:
    instruction = _text_field(row, "instruction", out)
    answer = _text_field(row, answer_key, out)
    extra = ""
    for key in extra_keys:
        if key in row.value:
            extra = _text_field(row, key, out, required=False) or ""
            break
    if instruction is None or answer is None:
        return None
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return Example(row.line, _with_system(row, messages, out), source=row.source)


def _instruction_response(row: RawRow, out: list[Finding]) -> Example | None:
    return _alpaca(row, out, answer_key="response", extra_keys=("context", "input"))


def _prompt_completion(row: RawRow, out: list[Finding]) -> Example | None:
    prompt, completion = row.value.get("prompt"), row.value.get("completion")
    if isinstance(prompt, list) and isinstance(completion, list):  # TRL's conversational prompt-completion
        return _conversation(row, prompt + completion, out, "prompt/completion", "role", "content")
    prompt = _text_field(row, "prompt", out)
    completion = _text_field(row, "completion", out)
    if prompt is None or completion is None:
        return None
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    return Example(row.line, _with_system(row, messages, out), source=row.source)


def _text(row: RawRow, out: list[Finding]) -> Example | None:
    text = _text_field(row, "text", out)
    return None if text is None else Example(row.line, None, text=text, source=row.source)


def _messages(row: RawRow, out: list[Finding]) -> Example | None:
    return _conversation(row, _maybe_json(row.value.get("messages")), out, "messages", "role", "content")


def _sharegpt(row: RawRow, out: list[Finding]) -> Example | None:
    turns = _maybe_json(row.value.get("conversations"))
    first = turns[0] if isinstance(turns, list) and turns and isinstance(turns[0], dict) else {}
    role_key, content_key = ("role", "content") if "role" in first else ("from", "value")
    return _conversation(row, turns, out, "conversations", role_key, content_key)


def _maybe_json(value):
    """CSV and Parquet cells hold conversations as JSON text; read them."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        import json

        from .bounds import hostile

        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            return value
        return value if hostile(parsed) else parsed  # a lone surrogate or deep nesting: left as text (refused)
    return value


def _content_text(content):
    """Plain string content, or the joined text parts of OpenAI's list-of-parts form; None if neither."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    return None


def _conversation(row: RawRow, turns, out: list[Finding], key: str, role_key: str, content_key: str) -> Example | None:
    if not isinstance(turns, list):
        out.append(_err(row, f"'{key}' is {_type_name(turns)}, expected a list of turns",
                        f'write \'{key}\' as [{{"{role_key}": ..., "{content_key}": ...}}, ...]', "wrong_type"))
        return None
    if not turns:
        out.append(_err(row, f"'{key}' is an empty list", "add at least a user turn and an assistant turn", "empty_field"))
        return None
    messages: list[dict] = []
    ok = True
    for number, turn in enumerate(turns, 1):
        where = f"turn {number}"
        if not isinstance(turn, dict):
            out.append(_err(row, f"{where} is {_type_name(turn)}, expected an object",
                            f'write each turn as {{"{role_key}": ..., "{content_key}": ...}}', "wrong_type"))
            ok = False
            continue
        missing = [k for k in (role_key, content_key) if k not in turn]
        if missing:
            out.append(_err(row, f"{where} is missing {' and '.join(map(repr, missing))}",
                            f'write each turn as {{"{role_key}": ..., "{content_key}": ...}}', "missing_field"))
            ok = False
            continue
        raw_role = turn[role_key]
        role = ROLE_ALIASES.get(raw_role.strip().lower()) if isinstance(raw_role, str) else None
        if role is None:
            out.append(_err(row, f"{where} has unknown role {raw_role!r}",
                            "use 'system', 'user' or 'assistant' (ShareGPT: 'system', 'human', 'gpt')", "unknown_role"))
            ok = False
            continue
        content = _content_text(turn[content_key])
        if content is None:
            out.append(_err(row, f"{where} ({role}) has {_type_name(turn[content_key])} content, expected a string",
                            f"write '{content_key}' as text", "wrong_type"))
            ok = False
            continue
        if not content.strip():
            if role == "system":
                out.append(_warn(row, f"{where}: empty system message (dropped)", "remove it", "empty_turn"))
                continue
            out.append(_err(row, f"{where}: empty {role} turn", f"write the {role}'s text or remove the turn",
                            "empty_turn"))
            ok = False
            continue
        messages.append({"role": role, "content": content})
    if not ok:
        return None
    roles = [m["role"] for m in messages]
    if "assistant" not in roles:
        out.append(_err(row, "conversation has no assistant turn, so nothing would be trained",
                        "add the answer as an assistant turn", "no_assistant"))
        return None
    if "system" in roles[1:]:
        out.append(_warn(row, "a system message comes after the first turn; many chat templates refuse that",
                         "move the system message to the start", "system_not_first"))
    chat = [r for r in roles if r != "system"]
    if any(a == b for a, b in zip(chat, chat[1:])):
        out.append(_warn(row, "user and assistant turns do not alternate", "merge consecutive turns of the same role",
                         "roles_not_alternating"))
    if chat and chat[-1] == "user":
        out.append(_warn(row, "the conversation ends with a user turn, which is never trained",
                         "end with the assistant's answer", "trailing_user_turn"))
    return Example(row.line, messages, source=row.source)


_NORMALISERS = {
    "messages": _messages,
    "sharegpt": _sharegpt,
    "alpaca": _alpaca,
    "instruction_response": _instruction_response,
    "prompt_completion": _prompt_completion,
    "text": _text,
}
