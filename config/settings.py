"""Settings for the Gmail mirror: one module, every knob from the environment.

Every variable is listed with its default and meaning in `.env.example`. Defaults
give the embedded set-up (SQLite, the Django-Q2 ORM broker) with DEBUG off, so a
deploy that forgets DEBUG is safe; `make demo` and `make test` turn DEBUG on, and
with DEBUG on the secrets nobody configured are generated once per checkout into
.dev-secrets/ (git-ignored). Production sets SECRET_KEY, TOKEN_ENCRYPTION_KEYS,
DATABASE_URL (PostgreSQL) and REDIS_URL. A malformed value raises
ImproperlyConfigured naming the variable; manage.py and wsgi.py print it on one line.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import environ
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A local .env (see .env.example) is read if present; real environment variables win.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def _without_password(url: str) -> str:
    """The URL as an error message may show it: any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


def _url_setting(name: str, schemes: tuple[str, ...], default: str = "") -> str:
    """Read an URL variable and fail at start, naming it, when it is malformed."""
    value = env.str(name, default=default).strip()
    if value:
        parts = urlsplit(value)
        shown = _without_password(value)
        if parts.scheme not in schemes or not (parts.netloc or parts.path):
            raise ImproperlyConfigured(
                f"{name}={shown!r} is not a valid URL (expected {' or '.join(schemes)})"
            )
        try:
            port = parts.port
        except ValueError:  # not a number, or above 65535
            port = 0
        if port == 0:
            raise ImproperlyConfigured(f"{name}={shown!r} has an invalid port (1-65535)")
    return value


def _bool_setting(name: str, default: bool) -> bool:
    raw = env.str(name, default=str(default)).strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off", ""):
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true or false)")


def _int_setting(name: str, default: int, minimum: int = 0) -> int:
    raw = env.str(name, default=str(default)).strip()
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    return value


def _float_setting(name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.str(name, default=str(default)).strip()
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
    if not value >= minimum:  # also refuses nan
        raise ImproperlyConfigured(f"{name}={raw} must be a number of at least {minimum:g}")
    return value


def _required(name: str, value: str) -> str:
    if not value:
        raise ImproperlyConfigured(
            f"{name} must be set when DEBUG is off (see .env.example; DEBUG=true for development)"
        )
    return value


DEV_SECRETS_DIR = BASE_DIR / ".dev-secrets"


def _development_secret(name: str, make: Callable[[], str]) -> str:
    """A secret for a DEBUG run that configured none: generated once per checkout and
    kept in .dev-secrets/ (git-ignored), so the web server, the workers and the tests
    of one checkout agree on it, and no secret is a literal in the code."""
    path = DEV_SECRETS_DIR / name
    if not path.exists():
        DEV_SECRETS_DIR.mkdir(mode=0o700, exist_ok=True)
        draft = path.with_name(f".{name}.{os.getpid()}")
        draft.write_text(make())
        draft.chmod(0o600)
        try:
            os.link(draft, path)  # atomic and exclusive: the first process wins
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


def _fernet_keys(name: str) -> list[str]:
    """A comma-separated list of Fernet keys, newest first."""
    keys = env.list(name, default=[])
    for number, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except ValueError:
            raise ImproperlyConfigured(
                f"{name}: key {number} is not a Fernet key (32 url-safe base64-encoded bytes; "
                "make one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')"
            ) from None
    return keys


# --- Core -------------------------------------------------------------------
# DEBUG defaults to off: a deploy that forgets it never runs with a known key or
# the debug page. Development turns it on (make demo, make test, .env).
DEBUG = _bool_setting("DEBUG", False)
SECRET_KEY = env.str("SECRET_KEY", default="").strip()
if not SECRET_KEY:
    if not DEBUG:
        _required("SECRET_KEY", SECRET_KEY)
    SECRET_KEY = _development_secret("SECRET_KEY", lambda: secrets.token_urlsafe(50))
# Fernet keys that encrypt the stored Google tokens, newest first: add a new key in
# front, run `manage.py reencrypt_tokens`, then drop the old one.
TOKEN_ENCRYPTION_KEYS = _fernet_keys("TOKEN_ENCRYPTION_KEYS")
if not TOKEN_ENCRYPTION_KEYS:
    if not DEBUG:
        _required("TOKEN_ENCRYPTION_KEYS", "")
    TOKEN_ENCRYPTION_KEYS = [
        _development_secret("TOKEN_ENCRYPTION_KEY", lambda: Fernet.generate_key().decode())
    ]
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "config.apps.OperatorAdminConfig",  # django.contrib.admin with our index order
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.sites",
    "django.contrib.humanize",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.google",
    "django_q",
    "dalf",  # autocomplete list filters in the admin (no list of every user)
    "csp",
    "accounts",
    "mailsync",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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

# --- Database -----------------------------------------------------------------
DATABASE_URL = _url_setting(
    "DATABASE_URL",
    ("sqlite", "postgres", "postgresql", "pgsql"),
    default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
)
DATABASES = {"default": env.db_url_config(DATABASE_URL)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several qcluster worker processes share the file: WAL lets readers run beside
    # the writer, IMMEDIATE takes the write lock at BEGIN (no upgrade deadlocks),
    # and the timeout waits for the lock instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # Tests that start real workers need a test database other processes can open.
    DATABASES["default"]["TEST"] = {
        "NAME": env.str("SQLITE_TEST_DATABASE", default=str(BASE_DIR / "test_db.sqlite3"))
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = _int_setting("CONN_MAX_AGE", 60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # Behind PgBouncer in transaction mode a server connection belongs to a client for
    # one transaction only: no server-side cursors (iterator() would keep one open
    # across transactions). Django's psycopg backend prepares no statements, which the
    # pooler needs too (tests/test_settings.py); the batch writes that bind their
    # parameters server-side (mailsync/sync/writes.py) use unnamed statements, which
    # the pooler passes through.
    DATABASE_POOLER_TRANSACTION_MODE = _bool_setting("DATABASE_POOLER_TRANSACTION_MODE", False)
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = DATABASE_POOLER_TRANSACTION_MODE

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

# --- Redis (optional): broker, cache and the shared quota budget --------------
REDIS_URL = _url_setting("REDIS_URL", ("redis", "rediss", "unix"))
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Django-Q2 ----------------------------------------------------------------
# Every task is one bounded step (one page, one batch) that finishes in seconds;
# the longest legitimate run is a batch that waits for quota and backs off, which
# MAILSYNC_TASK_MAX_SECONDS bounds. Hence:
# - timeout: kill a task that runs past that bound (a hung connection);
# - retry: the ORM broker re-delivers an unacknowledged task after `retry` seconds,
#   so it must exceed the longest run (timeout), or a slow task would run twice at once;
# - max_attempts: a task that keeps failing stops being re-delivered; the watchdog
#   re-enqueues remaining work from the database, which is the truth, not the broker;
# - catch_up=False: after downtime a schedule runs once, not once per missed slot.
MAILSYNC_TASK_MAX_SECONDS = _int_setting("MAILSYNC_TASK_MAX_SECONDS", 120, minimum=10)
# Where priority work (labels, listing, incremental) runs; empty = the default cluster.
# A qcluster started with Q_CLUSTER_NAME=<this name> serves that queue only (Django-Q2
# reads Q_CLUSTER_NAME itself; "name" stays the same everywhere because it is also
# the salt that signs queued tasks).
MAILSYNC_PRIORITY_CLUSTER = env.str("MAILSYNC_PRIORITY_CLUSTER", default="")
Q_CLUSTER = {
    "name": "mailsync",
    "ALT_CLUSTERS": {MAILSYNC_PRIORITY_CLUSTER: {}} if MAILSYNC_PRIORITY_CLUSTER else {},
    "workers": _int_setting("Q_WORKERS", 4, minimum=1),
    # Tasks a cluster fetches ahead (default workers squared): a stopped or killed
    # cluster holds these locked until `retry`, so keep it small.
    "queue_limit": 2 * _int_setting("Q_WORKERS", 4, minimum=1),
    "timeout": MAILSYNC_TASK_MAX_SECONDS,
    "retry": MAILSYNC_TASK_MAX_SECONDS + 15,
    "max_attempts": 3,
    "catch_up": False,
    "ack_failures": True,
    # Successful tasks are not stored: keeping the last N takes a lock on the result
    # table after every task (67 tasks/s for a whole installation, measured). The
    # database holds the sync's own record (SyncProgress); failures are still kept.
    "save_limit": -1,
    # Workers keep the memory they grew to: recycle them now and then.
    "recycle": 500,
    "max_rss": 400_000,
    "poll": 0.2,
    "label": "Django Q2",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- Google / Gmail -------------------------------------------------------------
# With GMAIL_EMULATOR_URL set, every Google URL the app uses points at the local
# emulator (gmail_emulator/), whose default client id and secret are these.
GMAIL_EMULATOR_URL = _url_setting("GMAIL_EMULATOR_URL", ("http", "https"))
if GMAIL_EMULATOR_URL and not GMAIL_EMULATOR_URL.endswith("/"):
    GMAIL_EMULATOR_URL += "/"
_EMULATOR_CLIENT_ID = "emulator-client-id.apps.googleusercontent.com"
_EMULATOR_CLIENT_SECRET = "emulator-secret"  # noqa: S105 (public, emulator only)
GOOGLE_CLIENT_ID = env.str(
    "GOOGLE_CLIENT_ID", default=_EMULATOR_CLIENT_ID if GMAIL_EMULATOR_URL else ""
)
GOOGLE_CLIENT_SECRET = env.str(
    "GOOGLE_CLIENT_SECRET", default=_EMULATOR_CLIENT_SECRET if GMAIL_EMULATOR_URL else ""
)
if not DEBUG:
    _required("GOOGLE_CLIENT_ID", GOOGLE_CLIENT_ID)
    _required("GOOGLE_CLIENT_SECRET", GOOGLE_CLIENT_SECRET)

GOOGLE_API_ROOT = GMAIL_EMULATOR_URL or "https://gmail.googleapis.com/"
GOOGLE_TOKEN_URL = (
    f"{GMAIL_EMULATOR_URL}token" if GMAIL_EMULATOR_URL else "https://oauth2.googleapis.com/token"
)
GOOGLE_USERINFO_URL = (
    f"{GMAIL_EMULATOR_URL}oauth2/v2/userinfo"
    if GMAIL_EMULATOR_URL
    else "https://www.googleapis.com/oauth2/v2/userinfo"
)
GOOGLE_REVOKE_URL = (
    f"{GMAIL_EMULATOR_URL}revoke" if GMAIL_EMULATOR_URL else "https://oauth2.googleapis.com/revoke"
)
GOOGLE_AUTHORIZE_URL = (
    f"{GMAIL_EMULATOR_URL}o/oauth2/v2/auth"
    if GMAIL_EMULATOR_URL
    else "https://accounts.google.com/o/oauth2/v2/auth"
)
GMAIL_SCOPE = "https://www.googleapis.com/auth/gmail.readonly"

# --- Gmail push (users.watch -> Cloud Pub/Sub push subscription -> POST /gmail/push/) ---
# With a topic set, every mirrored mailbox is watched; Pub/Sub's OIDC token on each
# delivery must carry this audience and service account (mailsync/push.py).
GMAIL_PUSH_TOPIC = env.str("GMAIL_PUSH_TOPIC", default="").strip()
if GMAIL_PUSH_TOPIC and not re.fullmatch(r"projects/[^/]+/topics/[^/]+", GMAIL_PUSH_TOPIC):
    raise ImproperlyConfigured(
        f"GMAIL_PUSH_TOPIC={GMAIL_PUSH_TOPIC!r} must look like projects/PROJECT/topics/TOPIC"
    )
GMAIL_PUSH_AUDIENCE = env.str("GMAIL_PUSH_AUDIENCE", default="").strip()
_EMULATOR_PUSH_SERVICE_ACCOUNT = "gmail-push@emulator.iam.gserviceaccount.com"
GMAIL_PUSH_SERVICE_ACCOUNT = env.str(
    "GMAIL_PUSH_SERVICE_ACCOUNT",
    default=_EMULATOR_PUSH_SERVICE_ACCOUNT if GMAIL_EMULATOR_URL else "",
).strip()
if GMAIL_PUSH_TOPIC:
    # A push endpoint that cannot check who calls it would let anyone start syncs.
    for _name, _value in (
        ("GMAIL_PUSH_AUDIENCE", GMAIL_PUSH_AUDIENCE),
        ("GMAIL_PUSH_SERVICE_ACCOUNT", GMAIL_PUSH_SERVICE_ACCOUNT),
    ):
        if not _value:
            raise ImproperlyConfigured(f"{_name} must be set when GMAIL_PUSH_TOPIC is set")
# Where Pub/Sub's signing certificates are (PEM by key id); the emulator serves its own.
GMAIL_PUSH_CERTS_URL = (
    f"{GMAIL_EMULATOR_URL}oauth2/v1/certs"
    if GMAIL_EMULATOR_URL
    else "https://www.googleapis.com/oauth2/v1/certs"
)

# --- Sign in with Google (django-allauth) ---------------------------------------
SITE_ID = 1
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*"]
ACCOUNT_EMAIL_VERIFICATION = "none"
# Users sign in with Google only: no local sign-up, no password or emailed-code
# login on the site (staff sign in to /admin/ with a password). An email address
# alone never signs anyone in or attaches a Google account to an account (see
# accounts/adapter.py for the few accounts a Google sign-in may attach to).
SOCIALACCOUNT_ONLY = True
ACCOUNT_LOGIN_BY_CODE_ENABLED = False
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = False
SOCIALACCOUNT_AUTO_SIGNUP = True
# Tokens are kept encrypted in accounts.GoogleToken (captured at sign-in, see
# accounts/signals.py), never in allauth's plain-text SocialToken.
SOCIALACCOUNT_STORE_TOKENS = False
SOCIALACCOUNT_ADAPTER = "accounts.adapter.SocialAccountAdapter"
_google_provider: dict = {
    "APP": {"client_id": GOOGLE_CLIENT_ID, "secret": GOOGLE_CLIENT_SECRET},
    "SCOPE": ["profile", "email", GMAIL_SCOPE],
    # offline + consent: Google issues a refresh token, on every sign-in.
    "AUTH_PARAMS": {"access_type": "offline", "prompt": "consent"},
    "OAUTH_PKCE_ENABLED": True,
}
if GMAIL_EMULATOR_URL:
    # Read by allauth when its Google views are imported: must be here, not later.
    _google_provider.update(
        AUTHORIZE_URL=GOOGLE_AUTHORIZE_URL,
        ACCESS_TOKEN_URL=GOOGLE_TOKEN_URL,
        IDENTITY_URL=GOOGLE_USERINFO_URL,
    )
SOCIALACCOUNT_PROVIDERS = {"google": _google_provider}

# --- Sync engine ------------------------------------------------------------------
# Rows claimed per batch (a whole thread counts once). Sent as requests of at most half
# the user's permits (quota.request_parts): 100 spreads a batch's fixed cost (a claim, a
# transaction, the quota and permit round trips) over twice the messages of 50 (CPU-bound
# on PostgreSQL 1,052 -> 1,174 msg/s). While nothing of a mailbox bigger than one batch is
# fetched yet, a task's first batch is one request's worth, so the first messages show
# after one round trip (bench/README.md, issue 13).
MAILSYNC_BATCH_SIZE = _int_setting("MAILSYNC_BATCH_SIZE", 100, minimum=1)
if MAILSYNC_BATCH_SIZE > 100:
    raise ImproperlyConfigured(
        f"MAILSYNC_BATCH_SIZE={MAILSYNC_BATCH_SIZE} must be at most 100 (Gmail's batch limit)"
    )
# Gmail parts in flight per user, across every worker (each batch part holds one permit):
# real Gmail refuses "too many concurrent requests" well below 100 (issue 15).
MAILSYNC_CONCURRENT_REQUESTS_PER_USER = _int_setting(
    "MAILSYNC_CONCURRENT_REQUESTS_PER_USER", 25, minimum=1
)
MAILSYNC_BATCHES_IN_FLIGHT = _int_setting("MAILSYNC_BATCHES_IN_FLIGHT", 4, minimum=1)
# A batch chain's task stores batch after batch for up to this long (at most a quarter
# of MAILSYNC_TASK_MAX_SECONDS) before a new task takes over; 0: one batch per task.
MAILSYNC_FETCH_TASK_SECONDS = _float_setting("MAILSYNC_FETCH_TASK_SECONDS", 10.0)
# A listing task lists page after page for up to this long (at most a quarter of
# MAILSYNC_TASK_MAX_SECONDS), starting the batch chains as pages arrive; 0: one page per task.
MAILSYNC_LIST_TASK_SECONDS = _float_setting("MAILSYNC_LIST_TASK_SECONDS", 10.0)
MAILSYNC_MESSAGE_FORMAT = env.str("MAILSYNC_MESSAGE_FORMAT", default="full")
if MAILSYNC_MESSAGE_FORMAT not in ("full", "raw", "metadata", "minimal"):
    raise ImproperlyConfigured(
        f"MAILSYNC_MESSAGE_FORMAT={MAILSYNC_MESSAGE_FORMAT!r} must be full, raw, metadata or minimal"
    )
MAILSYNC_RETRY_BACKOFF_SECONDS = _float_setting("MAILSYNC_RETRY_BACKOFF_SECONDS", 0.5)
MAILSYNC_INCLUDE_SPAM_TRASH = _bool_setting("MAILSYNC_INCLUDE_SPAM_TRASH", True)
# Characters of each message's text that full-text search covers (PostgreSQL): the
# search vector is the biggest part of a stored message; 0 = subject and addresses only.
MAILSYNC_SEARCH_BODY_CHARS = _int_setting("MAILSYNC_SEARCH_BODY_CHARS", 2000)
MAILSYNC_QUOTA_USER_PER_MINUTE = _int_setting("MAILSYNC_QUOTA_USER_PER_MINUTE", 15_000, 1)
MAILSYNC_QUOTA_PROJECT_PER_MINUTE = _int_setting("MAILSYNC_QUOTA_PROJECT_PER_MINUTE", 1_200_000, 1)
# Gmail's moving window for both budgets (60 s); tests shrink it along with the emulator's.
MAILSYNC_QUOTA_WINDOW_SECONDS = env.float("MAILSYNC_QUOTA_WINDOW_SECONDS", default=60.0)
if MAILSYNC_QUOTA_WINDOW_SECONDS <= 0:
    raise ImproperlyConfigured("MAILSYNC_QUOTA_WINDOW_SECONDS must be more than 0")
MAILSYNC_INCREMENTAL_INTERVAL_MINUTES = _int_setting(
    "MAILSYNC_INCREMENTAL_INTERVAL_MINUTES", 5, minimum=1
)
# Users whose push watch is healthy are still polled, as a safety net, this often.
MAILSYNC_PUSH_FALLBACK_MINUTES = _int_setting("MAILSYNC_PUSH_FALLBACK_MINUTES", 60, minimum=1)
MAILSYNC_STALLED_AFTER_SECONDS = _int_setting("MAILSYNC_STALLED_AFTER_SECONDS", 300, 10)
# history.list's answer id runs ahead of the records it shows: it becomes the stored
# id only once a pass this much later shows nothing below it (mailsync/sync/history_ids.py).
MAILSYNC_HISTORY_SETTLE_SECONDS = env.float("MAILSYNC_HISTORY_SETTLE_SECONDS", default=60.0)
if MAILSYNC_HISTORY_SETTLE_SECONDS < 0:
    raise ImproperlyConfigured("MAILSYNC_HISTORY_SETTLE_SECONDS must not be negative")
# After expired history made us re-list a mailbox, Gmail can answer 404 for fresh ids a
# while (lieer#301): another re-listing waits at least this long; polling goes on.
MAILSYNC_RESYNC_MIN_INTERVAL_MINUTES = _int_setting(
    "MAILSYNC_RESYNC_MIN_INTERVAL_MINUTES", 180, minimum=0
)
# A message that fails while Gmail serves others is tried again after this many seconds,
# doubling each time; after MAILSYNC_UNAVAILABLE_AFTER_ATTEMPTS it is "unavailable" (the
# run completes without it, says so, and the health check tries again).
MAILSYNC_MESSAGE_RETRY_SECONDS = _float_setting("MAILSYNC_MESSAGE_RETRY_SECONDS", 15.0)
MAILSYNC_UNAVAILABLE_AFTER_ATTEMPTS = _int_setting("MAILSYNC_UNAVAILABLE_AFTER_ATTEMPTS", 4, 1)
# When Gmail fails as a whole (5xx, network), runs wait this long, doubling each time
# (at most 10 minutes), and stay active meanwhile with a "Retrying" note.
MAILSYNC_OUTAGE_RETRY_SECONDS = _float_setting("MAILSYNC_OUTAGE_RETRY_SECONDS", 30.0)
MAILSYNC_KEEP_FINISHED_RUNS_DAYS = _int_setting("MAILSYNC_KEEP_FINISHED_RUNS_DAYS", 30, 1)

# --- Static files, i18n, logging -----------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
# plain: one readable line per event; json: one JSON object per line for log shippers
# (user_id, run_id, event and the other `extra` fields become keys).
LOG_FORMAT = env.str("LOG_FORMAT", default="plain").strip().lower()
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r} must be plain or json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    # Django-Q2 logs every task it takes, runs and schedules at INFO (140M lines a day
    # for the fleet): those lines are DEBUG here; start, stop and failures stay.
    "filters": {"task_noise": {"()": "mailsync.log_format.TaskNoiseFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "googleapiclient.discovery_cache": {"level": "ERROR"},
        "django-q": {"filters": ["task_noise"]},
    },
}

# --- Operating it: metrics and health ----------------------------------------------------
# prometheus-client's multiprocess mode: every process of this machine (web workers,
# qcluster workers) writes its figures to files here and /metrics adds them up. It must
# be set before prometheus_client is imported, hence os.environ; production points it
# at a directory of its own per machine (tmpfs, e.g. /run/mailsync/metrics).
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="").strip() or str(
    BASE_DIR / ".metrics"
)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = PROMETHEUS_MULTIPROC_DIR
Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
# /metrics is open with DEBUG on; otherwise it needs the bearer token, a client address
# in the networks, or both when both are set (and refuses everyone when neither is).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")


def _networks_setting(name: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = []
    for item in env.list(name, default=[]):
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {item!r} is not an IP network") from None
    return networks


METRICS_ALLOWED_NETWORKS = _networks_setting("METRICS_ALLOWED_NETWORKS")
# /health/ fails when no qcluster has finished a task for this long (the incremental
# dispatcher runs every minute, so a live cluster beats at least that often).
HEALTH_HEARTBEAT_MAX_AGE_SECONDS = _int_setting("HEALTH_HEARTBEAT_MAX_AGE_SECONDS", 180, 10)

# The debug page hides passwords in every URL-valued setting (DATABASE_URL, REDIS_URL,
# the cache and broker locations), not only in settings named like secrets.
DEFAULT_EXCEPTION_REPORTER_FILTER = "config.exception_filter.PasswordMaskingFilter"

# --- HTTPS and security headers --------------------------------------------------------
# With DEBUG off the defaults are the strict ones (`manage.py check --deploy` is clean);
# each can be relaxed from the environment. With DEBUG on (runserver, plain HTTP) they
# are off.
_https = not DEBUG
SECURE_SSL_REDIRECT = _bool_setting("SECURE_SSL_REDIRECT", _https)
SESSION_COOKIE_SECURE = _bool_setting("SESSION_COOKIE_SECURE", _https)
CSRF_COOKIE_SECURE = _bool_setting("CSRF_COOKIE_SECURE", _https)
SECURE_HSTS_SECONDS = _int_setting("SECURE_HSTS_SECONDS", 31_536_000 if _https else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _bool_setting("SECURE_HSTS_INCLUDE_SUBDOMAINS", _https)
SECURE_HSTS_PRELOAD = _bool_setting("SECURE_HSTS_PRELOAD", _https)
# Behind a TLS-terminating proxy: the header it sets to "https" (X-Forwarded-Proto).
# Only set it when the proxy always sets or overwrites that header.
_proxy_header = env.str("SECURE_PROXY_SSL_HEADER", default="").strip()
if _proxy_header:
    if not _proxy_header.replace("-", "").replace("_", "").isalnum():
        raise ImproperlyConfigured(
            f"SECURE_PROXY_SSL_HEADER={_proxy_header!r} is not a header name "
            "(e.g. X-Forwarded-Proto)"
        )
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_header.upper().replace("-", "_"), "https")
SECURE_REFERRER_POLICY = "same-origin"

# Content-Security-Policy (django-csp) on every response. Our pages load their
# scripts and styles from /static/ only; inline *styles* are allowed because the
# admin and our progress bars use style attributes (scripts stay file-only).
# Email HTML is sanitized (no style, no remote images) and shown in sandboxed
# srcdoc frames, which inherit this policy. The sign-in form posts to us and we
# redirect to Google's consent page, which form-action must allow.
_google_accounts = "{0.scheme}://{0.netloc}".format(urlsplit(GOOGLE_AUTHORIZE_URL))
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "frame-src": ["'self'"],
        "frame-ancestors": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'", _google_accounts],
    }
}
