"""Ray Tune sweeps over meta-hyperparameters; each trial is a `metaray train` run."""

from metaray.tuning.report import write_report
from metaray.tuning.space import SweepSpec, check_sweep, load_sweep, trial_config
from metaray.tuning.sweep import Sweep, run_sweep

__all__ = ["Sweep", "SweepSpec", "check_sweep", "load_sweep", "run_sweep", "trial_config", "write_report"]
