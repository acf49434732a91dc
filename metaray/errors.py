"""The base of every error a user can fix: the CLI prints its message and exits 2."""


class MetarayError(Exception):
    """A config, data set, model, checkpoint, cluster, storage or task the user must change;
    the message says what to change."""
