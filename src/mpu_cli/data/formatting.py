"""Render QA pairs as chats and tokenize them with answer-only labels.

Loss and every probability cover the answer tokens only, end-of-turn token included, as open-unlearning
scores TOFU. Padding is masked by position, never by token id.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE = -100

# Plain tag template for tokenizers without a chat template of their own.
_TAG_USER, _TAG_ASSISTANT = "Question: ", "\nAnswer: "


@dataclass(frozen=True)
class ChatFormat:
    system_prompt: str | None = "You are a helpful assistant."
    date_string: str | None = None  # Llama-3 templates print "Today Date: ..."; None -> template default
    max_length: int = 512


def _messages(question: str, fmt: ChatFormat, answer: str | None = None) -> list[dict]:
    msgs = []
    if fmt.system_prompt:
        msgs.append({"role": "system", "content": fmt.system_prompt})
    msgs.append({"role": "user", "content": question})
    if answer is not None:
        msgs.append({"role": "assistant", "content": answer})
    return msgs


def _template_kwargs(fmt: ChatFormat) -> dict:
    return {"date_string": fmt.date_string} if fmt.date_string else {}


def prompt_text(tokenizer, question: str, fmt: ChatFormat) -> str:
    """The prompt up to and including the generation prompt (the assistant turn's header)."""
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(
            _messages(question, fmt), tokenize=False, add_generation_prompt=True, **_template_kwargs(fmt)
        )
    return (fmt.system_prompt + "\n" if fmt.system_prompt else "") + _TAG_USER + question + _TAG_ASSISTANT


def full_text(tokenizer, question: str, answer: str, fmt: ChatFormat) -> str:
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(
            _messages(question, fmt, answer), tokenize=False, **_template_kwargs(fmt)
        )
    return prompt_text(tokenizer, question, fmt) + answer + (tokenizer.eos_token or "")


def _ids(tokenizer, text: str) -> list[int]:
    # Templates already contain BOS where the model wants one.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_prompt(tokenizer, question: str, fmt: ChatFormat) -> list[int]:
    return _ids(tokenizer, prompt_text(tokenizer, question, fmt))


def encode_qa(tokenizer, question: str, answer: str, fmt: ChatFormat) -> dict:
    """input_ids and labels (-100 on prompt tokens) for one QA pair.

    Some chat templates append a trailing newline after the end-of-turn token; we keep the
    tokens up to and including the end-of-turn token, which is what the model must predict.
    """
    prompt_ids = encode_prompt(tokenizer, question, fmt)
    ids = _ids(tokenizer, full_text(tokenizer, question, answer, fmt))
    if ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError("chat template: the prompt rendering is not a prefix of the full rendering")
    ids = _cut_after_turn_end(tokenizer, ids, len(prompt_ids))
    ids = ids[: fmt.max_length]
    labels = [IGNORE] * min(len(prompt_ids), len(ids)) + ids[len(prompt_ids):]
    return {"input_ids": ids, "labels": labels}


def encode_rows(tokenizer, rows: list[dict], fmt: ChatFormat) -> list[dict]:
    """encode_qa of every {"question", "answer"} row."""
    return [encode_qa(tokenizer, r["question"], r["answer"], fmt) for r in rows]


def _cut_after_turn_end(tokenizer, ids: list[int], start: int) -> list[int]:
    ends = {tokenizer.eos_token_id}
    for tok in ("<|eot_id|>", "<|im_end|>", "<|end|>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ends.add(tid)
    for i in range(start, len(ids)):
        if ids[i] in ends:
            return ids[: i + 1]
    return ids


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def collate_right(examples: list[dict], pad: int) -> dict[str, torch.Tensor]:
    """Right padding for teacher-forced losses; labels and mask are -100/0 at pad positions."""
    n = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), n), pad, dtype=torch.long)
    labels = torch.full((len(examples), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, e in enumerate(examples):
        L = len(e["input_ids"])
        ids[i, :L] = torch.tensor(e["input_ids"])
        labels[i, :L] = torch.tensor(e["labels"])
        mask[i, :L] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def collate_left(prompts: list[list[int]], pad: int) -> dict[str, torch.Tensor]:
    """Left padding for batched generation."""
    n = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), n), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), n), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, n - len(p):] = torch.tensor(p)
        mask[i, n - len(p):] = 1
    return {"input_ids": ids, "attention_mask": mask}
