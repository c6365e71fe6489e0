"""Models shaped like the EDMS applications the journal backs up (Mayan EDMS,
django-guardian, django-activity-stream)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.models import Group
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.utils import timezone


class Tag(models.Model):
    slug = models.SlugField(unique=True)
    label = models.CharField(max_length=100)


class Cabinet(models.Model):
    """A folder of documents keyed by a uuid: generic references to it hold a uuid as
    text."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    label = models.CharField(max_length=100)


class Document(models.Model):
    # as in Mayan EDMS: a uuid the application treats as the document's identity, with no
    # unique constraint in the database
    uuid = models.UUIDField(default=uuid.uuid4, editable=False)
    title = models.CharField(max_length=200)
    tags = models.ManyToManyField(Tag, related_name="documents", blank=True)


class DocumentVersion(models.Model):
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    comment = models.CharField(max_length=200, blank=True)


class File(models.Model):
    """A stored file: its storage name, and the checksum that deduplicates content."""

    name = models.CharField(max_length=255, unique=True)
    checksum = models.CharField(max_length=64, unique=True, null=True)
    size = models.PositiveIntegerField()


class Page(models.Model):
    version = models.ForeignKey(DocumentVersion, on_delete=models.CASCADE, related_name="pages")
    number = models.PositiveIntegerField()
    content_type = models.ForeignKey(ContentType, on_delete=models.PROTECT)
    object_id = models.PositiveIntegerField()
    content_object = GenericForeignKey("content_type", "object_id")


class AccessControlEntry(models.Model):
    """django-guardian style: a role on any object for a user or a group (object id as
    text, as guardian's generic object permissions keep it)."""

    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE)
    object_id = models.CharField(max_length=64)
    content_object = GenericForeignKey("content_type", "object_id")
    role = models.CharField(max_length=32)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                             on_delete=models.CASCADE)
    group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.CASCADE)


class Action(models.Model):
    """django-activity-stream's Action: actor, target and action object, each a generic
    foreign key whose object id is text."""

    actor_content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE,
                                           related_name="actor")
    actor_object_id = models.CharField(max_length=255)
    actor = GenericForeignKey("actor_content_type", "actor_object_id")
    verb = models.CharField(max_length=255)
    target_content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, null=True,
                                            blank=True, related_name="target")
    target_object_id = models.CharField(max_length=255, null=True, blank=True)
    target = GenericForeignKey("target_content_type", "target_object_id")
    action_object_content_type = models.ForeignKey(
        ContentType, on_delete=models.CASCADE, null=True, blank=True,
        related_name="action_object")
    action_object_object_id = models.CharField(max_length=255, null=True, blank=True)
    action_object = GenericForeignKey("action_object_content_type", "action_object_object_id")
    timestamp = models.DateTimeField(default=timezone.now)


class Registry(models.Model):
    """One row per installation, found with ``get_or_create``; no unique key at all."""

    name = models.CharField(max_length=64)
    schema_version = models.PositiveIntegerField()


class Notification(models.Model):
    """An action delivered to a user (as django-notifications does): a foreign key into
    the activity stream, so the stream cannot simply be loaded after every other table."""

    recipient = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                  related_name="notifications")
    action = models.ForeignKey(Action, on_delete=models.CASCADE, related_name="notifications")
    unread = models.BooleanField(default=True)
