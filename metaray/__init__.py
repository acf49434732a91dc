"""metaray: distributed meta-learning of soft prompts on Ray."""

__version__ = "0.1.0"
