"""The one exception type for a user's mistake (a bad flag, a missing or malformed file).

The command-line layer prints a `UserError` as one line and exits 2; anything else is a bug and keeps its
traceback. Raise it with a message that names the flag or file and what is wrong with it.
"""


class UserError(ValueError):
    """A bad flag value or input file: printed as one line, exit status 2."""


class NothingToWrite(Exception):
    """A batch run that would write nothing (no observation in the time range, no window with these
    parameters, no tile selected), refused at launch: printed as one line saying why in numbers, exit 1."""
