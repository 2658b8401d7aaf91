"""A run's LoRA adapter as a llama.cpp LoRA GGUF, beside one base-model GGUF shared by every adapter of that base.

``write_adapter_gguf(run)`` writes:

- ``<run>/gguf/<run>-lora.gguf``: the adapter alone (megabytes), as llama.cpp's ``src/llama-adapter.cpp`` reads
  it: ``general.type = adapter``, ``general.architecture`` = the base model's, ``adapter.type = lora``,
  ``adapter.lora.alpha``, and per adapted weight ``<llama.cpp tensor name>.lora_a`` (PEFT's lora_A, rank x in)
  and ``.lora_b`` (lora_B, out x rank), untransposed; llama.cpp scales B·A by alpha / rank. PEFT's own scaling
  (rsLoRA's alpha / sqrt(rank), per-module rank and alpha patterns) is folded into lora_b so that llama.cpp's
  alpha / rank gives the same product. Layers llama.cpp rotates as interleaved pairs get lora_b's rows in the
  same order as the base file's q/k rows (``gguf_families``);
- the base model as GGUF (``write_gguf`` without an adapter), once, in the user cache
  (``<cache>/gguf-bases/<key>/``): every adapter trained on that base reuses the file instead of writing gigabytes
  again per run (the multi-adapter guide trains several per base). The key is the base model's identity (its
  resolved path or hub id and revision, and its weight files' names, sizes and times), the GGUF type, and the
  chat template and end-of-turn token the file carries, since llama.cpp reads the template from the base file;
  a cache, not the run, because the file belongs to no single run and can always be written again;
- ``Modelfile-lora`` beside the adapter: ``FROM <base file>`` + ``ADAPTER ./<adapter file>`` for Ollama.

Refused in one line, before loading anything: families the GGUF export does not write (``gguf_support``),
DoRA, trained embeddings / modules_to_save (not a LoRA product llama.cpp applies), LoRA on MoE expert parameters.

For H6's table of export formats: the writer is ``write_adapter_gguf(run, out=None, *, base_type, overwrite,
on_progress) -> AdapterGGUFInfo``; its check is ``verify_export(run, info.base_path.parent,
gguf_file=info.base_path.name, lora=info.path)`` (llama.cpp with the adapter applied); file naming is
``default_adapter_path``; the base type defaults to f16 (the adapter's product is added to unrounded weights).

Must not: overwrite a file it did not write, write into the adapter or base model folders, print, or import
torch / transformers / gguf at module top.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lora_tui.core.export.gguf import GGUFExportError, gguf_config, gguf_family, write_atomically

BASES_FOLDER = "gguf-bases"


@dataclass
class AdapterGGUFInfo:
    path: Path  # the adapter GGUF
    base_path: Path  # the shared base-model GGUF
    base_reused: bool  # the base file was already there (written for an earlier adapter of this base)
    modelfile: Path
    architecture: str
    base_type: str
    alpha: float
    tensors: int = 0
    notes: list[str] = field(default_factory=list)


def default_adapter_path(source) -> Path:
    from lora_tui.core.export.artefacts import default_gguf_path

    return default_gguf_path(source, "lora")


def _peft_config(adapter_dir: Path) -> dict:
    from lora_tui.core.safe_read import UnsafeFile, read_bounded

    path = adapter_dir / "adapter_config.json"
    try:
        return json.loads(read_bounded(path, 4 * 2**20, "an adapter config", "re-save the adapter").decode("utf-8"))
    except (UnsafeFile, OSError, ValueError) as exc:
        raise GGUFExportError(f"{path} cannot be read ({exc}). Fix: re-save the adapter.") from None


def adapter_refusal(peft_config: dict) -> str | None:
    """Why this adapter cannot be a llama.cpp LoRA GGUF (None: it can)."""
    if peft_config.get("peft_type", "LORA") != "LORA":
        return f"it is a {peft_config.get('peft_type')} adapter, and llama.cpp applies LoRA adapters only"
    if peft_config.get("use_dora"):
        return "it is a DoRA adapter (a magnitude vector llama.cpp does not apply)"
    if peft_config.get("modules_to_save"):
        return f"it trains whole modules ({', '.join(peft_config['modules_to_save'])}), which a LoRA GGUF cannot hold"
    if peft_config.get("target_parameters"):
        return "it adapts MoE expert parameters, which llama.cpp's LoRA loader does not take"
    return None


def _not_applied(family, adapter_dir: Path) -> str | None:
    """Why llama.cpp would leave part of this adapter out (a module its graph multiplies without LoRA: Gemma 4's
    per_layer_model_projection, in every all-linear adapter), read from the adapter's tensor names alone."""
    if not family.no_lora:
        return None
    from safetensors import safe_open

    adapted = set()
    for path in sorted(adapter_dir.glob("adapter_model*.safetensors")):
        with safe_open(str(path), "np") as weights:
            adapted |= {key.split(".lora_A.")[0].rsplit(".", 1)[-1] for key in weights.keys() if ".lora_A." in key}
    missed = sorted(adapted & set(family.no_lora))
    if not missed:
        return None
    return (f"llama.cpp's {family.arch} applies no LoRA to {', '.join(missed)}, which it adapts (train with "
            f"lora.targets naming the other layers for a LoRA GGUF)")


def _base_key(source, base_path: str, gguf_type: str, template: str | None, eos: int | None) -> str:
    """What makes two adapters' base files the same file."""
    folder = Path(base_path)
    weights = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in folder.glob("*.safetensors")) \
        if folder.is_dir() else []
    identity = {"base": str(folder.resolve()) if folder.is_dir() else source.base_model, "revision": source.revision,
                "weights": weights, "type": gguf_type, "template": template, "eos": eos, "format": 1}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def base_gguf_path(source, base_path: str, gguf_type: str, template: str | None, eos: int | None) -> Path:
    from lora_tui.core.paths import cache_dir

    # a file name every system and Ollama's FROM line take ("embedded:SmolLM2-..." kept its colon before)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(source.base_model).rstrip("/")).name).strip("-.") or "base"
    key = _base_key(source, base_path, gguf_type, template, eos)
    return cache_dir() / BASES_FOLDER / f"{name}-{key}" / f"{name}-{gguf_type}.gguf"


def _lora_tensors(adapter_dir: Path, family, config, peft_config: dict, names):
    """(llama.cpp name + .lora_a / .lora_b, float32 array) for each adapted weight, PEFT's scaling folded into B."""
    import math

    from safetensors.numpy import load_file

    from lora_tui.core.export.gguf import _permute, config_value

    files = sorted(adapter_dir.glob("adapter_model*.safetensors"))
    if not files:
        raise GGUFExportError(f"{adapter_dir} holds no adapter_model.safetensors. Fix: re-save the adapter as safetensors.")
    weights: dict = {}
    for path in files:
        weights.update(load_file(str(path)))
    alpha, alpha_pattern = float(peft_config.get("lora_alpha", 8)), peft_config.get("alpha_pattern") or {}
    n_head = config.num_attention_heads
    n_kv = config_value(config, "num_key_value_heads") or n_head
    for key in sorted(weights):
        if ".lora_A." not in key:
            if ".lora_B." not in key:
                raise GGUFExportError(f"adapter tensor '{key}' is not a LoRA A/B matrix; llama.cpp cannot apply it.")
            continue
        module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
        a, b = weights[key], weights[key.replace(".lora_A.", ".lora_B.")]
        gguf_name = names.get_name(module + ".weight", try_suffixes=(".weight", ".bias"))
        if gguf_name is None or a.ndim != 2:
            raise GGUFExportError(f"no llama.cpp tensor for the adapted module '{module}' of {family.label}.")
        # PEFT scales B·A by s = alpha_i / r_i (rsLoRA: / sqrt(r_i)); llama.cpp by alpha / r_i, r_i read from
        # lora_b's shape (so per-module ranks need nothing more): fold s * r_i / alpha into B
        short = module.split(".")[-1]
        r_i = a.shape[0]
        a_i = float(next((v for k, v in alpha_pattern.items() if module.endswith(k) or short == k), alpha))
        scale = a_i / (math.sqrt(r_i) if peft_config.get("use_rslora") else r_i)
        b = b.astype("float32") * (scale * r_i / alpha)
        if family.lora:  # the family's own layout of the base weights (Qwen3.5's value heads)
            a, b = family.lora(module, a, b, config)
        if family.rope == "norm" and module.endswith("q_proj"):
            b = _permute(b, n_head, n_head)
        elif family.rope == "norm" and module.endswith("k_proj"):
            b = _permute(b, n_head, n_kv)
        yield gguf_name + ".lora_a", a.astype("float32")
        yield gguf_name + ".lora_b", b


def write_adapter_gguf(run: str | Path, out: str | Path | None = None, *, base_type: str = "f16",
                       overwrite: bool = False, on_progress: Callable[[str, float], None] | None = None) -> AdapterGGUFInfo:
    """Write the run's adapter as a llama.cpp LoRA GGUF, the base GGUF once (reused), and an Ollama Modelfile."""
    import gguf

    from lora_tui.core.export.artefacts import ExportError, _is_gguf, _record_export
    from lora_tui.core.export.check import learned_end_token
    from lora_tui.core.export.gguf import GGUF_TYPES
    from lora_tui.core.export.modelfile import format_for, modelfile_text
    from lora_tui.core.model.models import ModelSourceError, load_model_config, resolve_model_path
    from lora_tui.core.run.adapters import find_adapter

    report = on_progress or (lambda message, fraction: None)
    if base_type not in GGUF_TYPES:
        raise ExportError(f"--gguf-type must be one of {', '.join(GGUF_TYPES)}, not '{base_type}'.")
    source = find_adapter(run, allow_checkpoint=False)
    target = Path(out).expanduser() if out else default_adapter_path(source)
    if target.is_dir() or not target.suffix:
        target = target / default_adapter_path(source).name
    target = target.resolve()
    modelfile = target.with_name("Modelfile-lora")
    for path in (target, modelfile):
        if path.exists() and not overwrite:
            raise ExportError(f"{path} already exists. Fix: pass --overwrite to replace it, or --out to write elsewhere.")
    if target.exists() and not _is_gguf(target):
        raise ExportError(f"{target} is not a GGUF file: it was not touched. Fix: --out a new file name (.gguf).")
    peft_config = _peft_config(source.adapter_dir)
    try:  # everything that can refuse does so before any weights are loaded
        config = load_model_config(source.base_model, source.trust_remote_code, source.revision)
        family = gguf_family(config)
        config = gguf_config(config)  # a composite trained as its language model (Qwen3.5): that model's config
        why = adapter_refusal(peft_config) or _not_applied(family, source.adapter_dir)
        if why:
            raise GGUFExportError(f"The adapter cannot be written as a llama.cpp LoRA GGUF: {why}. Fix: export the "
                                  "merged model instead (lora-tui export RUN --gguf).")
        base_path = resolve_model_path(source.base_model, on_progress)
    except (GGUFExportError, ModelSourceError) as exc:
        raise ExportError(str(exc)) from None

    tokenizer = _training_tokenizer(source)
    eos = learned_end_token(tokenizer, source.template)
    base_file = base_gguf_path(source, base_path, base_type, tokenizer.chat_template, eos)
    reused = base_file.is_file() and _is_gguf(base_file)
    if not reused:
        report(f"Writing the base model once as {base_type.upper()} GGUF (shared by every adapter of it)", 0.1)
        _write_base(source, base_path, tokenizer, eos, base_file, base_type, on_progress)

    report("Writing the adapter as a LoRA GGUF", 0.8)
    arch = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == family.arch)
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    alpha = float(peft_config.get("lora_alpha", 8))
    info = AdapterGGUFInfo(target, base_file, reused, modelfile, family.arch, base_type, alpha)
    writer = gguf.GGUFWriter(None, family.arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name(source.run.name if source.run else target.stem)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for name, data in _lora_tensors(source.adapter_dir, family, config, peft_config, names):
        writer.add_tensor(name, data.astype("float16"))  # as llama.cpp's convert_lora_to_gguf.py writes by default
        info.tensors += 1
    write_atomically(writer, target)
    text = modelfile_text(format_for(tokenizer, "auto"), source=str(base_file), adapter=f"./{target.name}")
    modelfile.write_text(text, encoding="utf-8")
    if source.run is not None:
        _record_export(source.run, "gguf_adapter", {"path": str(target), "base": str(base_file), "type": base_type,
                                                    "modelfile": str(modelfile), "reused_base": reused})
    report(f"LoRA GGUF ready: {target}", 1.0)
    return info


def _training_tokenizer(source):
    """The tokenizer the adapter was trained with, carrying the training chat template."""
    from transformers import AutoTokenizer

    from lora_tui.core.data.template import apply_training_template
    from lora_tui.core.model.models import load_tokenizer

    if (source.adapter_dir / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(source.adapter_dir, trust_remote_code=source.trust_remote_code)
    else:
        tokenizer = load_tokenizer(source.base_model, source.trust_remote_code, source.revision)
    apply_training_template(tokenizer, source.template)
    return tokenizer


def _write_base(source, base_path: str, tokenizer, eos: int | None, out: Path, gguf_type: str, on_progress) -> None:
    """The base model alone (no adapter) as GGUF, with the training tokenizer, template and end-of-turn token."""
    import shutil
    import tempfile

    from lora_tui.core.export.gguf import write_gguf
    from lora_tui.core.model.models import load_base_model

    model = load_base_model(source.base_model, load_in="16bit", precision="fp32", device="cpu",
                            trust_remote_code=source.trust_remote_code, revision=source.revision)
    with tempfile.TemporaryDirectory(prefix="lora-tui-gguf-") as tmp:
        tokenizer.save_pretrained(tmp)
        spm = Path(base_path) / "tokenizer.model"
        if spm.is_file() and not (Path(tmp) / "tokenizer.model").exists():
            shutil.copy(spm, Path(tmp) / "tokenizer.model")
        out.parent.mkdir(parents=True, exist_ok=True)
        write_gguf(model, tokenizer, tmp, out, gguf_type=gguf_type, name=Path(str(source.base_model)).name,
                   eos_token_id=eos, on_progress=on_progress)
