"""Encodings of raw text (MUSE): training chunks of a corpus, a document scored over all its tokens, a
prefix with its continuation, and the few-shot question prompt of the knowledge-memorization metrics.

Every sequence starts with the tokenizer's BOS token when it has one, so training and evaluation see text the
same way. The few-shot prompt is assembled as open-unlearning assembles it: in the model's chat template, the
examples are earlier user / assistant turns; in the plain format (open-unlearning's MUSE setting, also for
models that have a template), each example is a "Question: …\nAnswer: …" block followed by a blank line, then
the question itself.
"""
from __future__ import annotations

from mpu_cli.data.formatting import _TAG_ASSISTANT, _TAG_USER, IGNORE, ChatFormat, _ids, _messages, _template_kwargs

# A few-shot example's answer ends with a blank line in the tag format (open-unlearning's MUSE template).
FEW_SHOT_SEPARATOR = "\n\n"
# Generated answers are cut where the model starts the next example.
FEW_SHOT_STOP_STRINGS = ("\n\n", "\nQuestion", _TAG_USER.strip())


def _bos(tokenizer) -> list[int]:
    return [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []


def corpus_chunks(tokenizer, documents: list[str], max_length: int) -> list[dict]:
    """The documents joined by blank lines and cut into chunks of `max_length` tokens (BOS included), every
    token of a chunk a label: what a model is fine-tuned and unlearned on (open-unlearning's pretraining
    dataset does the same)."""
    if max_length < 2:
        raise ValueError(f"max_length={max_length} must be >= 2 for text chunks")
    ids = _ids(tokenizer, "\n\n".join(documents))
    bos = _bos(tokenizer)
    step = max_length - len(bos)
    chunks = []
    for s in range(0, len(ids), step):
        chunk = bos + ids[s : s + step]
        chunks.append({"input_ids": chunk, "labels": [IGNORE] * len(bos) + chunk[len(bos):]})
    return chunks


def encode_document(tokenizer, text: str, max_length: int) -> dict:
    """One document scored over all its tokens (up to max_length): the membership attack's input."""
    ids = (_bos(tokenizer) + _ids(tokenizer, text))[:max_length]
    return {"input_ids": ids, "labels": [IGNORE] + ids[1:]}


def encode_completion(tokenizer, prompt: str, continuation: str, max_length: int) -> dict:
    """A prefix and its continuation, joined by a space, with labels on the continuation only."""
    prefix = _bos(tokenizer) + _ids(tokenizer, prompt)
    ids = (_bos(tokenizer) + _ids(tokenizer, prompt + " " + continuation))[:max_length]
    n = min(len(prefix), len(ids))
    return {"input_ids": ids, "labels": [IGNORE] * n + ids[n:]}


def encode_text_prompt(tokenizer, prompt: str) -> list[int]:
    """A raw-text prefix to continue (verbatim memorization)."""
    return _bos(tokenizer) + _ids(tokenizer, prompt)


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
                           chat: bool = False) -> list[int]:
    # Chat templates contain BOS where the model wants one (as data.formatting renders TOFU); plain text gets it.
    text = few_shot_prompt_text(tokenizer, examples, question, fmt, chat)
    return _ids(tokenizer, text) if chat else _bos(tokenizer) + _ids(tokenizer, text)
