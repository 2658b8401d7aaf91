"""Dataset hygiene: duplicates and the warnings of a good data guide.

Exact duplicates, near duplicates (same text once case, whitespace and
punctuation are ignored), AI boilerplate ("As an AI language model..."),
stray URLs, very long sentences, and control tokens typed into the text.
All are warnings: the row is kept. Pure functions over ``Example``s; every
check is one regex or one dict lookup per row so 100k rows take about a second.
"""

from __future__ import annotations

import re

from .records import Example, Finding

LONG_SENTENCE_WORDS = 28

BOILERPLATE = re.compile(
    r"\bas an? (?:ai|artificial intelligence)(?: language model| assistant| model)?\b"
    r"|\bas a (?:large )?language model\b"
    r"|\bi(?:['’]m| am) (?:just |only )?an? (?:ai|language model|large language model)\b"
    r"|\bi(?:['’]m| am) sorry,? but i (?:can(?:['’]|no)t|am (?:not able|unable)) (?:help|assist|provide|fulfil)"
    r"|\bi (?:cannot|can['’]t) (?:fulfil+|comply with) (?:that|this|your) request"
    r"|\bi do(?:n['’]t| not) have (?:personal )?(?:opinions|feelings|emotions|beliefs|personal experiences)\b"
    r"|\b(?:as of )?my (?:knowledge cutoff|last (?:knowledge )?update|training data)\b"
    r"|\bi was (?:trained|created|developed) by openai\b",
    re.IGNORECASE,
)
# Every BOILERPLATE alternative contains one of these: a substring test first keeps 100k rows fast.
BOILERPLATE_HINTS = ("as a", " ai", "language model", "sorry", "cannot", "can't", "can’t", "don't have", "do not have",
                     "don’t have", "my knowledge", "my last", "my training", "openai")
URL = re.compile(r"\bhttps?://[^\s)\]>\"']+|\bwww\.[a-z0-9-]+\.[a-z]{2,}[^\s)\]>\"']*", re.IGNORECASE)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
NOT_WORD = re.compile(r"[\W_]+")


MAX_DUPLICATE_ROWS = 1_000_000  # rows remembered for the duplicate checks (about 200 bytes each)


class Hygiene:
    """The checks one row at a time. Rows are remembered by a 64-bit hash of their text (not the text),
    so memory stays bounded: at most MAX_DUPLICATE_ROWS rows are remembered."""

    def __init__(self, special_tokens: list[str] | tuple = (), unit: str = "line") -> None:
        self.unit = unit  # "row" where numbers count rows (records.row_unit)
        self.exact: dict[int, object] = {}
        self.near: dict[int, object] = {}
        self.specials = [t for t in special_tokens if t and len(t) > 2]
        self.seen = 0

    def check(self, ex: Example) -> list[Finding]:
        findings: list[Finding] = []
        turns = [("text", ex.text or "")] if ex.messages is None else [(m["role"], m["content"]) for m in ex.messages]
        key = "\x00".join(f"{role}\x01{content}" for role, content in turns)
        where = ex.line if ex.source is None else (ex.line, ex.source)
        self.seen += 1
        first = self.exact.get(hash(key))
        if first is not None:
            findings.append(_warn(ex, f"exact duplicate of {_where(first, self.unit)}", "remove the repeated row", "duplicate"))
        else:
            folded = hash(NOT_WORD.sub(" ", key.lower()).strip())
            twin = self.near.get(folded)
            if twin is not None:
                findings.append(_warn(ex, f"near duplicate of {_where(twin, self.unit)} (differs only in case, spaces or "
                                          "punctuation)", "keep one of the two rows", "near_duplicate"))
            elif self.seen <= MAX_DUPLICATE_ROWS:
                self.exact[hash(key)] = where
                self.near[folded] = where
        del key
        answers = [c for role, c in turns if role in ("assistant", "text")]
        for content in answers:
            low = content.lower()
            hit = BOILERPLATE.search(content) if any(h in low for h in BOILERPLATE_HINTS) else None
            if hit:
                findings.append(_warn(ex, f"AI boilerplate in the answer: \"{hit.group(0)}\"",
                                      "rewrite the answer without the disclaimer (the model would learn it)",
                                      "ai_boilerplate"))
                break
        for _, content in turns:
            hit = URL.search(content) if _maybe_url(content) else None
            if hit:
                findings.append(_warn(ex, f"contains a URL ({_short(hit.group(0))})",
                                      "remove URLs the model should not learn to produce", "url"))
                break
        longest = max((_longest_sentence(c) for c in answers), default=0)
        if longest > LONG_SENTENCE_WORDS:
            findings.append(_warn(ex, f"a sentence of {longest} words in the answer (guide: at most "
                                      f"{LONG_SENTENCE_WORDS})", "split long sentences into shorter ones",
                                  "long_sentence"))
        if self.specials:
            for _, content in turns:
                token = next((t for t in self.specials if t in content), None) if "<" in content or "[" in content else None
                if token:
                    findings.append(_warn(ex, f"the text contains the control token {token!r}, which the template "
                                              "uses to mark turns", "remove it from the text", "control_token"))
                    break
        return findings

    def summary(self) -> list[Finding]:
        if self.seen <= MAX_DUPLICATE_ROWS:
            return []
        return [Finding(None, "warning", f"duplicates were looked for among the first {MAX_DUPLICATE_ROWS:,} rows "
                        f"only (of {self.seen:,}), to keep memory bounded", "split the file to check the rest",
                        "duplicates_partial")]


def _where(where, unit: str = "line") -> str:
    return f"{unit} {where}" if isinstance(where, int) else f"{where[1]} chunk {where[0]}"


def _longest_sentence(text: str) -> int:
    words = text.count(" ") + text.count("\n") + 1
    if words <= LONG_SENTENCE_WORDS:  # cheap bound: no sentence can be longer than the whole text
        return 0
    return max(len(s.split()) for s in SENTENCE_END.split(text))


def _short(url: str) -> str:
    return url if len(url) <= 60 else url[:57] + "..."


def _warn(ex: Example, message: str, fix: str, code: str) -> Finding:
    return Finding(ex.line, "warning", message, fix, code, ex.source)


def _maybe_url(text: str) -> bool:
    return "http" in text or "HTTP" in text or "www." in text or "WWW." in text
