"""SQuAD v1.1 answer scoring: exact match and token F1 after the standard normalisation
(lower case, no punctuation, no articles a/an/the, single spaces), each the maximum
over the reference answers (Rajpurkar et al. 2016; the official evaluate-v1.1 script).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalise_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised reference, else 0.0."""
    return float(any(normalise_answer(prediction) == normalise_answer(r) for r in references))


def _f1(prediction: str, reference: str) -> float:
    pred, ref = normalise_answer(prediction).split(), normalise_answer(reference).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, references: Sequence[str]) -> float:
    """Token-overlap F1 against the best-matching reference."""
    return max(_f1(prediction, r) for r in references)


def squad_scores(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean EM and F1, in percent, over paired predictions and reference lists."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"need equally many predictions and references, got {len(predictions)} and {len(references)}")
    n = len(predictions)
    return {
        "exact_match": 100 * sum(exact_match(p, r) for p, r in zip(predictions, references, strict=True)) / n,
        "f1": 100 * sum(f1_score(p, r) for p, r in zip(predictions, references, strict=True)) / n,
    }
