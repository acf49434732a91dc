"""The `metaray` command end to end on a tiny config, as a user runs it."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration
PNG = b"\x89PNG\r\n"
ERROR_LINE = re.compile(r"^.*(\[[^\]]* E \d+ \d+\]|\bERROR\b).*$", re.MULTILINE)  # Ray's C++ and Python logs


def metaray(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "metaray.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_train_then_eval_on_a_tiny_config(data_dir, tmp_path):
    common = [f"data.data_dir={data_dir}", f"output.dir={tmp_path / 'run'}"]
    trained = metaray("train", "configs/tiny.yaml", *common, "--quiet")
    assert trained.returncode == 0, trained.stderr[-3000:]
    summary = json.loads(trained.stdout.strip().splitlines()[-1])
    assert summary["rounds"] == 2 and (tmp_path / "run" / "latest").is_file()
    assert (tmp_path / "run" / "curves.png").read_bytes().startswith(PNG)
    evaluated = metaray("eval", "configs/tiny.yaml", *common, f"eval.checkpoints.reptile={tmp_path / 'run'}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "| reptile | proto |" in evaluated.stdout
    assert "eval: 100%" in evaluated.stderr  # the progress bar over every method's tasks
    assert (tmp_path / "run" / "accuracy_vs_steps.png").read_bytes().startswith(PNG)
    for run in (trained, evaluated):  # Ray's error-level lines (e.g. restartable actors' arguments): none
        assert not ERROR_LINE.search(run.stdout + run.stderr), ERROR_LINE.search(run.stdout + run.stderr)[0]
    result = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert result["command"].startswith("metaray eval") and result["date"]
    rows = result["settings"]["3-way 1-shot"]
    assert set(rows) == {"protonet", "linear_probe", "vocab", "reptile"}
    assert set(rows["reptile"]["heads"]["proto"]) == {"0", "2"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["meta.inner.lrr=1"], "unknown key meta.inner.lrr; did you mean meta.inner.lr?"),
        (["data.data_dir=/no/such/dir"], "/no/such/dir"),
        (["data.n_way=9"], "n_way=9 but snips has only 7 classes"),
        (["data.k_shot=400"], "k_shot + q_query = 402"),
        (["model.backbone=/no/such/model"], "/no/such/model"),
        (["ray.address=127.0.0.1:9", "ray.connect_timeout_s=2"], "Ray cluster at '127.0.0.1:9' is unreachable"),
        (["--resume"], "no checkpoint at"),
        (["data.data_dir=file:///no/such/remote"], "data directory file:///no/such/remote does not exist"),
        (["output.dir=nosuch://bucket/run"], "cannot open nosuch://bucket/run"),
        (["meta.min_tasks=1"], "meta.min_tasks needs meta.round_deadline_s > 0"),
    ],
)
def test_bad_input_stops_before_any_work_with_a_clear_error(data_dir, tmp_path, overrides, message):
    base = [f"data.data_dir={data_dir}", "data.meta_train=[snips]", f"output.dir={tmp_path}"]
    result = metaray("train", "configs/tiny.yaml", *base, *overrides)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr
    assert "Started a local Ray" not in result.stderr, "the error must come before Ray starts"
    assert not (tmp_path / "metrics.jsonl").exists()
