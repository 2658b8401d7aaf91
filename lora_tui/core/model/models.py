"""Finding, checking and loading base models and tokenizers.

- ``resolve_model_path``: 'embedded' -> the converted local copy; a local dir stays;
  anything else is a hub id.
- ``check_model_source``: is this model usable (exists, has a config, causal-LM
  architecture), without loading weights; hub ids without network get a plain message.
- ``load_tokenizer`` / ``load_base_model``: with 16-bit, 8-bit or 4-bit NF4 loads.
- ``linear_layer_names`` / ``resolve_target_modules``: LoRA targets from the model's
  actual linear layers.

Heavy imports happen inside functions. Never sets trust_remote_code on its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lora_tui.core.model.embedded import EMBEDDED_MODEL, ensure_embedded_model, is_embedded

# Names used for attention projections across common architectures.
_QUERY = {"q_proj", "query", "q", "wq"}
_VALUE = {"v_proj", "value", "v", "wv"}
_ATTENTION = _QUERY | _VALUE | {"k_proj", "o_proj", "key", "dense", "out_proj", "wk", "wo", "k", "o",
                                 "qkv_proj", "c_attn", "query_key_value", "Wqkv", "c_proj_attn"}
_FUSED_QKV = {"qkv_proj", "c_attn", "query_key_value", "Wqkv"}
_NEVER = {"lm_head", "embed_out", "output", "score", "classifier"}


class ModelSourceError(RuntimeError):
    """The model cannot be found or used; the message names it and the fix."""


@dataclass
class ModelCheck:
    ok: bool
    kind: str  # "embedded" | "local" | "hub"
    name: str
    message: str
    path: str | None = None
    model_type: str | None = None
    has_chat_template: bool | None = None
    warnings: list[str] = field(default_factory=list)


def model_kind(name: str) -> str:
    if is_embedded(name):
        return "embedded"
    expanded = os.path.expanduser(str(name))
    if os.path.isabs(expanded) or expanded.startswith(".") or os.path.exists(expanded):
        return "local"
    return "hub"


def resolve_model_path(name: str, on_progress: Callable[[str, float], None] | None = None) -> str:
    """What transformers should load: a directory for embedded/local models, else the hub id."""
    kind = model_kind(name)
    if kind == "embedded":
        return str(ensure_embedded_model(on_progress))
    if kind == "local":
        path = Path(os.path.expanduser(str(name)))
        if not path.is_dir():
            raise ModelSourceError(f"Model directory {path} does not exist. Fix: check the path, or use 'embedded'.")
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"{path} has no config.json, so it is not a transformers model directory.")
        return str(path)
    return str(name)


def _hub_error(name: str, exc: Exception) -> ModelSourceError:
    text = f"{type(exc).__name__}: {exc}"
    offline = any(s in text for s in ("offline", "Offline", "ConnectError", "ConnectionError", "resolve", "Max retries",
                                      "couldn't connect", "not find", "We couldn't", "does not appear"))
    if offline:
        return ModelSourceError(
            f"'{name}' is neither a local directory nor in the local Hugging Face cache, and the hub cannot be "
            "reached from here. Fix: download it where there is network (`hf download NAME --local-dir DIR`), copy the "
            "folder here and give its path, or use 'embedded'."
        )
    if "gated" in text.lower() or "401" in text or "403" in text:
        return ModelSourceError(f"'{name}' is gated on the hub: accept its licence and set HF_TOKEN, then retry.")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelSourceError(f"Cannot load '{name}': {first}")


def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect to the hub, so an offline machine gets a plain answer in seconds
    instead of a minute of HTTP retries."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _ensure_hub_usable(name: str) -> None:
    """For a hub id: fine when its config is cached locally or the hub answers; else a clear error."""
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            if not hub_reachable(1.0):
                os.environ["HF_HUB_OFFLINE"] = "1"  # use the cached copy without minutes of retries
            return
    except Exception:  # malformed ids are reported by transformers below
        pass
    if not hub_reachable():
        raise _hub_error(name, OSError("offline"))


def load_model_config(name: str, trust_remote_code: bool = False, revision: str | None = None):
    from transformers import AutoConfig

    path = resolve_model_path(name)
    if model_kind(name) == "hub":
        _ensure_hub_usable(name)
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, revision=revision)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise ModelSourceError(
                f"'{name}' needs its own Python code to load. Only if you trust its author, set "
                "model.trust_remote_code=true."
            ) from None
        raise ModelSourceError(f"Cannot read the config of '{name}': {exc}") from None
    except OSError as exc:
        raise _hub_error(name, exc) from None


def check_model_source(name: str, trust_remote_code: bool = False) -> ModelCheck:
    """Check a model without loading weights. Never raises for a foreseeable problem."""
    kind = model_kind(name)
    if kind == "embedded":
        from lora_tui.core.model.embedded import EmbeddedModelMissing, gguf_path, is_converted

        try:
            gguf_path()
        except EmbeddedModelMissing as exc:
            return ModelCheck(False, kind, name, str(exc))
        note = "" if is_converted() else " (converted to safetensors on first use, ~20-40 s)"
        return ModelCheck(True, kind, EMBEDDED_MODEL, "SmolLM2-135M-Instruct, shipped with lora-tui" + note,
                          model_type="llama", has_chat_template=True)
    try:
        config = load_model_config(name, trust_remote_code=trust_remote_code)
    except ModelSourceError as exc:
        return ModelCheck(False, kind, name, str(exc))
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = getattr(config, "model_type", None)
    path = resolve_model_path(name) if kind == "local" else None
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not trust_remote_code:
        return ModelCheck(False, kind, name, f"Architecture '{model_type}' is not a causal language model that "
                          "transformers can train here.", path=path, model_type=model_type)
    has_template = None
    if path:
        has_template = (Path(path) / "chat_template.jinja").exists() or "chat_template" in (
            (Path(path) / "tokenizer_config.json").read_text(errors="replace")
            if (Path(path) / "tokenizer_config.json").exists() else "")
    check = ModelCheck(True, kind, name, f"{model_type} model", path=path, model_type=model_type,
                       has_chat_template=has_template)
    if has_template is False:
        check.warnings.append("No chat template: prompts use the ChatML or Alpaca fallback you pick.")
    return check


def load_tokenizer(name: str, trust_remote_code: bool = False, revision: str | None = None):
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    if model_kind(name) == "hub":
        _ensure_hub_usable(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, revision=revision)
    except OSError as exc:
        raise _hub_error(name, exc) from None
    if tokenizer.pad_token is None:
        # Labels are built explicitly (see core.data), so pad == eos cannot erase EOS labels.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def torch_dtype_for(precision: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def quantization_config(load_in: str, compute_precision: str, double_quant: bool = True):
    """bitsandbytes config for 8-bit / 4-bit NF4 loads; None for 16-bit."""
    if load_in == "16bit":
        return None
    from transformers import BitsAndBytesConfig

    if load_in == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=torch_dtype_for(compute_precision),
    )


def load_base_model(name: str, *, load_in: str = "16bit", precision: str = "fp32", double_quant: bool = True,
                    device: str = "cpu", trust_remote_code: bool = False, revision: str | None = None):
    """Load the frozen base model for training or inference."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name)
    if model_kind(name) == "hub":
        _ensure_hub_usable(name)
    kwargs: dict = {"trust_remote_code": trust_remote_code, "revision": revision,
                    "dtype": torch_dtype_for(precision)}
    quant = quantization_config(load_in, precision, double_quant)
    if quant is not None:
        kwargs["quantization_config"] = quant
        # The current CUDA device: each rank of a multi-GPU run has set its own (distributed_run).
        kwargs["device_map"] = {"": _current_cuda_device()} if device == "cuda" else {"": "cpu"}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise _hub_error(name, exc) from None
    if quant is None and device == "cuda":
        model = model.to("cuda")
    from lora_tui.core.model.families import without_cache

    if without_cache(model.config):  # only linear-attention layers: the cache cannot size masks (chat, checks)
        model.config.use_cache = model.generation_config.use_cache = False
    return model


def _current_cuda_device() -> int:
    import torch

    return torch.cuda.current_device()


def linear_layer_names(model) -> list[str]:
    """Leaf names of the model's linear layers (16-bit or bitsandbytes), without the output head."""
    import torch

    kinds: tuple = (torch.nn.Linear,)
    try:
        import bitsandbytes as bnb

        kinds += (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    except Exception:  # bitsandbytes missing or broken: 16-bit layers still count
        pass
    try:
        from transformers.pytorch_utils import Conv1D  # GPT-2 style "linear" layers

        kinds += (Conv1D,)
    except ImportError:
        pass
    names = {full.rsplit(".", 1)[-1] for full, module in model.named_modules() if isinstance(module, kinds)}
    return sorted(names - _NEVER)


EXPERTS = "experts"  # in lora.targets ("all-linear,experts"): every MoE expert's tensors too (PEFT target_parameters)


def split_experts(targets: str) -> tuple[str, bool]:
    """(lora.targets without the ``experts`` word, whether it was there): "all-linear,experts" -> ("all-linear", True)."""
    parts = [t.strip() for t in str(targets).split(",") if t.strip()]
    return ",".join(t for t in parts if t != EXPERTS), EXPERTS in parts


def expert_parameter_names(model) -> list[str]:
    """PEFT ``target_parameters`` names of a mixture-of-experts model's fused expert tensors (3-D, one slice per
    expert), such as ``mlp.experts.gate_up_proj``; [] for a dense model. transformers 5 keeps experts as these
    parameters, not linear layers, so ``lora.targets`` never reaches them (``lora.experts`` does)."""
    names = set()
    for full, param in model.named_parameters():
        if param.ndim == 3 and ".experts." in full:
            owner, leaf = full.split(".experts.", 1)
            names.add(f"{owner.rsplit('.', 1)[-1]}.experts.{leaf}")
    return sorted(names)


def linear_layer_names_from_config(name: str, trust_remote_code: bool = False) -> list[str]:
    """The same, from the config alone: the model is built on the meta device (no weights, no memory)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    config = load_model_config(name, trust_remote_code=trust_remote_code)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return linear_layer_names(model)


def resolve_target_modules(choice: str, available: list[str]) -> list[str]:
    """Map 'qv' / 'attention' / 'all-linear' / 'a,b,c' to module names that exist in the model."""
    available_set = set(available)
    choice = choice.strip()
    if choice == "all-linear":
        chosen = sorted(available_set)
    elif choice == "attention":
        chosen = sorted(available_set & _ATTENTION)
    elif choice == "qv":
        chosen = sorted(available_set & (_QUERY | _VALUE)) or sorted(available_set & _FUSED_QKV)
    else:
        chosen = [part.strip() for part in choice.split(",") if part.strip()]
        unknown = [c for c in chosen if c not in available_set]
        if unknown:
            raise ModelSourceError(
                f"lora.targets names {', '.join(unknown)}, which this model does not have. "
                f"Its linear layers: {', '.join(sorted(available_set))}."
            )
    if not chosen:
        raise ModelSourceError(
            f"lora.targets='{choice}' matches none of this model's linear layers "
            f"({', '.join(sorted(available_set))}). Fix: use all-linear or name them."
        )
    return chosen
