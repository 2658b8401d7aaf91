"""Helpers (no tests) shared by the chat, export and model-card tests: a fake, finished run
directory whose adapter is built with plain peft on the tiny model, the way the trainer
leaves one (config.yaml, events.jsonl, status.json, adapter/ with tokenizer)."""

from __future__ import annotations

from pathlib import Path

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_adapter(base_dir: Path, out: Path, *, load_in: str = "16bit", scale: float = 0.5, seed: int = 1) -> Path:
    """Save a LoRA adapter for ``base_dir`` whose lora_B weights are non-zero (so it changes answers)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    from lora_tui.core.model.models import load_base_model

    base = load_base_model(str(base_dir), load_in=load_in, precision="fp32", device="cpu")
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS,
                                            task_type="CAUSAL_LM"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero: an untrained adapter changes nothing
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    return out


def make_fake_run(root: Path, base_dir: Path, *, name: str = "fake-run", load_in: str = "16bit",
                  with_adapter: bool = True, events: bool = True, seed: int = 1) -> Path:
    from lora_tui.core.config import Config, save_config
    from lora_tui.core.run.runs import RunDirectory

    run = RunDirectory(root / name)
    run.path.mkdir(parents=True)
    config = Config()
    config.model.name = str(base_dir)
    config.model.load_in = load_in
    config.data.train = "data/train.jsonl"
    config.training.max_steps = 12
    config.output.run_name = name
    save_config(config, run.config_path)
    if with_adapter:
        make_adapter(base_dir, run.adapter_dir, load_in=load_in, seed=seed)
    if events:
        run.append_event("started", model=str(base_dir), model_path=str(base_dir), method="QLoRA" if load_in == "4bit" else "LoRA",
                         device="cpu", precision="fp32", target_modules=TARGETS, trainable_params=12345,
                         total_params=678901, max_steps=12, epochs=3.0, num_train_rows=40, num_eval_rows=8,
                         data={"train": {"path": "data/train.jsonl", "sha256": "ab" * 32, "rows": 40},
                               "validation": {"path": "data/valid.jsonl", "sha256": "cd" * 32, "rows": 8}},
                         command=f"lora-tui train {run.config_path} training.max_steps=12", resumed_from=None)
        run.append_event("eval", step=0, phase="before", eval_loss=3.25, perplexity=25.79)
        run.append_event("step", step=12, max_steps=12, epoch=3.0, loss=1.5, lr=1e-4, grad_norm=0.5,
                         tokens_per_s=100.0, tokens_seen=1000, elapsed_s=10.0, eta_s=0.0)
        run.append_event("eval", step=12, phase="after", eval_loss=1.75, perplexity=5.75)
        run.append_event("finished", step=12, adapter=str(run.adapter_dir), train_loss=1.625, eval_loss=1.75,
                         perplexity=5.75, runtime_s=12.5)
        run.write_status("finished", step=12, max_steps=12)
    return run.path


def greedy_answers(run_dir: Path, prompts: list[str], max_new_tokens: int) -> tuple[list[str], list[str], str]:
    """The run's greedy answers to ``prompts`` with its adapter and with the base alone (one model loaded), and a
    report of all three side by side for an assertion message (the embedded end-to-end tests)."""
    from lora_tui.core.chat.session import ChatSession, GenerationSettings

    session = ChatSession.from_run(run_dir, device="cpu")
    greedy = GenerationSettings(greedy=True, max_new_tokens=max_new_tokens)
    tuned = [session.reply([{"role": "user", "content": p}], use_adapter=True, settings=greedy) for p in prompts]
    base = [session.reply([{"role": "user", "content": p}], use_adapter=False, settings=greedy) for p in prompts]
    report = "\n".join(f"{p!r}\n  adapter: {t!r}\n  base:    {b!r}" for p, t, b in zip(prompts, tuned, base))
    return tuned, base, report
