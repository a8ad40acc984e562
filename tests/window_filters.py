"""User functions referenced by name (`module:function`) from pipeline tests."""


def at_least_five_frames(current):
    """A window filter as rsdtlib's win_filter: gets the window's parts unpacked."""
    timestamps, _asc, _dsc, _opt = current
    return len(timestamps) >= 5


def failing_label(window, label_args):
    raise RuntimeError("label function failed on purpose")
