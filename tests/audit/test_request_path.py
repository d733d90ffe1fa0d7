"""The request path writes no history: real calls through the in-process server update the key's `last_used_at`
(the log writer) and leave every historical table as it was."""

from __future__ import annotations

from simple_history.utils import get_history_model_for_model

from apikeys.models import APIKey
from audit.history import AUDITED
from tests.e2e.conftest import chat, proxy  # noqa: F401  (the in-process server fixture)
from tests.fakes.routing_config import upstream


def history_rows() -> dict[str, int]:
    return {m._meta.label: get_history_model_for_model(m).objects.count() for m in AUDITED}


def test_calls_update_last_used_at_and_write_no_history(fake_upstream, make_routing, api_key, proxy):  # noqa: F811
    make_routing(upstream(fake_upstream))
    api_key_row, key = api_key()
    before = history_rows()
    assert before["apikeys.APIKey"] == 1

    assert [proxy.post(key, chat()).status_code for _ in range(3)] == [200, 200, 200]
    assert len(proxy.logs(3)) == 3

    assert APIKey.objects.get(pk=api_key_row.pk).last_used_at is not None
    assert history_rows() == before
