"""Settings of the runner processes: the database comes from ``EDMS_DATABASE_URL``, the
order of the installed apps (which decides content type and permission ids) from
``EDMS_APP_ORDER``."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote, urlsplit


def _database(url: str) -> dict[str, Any]:
    p = urlsplit(url)
    return {"ENGINE": "django.db.backends.postgresql", "NAME": p.path.lstrip("/"),
            "USER": unquote(p.username or "postgres"), "PASSWORD": unquote(p.password or ""),
            "HOST": p.hostname or "", "PORT": str(p.port or 5432)}


_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "tests.django_edms"]

SECRET_KEY = "edms-journal-tests"
USE_TZ = True
INSTALLED_APPS = _APPS[::-1] if os.environ.get("EDMS_APP_ORDER") == "reversed" else _APPS
DATABASES = {"default": _database(os.environ.get("EDMS_DATABASE_URL",
                                                 "postgresql://localhost/unused"))}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast, tests only
