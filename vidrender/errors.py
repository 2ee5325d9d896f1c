"""The one exception type for mistakes a user can fix (bad file, bad option, wrong checkpoint).

The CLI prints a `UserError` as a single line on stderr and exits with code 2; anything else is a bug
and gets a traceback. Messages name the offending file or option and what is wrong with it.
"""


class UserError(Exception):
    """An input or option the user can correct; its message is shown as one line."""
