"""Several adapters on one base (issue 19 item 1): two fake runs on the tiny random model whose adapters
have different random weights; switching must give each adapter's own answers and logits."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.support.chat import make_fake_run

GREEDY = dict(greedy=True, max_new_tokens=10)
IDS = [[1, 20, 300, 4000, 77]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("runs")
    a = make_fake_run(root, tiny_model_dir, name="run-a", seed=1)
    b = make_fake_run(root, tiny_model_dir, name="run-b", seed=2)
    return root, a, b


@pytest.fixture(scope="module")
def session(runs):
    from lora_tui.core.chat.session import ChatSession

    _, a, b = runs
    return ChatSession.from_runs([a, b], device="cpu")


def settings():
    from lora_tui.core.chat.session import GenerationSettings

    return GenerationSettings(**GREEDY)


def ask(text):
    return [{"role": "user", "content": text}]


def plain_logits(tiny_model_dir, adapter_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter_dir)
    with torch.no_grad():
        return model(torch.tensor(IDS)).logits


def session_logits(session):
    import torch

    with torch.no_grad():
        return session.model(torch.tensor(IDS)).logits


def test_names_are_the_run_folders_in_order(session):
    assert session.names == ["run-a", "run-b"] and session.default_adapter == "run-a"


def test_switching_gives_each_adapters_own_logits_and_answers(session, runs, tiny_model_dir):
    import torch

    from lora_tui.core.chat.session import BASE, ChatSession

    _, a, b = runs
    want_a, want_b = plain_logits(tiny_model_dir, a / "adapter"), plain_logits(tiny_model_dir, b / "adapter")
    assert not torch.allclose(want_a, want_b, atol=1e-3)  # the two adapters really differ
    answer_b = session.reply(ask("Tell me a story"), adapter="run-b", settings=settings())
    assert torch.allclose(session_logits(session), want_b, atol=1e-5)  # after B answered, B alone is active
    answer_a = session.reply(ask("Tell me a story"), adapter="run-a", settings=settings())
    assert torch.allclose(session_logits(session), want_a, atol=1e-5)
    base = session.reply(ask("Tell me a story"), adapter=BASE, settings=settings())
    assert len({answer_a, answer_b, base}) == 3
    assert session.reply(ask("Tell me a story"), settings=settings()) == answer_a  # default: the first run
    alone_b = ChatSession.from_run(b, device="cpu")
    assert alone_b.reply(ask("Tell me a story"), settings=settings()) == answer_b


def test_compare_any_two_with_the_same_seed(session):
    from lora_tui.core.chat.session import BASE, GenerationSettings

    prompt = ask("Hi there")
    a = session.reply(prompt, adapter="run-a", settings=settings())
    b = session.reply(prompt, adapter="run-b", settings=settings())
    base = session.reply(prompt, adapter=BASE, settings=settings())
    assert session.compare(prompt, settings=settings(), sides=("run-a", "run-b")) == (a, b)
    assert session.compare(prompt, settings=settings(), sides=("run-b", BASE)) == (b, base)
    assert session.compare(prompt, settings=settings()) == (a, base)  # as --both always did
    sampled = GenerationSettings(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=10, seed=5)
    assert session.compare(prompt, settings=sampled, sides=("run-b", "run-a")) == (
        session.reply(prompt, adapter="run-b", settings=sampled), session.reply(prompt, adapter="run-a", settings=sampled))


def test_unknown_adapter_name_is_refused(session):
    from lora_tui.core.chat.session import ChatError

    with pytest.raises(ChatError, match="No adapter named 'run-c'.*run-a, run-b"):
        session.reply(ask("hi"), adapter="run-c", settings=settings())


def test_equal_run_names_are_made_unique_and_base_is_reserved(tmp_path, tiny_model_dir, runs):
    from lora_tui.core.chat.adapters import resolve_adapters

    _, a, _ = runs
    same = make_fake_run(tmp_path / "elsewhere", tiny_model_dir, name="run-a", with_adapter=False)
    (same / "adapter").symlink_to(a / "adapter")  # another run folder named run-a, whose adapter is a's own folder
    named_base = make_fake_run(tmp_path, tiny_model_dir, name="base", seed=3)
    other = make_fake_run(tmp_path / "third", tiny_model_dir, name="run-a", seed=4)
    _, adapters = resolve_adapters([a, other, named_base, a, same])
    assert list(adapters) == ["run-a", "run-a-2", "base-2"]  # the same adapter twice loads once


def test_runs_on_different_bases_are_refused(tmp_path, tiny_model_dir, runs):
    from lora_tui.core.chat.adapters import ChatError, resolve_adapters

    _, a, _ = runs
    quantised = make_fake_run(tmp_path, tiny_model_dir, name="run-4bit", load_in="4bit", with_adapter=False)
    (quantised / "adapter").symlink_to(a / "adapter")  # the refusal reads the config: same weights, other load
    with pytest.raises(ChatError, match="one chat loads one base model"):
        resolve_adapters([a, quantised])


def test_add_a_run_later_and_the_runs_that_could_join(tmp_path, tiny_model_dir, runs):
    from lora_tui.core.chat.session import ChatError, ChatSession
    from lora_tui.core.chat.adapters import runs_sharing_base
    from lora_tui.core.run.runs import RunDirectory

    root, a, b = runs
    chat = ChatSession.from_run(a, device="cpu")
    elsewhere = make_fake_run(tmp_path, tiny_model_dir, name="run-4bit", load_in="4bit", with_adapter=False)
    (elsewhere / "adapter").symlink_to(a / "adapter")
    training = make_fake_run(root, tiny_model_dir, name="run-training", seed=5)
    RunDirectory(training).write_status("running", step=3, max_steps=12)
    assert runs_sharing_base(root, chat.source, exclude=[a]) == [("run-b", b)]  # not a itself, not a live run
    with pytest.raises(ChatError, match="one chat loads one base model"):
        chat.add_adapter(elsewhere)
    assert chat.add_adapter(b) == "run-b" and chat.names == ["run-a", "run-b"]
    assert chat.add_adapter(b) == "run-b" and chat.names == ["run-a", "run-b"]  # once
    alone_b = ChatSession.from_run(b, device="cpu")
    assert chat.reply(ask("Go"), adapter="run-b", settings=settings()) == alone_b.reply(ask("Go"), settings=settings())


# --- the command line ---------------------------------------------------------------------------------
def lora_tui(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "lora_tui", *map(str, args)], capture_output=True, text=True,
                          input=stdin, timeout=300)


def one_error_line(result) -> str:
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_cli_refuses_runs_on_different_bases(tmp_path, runs, tiny_model_dir):
    _, a, _ = runs
    other = make_fake_run(tmp_path, tiny_model_dir, name="other-base")
    config = yaml.safe_load((other / "config.yaml").read_text())
    config["model"]["name"] = "some-org/another-model"
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    line = one_error_line(lora_tui("chat", a, other, "--prompt", "hi"))
    assert line.startswith("lora-tui chat:") and "some-org/another-model" in line and "one base model" in line


@pytest.mark.parametrize("flags, says", [(["--adapter", "run-c"], "no adapter named 'run-c'"),
                                         (["--compare", "run-a,run-c"], "no adapter named 'run-c'"),
                                         (["--compare", "run-a,run-a"], "two or more different names")])
def test_cli_refuses_unknown_names(runs, flags, says):
    _, a, b = runs
    line = one_error_line(lora_tui("chat", a, b, "--prompt", "hi", *flags))
    assert says in line and "run-a, run-b, base" in line


def test_cli_adapter_and_compare_print_what_the_core_answers(runs, session):
    from lora_tui.core.chat.session import BASE

    _, a, b = runs
    result = lora_tui("chat", a, b, "--prompt", "Tell me a joke", "--greedy", "--max-new-tokens", 10,
                      "--compare", "run-b,base")
    assert result.returncode == 0, result.stderr
    b_answer, base = session.compare(ask("Tell me a joke"), settings=settings(), sides=("run-b", BASE))
    assert result.stdout == f"[run-b]\n{b_answer}\n\n[base model]\n{base}\n"
    script = "Tell me a joke\n/adapter run-b\nTell me a joke\n/adapter nope\n/compare run-a run-b\n/quit\n"
    result = lora_tui("chat", a, b, "--greedy", "--max-new-tokens", 10, stdin=script)
    assert result.returncode == 0, result.stderr
    a_answer = session.reply(ask("Tell me a joke"), adapter="run-a", settings=settings())
    out = result.stdout
    assert f"run-a> {a_answer}\n" in out and "Answers now come from run-b." in out
    assert "Not changed: no adapter named 'nope'" in out
    # Each answers from its own conversation (issue 24 item 4): run-b never reads run-a's answer, and /compare
    # asks the last prompt again, each side leaving out its own earlier answer to it.
    assert out.count(f"run-b> {b_answer}\n") == 2 and out.count(f"run-a> {a_answer}\n") == 2


# --- merge and export take the adapter to use ---------------------------------------------------------
def test_merge_and_zip_take_a_checkpoint_by_path(tmp_path, tiny_model_dir):
    """`lora-tui merge RUN OUT` merges what RUN points at: a run's final adapter, or a checkpoint folder."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lora_tui.core.export.artefacts import merge_adapter, zip_adapter
    from tests.support.chat import make_adapter

    run = make_fake_run(tmp_path, tiny_model_dir, name="run-c", seed=1)
    checkpoint = make_adapter(tiny_model_dir, run / "checkpoints" / "checkpoint-6", seed=6)

    def logits(model):
        with torch.no_grad():
            return model(torch.tensor(IDS)).logits

    merged = AutoModelForCausalLM.from_pretrained(merge_adapter(checkpoint, tmp_path / "merged-6", dtype="float32"))
    want = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), checkpoint)
    final = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run / "adapter")
    assert torch.allclose(logits(merged), logits(want), atol=1e-4)
    assert not torch.allclose(logits(merged), logits(final), atol=1e-3)
    assert zip_adapter(checkpoint).name == "run-c-checkpoint-6-adapter.zip"  # never the final adapter's zip
    assert zip_adapter(run).name == "run-c-adapter.zip"
