"""The EDMS sample database: a Django-style schema, a fast bulk load and a live workload.

It is what the demo captures and what the tests restore: surrogate integer ids everywhere,
natural keys beside them (a user's ``username``, a document's ``uuid``, a content type's
``(app_label, model)``), a self-reference (a user's manager), a foreign-key cycle
(``document.current_version_id`` -> ``document_version``, deferred), generic foreign keys
(``access_control_entry`` and ``django_admin_log`` point at any row through a content type
and an object id), an enum, jsonb, arrays, bytea and large TOASTed text.

Deletes follow Django: the database does not cascade, the application deletes dependants
itself (so the journal sees every deleted row). The one exception is a user's manager,
``ON DELETE SET NULL`` as Django's ``on_delete=SET_NULL`` would be if left to the database.
Only the cycle's foreign key is deferrable: the rest are checked at once, which is what
makes load and restore order matter.
"""

from journal.sample.load import load
from journal.sample.oracle import snapshot_state
from journal.sample.schema import EPOCH, SCHEMA_DDL, TABLES, connection, create_schema
from journal.sample.workload import TRANSACTIONS, WorkloadStats, workload

__all__ = ["EPOCH", "SCHEMA_DDL", "TABLES", "TRANSACTIONS", "WorkloadStats", "connection",
           "create_schema", "load", "snapshot_state", "workload"]
