"""An outside schema: Django's contrib apps, migrated by Django itself.

Source and target are migrated in different app orders, so content type and permission
ids differ; the target also has a user of its own. After a natural-key restore, Django's
ORM reads the same users, groups, permissions and admin log entries (a generic foreign
key) from both databases.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import django
import pytest

from restorer.restore import RestoreOptions, restore
from tests.support.restore import Recorder

pytestmark = pytest.mark.integration

APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django.contrib.admin",
        "django.contrib.sessions", "django.contrib.messages"]
CONFIG = {
    "natural_keys": {"django_migrations": ("app", "name")},  # Django declares no key there
    "generic_foreign_keys": {
        "django_admin_log": {"content_type": "content_type_id", "object_id": "object_id"}},
}


def _db(url: str) -> dict[str, Any]:
    p = urlsplit(url)
    return {"ENGINE": "django.db.backends.postgresql", "NAME": p.path.lstrip("/"),
            "USER": p.username or "postgres", "PASSWORD": p.password or "",
            "HOST": p.hostname, "PORT": str(p.port or 5432)}


@pytest.fixture
def django_dbs(source_db: str, target_db: str) -> Any:
    """Django configured in-process with the source as "default" and the target."""
    from django.conf import settings

    # settings are per process: only this module configures them, once
    assert not settings.configured, "Django settings were configured elsewhere in this process"
    settings.configure(
        SECRET_KEY="test", USE_TZ=True, INSTALLED_APPS=APPS,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        DATABASES={"default": _db(source_db), "target": _db(target_db)})
    django.setup()
    from django.db import connections

    yield source_db, target_db
    connections.close_all()


def _migrate(alias: str, first: list[str]) -> None:
    from django.core.management import call_command

    for app in first:  # these apps' content types and permissions get the low ids
        call_command("migrate", app, database=alias, verbosity=0, interactive=False)
    call_command("migrate", database=alias, verbosity=0, interactive=False)


def _source_data() -> None:
    from django.contrib.admin.models import CHANGE, LogEntry
    from django.contrib.auth.models import Group, Permission, User
    from django.contrib.contenttypes.models import ContentType

    editors = Group.objects.create(name="editors")
    editors.permissions.set(Permission.objects.filter(codename__in=[
        "change_user", "view_group", "delete_logentry"]))
    auditors = Group.objects.create(name="auditors")
    auditors.permissions.set(Permission.objects.filter(content_type__app_label="sessions"))
    ada = User.objects.create_user("ada", "ada@example.org", "pw")
    ada.groups.set([editors, auditors])
    ada.user_permissions.set(Permission.objects.filter(codename="add_group"))
    alan = User.objects.create_user("alan", "alan@example.org", "pw", is_staff=True)
    alan.groups.set([auditors])
    for obj, user in ((ada, alan), (editors, alan), (alan, ada)):
        LogEntry.objects.create(
            user=user, content_type=ContentType.objects.get_for_model(obj),
            object_id=str(obj.pk), object_repr=str(obj), action_flag=CHANGE,
            change_message="changed")


def _read(alias: str) -> dict[str, Any]:
    """Everything compared, in natural terms only (no ids)."""
    from django.contrib.admin.models import LogEntry
    from django.contrib.auth.models import Group, User

    def perm(p: Any) -> tuple[str, str, str]:
        return (p.content_type.app_label, p.content_type.model, p.codename)

    users = {u.username: (u.email, u.is_staff, sorted(g.name for g in u.groups.all()),
                          sorted(perm(p) for p in u.user_permissions.all()))
             for u in User.objects.using(alias).exclude(username="target-only")}
    groups = {g.name: sorted(perm(p) for p in g.permissions.all())
              for g in Group.objects.using(alias).all()}
    log = sorted((e.user.username, e.content_type.app_label, e.content_type.model,
                  str(e.content_type.get_object_for_this_type(using=alias, pk=e.object_id)),
                  e.object_repr, e.action_flag)
                 for e in LogEntry.objects.using(alias).all())
    return {"users": users, "groups": groups, "log": log}


def test_django_contrib_apps_restore_through_natural_keys(django_dbs, tmp_path):
    from django.contrib.auth.models import Permission, User
    from django.contrib.contenttypes.models import ContentType

    source, target = django_dbs
    _migrate("default", [])
    _migrate("target", ["contenttypes", "sessions", "auth"])
    _source_data()
    User.objects.db_manager("target").create_user("target-only", "t@example.org", "pw")
    # the point of the exercise: ids differ between the two databases
    ct_source = {(c.app_label, c.model): c.pk for c in ContentType.objects.all()}
    ct_target = {(c.app_label, c.model): c.pk for c in ContentType.objects.using("target")}
    assert ct_source != ct_target
    assert ({p.codename: p.pk for p in Permission.objects.all()}
            != {p.codename: p.pk for p in Permission.objects.using("target")})

    rec = Recorder(source, str(tmp_path / "packages"))
    rec.full()
    report = restore(RestoreOptions(target_url=target, store=rec.store, **CONFIG))
    assert report.mode == "remap"
    assert report.tables["public.django_content_type"].remapped > 0

    ContentType.objects.clear_cache()
    assert _read("target") == _read("default")
    # nothing was duplicated: content types, permissions and migrations once each
    assert ContentType.objects.using("target").count() == ContentType.objects.count()
    assert Permission.objects.using("target").count() == Permission.objects.count()
    assert User.objects.using("target").count() == User.objects.count() + 1
