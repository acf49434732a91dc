"""A tiny real sweep: 3 trials on local Ray, cut mid-trial and resumed: every trial
finishes, the cut trial continues from its last round, ASHA stops one early, best.yaml
trains. One sweep checks all of these (each trial costs a process and an actor start)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from subprocess import DEVNULL

import pytest

from metaray.tuning import load_sweep, run_sweep, write_report

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_a_cut_sweep_resumes_where_it_stopped_stops_a_trial_early_and_its_best_config_trains(
    data_dir, tmp_path, ray_local, monkeypatch, capsys
):
    """Kill a sweep (`metaray tune`: driver and its Ray) mid-trial, resume it in this
    process's Ray: every trial finishes, the interrupted trial continues from its last
    round instead of starting over, ASHA stops a trial early, and `metaray train` trains
    the best trial's config."""
    out = tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "-m", "metaray.cli", "tune", "tune_configs/tiny.yaml", f"data.data_dir={data_dir}"]
    cmd += ["--output", str(out)]
    sweep = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=DEVNULL, stderr=DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob("trials/*/round-000002")):
            assert sweep.poll() is None and time.monotonic() < deadline, "the sweep ended before it could be cut"
            time.sleep(0.5)
    finally:
        os.killpg(sweep.pid, signal.SIGKILL)
        sweep.wait()
    cut = [p.parent for p in out.glob("trials/*/round-000002")]
    assert len(cut) == 1, f"max_concurrent_trials=1, yet {len(cut)} trials ran at once"
    monkeypatch.chdir(ROOT)
    spec = load_sweep("tune_configs/tiny.yaml", output=str(out))
    summary = write_report(run_sweep(spec, (f"data.data_dir={data_dir}",), resume=True))
    assert f"trials: 100%|██████████| {spec.num_samples}/{spec.num_samples}" in capsys.readouterr().err  # the bar
    assert summary["trials"] == 3
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 3 and all(not row["error"] for row in rows), rows
    rounds = [json.loads(line)["round"] for line in (cut[0] / "metrics.jsonl").read_text().splitlines()]
    assert rounds == list(range(1, rounds[-1] + 1)), f"the interrupted trial re-ran rounds: {rounds}"
    rounds = sorted(int(row["rounds"]) for row in rows)
    assert rounds[-1] == 3 and rounds[0] < 3, f"ASHA stopped no trial early: rounds {rounds}"
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    trained = subprocess.run(
        [
            sys.executable,
            "-m",
            "metaray.cli",
            "train",
            str(out / "best.yaml"),
            "--quiet",
            "meta.rounds=1",
            "ray.local=true",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert json.loads(trained.stdout.strip().splitlines()[-1])["run_dir"] == f"{out}/best-run"
