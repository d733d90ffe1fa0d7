"""Production server settings: gunicorn reads this file from the working directory at start, so the start command
needs no flags (`gunicorn rainymodel_site.asgi:application`). The limits here are what a hostile client may cost
one worker; docs/security.md measures each of them and docs/operations.md explains them.

uvicorn_worker's UvicornWorker ignores `limit_request_*` and `worker_connections`; `RainyModelWorker`
(rainymodel_site/http_protocol.py) is the same worker with them applied to the HTTP parser. Do not pass
`-k uvicorn_worker.UvicornWorker` (or any `--worker-class`) on the command line: it replaces this worker class and
every limit below silently stops applying.
"""

import os
import shutil
import tempfile
from pathlib import Path

wsgi_app = "rainymodel_site.asgi:application"
worker_class = "rainymodel_site.http_protocol.RainyModelWorker"
bind = "0.0.0.0:" + os.environ.get("PORT", "8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))  # more than one only with REDIS_URL (docs/shared-state.md)

# The request head: a longer request line gets 414, more or longer headers 431 (gunicorn's own defaults).
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190

# Open connections per worker; one more gets a 503 and is closed before anything is read.
worker_connections = 1000

# Seconds an idle kept-alive connection stays open. Longer than the idle timeout of the load balancer in front
# (commonly 60 s), so it never reuses a connection we are closing at that moment.
keepalive = 75

# SIGTERM: in-flight calls get this long to finish, then each worker flushes its buffered request-log rows.
graceful_timeout = 50

# Metrics (docs/observability.md): prometheus-client's multiprocess mode, so GET /metrics answers with the sum over
# every worker whichever worker serves it. Each worker writes its values to files in PROMETHEUS_MULTIPROC_DIR; the
# variable must be set before a worker imports prometheus_client, hence here, in the master, before any fork.
# Unset: a fresh temporary directory of this server's own, removed when the server exits.
_metrics_dir_made = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _metrics_dir_made:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="rainymodel-metrics-")


def on_starting(server):
    """A directory given by the operator may hold a previous run's files: counters would resume from them."""
    for path in Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).glob("*.db"):
        path.unlink(missing_ok=True)


def child_exit(server, worker):
    """A worker's counters stay in the sums after it exits; its live gauges (log queue, last flush) must not."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _metrics_dir_made:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
