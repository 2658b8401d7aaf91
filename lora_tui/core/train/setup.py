"""What every method's recipe sets up the same way: the model to train (the base loaded as LoRA trains it,
with a fresh adapter or ``training.init_adapter``'s), the TrainingArguments SFT, DPO and KTO share, and the
failure a recipe reports. ``training`` (sft) and ``preference`` (dpo / kto) build on it; it imports neither.

Must not import torch / transformers / peft / trl at module top (the trainer imports it before torch).
"""

from __future__ import annotations

from lora_tui.core.config import Config
from lora_tui.core.run.runs import RunDirectory, file_sha256
from lora_tui.core.train import distributed


class TrainingFailure(RuntimeError):
    def __init__(self, reason: str, fix: str = "") -> None:
        super().__init__(reason)
        self.reason, self.fix = reason, fix


def data_sha256(loaded, path) -> str | None:
    """The file (or folder) hash the model card records; None for a hub dataset (its revision is recorded)."""
    return None if loaded.source else file_sha256(path)


def load_base_for_lora(config: Config, device: str, precision: str, choice=None):
    """(the base model as LoRA trains it: loaded, attention set, k-bit prepared; its linear layer names)."""
    from peft import prepare_model_for_kbit_training

    from lora_tui.core.plan.run_plan import choose_engine
    from lora_tui.core.train.engine import prepare_model
    from lora_tui.core.model.models import linear_layer_names, load_base_model

    choice = choice or choose_engine(config, device)
    m = config.model
    model = (distributed.fsdp_base_loader() or load_base_model)(m.name, load_in=m.load_in, precision=precision, double_quant=m.double_quant,
                            device=device, trust_remote_code=m.trust_remote_code, revision=m.revision)
    prepare_model(model, choice)  # attention implementation
    _no_cpu_inference_packing(model)
    if m.load_in != "16bit" and distributed.strategy() != "fsdp":  # FSDP needs one dtype per flat param
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=choice.gradient_checkpointing)
    available = linear_layer_names(model)
    model.lora_tui_linear_layers = available  # in the started event: a resume checks lora.targets without the model
    return model, available


def _no_cpu_inference_packing(model) -> None:
    """bitsandbytes 0.50 repacks a 4-bit layer's weight for AVX512-BF16 inference the first time it runs in eval
    mode on such a CPU (an evaluation before training), and its later training forwards go through that
    inference kernel: no gradient reaches the layers below (layer 0's LoRA gradients were wrong, measured on the
    tiny Llama) and a layer with a bias fails (gpt-oss: 'a view of a leaf Variable ... in-place operation').
    Training keeps the trainable layout; only inference is the slower for it."""
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False


def lora_config(config: Config, available, experts: list[str] | tuple = ()):
    """(the LoraConfig of a fresh adapter, its target modules among ``available``). ``experts``: the model's fused
    expert tensors (models.expert_parameter_names), adapted when lora.targets names ``experts``."""
    from peft import LoraConfig

    from lora_tui.core.model.models import resolve_target_modules, split_experts

    choice, with_experts = split_experts(config.lora.targets)
    targets = resolve_target_modules(choice, available) if choice or not with_experts else []
    if with_experts and not experts:  # refused before launch (plan/family_rules.py); a config edited since
        raise TrainingFailure("lora.targets names experts: this model has no expert tensors to adapt.",
                              "Take experts out of lora.targets.")
    lora = LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                      target_modules=targets, use_rslora=config.lora.use_rslora, use_dora=config.lora.use_dora,
                      target_parameters=list(experts) if with_experts else None,
                      bias="none", task_type="CAUSAL_LM")
    return lora, targets


def build_model(config: Config, device: str, precision: str, choice=None):
    """The PeftModel to train: a fresh adapter, or training.init_adapter's trained further."""
    from peft import get_peft_model

    model, available = load_base_for_lora(config, device, precision, choice)
    if config.training.init_adapter:
        model, targets = load_start_adapter(model, config.training.init_adapter)
    else:
        from lora_tui.core.model.models import expert_parameter_names

        lora, targets = lora_config(config, available, expert_parameter_names(model))
        model = get_peft_model(model, lora)
    model.lora_tui_linear_layers = available
    return model, targets


def load_start_adapter(model, adapter_dir):
    """``model`` (the prepared base) wrapped in the adapter at ``adapter_dir``, trainable: (PeftModel, targets).
    Its own LoRA settings (r, alpha, targets) hold, not config.lora: the run trains that adapter further."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)
    targets = model.peft_config["default"].target_modules
    return model, sorted(targets) if isinstance(targets, (set, list, tuple)) else [str(targets)]


def trainer_arguments(config: Config, run: RunDirectory, device: str, precision: str, has_eval: bool, choice) -> dict:
    """The TrainingArguments every method shares (SFTConfig here, DPOConfig / KTOConfig in core/train/preference.py)."""
    from transformers import TrainingArguments

    from lora_tui.core.train.tracking import trainer_report_to

    t = config.training
    evaluate = has_eval and t.eval_steps > 0
    # transformers 5.2x renamed gradient_checkpointing -> activation_checkpointing.
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__ else "gradient_checkpointing"
    kwargs = dict(
        output_dir=str(run.checkpoints_dir),
        per_device_train_batch_size=choice.micro_batch,  # the plan's, never written back into the config
        per_device_eval_batch_size=choice.micro_batch,
        gradient_accumulation_steps=choice.grad_accum,
        learning_rate=t.learning_rate,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a ratio of total steps
        lr_scheduler_type=t.scheduler,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=t.eval_steps if evaluate else None,
        save_strategy="steps" if t.save_steps > 0 else "no",
        save_steps=t.save_steps if t.save_steps > 0 else 500,
        save_total_limit=2,
        seed=t.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        **{checkpointing: choice.gradient_checkpointing,
           f"{checkpointing}_kwargs": {"use_reentrant": False} if choice.gradient_checkpointing else None},
        max_length=config.data.max_seq_len,
        include_num_input_tokens_seen="non_padding",
        report_to=trainer_report_to(t.report_to, run.path),
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=device == "cuda",
    )
    kwargs.update(distributed.sft_kwargs(device))
    return kwargs
