"""Label-preserving text edits: the augmentation step before adaptation, for text.

A support sentence's augmented copy drops words (`token_dropout`), deletes one
contiguous span (`span_deletion`), swaps neighbouring words (`word_swaps`) and replaces
words by synonyms (`synonyms`), in that order, as in EDA (Wei & Zou 2019) with the
backbone's own vocabulary for its thesaurus: a word's synonyms are its nearest words in
the frozen encoder's input-embedding table (`models.synonyms`). Every copy keeps at
least one of the sentence's words (or a synonym of it) and adds no other word, so its
intent is the sentence's own. Copies are
a pure function of the generator they are drawn from, which the inner loop seeds with
(task seed, step): the same task gives the same copies in meta-training, evaluation
and serving.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

MAX_FRACTION = 0.5  # token_dropout, span_deletion and synonyms: at most half the words
MAX_SWAPS = 8
Neighbours = Callable[[str], Sequence[str]]  # a word -> its synonyms (none: the word is kept)


@dataclass(frozen=True)
class TextEdits:
    """Which edits an augmented copy gets (all off by default)."""

    token_dropout: float = 0.0  # each word dropped with this probability, 0 to 0.5
    span_deletion: float = 0.0  # one span of up to this fraction of the words deleted, 0 to 0.5
    word_swaps: int = 0  # neighbouring words swapped this many times, 0 to 8
    synonyms: float = 0.0  # each word replaced with this probability by one of its synonyms, 0 to 0.5

    def __post_init__(self) -> None:
        for name in ("token_dropout", "span_deletion", "synonyms"):
            value = getattr(self, name)
            if not 0.0 <= value <= MAX_FRACTION:
                raise ValueError(f"{name} must be in [0, {MAX_FRACTION}], got {value}")
        if not 0 <= self.word_swaps <= MAX_SWAPS:
            raise ValueError(f"word_swaps must be in [0, {MAX_SWAPS}], got {self.word_swaps}")

    @property
    def enabled(self) -> bool:
        return bool(self.token_dropout or self.span_deletion or self.word_swaps or self.synonyms)


def edit(text: str, edits: TextEdits, rng, neighbours: Neighbours | None = None) -> str:
    """One augmented copy of `text` (words split on whitespace, joined by one space);
    `rng` is a numpy Generator (core stays free of numpy: only its methods are used);
    `neighbours(word)`: its synonyms, which `edits.synonyms` needs."""
    if edits.synonyms and neighbours is None:
        raise ValueError("augment.synonyms needs a vocabulary to draw synonyms from (a text encoder's)")
    words = text.split()
    if len(words) < 2:
        return text
    if edits.token_dropout:
        kept = [w for w in words if rng.random() >= edits.token_dropout]
        words = kept or [words[rng.integers(len(words))]]
    longest = int(edits.span_deletion * len(words))  # at most half the words: one is always left
    if longest:
        size = int(rng.integers(1, longest + 1))
        start = int(rng.integers(len(words) - size + 1))
        words = words[:start] + words[start + size :]
    for _ in range(edits.word_swaps if len(words) > 1 else 0):
        i = int(rng.integers(len(words) - 1))
        words[i], words[i + 1] = words[i + 1], words[i]
    if edits.synonyms:
        words = [_synonym(w, neighbours, rng) if rng.random() < edits.synonyms else w for w in words]
    return " ".join(words)


def _synonym(word: str, neighbours: Neighbours, rng) -> str:
    near = neighbours(word)
    return near[int(rng.integers(len(near)))] if near else word


def edited_copies(texts: list[str], views: int, edits: TextEdits, rng, neighbours: Neighbours | None = None):
    """`views` copies of every text, copy v of text i at index v·len(texts) + i (the
    layout of the images' warped views); `neighbours` as in `edit`."""
    return [edit(text, edits, rng, neighbours) for _ in range(views) for text in texts]
