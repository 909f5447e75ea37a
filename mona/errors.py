"""Errors raised on bad user input, carrying every problem found at once."""


class DataError(Exception):
    """Bad input data or configuration; every message names a file (or key) and its problem."""

    def __init__(self, messages: list[str]):
        self.messages = list(messages)
        super().__init__("\n".join(self.messages))
