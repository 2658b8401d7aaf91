"""Ollama Modelfile: the TEMPLATE must build the same prompt as the chat template used in training."""

from __future__ import annotations

import copy

import pytest

LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}"
          "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
          "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
MISTRAL = ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
           "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
           "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
           "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
           "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")
CHATML_GO = ('{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n<|im_start|>user\n{{ else }}'
             '<|im_start|>user\n{{ end }}{{ range .Messages }}{{ if eq .Role "user" }}{{ .Content }}<|im_end|>\n'
             '<|im_start|>assistant\n{{ else if eq .Role "assistant" }}{{ .Content }}<|im_end|>\n<|im_start|>user\n'
             '{{ end }}{{ end }}')


def conversations(system=True):
    u = lambda c: {"role": "user", "content": c}
    a = lambda c: {"role": "assistant", "content": c}
    cases = [[u("Hi there")], [u("one"), a("two"), u("three")], [u("1"), a("2"), u("3"), a("4"), u("5")]]
    return cases + ([[{"role": "system", "content": "Be brief."}] + c for c in cases] if system else [])


def with_template(tokenizer, template, special=()):
    tokenizer = copy.deepcopy(tokenizer)
    if special:
        tokenizer.add_special_tokens({"additional_special_tokens": list(special)})
    tokenizer.chat_template = template
    return tokenizer


def jinja(tokenizer, messages, strip_bos=True):
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token
    return text[len(bos):] if strip_bos and "bos_token" in tokenizer.chat_template and text.startswith(bos) else text


def test_embedded_chatml_template_with_its_default_system(embedded_tokenizer):
    from lora_tui.core.export.modelfile import format_for, modelfile_text

    fmt = format_for(embedded_tokenizer)
    assert "chatml" in fmt.name and not fmt.note
    for case in conversations():
        assert fmt.render(case) == jinja(embedded_tokenizer, case)
    # No system message: SmolLM's template adds its own default, and so must Ollama's.
    assert "You are a helpful AI assistant named SmolLM" in fmt.first_user
    text = modelfile_text(fmt)
    assert 'PARAMETER stop "<|im_end|>"' in text and 'PARAMETER stop "<|im_start|>"' in text


def test_chatml_go_template_text(embedded_tokenizer):
    from lora_tui.core.data.template import CHATML_TEMPLATE
    from lora_tui.core.export.modelfile import format_for, named_format

    derived = format_for(with_template(embedded_tokenizer, CHATML_TEMPLATE))
    assert derived.go_template() == CHATML_GO == named_format("chatml").go_template()


def test_llama3_template(embedded_tokenizer):
    from lora_tui.core.export.modelfile import format_for

    tokenizer = with_template(embedded_tokenizer, LLAMA3, ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"])
    fmt = format_for(tokenizer)
    assert "llama3" in fmt.name and not fmt.note
    for case in conversations():
        assert fmt.render(case) == jinja(tokenizer, case)
    assert not fmt.first_user.startswith(tokenizer.bos_token)  # Ollama adds BOS itself
    assert {"<|eot_id|>", "<|start_header_id|>"} <= set(fmt.stops)


def test_mistral_template_without_a_system_role(embedded_tokenizer):
    from lora_tui.core.export.modelfile import format_for

    tokenizer = with_template(embedded_tokenizer, MISTRAL)
    fmt = format_for(tokenizer)
    assert "mistral" in fmt.name and "no system role" in fmt.note
    for case in conversations(system=False):
        assert fmt.render(case) == jinja(tokenizer, case)
    assert fmt.render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]) == \
        "[INST] Be brief.\n\nhi [/INST]"
    assert "[INST]" in fmt.stops and tokenizer.eos_token in fmt.stops


def test_alpaca_named_format_matches_the_training_formatter(embedded_tokenizer):
    from lora_tui.core.data import ChatFormatter
    from lora_tui.core.export.modelfile import named_format

    fmt = named_format("alpaca", embedded_tokenizer.eos_token)
    formatter = ChatFormatter(embedded_tokenizer, "alpaca")
    for case in conversations():
        assert fmt.render(case) == formatter.prompt_text(case)
    assert "### Instruction:" in fmt.stops


def test_template_that_rewrites_content_falls_back_to_a_named_format(embedded_tokenizer):
    from lora_tui.core.export.modelfile import format_for

    shouting = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | upper }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    fmt = format_for(with_template(embedded_tokenizer, shouting))
    assert fmt.name == "chatml" and "could not be translated exactly" in fmt.note


def test_no_template_uses_chatml_and_names_are_checked(embedded_tokenizer):
    from lora_tui.core.export.modelfile import TemplateError, format_for, named_format

    bare = with_template(embedded_tokenizer, None)
    assert format_for(bare).name == "chatml"
    assert format_for(embedded_tokenizer, "llama3").name == "llama3"
    with pytest.raises(TemplateError, match="Unknown chat format"):
        named_format("vicuna")


def test_go_braces_are_escaped_and_triple_quotes_refused(embedded_tokenizer):
    from lora_tui.core.export.modelfile import TemplateError, TurnFormat, modelfile_text

    fmt = TurnFormat("x", "{{sys}} ", "\n", "U: ", "\nA: ", "\n", ["\n"])
    assert '{{ "{{" }}sys}} ' in fmt.go_template()
    with pytest.raises(TemplateError):
        modelfile_text(TurnFormat("x", '"""', "", "", "", ""))


def test_write_modelfile_with_a_system_message(tmp_path, embedded_tokenizer):
    from lora_tui.core.export.artefacts import write_modelfile

    path = write_modelfile(tmp_path, embedded_tokenizer, system="You answer in French.")
    text = path.read_text()
    assert path.name == "Modelfile" and 'SYSTEM """You answer in French."""' in text and "TEMPLATE" in text
