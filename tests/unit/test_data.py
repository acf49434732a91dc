"""Episodes are deterministic from (seed, family, index); splits never share a class."""

import numpy as np
import pytest

from metaray.config import ConfigError, load_config
from metaray.data import DataError, DataRegistry, TaskSampler, TaskSpec, check_feasible, sample_episode


@pytest.fixture(scope="module")
def sources(data_dir):
    return DataRegistry(
        data_dir, {"clinc150": {"val_domains": ["work"], "test_domains": ["travel", "kitchen_and_dining"]}}
    )


def load_corpus(name, registry):
    return registry.corpus(name)


def test_corpora_have_the_published_sizes(sources):
    assert len(load_corpus("banking77", sources).inputs) == 3080
    assert len(load_corpus("banking77/train", sources).inputs) == 10003
    assert len(load_corpus("snips", sources).label_names) == 7
    sizes = [len(load_corpus(f"clinc150/{s}", sources).label_names) for s in ("train", "val", "test")]
    assert sizes == [105, 15, 30] and sum(sizes) == 150


def test_clinc150_splits_are_class_disjoint(sources):
    names = [set(load_corpus(f"clinc150/{s}", sources).label_names) for s in ("train", "val", "test")]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])


def test_episodes_are_deterministic(sources):
    corpus = load_corpus("clinc150/train", sources)
    spec = TaskSpec("clinc150/train", 17, 5, 3, 4, seed=3)
    a, b = sample_episode(spec, corpus), sample_episode(spec, corpus)
    assert a.support_inputs == b.support_inputs and a.query_inputs == b.query_inputs
    assert np.array_equal(a.query_labels, b.query_labels)
    other = sample_episode(TaskSpec("clinc150/train", 18, 5, 3, 4, seed=3), corpus)
    assert other.support_inputs != a.support_inputs
    assert len(a.support_inputs) == 15 and len(a.query_inputs) == 20 and a.n_classes == 5
    assert not set(a.support_inputs) & set(a.query_inputs)


def test_full_label_protocol_uses_train_for_support_and_test_for_query(sources):
    spec = TaskSpec("banking77", 0, 0, 5, 0, 0, "banking77/train")
    episode = sample_episode(spec, load_corpus("banking77", sources), load_corpus("banking77/train", sources))
    assert episode.n_classes == 77 and len(episode.support_inputs) == 385 and len(episode.query_inputs) == 3080
    assert set(episode.support_inputs) <= set(load_corpus("banking77/train", sources).inputs)


def test_same_domain_episodes_draw_all_classes_from_one_domain(sources):
    corpus = load_corpus("clinc150/train", sources)
    for index in range(20):
        episode = sample_episode(TaskSpec("clinc150/train", index, 7, 1, 1, 0, "", same_group=True), corpus)
        groups = {int(corpus.class_groups[corpus.label_names.index(n)]) for n in episode.label_names}
        assert len(groups) == 1
    with pytest.raises(DataError, match="no domain of clinc150/train has n_way=16"):
        check_feasible(corpus, 16, 2, same_group=True)


def test_sampler_is_a_pure_function_of_the_task_index():
    sampler = TaskSampler(("clinc150/train", "snips"), (105, 7), 5, 1, 1, seed=0)
    assert [sampler.spec(i) for i in range(50)] == [sampler.spec(i) for i in range(50)]
    assert {sampler.spec(i).family for i in range(200)} == {"clinc150/train", "snips"}


def test_a_mixture_of_ways_draws_each_tasks_ways_capped_at_its_family(sources):
    """data.ways: each task's ways are one of them, at most its family's classes; the
    family sequence is the one a sampler without ways draws, and every spec is sampleable."""
    plain = TaskSampler(("clinc150/train", "snips"), (105, 7), 5, 2, 2, seed=0)
    mixed = TaskSampler(("clinc150/train", "snips"), (105, 7), 5, 2, 2, seed=0, ways=(16, 48))
    specs = [mixed.spec(i) for i in range(60)]
    assert [s.family for s in specs] == [plain.spec(i).family for i in range(60)]
    assert {s.n_way for s in specs if s.family == "snips"} == {7}
    assert {s.n_way for s in specs if s.family == "clinc150/train"} == {16, 48}
    for spec in specs[:6]:
        episode = sample_episode(spec, load_corpus(spec.family, sources))
        assert episode.n_classes == spec.n_way and len(episode.support_inputs) == 2 * spec.n_way


def test_infeasible_shapes_are_refused(sources):
    snips = load_corpus("snips", sources)
    with pytest.raises(DataError, match="n_way=8 but snips has only 7 classes"):
        check_feasible(snips, 8, 2)
    with pytest.raises(DataError, match="k_shot \\+ q_query = 200"):
        check_feasible(load_corpus("clinc150/val", sources), 5, 200)


def test_missing_data_names_the_path(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "snips")):
        load_corpus("snips", DataRegistry(str(tmp_path)))
    with pytest.raises(DataError, match="unknown task family 'snip'; did you mean snips"):
        load_corpus("snip", DataRegistry(str(tmp_path)))


def test_hint3_and_trec_have_the_published_sizes(sources):
    """HINT3 v2 (out-of-scope left out) and TREC's 50 fine labels in 6 coarse groups."""
    assert [len(load_corpus(f"hint3/{bot}/train", sources).label_names) for bot in BOTS] == [21, 28, 57]
    assert len(load_corpus("hint3/sofmattress/train", sources).inputs) == 328
    test = load_corpus("hint3/sofmattress/test", sources)
    assert test.label_names == load_corpus("hint3/sofmattress/train", sources).label_names
    assert "no nodes detected" not in test.label_names
    trec = load_corpus("trec", sources)
    assert len(trec.label_names) == 50 and len(set(trec.class_groups.tolist())) == 6 and len(trec.inputs) == 5952
    assert (
        sources.family("trec/test").support == "trec/train" and sources.family("banking77").support == "banking77/train"
    )


BOTS = ("sofmattress", "curekart", "powerplay11")


def test_every_family_of_the_registry_loads_with_its_kind(sources):
    kinds = {}
    for family in sources.families():
        loaded = sources.load(family.name)
        assert len(loaded) if family.kind == "qa" else len(loaded.label_names) >= 2, family.name
        kinds[family.source] = family.kind
    assert kinds == {"clinc150": "classify", "banking77": "classify", "snips": "classify", "hint3": "classify",
                     "trec": "classify", "xquad": "qa", "squad": "qa", "omniglot": "image"}  # fmt: skip


def test_source_options_are_checked_by_name(data_dir):
    with pytest.raises(ConfigError, match="unknown key data.sources.clinc150.val_domain; did you mean"):
        DataRegistry(data_dir, {"clinc150": {"val_domain": ["work"]}})
    with pytest.raises(ConfigError, match="not a built-in data set.*give it a format"):
        DataRegistry(data_dir, {"mine": {"path": "x.csv"}})
    with pytest.raises(ConfigError, match="format must be one of"):
        DataRegistry(data_dir, {"mine": {"format": "xlsx", "path": "x.xlsx"}})
    with pytest.raises(DataError, match="unknown name.*nope.*CLINC150"):
        DataRegistry(data_dir, {"clinc150": {"val_domains": ["nope"]}}).corpus("clinc150/val")


def test_old_flat_settings_read_as_sources(data_dir):
    """Configs and checkpoints written before data.sources keep loading."""
    cfg = load_config(None, ["data.clinc150_val_domains=[travel]", "data.xquad_test_articles=8"])
    assert cfg.data.sources == {"clinc150": {"val_domains": ["travel"]}, "xquad": {"test_articles": 8}}
    registry = DataRegistry(data_dir, cfg.data.sources)
    assert len(registry.load("xquad/test")) == 8 and len(registry.corpus("clinc150/val").label_names) == 15
