"""The `code` of every error RainyModel itself answers with (SPEC §5), beside the error shape that carries it
(rainymodel_site/api_errors.py). The one place they are spelled; usage/explanations.py says each in words.

Codes that only repeat OpenAI's own request-validation codes (`invalid_type`, `invalid_value`, ...) stay with the
validator (routing/proxy/validation.py); an upstream's own error code is passed through as it came.
"""

# The edge and the request (400, 404, 405, 408, 413)
BAD_REQUEST = "bad_request"
INVALID_HOST = "invalid_host"
INVALID_JSON = "invalid_json"
REQUEST_TOO_LARGE = "request_too_large"
REQUEST_TIMEOUT = "request_timeout"
UNKNOWN_URL = "unknown_url"
METHOD_NOT_ALLOWED = "method_not_allowed"
INTERNAL_ERROR = "internal_error"

# The key (401, 403)
INVALID_API_KEY = "invalid_api_key"
KEY_EXPIRED = "key_expired"
PERMISSION_DENIED = "permission_denied"

# Model and policy (400, 403, 404)
MODEL_NOT_FOUND = "model_not_found"
MODEL_NOT_ALLOWED = "model_not_allowed"
UNKNOWN_POLICY = "unknown_policy"
POLICY_NOT_ALLOWED = "policy_not_allowed"

# Limits (429): raised by limits/
RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
QUOTA_EXCEEDED = "quota_exceeded"

# Routes and upstreams (499, 502, 503, 504)
NO_AVAILABLE_ROUTE = "no_available_route"
ALL_UPSTREAMS_FAILED = "all_upstreams_failed"
UPSTREAM_TIMEOUT = "upstream_timeout"
STREAM_INTERRUPTED = "stream_interrupted"
CLIENT_DISCONNECTED = "client_disconnected"

# /v1/usage (400)
INVALID_PERIOD = "invalid_period"
INVALID_GROUP_BY = "invalid_group_by"

# Answered only outside chat completions (error pages, unknown URLs, /v1/usage), so never in the request log and
# not explained on its pages (usage/explanations.py explains every other code here).
NOT_LOGGED = frozenset({BAD_REQUEST, PERMISSION_DENIED, UNKNOWN_URL, INVALID_PERIOD, INVALID_GROUP_BY})
