"""GGUF round trip on the embedded SmolLM2-135M-Instruct (issue 11): f16 and q8_0 written with the
gguf package, loaded back by transformers (gguf_file=), compared with the adapter on the base.
A small untrained-but-nonzero adapter keeps it quick; q8_0 may differ a little, and the verdict says whether that is
what a q8_0 normally moves (tests/test_export_gain.py judges a trained adapter)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("gguf_type, max_delta", [("f16", 0.01), ("q8_0", 0.05)])
def test_embedded_gguf_round_trip(embedded_run, gguf_type, max_delta):
    from lora_tui.core.export.artefacts import export_gguf
    from lora_tui.core.export.check import verify_export
    from lora_tui.core.export.gguf import read_gguf_facts

    path = export_gguf(embedded_run, gguf_type=gguf_type)
    facts = read_gguf_facts(path)
    assert facts["architecture"] == "llama" and gguf_type.upper() in facts["types"]
    assert facts["tokens"] == 49152 and facts["eos_token_id"] == 2
    # transformers' loader, as the README's figures; tests/test_export_gguf_kquant.py runs the embedded model in llama.cpp
    result = verify_export(embedded_run, path.parent, gguf_file=path.name, n_prompts=2, n_rows=4, max_new_tokens=12,
                           runtime="transformers")
    print(f"\n{gguf_type}: {result.summary()}\n{result.table()}")
    assert result.template_same and result.tokens_same and result.eos_ok, result.table()
    # a random adapter on 4 rows: too little to judge the gain, judged by the type's normal band
    assert result.verdict in ("identical", "normal") and result.ok and abs(result.delta) <= max_delta, result.table()
    assert result.agreement >= 0.9
