"""Framework code we copy or lean on is pinned: this fails when the installed Django or adrf changes it.

`rainymodel_site.asgi.ApiHandler.handle` is a copy of Django's `ASGIHandler.handle` (without the request signals)
that also calls other ASGIHandler internals and sets an ASGIRequest's body stream after it was made, and
`routing.proxy.api.ApiView.async_dispatch` is a copy of adrf's `APIView.async_dispatch` (with `initial()` inline).
`rainymodel_site.metrics._observe_many` adds a bulk of observations to a prometheus-client Histogram child through
its internals (`_sum`, `_buckets`, as `_metric_init` makes them and `observe` fills them); its behaviour is also
checked against `observe` in tests/test_metrics.py. When this test fails after an upgrade, read the upstream diff,
carry what matters into our copies, then record the new fingerprints below (the failure message prints them).
"""

import hashlib
import inspect
from importlib.metadata import version

from adrf.views import APIView
from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from prometheus_client import Histogram

# (version, sha256 of the source, first 16 hex digits) of each upstream function our copies follow or call.
PINNED = {
    "django": (
        "6.1.3",
        {
            "ASGIHandler.handle": "c91f27c7fcdc3fff",
            "ASGIHandler.read_body": "88b4e284fc829700",
            "ASGIHandler.create_request": "5eae59c6696013ff",
            "ASGIHandler.send_response": "d91e83d2c6859eda",
            "ASGIHandler.listen_for_disconnect": "c729aa315c734f98",
            "ASGIHandler.run_get_response": "0234ea5fe09a5777",
            "ASGIRequest.__init__": "bb92eb4ad9d363bf",  # ApiHandler sets the body as `_stream` after the checks
        },
    ),
    "adrf": (
        "0.1.14",
        {
            "APIView.async_dispatch": "5926f734eb685633",
        },
    ),
    "prometheus-client": (
        "0.26.0",
        {
            "Histogram._metric_init": "61aeac1b768d4786",
            "Histogram.observe": "38beca3be1d1595b",
        },
    ),
}

OWNERS = {"ASGIHandler": ASGIHandler, "ASGIRequest": ASGIRequest, "APIView": APIView, "Histogram": Histogram}


def fingerprint(qualname: str) -> str:
    owner, name = qualname.split(".")
    return hashlib.sha256(inspect.getsource(getattr(OWNERS[owner], name)).encode()).hexdigest()[:16]


def test_copied_framework_code_is_unchanged():
    changed = []
    for package, (pinned_version, functions) in PINNED.items():
        installed = version(package)
        for qualname, expected in functions.items():
            actual = fingerprint(qualname)
            if installed != pinned_version or actual != expected:
                changed.append(f"{package} {installed} (pinned {pinned_version}): {qualname} = {actual!r}")
    assert not changed, "Upstream code our copies follow changed; review and re-pin:\n" + "\n".join(changed)
