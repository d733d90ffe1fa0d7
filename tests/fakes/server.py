"""RainyModel as a real server process, for end-to-end tests and benchmarks.

`RainyModelServer` starts `uvicorn rainymodel_site.asgi:application` as a subprocess on a free loopback port, with
the production settings module pointed at the current test database, and waits until `/health` answers;
`ProductionServer` starts the production command instead (gunicorn reading gunicorn.conf.py, `workers` workers).
`stop()` sends SIGTERM and waits, so the lifespan shutdown flushes buffered request-log rows exactly as in production.

It never mocks anything: what a test sees through `.url` is the real ASGI stack, over a real socket.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
# Every server process has this master key unless the test gives another: `/health/ready` shows its checks only to
# staff and to the master key.
MASTER_KEY = "rm-master-key-of-the-test-servers-00000000000"
MASTER_KEY_HEADERS = {"Authorization": f"Bearer {MASTER_KEY}"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url_for(settings_dict: dict) -> str:
    """A DATABASE_URL naming the database described by a Django DATABASES entry (after test-DB setup its NAME is
    the test database)."""
    engine = settings_dict["ENGINE"]
    if engine == "django.db.backends.sqlite3":
        return "sqlite:///" + str(settings_dict["NAME"])
    if engine == "django.db.backends.postgresql":
        user = quote(settings_dict.get("USER") or "", safe="")
        password = quote(settings_dict.get("PASSWORD") or "", safe="")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = settings_dict.get("HOST") or ""
        port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
        return f"postgres://{auth}{host}{port}/{quote(str(settings_dict['NAME']), safe='')}"
    raise ValueError(f"no DATABASE_URL form for {engine}")


def env_for_test_database() -> dict[str, str]:
    """Environment that points a server process at the test process's current database, secret and cache."""
    from django.conf import settings
    from django.db import connection

    env = {
        "DJANGO_SETTINGS_MODULE": "rainymodel_site.settings",
        "SECRET_KEY": settings.SECRET_KEY,
        "DATABASE_URL": database_url_for(connection.settings_dict),
    }
    if os.environ.get("REDIS_URL"):
        env["REDIS_URL"] = os.environ["REDIS_URL"]
    return env


class ServerFailed(RuntimeError):
    """The server process exited or never became healthy; the message carries its output."""


class RainyModelServer:
    """One RainyModel server process.

    `env` is added to (and overrides) the environment built from the test database; pass `database_url=` to use
    another database (the benchmark does). Output goes to a temporary file: `log_text()`.
    """

    def __init__(
        self,
        env: dict[str, str] | None = None,
        port: int | None = None,
        workers: int = 1,
        database_url: str | None = None,
        base_env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self._extra_args = tuple(extra_args)
        merged = dict(os.environ)
        merged.pop("DJANGO_SETTINGS_MODULE", None)
        merged.update(base_env if base_env is not None else env_for_test_database())
        if database_url:
            merged["DATABASE_URL"] = database_url
        merged["RAINYMODEL_LOG_FLUSH_S"] = "0.05"
        merged["RAINYMODEL_SNAPSHOT_POLL_S"] = "0.2"
        merged["PYTHONUNBUFFERED"] = "1"
        merged.setdefault("RAINYMODEL_MASTER_KEY", MASTER_KEY)
        merged.update(env or {})
        self.env = merged
        self.process: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="rainymodel-server-", suffix=".log", delete=False)
        self.log_path = Path(self._log.name)

    def __enter__(self) -> RainyModelServer:
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "rainymodel_site.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--lifespan",
            "on",
            "--no-access-log",
            "--timeout-graceful-shutdown",
            "5",
            "--workers",
            str(self.workers),
            *self._extra_args,
        ]

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> RainyModelServer:
        self.process = subprocess.Popen(
            self.command(),
            cwd=PROJECT_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            while True:
                if self.process.poll() is not None:
                    raise ServerFailed(
                        f"RainyModel exited with code {self.process.returncode} during startup:\n{self.log_text()}"
                    )
                try:
                    if client.get(self.url + "/health").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise ServerFailed(f"RainyModel did not answer /health within {timeout}s:\n{self.log_text()}")
                time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Graceful stop (SIGTERM: lifespan shutdown flushes the request log). Kills it if it will not go.
        Returns whether it exited by itself (uvicorn re-raises the SIGTERM after a clean shutdown, so its exit
        status is -15 then, not 0)."""
        if self.process is None:
            return False
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
                return False
        return self.process.returncode in (0, -signal.SIGTERM)

    def kill(self) -> None:
        """Abrupt stop (SIGKILL): no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def rss_bytes(self) -> int:
        """Resident memory of the server process (and its worker children) from /proc."""
        total = 0
        for pid in [self.pid, *self._children()]:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except (FileNotFoundError, ProcessLookupError, TypeError):
                pass
        return total

    def _children(self) -> list[int]:
        if not self.pid:
            return []
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except FileNotFoundError:
            return []
        return [int(p) for p in text.split()]


class ProductionServer(RainyModelServer):
    """The production command (render.yaml): gunicorn with gunicorn.conf.py and `workers` uvicorn workers."""

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "rainymodel_site.asgi:application",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(self.workers),
        ]
