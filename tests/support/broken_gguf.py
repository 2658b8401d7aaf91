"""GGUF files built to fail the round-trip check, each the way a real export bug breaks one (issue 26):

- ``base``: the base model without the adapter (the merge step skipped);
- ``norm_offset``: every RMSNorm weight written as w - 1 (a converter that takes the model for one with
  Gemma's 1 + w norms and stores w - 1);
- ``swapped``: ffn_gate and ffn_up swapped in every layer (a fused gate_up split in the wrong order);
- ``template``: a chat template other than training's (Llama 2's [INST] format) in the file.

Written with the product's own ``write_gguf`` from the same merged model ``export_gguf`` writes, so only the
named fault differs. Shared by tests/test_export_gain.py and benchmarks/export_gain.py.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

VARIANTS = ("base", "norm_offset", "swapped", "template")
LLAMA2_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
                   "{% else %} {{ m['content'] }}</s>{% endif %}{% endfor %}")


def write_broken_gguf(run, out: Path, variant: str, gguf_type: str = "q8_0") -> Path:
    import torch

    from lora_tui.core.data.template import apply_training_template
    from lora_tui.core.export.artefacts import load_merged
    from lora_tui.core.export.check import learned_end_token
    from lora_tui.core.export.gguf import write_gguf
    from lora_tui.core.model.models import load_base_model
    from lora_tui.core.run.adapters import find_adapter

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}")
    source = find_adapter(run, allow_checkpoint=False)
    model, tokenizer, _ = load_merged(source, "float32")
    if variant == "base":
        model = load_base_model(source.base_model, load_in="16bit", precision="fp32", device="cpu")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if variant == "norm_offset" and name.endswith("norm.weight"):
                param.sub_(1.0)  # w stored as w - 1, as a converter that takes the model for Gemma's 1 + w writes it
        if variant == "swapped":
            for layer in model.model.layers:  # a fused gate_up split in the wrong order
                gate, up = layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight
                tmp = gate.detach().clone()
                gate.copy_(up)
                up.copy_(tmp)
    apply_training_template(tokenizer, source.template)
    end = learned_end_token(tokenizer, source.template)
    if variant == "template":
        tokenizer.chat_template = LLAMA2_TEMPLATE
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="broken-gguf-") as tmp:
        tokenizer.save_pretrained(tmp)
        write_gguf(model, tokenizer, tmp, out, gguf_type=gguf_type, name=f"broken-{variant}", eos_token_id=end)
    return out
