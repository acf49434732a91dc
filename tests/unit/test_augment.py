"""Text edits (`inner.augment`): deterministic from their seed, label-preserving by
construction (a copy keeps at least one of the sentence's words and adds none but a
replaced word's synonyms), and the copies' layout the views loss and the head fit read."""

from collections import Counter

import numpy as np
import pytest

from metaray.config import ModelConfig
from metaray.core.augment import TextEdits, edit, edited_copies
from metaray.data import DataRegistry
from metaray.models import PromptedEncoder

TEXTS = [
    "I still have not received my new card, I ordered it over a week ago",
    "why was my top up declined",
    "how do I change my PIN",
    "refund",
]
EVERY_EDIT = TextEdits(token_dropout=0.2, span_deletion=0.3, word_swaps=2)


@pytest.mark.parametrize(
    "edits",
    [TextEdits(token_dropout=0.5), TextEdits(span_deletion=0.5), TextEdits(word_swaps=8), EVERY_EDIT],
    ids=["dropout", "span", "swaps", "all"],
)
def test_a_copy_keeps_some_of_its_words_and_adds_none(edits):
    rng = np.random.default_rng(0)
    for text in TEXTS * 20:
        words, copy = Counter(text.split()), Counter(edit(text, edits, rng).split())
        assert copy and not copy - words  # a non-empty sub-multiset of the sentence's words
    if edits.word_swaps and not (edits.token_dropout or edits.span_deletion):
        assert Counter(edit(TEXTS[0], edits, rng).split()) == Counter(TEXTS[0].split())  # swaps only reorder


def test_copies_depend_only_on_the_seed_and_differ_between_seeds():
    first = edited_copies(TEXTS, 3, EVERY_EDIT, np.random.default_rng([7, 0]))
    assert first == edited_copies(TEXTS, 3, EVERY_EDIT, np.random.default_rng([7, 0]))
    assert first != edited_copies(TEXTS, 3, EVERY_EDIT, np.random.default_rng([7, 1]))
    # copy v of text i at v·len(texts) + i: a one-word text is its own copy
    assert len(first) == 3 * len(TEXTS) and first[3] == first[7] == first[11] == "refund"
    assert any(copy != TEXTS[0] for copy in first[0::4])


def test_no_edit_leaves_the_text_as_it_is():
    assert not TextEdits().enabled
    assert edit(TEXTS[0], TextEdits(), np.random.default_rng(0)) == TEXTS[0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"token_dropout": 0.6}, r"token_dropout must be in \[0, 0.5\], got 0.6"),
        ({"span_deletion": -0.1}, r"span_deletion must be in \[0, 0.5\], got -0.1"),
        ({"word_swaps": 9}, r"word_swaps must be in \[0, 8\], got 9"),
    ],
)
def test_settings_out_of_range_are_refused_with_the_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TextEdits(**kwargs)


def test_synonyms_replace_words_by_their_neighbours_only_and_need_a_vocabulary():
    near = {"card,": ("cards",), "week": ("weeks", "month"), "change": ("changing",)}
    edits, rng = TextEdits(synonyms=0.5), np.random.default_rng(0)
    replaced = 0
    for text in TEXTS * 20:
        words = text.split()
        copy = edit(text, edits, rng, lambda w: near.get(w, ())).split()
        assert len(copy) == len(words) and all(c == w or c in near[w] for w, c in zip(words, copy, strict=True))
        replaced += copy != words
    assert replaced > 10
    with pytest.raises(ValueError, match="synonyms needs a vocabulary"):
        edit(TEXTS[0], edits, rng)
    # with synonyms off, the other edits draw from the generator exactly as before
    seeded = [edited_copies(TEXTS, 2, EVERY_EDIT, np.random.default_rng(3), n) for n in (None, near.get)]
    assert seeded[0] == seeded[1]


def test_the_encoders_synonyms_are_its_nearest_words_and_keep_each_text_nearest_its_own(data_dir):
    """Synonyms from all-MiniLM-L6-v2's own input embeddings; on fixed BANKING77 texts of
    ten intents, every copy with a third of its words replaced is still nearest its own
    text among the ten (the copy keeps the text's intent)."""
    encoder = PromptedEncoder(ModelConfig())
    near = encoder.neighbours
    assert near("card") == near("Card,") and near("card")[0] == "cards" and len(near("card")) == 3
    assert "card" not in near("card") and near("xqzv") == () and near("my") == ()  # unknown, too short
    corpus = DataRegistry(data_dir).corpus("banking77")
    texts = [corpus.inputs[rows[0]] for rows in corpus.indices_by_class()[:10]]
    edits = TextEdits(synonyms=0.33)
    copies = encoder.copies(texts, 3, edits, np.random.default_rng(0))
    assert copies == encoder.copies(texts, 3, edits, np.random.default_rng(0)) and copies != texts * 3
    similarity = encoder.encode(copies, None) @ encoder.encode(texts, None).T
    assert similarity.argmax(-1).tolist() == list(range(10)) * 3
