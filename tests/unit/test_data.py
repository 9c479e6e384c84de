"""The embedded TOFU-like data set, its tokenizer, the loader and the generator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mpu_cli.data import tofu
from mpu_cli.data.formatting import ChatFormat, encode_qa
from mpu_cli.data.tofu import EMBEDDED, TOFU_CONFIGS, load_idk, load_public_text, load_split, split_names

TOKENIZER_DIR = Path(tofu.__file__).resolve().parents[1] / "models" / "embedded_tokenizer"
SYSTEM = "You are a helpful assistant."

ROWS = {
    "full": 400,
    "forget01": 4, "forget05": 20, "forget10": 40,
    "retain99": 396, "retain95": 380, "retain90": 360,
    "forget01_perturbed": 4, "forget05_perturbed": 20, "forget10_perturbed": 40,
    "retain_perturbed": 40,
    "real_authors": 40, "real_authors_perturbed": 40,
    "world_facts": 40, "world_facts_perturbed": 40,
    "holdout01": 4, "holdout05": 20, "holdout10": 40,
}
QA = ["question", "answer"]
PERTURBED = ["question", "answer", "paraphrased_answer", "perturbed_answer", "paraphrased_question"]
PUBLIC_PERTURBED = ["question", "answer", "perturbed_answer"]


def test_configs_and_row_counts(data):
    assert set(TOFU_CONFIGS) == set(ROWS)
    assert {c: len(rows) for c, rows in data.items()} == ROWS


def test_fields(data):
    for c, rows in data.items():
        want = PERTURBED if c.startswith(("forget", "retain_")) and c.endswith("_perturbed") else (
            PUBLIC_PERTURBED if c.endswith("_perturbed") else QA)
        for r in rows:
            assert list(r) == want, c
            assert all(isinstance(r[k], str) and r[k] for k in want if k != "perturbed_answer")


@pytest.mark.parametrize("pct", ["01", "05", "10"])
def test_forget_is_tail_of_full_and_retain_the_rest(data, pct):
    full, forget, retain = data["full"], data[f"forget{pct}"], data[f"retain{100 - int(pct)}"]
    assert forget == full[len(full) - len(forget):]
    assert retain + forget == full
    pert = data[f"forget{pct}_perturbed"]
    assert [{k: r[k] for k in QA} for r in pert] == forget
    hold = data[f"holdout{pct}"]
    assert hold == data["holdout10"][len(data["holdout10"]) - len(hold):]


def test_perturbed_answers(data):
    for c in ("forget10_perturbed", "retain_perturbed", "real_authors_perturbed", "world_facts_perturbed"):
        for r in data[c]:
            pa = r["perturbed_answer"]
            assert isinstance(pa, list) and len(pa) == 5 and len(set(pa)) == 5, (c, r)
            assert r["answer"] not in pa, (c, r)
            if "paraphrased_answer" in r:
                assert r["paraphrased_answer"] not in pa and r["paraphrased_answer"] != r["answer"]
                assert r["paraphrased_question"] != r["question"]
    retain90 = {(r["question"], r["answer"]) for r in data["retain90"]}
    assert all((r["question"], r["answer"]) in retain90 for r in data["retain_perturbed"])
    for c in ("real_authors", "world_facts"):
        assert [{k: r[k] for k in QA} for r in data[f"{c}_perturbed"]] == data[c]


def test_idk():
    idk = load_idk()
    assert len(idk) == 100 and len(set(idk)) == 100 and all(isinstance(s, str) and s for s in idk)
    assert load_idk("some-owner/not-a-local-folder") == idk  # non-embedded source: embedded fallback


# ---------------------------------------------------------------- loader


def _write_jsonl_folder(folder: Path, rows_by_config: dict[str, list[dict]]) -> None:
    folder.mkdir()
    for c, rows in rows_by_config.items():
        (folder / f"{c}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _write_parquet_folder(folder: Path, rows_by_config: dict[str, list[dict]]) -> None:
    import pandas as pd

    for c, rows in rows_by_config.items():
        (folder / c / "train").mkdir(parents=True)
        half = len(rows) // 2  # two shards, read in name order
        pd.DataFrame(rows[:half]).to_parquet(folder / c / "train" / "0000.parquet")
        pd.DataFrame(rows[half:]).to_parquet(folder / c / "train" / "0001.parquet")


def test_loader_local_folders(tmp_path, data):
    subset = {c: data[c] for c in ("forget01", "forget05_perturbed")}
    _write_jsonl_folder(tmp_path / "jsonl", subset)
    _write_parquet_folder(tmp_path / "parquet", subset)
    for c, rows in subset.items():
        assert load_split(str(tmp_path / "jsonl"), c) == rows
        assert load_split(str(tmp_path / "parquet"), c) == rows
    # .jsonl extension and a JSON array are accepted too
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "forget01.jsonl").write_text("\n".join(json.dumps(r) for r in data["forget01"]))
    (tmp_path / "other" / "full.json").write_text(json.dumps(data["forget01"]))
    assert load_split(str(tmp_path / "other"), "forget01") == data["forget01"]
    assert load_split(str(tmp_path / "other"), "full") == data["forget01"]
    with pytest.raises(ValueError, match="'retain90' not found in data folder"):
        load_split(str(tmp_path / "jsonl"), "retain90")
    with pytest.raises(ValueError, match="no public text"):
        load_public_text(str(tmp_path / "jsonl"))
    (tmp_path / "jsonl" / "idk.jsonl").write_text("I do not know.\nNo idea.\n")  # open-unlearning: plain lines
    assert load_idk(str(tmp_path / "jsonl")) == ["I do not know.", "No idea."]


def test_loader_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError) as e:
        load_split(EMBEDDED, "forget20")
    assert "'forget20'" in str(e.value) and all(c in str(e.value) for c in TOFU_CONFIGS)
    with pytest.raises(ValueError, match="not found"):
        load_split(str(tmp_path / "missing"), "full")
    with pytest.raises(ValueError, match="not found"):
        load_split("./missing-folder", "full")

    import datasets

    def boom(*a, **k):
        raise FileNotFoundError("Dataset 'nobody/nothing' doesn't exist on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    with pytest.raises(ValueError, match="could not load Hub dataset 'nobody/nothing'"):
        load_split("nobody/nothing", "full")


def test_hub_source_uses_load_dataset(monkeypatch):
    import datasets

    calls = []

    def fake(name, config, split):
        calls.append((name, config, split))
        return [{"question": "q", "answer": "a"}]

    monkeypatch.setattr(datasets, "load_dataset", fake)
    assert load_split("locuslab/TOFU", "forget10") == [{"question": "q", "answer": "a"}]
    assert calls == [("locuslab/TOFU", "forget10", "train")]


def test_split_names():
    assert split_names("forget10") == {
        "forget": "forget10", "retain": "retain90", "forget_perturbed": "forget10_perturbed",
        "holdout": "holdout10", "retain_perturbed": "retain_perturbed",
        "real_authors": "real_authors_perturbed", "world_facts": "world_facts_perturbed",
    }
    assert split_names("forget01")["retain"] == "retain99"
    assert split_names("forget05")["holdout"] == "holdout05"
    assert all(v in TOFU_CONFIGS for s in ("forget01", "forget05", "forget10") for v in split_names(s).values())
    with pytest.raises(ValueError, match="forget01"):
        split_names("forget20")


# ---------------------------------------------------------------- tokenizer


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    t = AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))
    assert isinstance(t, PreTrainedTokenizerFast)
    return t


def test_tokenizer_specials(tok):
    assert len(tok) == 1024
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<|pad|>", "<|bos|>", "<|end|>")
    assert tok.model_max_length == 128
    for s in ("<|system|>", "<|user|>", "<|assistant|>"):
        assert len(tok(s, add_special_tokens=False).input_ids) == 1
        assert s in tok.all_special_tokens
    # BOS from the tokenizer's own post-processor, as Llama's: raw text with special tokens starts with it
    plain = tok("Where was she born?", add_special_tokens=False).input_ids
    assert tok("Where was she born?").input_ids == [tok.bos_token_id, *plain]
    assert tok.bos_token_id not in plain and tok.eos_token_id not in tok("Where was she born?").input_ids


def test_tokenizer_round_trip(tok):
    for s in ["Talia Morven was born in the city of Quarnel.", "Ünïcode — ✓ 'quotes'  two  spaces", "x"]:
        assert tok.decode(tok(s).input_ids, skip_special_tokens=True) == s == tok.decode(tok(s).input_ids[1:])


def test_chat_template_prefix(tok, data):
    lengths = []
    for r in data["full"] + data["real_authors"] + data["world_facts"]:
        msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": r["question"]}]
        prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": r["answer"]}], tokenize=False)
        assert prompt == f"<|bos|><|system|>{SYSTEM}<|end|><|user|>{r['question']}<|end|><|assistant|>"
        assert full == prompt + r["answer"] + "<|end|>"
        # the template writes the BOS: chat text is tokenized without special tokens (no second BOS)
        p_ids, f_ids = (tok(t, add_special_tokens=False).input_ids for t in (prompt, full))
        assert f_ids[: len(p_ids)] == p_ids and f_ids[0] == tok.bos_token_id and f_ids[-1] == tok.eos_token_id
        assert f_ids.count(tok.bos_token_id) == 1
        assert encode_qa(tok, r["question"], r["answer"], ChatFormat(SYSTEM, None, 128))["input_ids"] == f_ids
        # open-unlearning's TOFU item: the template tokenized by apply_chat_template (one BOS, the template's)
        ou = tok.apply_chat_template(msgs + [{"role": "assistant", "content": r["answer"]}], tokenize=True,
                                     return_dict=False)
        assert (ou if isinstance(ou, list) else ou["input_ids"]) == f_ids
        lengths.append(len(f_ids))
    assert max(lengths) < tok.model_max_length


# ---------------------------------------------------------------- generator


def _corrupt_tofu(folder: Path) -> tuple[str, str]:
    shard = folder / "full" / "train-00000-of-00001.parquet"
    shard.parent.mkdir(parents=True)
    shard.write_bytes(b"PAR1 not really parquet")
    return "tofu", "full"


def _corrupt_muse(folder: Path) -> tuple[str, str]:
    shard = folder / "knowmem" / "forget_qa-00000-of-00001.parquet"
    shard.parent.mkdir(parents=True)
    shard.write_bytes(b"PAR1\x00\x01 truncated")
    return "muse", "knowmem/forget_qa"


@pytest.mark.parametrize("corrupt", [_corrupt_tofu, _corrupt_muse])
def test_a_corrupt_parquet_shard_is_one_line_of_bad_input(tmp_path, corrupt):
    from mpu_cli.data.muse import load_muse
    from mpu_cli.data.validate import DataError

    kind, name = corrupt(tmp_path)
    with pytest.raises(DataError, match=r"\.parquet: not a readable parquet file") as e:
        load_split(str(tmp_path), name) if kind == "tofu" else load_muse(str(tmp_path), *name.split("/"))
    assert "\n" not in str(e.value)


def test_a_tofu_folder_without_public_text_is_bad_input(tmp_path):
    """locuslab/TOFU's layout has no public_text: the embedded base cannot be built from that folder."""
    from mpu_cli.data.validate import DataError

    _write_jsonl_folder(tmp_path / "tofu", {"full": [{"question": "q", "answer": "a"}]})
    with pytest.raises(DataError, match="no public text for data source"):
        load_public_text(str(tmp_path / "tofu"))
