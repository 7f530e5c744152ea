"""Errors that cross the engine/edge line, so that neither side imports the other for them."""


class InvalidQuery(ValueError):
    """A query argument out of range or of the wrong form; the message names the argument.
    D-Bus answers it as InvalidArgs, HTTP as 400."""


class NoSuchDevice(LookupError):
    """GetDevice for an address no device has; the message says which."""


class StoreError(Exception):
    """A store could not read or write its file; `problem` says why, in a few words."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem
