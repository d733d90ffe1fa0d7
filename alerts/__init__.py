"""Alerts by email and signed webhook (issue 15): quotas crossing 80/95/100 %, providers' breakers opening and
closing, every route of an alias failing. events.py is what the request path calls (queue only); dispatch.py the
background thread that claims and delivers; delivery.py one email or webhook attempt; models.py and admin.py who is
told and what was told. docs/observability.md, "Alerts"."""
