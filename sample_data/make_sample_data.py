"""Regenerate lora_tui's sample data from pairs.txt (run from anywhere: python3 sample_data/make_sample_data.py).

Writes train.jsonl, valid.jsonl and heldout_prompts.txt (a seeded split of the
question/answer pairs), one small example per supported format under formats/,
and a file full of faults under bad/. Every answer gets the behaviour the
sample adapter learns: the exact prefix "Ahoy! " and sign-off " — Cap'n LoRA".
"""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
PREFIX, SIGN_OFF = "Ahoy! ", " — Cap'n LoRA"
SEED, N_HELDOUT, N_VALID = 7, 10, 40


def pirate(answer: str) -> str:
    return f"{PREFIX}{answer}{SIGN_OFF}"


def read_pairs() -> list[tuple[str, str]]:
    pairs = []
    for line in (HERE / "pairs.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            question, answer = (part.strip() for part in line.split(" | ", 1))
            pairs.append((question, answer))
    assert len({q for q, _ in pairs}) == len(pairs), "questions must be unique"
    return pairs


def chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": pirate(answer)}]}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    pairs = read_pairs()
    order = list(range(len(pairs)))
    random.Random(SEED).shuffle(order)
    heldout = [pairs[i] for i in order[:N_HELDOUT]]
    valid = [pairs[i] for i in order[N_HELDOUT:N_HELDOUT + N_VALID]]
    train = [pairs[i] for i in order[N_HELDOUT + N_VALID:]]
    write_jsonl(HERE / "train.jsonl", [chat(q, a) for q, a in train])
    write_jsonl(HERE / "valid.jsonl", [chat(q, a) for q, a in valid])
    (HERE / "heldout_prompts.txt").write_text("".join(q + "\n" for q, _ in heldout), encoding="utf-8")
    write_formats(train[:8])
    write_bad(train[8:14])
    write_preferences(train, valid)
    print(f"train {len(train)}, valid {len(valid)}, held-out prompts {len(heldout)}")


def preference(question: str, answer: str) -> dict:
    """A dpo pair: the Cap'n LoRA answer preferred over the same answer in plain words."""
    return {"prompt": question, "chosen": pirate(answer), "rejected": answer}


def write_preferences(train: list[tuple[str, str]], valid: list[tuple[str, str]]) -> None:
    """preference.jsonl / preference_valid.jsonl (dpo, kto), one small file per preference format under
    formats/, and bad/preference_faults.jsonl (one fault per line, see bad/README.md)."""
    write_jsonl(HERE / "preference.jsonl", [preference(q, a) for q, a in train])
    write_jsonl(HERE / "preference_valid.jsonl", [preference(q, a) for q, a in valid])
    out, few = HERE / "formats", train[:4]
    user = [[{"role": "user", "content": q}] for q, _ in few]
    write_jsonl(out / "preference_conversational.jsonl", [
        {"prompt": u, "chosen": [{"role": "assistant", "content": pirate(a)}],
         "rejected": [{"role": "assistant", "content": a}]} for u, (_, a) in zip(user, few)])
    write_jsonl(out / "preference_implicit.jsonl", [
        {"chosen": u + [{"role": "assistant", "content": pirate(a)}], "rejected": u + [{"role": "assistant", "content": a}]}
        for u, (_, a) in zip(user, few)])
    write_jsonl(out / "preference_text.jsonl", [
        {"chosen": f"Question: {q}\nAnswer: {pirate(a)}", "rejected": f"Question: {q}\nAnswer: {a}"} for q, a in few])
    write_jsonl(out / "kto.jsonl", [
        {"prompt": q, "completion": pirate(a) if i % 2 == 0 else a, "label": i % 2 == 0} for i, (q, a) in enumerate(train[:8])])
    q, a = train[20]
    write_jsonl(HERE / "bad" / "preference_faults.jsonl", [
        preference(q, a),  # 1 fine
        {"prompt": q, "chosen": pirate(a)},  # 2 no rejected answer
        {"prompt": q, "chosen": "  ", "rejected": a},  # 3 empty chosen answer
        {"prompt": q, "chosen": a, "rejected": a},  # 4 chosen identical to rejected
        {"prompt": " ".join(["Tell me about the sea."] * 400), "chosen": pirate(a), "rejected": a},  # 5 prompt too long
        {"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "user", "content": pirate(a)}],
         "rejected": [{"role": "assistant", "content": a}]},  # 6 chosen is not an assistant turn
    ])


def write_formats(pairs: list[tuple[str, str]]) -> None:
    out = HERE / "formats"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    write_jsonl(out / "alpaca.jsonl", [
        {"instruction": q, "input": "", "output": pirate(a)} for q, a in pairs[:3]
    ] + [{"instruction": "Answer the question in one sentence.", "input": pairs[3][0], "output": pirate(pairs[3][1])}])
    system = "You are Cap'n LoRA, a cheerful ship's captain who answers briefly."
    write_jsonl(out / "messages.jsonl", [
        {"messages": [{"role": "system", "content": system},
                      {"role": "user", "content": pairs[0][0]}, {"role": "assistant", "content": pirate(pairs[0][1])},
                      {"role": "user", "content": pairs[1][0]}, {"role": "assistant", "content": pirate(pairs[1][1])}]},
    ] + [chat(q, a) for q, a in pairs[2:5]])
    (out / "sharegpt.json").write_text(json.dumps([
        {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": pirate(a)}]} for q, a in pairs[:4]
    ] + [{"conversations": [{"from": "system", "value": system}, {"from": "human", "value": pairs[4][0]},
                            {"from": "gpt", "value": pirate(pairs[4][1])}]}], ensure_ascii=False, indent=2) + "\n",
        encoding="utf-8")
    with open(out / "prompt_completion.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "completion"])
        writer.writerows([q, pirate(a)] for q, a in pairs[:5])
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([
        {"system": "Answer like a ship's captain.", "instruction": q, "response": pirate(a)} for q, a in pairs[:5]
    ]), out / "instruction_response.parquet")
    write_jsonl(out / "text.jsonl", [{"text": f"Question: {q}\nAnswer: {pirate(a)}"} for q, a in pairs[:5]])
    folder = out / "txt_folder"
    folder.mkdir()
    (folder / "log_of_the_lora.txt").write_text(
        "The ship's log of Cap'n LoRA.\n\n" + "\n".join(f"{q} {pirate(a)}" for q, a in pairs[:4]) + "\n",
        encoding="utf-8")
    (folder / "harbour_notes.txt").write_text(
        "Notes from the harbour.\n\n" + "\n".join(f"{q} {pirate(a)}" for q, a in pairs[4:8]) + "\n",
        encoding="utf-8")
    from datasets import Dataset

    Dataset.from_list([chat(q, a) for q, a in pairs[:5]]).save_to_disk(str(out / "hf_disk"))


def write_bad(pairs: list[tuple[str, str]]) -> None:
    """A JSONL file with one fault per line (line numbers in bad/README.md)."""
    out = HERE / "bad"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    q, a = pairs[0]
    lines = [
        json.dumps(chat(q, a), ensure_ascii=False),  # 1 fine
        json.dumps(chat(q, a), ensure_ascii=False),  # 2 exact duplicate of 1
        json.dumps(chat(q.upper(), a.lower()), ensure_ascii=False),  # 3 near duplicate of 1
        '{"messages": [{"role": "user", "content": "Unfinished line"}, ',  # 4 malformed JSON
        json.dumps({"messages": [{"role": "user", "content": pairs[1][0]}]}),  # 5 no assistant turn
        json.dumps({"messages": [{"role": "user", "content": pairs[2][0]},
                                 {"role": "assistant", "content": "  "}]}),  # 6 empty assistant turn
        json.dumps({"messages": [{"role": "user", "content": pairs[3][0]},
                                 {"role": "narrator", "content": "Meanwhile..."}]}),  # 7 unknown role
        json.dumps({"messages": "What is the capital of France?"}),  # 8 wrongly typed field
        json.dumps({"instruction": pairs[4][0], "output": pirate(pairs[4][1])}),  # 9 different schema (alpaca)
        json.dumps(chat("Can you tell me a secret?", "As an AI language model, I do not have secrets.")),  # 10
        json.dumps(chat("Where can I learn about knots?", "Read https://example.com/knots for pictures.")),  # 11
        json.dumps(chat("Describe the sea.", " ".join(["The sea is wide and deep and blue"] * 5) + ".")),  # 12
    ]
    raw = ("\n".join(lines) + "\n").encode("utf-8")
    raw += b'{"messages": [{"role": "user", "content": "caf\xe9"}, {"role": "assistant", "content": "x"}]}\n'  # 13
    (out / "faults.jsonl").write_bytes(raw)


if __name__ == "__main__":
    main()
