"""Encodings of raw text (MUSE): training chunks of a corpus, a document scored over all its tokens, a
prefix with its continuation, and the few-shot question prompt of the knowledge-memorization metrics.

Raw text gets the special tokens the tokenizer's own rule adds (`add_special_tokens=True`, as open-unlearning
tokenizes it): Llama's tokenizers start it with BOS, others may add none. Evaluation inputs are built and cut as
open-unlearning's MUSE datasets build them (its `preprocess_pretraining_instance`). The few-shot prompt is
assembled as open-unlearning assembles it: in the model's chat template, the examples are earlier user /
assistant turns; in the plain format (open-unlearning's MUSE setting, also for models that have a template),
each example is a "Question: …\nAnswer: …" block followed by a blank line, then the question itself.
"""
from __future__ import annotations

from mpu_cli.data.formatting import _TAG_ASSISTANT, _TAG_USER, IGNORE, ChatFormat, _ids, _messages, _template_kwargs

# A few-shot example's answer ends with a blank line in the tag format (open-unlearning's MUSE template).
FEW_SHOT_SEPARATOR = "\n\n"
# Generated answers are cut where the model starts the next example.
FEW_SHOT_STOP_STRINGS = ("\n\n", "\nQuestion", _TAG_USER.strip())


def _with_specials(tokenizer, text: str) -> list[int]:
    # verbose=False: no "longer than the model's max length" warning; the callers cut where they mean to
    return tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"]


def special_ids(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer's special-token rule puts before and after a text: ([BOS], []) for Llama's."""
    plain, full = _ids(tokenizer, "a"), _with_specials(tokenizer, "a")
    for i in range(len(full) - len(plain) + 1):
        if full[i: i + len(plain)] == plain:
            return full[:i], full[i + len(plain):]
    raise ValueError("the tokenizer's special tokens are not added around the text; accepted: a tokenizer whose "
                     "add_special_tokens=True only adds tokens before and after it")


def corpus_chunks(tokenizer, documents: list[str], max_length: int) -> list[dict]:
    """The documents joined by blank lines and cut into chunks of `max_length` tokens (the tokenizer's special
    tokens included), every token after the leading special tokens a label: what a model is fine-tuned and
    unlearned on (open-unlearning's pretraining dataset does the same)."""
    head, tail = special_ids(tokenizer)
    step = max_length - len(head) - len(tail)
    if step < 1:
        raise ValueError(f"max_length={max_length} must be >= {len(head) + len(tail) + 1} for text chunks")
    ids = _ids(tokenizer, "\n\n".join(documents))
    chunks = []
    for s in range(0, len(ids), step):
        chunk = head + ids[s: s + step] + tail
        chunks.append({"input_ids": chunk, "labels": [IGNORE] * len(head) + chunk[len(head):]})
    return chunks


def encode_completion(tokenizer, prompt: str, continuation: str, text_tokens: int, limit: int | None = None,
                      space: bool = True) -> dict:
    """A prefix and its continuation (joined by a space when `space`), labels on the continuation only, cut
    `text_tokens` after the prefix and at `limit` tokens (the model's positions) — open-unlearning's
    completion item. An empty prefix still leaves the first token unlabelled (nothing predicts it)."""
    prefix = _with_specials(tokenizer, prompt)
    ids = _with_specials(tokenizer, prompt + (" " if space else "") + continuation)[: len(prefix) + text_tokens]
    ids = ids if limit is None else ids[:limit]
    n = min(max(len(prefix), 1), len(ids))
    return {"input_ids": ids, "labels": [IGNORE] * n + ids[n:]}


def encode_document(tokenizer, text: str, text_tokens: int, limit: int | None = None) -> dict:
    """One document scored over all its tokens (up to `text_tokens` and `limit`): the membership attack's
    input, a completion with an empty prefix."""
    return encode_completion(tokenizer, "", text, text_tokens, limit, space=False)


def encode_text_prompt(tokenizer, prompt: str) -> list[int]:
    """A raw-text prefix to continue (verbatim memorization)."""
    return _with_specials(tokenizer, prompt)


def few_shot_prompt_text(tokenizer, examples: list[tuple[str, str]], question: str, fmt: ChatFormat,
                         chat: bool) -> str:
    """The prompt of a question preceded by (question, answer) examples, up to the answer's start; chat: in the
    tokenizer's chat template (with fmt's system prompt), else in the plain tags (no system prompt)."""
    if chat:
        if not tokenizer.chat_template:
            raise ValueError("the tokenizer has no chat template; accepted: the plain Question/Answer format")
        msgs = _messages(question, fmt)
        head, last = msgs[:-1], msgs[-1]
        for q, a in examples:
            head += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        return tokenizer.apply_chat_template(head + [last], tokenize=False, add_generation_prompt=True,
                                             **_template_kwargs(fmt))
    text = ""
    for q, a in examples:
        text += _TAG_USER + q + _TAG_ASSISTANT + a + FEW_SHOT_SEPARATOR
    return text + _TAG_USER + question + _TAG_ASSISTANT


def encode_few_shot_prompt(tokenizer, examples: list[tuple[str, str]], question: str, fmt: ChatFormat,
                           chat: bool = False, max_tokens: int | None = None) -> list[int]:
    """The few-shot prompt's ids; plain text with the tokenizer's special tokens, cut at `max_tokens` by the
    tokenizer's truncation (open-unlearning's QA item); chat text as the template renders it (its BOS
    included, as data.formatting renders TOFU), not cut."""
    text = few_shot_prompt_text(tokenizer, examples, question, fmt, chat)
    if chat:
        return _ids(tokenizer, text)
    return tokenizer(text, add_special_tokens=True, truncation=max_tokens is not None, max_length=max_tokens,
                     verbose=False)["input_ids"]
