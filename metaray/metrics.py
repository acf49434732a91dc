"""Per-round metrics to JSONL (always) and TensorBoard (optional), in the run folder.

On a local disk the JSONL file is appended to; on object storage (no appends) it is
rewritten whole after each round, and TensorBoard's event files are written to a
local staging folder and uploaded after each round: a run's metrics are never more
than one round behind wherever it stops.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from metaray.storage import RunStore

METRICS_FILE = "metrics.jsonl"


class MetricsWriter:
    def __init__(self, location: str | Path, tensorboard: bool = True) -> None:
        self.store = RunStore(location)
        self.store.makedirs()
        self._lines: list[str] = []
        if not self.store.local and self.store.is_file(METRICS_FILE):  # a resumed run keeps its history
            self._lines = self.store.read_text(METRICS_FILE).splitlines(keepends=True)
        self._file = open(self.store.path(METRICS_FILE), "a") if self.store.local else None  # noqa: SIM115
        self._staging = None if self.store.local else Path(tempfile.mkdtemp(prefix="metaray-tb-"))
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self._staging or Path(self.store.path("tensorboard"))))

    def write(self, metrics: dict) -> None:
        line = json.dumps({"time": time.time(), **metrics}) + "\n"
        if self._tb is not None:
            step = int(metrics["round"])
            for key, value in metrics.items():
                if key != "round" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()
        if self._file is not None:
            self._file.write(line)
            self._file.flush()
            return
        self._lines.append(line)
        self.store.write_text(METRICS_FILE, "".join(self._lines))
        self._upload_tensorboard()

    def _upload_tensorboard(self) -> None:
        if self._tb is None or self._staging is None:
            return
        for path in sorted(self._staging.rglob("*")):
            if path.is_file():
                self.store.write_bytes(f"tensorboard/{path.relative_to(self._staging).as_posix()}", path.read_bytes())

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        self._upload_tensorboard()
        if self._file is not None:
            self._file.close()
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)


def write_curves(location: str | Path) -> None:
    """`curves.png` in the run folder, from its whole `metrics.jsonl` (a resumed run's
    history included): losses and meta-validation per round."""
    from metaray.plots import training_curves

    store = RunStore(location)
    if store.is_file(METRICS_FILE):
        store.write_bytes("curves.png", training_curves(store.read_text(METRICS_FILE)))
