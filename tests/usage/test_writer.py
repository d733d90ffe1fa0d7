"""usage/writer.py: batched writes that never lose a row and never count one twice."""

from datetime import UTC, datetime

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
