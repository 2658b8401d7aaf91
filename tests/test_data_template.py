"""Chat templates and label masking on the real SmolLM2 tokenizer (ChatML template, pad == eos)."""

from __future__ import annotations

import pytest

from lora_tui.core.data import ChatFormatter, Example

IGNORE = -100


@pytest.fixture(scope="module")
def plain_tokenizer(embedded_model_dir):
    """The same tokenizer with its chat template removed (a base model's tokenizer)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    tok.chat_template = None
    return tok


def _example(*pairs, line=1):
    return Example(line, [{"role": r, "content": c} for r, c in pairs])


def _trained_text(tok, out) -> str:
    return tok.decode([i for i, l in zip(out["input_ids"], out["labels"]) if l != IGNORE])


def _untrained_text(tok, out) -> str:
    return tok.decode([i for i, l in zip(out["input_ids"], out["labels"]) if l == IGNORE])


def test_real_template_masks_prompt_and_trains_answer_and_eos(embedded_tokenizer):
    tok = embedded_tokenizer
    assert tok.pad_token_id == tok.eos_token_id  # the case where deriving labels from pad ids loses EOS
    formatter = ChatFormatter(tok)
    example = _example(("user", "What is 2+2?"), ("assistant", "Ahoy! Four. — Cap'n LoRA"))
    out = formatter.tokenize(example, 1024)
    assert out["truncated"] is False
    assert out["input_ids"] == tok.apply_chat_template(example.messages, tokenize=True, return_dict=True)["input_ids"]
    assert _trained_text(tok, out) == "Ahoy! Four. — Cap'n LoRA<|im_end|>"
    untrained = _untrained_text(tok, out)
    assert "What is 2+2?" in untrained and "You are a helpful AI assistant" in untrained  # injected system prompt
    # The EOS that closes the answer is trained even though it is also the pad id.
    eos_positions = [i for i, t in enumerate(out["input_ids"]) if t == tok.eos_token_id]
    assert out["labels"][eos_positions[-1]] == tok.eos_token_id
    assert all(out["labels"][i] == IGNORE for i in eos_positions[:-1])  # system/user turn ends are prompt


def test_every_assistant_turn_is_trained(embedded_tokenizer):
    formatter = ChatFormatter(embedded_tokenizer)
    example = _example(("system", "Be a pirate."), ("user", "Hi"), ("assistant", "Ahoy one"),
                       ("user", "Again"), ("assistant", "Ahoy two"))
    out = formatter.tokenize(example, 1024)
    assert _trained_text(embedded_tokenizer, out) == "Ahoy one<|im_end|>Ahoy two<|im_end|>"
    assert "Be a pirate." in _untrained_text(embedded_tokenizer, out)


def test_answer_text_repeated_in_the_prompt_is_still_masked_in_the_prompt(embedded_tokenizer):
    formatter = ChatFormatter(embedded_tokenizer)
    example = _example(("user", "Say yes"), ("assistant", "yes"))
    out = formatter.tokenize(example, 1024)
    assert _trained_text(embedded_tokenizer, out) == "yes<|im_end|>"


def test_train_on_prompt_trains_everything(embedded_tokenizer):
    out = ChatFormatter(embedded_tokenizer, train_on_prompt=True).tokenize(_example(("user", "Hi"), ("assistant", "Yo")),
                                                                            1024)
    assert IGNORE not in out["labels"] and out["labels"] == out["input_ids"]


def test_truncation_cuts_ids_and_labels_together(embedded_tokenizer):
    formatter = ChatFormatter(embedded_tokenizer)
    example = _example(("user", "Count"), ("assistant", " ".join(["one two three"] * 30)))
    full = formatter.tokenize(example, 4096)
    cut = formatter.tokenize(example, 40)
    assert cut["truncated"] and not full["truncated"]
    assert cut["input_ids"] == full["input_ids"][:40] and cut["labels"] == full["labels"][:40]


def test_plain_text_rows_are_fully_trained_with_eos(embedded_tokenizer):
    out = ChatFormatter(embedded_tokenizer).tokenize(Example(1, None, text="Once upon a time."), 1024)
    assert out["labels"] == out["input_ids"] and out["input_ids"][-1] == embedded_tokenizer.eos_token_id


def test_auto_without_chat_template_falls_back_to_chatml(plain_tokenizer):
    formatter = ChatFormatter(plain_tokenizer)
    assert formatter.template == "chatml"
    example = _example(("user", "Hi"), ("assistant", "Ahoy"))
    assert formatter.render(example) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nAhoy<|im_end|>\n"
    out = formatter.tokenize(example, 1024)
    assert _trained_text(plain_tokenizer, out) == "Ahoy<|im_end|>"


def test_alpaca_fallback_renders_and_appends_a_trained_eos(plain_tokenizer):
    formatter = ChatFormatter(plain_tokenizer, template="alpaca")
    example = _example(("user", "Name a colour."), ("assistant", "Blue."))
    text = formatter.render(example)
    assert text.startswith("Below is an instruction") and "### Instruction:\nName a colour.\n\n### Response:\nBlue." in text
    assert text.endswith(plain_tokenizer.eos_token)
    out = formatter.tokenize(example, 1024)
    assert _trained_text(plain_tokenizer, out) == "Blue." + plain_tokenizer.eos_token
    assert out["labels"][-1] == plain_tokenizer.eos_token_id
    assert formatter.prompt_text(example.messages[:1]).endswith("### Response:\n")


def test_explicit_fallback_overrides_the_models_template(embedded_tokenizer):
    formatter = ChatFormatter(embedded_tokenizer, template="alpaca")
    assert formatter.template == "alpaca" and "### Response:" in formatter.render(_example(("user", "a"),
                                                                                        ("assistant", "b")))
    with pytest.raises(ValueError):
        ChatFormatter(embedded_tokenizer, template="llama9")


def test_segments_show_which_text_is_trained(embedded_tokenizer):
    formatter = ChatFormatter(embedded_tokenizer)
    example = _example(("user", "Hi"), ("assistant", "Ahoy! Hello. — Cap'n LoRA"))
    segments = formatter.segments(example, 1024)
    assert "".join(piece for piece, _ in segments) == formatter.render(example)
    assert [piece for piece, trained in segments if trained] == ["Ahoy! Hello. — Cap'n LoRA<|im_end|>"]
    short = formatter.segments(example, 10)
    assert not any(trained for _, trained in short)
    assert formatter.render(example).startswith("".join(p for p, _ in short))


def test_prompt_text_matches_the_tokenizers_generation_prompt(embedded_tokenizer):
    messages = [{"role": "user", "content": "Hi"}]
    assert ChatFormatter(embedded_tokenizer).prompt_text(messages) == embedded_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)


def test_measure_agrees_with_tokenize(embedded_tokenizer):
    formatter = ChatFormatter(embedded_tokenizer)
    examples = [_example(("user", f"Question {i}?"), ("assistant", "Answer " * (4 * i))) for i in range(1, 6)]
    cut_at = 45  # the prompt is ~30 tokens: short answers fit, long ones are cut part-way
    measured = formatter.measure(examples, cut_at)
    partly = 0
    for example, (length, trained) in zip(examples, measured):
        full = formatter.tokenize(example, 10_000)
        cut = formatter.tokenize(example, cut_at)
        assert length == len(full["input_ids"])
        assert trained == sum(1 for label in cut["labels"] if label != IGNORE)
        partly += 0 < trained < sum(1 for label in full["labels"] if label != IGNORE)
    assert partly >= 1


@pytest.mark.parametrize("answer", ["end", "assistant", "im", "You"])
def test_short_answers_that_also_occur_in_template_text(embedded_tokenizer, answer):
    out = ChatFormatter(embedded_tokenizer).tokenize(_example(("user", "Say it"), ("assistant", answer)), 1024)
    assert _trained_text(embedded_tokenizer, out) == answer + "<|im_end|>"


def test_template_that_rewrites_content_uses_prefix_renders(embedded_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    example = _example(("user", "  Hi  "), ("assistant", "  Ahoy there  "))
    out = ChatFormatter(tok).tokenize(example, 1024)
    assert _trained_text(tok, out) == "Ahoy there<|im_end|>"


def test_tokenize_names_the_row_a_template_refuses(embedded_model_dir):
    from transformers import AutoTokenizer

    from lora_tui.core.data import DataError

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    tok.chat_template = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system') }}{% endif %}x"
    with pytest.raises(DataError, match="line 7: the chat template refuses this row: no system"):
        ChatFormatter(tok).tokenize(_example(("system", "s"), ("user", "u"), ("assistant", "a"), line=7), 64)


def test_chatml_fallback_appends_the_tokenizers_own_eos_when_it_differs(embedded_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    tok.chat_template = None
    tok.eos_token = "<|endoftext|>"
    formatter = ChatFormatter(tok, template="chatml")
    example = _example(("user", "Hi"), ("assistant", "Ahoy"))
    assert formatter.render(example).endswith("<|im_end|>\n<|endoftext|>")
    out = formatter.tokenize(example, 1024)
    assert _trained_text(tok, out) == "Ahoy<|im_end|><|endoftext|>"
    assert out["labels"][-1] == tok.eos_token_id and set(formatter.stop_strings) == {"<|endoftext|>", "<|im_end|>"}
