"""MUSE, unit layer: the loader on muse-bench's layout and its one-line errors, the raw-text encodings, the
few-shot prompt as open-unlearning assembles it, ROUGE-L F1 by hand, the privleak reference, the configs.
mpu-eval's own refusals start processes: tests/integration/test_muse_eval_processes.py."""
from __future__ import annotations

import copy
import json
import math

import pytest

from mpu_cli.config import ConfigError
from mpu_cli.data.formatting import IGNORE, ChatFormat
from mpu_cli.data.muse import LAYOUT, load_muse
from mpu_cli.data.text import (
    corpus_chunks,
    encode_completion,
    encode_document,
    encode_few_shot_prompt,
    special_ids,
)
from mpu_cli.data.validate import DataError
from mpu_cli.evals import muse
from mpu_cli.models.tiny import load_embedded_tokenizer
from mpu_cli.run.checks import check_data_config


@pytest.fixture(scope="module")
def tok():
    return load_embedded_tokenizer()


def write_layout(root, rows_per_split: int = 2, skip: tuple[str, str] | None = None):
    for config, splits in LAYOUT.items():
        for split, fields in splits.items():
            (root / config).mkdir(parents=True, exist_ok=True)
            if (config, split) == skip:
                continue
            rows = [{f: f"{f} {split} {i}" for f in fields} for i in range(rows_per_split)]
            (root / config / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


# ---- the loader ---------------------------------------------------------------------------------------------

def test_local_folder_in_muse_bench_layout(tmp_path):
    root = write_layout(tmp_path / "MUSE-News")
    assert load_muse(str(root), "knowmem", "forget_qa")[1] == {"question": "question forget_qa 1",
                                                               "answer": "answer forget_qa 1"}
    assert [r["text"] for r in load_muse(str(root), "raw", "retain1")] == ["text retain1 0", "text retain1 1"]


def test_hub_parquet_shards_are_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = write_layout(tmp_path / "MUSE-Books", skip=("verbmem", "forget"))
    pq.write_table(pa.table({"prompt": ["a", "b"], "gt": ["c", "d"]}), root / "verbmem" / "forget-00000-of-00001.parquet")
    assert load_muse(str(root), "verbmem", "forget") == [{"prompt": "a", "gt": "c"}, {"prompt": "b", "gt": "d"}]


@pytest.mark.parametrize("problem, expected", [
    ("missing split", "MUSE split 'knowmem/retain_qa' not found in data folder"),
    ("missing field", "knowmem/retain_qa row 1: the question 'q' has no answer (missing field 'answer')"),
    ("empty split", "the config 'knowmem/retain_qa' is empty"),
    ("not json", "knowmem/retain_qa.jsonl:1: not valid JSON"),
])
def test_bad_layouts_give_one_line(tmp_path, problem, expected):
    root = write_layout(tmp_path / "bad", skip=("knowmem", "retain_qa") if problem == "missing split" else None)
    f = root / "knowmem" / "retain_qa.jsonl"
    if problem == "missing field":
        f.write_text(json.dumps({"question": "q"}) + "\n")
    elif problem == "empty split":
        f.write_text("")
    elif problem == "not json":
        f.write_text("{question: q}\n")
    with pytest.raises(DataError) as e:
        load_muse(str(root), "knowmem", "retain_qa")
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_a_file_or_a_missing_path_is_refused(tmp_path):
    (tmp_path / "x.json").write_text("[]")
    with pytest.raises(DataError, match="is a file, not a folder laid out like muse-bench/MUSE-News"):
        load_muse(str(tmp_path / "x.json"), "raw", "forget")
    with pytest.raises(DataError, match="not found: expected 'embedded', an existing local folder"):
        load_muse(str(tmp_path / "nowhere"), "raw", "forget")


def test_data_configs_are_checked():
    from omegaconf import OmegaConf

    check_data_config(OmegaConf.create({"benchmark": "muse", "split": "forget", "retain_split": "retain2"}))
    for bad, match in ((({"benchmark": "muse", "split": "forget05"}), "data.split='forget05' is not one of"),
                       ({"benchmark": "muse", "split": "forget", "retain_split": "retain9"}, "data.retain_split="),
                       ({"benchmark": "tofu", "split": "forget10", "retain_split": "retain1"}, "data.retain_split="),
                       ({"benchmark": "mus", "split": "forget"}, "did you mean 'muse'")):
        with pytest.raises(ConfigError, match=match):
            check_data_config(OmegaConf.create(bad))


# ---- encodings ----------------------------------------------------------------------------------------------

def test_corpus_chunks_cover_every_token_once(tok):
    docs = ["The flood reached Carrowmere in 2011.", "Mira Holt opened the bridge at Umberlake."]
    chunks = corpus_chunks(tok, docs, max_length=8)
    stream = tok("\n\n".join(docs), add_special_tokens=False)["input_ids"]
    assert special_ids(tok) == ([tok.bos_token_id], [])  # the tokenizer's own rule, as Llama's: BOS first
    assert all(len(c["input_ids"]) <= 8 and c["input_ids"][0] == tok.bos_token_id for c in chunks)
    assert sum((c["input_ids"][1:] for c in chunks), []) == stream
    assert all(c["labels"] == [IGNORE] + c["input_ids"][1:] for c in chunks)


def test_completion_labels_only_the_continuation(tok):
    e = encode_completion(tok, "The bridge at Umberlake", "was opened by Mira Holt.", 64)
    n_prefix = 1 + len(tok("The bridge at Umberlake", add_special_tokens=False)["input_ids"])
    assert e["labels"][:n_prefix] == [IGNORE] * n_prefix and IGNORE not in e["labels"][n_prefix:]
    assert tok.decode(e["input_ids"][n_prefix:]) == " was opened by Mira Holt."
    d = encode_document(tok, "Mira Holt opened the bridge.", 3)  # BOS + 3 text tokens
    assert d["input_ids"] == tok("Mira Holt opened the bridge.")["input_ids"][:4]
    assert d["labels"] == [IGNORE] + d["input_ids"][1:]


# Fixed strings: a verbmem item, a knowmem item with one few-shot example, a privleak document.
PROMPT, GT = "The flood at Carrowmere", "reached the old theaters in 2011."
LONG = " ".join(["The bridge at Umberlake was opened by Mira Holt in 2011."] * 300)  # > 2048 tokens
QA_DATA = {"verbmem": [{"prompt": PROMPT, "gt": GT}, {"prompt": PROMPT, "gt": LONG}],
           "forget_qa": [{"question": "Who opened the bridge?", "answer": "Mira Holt"}],
           "forget_qa_icl": [{"question": "In which year?", "answer": "2011"}],
           "retain_qa": [{"question": LONG, "answer": "Umberlake"}],
           "retain_qa_icl": [{"question": "Who won?", "answer": "Idris Thorne"}],
           "privleak_forget": [{"text": "Mira Holt opened the bridge."}, {"text": LONG}],
           "privleak_holdout": [{"text": "A library opened in Velmora."}]}


@pytest.mark.parametrize("positions", [None, 256])
def test_evaluated_ids_are_the_tokenizers_cut_where_open_unlearning_cuts(tok, positions):
    """What the evaluation reads equals tokenizer(text, add_special_tokens=True) cut as open-unlearning's MUSE
    datasets cut it: 2048 tokens after the prefix (verbmem, privleak), 512 tokens for a few-shot prompt; and at
    the model's positions. One BOS each: the tokenizer's, none by hand."""
    def ids(text: str) -> list[int]:
        return tok(text, add_special_tokens=True)["input_ids"]

    cut = (lambda x: x) if positions is None else (lambda x: x[:positions])
    # a 512-token few-shot prompt leaves no room for its answer in 256 positions (refused, see below)
    data = QA_DATA if positions is None else dict(QA_DATA, retain_qa=[{"question": "Where?", "answer": "x"}])
    enc = muse.inputs(tok, data, ChatFormat(), muse.EvalConfig(), positions)
    assert enc["verbmem"] == [ids(PROMPT)] * 2 and ids(PROMPT)[:2] == [tok.bos_token_id, ids(PROMPT)[1]]
    assert ids(PROMPT).count(tok.bos_token_id) == 1
    n_prefix = len(ids(PROMPT))
    assert enc["extraction"][0]["input_ids"] == ids(PROMPT + " " + GT)
    assert enc["extraction"][1]["input_ids"] == cut(ids(PROMPT + " " + LONG)[: n_prefix + 2048])
    assert enc["extraction"][1]["labels"][:n_prefix] == [IGNORE] * n_prefix
    assert enc["privleak_forget"][0]["input_ids"] == ids("Mira Holt opened the bridge.")
    assert enc["privleak_forget"][1]["input_ids"] == cut(ids(LONG)[: 1 + 2048])
    assert len(ids(LONG)) > 2049 and len(enc["privleak_forget"][1]["input_ids"]) == (positions or 2049)
    assert enc["privleak_forget"][1]["labels"] == [IGNORE] + enc["privleak_forget"][1]["input_ids"][1:]
    assert enc["forget_knowmem"] == [ids("Question: In which year?\nAnswer: 2011\n\n"
                                         "Question: Who opened the bridge?\nAnswer: ")]
    if positions is None:
        assert enc["retain_knowmem"] == [ids(f"Question: Who won?\nAnswer: Idris Thorne\n\nQuestion: {LONG}"
                                             "\nAnswer: ")[:512]]


def test_a_prompt_too_long_for_the_model_is_refused_before_it_runs(tok):
    """A 200 000-character prompt: one line naming the row, its length and the model's positions; no forward."""
    from mpu_cli.models.tiny import init_tiny_llama

    model = init_tiny_llama(tok, seed=0)
    model.forward = None  # the model must not be run: calling it would fail differently
    data = dict(QA_DATA, verbmem=[{"prompt": PROMPT, "gt": GT}, {"prompt": "x" * 200_000, "gt": GT}])
    with pytest.raises(DataError) as e:
        muse.evaluate(model, tok, data, ChatFormat(), muse.EvalConfig(metrics=muse.QUICK_METRICS), progress=False)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("MUSE verbmem/forget row 2: its prompt is ")
    assert msg.endswith("exceeds the model's 256 positions; accepted: prompts of at most 128 tokens")


ICL = [("Who opened the bridge?", "Mira Holt"), ("In which year?", "2011")]


def test_few_shot_prompt_in_the_tag_format(tok):
    """open-unlearning's MUSE template: Question/Answer tags, a blank line after each example, no system prompt;
    the tokenizer's BOS first (its tokenizer call with special tokens adds it)."""
    fmt = ChatFormat(system_prompt="You are a helpful assistant.")
    expected = ("Question: Who opened the bridge?\nAnswer: Mira Holt\n\n"
                "Question: In which year?\nAnswer: 2011\n\nQuestion: Where was the flood?\nAnswer: ")
    ids = encode_few_shot_prompt(tok, ICL, "Where was the flood?", fmt)
    assert ids == [tok.bos_token_id] + tok(expected, add_special_tokens=False)["input_ids"]
    assert encode_few_shot_prompt(tok, ICL, "Where was the flood?", fmt, max_tokens=5) == ids[:5]


def test_few_shot_prompt_with_a_chat_template(tok):
    chat = copy.deepcopy(tok)
    chat.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
                          "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    fmt = ChatFormat(system_prompt="Be brief.")
    expected = ("<|system|>Be brief.</s><|user|>Who opened the bridge?</s><|assistant|>Mira Holt</s>"
                "<|user|>In which year?</s><|assistant|>2011</s><|user|>Where was the flood?</s><|assistant|>")
    ids = encode_few_shot_prompt(chat, ICL, "Where was the flood?", fmt, chat=True)
    assert ids == chat(expected, add_special_tokens=False)["input_ids"]


# ---- metrics ------------------------------------------------------------------------------------------------

def test_rouge_l_f1_by_hand():
    # truth 5 tokens, generation 5 tokens, longest common subsequence "the bridge in spring" = 4: P = R = F1 = 0.8
    e = muse._rouge_entry([("prompt", "the bridge opened in spring")], ["the bridge closed in spring"])
    assert e["agg_value"] == pytest.approx(0.8)
    # LCS "mira holt" = 2 of truth 2 and generation 4: P = 0.5, R = 1, F1 = 2/3; the mean over items
    e = muse._rouge_entry([("q1", "Mira Holt"), ("q2", "2011")], ["It was Mira Holt", "in 1999"])
    assert e["value_by_index"]["0"]["rougeL_f1"] == pytest.approx(2 / 3)
    assert e["value_by_index"]["1"]["rougeL_f1"] == 0.0
    assert e["agg_value"] == pytest.approx(1 / 3)
    assert e["value_by_index"]["0"]["generation"] == "It was Mira Holt"


def test_retain_reference_from_a_muse_eval(tmp_path):
    rouge = {"forget_verbmem_ROUGE": {"agg_value": 0.3, "value_by_index": {}}}
    (tmp_path / "MUSE_EVAL.json").write_text(json.dumps(rouge | {"mia_min_k": {"agg_value": 0.62}}))
    assert muse.load_retain_reference(tmp_path) == {"mia_auc": 0.62}
    (tmp_path / "MUSE_EVAL.json").write_text(json.dumps(rouge))
    with pytest.raises(ValueError, match="no finite mia_min_k.agg_value"):
        muse.load_retain_reference(tmp_path / "MUSE_EVAL.json")


def test_a_tofu_retain_log_is_not_a_privleak_reference(tmp_path):
    """TOFU's evaluation has a mia_min_k too (over QA pairs): refused in one line, not taken for MUSE's."""
    tofu_eval = {"forget_Q_A_Prob": {"agg_value": 0.1}, "forget_truth_ratio": {"agg_value": 0.6},
                 "mia_min_k": {"agg_value": 0.62}}
    (tmp_path / "TOFU_EVAL.json").write_text(json.dumps(tofu_eval))
    with pytest.raises(ValueError) as e:
        muse.load_retain_reference(tmp_path / "TOFU_EVAL.json")
    assert "\n" not in str(e.value) and "is not a MUSE evaluation" in str(e.value)
    assert "it holds forget_Q_A_Prob, forget_truth_ratio, mia_min_k" in str(e.value)


def test_evaluate_gives_every_metric_in_open_unlearning_shapes(tok, tmp_path):
    """A random tiny Llama: the shapes, names and ranges, and privleak from the min-k AUC and its reference."""
    from mpu_cli.models.tiny import init_tiny_llama

    model = init_tiny_llama(tok, seed=0)
    data = {"verbmem": [{"prompt": "The flood at Carrowmere", "gt": "reached the old theaters in 2011."}],
            "forget_qa": [{"question": "Who opened the bridge?", "answer": "Mira Holt"}],
            "forget_qa_icl": [{"question": "In which year?", "answer": "2011"}],
            "retain_qa": [{"question": "Where was the festival?", "answer": "Umberlake"}],
            "retain_qa_icl": [{"question": "Who won?", "answer": "Idris Thorne"}],
            "privleak_forget": [{"text": "Mira Holt opened the bridge."}, {"text": "The flood came in 2011."}],
            "privleak_holdout": [{"text": "A library opened in Velmora."}, {"text": "Prices rose in Gralland."}]}
    cfg = muse.EvalConfig(batch_size=2, max_new_tokens=4)
    res = muse.evaluate(model, tok, data, ChatFormat(max_length=32), cfg, retain_reference={"mia_auc": 0.25},
                        progress=False)
    assert list(res) == list(muse.ALL_METRICS)
    for m in ("forget_verbmem_ROUGE", "forget_knowmem_ROUGE", "retain_knowmem_ROUGE", "extraction_strength"):
        assert 0.0 <= res[m]["agg_value"] <= 1.0 and set(res[m]["value_by_index"]) == {"0"}
    auc = res["mia_min_k"]["agg_value"]
    assert set(res["mia_min_k"]["forget"]["value_by_index"]) == {"0", "1"}
    assert res["privleak"]["agg_value"] == pytest.approx(((1 - auc) - 0.75) / 0.75 * 100, rel=1e-6)
    muse.write_eval(tmp_path, res)
    summary = json.loads((tmp_path / "MUSE_SUMMARY.json").read_text())
    assert set(summary) == set(muse.ALL_METRICS) and all(math.isfinite(v) for v in summary.values())
    quick = muse.evaluate(model, tok, data, ChatFormat(max_length=32),
                          muse.EvalConfig(batch_size=2, max_new_tokens=4, metrics=muse.QUICK_METRICS), progress=False)
    assert list(quick) == list(muse.QUICK_METRICS)
