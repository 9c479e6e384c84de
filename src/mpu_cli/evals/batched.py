"""Model-facing batched passes of the evaluator.

- `score_sequences`: teacher-forced, right-padded, one forward per batch; per sequence the answer
  tokens' log-probs (fp32 log-softmax), their mean NLL and whether the argmax equals the label.
  Answer tokens are the positions whose label is not -100 (prompt and padding are masked by
  position, never by token id).
- `generate_greedy`: left-padded greedy generation, new tokens cut at EOS / end-of-turn tokens,
  decoded without special tokens, cut at stop strings, stripped.
"""
from __future__ import annotations

import copy
import logging
import sys
from dataclasses import dataclass

import numpy as np
import torch

from mpu_cli.data.formatting import IGNORE, collate_left, collate_right, pad_id
from mpu_cli.logprobs import shift

log = logging.getLogger(__name__)

END_OF_TURN_TOKENS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<|endoftext|>", "<end_of_turn>")


@dataclass
class SeqScore:
    avg_loss: float  # mean -log p over answer tokens (nan when the sequence has none)
    logprobs: np.ndarray  # [n_answer_tokens] float64
    correct: np.ndarray  # [n_answer_tokens] bool, teacher-forced argmax == label


def model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return getattr(model, "device", torch.device("cpu"))


def model_positions(model) -> int | None:
    """How many positions the model's config gives it (None when it names none)."""
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        n = getattr(cfg, key, None)
        if isinstance(n, int) and n > 0:
            return n
    return None


def _tqdm(total: int, desc: str, progress: bool):
    from mpu_cli.progress import tqdm

    # disable=None: a bar on a terminal, plain log lines otherwise (mpu_cli.progress)
    return tqdm(total=total, desc=desc, disable=None if progress else True, file=sys.stderr, leave=False)


def _length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), to limit padding."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


def score_sequences(model, examples: list[dict], batch_size: int, pad: int,
                    progress: bool = False, desc: str = "scoring") -> list[SeqScore]:
    """Per-sequence answer-token statistics for encoded examples ({input_ids, labels})."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out: list[SeqScore | None] = [None] * len(examples)
    device = model_device(model)
    batches = _length_batches([len(e["input_ids"]) for e in examples], batch_size)
    with torch.inference_mode(), _tqdm(len(batches), desc, progress) as bar:
        for idx in batches:
            batch = collate_right([examples[i] for i in idx], pad)
            logits = model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                use_cache=False,
            ).logits
            logits, labels = shift(logits, batch["labels"].to(device))
            mask = labels != IGNORE
            # only answer positions go through the fp32 log-softmax: [N_answer, V]
            sel = logits[mask].float()
            tgt = labels[mask]
            logp_all = torch.log_softmax(sel, dim=-1)
            logp = logp_all.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
            correct = logp_all.argmax(-1) == tgt
            counts = mask.sum(-1).tolist()
            logp_rows = torch.split(logp.double().cpu(), counts)
            corr_rows = torch.split(correct.cpu(), counts)
            for j, i in enumerate(idx):
                lp = logp_rows[j].numpy()
                if lp.size == 0:
                    log.warning("example %d has no answer tokens (prompt longer than max_length?)", i)
                avg = float(-lp.mean()) if lp.size else float("nan")
                out[i] = SeqScore(avg_loss=avg, logprobs=lp, correct=corr_rows[j].numpy().astype(bool))
            bar.update(1)
    return out  # type: ignore[return-value]


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """EOS, the end-of-turn token if the tokenizer has one, and the model's own generation EOS ids."""
    ids: list[int] = []

    def add(t):
        if isinstance(t, int) and t >= 0 and t not in ids:
            ids.append(t)

    add(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    for tok in END_OF_TURN_TOKENS:
        if tok in vocab:
            add(vocab[tok])
    gc = getattr(model, "generation_config", None)
    eos = getattr(gc, "eos_token_id", None)
    for t in eos if isinstance(eos, (list, tuple)) else [eos]:
        add(t)
    return ids


def greedy_generation_config(model, tokenizer, max_new_tokens: int):
    """A copy of the model's generation config set to plain greedy decoding (no sampling knobs left)."""
    from transformers import GenerationConfig

    base = getattr(model, "generation_config", None)
    gc = copy.deepcopy(base) if base is not None else GenerationConfig()
    gc.do_sample = False
    gc.num_beams = 1
    for knob in ("temperature", "top_p", "top_k", "min_p", "typical_p"):
        if hasattr(gc, knob):
            setattr(gc, knob, None)
    gc.max_new_tokens = max_new_tokens
    gc.max_length = None
    gc.pad_token_id = pad_id(tokenizer)
    gc.eos_token_id = stop_token_ids(tokenizer, model)
    return gc


def _decode_new(tokenizer, ids: list[int], stops: set[int], stop_strings: tuple[str, ...]) -> str:
    for n, t in enumerate(ids):
        if t in stops:
            ids = ids[:n]
            break
    text = tokenizer.decode(ids, skip_special_tokens=True)
    for s in stop_strings:
        if s and s in text:
            text = text.split(s)[0]
    return text.strip()


def generate_greedy(model, tokenizer, prompts: list[list[int]], batch_size: int, max_new_tokens: int,
                    stop_strings: tuple[str, ...] = (), progress: bool = False,
                    desc: str = "generating") -> list[str]:
    """Greedy continuations of tokenized prompts (left padding, one generate call per batch)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out: list[str | None] = [None] * len(prompts)
    if not prompts:
        return []
    device = model_device(model)
    gc = greedy_generation_config(model, tokenizer, max_new_tokens)
    stops = set(gc.eos_token_id)
    batches = _length_batches([len(p) for p in prompts], batch_size)
    # generate() fills unset fields of a passed config from model.generation_config, so an instruct
    # model's sampling defaults (temperature, top_p) would come back and warn; swap the greedy config
    # in for the duration and restore the model's own afterwards.
    saved = getattr(model, "generation_config", None)
    model.generation_config = gc
    try:
        with torch.inference_mode(), _tqdm(len(batches), desc, progress) as bar:
            for idx in batches:
                batch = collate_left([prompts[i] for i in idx], gc.pad_token_id)
                ids = batch["input_ids"].to(device)
                gen = model.generate(
                    input_ids=ids,
                    attention_mask=batch["attention_mask"].to(device),
                    generation_config=gc,
                )
                new = gen[:, ids.shape[1]:].tolist()
                for j, i in enumerate(idx):
                    out[i] = _decode_new(tokenizer, new[j], stops, stop_strings)
                bar.update(1)
    finally:
        model.generation_config = saved
    return out  # type: ignore[return-value]
