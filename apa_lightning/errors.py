"""The one exception type the launcher reports as a plain message instead of a traceback."""


class ApaError(Exception):
    """A problem the user can fix: the message names what is wrong and the way out."""
