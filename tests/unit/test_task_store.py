"""The serving task store: ids, atomic versions, one winner, feedback kept, corruption named."""

import concurrent.futures

import pytest
import torch

from metaray.serving.store import CorruptTask, TaskExists, TaskNotFound, TaskStore

TENSORS = {"prompt": torch.ones(2, 3), "prototypes": torch.zeros(2, 3)}


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", ".hidden", "x" * 65, "sp ace", "t1\n"])
def test_ids_that_could_escape_the_store_are_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="task id"):
        TaskStore(tmp_path).claim(bad)


def test_of_concurrent_claims_exactly_one_wins(tmp_path):
    store = TaskStore(tmp_path)

    def claim(_):
        try:
            store.claim("t")
            return "won"
        except TaskExists:
            return "lost"

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(claim, range(8))) == ["lost"] * 7 + ["won"]


def test_versions_are_atomic_and_never_overwritten(tmp_path):
    store = TaskStore(tmp_path)
    store.claim("t")
    assert store.latest_version("t") == 0
    store.write_version("t", 1, TENSORS, {"labels": ["a", "b"]})
    with pytest.raises(FileExistsError):
        store.write_version("t", 1, {"prompt": torch.zeros(2, 3)}, {"labels": ["x"]})
    task = store.read("t")
    assert task.version == 1 and task.meta["labels"] == ["a", "b"]
    torch.testing.assert_close(task.tensors["prompt"], TENSORS["prompt"])
    assert not [p for p in (tmp_path / "t").iterdir() if p.name.startswith(".tmp")]


def test_feedback_is_kept_in_order_and_a_deleted_task_is_gone(tmp_path):
    store = TaskStore(tmp_path)
    store.claim("t")
    first = store.add_feedback("t", [{"text": "a", "label": "x"}])
    second = store.add_feedback("t", [{"text": "b", "label": "y"}])
    assert list(store.feedback("t")) == [first, second]
    assert list(store.feedback("t", exclude={first})) == [second]
    store.delete("t")
    assert not store.exists("t") and store.ids() == []
    with pytest.raises(TaskNotFound):
        store.read_meta("t")


def test_a_corrupt_file_is_named(tmp_path):
    store = TaskStore(tmp_path)
    store.claim("t")
    store.write_version("t", 1, TENSORS, {"labels": ["a", "b"]})
    (tmp_path / "t" / "v000001" / "task.safetensors").write_bytes(b"garbage")
    with pytest.raises(CorruptTask, match="task.safetensors"):
        store.check("t")
    (tmp_path / "t" / "v000001" / "task.json").write_text("{not json")
    with pytest.raises(CorruptTask, match="task.json") as err:
        store.read_meta("t")
    assert str(tmp_path) not in str(err.value)  # the message reaches HTTP clients: no server paths


def test_a_deleted_creation_never_writes_into_the_next_one(tmp_path):
    """Delete `t` and create it again: a version, a feedback or a delete meant for the
    old creation is refused, and the new one is untouched; cache keys differ."""
    from metaray.serving.store import task_key

    store = TaskStore(tmp_path)
    old = store.claim("t")
    store.write_version("t", 1, TENSORS, {"labels": ["a", "b"]}, old)
    old_key = task_key(store.read_meta("t"))
    store.delete("t")
    new = store.claim("t")
    assert new != old and store.incarnation("t") == new
    store.write_version("t", 1, TENSORS, {"labels": ["x", "y"]}, new)
    with pytest.raises(TaskNotFound):
        store.write_version("t", 2, TENSORS, {"labels": ["a", "b"]}, old)  # the old task's re-adaptation
    with pytest.raises(TaskNotFound):
        store.add_feedback("t", [{"text": "late", "label": "a"}], old)
    with pytest.raises(TaskNotFound):
        store.delete("t", old)  # the old create's clean-up
    assert store.versions("t") == [1] and store.read_meta("t")["labels"] == ["x", "y"]
    assert store.feedback("t") == {} and task_key(store.read_meta("t")) != old_key
    assert not [p.name for p in (tmp_path / "t").iterdir() if p.name.startswith(".")]


def test_a_torn_newest_version_falls_back_to_the_one_before(tmp_path):
    store = TaskStore(tmp_path)
    store.claim("t")
    store.write_version("t", 1, TENSORS, {"labels": ["a", "b"]})
    store.write_version("t", 2, TENSORS, {"labels": ["a", "b", "c"]})
    (tmp_path / "t" / "v000002" / "task.safetensors").write_bytes(b"torn")
    meta = store.latest_good("t")
    assert meta["version"] == 1 and meta["fallback_from"] == [2]
    (tmp_path / "t" / "v000001" / "task.json").write_text("{torn")
    with pytest.raises(CorruptTask):
        store.latest_good("t")


def test_old_versions_and_included_feedback_are_pruned(tmp_path):
    """keep_versions bounds a task's disk use; feedback that every kept version includes goes."""
    store = TaskStore(tmp_path, keep_versions=2)
    store.claim("t")
    store.write_version("t", 1, TENSORS, {"labels": ["a", "b"], "feedback": []})
    first = store.add_feedback("t", [{"text": "x", "label": "a"}])
    assert store.pending_ids() == ["t"]
    store.write_version("t", 2, TENSORS, {"labels": ["a", "b"], "feedback": [first]})
    second = store.add_feedback("t", [{"text": "y", "label": "b"}])
    store.write_version("t", 3, TENSORS, {"labels": ["a", "b"], "feedback": [first, second]})
    assert store.versions("t") == [2, 3]
    assert list(store.feedback("t")) == [second]  # v2, the oldest kept, includes only the first
    store.clear_pending("t")
    assert store.pending_ids() == []


def test_stale_leftovers_of_a_crash_are_cleaned_and_fresh_ones_kept(tmp_path):
    import os

    store = TaskStore(tmp_path)
    store.claim("t")
    old, fresh = tmp_path / "t" / ".tmp-old", tmp_path / "t" / ".tmp-fresh"
    old.mkdir(), fresh.mkdir(), (tmp_path / ".deleted-x-1").mkdir()
    for path in (old, tmp_path / ".deleted-x-1"):
        os.utime(path, (0, 0))
    assert sorted(store.clean_stale()) == [".deleted-x-1", "t/.tmp-old"]
    assert fresh.is_dir() and not old.exists()
