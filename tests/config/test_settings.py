from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PRODUCTION_ENV = {
    "DJANGO_DEBUG": "false",
    "DJANGO_SECRET_KEY": "p7#x" + "q9Zr2Lm4Vt8Kw3Hs6Nd1Bf5Gj0Yc" * 3,
    "DJANGO_ALLOWED_HOSTS": "growth.example.com",
    "DATABASE_URL": "postgres://growth:secret@db.internal:5432/growth",
    "CELERY_BROKER_URL": "redis://redis.internal:6379/0",
    "CACHE_URL": "redis://redis.internal:6379/1",
}


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_", "CACHE_"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
    )


def test_settings__no_secret_outside_debug__improperly_configured() -> None:
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "DJANGO_SECRET_KEY"}
    result = _manage("check", **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "DJANGO_SECRET_KEY" in result.stderr


def test_settings__production_env__check_deploy_passes_at_warning_level() -> None:
    result = _manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION_ENV)
    assert result.returncode == 0, result.stderr + result.stdout


def test_settings__production_env__uses_postgres_redis_broker_and_cache() -> None:
    code = (
        "from django.conf import settings as s;"
        "print(s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL, s.CACHES['default']['BACKEND'])"
    )
    result = _manage("shell", "-c", code, **PRODUCTION_ENV)
    assert result.returncode == 0, result.stderr
    engine, broker, cache = result.stdout.split()[-3:]
    assert engine == "django.db.backends.postgresql"
    assert broker.startswith("redis://")
    assert cache == "django_redis.cache.RedisCache" or cache.endswith("RedisCache")


def test_settings__replica_url_and_pooling__replica_alias_mirrored_in_tests_and_no_server_cursors() -> None:
    code = (
        "from django.conf import settings as s; r = s.DATABASES['replica'];"
        "print(r['HOST'], r['PORT'], r['TEST']['MIRROR'], s.DATABASE_ROUTERS[0],"
        " s.DATABASES['default']['DISABLE_SERVER_SIDE_CURSORS'], s.DATABASE_TRANSACTION_POOLING)"
    )
    env = {
        **PRODUCTION_ENV,
        "DATABASE_REPLICA_URL": "postgres://growth:secret@replica.internal:5432/growth",
        "DATABASE_TRANSACTION_POOLING": "true",
    }
    result = _manage("shell", "-c", code, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-6:] == [
        "replica.internal", "5432", "default", "config.replica.ReplicaRouter", "True", "True"
    ]  # fmt: skip
    deploy = _manage("check", "--deploy", "--fail-level", "WARNING", **env)
    assert deploy.returncode == 0, deploy.stderr + deploy.stdout


def test_settings__no_replica_url__one_database_and_server_cursors_allowed() -> None:
    code = (
        "from django.conf import settings as s;"
        "print(sorted(s.DATABASES), s.DATABASES['default'].get('DISABLE_SERVER_SIDE_CURSORS', False))"
    )
    result = _manage("shell", "-c", code, **PRODUCTION_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "['default'] False"


def test_settings__embedded_default__sqlite_and_filesystem_broker(tmp_path: Path) -> None:
    code = "from django.conf import settings as s; print(s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL)"
    result = _manage("shell", "-c", code, DJANGO_DEBUG="true", GROWTH_VAR_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["django.db.backends.sqlite3", "filesystem://localhost//"]


def test_migrations__models_as_committed__nothing_left_to_generate(tmp_path: Path) -> None:
    """A model change without its migration would be applied nowhere: caught here."""
    result = _manage("makemigrations", "--check", "--dry-run", DJANGO_DEBUG="true", GROWTH_VAR_DIR=str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def _secure_redirect(**env: str) -> str:
    """What production settings answer to a plain-HTTP request claiming X-Forwarded-Proto: https."""
    code = (
        "from django.test import Client;"
        "r = Client().get('/api/schema/', HTTP_HOST='growth.example.com', HTTP_X_FORWARDED_PROTO='https');"
        "print(r.status_code, r.headers.get('Location', '-'))"
    )
    result = _manage("shell", "-c", code, **{**PRODUCTION_ENV, **env})
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n")[-2]


def test_settings__x_forwarded_proto_from_a_client__not_trusted_by_default() -> None:
    # Given: production settings, no proxy configured; When: a client claims https itself
    # Then: it is still plain HTTP: redirected to https
    assert _secure_redirect() == "301 https://growth.example.com/api/schema/"


def test_settings__trust_proxy_on__x_forwarded_proto_trusted() -> None:
    status, _ = _secure_redirect(DJANGO_TRUST_PROXY="true").split()
    assert status == "200"


def test_create_api_key__fresh_embedded_default_no_variables__works_with_a_private_local_secret(
    tmp_path: Path,
) -> None:
    # Given: a fresh clone's environment: no DJANGO_* variable, no DATABASE_URL
    var = tmp_path / "var"
    migrated = _manage("migrate", "--no-input", "-v", "0", GROWTH_VAR_DIR=str(var))
    assert migrated.returncode == 0, migrated.stderr

    # When: the README's command
    created = _manage("create_api_key", "--name", "shop", "--scope", "events:write", GROWTH_VAR_DIR=str(var))

    # Then: a key is printed, and the secret was generated once, readable by its owner only
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip().startswith("gk_")
    secret = var / "secret_key"
    assert secret.stat().st_mode & 0o777 == 0o600
    first = secret.read_text()
    assert len(first.strip()) >= 50
    again = _manage("create_api_key", "--name", "shop 2", "--scope", "events:write", GROWTH_VAR_DIR=str(var))
    assert again.returncode == 0, again.stderr
    assert secret.read_text() == first


def test_settings__no_secret_with_sqlite_database_url_outside_debug__local_secret(tmp_path: Path) -> None:
    result = _manage(
        "shell", "-c", "from django.conf import settings; print(len(settings.SECRET_KEY))",
        DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3", GROWTH_VAR_DIR=str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[-1]) >= 50


def test_readyz__production_env_probe_to_loopback_host__json_answer_not_disallowed_host() -> None:
    # Given: the documented production environment (ALLOWED_HOSTS names the public host);
    # When: docker-compose's health check probes http://127.0.0.1:8000/readyz
    code = (
        "from django.test import Client;"
        "r = Client().get('/readyz', HTTP_HOST='127.0.0.1:8000');"
        "print(r.status_code, r['Content-Type'], r.json()['status'])"
    )
    result = _manage("shell", "-c", code, **PRODUCTION_ENV)
    # Then: the probe itself answers (here 503: this environment's database does not exist),
    # instead of 400 DisallowedHost with a logged traceback
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == "503 application/json unavailable"
    assert "DisallowedHost" not in result.stderr
