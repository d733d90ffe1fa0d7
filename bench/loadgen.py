"""A small asyncio HTTP/1.1 load generator for the benchmark: keep-alive connections, one per simulated client,
pre-built request bytes, and just enough response parsing (Content-Length, chunked, close-delimited) to time a
whole answer and its first body bytes.

Why not httpx: on a 2-core machine the load generator shares the CPU with the server under test, and a general
client's per-request overhead (several times this one's) would be measured as server latency.
It must only ever connect to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field


def build_request(port: int, path: str, body: dict, api_key: str | None) -> bytes:
    payload = json.dumps(body).encode()
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        "User-Agent: rainymodel-bench",
    ]
    if api_key:
        lines.append(f"Authorization: Bearer {api_key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)  # seconds, whole answer
    ttfb: list[float] = field(default_factory=list)  # seconds, first body bytes
    sent: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    wall: float = 0.0

    @property
    def ok(self) -> int:
        return self.sent - self.errors

    def throughput(self) -> float:
        return self.ok / self.wall if self.wall else 0.0


class Connection:
    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def ensure_open(self):
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def exchange(self, request: bytes) -> tuple[int, float, bytes]:
        """Send one request; return (status, seconds to first body bytes, body)."""
        await self.ensure_open()
        started = time.perf_counter()
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        first = None
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
            first = time.perf_counter()
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body, first = await self._read_chunked()
        else:
            body = await self.reader.read()
            first = time.perf_counter()
            self.close()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, (first or time.perf_counter()) - started, body

    async def _read_chunked(self) -> tuple[bytes, float | None]:
        """A chunked body, parsed from whatever bytes have arrived: a stream of many small events costs one
        read per TCP segment rather than three awaits per event."""
        buf, pos, parts, first = bytearray(), 0, [], None
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end >= 0:
                size = int(bytes(buf[pos:line_end]).split(b";")[0].strip(), 16)
                end = line_end + 2 + size + 2
                if len(buf) >= end:
                    if size == 0:
                        return b"".join(parts), first
                    parts.append(bytes(buf[line_end + 2 : line_end + 2 + size]))
                    if first is None:
                        first = time.perf_counter()
                    pos = end
                    continue
            data = await self.reader.read(1 << 16)
            if not data:
                raise asyncio.IncompleteReadError(bytes(buf), None)
            buf += data


def answer_ok(status: int, body: bytes, stream: bool) -> bool:
    if status != 200:
        return False
    if stream:  # chat ends with [DONE]; /v1/responses with response.completed; Anthropic Messages with message_stop
        return (
            body.rstrip().endswith((b"data: [DONE]", b'data: {"type":"message_stop"}'))
            or b"event: response.completed" in body
        )
    return (
        b'"choices"' in body or b'"object":"response"' in body or b'"type":"message"' in body or b'"embedding"' in body
    )


async def run_load(
    port: int,
    request: bytes,
    *,
    stream: bool,
    clients: int = 1,
    count: int | None = None,
    duration: float | None = None,
) -> Result:
    """`clients` connections send `request` back to back, until `count` requests in total were sent or
    `duration` seconds passed (requests in flight then still finish, so every request sent is answered)."""
    result = Result()
    deadline = None if duration is None else time.perf_counter() + duration

    def more() -> bool:
        if count is not None and result.sent >= count:
            return False
        return deadline is None or time.perf_counter() < deadline

    async def client():
        connection = Connection(port)
        try:
            while more():
                result.sent += 1
                started = time.perf_counter()
                try:
                    status, ttfb, body = await connection.exchange(request)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    connection.close()
                    result.errors += 1
                    if len(result.error_samples) < 5:
                        result.error_samples.append(repr(exc))
                    continue
                result.latencies.append(time.perf_counter() - started)
                result.ttfb.append(ttfb)
                if not answer_ok(status, body, stream):
                    result.errors += 1
                    if len(result.error_samples) < 5:
                        result.error_samples.append(f"{status} {body[:200]!r}")
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    result.wall = time.perf_counter() - started
    return result


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]
