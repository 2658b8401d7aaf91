"""The choices an export offers, written once: the GGUF weight types (best first) and their default, and the
dtypes of a merged model. The writers check against them (gguf, artefacts); the table of export formats
(formats.py), the CLI and the wizard offer them.

Must not: import anything.
"""

GGUF_TYPES = ("f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0")
DEFAULT_GGUF_TYPE = "q8_0"  # of `lora-tui export --gguf`, the wizard's GGUF chooser and export_gguf
GGUF_TYPE_NOTES = {"f16": "exact", "q8_0": "8-bit", "q6_k": "6-bit K", "q5_k_m": "5-bit K mix",
                   "q4_k_m": "4-bit K mix (Ollama's)", "q4_0": "4-bit"}
MERGE_DTYPES = ("auto", "float32", "float16", "bfloat16")
