"""Settings for the growth-experimentation platform, driven by the environment.

The embedded default needs no server: SQLite under ``var/`` and a Celery broker on
local files (kombu's filesystem transport) consumed by a real worker process.
Production is the same module with::

    DJANGO_DEBUG=false
    DJANGO_SECRET_KEY=...
    DJANGO_ALLOWED_HOSTS=growth.example.com
    DATABASE_URL=postgres://user:password@host:5432/growth
    CELERY_BROKER_URL=redis://host:6379/0
    CACHE_URL=redis://host:6379/1

Every variable is listed, with its default, in README.md.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from config import queues

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("GROWTH_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()

DEBUG = env.bool("DJANGO_DEBUG", default=False)

# --- Secret key ---------------------------------------------------------------------------
# The embedded default (no DATABASE_URL, or a sqlite:// one) generates a key once into
# GROWTH_VAR_DIR/secret_key (mode 0600) so `manage.py ...` works from a fresh clone without
# variables. Any other database means a deployment: DJANGO_SECRET_KEY is then required
# (ImproperlyConfigured), unless DJANGO_DEBUG=true.
EMBEDDED_DEFAULT = env.str("DATABASE_URL", default="sqlite://").startswith("sqlite:")


def _local_secret_key(path: Path) -> str:
    """Read the local key, creating it first if missing (atomically: a temporary file
    linked into place, so concurrent first runs agree on one key and none reads half of it)."""
    import os
    import secrets

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(50) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)  # written world-readable by an older scripts/demo.sh
    return path.read_text().strip()


SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if EMBEDDED_DEFAULT:
        SECRET_KEY = _local_secret_key(VAR_DIR / "secret_key")
    elif DEBUG:
        SECRET_KEY = "insecure-development-key-do-not-use-in-production-" + "x" * 20
    else:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. Set it (50+ random characters); it is generated under "
            "GROWTH_VAR_DIR only on the embedded default (SQLite), and DATABASE_URL names another database."
        )

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "anymail",
    "axes",
    "access",
    "segments",
    "experiments",
    "campaigns",
    "demo",
]

MIDDLEWARE = [
    # Answers /healthz and /readyz before anything reads the Host header (config/health.py).
    "config.health.HealthProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "config.logging.RequestIdMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a locked-out login into the lockout answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
                # The admin's "no worker seen" banner (templates/admin/base_site.html).
                "config.health.worker_status_context",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server and the worker read while one of them writes; IMMEDIATE
    # transactions take the write lock up front so concurrent writers wait (up to
    # ``timeout`` seconds) instead of failing with "database is locked" mid-transaction.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
else:
    # Lets two test runs share one PostgreSQL server without sharing a test database.
    DATABASES["default"]["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME", default=None)}
    # Keep connections across requests and Celery tasks; health-checked before reuse.
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# PgBouncer in transaction pooling mode between Django and PostgreSQL (DATABASE_URL names
# PgBouncer): no server-side cursors (they outlive a transaction), no session state kept
# across transactions. campaigns.services.delivery and segments.services.recompute read
# this to avoid named prepared statements, session-keyed claims and session advisory locks.
DATABASE_TRANSACTION_POOLING = env.bool("DATABASE_TRANSACTION_POOLING", default=False)
if DATABASE_TRANSACTION_POOLING:
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True

# An optional streaming read replica for reading work (reports, playbook, analytics,
# exports): config/replica.py, with its freshness caveat and lag bound. Off unless set.
if env.str("DATABASE_REPLICA_URL", default=""):
    DATABASES["replica"] = {
        **env.db_url("DATABASE_REPLICA_URL"),
        "CONN_MAX_AGE": DATABASES["default"].get("CONN_MAX_AGE", 0),
        "CONN_HEALTH_CHECKS": True,
        "ATOMIC_REQUESTS": False,
        # Tests read the test database through "default" instead of a second copy.
        "TEST": {"MIRROR": "default"},
    }
    # A replica that does not answer (host down, packets dropped, a hung server) must not
    # hang every report for the OS's TCP timeout (minutes) or forever: libpq gives up after
    # this many seconds, and reading work reads the primary (config/replica.py).
    DATABASES["replica"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env.int("DATABASE_REPLICA_CONNECT_TIMEOUT", default=3)
    )
DATABASE_ROUTERS = ["config.replica.ReplicaRouter"]
DATABASE_REPLICA_MAX_LAG_SECONDS = env.float("DATABASE_REPLICA_MAX_LAG_SECONDS", default=5.0)
DATABASE_REPLICA_CHECK_SECONDS = env.float("DATABASE_REPLICA_CHECK_SECONDS", default=1.0)
DATABASE_REPLICA_RETRY_SECONDS = env.float("DATABASE_REPLICA_RETRY_SECONDS", default=30.0)

IS_POSTGRES = DATABASES["default"]["ENGINE"].startswith("django.db.backends.postgresql")

# --- Cache (API throttling, rate limits; shared across processes) ---------------------
CACHES = {
    "default": env.cache_url("CACHE_URL", default=f"filecache://{VAR_DIR / 'cache'}"),
}
if "redis" in CACHES["default"]["BACKEND"].lower():
    # A stalled Redis must not hang requests: the throttle fails open on errors (access.throttling).
    CACHES["default"].setdefault("OPTIONS", {}).update({"socket_connect_timeout": 2, "socket_timeout": 2})

# --- Auth ------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"

# Admin brute-force protection (django-axes). Its backend must come first: it refuses a
# locked-out username+address before any password is checked. Failures are counted per
# username AND client address, so an attacker elsewhere cannot lock a colleague out; the
# count resets on a successful login and a lock lifts after the cool-off (or at once with
# `manage.py axes_reset` / `axes_reset_username NAME`). Attempts are kept in the database.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "access.lockout.lockout_response"
# The address is REMOTE_ADDR, never a client-supplied header (django-ipware is not
# installed, so axes falls back to it). Behind a reverse proxy every client shares the
# proxy's address and the lock becomes per username: stricter, never spoofable.

# --- I18n / time -----------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# The languages customer-facing pages (unsubscribe, preferences) and footers are translated to.
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]

# --- Static files (vendored; nothing loads from a CDN) --------------------------------
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if env.bool("DJANGO_MANIFEST_STATIC", default=not DEBUG)
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Served by WhiteNoise from the web process after ``collectstatic``; in development and
# tests it finds files through the staticfiles finders instead.
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=DEBUG)

# --- Security (production defaults; relaxed only by DJANGO_DEBUG) ---------------------
# X-Forwarded-Proto says "the client used https" only when a TLS-terminating proxy in front
# sets it (and strips the client's own): trusted only with DJANGO_TRUST_PROXY=true. Without a
# proxy (gunicorn published directly) any client could send it and pass for https.
TRUST_PROXY = env.bool("DJANGO_TRUST_PROXY", default=False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if TRUST_PROXY else None
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Health probes come from the orchestrator over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]

# --- Provider webhooks (django-anymail: signature checked, events normalized) -----------
# Mailgun's tracking webhook is mounted at /anymail/mailgun/tracking/; bounces, complaints
# and provider unsubscribes suppress the address (campaigns.services.suppression). Without
# a signing key the webhook refuses every request.
ANYMAIL = {
    "MAILGUN_WEBHOOK_SIGNING_KEY": env.str("MAILGUN_WEBHOOK_SIGNING_KEY", default=""),
}

# --- REST framework ----------------------------------------------------------------------
# The largest request body (413 above it): a 1,000-item batch of ~10 KB items fits.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("API_MAX_BODY_BYTES", default=10 * 1024 * 1024)

REST_FRAMEWORK = {
    # Server API keys first (their scheme names the 401 challenge), then customer tokens.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "access.authentication.ApiKeyAuthentication",
        "access.authentication.CustomerTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["access.permissions.HasScope"],
    "DEFAULT_THROTTLE_CLASSES": ["access.throttling.ApiKeyRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api_key": env.str("API_THROTTLE_RATE", default="6000/min")},
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["access.parsers.JsonParser"],
    "DEFAULT_PAGINATION_CLASS": "access.pagination.ApiPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "EXCEPTION_HANDLER": "access.exceptions.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}

# --- Customer tokens (JWTs an app sends for one customer; see access/tokens.py) ----------
# Longest lifetime (exp - iat) accepted, in seconds, and the clock skew tolerated.
CUSTOMER_TOKEN_MAX_LIFETIME = env.int("CUSTOMER_TOKEN_MAX_LIFETIME", default=3600)
CUSTOMER_TOKEN_LEEWAY = env.int("CUSTOMER_TOKEN_LEEWAY", default=30)

SPECTACULAR_SETTINGS = {
    "TITLE": "Growth experimentation platform API",
    "DESCRIPTION": (
        "Ingest customers and events, read a customer's segments, assignments and offers, "
        "redeem coupons and read lift reports. Every operation needs an API key "
        "(`Authorization: Api-Key <key>`) with the scope named in its description."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "access.schema.add_access_error_responses",
    ],
}

# --- Celery -----------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://localhost//")
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's filesystem transport lets a consumer read a message file before it is fully
    # written (the worker then dies on JSONDecodeError) and loses what a killed worker had
    # taken; config.broker's subclass writes atomically and keeps a claim until the ack.
    CELERY_BROKER_TRANSPORT = "config.broker:Transport"
    _broker_dir = VAR_DIR / "broker"
    for _folder in ("queue", "processed", "control", "staging", "processing", "corrupt"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        # Broadcast/pidbox files (worker remote control); kombu's default is ./control.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # kombu's virtual transports sleep ``polling_interval`` (1 s by default) whenever a
        # poll finds nothing to take, and with a prefetch of 1 a poll finds nothing as soon
        # as every pool process holds a task: a 2-process worker then starts at most ~2
        # tasks a second however short they are. 50 ms lifts that ceiling twentyfold for a
        # few idle directory reads a second (the demo's referral rewards went from 60 s to
        # 7 s at 5,000 customers). Redis does not poll.
        "polling_interval": 0.05,
    }
else:
    # A task must be acknowledged within this time or the broker redelivers it; nothing
    # is ever scheduled further ahead than this (schedules live in the database).
    # Redis emulates priorities with one list per step, read lowest number first: sending
    # (priority 0) is served before deciding more audience batches (6, see
    # campaigns.services.outbox.DECIDE_PRIORITY). These are kombu's defaults, written down.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600, "priority_steps": [0, 3, 6, 9]}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery's Django fixup closes the database connection before and after every task unless
# DB_REUSE_MAX is set; then it closes it only every N tasks (celery/fixups/django.py,
# close_database). Tasks call close_old_connections() first, which honours CONN_MAX_AGE and
# CONN_HEALTH_CHECKS, so a broken connection is still replaced.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)
# Queues by kind of work (config/queues.py): sending per channel, deciding, recomputes,
# conversion refreshes, imports, reports. A worker without -Q consumes them all (the embedded
# default, the demo); a fleet binds each worker to some (README, "Production layout").
CELERY_TASK_DEFAULT_QUEUE = queues.DEFAULT
CELERY_TASK_QUEUES = queues.queues()
CELERY_TASK_ROUTES = queues.ROUTES

# --- Worker heartbeat (config/health.py, config/celery.py) -------------------------------
# Every worker records a heartbeat in the cache this often; /readyz and the admin say
# "no worker seen" when the newest is older than WORKER_STALE_SECONDS. /readyz then answers
# 503 "degraded", or 200 "degraded" with READYZ_REQUIRE_WORKER=false.
WORKER_HEARTBEAT_SECONDS = env.float("GROWTH_WORKER_HEARTBEAT_SECONDS", default=10.0)
WORKER_STALE_SECONDS = env.int("GROWTH_WORKER_STALE_SECONDS", default=60)
READYZ_REQUIRE_WORKER = env.bool("GROWTH_READYZ_REQUIRE_WORKER", default=True)

# --- Email ------------------------------------------------------------------------------
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="smtp://127.0.0.1:1025")
# django-environ puts URL options (``?timeout=10``) under OPTIONS, which Django never reads.
EMAIL_TIMEOUT = EMAIL_CONFIG.pop("OPTIONS", {}).get("TIMEOUT")
globals().update(EMAIL_CONFIG)
# The demo captures mail into a database mailbox shown in the admin.
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default=EMAIL_CONFIG["EMAIL_BACKEND"])
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="growth@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Logging (JSON lines with request and task ids) ------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "config.logging.ContextFilter"}},
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(task_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["context"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "celery": {"level": LOG_LEVEL},
    },
}

# --- Platform ----------------------------------------------------------------------------
GROWTH = {
    # Largest batch accepted by the ingestion API.
    "MAX_BATCH": 1000,
    # Events for an unknown customer: "reject" (default) or "create".
    "UNKNOWN_CUSTOMER_EVENTS": env.str("GROWTH_UNKNOWN_CUSTOMER_EVENTS", default="reject"),
    # Client clocks (POST /exposures occurred_at) may be this far off the server's: a time up
    # to this much in the future, or before the assignment / phase start, is clamped to
    # [assignment, now]; further off it is refused (400 on occurred_at).
    "EXPOSURE_CLOCK_SKEW_SECONDS": env.int("GROWTH_EXPOSURE_CLOCK_SKEW_SECONDS", default=300),
    # Lift-report verdicts count only customers whose metric window has closed (first exposure
    # + window <= now); a report view can turn it off (?exclude_open_windows=false).
    "REPORT_EXCLUDE_OPEN_WINDOWS": env.bool("GROWTH_REPORT_EXCLUDE_OPEN_WINDOWS", default=True),
    # Analytics runs (segments.analytics.runs): the same question asked again by the same owner
    # within this many seconds of a finished run gets that run back instead of a new one.
    "ANALYTICS_RUN_FRESH_SECONDS": env.int("GROWTH_ANALYTICS_RUN_FRESH_SECONDS", default=300),
    # A run queued or running longer than this is reported failed when read (a worker killed
    # mid-run, a lost message); asking again then starts a new one.
    "ANALYTICS_RUN_STUCK_SECONDS": env.int("GROWTH_ANALYTICS_RUN_STUCK_SECONDS", default=1800),
    # Runs asked longer ago than this are deleted by the daily purge (their results can be
    # large: a retention table of every cohort x period x layer).
    "ANALYTICS_RUN_KEEP_DAYS": env.int("GROWTH_ANALYTICS_RUN_KEEP_DAYS", default=7),
    # The retention and funnel admin pages compute as a task (with a "computing since" page)
    # above this many customers; at or below it, on the request as before.
    "ANALYTICS_ASYNC_CUSTOMERS": env.int("GROWTH_ANALYTICS_ASYNC_CUSTOMERS", default=200_000),
}
