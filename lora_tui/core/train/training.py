"""The training recipe: one readable function, ``run_training(run)``, executed in
the detached trainer process (see ``lora_tui.core.trainer_main``).

setup (config, device, tokenizer, data, run plan, model + LoRA) -> the probe (its batch into the run
plan; core/train/probe.py) -> TRL's SFTTrainer built with the plan -> eval before -> train -> eval after
-> save adapter + model card -> final event.

It talks back only through the run directory (events.jsonl, status.json) and
reads the stop request from it. Heavy libraries are imported inside functions.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

# lora_tui's own modules load no heavy library (none imports torch, transformers, trl, peft or datasets at its
# top), so they are imported here. Those libraries are imported inside the functions that use them: trainer_main
# imports this module before engine.prefer_huge_pages() has run (it must run before torch loads), and the wizard's
# data_lengths imports it to measure rows (torch stays out of the wizard's first paint).
from lora_tui.core.config import Config, load_config
from lora_tui.core.data import ChatFormatter, DataError, load_examples
from lora_tui.core.data.load import hold_out, skipped_summary, validation_line
from lora_tui.core.data.records import row_unit
from lora_tui.core.export.hub import make_adapter_portable
from lora_tui.core.machine import hardware as machine  # probe_hardware read through the module: patchable in tests
from lora_tui.core.model.models import ModelSourceError, load_tokenizer, resolve_model_path
from lora_tui.core.plan import memory_record
from lora_tui.core.plan.engine_choice import DeviceFacts, engine_fields
from lora_tui.core.plan.family_rules import family_problem
from lora_tui.core.plan.workload import batch_for_run
from lora_tui.core.plan.run_plan import PlanError, choose_engine, plan_from_env, decide_run_plan
from lora_tui.core.run.checkpoints import choose_checkpoint
from lora_tui.core.run.claim import targets_changed
from lora_tui.core.run.model_card import write_model_card
from lora_tui.core.run.runs import CHECKPOINT_MARKER, RunDirectory, file_sha256
from lora_tui.core.train import distributed, engine, exact_resume, preference, probe, run_guard, run_progress
from lora_tui.core.train.data_lengths_cache import keep_measured
from lora_tui.core.train.setup import TrainingFailure, build_model, data_sha256, trainer_arguments  # noqa: F401 (tests)
from lora_tui.core.train.tracking import missing_trackers

OOM_FIX = ("Fixes, most effective first: load the base in 4-bit (model.load_in=4bit), turn on gradient "
           "checkpointing (training.gradient_checkpointing=true), lower training.micro_batch and raise "
           "training.grad_accum, shorten data.max_seq_len. `lora-tui estimate` shows the effect of each.")


def reproduce_command(run: RunDirectory) -> str:
    return f"lora-tui train {shlex.quote(str(run.config_path))} --run-dir {shlex.quote(str(run.path) + '-again')}"


def pick_device() -> tuple[str, bool]:
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.cuda.is_bf16_supported()
    return "cpu", False


def build_datasets(config: Config, tokenizer):
    """Tokenised train / eval datasets with explicit labels, plus facts for the started event."""
    try:
        if config.training.method != "sft":  # dpo / kto: token ids of prompts and answers
            return preference.build_datasets(config, tokenizer)
        return _build_datasets(config, tokenizer)
    except DataError as exc:
        raise TrainingFailure(str(exc), f"Run `lora-tui validate {shlex.quote(str(config.data.train))}` to see every problem.") from None


def _build_datasets(config: Config, tokenizer):
    from datasets import Dataset

    max_len = config.data.max_seq_len
    subset = config.data.subset
    train_set = load_examples(config.data.train, tokenizer=tokenizer, max_seq_len=max_len, subset=subset)
    # hostile / malformed rows, with their lines (a hub dataset's rows have numbers, not lines)
    skipped = skipped_summary(train_set.findings, unit=row_unit(train_set.container, train_set.source))
    train_rows, eval_rows, eval_set = train_set.examples, [], None
    if config.data.validation:
        eval_set = load_examples(config.data.validation, tokenizer=tokenizer, max_seq_len=max_len, subset=subset)
        eval_rows = eval_set.examples
    else:  # training data given alone: its own held-out rows (core.config.set_training_data)
        train_rows, eval_rows = hold_out(train_rows, config.data.val_fraction, config.training.seed)
    if not train_rows:
        raise TrainingFailure(f"{config.data.train} has no valid rows.", f"Run `lora-tui validate {shlex.quote(str(config.data.train))}`.")
    formatter = ChatFormatter(tokenizer, template=config.data.template, train_on_prompt=config.data.train_on_prompt)

    def encode(rows):
        cols = {"input_ids": [], "labels": [], "length": []}
        for item in formatter.tokenize_many(rows, max_len) if rows else []:
            if any(label != -100 for label in item["labels"]):
                cols["input_ids"].append(item["input_ids"])
                cols["labels"].append(item["labels"])
                cols["length"].append(len(item["input_ids"]))
        return cols

    train_cols, eval_cols = encode(train_rows), encode(eval_rows)
    if not train_cols["input_ids"]:
        raise TrainingFailure("Every label is masked: no row has a trained token.",
                              "Check the rows have assistant answers, or set data.train_on_prompt=true.")
    train_ds = Dataset.from_dict(train_cols)
    eval_ds = Dataset.from_dict(eval_cols) if eval_cols["input_ids"] else None
    facts = {
        "train": {"path": str(config.data.train), "sha256": data_sha256(train_set, config.data.train),
                  "rows": len(train_ds)},
        "validation": ({"path": str(config.data.validation or config.data.train) + ("" if config.data.validation else f" (held out {config.data.val_fraction:.0%})"),
                        "sha256": data_sha256(eval_set, config.data.validation) if eval_set else None,
                        "rows": len(eval_ds)} if eval_ds is not None else None),
    }
    for split, loaded in (("train", train_set), ("validation", eval_set)):
        if loaded is not None and loaded.source and facts[split]:  # a hub id: its id and revision, not a hash
            facts[split]["dataset"] = loaded.source
    facts["train"]["skipped"] = skipped
    facts["validation_line"] = validation_line(config.data.train, config.data.validation, config.data.val_fraction,
                                               len(train_set.examples), len(eval_ds) if eval_ds is not None else 0)
    return train_ds, eval_ds, facts


def sft_config(config: Config, run: RunDirectory, device: str, precision: str, has_eval: bool, choice=None):
    from trl import SFTConfig

    choice = choice or choose_engine(config, device)
    kwargs = trainer_arguments(config, run, device, precision, has_eval, choice)
    kwargs.update(engine.sft_engine_kwargs(choice, config.data.max_seq_len))  # batching mode, Liger kernels
    return SFTConfig(**kwargs)


def sft_trainer(config: Config, run: RunDirectory, device: str, precision: str, model, tokenizer, plan, train_ds,
                eval_ds=None, callbacks=None):
    """The SFTTrainer for ``model`` trained with ``plan`` (a RunPlan): the run's, and the probe's throwaway ones."""
    from trl import SFTTrainer

    trainer = SFTTrainer(model=model, args=sft_config(config, run, device, precision, eval_ds is not None, plan),
                         train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer, callbacks=callbacks)
    finish_trainer(trainer, config, device, precision, plan)
    return trainer


def finish_trainer(trainer, config: Config, device: str, precision: str, plan, exact_metrics: bool = False) -> None:
    """What every trainer of a run gets once built: the lean LM head, and fp32 adapters where bf16 would not do."""
    # dpo / kto: their metrics read exact entropy, mean logits and top-1 at the answers' tokens (exact_metrics).
    if not engine.install_lean_head(trainer.model, engine.CPU_VOCAB_TILE if device == "cpu" else engine.CUDA_VOCAB_TILE,
                                    exact_metrics=exact_metrics):
        plan.kernels = [k for k in plan.kernels if k not in ("lean_head", "trl_fused_head")] + ["trl_fused_head"]
    if config.model.load_in != "16bit" and precision != "bf16":
        # TRL casts a quantized model's adapters to bf16 (the QLoRA paper's GPU recipe). On CPU, where
        # bf16 ran ~15x slower, and under fp16 mixed precision (fp16 grads cannot be unscaled), keep fp32.
        for param in trainer.model.parameters():
            if param.requires_grad:
                param.data = param.data.float()


def _make_callback(run: RunDirectory, stop_flag: threading.Event, config: Config):
    from transformers import TrainerCallback

    class RunEvents(TrainerCallback):
        """Turns trainer progress into run-directory events; turns a stop request into a graceful stop."""

        def __init__(self) -> None:
            self.started = time.monotonic()
            self.last_time, self.last_tokens, self.stop_reason = None, 0, None
            self.best_eval, self.bad_evals = math.inf, 0
            self.eval_phase = "during"  # the recipe sets "before" / "after" around its own evaluations
            self.final_eval = None  # the eval loss of the last step, when transformers evaluated it itself
            self.first_step = 0

        def on_step_end(self, args, state, control, **kw):
            if distributed.agree_to_stop(stop_flag.is_set() or run.stop_requested()):  # same step on every rank
                if self.stop_reason is None:  # what `stop` and the wizard wait for now
                    run_progress.phase(run, f"stopping at step {state.global_step}: saving a checkpoint and the adapter")
                self.stop_reason = self.stop_reason or "stop requested"
                control.should_training_stop = True
                control.should_save = True  # a resumable checkpoint at this exact step
            if state.global_step >= state.max_steps:
                self.eval_phase = "after"  # transformers evaluates the last step itself: that is the final eval
            return control

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            now = time.monotonic()
            if "loss" in logs:
                tokens = int(state.num_input_tokens_seen or 0)
                rate = None
                if self.last_time is not None and now > self.last_time:
                    rate = (tokens - self.last_tokens) / (now - self.last_time)
                self.last_time, self.last_tokens = now, tokens
                elapsed = now - self.started
                steps_left = max(state.max_steps - state.global_step, 0)
                eta = elapsed / max(state.global_step - self.first_step, 1) * steps_left if state.global_step > self.first_step else None
                fields = dict(step=state.global_step, max_steps=state.max_steps, epoch=round(state.epoch or 0, 4),
                              loss=logs.get("loss"), lr=logs.get("learning_rate"), grad_norm=logs.get("grad_norm"),
                              tokens_per_s=round(rate, 2) if rate else None, tokens_seen=tokens,
                              elapsed_s=round(elapsed, 2), eta_s=round(eta, 1) if eta is not None else None,
                              **preference.metric_fields(logs))  # dpo / kto: reward margin, accuracy, log-probabilities
                run.append_event("step", **fields)
                run.write_status("running", **{k: fields[k] for k in ("step", "max_steps", "epoch", "loss", "tokens_per_s", "eta_s")})
            if "eval_loss" in logs:
                loss = logs["eval_loss"]
                run.append_event("eval", step=state.global_step, phase=self.eval_phase, eval_loss=loss, perplexity=_ppl(loss),
                                 **preference.metric_fields(logs, "eval_"))
                run.write_status(run.read_status().get("state", "running"), eval_loss=loss,
                                 **({"eval_reward_accuracy": logs["eval_rewards/accuracies"]}
                                    if logs.get("eval_rewards/accuracies") is not None else {}))
                if self.eval_phase == "after":
                    self.final_eval = loss
                if self.eval_phase != "during":
                    return control
                patience = config.training.early_stopping_patience
                if loss < self.best_eval - 1e-4:
                    self.best_eval, self.bad_evals = loss, 0
                else:
                    self.bad_evals += 1
                    if patience and self.bad_evals >= patience:
                        self.stop_reason = f"early stopping: eval loss has not improved for {patience} evaluations"
                        run.append_event("log", level="info", message=self.stop_reason)
                        control.should_training_stop = True
            return control

        def on_train_begin(self, args, state, control, **kw):
            self.first_step = state.global_step
            self.last_time, self.last_tokens = time.monotonic(), int(state.num_input_tokens_seen or 0)
            run.write_status("running", max_steps=state.max_steps, step=state.global_step)

        def on_save(self, args, state, control, **kw):
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():  # written completely by now (every rank): mark it usable for --resume
                distributed.mark_checkpoint(lambda: (ckpt / CHECKPOINT_MARKER).write_text(str(state.global_step)))
                run.append_event("checkpoint", step=state.global_step, path=str(ckpt))
            return control

    return RunEvents()


def _ppl(loss: float | None) -> float | None:
    if loss is None:
        return None
    return round(math.exp(min(loss, 50)), 4)


def _start_system_sampler(run: RunDirectory, stop: threading.Event, interval: float = 5.0) -> threading.Thread:
    def loop() -> None:
        sampler = machine.SystemSampler(os.getpid())
        while not stop.wait(interval):
            try:
                run.append_event("system", **sampler.sample())
            except Exception:  # sampling must never take the run down
                pass

    thread = threading.Thread(target=loop, name="system-sampler", daemon=True)
    thread.start()
    return thread


def save_adapter(model, tokenizer, run: RunDirectory) -> Path:
    """Write adapter/ via a temporary folder so a crash never leaves a half adapter."""
    tmp = run.path / f".adapter.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        # Only the trained adapter: dpo / kto from a starting adapter also hold TRL's frozen "ref" copy of it.
        trained = ["default"] if "ref" in (getattr(model, "peft_config", None) or {}) else None
        model.save_pretrained(tmp, safe_serialization=True, selected_adapters=trained)
        tokenizer.save_pretrained(tmp)
        make_adapter_portable(tmp, load_config(run.config_path).model.name)
    except BaseException:  # e.g. disk full: no half adapter folder left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if run.adapter_dir.exists():
        shutil.rmtree(run.adapter_dir)
    tmp.rename(run.adapter_dir)
    return run.adapter_dir


def run_training(run: RunDirectory, resume: bool = False) -> str:
    """The recipe. Returns the final state: finished | stopped | failed."""
    stop_flag = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop_flag.set())
    if distributed.is_worker():  # one rank of several: the supervisor holds the lock; rank 0 alone writes
        run = distributed.enter_worker(run)
    else:
        run.acquire_lock()
        run.clear_stale_stop()  # a stop asked for during start-up is kept (and honoured at the first step)
        run_guard.start(run)  # space reserve: the last words are written even on a full disk
    sampler_stop = threading.Event()
    run.write_status("starting", pid=distributed.owner_pid(), message="loading")
    engine.prefer_huge_pages()  # before torch is imported
    try:
        return _train(run, resume, stop_flag, sampler_stop)
    except TrainingFailure as exc:
        run_guard.record_failure(run, exc.reason, exc.fix)
    except Exception as exc:  # unforeseen: full traceback to train.log, summary to the user
        import traceback

        disk_full = run_guard.explain(exc, run)  # frees the reserve first, so the traceback can be logged
        traceback.print_exc()
        reason, fix = disk_full or _explain(exc)
        run_guard.record_failure(run, reason, fix)
    finally:
        sampler_stop.set()
        run_guard.finish(run)
    return "failed"


def _explain(exc: BaseException) -> tuple[str, str]:
    text = f"{type(exc).__name__}: {exc}"
    if "out of memory" in text.lower() or type(exc).__name__ == "OutOfMemoryError":
        return "Out of memory.", OOM_FIX
    if isinstance(exc, ModelSourceError):
        return str(exc), ""
    first = text.splitlines()[0][:500]
    return first, "The full traceback is in train.log in the run directory."


def _train(run: RunDirectory, resume: bool, stop_flag: threading.Event, sampler_stop: threading.Event) -> str:
    import torch

    config = load_config(run.config_path)
    if missing := missing_trackers(config.training.report_to):  # before minutes of loading, not at step 1
        raise TrainingFailure(missing[0])
    if problem := family_problem(config):  # config.yaml edited after the launch refused it: the same line
        raise TrainingFailure(problem)
    device, bf16_ok = pick_device()
    torch.manual_seed(config.training.seed)
    chosen = choose_checkpoint(run) if resume else None  # the launcher's choice; damaged ones are passed over
    checkpoint = chosen.checkpoint if chosen else None
    if chosen and chosen.passed_over:
        run.append_event("log", level="warning", message=chosen.note())
    if resume and checkpoint is None and run.checkpoints_dir.exists():
        run.append_event("log", level="warning", message="No complete checkpoint found: starting from step 0.")

    run_progress.phase(run, "reading the data")  # the silences before step 1 say what they are (issue 24)
    tokenizer = load_tokenizer(config.model.name, config.model.trust_remote_code, config.model.revision)
    train_ds, eval_ds, data_facts = build_datasets(config, tokenizer)
    # The plan's rows are no longer than the data's longest (short data: no needless checkpointing); estimate
    # and the wizard measure the same (core/train/data_lengths.py).
    longest = longest_row(train_ds, eval_ds)
    keep_measured(config, longest)  # the next `estimate` / wizard shows this figure without reading the data
    hardware = machine.probe_hardware()
    capability = torch.cuda.get_device_capability(0) if device == "cuda" else None
    # The run plan: decided once (a resume keeps the first start's batches; every rank takes the supervisor's)
    choice = run_plan_of(run, config, hardware, device, resume, longest, capability, bf16_ok)
    precision = choice.precision  # core.config.effective_precision for this device's facts
    # glibc's mmap threshold stays as it is: with huge pages (engine.prefer_huge_pages) checkpointing keeps
    # RSS low without it, and a fixed 256 KiB threshold (mallopt) cut peak RSS 3.64 -> 2.11 GiB on a
    # checkpointed 8 x 512 step but cost 43% more CPU time (102.9 vs 71.9 s, measured with huge pages on).
    allocator_tuned = False
    if data_facts["train"].get("skipped"):
        run.append_event("log", level="warning", message=f"{config.data.train}: {data_facts['train']['skipped']}")
    preferring = config.training.method != "sft"  # dpo / kto: TRL's preference trainers (core/train/preference.py)

    def estimate_and_callbacks():  # for the plan the trainer is built with (after the probe, when it ran)
        facts = memory_record.memory_estimate_facts(config, hardware, device, longest, run_plan=choice,
                                                    lengths=train_ds["length"])  # padding-free: the heaviest draw
        found = [_make_callback(run, stop_flag, config), memory_record.make_memory_callback(run, facts, device),
                 run_guard.space_callback(run)]
        return facts, [*found, run_progress.eval_progress(run, found[0])]  # evaluation batches, as they go

    run_progress.phase(run, "loading the model")
    if preferring:
        memory_facts, callbacks = estimate_and_callbacks()
        trainer, targets = preference.trainer_for_run(config, run, device, precision, choice, tokenizer, train_ds,
                                                      eval_ds, callbacks, data_facts)
        model = trainer.model
        finish_trainer(trainer, config, device, precision, choice, exact_metrics=True)
    else:
        model, targets = build_model(config, device, precision, choice)
    if checkpoint is not None:
        _check_checkpoint_targets(run, checkpoint, config, targets)
    trainable, total = model.get_nb_trainable_parameters()
    quantized = sum(1 for m in model.modules() if type(m).__module__.startswith("bitsandbytes"))
    print(f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}", flush=True)
    method = {"16bit": "LoRA", "8bit": "LoRA-8bit", "4bit": "QLoRA"}[config.model.load_in]
    probed = None
    if not preferring:
        def build(plan, rows, eval_rows=None, with_callbacks=None):
            return sft_trainer(config, run, device, precision, model, tokenizer, plan, rows, eval_rows, with_callbacks)

        # The memory-for-speed choices measured on this model and data, on throwaway trainers, before the
        # run's trainer is built with the chosen batch (core/train/probe.py). dpo / kto: the estimate decides.
        probed = probe.for_run(run, config, choice, device, model=model, build_trainer=build, train_dataset=train_ds,
                               resume=resume, hardware=hardware, model_path=resolve_model_path(config.model.name),
                               world_size=distributed.world_size())
        memory_facts, callbacks = estimate_and_callbacks()
        trainer = build(choice, train_ds, eval_ds, callbacks)
    exact_resume.seed_the_sampler(trainer, config.training.seed)  # kill -9 + --resume: the same batches

    run.append_event(
        "started", model=config.model.name, model_path=resolve_model_path(config.model.name), method=method,
        device=device, precision=precision, target_modules=targets, trainable_params=trainable, total_params=total,
        max_steps=_planned_steps(trainer, trainer.train_dataset), epochs=config.training.epochs, num_train_rows=len(train_ds),
        num_eval_rows=len(eval_ds) if eval_ds is not None else 0, data=data_facts,
        command=" ".join(shlex.quote(a) for a in sys.argv) if resume else reproduce_command(run),
        resumed_from=str(checkpoint) if checkpoint else None, pid=distributed.owner_pid(), load_in=config.model.load_in,
        linear_layers=getattr(model, "lora_tui_linear_layers", None),
        quantized_layers=quantized, batching=choice.batching, attention=choice.attention, kernels=choice.kernels,
        gradient_checkpointing=choice.gradient_checkpointing, micro_batch=choice.micro_batch, grad_accum=choice.grad_accum,
        tokens_per_batch=choice.tokens_per_batch, tokens_per_step=choice.tokens_per_step, run_plan=choice.to_dict(),
        engine_reasons=choice.reasons,
        cpu_allocator_tuned=allocator_tuned, memory_estimate=memory_facts, probe=probed,
        adapter_dtypes=sorted({str(p.dtype) for p in trainer.model.parameters() if p.requires_grad}),
        **preference.started_fields(config, data_facts), **distributed.started_fields(device))
    if distributed.is_main_process():
        _start_system_sampler(run, sampler_stop)
    started = time.monotonic()
    callback = next(c for c in trainer.callback_handler.callbacks if type(c).__name__ == "RunEvents")
    if eval_ds is not None and checkpoint is None:
        callback.eval_phase = "before"
        run_progress.phase(run, "evaluating before training")
        trainer.evaluate()
    callback.eval_phase = "during"
    run.write_status("running", message="training")
    result = exact_resume.train_from(trainer, checkpoint)  # a checkpoint at the last step: no step past the end
    step = trainer.state.global_step
    stopped = distributed.agree_to_stop(stop_flag.is_set() or run.stop_requested())

    final_eval = callback.final_eval  # set when the trainer already evaluated the last step: once is enough
    if eval_ds is not None and not stopped and final_eval is None:
        callback.eval_phase = "after"
        final_eval = trainer.evaluate()["eval_loss"]
    run_guard.check_adapter_space(run, trainer.model)
    adapter = distributed.save_adapter_from_ranks(trainer, tokenizer, run, save_adapter)
    train_loss = run.last_loss()  # from the tail: a long run's events outgrow one read_events slice
    if stopped:
        run.append_event("stopped", step=step, reason=callback.stop_reason or "stop requested", adapter=str(adapter))
        state = "stopped"
    else:
        run.append_event("finished", step=step, adapter=str(adapter), train_loss=train_loss, eval_loss=final_eval,
                         perplexity=_ppl(final_eval), runtime_s=round(time.monotonic() - started, 2),
                         mean_train_loss=getattr(result, "training_loss", None),
                         early_stopped=bool(callback.stop_reason))
        state = "finished"
    if distributed.is_main_process():
        _write_card(run)
    run.write_status(state, step=step, eval_loss=final_eval, message=state)
    return state


def _check_checkpoint_targets(run: RunDirectory, checkpoint: Path, config: Config, targets: list[str]) -> None:
    """A resume whose lora.targets changed would fail inside the optimizer's load_state_dict: say which setting."""
    try:
        saved = json.loads((checkpoint / "adapter_config.json").read_text(encoding="utf-8")).get("target_modules")
    except (OSError, ValueError):
        return
    if isinstance(saved, list) and set(saved) != set(targets):
        raise TrainingFailure(targets_changed(run, checkpoint, config.lora.targets, targets, saved))


def _planned_steps(trainer, train_ds) -> int:
    args = trainer.args
    if args.max_steps and args.max_steps > 0:
        return args.max_steps
    per_epoch = math.ceil(math.ceil(len(train_ds) / args.per_device_train_batch_size) / args.gradient_accumulation_steps)
    return max(1, math.ceil(per_epoch * args.num_train_epochs))


def _write_card(run: RunDirectory) -> None:
    try:
        write_model_card(run)
    except Exception as exc:  # a card problem must not lose a finished adapter
        run.append_event("log", level="warning", message=f"Model card not written: {exc}")


def run_plan_of(run: RunDirectory, config: Config, hardware, device: str, resume: bool = False,
                 longest: int | None = None, capability=None, bf16_ok: bool | None = None, world_size: int | None = None):
    """The run's plan (core.run_plan): the supervisor's in a rank it launched, else decided here from this
    device's facts, keeping the first start's batch on resume. The config is not changed."""
    try:  # only a rank the supervisor launched takes its plan; anyone else's LORA_TUI_PLAN is no setting
        given = plan_from_env() if distributed.is_worker() else None
    except PlanError as exc:
        raise TrainingFailure(str(exc)) from None
    if given is not None:
        given.reasons = {**given.reasons, "micro_batch": "chosen by the launcher for every rank"}
        return given
    facts = DeviceFacts.from_hardware(hardware, device, world_size or distributed.world_size(), capability, bf16_ok)
    attention, batching, _ = engine_fields(config, facts)
    batch = batch_for_run(run, config, hardware, device, facts.world_size, resume=resume, longest=longest,
                          engine={"attention": attention, "batching": batching})
    return decide_run_plan(config, facts, hardware, longest, batch)


def longest_row(train_ds, eval_ds) -> int:
    """Tokens in the longest row of the run's datasets (train and eval), as built by ``build_datasets``."""
    return max([*train_ds["length"], *(eval_ds["length"] if eval_ds is not None else [])])
