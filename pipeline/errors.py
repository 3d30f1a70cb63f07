"""The one base class for problems the user can fix (bad parameters, missing or corrupt
input). Stages print such an error as one line and exit with status 2; anything else is a
bug and keeps its traceback. Standard library only, so the core can import it."""


class UserError(Exception):
    """A problem with the user's input or settings; the message names what to change."""
