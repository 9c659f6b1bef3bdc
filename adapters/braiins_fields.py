"""Braiins OS+ answers read at the wire: protobuf fields by number, without betterproto.

A reading needs three numbers from three gRPC answers (:func:`adapters.braiins.read`);
decoding each whole answer with pyasic's generated ``braiins.bos.v1`` messages (betterproto)
cost more than the call. These read only the fields asked for, by the field numbers of
those messages, and say ValueError for bytes that are not a message. proto3 leaves a field
at its default off the wire, so a number missing here is a value the firmware did not send:
unknown, never 0. Split from :mod:`adapters.braiins`, which makes the calls.
"""

from __future__ import annotations

import math
import struct

_DOUBLE = struct.Struct("<d")  # protobuf's double: 8 bytes, little-endian


def fields(data: bytes) -> dict[int, list[int | bytes]]:
    """A protobuf message's fields by number, at the wire (varints as ints, the rest as
    bytes); ValueError for bytes that are not a message. proto3 leaves a field at its
    default off the wire, so a number missing here is a value the firmware did not send."""
    out: dict[int, list[int | bytes]] = {}
    i, end = 0, len(data)
    while i < end:
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            size, i = _varint(data, i)
            value, i = data[i : i + size], i + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = data[i : i + size], i + size
        else:
            raise ValueError(f"wire type {wire} of field {number} at byte {i}")
        if i > end or number == 0:
            raise ValueError(f"field {number} runs past the end ({end} bytes)")
        out.setdefault(number, []).append(value)
    return out


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while i < len(data) and shift < 64:
        b = data[i]
        result |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return result, i
        shift += 7
    raise ValueError(f"a varint cut short at byte {i}")


def value_at(data: bytes | None, *path: int) -> int | bytes | None:
    """The last value at ``path`` (field numbers, outer first), None where any is absent."""
    value: int | bytes | None = data
    for number in path:
        if not isinstance(value, bytes):
            return None
        got = fields(value).get(number)
        value = got[-1] if got else None
    return value


def power_w(stats: bytes) -> float | None:
    """``GetMinerStatsResponse.power_stats.approximated_consumption.watt``."""
    got = value_at(stats, 3, 1, 1)
    return float(got) if isinstance(got, int) else None


def target_w(mode: bytes) -> float | None:
    """``PerformanceMode.tuner_mode.power_target.power_target.watt`` (None in manual mode
    or under a hashrate target)."""
    got = value_at(mode, 2, 1, 1, 1)
    return float(got) if isinstance(got, int) else None


def chip_temps_c(boards: bytes) -> tuple[float, ...]:
    """The hottest chip of ``GetHashboardsResponse``: each board's ``highest_chip_temp``
    (``TemperatureSensor.temperature.degree_c``, a double); a board without one is left
    out, as pyasic leaves it (its 0 is "no sensor")."""
    temps: list[float] = []
    for board in fields(boards).get(1, []):
        got = value_at(board if isinstance(board, bytes) else None, 6, 3, 1)
        if isinstance(got, bytes) and len(got) == 8:
            (c,) = _DOUBLE.unpack(got)
            if math.isfinite(c) and c:
                temps.append(c)
    return (max(temps),) if temps else ()
