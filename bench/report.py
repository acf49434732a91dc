"""Print the tables stored in bench/results/quality.json (no recomputation).

python bench/report.py
"""

from __future__ import annotations

import json
from pathlib import Path

from metaray.eval import format_table

RESULTS = Path(__file__).resolve().parent / "results" / "quality.json"


def main() -> None:
    result = json.loads(RESULTS.read_text())
    print(f"machine: {result['machine']}; date: {result['date']}")
    for name, run in result["training"].items():
        print(
            f"train {name}: {run['seconds']:.0f} s, "
            f"best meta-val {run.get('best_meta_val_score', run.get('best_meta_val_acc')):.1f} ({run['command']})"
        )
    for name, evaluation in result["evaluations"].items():
        print(f"\n## {name}  ({evaluation['command']}, {evaluation['seconds']:.0f} s)")
        print(format_table(evaluation))


if __name__ == "__main__":
    main()
