"""The operations layer's job database: backup configurations, recorded jobs, health
results, the hash-chained audit trail, the scheduler and restore drills.

``models`` defines the tables (the migrations under ``migrations/`` come from it),
``database`` opens and upgrades the job database, ``repository`` starts, progresses and
finishes jobs, ``audit_chain`` appends and verifies the audit trail, ``scheduler`` decides
what is due, ``drill`` restores into a scratch database and verifies it. The CLI and, later,
the REST API sit on top of these; nothing here imports either.
"""
