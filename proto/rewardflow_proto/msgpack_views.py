"""Unpack a msgpack request body, leaving image payloads as memoryviews of the body (no copy).

`msgpack.unpackb` copies every bin payload into a new bytes object: for a 16×512×512 RGB batch that
is 12.6 MB memcpy'd per request, the single largest cost of the decode. Here the top-level map and
the `images` subtree are walked in Python (a handful of objects per image) and every `data` bin
inside `images` is returned as a slice of the body; every other value is unpacked by msgpack's C
unpacker, fed only the bytes of that value, so the result equals `msgpack.unpackb` but for those
slices.
"""

from __future__ import annotations

from typing import Any

import msgpack

_BIN_HEADERS = {0xC4: 1, 0xC5: 2, 0xC6: 4}  # bin 8/16/32: type byte -> size of the length field
_FIRST_WINDOW = 1 << 16
# Contract maps hold a handful of keys; a map with more is unpacked in C (copying its payloads) so
# that a body of a million tiny keys costs C time, not Python time.
_MAX_WALKED_KEYS = 64


class MalformedMsgpack(ValueError):
    """The body is not one well-formed msgpack object."""


def _reject_ext(code: int, data: bytes) -> Any:
    raise MalformedMsgpack(f"msgpack extension type {code} is not part of the contract")


def _next(buf: memoryview, pos: int) -> tuple[Any, int]:
    """Unpack the object starting at `pos` with the C unpacker; return it and where it ends."""
    unpacker = msgpack.Unpacker(
        raw=False, strict_map_key=True, ext_hook=_reject_ext, timestamp=0, max_buffer_size=max(len(buf), 1)
    )
    fed, window = pos, _FIRST_WINDOW
    while True:
        # Feed growing windows so a small value after a large payload never copies the payload.
        end = min(len(buf), fed + window)
        unpacker.feed(buf[fed:end])
        fed, window = end, window * 2
        try:
            value = unpacker.unpack()
        except msgpack.OutOfData:
            if fed >= len(buf):
                raise MalformedMsgpack(f"the body ends inside the object that starts at byte {pos}") from None
            continue
        return value, pos + unpacker.tell()


def _uint(buf: memoryview, pos: int, size: int) -> int:
    if pos + size > len(buf):
        raise MalformedMsgpack(f"the body ends inside the header at byte {pos}")
    return int.from_bytes(buf[pos : pos + size], "big")


def _container(buf: memoryview, pos: int) -> tuple[str, int, int]:
    """('map' | 'array' | '', entry count, position after the header) of the object at `pos`."""
    if pos >= len(buf):
        raise MalformedMsgpack(f"the body ends at byte {pos} where an object was expected")
    b = buf[pos]
    if 0x80 <= b <= 0x8F:
        return "map", b & 0x0F, pos + 1
    if 0x90 <= b <= 0x9F:
        return "array", b & 0x0F, pos + 1
    if b in (0xDE, 0xDF):
        size = 2 if b == 0xDE else 4
        return "map", _uint(buf, pos + 1, size), pos + 1 + size
    if b in (0xDC, 0xDD):
        size = 2 if b == 0xDC else 4
        return "array", _uint(buf, pos + 1, size), pos + 1 + size
    return "", 0, pos


def _key(buf: memoryview, pos: int) -> tuple[str, int]:
    key, end = _next(buf, pos)
    if not isinstance(key, str):
        raise MalformedMsgpack(f"map key at byte {pos} is {type(key).__name__}, but keys must be strings")
    return key, end


def _bin_view(buf: memoryview, pos: int) -> tuple[memoryview, int] | None:
    size = _BIN_HEADERS.get(buf[pos]) if pos < len(buf) else None
    if size is None:
        return None
    length = _uint(buf, pos + 1, size)
    start = pos + 1 + size
    if start + length > len(buf):
        raise MalformedMsgpack(f"bin at byte {pos} declares {length} bytes but the body ends first")
    return buf[start : start + length], start + length


def _image_map(buf: memoryview, pos: int) -> tuple[Any, int]:
    kind, count, body = _container(buf, pos)
    if kind != "map" or count > _MAX_WALKED_KEYS:
        return _next(buf, pos)
    pos = body
    value: dict[str, Any] = {}
    for _ in range(count):
        key, pos = _key(buf, pos)
        view = _bin_view(buf, pos) if key == "data" else None
        value[key], pos = view if view is not None else _next(buf, pos)
    return value, pos


def _images(buf: memoryview, pos: int, max_items: int) -> tuple[Any, int]:
    kind, count, body = _container(buf, pos)
    if kind == "map":
        return _image_map(buf, pos)
    if kind == "array" and count <= max_items:
        items = []
        for _ in range(count):
            item, body = _image_map(buf, body)
            items.append(item)
        return items, body
    # Anything else is invalid and will be rejected by validation; copying it costs nothing that matters.
    return _next(buf, pos)


def unpack_request(body: bytes | memoryview, max_images: int) -> Any:
    """Unpack one msgpack object; `images[...].data` bins come back as memoryviews of `body`."""
    buf = memoryview(body)
    if buf.format != "B" or buf.ndim != 1:
        buf = buf.cast("B")
    kind, count, pos = _container(buf, 0)
    if kind != "map" or count > _MAX_WALKED_KEYS:
        value, pos = _next(buf, 0)
    else:
        value = {}
        for _ in range(count):
            key, pos = _key(buf, pos)
            value[key], pos = _images(buf, pos, max_images) if key == "images" else _next(buf, pos)
    if pos != len(buf):
        raise MalformedMsgpack(f"the body holds {len(buf) - pos} trailing bytes after one msgpack message")
    return value
