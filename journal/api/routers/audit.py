"""/audit: the hash-chained audit trail, newest first, paged."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from journal.api import schemas
from journal.api.security import require_role
from journal.api.state import AppState, app_state
from journal.jobs import audit_chain
from journal.jobs.tokens import Caller

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", response_model=schemas.AuditPage)
def audit_page(state: Annotated[AppState, Depends(app_state)],
               _: Annotated[Caller, Depends(require_role("viewer"))],
               before: Annotated[int | None, Query(ge=1)] = None,
               limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    rows = audit_chain.page(state.db, before, limit)
    return {"entries": [audit_chain.to_json(e) for e in rows],
            "next_before": rows[-1].seq if len(rows) == limit and rows[-1].seq > 1 else None}
