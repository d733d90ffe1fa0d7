"""usage/writer.py: batched writes that never lose a row and never count one twice."""

import enum
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from usage.models import RequestLog, UsageHourly
from usage.writer import LogWriter, write_batch

pytestmark = pytest.mark.django_db(transaction=True)


def row(id, client=False, **fields):
    return {
        "id": id,
        "_client_request_id": client,
        "created_at": datetime.now(UTC),
        "api_key_id": None,
        "key_prefix": "",
        "requested_model": "m",
        "alias": "rainymodel/auto",
        "policy": "auto",
        "tier": "free",
        "provider": "hf",
        "upstream_model": "m",
        "status": 200,
        "error_code": "",
        "stream": False,
        "latency_ms": 5,
        "ttft_ms": None,
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "usage_estimated": False,
        "cost_usd": 0,
        "attempts": [],
        "fallback": False,
        "client_ip": None,
        "user_agent": "",
        **fields,
    }


def total_rollup_requests():
    from django.db.models import Sum

    return UsageHourly.objects.aggregate(n=Sum("requests"))["n"] or 0


def test_a_retried_batch_that_had_committed_is_not_counted_twice():
    batch = [row("req_a"), row("req_b")]
    write_batch(batch)
    write_batch(batch)  # the writer retries after an error that came after the commit
    assert RequestLog.objects.count() == 2
    assert total_rollup_requests() == 2


def test_repeated_client_ids_each_get_a_row():
    write_batch([row("same", client=True), row("same", client=True)])
    write_batch([row("same", client=True)])
    assert RequestLog.objects.count() == 3
    assert RequestLog.objects.filter(id="same").count() == 1
    assert total_rollup_requests() == 3


def test_rows_survive_a_failed_write_and_go_in_on_the_next_flush(monkeypatch):
    import usage.writer as module

    writer = LogWriter()
    writer.enqueue(row("req_x"))
    writer.stop()  # the thread started by enqueue is not needed here
    writer.enqueue = writer._buffer.append  # keep the next row buffered, no thread
    writer.enqueue(row("req_y"))
    real = module.write_batch
    monkeypatch.setattr(module, "write_batch", lambda rows: (_ for _ in ()).throw(RuntimeError("db down")))
    with pytest.raises(RuntimeError):
        writer.flush()
    assert writer.pending() == 1
    monkeypatch.setattr(module, "write_batch", real)
    assert writer.flush() == 1
    assert set(RequestLog.objects.values_list("id", flat=True)) == {"req_x", "req_y"}


def test_a_row_the_database_refuses_does_not_hold_back_the_others():
    writer = LogWriter()
    writer.enqueue = writer._buffer.append  # no thread: flush by hand
    writer.enqueue(row("req_good_1"))
    writer.enqueue(row("req_bad", latency_ms=-5))  # a positive-integer column refuses it
    writer.enqueue(row("req_good_2"))
    assert writer.flush() == 2
    assert writer.dropped == 1 and writer.pending() == 0
    assert set(RequestLog.objects.values_list("id", flat=True)) == {"req_good_1", "req_good_2"}


class Tier(enum.IntEnum):  # an int of another type: must go through the field, not the fast path
    OK = 200


VARIED_ROWS = [
    row("req_v1"),
    row(
        "req_v2",
        api_key_id=7,
        key_prefix="rm-abcdefgh",
        status=Tier.OK,
        stream=True,
        ttft_ms=3,
        cost_usd=0.00012345,
        attempts=[{"route": "free/hf/m", "status": 429, "outcome": "retry", "ms": 4}],
        fallback=True,
        client_ip="2001:0db8:0000:0000:0000:0000:0000:0001",
        user_agent="openai-python/1.0 ✓",
        endpoint="embeddings",
    ),
    row("req_v3", cost_usd=Decimal("0.5"), client_ip="10.0.0.1", latency_ms=12, error_code="rate_limited"),
    row("req_v4", synthetic=True, admitted=True, prompt_tokens=2**31 - 1),
]


def comparable(value):
    """A database value as (type, value); psycopg's JSON wrapper compares by the object it wraps."""
    return (type(value), getattr(value, "obj", value))


@pytest.mark.parametrize("given", VARIED_ROWS, ids=lambda r: r["id"])
def test_each_value_is_adapted_exactly_as_its_field_would(given):
    from django.db import connection

    from usage.writer import _insert_plan

    _, adapt = _insert_plan(RequestLog, connection)
    fields = RequestLog._meta.concrete_fields
    expected = [
        f.get_db_prep_save(given[f.attname] if f.attname in given else f.get_default(), connection) for f in fields
    ]
    assert [comparable(v) for v in adapt(given)] == [comparable(v) for v in expected]


def test_rows_read_back_as_written():
    from django.db import connection

    from usage import writer as module

    for copy in (True, False):  # COPY (PostgreSQL only) and the multi-row INSERT
        module.COPY_ON_POSTGRESQL = copy
        try:
            write_batch([{**r, "id": f"{r['id']}_{copy}"} for r in VARIED_ROWS])
        finally:
            module.COPY_ON_POSTGRESQL = True
        for given in VARIED_ROWS:
            stored = RequestLog.objects.get(id=f"{given['id']}_{copy}")
            assert stored.created_at == given["created_at"]
            assert stored.status == 200 and stored.endpoint == given.get("endpoint", "chat")
            assert stored.cost_usd == Decimal(str(given["cost_usd"])).quantize(Decimal("1e-8"))
            assert stored.attempts == given["attempts"]
            assert stored.ttft_ms == given["ttft_ms"] and stored.stream == given["stream"]
            assert stored.fallback == given["fallback"] and stored.admitted == given.get("admitted", False)
            assert stored.synthetic == given.get("synthetic", False)
            assert stored.client_ip == (
                "2001:db8::1" if given["client_ip"] and ":" in given["client_ip"] else given["client_ip"]
            )
            assert stored.user_agent == given["user_agent"] and stored.api_key_id == given["api_key_id"]
            assert stored.prompt_tokens == given["prompt_tokens"]
    assert connection.vendor in ("sqlite", "postgresql")
