"""The one exception type users see.

Every problem a user can cause (a bad path, a bad hyperparameter, a corrupt checkpoint)
raises RnnlensError with a one-line message that names the problem and the fix; the CLI
prints it as `error: ...` and exits with status 2, never with a stack trace.
"""


class RnnlensError(Exception):
    """A problem with the user's input, explained in one line."""
