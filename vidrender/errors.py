"""The one exception type for mistakes a user can fix (bad file, bad option, wrong checkpoint).

The CLI prints a `UserError` as a single line on stderr and exits with code 2; anything else is a bug
and gets a traceback. Messages name the offending file or option and what is wrong with it.
"""


class UserError(Exception):
    """An input or option the user can correct; its message is shown as one line."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT), SIGTERM or SIGHUP stopped a command; the CLI exits with 128 + the signal's number.

    A KeyboardInterrupt, so that every `except Exception` lets it through and every cleanup that handles
    Ctrl-C (temporary outputs, training's save at a step boundary) handles the other two alike.
    """

    def __init__(self, message: str = "interrupted", signum: int = 2):
        super().__init__(message)
        self.signum = signum
