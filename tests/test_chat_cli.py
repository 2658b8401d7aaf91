"""`lora-tui chat` as scripts use it: subprocesses, exit codes, no tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.chat import make_fake_run


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory, tiny_model_dir):
    return make_fake_run(tmp_path_factory.mktemp("chat-cli"), tiny_model_dir)


@pytest.fixture(scope="module")
def session(fake_run):
    from lora_tui.core.chat.session import ChatSession

    return ChatSession.from_run(fake_run)


def lora_tui(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "lora_tui", *map(str, args)], capture_output=True, text=True,
                          input=stdin, timeout=300)


def greedy(n=8):
    from lora_tui.core.chat.session import GenerationSettings

    return GenerationSettings(greedy=True, max_new_tokens=n)


def test_prompt_prints_the_same_answer_as_the_core(fake_run, session):
    result = lora_tui("chat", fake_run, "--prompt", "Tell me a joke", "--greedy", "--max-new-tokens", 8)
    assert result.returncode == 0, result.stderr
    expected = session.reply([{"role": "user", "content": "Tell me a joke"}], settings=greedy())
    assert result.stdout == expected + "\n"
    assert "Traceback" not in result.stderr


def test_both_prints_adapter_and_base_answers(fake_run, session):
    result = lora_tui("chat", fake_run, "--prompt", "hi", "--both", "--greedy", "--max-new-tokens", 6,
                      "--system", "Be brief.")
    assert result.returncode == 0, result.stderr
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    with_adapter, base = session.compare(messages, settings=greedy(6))
    assert result.stdout == f"[with adapter]\n{with_adapter}\n\n[base model]\n{base}\n"


def test_interactive_commands(fake_run, session):
    script = "hello\n/adapter off\nhello\n/both\n/settings top_p=3\n/reset\n/nonsense\n/quit\n"
    result = lora_tui("chat", fake_run, "--greedy", "--max-new-tokens", 6, stdin=script)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    first = session.reply([{"role": "user", "content": "hello"}], settings=greedy(6))
    assert f"adapter> {first}\n" in out
    assert "Answers now come from the base model alone." in out and "base> " in out
    assert "Not changed: top_p must be in (0, 1]." in out
    assert "Conversation cleared." in out and "Unknown command /nonsense" in out
    assert "Traceback" not in result.stderr


def test_each_answerer_keeps_its_own_conversation(fake_run, session):
    """Issue 24 item 4: `/adapter` switches to the other answerer's own conversation (your turns and its own
    answers), never one holding the other's answers. (The tiny random base answers newlines whatever it reads,
    so the adapter is the side whose answer shows which history it read.) /both asks the last prompt again,
    each side from its own conversation."""
    script = "/adapter off\nhello\n/adapter on\nhello\n/both\n/quit\n"
    result = lora_tui("chat", fake_run, "--greedy", "--max-new-tokens", 6, stdin=script)
    assert result.returncode == 0, result.stderr
    out = result.stdout

    def turn(text):
        return {"role": "user", "content": text}

    base = session.reply([turn("hello")], use_adapter=False, settings=greedy(6))
    own = session.reply([turn("hello")], settings=greedy(6))
    shared = session.reply([turn("hello"), {"role": "assistant", "content": base}, turn("hello")], settings=greedy(6))
    assert own != shared  # else this test could not tell the two histories apart
    assert f"base> {base}\n" in out and f"adapter> {shared}\n" not in out
    assert "Answers now come from the base model alone. It continues its own conversation (0 answers so far)" in out
    assert "Answers now come from the adapter. It continues its own conversation (0 answers so far)" in out
    assert out.count(f"adapter> {own}\n") == 2  # the turn, then /both's first side
    assert f"adapter> {own}\nbase>    {base}\n" in out  # /both: each side's own answer to "hello", asked again


@pytest.mark.parametrize("case", ["missing run", "no adapter", "bad temperature"])
def test_errors_are_one_line_and_exit_2(case, tmp_path, tiny_model_dir):
    run = tmp_path / "nope"
    extra = []
    if case == "no adapter":
        run = make_fake_run(tmp_path, tiny_model_dir, with_adapter=False)
    if case == "bad temperature":
        extra = ["--temperature", "0"]
    result = lora_tui("chat", run, "--prompt", "hi", *extra)
    assert result.returncode == 2
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("lora-tui chat:")]
    assert len(lines) == 1, result.stderr


def test_settings_words():
    from lora_tui.commands.chat import change_settings
    from lora_tui.core.chat.session import GenerationSettings

    changed = change_settings(GenerationSettings(), ["temperature=0.7", "greedy=on", "max-new-tokens=5", "seed=3"])
    assert (changed.temperature, changed.greedy, changed.max_new_tokens, changed.seed) == (0.7, True, 5, 3)
    for bad in (["top_k=-1"], ["temperature=hot"], ["colour=red"], ["greedy=maybe"]):
        with pytest.raises(ValueError):
            change_settings(GenerationSettings(), bad)
