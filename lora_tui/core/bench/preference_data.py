"""The rows the plain TRL arm of `lora-tui bench --method dpo` (or kto) reads: the user's preference data as
lora-tui reads it, written in TRL's conversational preference format (prompt / chosen / rejected, or KTO's
prompt / completion / label), which TRL's DPOTrainer / KTOTrainer tokenise themselves
(core.bench.plain_trl runs them). No torch here.
"""

from __future__ import annotations


def preference_rows(config) -> list[dict]:
    """The user's preference rows as TRL reads them (conversational), as lora-tui reads them."""
    from lora_tui.core.data.preference_load import load_preferences

    loaded = load_preferences(config.data.train, config.training.method, subset=config.data.subset,
                              max_seq_len=config.data.max_seq_len)
    rows = []
    for e in loaded.examples:
        prompt = e.prompt if isinstance(e.prompt, list) else [{"role": "user", "content": e.prompt}]
        if e.paired:
            rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": e.chosen}],
                         "rejected": [{"role": "assistant", "content": e.rejected}]})
        else:
            rows.append({"prompt": prompt, "completion": [{"role": "assistant", "content": e.completion}], "label": e.label})
    return rows
