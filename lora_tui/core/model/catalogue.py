"""Model dimensions for memory estimates, without loading any weights.

``model_dims(name_or_path)`` answers from, in order: the embedded model, a local
model directory (its ``config.json``), the offline catalogue of popular models
(``catalogue.json``: dimensions copied from each model's published config), or a
config already in the Hugging Face cache. It never downloads anything and never
imports torch or transformers: it reads JSON.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from lora_tui.core.model.families import FAMILIES
from lora_tui.core.model.layout import layout

_CATALOGUE_FILE = Path(__file__).with_name("catalogue.json")

# Families whose layout differs from Llama's in ways the estimate cares about.
_FOUR_NORMS = {"gemma2", "gemma3", "gemma3_text", "gemma4", "gemma4_text"}
# No SDPA path (families.py: Gemma 2's soft-capping, gpt-oss's sinks): on a CPU the eager path keeps s x s weights.
_EAGER_ATTENTION = {t for f in FAMILIES if f.needs for t in f.model_types}
_FUSED = {"phi3"}  # one qkv_proj and one gate_up_proj
_QKV_BIAS = {"qwen2", "qwen2_moe"}
_UNGATED_MLP = {"gpt2", "gpt_neox", "phi", "gpt_bigcode", "falcon", "opt", "gptj", "starcoder2"}
_TIED_BY_DEFAULT = {"gemma", "gemma2", "gemma3", "gemma3_text", "gemma4", "gemma4_text", "gpt2", "gpt_bigcode", "opt"}


@dataclass(frozen=True)
class ModelDims:
    """What the memory estimate needs to know about a causal language model."""

    name: str
    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool
    params: int = 0  # computed from the dimensions when left at 0
    published_params: int | None = None
    hub_id: str | None = None
    norms_per_layer: int = 2
    attention_bias: bool = False
    fused_projections: bool = False  # Phi-3: qkv_proj and gate_up_proj
    gated_mlp: bool = True
    eager_attention: bool = False
    sliding_window: bool = False
    experts: int = 1
    experts_per_token: int = 1
    expert_params: int = 0  # MoE: all experts' parameters (resident; 3-D tensors, not quantized by bitsandbytes)
    active_expert_params: int = 0  # MoE: the experts' parameters one token runs through (k of them)
    per_layer_embedding_params: int = 0  # Gemma 3n / 4: the per-layer embedding table (a lookup, never a matmul)
    linear_attention_layers: int = 0  # hybrid models (Qwen3.5): Gated DeltaNet layers, a fixed-size state each
    exact_linear_params: int | None = None  # nn.Linear weights of all decoder layers, from model/layout.py
    # (module, in, out) of linear layers linear_modules leaves out (layout.Layout.other_linear: Gemma 4's own head
    # size in its full-attention layers, per-layer-input projections), and every distinct head size: the CPU bf16
    # estimate counts a oneDNN kernel per distinct matmul shape (plan/memory.py _kernel_cache)
    other_linear: tuple[tuple[str, int, int], ...] = ()
    head_dims: tuple[int, ...] = ()
    lean_head: bool = True  # the trainer's lean LM head applies (core/train/engine.py: not MoE, logits unscaled)
    stored_dtype: str = "bfloat16"
    checkpoint_bytes: int | None = None  # size of the weights on disk, when a local directory says so
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.params <= 0:
            object.__setattr__(self, "params", self.count_params())

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def linear_modules(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each linear layer in one decoder layer (one expert's MLP)."""
        h, i = self.hidden, self.intermediate
        if self.experts > 1:  # transformers 5 keeps experts as fused 3-D parameters, not linear layers
            return {"q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim), "o_proj": (self.q_dim, h)}
        if self.fused_projections:
            attn = {"qkv_proj": (h, self.q_dim + 2 * self.kv_dim), "o_proj": (self.q_dim, h)}
            mlp = {"gate_up_proj": (h, 2 * i), "down_proj": (i, h)}
        else:
            attn = {"q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim), "o_proj": (self.q_dim, h)}
            mlp = {"gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)} if self.gated_mlp else {"up_proj": (h, i), "down_proj": (i, h)}
        return {**attn, **mlp}

    @property
    def module_groups(self) -> dict[str, tuple[str, ...]]:
        names = tuple(self.linear_modules)
        attention = tuple(n for n in names if n in ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj"))
        qv = ("qkv_proj",) if self.fused_projections else ("q_proj", "v_proj")
        return {"qv": qv, "attention": attention, "mlp": tuple(n for n in names if n not in attention), "all-linear": names}

    def target_modules(self, targets: str | list[str] | tuple[str, ...]) -> list[str]:
        """Names of the LoRA-wrapped linear layers for a target choice ('qv', 'attention', 'all-linear' or names)."""
        if isinstance(targets, str):
            if targets in self.module_groups:
                return list(self.module_groups[targets])
            targets = [t.strip() for t in targets.split(",") if t.strip()]
        known = self.linear_modules
        unknown = [t for t in targets if t not in known]
        if unknown:
            raise ValueError(
                f"Target module(s) {', '.join(unknown)} are not linear layers of {self.name}. "
                f"Fix: choose from {', '.join(known)} or use qv / attention / all-linear."
            )
        return list(dict.fromkeys(targets))

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def linear_params_per_layer(self) -> int:
        if self.exact_linear_params is not None:
            return self.exact_linear_params // max(self.layers, 1)
        attention = sum(a * b for n, (a, b) in self.linear_modules.items() if n in self.module_groups["attention"])
        mlp = sum(a * b for n, (a, b) in self.linear_modules.items() if n in self.module_groups["mlp"])
        router = self.hidden * self.experts if self.experts > 1 else 0
        return attention + mlp * self.experts + router

    def count_params(self) -> int:
        bias = (self.q_dim + 2 * self.kv_dim) if self.attention_bias else 0
        per_layer = self.linear_params_per_layer + bias + self.norms_per_layer * self.hidden
        return self.embedding_params + self.layers * per_layer + self.hidden  # + final norm

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["notes"] = list(self.notes)
        out["linear_modules"] = {k: list(v) for k, v in self.linear_modules.items()}
        return out


def _first(cfg: dict, *keys, default=None):
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    return default


def dims_from_config(cfg: dict, name: str, **extra) -> ModelDims:
    """Build ModelDims from a transformers config.json dictionary; ValueError names what is missing."""
    if isinstance(cfg.get("text_config"), dict):  # vision-language models: the language model decides memory
        cfg = {**cfg["text_config"], "model_type": cfg["text_config"].get("model_type", cfg.get("model_type", ""))}
    model_type = str(cfg.get("model_type") or "unknown")
    hidden = _first(cfg, "hidden_size", "n_embd", "d_model")
    layers = _first(cfg, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first(cfg, "num_attention_heads", "n_head")
    vocab = cfg.get("vocab_size")
    missing = [k for k, v in (("hidden_size", hidden), ("num_hidden_layers", layers), ("num_attention_heads", heads), ("vocab_size", vocab)) if not v]
    if missing:
        raise ValueError(f"{name}: config has no {', '.join(missing)}, so its memory cannot be estimated.")
    notes: list[str] = []
    try:  # exact for every family of the matrix (model/layout.py), a Llama-like count otherwise
        parts = layout({**cfg, "model_type": model_type})
    except (KeyError, TypeError, ValueError):
        parts = None
    known = model_type in {"gemma", "mixtral", "qwen2_moe"} or any(model_type in f.model_types for f in FAMILIES)
    if not known:
        notes.append(f"model type '{model_type}' is estimated as a Llama-like decoder")
    experts = int(_first(cfg, "num_local_experts", "num_experts", default=1) or 1)
    if parts is not None:
        extra = {"params": parts.total, "expert_params": parts.experts, "active_expert_params": parts.active_experts,
                 "per_layer_embedding_params": parts.per_layer_embedding,
                 "linear_attention_layers": parts.linear_attention_layers, "exact_linear_params": parts.linear,
                 "other_linear": parts.other_linear, "head_dims": parts.head_dims, **extra}
    width = _first(cfg, "moe_intermediate_size") if experts > 1 and model_type != "gpt_oss" else None
    if parts is not None and parts.experts:
        notes.append(f"{experts} experts ({parts.experts / 1e9:.2f} B parameters) are all resident, "
                     f"{_first(cfg, 'num_experts_per_tok', 'top_k_experts', default=1)} per token active; a 4/8-bit load "
                     "quantizes the linear layers only, the experts' 3-D tensors stay unquantized")
    if parts is not None and parts.per_layer_embedding:
        notes.append(f"per-layer embeddings: {parts.per_layer_embedding / 1e9:.2f} B parameters of lookup tables, "
                     "resident and never quantized")
    return ModelDims(
        name=name,
        model_type=model_type,
        hidden=int(hidden),
        layers=int(layers),
        heads=int(heads),
        kv_heads=int(_first(cfg, "num_key_value_heads", default=heads)),
        head_dim=int(_first(cfg, "head_dim", default=int(hidden) // int(heads))),
        intermediate=int(width or _first(cfg, "intermediate_size", "n_inner", "ffn_dim", default=4 * int(hidden))),
        vocab=int(vocab),
        tied_embeddings=bool(cfg.get("tie_word_embeddings", model_type in _TIED_BY_DEFAULT)),
        norms_per_layer=4 if model_type in _FOUR_NORMS else 2,
        attention_bias=bool(cfg.get("attention_bias", model_type in _QKV_BIAS)),
        fused_projections=model_type in _FUSED,
        gated_mlp=model_type not in _UNGATED_MLP,
        eager_attention=model_type in _EAGER_ATTENTION,
        sliding_window=bool(cfg.get("sliding_window")) and cfg.get("use_sliding_window", True) is not False,
        experts=experts,
        experts_per_token=int(_first(cfg, "num_experts_per_tok", default=1) or 1) if experts > 1 else 1,
        stored_dtype=str(_first(cfg, "torch_dtype", "dtype", default="bfloat16")),
        # engine.install_lean_head keeps TRL's own head (32768-wide tiles) for MoE and scaled logits (Granite)
        lean_head=experts <= 1 and all(cfg.get(k) is None for k in ("logit_scale", "output_multiplier",
                                                                    "lm_head_multiplier", "logits_scaling")),
        notes=tuple(notes),
        **extra,
    )


@lru_cache(maxsize=1)
def _raw_catalogue() -> dict:
    return json.loads(_CATALOGUE_FILE.read_text())["models"]


@lru_cache(maxsize=1)
def _load_catalogue() -> tuple[dict[str, ModelDims], dict[str, str]]:
    raw = _raw_catalogue()
    models: dict[str, ModelDims] = {}
    aliases: dict[str, str] = {}
    for name, entry in raw.items():
        models[name] = dims_from_config(entry["config"], name, hub_id=entry.get("hub_id"), published_params=entry.get("published_params"))
        for alias in [name, entry.get("hub_id") or "", *entry.get("aliases", [])]:
            if alias:
                aliases[alias.lower()] = name
                aliases[alias.lower().rsplit("/", 1)[-1]] = name
    return models, aliases


# name -> ModelDims, read once at import (a few kilobytes of JSON).
CATALOGUE: dict[str, ModelDims] = dict(_load_catalogue()[0])


def catalogue_lookup(name: str) -> ModelDims | None:
    models, aliases = _load_catalogue()
    key = name.strip().lower()
    found = aliases.get(key) or aliases.get(key.rsplit("/", 1)[-1])
    return models[found] if found else None


def _read_config(path: Path) -> dict:
    try:
        cfg = json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror}). Fix: check the path and its permissions.") from None
    except ValueError as exc:
        raise ValueError(f"{path}: line {getattr(exc, 'lineno', '?')}: not valid JSON ({exc}). Fix: restore the model's config.json.") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(cfg).__name__}.")
    return cfg


def _checkpoint_bytes(directory: Path) -> int | None:
    files = list(directory.glob("*.safetensors")) or list(directory.glob("*.bin"))
    return sum(f.stat().st_size for f in files) if files else None


def _from_directory(directory: Path, name: str) -> ModelDims:
    return dims_from_config(_read_config(directory / "config.json"), name, checkpoint_bytes=_checkpoint_bytes(directory))


def _hf_cache_config(repo_id: str) -> Path | None:
    """config.json of a hub model already in the local Hugging Face cache (read as files, no network)."""
    if repo_id.count("/") != 1:
        return None
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(os.environ.get("HF_HOME") or os.path.join(Path.home(), ".cache", "huggingface"), "hub")
    snapshots = Path(hub) / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    candidates = sorted(snapshots.glob("*/config.json"), key=lambda p: p.stat().st_mtime, reverse=True) if snapshots.is_dir() else []
    return candidates[0] if candidates else None


def model_dims(name_or_path: str) -> ModelDims:
    """Dimensions of a catalogue name / hub id, 'embedded', a local model directory, or a cached hub config.

    Raises ValueError for an unreadable or incomplete config, LookupError when the model is unknown.
    """
    from lora_tui.core.model.embedded import EMBEDDED_MODEL, converted_dir, is_embedded

    text = str(name_or_path).strip()
    if is_embedded(text):
        directory = converted_dir()
        if (directory / "config.json").is_file():
            return _from_directory(directory, EMBEDDED_MODEL)
        # Not converted yet: same dimensions as the catalogue entry, stored as float32 once converted.
        raw = _raw_catalogue()["SmolLM2-135M"]
        return dims_from_config({**raw["config"], "torch_dtype": "float32"}, EMBEDDED_MODEL, published_params=raw["published_params"])
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{path}: this folder has no config.json, so it is not a model directory. Fix: point at the folder holding config.json.")
        return _from_directory(path, text)
    if path.is_file() and path.name.endswith(".json"):
        return dims_from_config(_read_config(path), text)
    found = catalogue_lookup(text)
    if found is not None:
        return found
    cached = _hf_cache_config(text)
    if cached is not None:
        return dims_from_config(_read_config(cached), text)
    raise LookupError(
        f"Unknown model '{text}': not in the catalogue, not a local directory with config.json, "
        f"and not in the Hugging Face cache. Fix: pass a model directory, or one of: {', '.join(CATALOGUE)}."
    )


