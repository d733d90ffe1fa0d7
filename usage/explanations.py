"""What a request-log row means in words: an explanation for each error code and each attempt outcome.

RequestLog keeps the error code, not the message the client was sent, so the request-log detail page derives a
human explanation from the code here. Codes come from the proxy (routing/proxy/flow.py, chain.py), authentication
and limits (apikeys/auth.py, limits/), and upstreams (whose own `error.code` is logged when they return
a client error). A code not listed falls back to an explanation of its HTTP status. Pure data: no database.
"""

from __future__ import annotations

# Error code (RequestLog.error_code) -> what happened and what the caller can do about it.
ERROR_CODES = {
    # authentication (401) and the per-IP limit on failed authentication
    "invalid_api_key": "The API key was missing, unknown or revoked, so the request was refused before anything "
    "else was checked. Send a valid key as 'Authorization: Bearer <key>'.",
    "key_expired": "The API key has passed its expiry date. Ask an administrator for a new key.",
    # the request body (400, 413)
    "invalid_json": "The request body was not a JSON object, so it could not be read.",
    "missing_required_parameter": "A required field ('model' or 'messages') was missing from the request body.",
    "invalid_type": "A field had the wrong type (e.g. 'model' not a string, 'messages' not a list of objects, "
    "'max_tokens' not a whole number); the error's param names the field.",
    "request_too_large": "The request body was larger than the server accepts.",
    "request_timeout": "The request body did not arrive in time (RAINYMODEL_BODY_TIMEOUT_S), so the server stopped "
    "waiting for it.",
    "invalid_value": "A field had a value OpenAI's API does not accept (e.g. an unknown message role or "
    "response_format type); the error's param names the field.",
    "integer_below_min_value": "A whole-number field (e.g. max_tokens or n) was below its smallest allowed value.",
    "integer_above_max_value": "A whole-number field (e.g. n or top_logprobs) was above its largest allowed value.",
    "decimal_below_min_value": "A number field (e.g. temperature or a penalty) was below its smallest allowed value.",
    "decimal_above_max_value": "A number field (e.g. temperature or top_p) was above its largest allowed value.",
    "array_above_max_length": "A list field (e.g. stop) had more entries than allowed.",
    "empty_array": "A list field that needs at least one entry (e.g. a completions prompt) was empty.",
    "invalid_host": "The request named a Host this server does not answer for (ALLOWED_HOSTS).",
    "method_not_allowed": "The endpoint does not accept this HTTP method.",
    "unsupported_media_type": "The request body was not sent as application/json.",
    # alias and policy (400, 403, 404)
    "model_not_found": "The requested model is not an alias RainyModel knows (and the name was not one the "
    "catch-all alias takes). GET /v1/models lists the aliases this key may use.",
    "model_not_allowed": "This API key is restricted to other aliases and may not use the one requested.",
    "unknown_policy": "The X-RainyModel-Policy header named a policy that does not exist.",
    "policy_not_allowed": "This API key is restricted to other policies and may not use the one requested.",
    "unsupported_endpoint": "None of the alias's routes is configured for this endpoint (chat, embeddings or "
    "completions; a route's endpoints are set on the alias page).",
    # refused by the HTTP server before a request existed (rainymodel_site/http_protocol.py): such refusals have no
    # log row today, but their codes get words like every other
    "request_header_fields_too_large": "The request's headers were too many or too large for the server.",
    "uri_too_long": "The request line (method and URL) was longer than the server accepts.",
    "server_busy": "The server had too many open connections and refused this one before reading it.",
    # /v1/messages logs Anthropic's error type as its code (its API has no separate code field)
    "invalid_request_error": "An Anthropic Messages request (/v1/messages) was malformed or invalid; the error "
    "message sent to the client named the field.",
    # limits (429)
    "rate_limit_exceeded": "A per-minute limit was reached (the key's requests or tokens per minute, its "
    "concurrent requests, or too many failed sign-ins from this address). Nothing was sent "
    "upstream; retry after the Retry-After the client was given.",
    "quota_exceeded": "The key's daily or monthly quota (requests, tokens or cost) was used up. Nothing was sent "
    "upstream; the quota resets at the start of the next UTC day or month.",
    # routing and upstreams (5xx)
    "no_available_route": "Every route of the alias was cooling down after failures (circuit breaker open), so "
    "no upstream was tried.",
    "all_upstreams_failed": "Every route in the chain was tried and failed; the attempts below say how each one "
    "failed.",
    "upstream_timeout": "Every route that was tried timed out.",
    "stream_interrupted": "The stream broke after the answer had started and no other route could finish it; "
    "the client got an error event at the end of the stream instead of [DONE].",
    "context_length_exceeded": "The conversation was longer than the context window of every route that could take it.",
    "credits_exhausted": "The upstream account has run out of credits (HTTP 402).",
    "client_disconnected": "The client closed the connection before the answer was complete (logged as 499).",
    "internal_error": "RainyModel itself failed while serving the request (a bug: the server log has the "
    "traceback for this request id).",
}

# HTTP status -> explanation, for codes not listed above (an upstream's own error code, for instance).
STATUSES = {
    400: "The request was refused as malformed or invalid.",
    401: "The request was not authenticated.",
    402: "Payment required: an upstream account is out of credit.",
    403: "The key may not do what was asked.",
    404: "What was asked for does not exist.",
    408: "The request took too long to arrive.",
    413: "The request was too large.",
    422: "The upstream could not process the request as sent.",
    429: "A rate limit or quota was reached.",
    499: "The client went away before the answer was complete.",
    500: "The server failed while handling the request.",
    502: "The upstreams failed to give a usable answer.",
    503: "No upstream was available.",
    504: "The upstreams did not answer in time.",
}

# Attempt outcome (RequestLog.attempts[i]["outcome"]) -> what happened to that attempt.
OUTCOMES = {
    "ok": "answered",
    "continued": "finished a broken stream by continuing the answer (assistant prefill)",
    "restarted": "finished a broken stream by answering again and splicing the new text on",
    "splice_mismatch": "answered again, but the new answer did not begin with the text already sent",
    "stream_interrupted": "the stream broke after the answer had started",
    "upstream_error_event": "the upstream sent an error event in the middle of the stream",
    "connect_error": "could not connect to the upstream (retried)",
    "reset": "the connection was reset before the answer began (retried)",
    "timeout": "no answer within the route's timeout (moved on)",
    "invalid_response": "the upstream's answer could not be read (moved on)",
    "credits_exhausted": "the upstream account is out of credit: HTTP 402 (moved on)",
    "context_length_exceeded": "the conversation does not fit this route's context window (moved to a larger one)",
    "http_401": "the upstream refused RainyModel's credentials: HTTP 401 (moved on)",
    "http_403": "the upstream refused access: HTTP 403 (moved on)",
    "http_404": "the upstream does not know the model: HTTP 404 (moved on)",
    "http_429": "the upstream was rate-limiting: HTTP 429 (retried or moved on)",
    "http_500": "upstream server error: HTTP 500 (retried)",
    "http_502": "upstream gateway error: HTTP 502 (retried)",
    "http_503": "upstream unavailable: HTTP 503 (retried)",
    "http_504": "upstream gateway timeout: HTTP 504 (retried)",
}


def explain_error(status: int, error_code: str) -> str:
    """Why a call ended as it did, in a sentence or two; empty for a success without an error code."""
    if error_code in ERROR_CODES:
        return ERROR_CODES[error_code]
    if status < 400 and not error_code:
        return ""
    general = STATUSES.get(status) or (
        "The request failed on the client side."
        if 400 <= status < 500
        else "The request failed on the server side."
        if status >= 500
        else ""
    )
    if error_code and 400 <= status < 500:
        return (
            f"{general} '{error_code}' is not one of RainyModel's own codes: it is the code of the upstream "
            f"that refused the request, whose error was passed on to the client as it was.".strip()
        )
    if error_code:
        return f"{general} '{error_code}' is not one of RainyModel's own codes.".strip()
    return general


def explain_outcome(outcome: str) -> str:
    """What happened to one upstream attempt ("answered", "upstream gateway error: HTTP 502 (retried)", …)."""
    if outcome in OUTCOMES:
        return OUTCOMES[outcome]
    if outcome.startswith("http_") and outcome[5:].isdigit():
        status = int(outcome[5:])
        kind = "refused the request" if 400 <= status < 500 else "failed"
        return f"the upstream {kind}: HTTP {status}"
    return outcome.replace("_", " ")
