"""usage/explanations.py: every error code RainyModel itself logs has an explanation, so no row of the request
log is left unexplained when the proxy grows a new code; other codes fall back to their HTTP status."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rainymodel_site import error_codes
from routing.proxy import outcomes
from usage import explanations

ROOT = Path(__file__).resolve().parents[2]
# Where codes are born: ApiError(status, "code", …), KeyRejected("code", …), LimitExceeded("code", …),
# call.finish(status, "code"), reject_early(request, status, "code", …).
CODE_SITES = re.compile(
    r"(?:ApiError\(\s*\d{3},|KeyRejected\(|LimitExceeded\(\s*|finish\(\s*\d{3},|"
    r'reject_early\(\s*request,\s*\d{3},|InvalidRequest\(|\n\s*\d{3},)\s*"([a-z_]+)"'
)


def _codes_in_source() -> set[str]:
    """Every code in rainymodel_site/error_codes.py, plus those still written as literals where they are born
    (limits/, the validator's OpenAI codes)."""
    codes = {value for name, value in vars(error_codes).items() if name.isupper() and isinstance(value, str)}
    codes -= error_codes.NOT_LOGGED
    for folder in ("routing", "apikeys", "limits", "rainymodel_site"):
        for path in (ROOT / folder).rglob("*.py"):
            codes.update(CODE_SITES.findall(path.read_text()))
    return codes


def test_the_source_scan_finds_the_codes_it_should():
    codes = _codes_in_source()
    assert {
        "invalid_api_key",
        "quota_exceeded",
        "model_not_allowed",
        "all_upstreams_failed",
        "client_disconnected",
        "invalid_host",
        "request_timeout",
        "integer_below_min_value",
    } <= codes


def test_every_code_the_proxy_logs_is_explained():
    missing = _codes_in_source() - set(explanations.ERROR_CODES)
    assert not missing, f"add these codes to usage/explanations.py ERROR_CODES: {sorted(missing)}"


def test_every_attempt_outcome_the_proxy_records_is_explained():
    named = {
        value
        for name, value in vars(outcomes).items()
        if name.isupper() and isinstance(value, str) and name not in ("RETRY", "NEXT", "RETURN", "CONTEXT")
    }
    missing = named - set(explanations.OUTCOMES)
    assert not missing, sorted(missing)


@pytest.mark.parametrize(
    ("status", "code", "start"),
    [
        (429, "quota_exceeded", "The key's daily or monthly quota"),
        (400, "content_filter", "The request was refused as malformed or invalid. 'content_filter' is not one of"),
        (418, "", "The request failed on the client side."),
        (502, "odd_gateway", "The upstreams failed to give a usable answer. 'odd_gateway' is not one of RainyModel's"),
        (200, "", ""),
    ],
)
def test_explain_error(status, code, start):
    assert explanations.explain_error(status, code).startswith(start)


@pytest.mark.parametrize(
    ("outcome", "text"),
    [
        ("ok", "answered"),
        ("http_502", "upstream gateway error: HTTP 502 (retried)"),
        ("http_418", "the upstream refused the request: HTTP 418"),
        ("http_599", "the upstream failed: HTTP 599"),
        ("something_new", "something new"),
    ],
)
def test_explain_outcome(outcome, text):
    assert explanations.explain_outcome(outcome) == text
