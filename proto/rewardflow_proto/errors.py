"""ContractError: how every codec failure is reported (code, message, field, HTTP status)."""

from __future__ import annotations

from typing import Any

from rewardflow_proto.messages import ERROR_STATUS, ErrorBody


class ContractError(ValueError):
    """A message that breaks the contract; `code` is one of messages.ERROR_STATUS."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    @property
    def status(self) -> int:
        """The HTTP status this error travels with (400 for a code this peer does not know)."""
        return ERROR_STATUS.get(self.code, 400)

    def to_body(self) -> ErrorBody:
        """The error as the wire's error body."""
        return ErrorBody(code=self.code, message=self.message, field=self.field)


def invalid(field: str, message: str) -> ContractError:
    """An `invalid_request` error whose message starts with the field it names."""
    return ContractError("invalid_request", f"{field}: {message}", field)


def type_name(value: Any) -> str:
    """The msgpack-ish name of a decoded value's type, for error messages."""
    return "nil" if value is None else type(value).__name__
