"""A ttrpc service table from a protobuf service descriptor and an object with one
coroutine per method: request bytes are decoded, the method called, the reply encoded.

The one place a service's errors become RpcErrors: `to_rpc_error` maps the service's own
exceptions (it must return an RpcError); undecodable requests are INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import ModuleType
from typing import Any

from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError

from pykata.domain.errors import INVALID_ARGUMENT, PykataError, RpcError

Handler = Callable[[bytes], Awaitable[bytes]]
ErrorMap = Callable[[str, Exception], RpcError]


def unary(method: str, request_type: Any, op: Callable[[Any], Awaitable[Any]],
          to_rpc_error: ErrorMap) -> Handler:
    async def handle(payload: bytes) -> bytes:
        try:
            request = request_type.FromString(payload)
        except DecodeError as exc:
            raise RpcError(method, INVALID_ARGUMENT,
                           f"undecodable {request_type.__name__}: {exc}") from None
        try:
            response = await op(request)
        except RpcError:
            raise
        except (PykataError, OSError) as exc:
            raise to_rpc_error(method, exc) from exc
        data: bytes = response.SerializeToString()
        return data
    return handle


def service_table(service: ServiceDescriptor, module: ModuleType, impl: object,
                  to_rpc_error: ErrorMap) -> Mapping[str, Handler]:
    """`impl.<Method>` for every method of `service`; request classes from `module`."""
    table: dict[str, Handler] = {}
    for method in service.methods:
        request_type = getattr(module, method.input_type.name)
        table[method.name] = unary(method.name, request_type, getattr(impl, method.name),
                                   to_rpc_error)
    return table
