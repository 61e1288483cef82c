"""The base class of errors caused by user input (a config value, a missing file, a bad name).

Command-line tools print these as one message without a traceback; everything else is a bug
and keeps its traceback.
"""


class PerlclipError(Exception):
    """An error whose message names the invalid input and what to change."""
