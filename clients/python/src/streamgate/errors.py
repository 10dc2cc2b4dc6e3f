"""One exception type for every failed call, carrying the gRPC status code.

grpc raises ``grpc.RpcError`` objects whose ``code()`` exists only on some
subclasses; wrapping them once gives callers a typed ``code`` to branch on
(``NOT_FOUND`` for a missing group, ``UNAVAILABLE`` to retry, ...). The wire
contract's error table (the gateway's docs/errors.md) says which code
means what.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import grpc


class StreamgateError(Exception):
    """A call to the gateway failed with ``code``; ``details`` is the
    gateway's message (it names the field, group or limit at fault)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @property
    def retryable(self) -> bool:
        """True for codes that mean "try again later" (gateway or Redis
        briefly unreachable), false for errors in the request."""
        return self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

    @classmethod
    def from_code(cls, code: int, details: str) -> StreamgateError:
        """The error of one answer on a stream (ProduceStreamResponse's
        ``code`` and ``message``): a google.rpc code as a number."""
        return cls(_BY_VALUE.get(code, grpc.StatusCode.UNKNOWN), details)

    @classmethod
    def from_rpc(cls, err: grpc.RpcError) -> StreamgateError:
        code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = (err.details() if isinstance(err, grpc.Call) else None) or str(err)
        return cls(code, details)


_BY_VALUE = {status.value[0]: status for status in grpc.StatusCode}


@contextmanager
def translated() -> Iterator[None]:
    """Turns ``grpc.RpcError`` raised inside the block into ``StreamgateError``."""
    try:
        yield
    except grpc.RpcError as err:
        raise StreamgateError.from_rpc(err) from err
