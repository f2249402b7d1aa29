"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class ZooUserError(Exception):
    """A mistake in the user's input (name, path, value) with a message that says how to fix it."""
