"""ChatSession on a tiny random model with a non-zero LoRA adapter (see tests/support/chat.py)."""

from __future__ import annotations

import shutil

import pytest

from tests.support.chat import make_adapter, make_fake_run

GREEDY = dict(greedy=True, max_new_tokens=12)


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory, tiny_model_dir):
    return make_fake_run(tmp_path_factory.mktemp("runs"), tiny_model_dir)


@pytest.fixture(scope="module")
def session(fake_run):
    from lora_tui.core.chat.session import ChatSession

    return ChatSession.from_run(fake_run, device="cpu")


def settings(**kw):
    from lora_tui.core.chat.session import GenerationSettings

    return GenerationSettings(**{**GREEDY, **kw})


def ask(text):
    return [{"role": "user", "content": text}]


def test_defaults_match_the_issue():
    from lora_tui.core.chat.session import GenerationSettings

    s = GenerationSettings()
    assert (s.temperature, s.top_p, s.top_k, s.greedy) == (0.3, 0.9, 40, False)


def test_adapter_changes_the_answer(session):
    assert session.has_adapter
    with_adapter = session.reply(ask("Tell me a story"), settings=settings())
    base = session.reply(ask("Tell me a story"), use_adapter=False, settings=settings())
    assert with_adapter != base
    assert session.compare(ask("Tell me a story"), settings=settings()) == (with_adapter, base)


def test_adapter_is_back_on_after_a_base_answer(session):
    first = session.reply(ask("Hello"), settings=settings())
    session.reply(ask("Hello"), use_adapter=False, settings=settings())
    assert session.reply(ask("Hello"), settings=settings()) == first


def test_greedy_is_deterministic(session):
    answers = {session.reply(ask("What is LoRA?"), settings=settings()) for _ in range(3)}
    assert len(answers) == 1 and next(iter(answers))


def test_same_seed_repeats_a_sampled_answer(session):
    sampled = settings(greedy=False, temperature=1.0, top_k=0, top_p=1.0, seed=7)
    assert session.reply(ask("Hi"), settings=sampled) == session.reply(ask("Hi"), settings=sampled)


def test_stream_pieces_join_to_the_reply(session):
    pieces = list(session.stream(ask("Count to five"), settings=settings(max_new_tokens=16)))
    assert len(pieces) > 1
    assert "".join(pieces) == session.reply(ask("Count to five"), settings=settings(max_new_tokens=16))


def test_should_stop_ends_the_answer_early(session):
    full = list(session.stream(ask("Go on"), settings=settings(max_new_tokens=24)))
    seen = []

    def should_stop():
        return len(seen) >= 2

    for piece in session.stream(ask("Go on"), settings=settings(max_new_tokens=24), should_stop=should_stop):
        seen.append(piece)
    assert 2 <= len(seen) < len(full)


def test_history_is_part_of_the_prompt(session):
    turns = ask("My name is Ada.") + [{"role": "assistant", "content": "Hello Ada."}] + ask("What is my name?")
    prompt = session.tokenizer.decode(session.encode(turns)["input_ids"][0])
    assert "My name is Ada." in prompt and "Hello Ada." in prompt
    assert session.reply(turns, settings=settings()) != session.reply(ask("What is my name?"), settings=settings())


def test_oldest_turns_are_dropped_when_the_context_is_full(session):
    long = [{"role": "system", "content": "Be kind."}]
    for i in range(40):
        long += ask(f"question {i} " + "word " * 20) + [{"role": "assistant", "content": "answer " * 20}]
    long += ask("last question")
    ids = session.encode(long, max_new_tokens=32)["input_ids"][0]
    prompt = session.tokenizer.decode(ids)
    assert len(ids) + 32 <= session.model.config.max_position_embeddings
    assert "Be kind." in prompt and "last question" in prompt and "question 0 " not in prompt


def test_adapter_loads_with_plain_peft_and_matches_the_session(session, fake_run, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), fake_run / "adapter")
    ids = torch.tensor([[1, 20, 300, 4000]])
    with torch.no_grad():
        assert torch.allclose(plain(ids).logits, session.model(ids).logits, atol=1e-5)


def test_missing_run_is_a_clear_error(tmp_path):
    from lora_tui.core.run.adapters import AdapterError
    from lora_tui.core.chat.session import ChatSession

    with pytest.raises(AdapterError, match="No run at"):
        ChatSession.from_run(tmp_path / "nope")


def test_run_without_adapter(tmp_path, tiny_model_dir):
    from lora_tui.core.run.adapters import AdapterError
    from lora_tui.core.chat.session import ChatError, ChatSession

    run = make_fake_run(tmp_path, tiny_model_dir, with_adapter=False)
    with pytest.raises(AdapterError, match="no adapter yet"):
        ChatSession.from_run(run)
    base_only = ChatSession.from_run(run, require_adapter=False)
    assert not base_only.has_adapter
    assert base_only.reply(ask("hi"), use_adapter=False, settings=settings(max_new_tokens=4)) is not None
    with pytest.raises(ChatError, match="No adapter"):
        base_only.reply(ask("hi"), settings=settings())


def test_newest_complete_checkpoint_while_training(tmp_path, tiny_model_dir, session):
    from lora_tui.core.chat.session import ChatSession
    from lora_tui.core.run.runs import CHECKPOINT_MARKER, RunDirectory

    run = make_fake_run(tmp_path, tiny_model_dir, with_adapter=False)
    RunDirectory(run).write_status("running", step=6, max_steps=12)  # still training: no adapter/ yet
    for step in (3, 6):
        make_adapter(tiny_model_dir, run / "checkpoints" / f"checkpoint-{step}", seed=step)
    (run / "checkpoints" / "checkpoint-3" / CHECKPOINT_MARKER).touch()  # checkpoint-6 is half written
    chat = ChatSession.from_run(run)
    assert chat.source.adapter_dir.name == "checkpoint-3" and "checkpoint-3" in chat.source.note


def test_bare_adapter_directory(tmp_path, fake_run, session):
    from lora_tui.core.chat.session import ChatSession

    bare = shutil.copytree(fake_run / "adapter", tmp_path / "my-adapter")
    chat = ChatSession.from_run(bare)
    assert chat.source.run is None and chat.has_adapter
    assert chat.reply(ask("Tell me a story"), settings=settings()) == session.reply(ask("Tell me a story"), settings=settings())


def test_four_bit_run_chats_on_a_four_bit_base(tmp_path, tiny_model_dir):
    import bitsandbytes as bnb

    from lora_tui.core.chat.session import ChatSession

    run = make_fake_run(tmp_path, tiny_model_dir, load_in="4bit")
    chat = ChatSession.from_run(run, device="cpu")
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in chat.model.modules())
    assert chat.reply(ask("hi"), settings=settings(max_new_tokens=4)) != chat.reply(
        ask("hi"), use_adapter=False, settings=settings(max_new_tokens=4))


def test_alpaca_run_uses_the_training_format_and_stops_at_the_next_instruction(tmp_path, tiny_model_dir):
    import yaml

    from lora_tui.core.chat.session import ChatSession
    from lora_tui.core.data import ChatFormatter

    run = make_fake_run(tmp_path, tiny_model_dir)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["template"] = "alpaca"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    chat = ChatSession.from_run(run)
    assert chat.formatter.template == "alpaca"
    assert "### Instruction:" in chat.stop_strings
    prompt = chat.tokenizer.decode(chat.encode(ask("Add 2 and 2"))["input_ids"][0], skip_special_tokens=True)
    assert prompt.strip() == ChatFormatter(chat.tokenizer, "alpaca").prompt_text(ask("Add 2 and 2")).strip()


@pytest.mark.parametrize("kind", ["chatml", "alpaca"])
def test_fallback_jinja_templates_render_like_the_training_formatter(kind, embedded_tokenizer):
    import copy

    from lora_tui.core.data.template import apply_training_template
    from lora_tui.core.data import ChatFormatter

    tokenizer = copy.deepcopy(embedded_tokenizer)
    formatter = ChatFormatter(tokenizer, kind)
    assert apply_training_template(tokenizer, kind) == kind
    conversations = [ask("one"), [{"role": "system", "content": "Be brief."}] + ask("one"),
                     ask("one") + [{"role": "assistant", "content": "two"}] + ask("three")]
    for conversation in conversations:
        assert tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True) == \
            formatter.prompt_text(conversation)


def test_chat_stops_on_exactly_the_end_of_turn_tokens_training_teaches(embedded_tokenizer):
    """Issue 18: chat kept its own end-of-turn list, and it differed from training's: it stopped on
    <|eom_id|>, which training never teaches, and missed <|END_OF_TURN_TOKEN|>, <|end_of_text|> and
    <｜end▁of▁sentence｜>, which training does. Each one here is a special token that a model template
    writes after every turn; chat must stop on it exactly when training trains it after an answer."""
    import copy

    from lora_tui.core.data import ChatFormatter, Example
    from lora_tui.core.data.template import end_of_turn_ids

    markers = ["<|eom_id|>", "<|END_OF_TURN_TOKEN|>", "<|end_of_text|>", "<｜end▁of▁sentence｜>", "<|eot_id|>",
               "<end_of_turn>", "<|end|>"]
    tokenizer = copy.deepcopy(embedded_tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": markers})
    stops = set(end_of_turn_ids(tokenizer))
    taught = {}
    for marker in markers:
        tokenizer.chat_template = ("{% for m in messages %}{{ '<' + m['role'] + '>' + m['content'] + '" + marker
                                   + "' }}{% endfor %}{% if add_generation_prompt %}{{ '<assistant>' }}{% endif %}")
        item = ChatFormatter(tokenizer, "auto").tokenize(Example(1, ask("Hi") + [{"role": "assistant", "content": "Hello"}]), 64)
        taught[marker] = tokenizer.convert_tokens_to_ids(marker) in item["labels"]
    assert taught["<|END_OF_TURN_TOKEN|>"] and not taught["<|eom_id|>"]  # the test sees both kinds
    assert {m for m in markers if tokenizer.convert_tokens_to_ids(m) in stops} == {m for m in markers if taught[m]}


def test_stop_trimmer_cuts_at_a_stop_string_split_across_pieces():
    from lora_tui.core.chat.format import _StopTrimmer

    trimmer = _StopTrimmer(["### Instruction:"])
    out = [trimmer.feed(p) for p in ["The answer is 4.", "\n\n###", " Instr", "uction: next"]]
    assert "".join(out) == "The answer is 4.\n\n" and trimmer.done
    plain = _StopTrimmer(["### Instruction:"])
    assert "".join(plain.feed(p) for p in ["no ", "stop ", "here"]) + plain.flush() == "no stop here"


@pytest.mark.gpu
def test_chat_on_a_gpu(fake_run):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from lora_tui.core.chat.session import ChatSession

    gpu = ChatSession.from_run(fake_run, device="cuda")
    assert gpu.model.device.type == "cuda"
    answer = gpu.reply(ask("Tell me a story"), settings=settings(max_new_tokens=4))
    assert answer and answer != gpu.reply(ask("Tell me a story"), use_adapter=False, settings=settings(max_new_tokens=4))
