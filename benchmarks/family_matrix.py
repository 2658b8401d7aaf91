"""The family matrix: every model family taken through the whole flow on a tiny random-weight model.

    python3 benchmarks/family_matrix.py                    # every family, every step (~15-25 min on 2 cores)
    python3 benchmarks/family_matrix.py qwen3_5 gpt_oss    # some families
    python3 benchmarks/family_matrix.py --steps estimate,train,chat   # some steps

Each family's model is built from transformers' own config class (lora_tui/core/model/tiny.py: hidden 64,
2 layers, the embedded tokenizer with the family's chat template; no download) and goes through the real
paths a user's run takes: the estimate (parameter count exact against the built model), LoRA 16-bit and
QLoRA 4-bit runs in the detached trainer, kill -9 + resume (the adapter bit-identical to an uninterrupted
run), multi-turn chat that stops on the family's end-of-turn token, several adapters in one chat, merge
with its round-trip check, GGUF f16 / q8_0 / q4_k_m loaded back in llama.cpp, and the Ollama Modelfile.
A step a family cannot take must be refused in one line (never a traceback, never a failed run).

Prints the table family x step and the memory estimate's error per family against the trainer's measured
CPU peak (the run's ``memory`` event; goal as benchmarks/memory_accuracy.py: within max(10 %, 0.5 GiB)
and never more than 5 % under). tests/test_families.py runs the same steps (``run_step``) per family.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

STEPS = ("estimate", "train", "qlora", "resume", "chat", "adapters", "merge", "gguf", "modelfile")
GGUF_TYPES = ("f16", "q8_0", "q4_k_m")
TRAIN = ("data.max_seq_len=64", "training.micro_batch=4", "training.grad_accum=1", "training.learning_rate=0.01",
         "training.max_steps=6", "training.save_steps=2", "training.eval_steps=0", "lora.r=4", "lora.alpha=8")


class Refused(Exception):
    """A step the family cannot take, refused by the product in one line."""


@dataclass
class Cell:
    status: str  # "ok" | "refused" | "FAIL" | "skipped"
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Family:
    """One family's model and what its steps have made so far (runs, exports)."""

    key: str
    model: Path
    work: Path
    train: Path
    validation: Path
    runs: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)


def _config(fam: Family, *overrides: str):
    from lora_tui.core.config import Config, apply_overrides

    return apply_overrides(Config(), [f"model.name={fam.model}", f"data.train={fam.train}", "data.validation=",
                                      *TRAIN, *overrides])


def _wait(run, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = run.state()
        if state in ("finished", "failed", "stopped", "dead"):
            return state
        time.sleep(0.2)
    raise TimeoutError(f"{run.path}: still {run.state()} after {timeout:.0f} s")


def _adapter(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def _sha(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def _train(fam: Family, name: str, *overrides: str):
    """A run through the real launcher (the detached trainer process); its state must be 'finished'."""
    from lora_tui.core.run.launcher import start_run
    from lora_tui.core.run.runs import RunError

    try:
        run = start_run(_config(fam, *overrides), fam.work / name)
    except RunError as exc:
        raise Refused(str(exc)) from None
    state = _wait(run)
    if state != "finished":
        failed = [e for e in run.read_events() if e["type"] == "failed"]
        raise AssertionError(f"{name}: {state}: {failed[-1]['reason'] if failed else run.log_path.read_text()[-800:]}")
    fam.runs[name] = run
    return run


# ----- the steps --------------------------------------------------------------------------------------------------

def step_estimate(fam: Family) -> str:
    import torch  # noqa: F401
    from transformers import AutoModelForCausalLM

    from lora_tui.core.model.catalogue import model_dims
    from lora_tui.core.plan.memory import Workload, estimate_memory

    built = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(fam.model).parameters())
    dims = model_dims(str(fam.model))
    assert dims.params == built, f"estimate counts {dims.params:,} parameters, the built model has {built:,}"
    total = estimate_memory(Workload(model=dims, device="cpu", seq_len=64, batch=4, r=4)).total_bytes
    return f"{built:,} parameters exact; estimate {total / 2**20:.0f} MiB"


def step_train(fam: Family) -> str:
    base = _sha(fam.model)
    run = _train(fam, "lora")
    weights = _adapter(run.adapter_dir)
    moved = [k for k, v in weights.items() if "lora_B" in k and float(v.abs().sum()) > 0]
    assert moved, "no lora_B weight moved from zero"
    assert _sha(fam.model) == base, "the base model directory changed"
    started = next(e for e in run.read_events() if e["type"] == "started")
    memory = [e for e in run.read_events() if e["type"] == "memory"]
    if memory:
        fam.facts["memory"] = memory[-1]
    fam.facts["attention"] = started["attention"]
    return f"{started['attention']}, {started['batching']}: {started['engine_reasons']['attention']}"


def step_qlora(fam: Family) -> str:
    run = _train(fam, "qlora", "model.load_in=4bit", "training.max_steps=2")
    started = next(e for e in run.read_events() if e["type"] == "started")
    assert started["quantized_layers"] > 0, "no layer was quantized"
    return f"{started['quantized_layers']} layers in 4-bit NF4"


def step_resume(fam: Family) -> str:
    from lora_tui.core.run.launcher import resume_run, start_run

    whole = fam.runs.get("lora") or _train(fam, "lora")
    killed = start_run(_config(fam), fam.work / "killed")
    deadline = time.monotonic() + 600
    while killed.last_checkpoint() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(killed.read_status()["pid"], signal.SIGKILL)
    assert _wait(killed) == "dead"
    kept = killed.last_checkpoint()
    resume_run(killed.path)
    assert _wait(killed) == "finished", killed.log_path.read_text()[-800:]
    a, b = _adapter(whole.adapter_dir), _adapter(killed.adapter_dir)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), "the resumed adapter differs"
    return f"killed after {kept.name}, resumed: adapter bit-identical"


def _force_end_of_turn(model, token_id: int, after: int):
    """The random model never says its end-of-turn token: from the ``after``-th generated token on, the LM head's
    output favours it (a forward hook), so the test sees where generation stops. Everything else is real."""
    calls = {"n": 0}

    def hook(module, args, output):
        calls["n"] += 1
        if calls["n"] > after:
            output = output.clone()
            output[..., token_id] += 1e4
        return output

    return model.get_output_embeddings().register_forward_hook(hook)


def step_chat(fam: Family) -> str:
    from lora_tui.core.chat.session import ChatSession, GenerationSettings
    from lora_tui.core.model.families import family

    run = fam.runs.get("lora") or _train(fam, "lora")
    session = ChatSession.from_runs([run.path], device="cpu")
    eot = family(fam.key).end_of_turn
    eot_id = session.tokenizer.convert_tokens_to_ids(eot)
    assert eot_id in session.eos_ids, f"{eot} ({eot_id}) is not among chat's stop ids {session.eos_ids}"
    settings = GenerationSettings(greedy=True, max_new_tokens=12)
    first = session.reply([{"role": "user", "content": "What is 2 plus 2?"}], settings=settings)
    history = [{"role": "user", "content": "What is 2 plus 2?"}, {"role": "assistant", "content": first},
               {"role": "user", "content": "And 3 plus 3?"}]
    prompt = session.formatter.prompt_text(history)
    # The history's answer (empty when the adapter already learnt to stop at once) is closed by the family's marker
    # (gpt-oss closes earlier answers with <|end|>, the last one with <|return|>).
    assert first + eot in prompt or first + "<|end|>" in prompt, f"the first answer is not closed by {eot}:\n{prompt}"
    ids = session.encode(history, 12)
    handle = _force_end_of_turn(session.model, eot_id, after=3)
    try:
        out = session.model.generate(**ids, max_new_tokens=12, do_sample=False, eos_token_id=session.eos_ids,
                                     pad_token_id=session.tokenizer.pad_token_id)
    finally:
        handle.remove()
    new = out[0, ids["input_ids"].shape[1]:].tolist()
    # It ends at the first end-of-turn token: the forced one (the 4th), or an earlier one the adapter learnt.
    assert new[-1] == eot_id and eot_id not in new[:-1] and len(new) <= 4, f"generation did not stop on {eot}: {new}"
    handle = _force_end_of_turn(session.model, eot_id, after=3)
    try:
        second = session.reply(history, settings=settings)  # the chat path: stops there, the marker not shown
    finally:
        handle.remove()
    assert eot not in second, second
    return f"2 turns; stops on {eot} after {len(new) - 1} tokens"


def step_adapters(fam: Family) -> str:
    import torch

    from lora_tui.core.chat.session import ChatSession, GenerationSettings

    run = fam.runs.get("lora") or _train(fam, "lora")
    other = fam.work / "lora-twin"
    if not other.exists():
        shutil.copytree(run.path, other, ignore=shutil.ignore_patterns("checkpoints", "*.lock", "lock"))
        from safetensors.torch import save_file

        weights = {k: (v * 3 if "lora_B" in k else v) for k, v in _adapter(other / "adapter").items()}
        save_file(weights, str(other / "adapter" / "adapter_model.safetensors"), metadata={"format": "pt"})
    settings = GenerationSettings(greedy=True, max_new_tokens=8)
    question = [{"role": "user", "content": "Name a colour."}]
    alone = ChatSession.from_runs([run.path], device="cpu")
    expected = alone.reply(question, settings=settings)
    both = ChatSession.from_runs([run.path, other], device="cpu")
    names = both.names
    answers = {name: both.reply(question, adapter=name, settings=settings) for name in names}
    logits = {}
    for name in names:
        both.model.set_adapter(both._peft_names[name], inference_mode=True)
        with torch.no_grad():
            logits[name] = both.model(**both.encode(question)).logits[0, -1]
    assert answers[names[0]] == expected, "the first adapter answers differently beside a second one"
    assert not torch.equal(logits[names[0]], logits[names[1]]), "both adapters give the same logits"
    return f"{len(names)} adapters on one base, each answers as itself"


def step_merge(fam: Family, full_check: bool = True) -> str:
    """Merge through the export path. The full check is the product's round trip (export/check.py: greedy answers
    and held-out scoring); the quick one (the tests') compares the merged model's logits with the adapter's."""
    from lora_tui.core.export.artefacts import merge_adapter

    run = fam.runs.get("lora") or _train(fam, "lora")
    out = merge_adapter(run.path, fam.work / "merged", overwrite=True)
    fam.facts["merged"] = out
    if full_check:
        from lora_tui.core.export.check import verify_export

        check = verify_export(run.path, out, check_prompts=str(fam.validation), n_prompts=1, n_rows=8, max_new_tokens=8)
        assert check.ok, check.summary()
        return f"round trip {check.verdict}"
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lora_tui.core.model.models import load_base_model

    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is 7 plus 7?"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    adapter = PeftModel.from_pretrained(load_base_model(str(fam.model)), str(run.adapter_dir)).eval()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        a, b = adapter(**ids).logits, merged(**ids).logits
        base = adapter.get_base_model(); adapter.disable_adapter_layers(); plain = base(**ids).logits
    gap = float((a - b).abs().max())
    assert gap < 1e-4, f"merged logits differ from the adapter's by {gap:.2e}"
    assert float((a - plain).abs().max()) > 1e-4, "the adapter changes nothing: the comparison would prove nothing"
    return f"merged logits = adapter logits (max gap {gap:.1e})"


def step_gguf(fam: Family, types: tuple[str, ...] = GGUF_TYPES) -> str:
    from lora_tui.core.export.artefacts import ExportError, export_gguf
    from lora_tui.core.export.check import verify_export
    from lora_tui.core.export.gguf import gguf_support
    from lora_tui.core.model.models import load_model_config

    supported, line = gguf_support(load_model_config(str(fam.model)))
    run = fam.runs.get("lora") or _train(fam, "lora")
    verdicts = []
    for gguf_type in types:
        try:
            path = export_gguf(run.path, fam.work / "gguf", gguf_type=gguf_type, overwrite=True)
        except ExportError as exc:
            assert not supported, f"gguf_support says yes ({line}) but export refused: {exc}"
            assert "\n" not in str(exc)
            raise Refused(str(exc)) from None
        assert supported, f"gguf_support refused ({line}) but export wrote {path}"
        check = verify_export(run.path, path.parent, gguf_file=path.name, check_prompts=str(fam.validation),
                              n_prompts=2, n_rows=8, max_new_tokens=12, runtime="llama.cpp")
        assert check.ok, f"{gguf_type}: {check.summary()}"
        verdicts.append(f"{gguf_type} {check.verdict}")
        fam.facts.setdefault("gguf", []).append(path)
    return "llama.cpp: " + ", ".join(verdicts)


def step_modelfile(fam: Family) -> str:
    from lora_tui.core.model.families import family

    eot = family(fam.key).end_of_turn
    found = [p for p in [fam.facts.get("merged"), *(q.parent for q in fam.facts.get("gguf", []))] if p]
    if not found:
        raise Refused("no merged model or GGUF file to read a Modelfile from (their steps did not run)")
    files = [f for p in found for f in Path(p).glob("Modelfile*")]
    assert files, f"no Modelfile in {found}"
    for f in files:
        text = f.read_text()
        assert "TEMPLATE" in text and f'PARAMETER stop "{eot}"' in text, f"{f}: no stop on {eot}:\n{text}"
    return f"{len(files)} Modelfile(s), TEMPLATE and stop {eot}"


STEP_FUNCTIONS = {"estimate": step_estimate, "train": step_train, "qlora": step_qlora, "resume": step_resume,
                  "chat": step_chat, "adapters": step_adapters, "merge": step_merge, "gguf": step_gguf,
                  "modelfile": step_modelfile}


def run_step(fam: Family, step: str) -> Cell:
    """One step as a Cell: ok with what it showed, refused with the product's one line, or FAIL with why."""
    started = time.monotonic()
    try:
        detail = STEP_FUNCTIONS[step](fam)
        return Cell("ok", detail, time.monotonic() - started)
    except Refused as exc:
        return Cell("refused", str(exc), time.monotonic() - started)
    except Exception as exc:  # a failure is a cell of the table, with its reason
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return Cell("FAIL", f"{type(exc).__name__}: {first[:300]}", time.monotonic() - started)


def prepare(key: str, root: Path, tokenizer_dir: Path | None = None) -> Family:
    """Build the family's tiny model under ``root`` and give it the sample data."""
    from lora_tui.core.model.embedded import ensure_embedded_model
    from lora_tui.core.model.tiny import build_tiny

    work = root / key
    work.mkdir(parents=True, exist_ok=True)
    model = build_tiny(key, work / "model", tokenizer_dir or ensure_embedded_model())
    return Family(key, model, work, REPO / "sample_data" / "train.jsonl", REPO / "sample_data" / "valid.jsonl")


def memory_goal(fam: Family) -> bool | None:
    """The estimate's goal on the LoRA run's measured CPU peak (benchmarks/memory_accuracy.py's): within
    max(10 %, 0.5 GiB) and never more than 5 % under. None when the run recorded no peak."""
    memory = fam.facts.get("memory")
    if not memory or not memory.get("memory_peak_bytes") or not memory.get("memory_estimate_bytes"):
        return None
    est, peak = memory["memory_estimate_bytes"], memory["memory_peak_bytes"]
    return abs(est - peak) <= max(0.10 * peak, 0.5 * 2**30) and est >= 0.95 * peak


def memory_error(fam: Family) -> str:
    goal = memory_goal(fam)
    if goal is None:
        return "-"
    memory = fam.facts["memory"]
    est, peak = memory["memory_estimate_bytes"], memory["memory_peak_bytes"]
    return f"{est / 2**20:.0f} / {peak / 2**20:.0f} MiB ({memory['memory_error_pct']:+.1f} %, goal {'ok' if goal else 'MISSED'})"


def main() -> int:
    import tempfile

    from lora_tui.core.model.families import FAMILIES, family

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="*", help="family keys (default: all)")
    parser.add_argument("--steps", default=",".join(STEPS), help="comma list of steps (default: all)")
    parser.add_argument("--keep", help="work folder to keep (default: a temporary one)")
    args = parser.parse_args()
    keys = args.families or [f.key for f in FAMILIES]
    steps = [s for s in args.steps.split(",") if s]
    root = Path(args.keep or tempfile.mkdtemp(prefix="family-matrix-"))
    table: dict[str, dict[str, Cell]] = {}
    families: dict[str, Family] = {}
    for key in keys:
        fam = families[key] = prepare(key, root)
        table[key] = {}
        for step in steps:
            table[key][step] = cell = run_step(fam, step)
            print(f"{key:10} {step:9} {cell.status:7} {cell.seconds:6.1f}s  {cell.detail}", flush=True)
    print("\n| family | " + " | ".join(steps) + " |\n|---|" + "---|" * len(steps))
    for key in keys:
        print(f"| {family(key).label} | " + " | ".join(table[key][s].status for s in steps) + " |")
    print("\nMemory estimate vs the trainer's measured CPU peak (LoRA run):")
    for key in keys:
        print(f"  {family(key).label:14} {memory_error(families[key])}")
    print(f"\nWork folder: {root}")
    return 0 if all(c.status != "FAIL" for row in table.values() for c in row.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
