"""Settings for the test suite: the real settings, with a test secret unless the environment gives one."""

import os

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("RAINYMODEL_LOG_FLUSH_S", "0.05")

from rainymodel_site.settings import *  # noqa: E402,F403

# A file (not in-memory) SQLite test database, so end-to-end tests can start real server processes on it.
# One per pytest process, so parallel runs on one machine do not collide.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": f"/tmp/rainymodel-test-{os.getpid()}.sqlite3"}  # noqa: F405

# Hashing test users' passwords slowly proves nothing and costs seconds per test.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
