"""The batched request-log writer: the only code that writes RequestLog rows.

The request path calls `enqueue(row)` (a non-blocking append) and moves on; a daemon thread writes the buffered
rows every `RAINYMODEL_LOG_FLUSH_S` in one transaction together with the usage rollups and the keys'
`last_used_at`. A failed write keeps the rows and retries, so a database hiccup delays logs but never loses them;
`stop()` (lifespan shutdown, SIGTERM) writes whatever is left before the worker exits.
Never call the database from the request path: this module exists so that it does not have to.
"""

from __future__ import annotations

import atexit
import functools
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DataError, IntegrityError, connections, models, transaction
from django.db.backends.base.operations import BaseDatabaseOperations

from apikeys.models import APIKey
from rainymodel_site import metrics
from usage.models import RequestLog
from usage.rollups import add_to_rollups

log = logging.getLogger(__name__)

MAX_BATCH = 1000
# A bound on memory if the database is down for long: past it the oldest rows are dropped, and counted.
MAX_BUFFERED = 200_000


class LogWriter:
    def __init__(self):
        self._buffer: deque[dict] = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.dropped = 0
        self.written = 0

    def enqueue(self, row: dict) -> None:
        if len(self._buffer) >= MAX_BUFFERED:
            self._buffer.popleft()
            self.dropped += 1
            metrics.log_rows_dropped()
            log.error("request-log buffer full; dropped the oldest row (%d dropped so far)", self.dropped)
        self._buffer.append(row)
        if self._thread is None:
            self.start()

    def pending(self) -> int:
        return len(self._buffer)

    def start(self) -> None:
        with self._start_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="rainymodel-log-writer", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Write everything buffered, then stop the thread. Safe to call more than once."""
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None
        self.flush()

    def flush(self) -> int:
        """Write all buffered rows now (blocking). Returns how many were written."""
        total = 0
        with self._flush_lock:
            while self._buffer:
                batch = [self._buffer.popleft() for _ in range(min(MAX_BATCH, len(self._buffer)))]
                try:
                    write_batch(batch)
                except (DataError, IntegrityError):
                    # Something in the batch the database refuses, now and forever: write the rows one by one so
                    # one bad row cannot hold back every row behind it.
                    written = self._write_one_by_one(batch)
                    total += written
                    self.written += written
                    continue
                except Exception:
                    # The database is unavailable: put the rows back in order and let the next flush try again.
                    self._buffer.extendleft(reversed(batch))
                    log.exception("writing %d request-log rows failed; will retry", len(batch))
                    raise
                total += len(batch)
                self.written += len(batch)
        return total

    def _write_one_by_one(self, batch: list[dict]) -> int:
        written = 0
        for row in batch:
            try:
                write_batch([row])
                written += 1
            except (DataError, IntegrityError):
                self.dropped += 1
                metrics.log_rows_dropped()
                log.exception("request-log row %s refused by the database; dropped", row.get("id"))
        return written

    def _run(self) -> None:
        # The thread keeps its database connection between flushes (reconnecting every second costs CPU the event
        # loop then waits for); after an error it is dropped, and a fresh one is opened for the retry.
        interval = settings.RAINYMODEL_LOG_FLUSH_S
        metrics.log_flushed(0)  # a writer that just started is not behind
        try:
            while not self._stopping.is_set():
                self._wake.wait(interval)
                self._wake.clear()
                metrics.log_queue_rows(len(self._buffer))
                try:
                    written = self.flush()
                except Exception:
                    connections.close_all()
                    time.sleep(min(5.0, interval * 2))
                else:
                    metrics.log_flushed(written)
        finally:
            connections.close_all()


def write_batch(rows: list[dict]) -> None:
    with transaction.atomic():
        rows = _new_rows(rows, RequestLog)
        if not rows:
            return
        _insert(RequestLog, rows)
        add_to_rollups(rows)
        last_used: dict[int, object] = {}
        for row in rows:
            key_id = row.get("api_key_id")
            if key_id is not None and row["status"] != 401:
                last_used[key_id] = max(row["created_at"], last_used.get(key_id, row["created_at"]))
        for key_id, when in last_used.items():
            APIKey.objects.filter(pk=key_id).update(last_used_at=when)


def _insert(model, rows: list[dict]) -> None:
    """INSERT the rows with one executemany (COPY on PostgreSQL), values adapted as bulk_create would."""
    conn = connections[DEFAULT_DB_ALIAS]
    copy = conn.vendor == "postgresql" and COPY_ON_POSTGRESQL
    columns, adapt = _insert_plan(model, conn, copy=copy)
    values = [adapt(row) for row in rows]
    with conn.cursor() as cursor:
        if copy:
            # psycopg's own cursor, so its errors are turned into Django's (IntegrityError, ...) here by hand.
            statement = f"COPY {columns[0]} ({columns[1]}) FROM STDIN"
            with conn.wrap_database_errors, cursor.cursor.copy(statement) as copier:
                for value in values:
                    copier.write_row(value)
        else:
            cursor.executemany(f"INSERT INTO {columns[0]} ({columns[1]}) VALUES ({columns[2]})", values)


# Write RequestLog rows with PostgreSQL's COPY instead of a multi-row INSERT (bench/writer_cost.py measures both).
COPY_ON_POSTGRESQL = True

# Field classes whose `get_db_prep_save` returns a value of the given exact type as it is, on every backend we
# run (Django 6.1; tests/usage/test_writer.py compares both ways on the database in use): the fast path skips the
# five method calls per value that otherwise made up most of the writer's CPU (bench/writer_cost.py).
_AS_IS = {models.CharField: str, models.BooleanField: bool, models.ForeignKey: int}


def _insert_plan(model, conn, copy: bool = False) -> tuple[tuple[str, str, str], Callable[[dict], tuple]]:
    """The table and column names, and a function turning one row dict into the tuple of database values.

    Each value is adapted exactly as `field.get_db_prep_save(value, conn)` would (what bulk_create does): values
    of the plain types of char, boolean and key fields pass as they are, integers go through the backend's
    integer adaptation only (none for COPY, whose text format has no parameter types to choose), and every other
    field or unexpected type goes through the field itself."""
    ops = conn.ops
    plain_ints = copy or type(ops).adapt_integerfield_value is BaseDatabaseOperations.adapt_integerfield_value
    steps: list[tuple[str, Any, type | None, Callable[[Any], Any] | None]] = []
    for field in model._meta.concrete_fields:
        kind = type(field)
        if kind in _AS_IS:
            steps.append((field.attname, field, _AS_IS[kind], None))
        elif kind in (models.PositiveIntegerField, models.PositiveSmallIntegerField, models.IntegerField):
            integer = None if plain_ints else functools.partial(_adapt_int, ops, field.get_internal_type())
            steps.append((field.attname, field, int, integer))
        else:
            steps.append((field.attname, field, None, None))

    def adapt(row: dict) -> tuple:
        values = []
        for attname, field, plain, then in steps:
            value: Any = row[attname] if attname in row else field.get_default()
            if plain is not None and (value is None or type(value) is plain):
                values.append(value if then is None or value is None else then(value))
            else:
                values.append(field.get_db_prep_save(value, conn))
        return tuple(values)

    quote = ops.quote_name
    fields = model._meta.concrete_fields
    names = (
        quote(model._meta.db_table),
        ", ".join(quote(f.column) for f in fields),
        ", ".join(["%s"] * len(fields)),
    )
    return names, adapt


def _adapt_int(ops, internal_type: str, value: int):
    return ops.adapt_integerfield_value(value, internal_type)


def _new_rows(rows: list[dict], model) -> list[dict]:
    """The rows to insert, each with an id of its own and an endpoint.

    Our own ids are unique, so one already in the table means a retried batch whose first try did commit: those
    rows are dropped, so neither the log nor the rollups count them twice. Client-supplied ids (X-Request-ID) may
    repeat: such a call still gets its row, under a suffixed id."""
    from usage.models import DEFAULT_ENDPOINT

    rows = [dict(row) for row in rows]
    for row in rows:  # a writer that predates RequestLog.endpoint logs chat, the only endpoint there was
        row["endpoint"] = row.get("endpoint") or DEFAULT_ENDPOINT
    client_ids = {row["id"] for row in rows if row.pop("_client_request_id", False)}
    taken = set(model.objects.filter(id__in=[row["id"] for row in rows]).values_list("id", flat=True))
    out, seen = [], set()
    for row in rows:
        if row["id"] in client_ids and (row["id"] in taken or row["id"] in seen):
            row["id"] = f"{row['id'][:40]}~{uuid.uuid4().hex[:12]}"
        elif row["id"] in taken or row["id"] in seen:
            continue
        seen.add(row["id"])
        out.append(row)
    return out


writer = LogWriter()
enqueue = writer.enqueue
start = writer.start
stop = writer.stop
flush = writer.flush
atexit.register(writer.stop)
