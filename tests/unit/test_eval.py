"""The meta-test protocol's bookkeeping: task lists, confidence intervals, the table."""

import math

import pytest

from metaray.config import ConfigError, load_config
from metaray.data import DataRegistry
from metaray.eval import format_table, summarise
from metaray.kinds import CLASSIFY


@pytest.fixture(scope="module")
def registry(data_dir):
    return DataRegistry(data_dir)


def test_summarise_gives_mean_and_normal_95_ci():
    s = summarise([1.0, 2.0, 3.0, 4.0])
    assert s["mean"] == 2.5 and s["n"] == 4
    assert s["ci95"] == pytest.approx(1.96 * math.sqrt(5 / 3) / 2)
    assert summarise([7.0])["ci95"] == 0.0


def test_full_protocol_draws_support_from_the_train_file(registry):
    ev = load_config(None, ["eval.protocol=full", "eval.draws=3", "eval.query_per_class=10"]).eval
    specs = CLASSIFY.test_specs(registry, ev, 5)
    assert [s.index for s in specs] == [0, 1, 2]
    assert {(s.family, s.support_family, s.n_way, s.k_shot, s.q_query) for s in specs} == {
        ("banking77", "banking77/train", 0, 5, 10)
    }
    assert CLASSIFY.setting_name(registry, ev, 5) == "77-way 5-shot"
    trec = load_config(None, ["eval.protocol=full", "eval.target=trec/test"]).eval
    assert {s.support_family for s in CLASSIFY.test_specs(registry, trec, 5)} == {"trec/train"}
    no_train_file = load_config(None, ["eval.protocol=full", "eval.target=clinc150/test"]).eval
    with pytest.raises(ConfigError, match="has none; set eval.protocol=episodes"):
        CLASSIFY.test_specs(registry, no_train_file, 5)


def test_episode_protocol_uses_the_same_tasks_for_every_method(registry):
    ev = load_config(None, ["eval.protocol=episodes", "eval.episodes=4", "eval.n_way=5"]).eval
    assert CLASSIFY.test_specs(registry, ev, 1) == CLASSIFY.test_specs(registry, ev, 1)
    assert CLASSIFY.setting_name(registry, ev, 1) == "5-way 1-shot"


def test_table_has_a_row_per_method_and_head_and_a_column_per_budget():
    cell = {"mean": 80.0, "ci95": 1.5, "n": 3}
    result = {
        "settings": {
            "5-way 1-shot": {
                "protonet": {"heads": {"proto": {"0": cell}}, "adapt_seconds": {"mean": 0.1}},
                "reptile": {"heads": {"proto": {"0": cell, "5": cell}}, "adapt_seconds": {"mean": 0.9}},
            }
        }
    }
    table = format_table(result)
    assert "| method | head | 0 steps | 5 steps | adapt s |" in table
    assert "| reptile | proto | 80.0 ± 1.5 | 80.0 ± 1.5 | 0.9 |" in table
    assert "| protonet | proto | 80.0 ± 1.5 |  | 0.1 |" in table
    result["settings"]["5-way 1-shot"]["protonet"]["heads"]["proto"]["0"] = {"mean": 70.0, "ci95": 0.0, "n": 1}
    assert "| protonet | proto | 70.0 |  | 0.1 |" in format_table(result)
