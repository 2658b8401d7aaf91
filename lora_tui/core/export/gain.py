"""Does the fine-tune survive the export? The check's judgement from scores of held-out rows.

Input, per held-out row: the log-probability of each trained token under the base model, the adapter
and the artefact, and per position the KL divergence of the artefact from the adapter and whether
both pick the same top token. Output (``judge``):

- the fine-tune's **gain**: mean (adapter - base) log-likelihood, nats per trained token;
- the share of it the artefact **keeps**: sum(artefact - base) / sum(adapter - base);
- 95 % intervals for both from a bootstrap over rows (``scipy.stats.bootstrap``, paired, BCa).
  Rows, not tokens, are resampled: the tokens of one answer share their context and are not
  independent draws. The share is a ratio of two paired sums, skewed when the gain is small; a
  t-interval on per-row ratios would give a short answer with a tiny gain the same weight as a
  long one and blow up on it, and the bootstrap's BCa interval corrects the ratio's bias and skew
  without a formula for its variance (Fieller's interval would do, at more code for the same);
- how far the artefact moves: mean and 99th percentile KL divergence, the same-top-token share,
  beside the band normal for its type (``BANDS``);
- a verdict in words and ``ok`` (the exit code): see ``judge`` and ``THRESHOLDS``.

Must not: import torch, print, or write files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Mean KL divergence (nats/token) and same-top-token share normal for each type. "large": llama.cpp's
# published Llama-3-8B scoreboard against f16, no imatrix (tools/perplexity/README.md); "small": the
# worst of the small models measured here (benchmarks/export_gain.py: the embedded SmolLM2-135M after
# the sample run, and a tiny Qwen2 trained 30 steps on the sample data), in llama.cpp against the adapter.
BANDS = {
    "f16": {"large": (0.0, None), "small": (0.0005, 0.99)},
    "q8_0": {"large": (0.0014, 0.977), "small": (0.02, 0.94)},
    "q6_k": {"large": (0.0057, 0.960), "small": (0.04, 0.90)},
    "q5_k_m": {"large": (0.011, None), "small": (0.08, 0.85)},
    "q4_k_m": {"large": (0.032, 0.919), "small": (0.10, 0.82)},
    "q4_0": {"large": (0.074, None), "small": (0.30, 0.65)},
}
# KEEP_MIN, measured (benchmarks/export_gain.py, README "Measured: what each type keeps"): every sound file of the
# embedded model and a tiny Qwen2 kept 96 % or more (lowest interval end 95 %); files without the fine-tune kept
# 0 %, broken weights -512 % to 35 % (highest end): 50 % lies in the gap on both models.
KEEP_MIN = 0.5  # fail when the whole 95 % interval of the share kept lies below this
MIN_GAIN = 0.05  # nats/token: a gain whose interval reaches below this is within noise
MIN_ROWS = 5  # fewer held-out rows than this: no interval, the gain is not judged
REST_LIMIT = 0.05  # the KL from llama.cpp's listed tokens is a lower bound; past this unlisted mass it says little
BROKEN_FACTOR = 10.0  # gain within noise: fail when the mean KL is this many times the type's small-model band
THRESHOLDS = (f"fails when the share of the gain kept is below {KEEP_MIN:.0%} with 95 % confidence; when the gain "
              f"is within noise (its interval reaches below {MIN_GAIN} nats/token, or under {MIN_ROWS} rows) it "
              f"fails only when the mean KL is over {BROKEN_FACTOR:g}x what the type normally moves a small model; "
              "and always when the template, the stop token or the taught end-of-turn differ")


@dataclass
class Judgement:
    gguf_type: str  # the band it is compared with ("f16" for a merged folder)
    rows: int
    tokens: int
    gain: float
    gain_low: float | None
    gain_high: float | None
    kept: float | None
    kept_low: float | None
    kept_high: float | None
    kl_mean: float
    kl_p99: float
    same_top: float
    rest_mass: float  # mean adapter probability outside the artefact's listed tokens (0: the KL is exact)
    verdict: str  # keeps | loses | normal | abnormal
    words: str
    band_words: str
    ok: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _flat(rows) -> list[float]:
    return [float(x) for row in rows for x in row]


def _interval(numerators, denominators) -> tuple[float | None, float | None]:
    """95 % BCa bootstrap interval of sum(numerators) / sum(denominators) over rows (None, None: too few rows)."""
    import numpy as np
    from scipy.stats import bootstrap

    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    if len(num) < MIN_ROWS:
        return None, None
    if not np.any(num * den[0] != num[0] * den):  # every row the same ratio: no spread to resample
        return float(num.sum() / den.sum()), float(num.sum() / den.sum())

    def ratio(n, d, axis=-1):
        return n.sum(axis=axis) / d.sum(axis=axis)

    for method in ("BCa", "percentile"):  # BCa is undefined on degenerate resamples: fall back
        result = bootstrap((num, den), ratio, paired=True, vectorized=True, n_resamples=2000, confidence_level=0.95,
                           method=method, random_state=0)
        low, high = result.confidence_interval
        if np.isfinite(low) and np.isfinite(high):
            return float(low), float(high)
    return None, None


def pct(value: float) -> str:
    """A share as a whole percentage ("-0 %" reads as 0 %)."""
    return f"{round(value * 100) + 0:d} %"


def share_text(kept: float, low: float, high: float) -> str:
    """'96 % (91-100 %)', or '12 % (-4 to 30 %)' when an end is negative."""
    ends = f"{round(low * 100) + 0:d}-{round(high * 100) + 0:d}" if low >= -0.005 else \
        f"{round(low * 100) + 0:d} to {round(high * 100) + 0:d}"
    return f"{pct(kept)} ({ends} %)"


def band_words(gguf_type: str, kl_mean: float, rest_mass: float = 0.0) -> str:
    """How the move compares with what the type normally does, in words."""
    band = BANDS.get(gguf_type, BANDS["f16"])
    small = band["small"][0]
    large = band["large"][0]
    name = gguf_type if gguf_type in BANDS else "f16"
    if rest_mass > REST_LIMIT:
        if kl_mean > BROKEN_FACTOR * small:  # a lower bound already past the limit: what judge fails a file on
            return (f"moves far more than a {name} should (KL at least {kl_mean:.2f} nats/token, from llama.cpp's "
                    "listed tokens): the file is likely broken")
        return (f"how far it moves cannot be told from llama.cpp's listed tokens (they hold only "
                f"{pct(1 - rest_mass)} of the adapter's probability)")
    if kl_mean <= max(large, 1e-4) and name == "f16":
        return "moves no more than rounding to 16 bits"
    if kl_mean <= small:
        return f"moves as much as a {name} normally does" if kl_mean >= large / 2 else \
            f"moves less than a {name} normally does"
    if kl_mean <= BROKEN_FACTOR * small:
        like = next((t for t in BANDS if BANDS[t]["small"][0] >= kl_mean), None)
        return f"moves more than a {name} normally does" + (f" (as much as a {like})" if like and like != name else "")
    return f"moves far more than a {name} should: the file is likely broken"


def judge(base, adapter, artefact, kl, same_top, *, gguf_type: str = "f16", rest_mass=None) -> Judgement:
    """The judgement from per-row sequences of per-token values (see the module docstring)."""
    import numpy as np

    rows = [i for i, r in enumerate(base) if len(r)]
    base, adapter, artefact = [np.asarray(base[i]) for i in rows], [np.asarray(adapter[i]) for i in rows], \
        [np.asarray(artefact[i]) for i in rows]
    tokens = sum(len(r) for r in base)
    flat_kl, flat_same = np.asarray(_flat(kl[i] for i in rows)), np.asarray(_flat(same_top[i] for i in rows))
    lengths = [len(r) for r in base]
    gains = [float((a - b).sum()) for a, b in zip(adapter, base)]
    kept_sums = [float((q - b).sum()) for q, b in zip(artefact, base)]
    gain = sum(gains) / max(tokens, 1)
    gain_low, gain_high = _interval(gains, lengths)
    kept = sum(kept_sums) / sum(gains) if sum(gains) else None
    kept_low, kept_high = _interval(kept_sums, gains) if kept is not None else (None, None)
    kl_mean = float(flat_kl.mean()) if flat_kl.size else 0.0
    kl_p99 = float(np.percentile(flat_kl, 99)) if flat_kl.size else 0.0
    same = float(flat_same.mean()) if flat_same.size else 0.0
    rest = float(np.mean(_flat(rest_mass[i] for i in rows))) if rest_mass is not None and tokens else 0.0
    moved = band_words(gguf_type, kl_mean, rest)
    judgeable = gain_low is not None and gain_low > MIN_GAIN and kept_low is not None
    if judgeable:
        share = f"keeps {share_text(kept, kept_low, kept_high)} of what training taught"
        if kept_high < KEEP_MIN:
            verdict, ok = "loses", False
            words = f"LOSES the fine-tune: {share} (a sound file keeps at least {pct(KEEP_MIN)}); {moved}"
        else:
            verdict, ok, words = "keeps", True, f"{share}; {moved}"
    else:
        why = f"only {len(rows)} held-out rows" if len(rows) < MIN_ROWS else \
            f"gain {gain:+.3f} nats/token, within noise"
        broken = kl_mean > BROKEN_FACTOR * BANDS.get(gguf_type, BANDS["f16"])["small"][0]
        verdict, ok = ("abnormal", False) if broken else ("normal", True)
        words = f"training changed these answers too little to judge what is kept ({why}); {moved}"
    return Judgement(gguf_type, len(rows), tokens, gain, gain_low, gain_high, kept, kept_low, kept_high, kl_mean, kl_p99, same, rest, verdict, words, moved, ok)


def _band_text(gguf_type: str, which: int) -> str:
    band = BANDS.get(gguf_type, BANDS["f16"])
    large, small = band["large"][which], band["small"][which]
    fmt = (lambda v: f"{v:.4g}") if which == 0 else (lambda v: f"{v:.0%}")
    parts = ([f"{fmt(large)} at 8B"] if large is not None and (which or large) else []) + [f"{fmt(small)} small models"]
    return f"normal for {gguf_type}: " + ", ".join(parts)


def kept_text(j: dict) -> str:
    if j.get("kept_low") is None or j.get("verdict") in ("normal", "abnormal"):
        return "not judged (gain within noise)" if j.get("rows", 0) >= MIN_ROWS else f"not judged ({j.get('rows', 0)} rows)"
    return share_text(j["kept"], j["kept_low"], j["kept_high"])


def verdict_rows(check: dict) -> list[tuple[str, str]]:
    """(what, measured) rows of a check (``RoundTrip.to_dict()``, or its record in exports.json): the verdict table
    the CLI, the Export screen and the cards show."""
    j = check.get("judgement") or {}
    rows = []
    if j:
        interval = f" ({j['gain_low']:+.3f} to {j['gain_high']:+.3f})" if j.get("gain_low") is not None else ""
        rows += [("Training gain", f"{j['gain']:+.3f} nats/token over the base{interval}; "
                                   f"{j['rows']} held-out rows, {j['tokens']} tokens"),
                 ("Gain kept", kept_text(j)),
                 ("KL from adapter", f"mean {j['kl_mean']:.4f}, 99th pct {j['kl_p99']:.3f}; {_band_text(j['gguf_type'], 0)}"),
                 ("Same top token", f"{j['same_top']:.1%}; {_band_text(j['gguf_type'], 1)}")]
    if check.get("preference"):  # dpo / kto runs (export.preference_check)
        rows.append(("Preference kept", check["preference"]["words"]))
    rows.append(("Chat template", ("same" if check.get("template_same") else "DIFFERENT")
                 + (" (same token ids)" if check.get("tokens_same") else " (token ids differ)")))
    stops = ", ".join(check.get("artefact_stops") or []) or "nothing"
    rows.append(("Stop token", f"{check.get('learned_eos')} (taught) " + ("stops it" if check.get("eos_ok") else
                                                                          f"does NOT stop it (stops on {stops})")))
    rows.append(("Verdict", ("PASS: " if check.get("ok") else "FAIL: ") + (check.get("verdict_words") or "")))
    return rows


def columns(check: dict) -> dict[str, str]:
    """The measured columns (run/model_card.EXPORT_COLUMNS) of the model card's and README's export tables."""
    j = check.get("judgement") or {}
    return {"Gain kept": kept_text(j) if j else "-",
            "KL mean / p99": f"{j['kl_mean']:.4f} / {j['kl_p99']:.3f}" if j else "-",
            "Same top token": f"{j['same_top']:.1%}" if j else "-",
            "Template": "same" if check.get("template_same") else "DIFFERENT",
            "Stop token": f"{check.get('learned_eos')} " + ("stops" if check.get("eos_ok") else "does NOT stop"),
            "Verdict": (check.get("verdict") or "-") + ("" if check.get("ok") else " (FAILED)")}
