"""What Django does for the live-restore test, one command per process.

    EDMS_DATABASE_URL=postgresql://… python -m tests.django_edms.runner COMMAND [ARGS]

Commands: ``migrate [APP…]`` (those apps first, then everything), ``source N`` (workload
step N of the source; 0 is the state before capture starts), ``target`` (the live target's
own rows), ``view`` (every row in natural terms, as JSON on stdout), ``app-check`` (does the
application still work: ``get_or_create`` on the registry, one document per uuid, new rows
get free ids; JSON on stdout).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_edms.settings")
django.setup()

from django.contrib.auth.models import Group, Permission, User  # noqa: E402
from django.contrib.contenttypes.models import ContentType  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.db.models import Model  # noqa: E402

from tests.django_edms.models import (  # noqa: E402
    AccessControlEntry,
    Action,
    Cabinet,
    Document,
    DocumentVersion,
    File,
    Notification,
    Page,
    Registry,
    Tag,
)

# the document both the source and the live target hold (the same uuid, other ids)
SHARED_UUID = uuid.UUID("5f0c3a52-8f4e-4c1b-9a57-2b7d06e1c0de")
# a source file with an id of its own, so the test can find it in an error message
COLLIDING_FILE_ID = 4711
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def uid(name: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"edms:{name}")


def checksum(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def stored(name: str, size: int, pk: int | None = None) -> File:
    return File.objects.create(id=pk, name=name, checksum=checksum(name), size=size)


def action(actor: Model, verb: str, target: Model | None = None,
           action_object: Model | None = None, minutes: int = 0, notify: tuple[User, ...] = ()
           ) -> Action:
    done = Action.objects.create(actor=actor, verb=verb, target=target,
                                 action_object=action_object,
                                 timestamp=T0 + timedelta(minutes=minutes))
    for user in notify:
        Notification.objects.create(recipient=user, action=done)
    return done


def acl(obj: Model, role: str, user: User | None = None, group: Group | None = None
        ) -> AccessControlEntry:
    return AccessControlEntry.objects.create(content_object=obj, role=role, user=user,
                                             group=group)


def version(document: Document, number: int, comment: str, *files: File) -> DocumentVersion:
    v = DocumentVersion.objects.create(document=document, number=number, comment=comment)
    for page, f in enumerate(files, start=1):
        Page.objects.create(version=v, number=page, content_object=f)
    return v


def references_to(obj: Model) -> tuple[Any, ...]:
    """Generic references to ``obj`` (Django does not cascade those)."""
    ct, pk = ContentType.objects.get_for_model(obj), str(obj.pk)
    return (AccessControlEntry.objects.filter(content_type=ct, object_id=pk),
            Action.objects.filter(actor_content_type=ct, actor_object_id=pk),
            Action.objects.filter(target_content_type=ct, target_object_id=pk),
            Action.objects.filter(action_object_content_type=ct, action_object_object_id=pk))


def delete_document(document: Document) -> None:
    """Delete a document and every generic reference to it, its versions and pages, as
    the application's GenericRelations would."""
    objects: list[Model] = [document]
    for v in document.versions.all():
        objects += [v, *v.pages.all()]
    for obj in objects:
        for query in references_to(obj):
            query.delete()
    document.delete()


# --- the source: a base state, then four steps of work between named marks ----------------

def source_base() -> None:
    editors = Group.objects.create(name="editors")
    auditors = Group.objects.create(name="auditors")
    editors.permissions.set(Permission.objects.filter(
        content_type__app_label="django_edms",
        codename__in=["change_document", "view_tag", "add_page"]))
    auditors.permissions.set(Permission.objects.filter(
        codename__in=["view_document", "view_action", "view_user"]))
    ada = User.objects.create_user("ada", "ada@example.org", "pw", first_name="Ada")
    alan = User.objects.create_user("alan", "alan@example.org", "pw", is_staff=True)
    grace = User.objects.create_user("grace", "grace@example.org", "pw")
    ada.groups.set([editors])
    alan.groups.set([editors, auditors])
    grace.user_permissions.set(Permission.objects.filter(codename="delete_document"))

    tags = {slug: Tag.objects.create(slug=slug, label=slug.title())
            for slug in ("invoice", "contract", "draft")}
    report = Document.objects.create(uuid=SHARED_UUID, title="Annual report 2025")
    lease = Document.objects.create(uuid=uid("lease"), title="Office lease")
    memo = Document.objects.create(uuid=uid("memo"), title="Memo on retention")
    report.tags.set([tags["invoice"]])
    lease.tags.set([tags["contract"], tags["draft"]])
    scan = stored("store/scan-of-lease.tiff", 90_000, pk=COLLIDING_FILE_ID)
    f1, f2, f3 = (stored(f"store/report-{i}.pdf", 1000 * i) for i in (1, 2, 3))
    report_v1 = version(report, 1, "as received", f1, f2)
    lease_v1 = version(lease, 1, "", f3, scan)
    memo_v1 = version(memo, 1, "draft")

    acl(report, "viewer", user=ada)
    acl(lease, "editor", group=editors)
    acl(tags["invoice"], "viewer", user=alan)
    acl(f1, "owner", user=grace)
    acl(memo, "viewer", group=auditors)
    action(ada, "created", report, report_v1, 1, notify=(alan,))
    action(alan, "tagged", lease, tags["contract"], 2)
    action(grace, "uploaded", lease_v1, scan, 3, notify=(ada, alan))
    action(alan, "commented", memo_v1, None, 4)
    action(editors, "reviewed", report, None, 5)
    action(ada, "logged in", None, None, 6)
    finance = Cabinet.objects.create(id=uid("cabinet-finance"), label="Finance")
    acl(finance, "editor", group=auditors)
    action(alan, "filed", finance, report, 7)
    Registry.objects.get_or_create(name="installation", defaults={"schema_version": 3})


def source_step_1() -> None:
    linus = User.objects.create_user("linus", "linus@example.org", "pw")
    editors = Group.objects.get(name="editors")
    board = Document.objects.create(uuid=uid("board"), title="Board minutes")
    board.tags.set([Tag.objects.get(slug="draft")])
    minutes = stored("store/minutes-1.pdf", 4200)
    v1 = version(board, 1, "first draft", minutes, File.objects.get(name="store/report-2.pdf"))
    acl(board, "editor", group=editors)
    acl(board, "viewer", user=linus)
    acl(v1, "reviewer", user=User.objects.get(username="ada"))
    action(linus, "uploaded", board, v1.pages.get(number=1), 10,
           notify=tuple(User.objects.filter(username__in=["ada", "alan"])))
    action(linus, "attached", v1, minutes, 11)
    Document.objects.filter(uuid=uid("lease")).update(title="Office lease (signed)")


def source_step_2() -> None:
    alan = User.objects.get(username="alan")
    memo = Document.objects.get(uuid=uid("memo"))
    report = Document.objects.get(uuid=SHARED_UUID)
    # alan's ACL moves from a tag to a document
    moved = AccessControlEntry.objects.get(user=alan, role="viewer")
    moved.content_object = memo
    moved.save()
    archived = Tag.objects.create(slug="archived", label="Archived")
    report.tags.add(archived)
    appendix = stored("store/report-appendix.pdf", 777)
    v2 = version(report, 2, "with appendix", File.objects.get(name="store/report-1.pdf"),
                 appendix)
    action(Group.objects.get(name="editors"), "reviewed", v2, archived, 20)
    action(alan, "archived", report, archived, 21, notify=(User.objects.get(username="grace"),))
    Notification.objects.filter(recipient=alan).update(unread=False)
    Page.objects.filter(version=report.versions.get(number=1), number=2).delete()
    Registry.objects.get_or_create(name="installation", defaults={"schema_version": 3})


def source_step_3() -> None:
    delete_document(Document.objects.get(uuid=uid("lease")))
    User.objects.filter(username="alan").update(email="alan.turing@example.org")
    board_page = Page.objects.get(version__document__uuid=uid("board"), number=2)
    board_page.content_object = File.objects.get(name="store/report-3.pdf")
    board_page.save()
    grace = User.objects.get(username="grace")
    action(grace, "deleted", None, None, 30)
    action(grace, "restored", Document.objects.get(uuid=uid("memo")),
           File.objects.get(pk=COLLIDING_FILE_ID), 31,
           notify=(User.objects.get(username="linus"),))


def source_step_4() -> None:
    margaret = User.objects.create_user("margaret", "margaret@example.org", "pw")
    board = Document.objects.get(uuid=uid("board"))
    acl(board, "viewer", user=margaret)
    action(margaret, "viewed", board, File.objects.get(name="store/minutes-1.pdf"), 40,
           notify=(User.objects.get(username="linus"),))
    Tag.objects.filter(slug="contract").update(label="Contracts")
    legal = Cabinet.objects.create(id=uid("cabinet-legal"), label="Legal")
    acl(legal, "viewer", user=margaret)
    action(margaret, "filed", legal, board, 41)
    margaret.groups.add(Group.objects.get(name="auditors"))


SOURCE_STEPS = (source_base, source_step_1, source_step_2, source_step_3, source_step_4)


# --- the live target's own rows: ids overlapping the source's, one shared uuid ------------

def target_own() -> None:
    reviewers = Group.objects.create(name="reviewers")
    reviewers.permissions.set(Permission.objects.filter(codename="view_document"))
    tess = User.objects.create_user("tess", "tess@example.net", "pw")
    tom = User.objects.create_user("tom", "tom@example.net", "pw")
    tess.groups.set([reviewers])
    local = Tag.objects.create(slug="local", label="Local")
    scanned = Tag.objects.create(slug="scanned", label="Scanned")
    contract = Document.objects.create(uuid=uid("target-contract"), title="Local contract")
    scan = Document.objects.create(uuid=uid("target-scan"), title="Scanned letter")
    Document.objects.create(uuid=SHARED_UUID, title="Annual report (local copy)")
    contract.tags.set([local])
    scan.tags.set([scanned, local])
    a, b = stored("local/a.pdf", 11), stored("local/b.pdf", 22)
    contract_v1 = version(contract, 1, "signed copy", a)
    version(scan, 1, "ocr", b, a)
    acl(contract, "viewer", user=tess)
    acl(scan, "editor", group=reviewers)
    acl(local, "owner", user=tom)
    acl(a, "owner", user=tess)
    inbox = Cabinet.objects.create(id=uid("target-inbox"), label="Inbox")
    acl(inbox, "owner", user=tom)
    action(tess, "created", contract, contract_v1, 100, notify=(tom,))
    action(tom, "tagged", scan, scanned, 101)
    action(reviewers, "reviewed", contract, None, 102)
    # the application created its registry row after a discarded attempt: another id
    Registry.objects.create(name="installation", schema_version=0).delete()
    Registry.objects.get_or_create(name="installation", defaults={"schema_version": 3})


# --- the oracle: every row in natural terms -----------------------------------------------

def natural(obj: Model | None) -> Any:
    """The identity of an object that does not depend on ids."""
    if obj is None:
        return None
    match obj:
        case User():
            return ["user", obj.username]
        case Group():
            return ["group", obj.name]
        case Document():
            return ["document", str(obj.uuid)]
        case DocumentVersion():
            return ["version", str(obj.document.uuid), obj.number]
        case Page():
            return ["page", natural(obj.version), obj.number]
        case File():
            return ["file", obj.name]
        case Tag():
            return ["tag", obj.slug]
        case Cabinet():
            return ["cabinet", str(obj.id)]
        case ContentType():
            return ["content type", obj.app_label, obj.model]
        case Permission():
            return ["permission", obj.content_type.app_label, obj.codename]
    raise TypeError(f"no natural key for {type(obj).__name__}")


def generic(content_type: ContentType | None, object_id: Any) -> Any:
    """What a generic foreign key points at, in natural terms ("dangling" if nothing)."""
    if content_type is None:
        return None
    model = content_type.model_class()
    found = model._default_manager.filter(pk=object_id).first() if model else None
    if found is None:
        return ["dangling", content_type.app_label, content_type.model, str(object_id)]
    return natural(found)


def action_row(a: Action) -> list[Any]:
    return [generic(a.actor_content_type, a.actor_object_id), a.verb,
            generic(a.target_content_type, a.target_object_id),
            generic(a.action_object_content_type, a.action_object_object_id),
            a.timestamp.isoformat()]


def view() -> dict[str, list[list[Any]]]:
    """Per model, [primary key, row in natural terms] for every row."""
    out: dict[str, list[list[Any]]] = {
        "content_types": [[c.pk, natural(c)] for c in ContentType.objects.all()],
        "permissions": [[p.pk, natural(p)] for p in Permission.objects.all()],
        "groups": [[g.pk, [g.name, sorted(natural(p) for p in g.permissions.all())]]
                   for g in Group.objects.all()],
        "users": [[u.pk, [u.username, u.email, u.first_name, u.is_staff, u.is_active,
                          sorted(g.name for g in u.groups.all()),
                          sorted(natural(p) for p in u.user_permissions.all())]]
                  for u in User.objects.all()],
        "tags": [[t.pk, [t.slug, t.label]] for t in Tag.objects.all()],
        "cabinets": [[str(c.pk), [str(c.pk), c.label]] for c in Cabinet.objects.all()],
        "documents": [[d.pk, [str(d.uuid), d.title]] for d in Document.objects.all()],
        "document_tags": [[link.pk, [natural(link.document), natural(link.tag)]]
                          for link in Document.tags.through.objects.all()],
        "versions": [[v.pk, [natural(v.document), v.number, v.comment]]
                     for v in DocumentVersion.objects.all()],
        "files": [[f.pk, [f.name, f.checksum, f.size]] for f in File.objects.all()],
        "pages": [[p.pk, [natural(p.version), p.number,
                          generic(p.content_type, p.object_id)]]
                  for p in Page.objects.all()],
        "acls": [[e.pk, [generic(e.content_type, e.object_id), e.role, natural(e.user),
                         natural(e.group)]]
                 for e in AccessControlEntry.objects.all()],
        "actions": [[a.pk, action_row(a)] for a in Action.objects.all()],
        "notifications": [[n.pk, [natural(n.recipient), action_row(n.action), n.unread]]
                          for n in Notification.objects.all()],
        "registry": [[r.pk, [r.name, r.schema_version]] for r in Registry.objects.all()],
    }
    with connection.cursor() as cur:
        cur.execute("SELECT id, app, name FROM django_migrations")
        out["migrations"] = [[pk, [app, name]] for pk, app, name in cur.fetchall()]
    return out


class _Rollback(Exception):
    pass


def app_check() -> dict[str, Any]:
    """What the application does after the restore, reported rather than raised."""
    out: dict[str, Any] = {"registry_rows": Registry.objects.count(),
                           "shared_documents": Document.objects.filter(uuid=SHARED_UUID).count()}
    try:
        _, created = Registry.objects.get_or_create(name="installation",
                                                    defaults={"schema_version": 3})
        out["get_or_create"] = "created" if created else "found"
    except Exception as exc:  # noqa: BLE001 — the report is the point
        out["get_or_create"] = f"{type(exc).__name__}: {exc}"
    try:
        out["shared_get"] = str(Document.objects.get(uuid=SHARED_UUID).uuid)
    except Exception as exc:  # noqa: BLE001
        out["shared_get"] = f"{type(exc).__name__}: {exc}"
    try:  # every sequence is past the ids now in use (rolled back: the target stays as is)
        with transaction.atomic():
            user = User.objects.create_user("after-restore", "n@example.org", "pw")
            document = Document.objects.create(title="after restore")
            v = version(document, 1, "", stored("after/restore.pdf", 1))
            acl(document, "viewer", user=user)
            action(user, "created", document, v)
            Tag.objects.create(slug="after-restore", label="x")
            Group.objects.create(name="after-restore")
            raise _Rollback
    except _Rollback:
        out["new_rows"] = "ok"
    except Exception as exc:  # noqa: BLE001
        out["new_rows"] = f"{type(exc).__name__}: {exc}"
    return out


def main(argv: list[str]) -> None:
    command, args = argv[0], argv[1:]
    if command == "migrate":
        for app in args:  # these apps' content types and permissions are created first
            call_command("migrate", app, verbosity=0, interactive=False)
        call_command("migrate", verbosity=0, interactive=False)
    elif command == "source":
        with transaction.atomic():
            SOURCE_STEPS[int(args[0])]()
    elif command == "target":
        with transaction.atomic():
            target_own()
    elif command == "view":
        json.dump(view(), sys.stdout)
    elif command == "app-check":
        json.dump(app_check(), sys.stdout)
    else:
        raise SystemExit(f"unknown command {command!r}")
    connection.close()


if __name__ == "__main__":
    main(sys.argv[1:])
