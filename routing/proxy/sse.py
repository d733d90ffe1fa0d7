"""Server-sent events: the one parser and writer for upstream and client streams.

`SSEParser.feed(bytes)` returns the complete events' `data` payloads seen so far (as bytes, multi-line data joined
with newlines); comments, `event:`/`id:` fields and blank keep-alives are skipped. It never buffers more than one
partial event.
"""

from __future__ import annotations

DONE = b"[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"


class SSEParser:
    __slots__ = ("_buffer",)

    def __init__(self):
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._buffer + chunk
        held = b""
        if b"\r" in data:
            if data.endswith(b"\r"):
                # A CRLF may be cut across two reads: a lone trailing CR waits for the next chunk, or it would be
                # read as one line end now and the LF as a second one (a blank line, ending the event early).
                data, held = data[:-1], b"\r"
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *complete, rest = data.split(b"\n\n")
        self._buffer = rest + held
        events = []
        for block in complete:
            payload = _data_of(block)
            if payload is not None:
                events.append(payload)
        return events

    def flush(self) -> list[bytes]:
        """Whatever complete-looking event is left when the stream ends without a final blank line."""
        block, self._buffer = self._buffer.replace(b"\r", b"\n"), b""
        payload = _data_of(block) if block.strip() else None
        return [payload] if payload is not None else []


def _data_of(block: bytes) -> bytes | None:
    lines = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    if not lines:
        return None
    return b"\n".join(lines)


def event(payload: bytes) -> bytes:
    """One SSE event carrying `payload` as its data."""
    return b"data: " + payload + b"\n\n"
