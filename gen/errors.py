"""The one exception type for bad user input.

Anything the user can fix (a wrong name, a missing folder, a bad size) raises
`GenError` with a message that names the value and says what to do. The CLI prints
it as one line and exits with status 2; Python callers can catch it.
"""


class GenError(ValueError):
    """Bad input from the user: the message names the value and the fix."""
