"""RainyModel settings: everything comes from the environment (SPEC §2), read through tiny typed helpers.

SQLite and an in-process cache by default, so `make run` needs no services; PostgreSQL (`DATABASE_URL`) and Redis
(`REDIS_URL`) in production, shared by every worker and machine.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VERSION = "0.1.0"


def envstr(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def envint(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def envfloat(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me"
DEBUG = envbool("DEBUG", False)
# `make run` writes a random secret to .secret_key (git-ignored) so local commands and the server agree on it.
_local_secret = BASE_DIR / ".secret_key"
SECRET_KEY = envstr("SECRET_KEY") or (_local_secret.read_text().strip() if _local_secret.is_file() else DEV_SECRET_KEY)
if not DEBUG and SECRET_KEY == DEV_SECRET_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY is the development value and DEBUG is off. Set SECRET_KEY to a long random string "
        "(it also keys the API-key HMAC), or set DEBUG=true for local development."
    )

ALLOWED_HOSTS = [h.strip() for h in envstr("ALLOWED_HOSTS", "localhost,127.0.0.1").split(",") if h.strip()]
if envstr("RENDER_EXTERNAL_HOSTNAME"):
    ALLOWED_HOSTS.append(envstr("RENDER_EXTERNAL_HOSTNAME"))
# Origins whose POSTs the admin and usage pages accept: `CSRF_TRUSTED_ORIGINS` (comma list of scheme://host), else
# https:// of every allowed public host.
CSRF_TRUSTED_ORIGINS = [o.strip() for o in envstr("CSRF_TRUSTED_ORIGINS").split(",") if o.strip()] or [
    f"https://{h}" for h in ALLOWED_HOSTS if h not in ("localhost", "127.0.0.1") and not h.startswith(".")
]

# Served over HTTPS by a TLS-terminating proxy (Render): redirect plain http to https, send HSTS, keep the session and
# CSRF cookies off plain http. Off by default so `make run` works on http://127.0.0.1; render.yaml turns it on, and
# `manage.py check --deploy` is clean with it (tests/test_settings.py).
#
# Whether a request came in over https is the ASGI scope's scheme, which uvicorn takes from X-Forwarded-Proto only
# when the peer is a trusted proxy (`FORWARDED_ALLOW_IPS`, default 127.0.0.1). SECURE_PROXY_SSL_HEADER is left
# unset on purpose: Django would then believe that header from any peer, which is exactly what
# FORWARDED_ALLOW_IPS exists to prevent (docs/operations.md, "Behind a proxy").
RAINYMODEL_HTTPS = envbool("RAINYMODEL_HTTPS", False)
if RAINYMODEL_HTTPS:
    SECURE_SSL_REDIRECT = True
    # Render's health check calls the instance over plain http, from inside its network.
    SECURE_REDIRECT_EXEMPT = [r"^health$", r"^health/ready$"]
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
# Render's `generateValue` is 256 random bits in base64: 44 characters, under the 50 that Django's security.W009
# heuristic asks of its own key format. Such a key is not weak, so that one check is silenced for keys of that
# shape; a short or repetitive key still fails it.
SILENCED_SYSTEM_CHECKS = ["security.W009"] if 43 <= len(SECRET_KEY) < 50 and len(set(SECRET_KEY)) >= 20 else []

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "adrf",
    "simple_history",
    "audit",
    "routing",
    "apikeys",
    "usage",
    "responses_store",
    "alerts",
]

# The browser-facing pages' middleware. The API (/v1/) is served by rainymodel_site.asgi.ApiHandler with its own
# single middleware (rainymodel_site.request_ids.RequestIdMiddleware) and none of these.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Hands the signed-in user to the audit trail (audit/history.py); pages only, never /v1/.
    "simple_history.middleware.HistoryRequestMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "rainymodel_site.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
WSGI_APPLICATION = None
ASGI_APPLICATION = "rainymodel_site.asgi.application"

DATABASE_URL = envstr("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
_db = dj_database_url.parse(DATABASE_URL, conn_max_age=0)
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the log writer and readers work side by side; IMMEDIATE avoids "database is locked" upgrades.
    _db["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
elif _db["ENGINE"] == "django.db.backends.postgresql":
    # connect_timeout: a database that accepts connections but never answers must not hold a thread for ever
    # (/health/ready reports it within a second and recovers once a connection can be made again).
    _db["OPTIONS"] = {"pool": {"min_size": 1, "max_size": envint("RAINYMODEL_DB_POOL_SIZE", 10)}, "connect_timeout": 5}
DATABASES = {"default": _db}

REDIS_URL = envstr("REDIS_URL")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "rainymodel"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/usage/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

REST_FRAMEWORK = {
    "EXCEPTION_HANDLER": "rainymodel_site.api_errors.exception_handler",
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [],
}

RATELIMIT_USE_CACHE = "default"
RATELIMIT_IP_META_KEY = "REMOTE_ADDR"

# RainyModel's own settings (SPEC §2).
RAINYMODEL_MASTER_KEY = envstr("RAINYMODEL_MASTER_KEY")
RAINYMODEL_MAX_BODY_BYTES = envint("RAINYMODEL_MAX_BODY_BYTES", 10 * 1024 * 1024)
# /v1/responses: store responses (for previous_response_id) only when the client sends store: true, unless this
# turns storing on for every request that does not send store: false (privacy: off by default; docs/api.md).
RAINYMODEL_RESPONSES_STORE_DEFAULT = envbool("RAINYMODEL_RESPONSES_STORE_DEFAULT", False)
RAINYMODEL_RESPONSES_TTL_S = envint("RAINYMODEL_RESPONSES_TTL_S", 30 * 24 * 3600)  # `manage.py responses prune`
RAINYMODEL_BODY_TIMEOUT_S = envfloat("RAINYMODEL_BODY_TIMEOUT_S", 30.0)  # whole body, from the end of the headers
RAINYMODEL_LOG_FLUSH_S = envfloat("RAINYMODEL_LOG_FLUSH_S", 1.0)
RAINYMODEL_DEADLINE_S = envfloat("RAINYMODEL_DEADLINE_S", 300.0)
# One JSON log line per /v1/ call on the `rainymodel.requests` logger (stderr): "json", or "off" (the default; the
# request log in the database has the same facts). rainymodel_site/log_lines.py, docs/observability.md.
RAINYMODEL_LOG_REQUESTS = envstr("RAINYMODEL_LOG_REQUESTS").strip().lower() or "off"
# How often each worker checks the shared config version (admin saves reach every worker within 2 s).
RAINYMODEL_SNAPSHOT_POLL_S = envfloat("RAINYMODEL_SNAPSHOT_POLL_S", 0.5)
# Failed authentications allowed per client IP per minute before a 429.
RAINYMODEL_AUTH_FAILURES_PER_MIN = envint("RAINYMODEL_AUTH_FAILURES_PER_MIN", 30)
DATA_UPLOAD_MAX_MEMORY_SIZE = RAINYMODEL_MAX_BODY_BYTES
# Failed sign-ins to the admin and usage pages allowed per client IP and per username (django-ratelimit rates:
# count/period), before the sign-in form refuses with 429 until the window ends (rainymodel_site/login.py).
RAINYMODEL_LOGIN_FAILURES_PER_IP = envstr("RAINYMODEL_LOGIN_FAILURES_PER_IP", "10/10m")
RAINYMODEL_LOGIN_FAILURES_PER_USERNAME = envstr("RAINYMODEL_LOGIN_FAILURES_PER_USERNAME", "20/h")
# Usage pages and CSV exports each signed-in user may request (django-ratelimit rates), before a 429 page
# (usage/throttle.py).
RAINYMODEL_USAGE_PAGES_RATE = envstr("RAINYMODEL_USAGE_PAGES_RATE", "120/m")
RAINYMODEL_USAGE_CSV_RATE = envstr("RAINYMODEL_USAGE_CSV_RATE", "10/m")
# GET /metrics (docs/observability.md): scrapers send `Authorization: Bearer <token>`; unset, only staff signed in to
# the admin may read it. PER_KEY adds each key's prefix as a label to requests, tokens and cost: one series per key.
RAINYMODEL_METRICS_TOKEN = envstr("RAINYMODEL_METRICS_TOKEN")
RAINYMODEL_METRICS_PER_KEY = envbool("RAINYMODEL_METRICS_PER_KEY", False)
# Seconds between folds of each worker's calls into the metrics (rainymodel_site/metrics.py): what a scrape served
# by another worker may lag behind. A worker's own scrapes and its shutdown fold first, so they never lag.
RAINYMODEL_METRICS_FOLD_S = envfloat("RAINYMODEL_METRICS_FOLD_S", 1.0)

# The audit trail (audit/history.py) is a record, not an undo button: its admin pages show past versions and their
# field diffs but offer no "revert" (a reverted key or provider would bypass the forms and services that check them).
SIMPLE_HISTORY_REVERT_DISABLED = True

# Alerts (alerts/, docs/observability.md "Alerts"): quotas crossing 80/95/100 %, providers' breakers opening and
# closing, every route of an alias failing. Recipients and webhooks are edited in the admin; email goes through
# Django's email backend with the EMAIL_* settings below.
RAINYMODEL_ALERTS = envbool("RAINYMODEL_ALERTS", True)
RAINYMODEL_ALERT_RECOVERY_S = envfloat("RAINYMODEL_ALERT_RECOVERY_S", 60.0)  # an alias incident ends this quiet
RAINYMODEL_ALERT_CHECK_S = envfloat("RAINYMODEL_ALERT_CHECK_S", 5.0)  # how often each worker looks for recoveries
RAINYMODEL_ALERT_ATTEMPTS = envint("RAINYMODEL_ALERT_ATTEMPTS", 5)  # per delivery, the first included
RAINYMODEL_ALERT_RETRY_BASE_S = envfloat("RAINYMODEL_ALERT_RETRY_BASE_S", 2.0)  # then 2, 4, 8, 16 s between tries
RAINYMODEL_ALERT_WEBHOOK_TIMEOUT_S = envfloat("RAINYMODEL_ALERT_WEBHOOK_TIMEOUT_S", 5.0)
# Django 6.1's MAILERS, filled from the conventional EMAIL_* variables (docs/operations.md).
EMAIL_BACKEND_PATH = envstr("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
MAILERS = {"default": {"BACKEND": EMAIL_BACKEND_PATH, "OPTIONS": {}}}
if EMAIL_BACKEND_PATH == "django.core.mail.backends.smtp.EmailBackend":
    MAILERS["default"]["OPTIONS"] = {
        "host": envstr("EMAIL_HOST", "localhost"),
        "port": envint("EMAIL_PORT", 25),
        "username": envstr("EMAIL_HOST_USER"),
        "password": envstr("EMAIL_HOST_PASSWORD"),
        "use_tls": envbool("EMAIL_USE_TLS", False),  # STARTTLS, usually port 587
        "use_ssl": envbool("EMAIL_USE_SSL", False),  # implicit TLS, usually port 465
        "timeout": envfloat("EMAIL_TIMEOUT", 10.0),
    }
DEFAULT_FROM_EMAIL = envstr("DEFAULT_FROM_EMAIL", "RainyModel <rainymodel@localhost>")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
}

# Single sign-on with Orcest Login (OpenID Connect; rainymodel_site/sso.py, docs/users.md). With
# RAINYMODEL_OIDC_ISSUER unset, sign-in is by password only. Endpoints come from the issuer's discovery document.
RAINYMODEL_OIDC_ISSUER = envstr("RAINYMODEL_OIDC_ISSUER").rstrip("/")
RAINYMODEL_OIDC_GROUPS_CLAIM = envstr("RAINYMODEL_OIDC_GROUPS_CLAIM", "groups")
RAINYMODEL_OIDC_STAFF_GROUPS = [g.strip() for g in envstr("RAINYMODEL_OIDC_STAFF_GROUPS").split(",") if g.strip()]
RAINYMODEL_OIDC_SUPERUSER_GROUPS = [
    g.strip() for g in envstr("RAINYMODEL_OIDC_SUPERUSER_GROUPS").split(",") if g.strip()
]
OIDC_RP_CLIENT_ID = envstr("RAINYMODEL_OIDC_CLIENT_ID")
OIDC_RP_CLIENT_SECRET = envstr("RAINYMODEL_OIDC_CLIENT_SECRET")
OIDC_RP_SCOPES = envstr("RAINYMODEL_OIDC_SCOPES", "openid email profile")
OIDC_RP_SIGN_ALGO = envstr("RAINYMODEL_OIDC_SIGN_ALGO", "RS256")
OIDC_USE_PKCE = True
OIDC_STORE_ID_TOKEN = True  # the id_token_hint for the provider's end_session_endpoint at logout
OIDC_OP_LOGOUT_URL_METHOD = "rainymodel_site.sso.provider_logout_url"
OIDC_TIMEOUT = 10
LOGIN_REDIRECT_URL_FAILURE = LOGIN_URL
TEMPLATES[0]["OPTIONS"]["context_processors"].append("rainymodel_site.sso.context")  # type: ignore[index]
if RAINYMODEL_OIDC_ISSUER:
    AUTHENTICATION_BACKENDS = ["rainymodel_site.sso.OrcestBackend", "django.contrib.auth.backends.ModelBackend"]
