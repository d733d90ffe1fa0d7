"""The HTTP server's own limits: what a client may cost us before a request even exists.

uvicorn's httptools protocol has no limit on the request line, on header count or size, no deadline for reading
the headers and no timer on a connection that never says anything: a 32 MB header, 10,000 headers, a header sent
one byte every 2 s or a silent connection are all held for as long as the client likes. `LimitedHttpToolsProtocol`
adds those limits (and a cap on open connections per worker) to the same fast parser:

- request line longer than `max_request_line` -> 414; more than `max_header_fields` headers, one longer than
  `max_header_field_size`, or more than `max_head_bytes` of head in all -> 431 (counted while it arrives, so a
  32 MB header costs at most one socket read beyond the limit);
- headers not complete within `header_timeout_s` of the connection opening (or, on a kept-alive connection, of the
  next request's first byte) -> 408 and the connection closed. Idle kept-alive connections are closed by uvicorn's
  own `timeout_keep_alive`; a stalled *body* is the ASGI layer's job (rainymodel_site/asgi.py, 408);
- a connection beyond `max_connections` open in this worker gets a 503 and is closed before anything is read.

These refusals happen before there is a request, so they have no RequestLog row (there is no call to log).
The defaults are gunicorn's own (`limit_request_line`, `limit_request_fields`, `limit_request_field_size`,
`worker_connections`); `RainyModelWorker` passes gunicorn.conf.py's values in, because uvicorn_worker's
UvicornWorker passes none of them to uvicorn. `make run` selects the protocol with `--http`.

It must never touch Django: it runs in the server, under every request, before the application.
"""

from __future__ import annotations

import os

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

from rainymodel_site import error_codes as codes


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


class RequestRefused(Exception):
    """Raised inside a parser callback to stop parsing; `send_400_response` then sends `status` instead."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    max_request_line = 8190
    max_header_fields = 100
    max_header_field_size = 8190
    max_head_bytes = 64 * 1024
    header_timeout_s = _env_float("RAINYMODEL_HEADER_TIMEOUT_S", 10.0)
    max_connections = int(_env_float("RAINYMODEL_MAX_CONNECTIONS", 1000))

    _refusal: tuple[int, str, str] | None = None
    _head_deadline = None
    _reading_head = True
    _head_bytes = 0
    _fields = 0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refuse(503, "server_busy", "Too many open connections; try again shortly.")
            return
        self._arm_head_deadline()

    def connection_lost(self, exc) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return
        reading_head = self._reading_head
        super().data_received(data)
        # Still reading the head after this read: every byte of it was head (a body cannot start before it ends).
        if reading_head and self._reading_head and self._refusal is None and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(
                    431,
                    "request_header_fields_too_large",
                    f"The request head is larger than {self.max_head_bytes} bytes.",
                )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head = True
        self._head_bytes = 0
        self._fields = 0
        if self._head_deadline is None:
            self._arm_head_deadline()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.max_request_line:
            self._stop(414, "uri_too_long", f"The request line is longer than {self.max_request_line} bytes.")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        if self._fields > self.max_header_fields:
            self._stop(
                431, "request_header_fields_too_large", f"The request has more than {self.max_header_fields} headers."
            )
        if len(name) + len(value) > self.max_header_field_size:
            self._stop(
                431,
                "request_header_fields_too_large",
                f"A request header is longer than {self.max_header_field_size} bytes.",
            )
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._disarm_head_deadline()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:
            status, code, message = self._refusal
            self._refusal = None
            self._refuse(status, code, message)
        else:
            super().send_400_response(msg)

    # --- refusing ---

    def _stop(self, status: int, code: str, message: str):
        """From a parser callback: remember the answer, and make httptools stop (it reports a parser error)."""
        self._refusal = (status, code, message)
        raise RequestRefused(message)

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer in the API's error shape and close the connection, whatever the client is still sending."""
        self._refusal = (status, code, message)
        self._disarm_head_deadline()
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request refused while the previous answer is still being written: no bytes of ours
            # in the middle of that answer, just the close.
            self.transport.close()
            return
        body = (
            f'{{"error": {{"message": "{message}", "type": "invalid_request_error", "param": null, "code": "{code}"}}}}'
        ).encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (status, REASONS[status], len(body))
            + body
        )
        self.transport.close()

    def _arm_head_deadline(self) -> None:
        self._head_deadline = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self._reading_head:
            self._refuse(
                408, codes.REQUEST_TIMEOUT, f"The request headers did not arrive within {self.header_timeout_s:g} s."
            )


REASONS = {
    408: b"Request Timeout",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


class RainyModelWorker(UvicornWorker):
    """gunicorn's uvicorn worker, with gunicorn.conf.py's request limits actually applied.

    uvicorn_worker.UvicornWorker passes only keepalive, timeout, max_requests, forwarded_allow_ips and backlog to
    uvicorn; `limit_request_line`, `limit_request_fields`, `limit_request_field_size` and `worker_connections` are
    silently ignored. This worker hands them to `LimitedHttpToolsProtocol` (one class per worker process).
    """

    CONFIG_KWARGS = {"loop": "uvloop", "http": LimitedHttpToolsProtocol}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # gunicorn's 0 means "unlimited" for these; keep ours then.
        if self.cfg.limit_request_line:
            LimitedHttpToolsProtocol.max_request_line = self.cfg.limit_request_line
        if self.cfg.limit_request_fields:
            LimitedHttpToolsProtocol.max_header_fields = self.cfg.limit_request_fields
        if self.cfg.limit_request_field_size:
            LimitedHttpToolsProtocol.max_header_field_size = self.cfg.limit_request_field_size
        if self.cfg.worker_connections:
            LimitedHttpToolsProtocol.max_connections = self.cfg.worker_connections
