"""A gRPC method for the wire tests, its messages raw bytes: what our own HTTP/2 client
(adapters/grpc_wire.py) and the simulator's corked server (adapters/sim/grpc_cork.py) are
checked with against grpclib, without a protobuf schema."""

from __future__ import annotations

#: The method the tests call and serve.
PATH = "/test.v1.Echo/Call"


class RawMessage:
    """A message as its bytes for grpclib's ProtoCodec."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:
        return self.data

    @classmethod
    def FromString(cls, data: bytes) -> RawMessage:
        return cls(data)
