"""Synonyms from the backbone's own vocabulary (`inner.augment.synonyms`): a word's nearest
whole words by cosine similarity in the frozen encoder's input-embedding table, EDA's
synonym replacement (Wei & Zou 2019) with that table for its thesaurus.

The words are the vocabulary's entries of at least `MIN_LETTERS` lowercase ASCII letters (a
WordPiece vocabulary's whole words, as all-MiniLM-L6-v2's; subword pieces and shorter
words are never drawn or replaced); a text's word is looked up lowercased, without
punctuation, and one not in the vocabulary has no synonyms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NEIGHBOURS = 3  # synonyms per word: its nearest words in the table (the nearest are mostly its own forms)
MIN_LETTERS = 3


class EmbeddingNeighbours:
    """`neighbours(word)`: the `k` words nearest to `word` in `table` (V, D), nearest first;
    () for a word outside the vocabulary's words. Computed once per word."""

    def __init__(self, tokenizer, table: torch.Tensor, k: int = NEIGHBOURS) -> None:
        vocab = tokenizer.convert_ids_to_tokens(list(range(table.shape[0])))
        rows = [i for i, t in enumerate(vocab) if len(t) >= MIN_LETTERS and t.isascii() and t.isalpha() and t.islower()]
        self.words = [vocab[i] for i in rows]
        self.index = {word: j for j, word in enumerate(self.words)}
        self.table = F.normalize(table.detach().float().cpu()[rows], dim=-1)
        self.k = k
        self.cache: dict[str, tuple[str, ...]] = {}

    def __call__(self, word: str) -> tuple[str, ...]:
        key = word.lower().strip(".,;:!?\"'()")
        if key not in self.cache:
            j = self.index.get(key)
            if j is None:
                self.cache[key] = ()
            else:
                similarity = self.table @ self.table[j]
                similarity[j] = -2.0  # not itself
                self.cache[key] = tuple(self.words[i] for i in similarity.topk(self.k).indices.tolist())
        return self.cache[key]
