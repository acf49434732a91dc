"""Label-preserving text edits: the augmentation step before adaptation, for text.

A support sentence's augmented copy drops words (`token_dropout`), deletes one
contiguous span (`span_deletion`) and swaps neighbouring words (`word_swaps`), in that
order, as in EDA (Wei & Zou 2019) without its thesaurus. Every copy keeps at least one
of the sentence's words and adds none, so its intent is the sentence's own. Copies are
a pure function of the generator they are drawn from, which the inner loop seeds with
(task seed, step): the same task gives the same copies in meta-training, evaluation
and serving.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_FRACTION = 0.5  # token_dropout and span_deletion: at most half the words
MAX_SWAPS = 8


@dataclass(frozen=True)
class TextEdits:
    """Which edits an augmented copy gets (all off by default)."""

    token_dropout: float = 0.0  # each word dropped with this probability, 0 to 0.5
    span_deletion: float = 0.0  # one span of up to this fraction of the words deleted, 0 to 0.5
    word_swaps: int = 0  # neighbouring words swapped this many times, 0 to 8

    def __post_init__(self) -> None:
        for name in ("token_dropout", "span_deletion"):
            value = getattr(self, name)
            if not 0.0 <= value <= MAX_FRACTION:
                raise ValueError(f"{name} must be in [0, {MAX_FRACTION}], got {value}")
        if not 0 <= self.word_swaps <= MAX_SWAPS:
            raise ValueError(f"word_swaps must be in [0, {MAX_SWAPS}], got {self.word_swaps}")

    @property
    def enabled(self) -> bool:
        return bool(self.token_dropout or self.span_deletion or self.word_swaps)


def edit(text: str, edits: TextEdits, rng) -> str:
    """One augmented copy of `text` (words split on whitespace, joined by one space);
    `rng` is a numpy Generator (core stays free of numpy: only its methods are used)."""
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
    return " ".join(words)


def edited_copies(texts: list[str], views: int, edits: TextEdits, rng) -> list[str]:
    """`views` copies of every text, copy v of text i at index v·len(texts) + i (the
    layout of the images' warped views)."""
    return [edit(text, edits, rng) for _ in range(views) for text in texts]
