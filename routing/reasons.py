"""Why an attempt on a route failed: the reason names the outcome table gives (routing/proxy/outcomes.py), the
breakers count (routing/breakers.py), and logs, headers and usage explanations show. The one place they are
spelled. Pure constants: import them anywhere."""

CONNECT_ERROR = "connect_error"
RESET = "reset"
TIMEOUT = "timeout"
INVALID_RESPONSE = "invalid_response"
STREAM_INTERRUPTED = "stream_interrupted"
CREDITS_EXHAUSTED = "credits_exhausted"
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
UPSTREAM_ERROR_EVENT = "upstream_error_event"  # an error event inside a stream


def http(status: int) -> str:
    """The reason for an upstream HTTP error status: `http_503`."""
    return f"http_{status}"


HTTP_429 = http(429)
