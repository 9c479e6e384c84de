"""The shipped MUSE-shaped corpus (src/mpu_cli/data/embedded_muse) and its generator."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import MUSE_LAYOUT, SHIPPED_MUSE, muse_rows, muse_texts

REPO = Path(__file__).resolve().parents[2]

ARTICLES = {"forget": 16, "retain1": 32, "retain2": 16, "holdout": 16}
QUIZ_HEADER = "The news quiz of the week: how much do you remember?"


def _articles(split: str) -> list[str]:
    texts = muse_texts(SHIPPED_MUSE, split)
    assert not any(t.startswith(QUIZ_HEADER) for t in texts[:ARTICLES[split]])
    return texts[:ARTICLES[split]]


def _quizzes(split: str) -> list[str]:
    quizzes = muse_texts(SHIPPED_MUSE, split)[ARTICLES[split]:]
    assert all(t.startswith(QUIZ_HEADER) for t in quizzes)
    return quizzes


def _prose(article: str) -> str:
    """The article after its two-question box."""
    return article.split("\n\n", 2)[2]


@pytest.mark.parametrize("rel", list(MUSE_LAYOUT))
def test_row_counts_and_fields(rel):
    n, fields = MUSE_LAYOUT[rel]
    rows = muse_rows(SHIPPED_MUSE, rel)
    assert len(rows) == n
    for row in rows:
        assert tuple(row) == fields
        assert all(isinstance(row[f], str) and row[f].strip() for f in fields)


def test_privleak_is_the_raw_articles():
    assert [r["text"] for r in muse_rows(SHIPPED_MUSE, "privleak/forget.jsonl")] == _articles("forget")
    assert [r["text"] for r in muse_rows(SHIPPED_MUSE, "privleak/retain.jsonl")] == _articles("retain2")
    assert [r["text"] for r in muse_rows(SHIPPED_MUSE, "privleak/holdout.jsonl")] == _articles("holdout")


def test_verbmem_opens_the_lead_paragraph():
    for text, row in zip(_articles("forget"), muse_rows(SHIPPED_MUSE, "verbmem/forget.jsonl"), strict=True):
        assert len(row["prompt"].split()) == 30 and len(row["gt"].split()) == 60
        assert _prose(text).startswith(row["prompt"] + " " + row["gt"])


@pytest.mark.parametrize(("qa_file", "split"), [("forget_qa", "forget"), ("retain_qa", "retain2")])
def test_knowmem_questions_open_their_article_and_fill_its_quizzes(qa_file, split):
    articles, quizzes = _articles(split), _quizzes(split)
    for i, row in enumerate(muse_rows(SHIPPED_MUSE, f"knowmem/{qa_file}.jsonl")):
        pair = f"Question: {row['question']}\nAnswer: {row['answer']}"
        article = articles[i // 2]
        assert article.count(pair) == 1 and pair not in _prose(article)
        assert row["answer"] in _prose(article)  # the box restates a fact of the prose
        assert row["answer"].isdigit()  # tokenized alike after "Answer:" and after "Answer: "
        # every quiz round asks it once, after questions of other articles
        assert sum(q.count(pair) for q in quizzes) == 3


def test_icl_examples_are_retain1_questions_nobody_is_asked():
    retain1 = "\n".join(muse_texts(SHIPPED_MUSE, "retain1"))
    evaluated = "\n".join(t for s in ("forget", "retain2", "holdout") for t in muse_texts(SHIPPED_MUSE, s))
    asked = {r["question"] for rel in ("knowmem/forget_qa.jsonl", "knowmem/retain_qa.jsonl")
             for r in muse_rows(SHIPPED_MUSE, rel)}
    icl = muse_rows(SHIPPED_MUSE, "knowmem/forget_qa_icl.jsonl") + muse_rows(SHIPPED_MUSE, "knowmem/retain_qa_icl.jsonl")
    assert len({r["question"] for r in icl}) == len(icl)
    for row in icl:
        assert f"Question: {row['question']}\nAnswer: {row['answer']}" in retain1
        assert row["question"] not in asked and row["question"] not in evaluated


