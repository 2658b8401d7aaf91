"""A GGUF file run in llama.cpp itself, for the round-trip check: greedy answers, token log-likelihoods, stops.

llama.cpp comes from ``xllamacpp`` (the optional ``llamacpp`` extra: prebuilt llama.cpp wheels),
driven through its in-process server API, the code path ``llama-server`` users run:

- greedy answers: a chat completion at temperature 0, so llama.cpp renders the file's own chat
  template (Jinja) with its own tokenizer and stops on its own end-of-generation tokens;
- log-likelihood: one 1-token completion per scored position, with the position's true next token
  forced by a logit bias. llama.cpp reports that token's log-probability from the raw logits (the
  bias acts only in the sampler), and the raw top tokens (the first is the model's own next-token
  choice; the check asks for 200 of them to measure the KL divergence from the adapter).
  The prompt cache makes each step cost one token;
- stops: a forced token that ends the completion is an end-of-generation token for llama.cpp.

Must not: import xllamacpp at module top, print, or write files.
"""

from __future__ import annotations

from pathlib import Path

EXTRA = 'pip install "lora-tui[llamacpp]"'
FORCE = 100.0  # logit bias that makes the forced token the greedy choice


def llamacpp_missing() -> str | None:
    """None when llama.cpp can run here; otherwise the one line that says how to get it."""
    try:
        import xllamacpp  # noqa: F401
    except ImportError:
        return f"the llama.cpp round-trip check needs xllamacpp (prebuilt llama.cpp). Fix: {EXTRA}"
    return None


def llamacpp_version() -> str:
    import xllamacpp

    return f"xllamacpp {getattr(xllamacpp, '__version__', '?')}"


class LlamaCppModel:
    """One GGUF file loaded in llama.cpp (CPU), one slot, quiet."""

    def __init__(self, gguf_path: str | Path, n_ctx: int = 2048, threads: int | None = None,
                 lora: str | Path | None = None):
        """``lora``: a LoRA adapter GGUF applied at scale 1 (llama-server's --lora)."""
        import os

        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(gguf_path)
        if lora is not None:
            params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(str(lora), 1.0)]
        params.n_ctx = n_ctx
        params.n_parallel = 1
        threads = threads or max(1, min(8, os.cpu_count() or 1))
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.use_jinja = True  # the file's own chat template, as llama-server --jinja and Ollama use it
        params.warmup = False
        params.verbosity = -1
        self.server = xllamacpp.Server(params)

    def close(self) -> None:
        self.server = None

    def _complete(self, request: dict) -> dict:
        out = self.server.handle_completions(request)
        if not isinstance(out, dict) or "choices" not in out:
            raise RuntimeError(f"llama.cpp did not answer: {str(out)[:200]}")
        return out

    def greedy(self, messages: list[dict], max_new_tokens: int) -> tuple[str, bool, list[int], int]:
        """(answer text, stopped on an end-of-generation token, generated ids incl. the stop or None when the
        server did not list them all, prompt tokens)."""
        out = self.server.handle_chat_completions({"messages": messages, "max_tokens": max_new_tokens,
                                                   "temperature": 0.0, "logprobs": True, "top_logprobs": 1})
        if not isinstance(out, dict) or "choices" not in out:
            raise RuntimeError(f"llama.cpp did not answer: {str(out)[:200]}")
        choice = out["choices"][0]
        ids = [int(item["id"]) for item in (choice.get("logprobs") or {}).get("content") or []]
        text = choice.get("message", {}).get("content") or ""
        usage = out.get("usage", {})
        if len(ids) != int(usage.get("completion_tokens", len(ids))):
            ids = None  # byte tokens inside a UTF-8 character are left out of the server's list: ids unknown
        return text, choice.get("finish_reason") == "stop", ids, int(usage.get("prompt_tokens", 0))

    def score(self, ids: list[int], positions: list[int], top_k: int = 1) -> tuple[list[float], list[int], list]:
        """For each position t: log p(ids[t] | ids[:t]), llama.cpp's own top token there, and its ``top_k`` most
        likely tokens as (ids, log-probs) from the raw logits (NaN, -1, ([], []) where the server withholds a
        token that leaves UTF-8 incomplete)."""
        logps, tops, listed = [], [], []
        for t in positions:
            out = self._complete({"prompt": ids[:t], "max_tokens": 1, "n_probs": max(1, top_k), "temperature": 0.0,
                                  "logit_bias": [[int(ids[t]), FORCE]], "cache_prompt": True})
            content = (out["choices"][0].get("logprobs") or {}).get("content") or []
            if not content:  # a byte token that leaves UTF-8 incomplete: the server withholds it, and its probabilities
                logps.append(float("nan"))
                tops.append(-1)
                listed.append(([], []))
                continue
            item = content[0]
            if int(item["id"]) != int(ids[t]):
                raise RuntimeError(f"llama.cpp did not take the forced token {ids[t]} (took {item['id']})")
            logps.append(float(item["logprob"]))
            tops.append(int(item["top_logprobs"][0]["id"]))
            listed.append(([int(x["id"]) for x in item["top_logprobs"]], [float(x["logprob"]) for x in item["top_logprobs"]]))
        return logps, tops, listed

    def _post(self, path: str, body: dict) -> dict:
        """One of llama-server's own endpoints, which the in-process server also serves on localhost (never
        through a proxy)."""
        import json
        import urllib.request

        request = urllib.request.Request(self.server.listening_address + path, data=json.dumps(body).encode("utf-8"),
                                         headers={"Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=120) as response:
            return json.loads(response.read())

    def render(self, messages: list[dict]) -> str:
        """``messages`` rendered by the file's chat template in llama.cpp's own Jinja, the reply's header appended
        (llama-server's /apply-template: what a chat request to it feeds the model)."""
        return str(self._post("/apply-template", {"messages": messages})["prompt"])

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's token ids for ``text`` with the file's vocabulary, special tokens in the text parsed, nothing
        added (llama-server's /tokenize)."""
        out = self._post("/tokenize", {"content": text, "add_special": False, "parse_special": True})
        return [int(t) for t in out["tokens"]]

    def stops_on(self, token_id: int, prompt: list[int]) -> bool:
        """Whether llama.cpp ends a completion on ``token_id`` (one of its end-of-generation tokens)."""
        out = self._complete({"prompt": prompt, "max_tokens": 2, "n_probs": 1, "temperature": 0.0,
                              "logit_bias": [[int(token_id), FORCE]], "cache_prompt": False})
        choice = out["choices"][0]
        produced = [int(item["id"]) for item in (choice.get("logprobs") or {}).get("content") or []]
        return choice.get("finish_reason") == "stop" and produced == [int(token_id)]
