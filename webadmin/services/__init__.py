"""Domain operations shared by the console and the API (no request, flash or templates here)."""


class ServiceError(Exception):
    """A domain rule refused the operation; the message is safe to show to the user."""

    def __init__(self, message: str, *, field: str | None = None, code: str = "invalid") -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code
