"""A small Django EDMS of our own: the outside schema the live-database restore is proven on.

Documents with versions and pages (pages point at stored files through a generic foreign
key), tags, django-guardian style access control entries, a django-activity-stream style
action log with three generic foreign keys, and a one-row registry without a unique key.
Django's settings are per process, so everything Django does runs in ``runner``
subprocesses (``python -m tests.django_edms.runner``), never in the pytest process.
"""
