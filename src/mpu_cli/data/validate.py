"""Row checks for TOFU-shaped data: every row a loader returns has the fields its config needs, as
non-empty strings; no config is empty; ids, where rows carry one, are unique. A failure is a `DataError` (a
ValueError) with one line naming the file / config, the row and the problem."""
from __future__ import annotations


class DataError(ValueError):
    """Malformed input data: the CLI prints the one-line message and exits with code 2."""


ID_FIELDS = ("id", "idx", "index", "question_id")


def required_fields(config: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(string fields, list-of-string fields) every row of `config` must have."""
    if config in ("real_authors_perturbed", "world_facts_perturbed"):
        return ("question", "answer"), ("perturbed_answer",)
    if config.endswith("_perturbed"):
        return ("question", "answer", "paraphrased_answer"), ("perturbed_answer",)
    return ("question", "answer"), ()


def _short(text, n: int = 60) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def validate_rows(config: str, rows: list, where: str,
                  fields: tuple[tuple[str, ...], tuple[str, ...]] | None = None) -> list[dict]:
    """`rows` unchanged when valid; DataError otherwise. `where`: the file or data source, for the message.
    `fields`: (string fields, list fields) when they are not TOFU's for `config` (e.g. MUSE's)."""
    strings, lists = fields or required_fields(config)
    if not rows:
        what = "forget set" if config.startswith("forget") else "config"
        raise DataError(f"{where}: the {what} {config!r} is empty; accepted: at least one row with "
                        f"{', '.join(strings)}")
    seen: dict = {}
    for i, row in enumerate(rows):
        at = f"{where}: {config} row {i + 1}"
        if not isinstance(row, dict):
            raise DataError(f"{at} is a {type(row).__name__}, expected a JSON object")
        for key in strings:
            value = row.get(key)
            if value is None or (isinstance(value, str) and not value.strip()):
                if key == "answer" and isinstance(row.get("question"), str) and row["question"].strip():
                    raise DataError(f"{at}: the question {_short(row['question'])!r} has no answer "
                                    f"({'missing' if key not in row else 'empty'} field 'answer')")
                raise DataError(f"{at}: {'missing' if key not in row else 'empty'} field {key!r}; every row needs "
                                f"non-empty {', '.join(repr(k) for k in strings)}")
            if not isinstance(value, str):
                raise DataError(f"{at}: field {key!r} is a {type(value).__name__}, expected a string")
        for key in lists:
            value = row.get(key)
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
                raise DataError(f"{at}: field {key!r} must be a non-empty list of non-empty strings, "
                                f"got {_short(repr(value))}")
        for key in ID_FIELDS:
            if key in row:
                ident = row[key]
                if (key, repr(ident)) in seen:
                    raise DataError(f"{at}: duplicate {key} {ident!r} (also row {seen[(key, repr(ident))] + 1}); "
                                    f"accepted: unique {key} values")
                seen[(key, repr(ident))] = i
    return rows
