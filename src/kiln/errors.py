"""The one exception type a user can cause.

Code raises `KilnError` for anything the user can fix (a bad path, a bad config value, a corrupt
file). The CLI prints its message as a single line and exits non-zero; anything else is a bug and
keeps its traceback.
"""


class KilnError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""
