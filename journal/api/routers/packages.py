"""/packages: the package store's manifests, and verifying one (a job)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response

from journal.api import schemas
from journal.api.audit import record_call
from journal.api.routers.jobs import accepted
from journal.api.security import require_role
from journal.api.state import AppState, app_state
from journal.errors import ValidationError
from journal.jobs.tokens import Caller
from journal.packages.store import open_store

router = APIRouter(prefix="/packages", tags=["packages"])
# only a whole package id: no prefixes, no paths, nothing the store would resolve elsewhere
PackageId = Annotated[str, Path(pattern=schemas.PACKAGE_ID)]


def summary(m: Any) -> dict[str, Any]:
    data = m.to_json()
    return {"id": m.package_id, "kind": m.kind, "database": m.database,
            "generation": m.generation, "from_position": data["from_position"],
            "to_position": data["to_position"], "first_commit_ts": m.first_commit_ts,
            "last_commit_ts": m.last_commit_ts, "parent_id": m.parent_id, "bytes": m.size,
            "rows": m.rows, "tables": m.tables(), "marks": data["marks"],
            "created_at": m.created_at}


def _manifest(state: AppState, package_id: str) -> Any:
    from journal.api.problems import Problem

    store = open_store(state.config.packages_url)
    if not store.exists(package_id):
        raise Problem(404, f"no package {package_id} in {state.config.packages_url}")
    try:
        return store.get(package_id)
    except ValidationError as exc:
        raise Problem(422, str(exc)) from None


@router.get("", response_model=list[schemas.PackageSummary])
def list_packages(state: Annotated[AppState, Depends(app_state)],
                  _: Annotated[Caller, Depends(require_role("viewer"))]
                  ) -> list[dict[str, Any]]:
    """Every package, oldest position first."""
    return [summary(m) for m in open_store(state.config.packages_url).list()]


@router.get("/{package_id}")
def get_package(package_id: PackageId, state: Annotated[AppState, Depends(app_state)],
                _: Annotated[Caller, Depends(require_role("viewer"))]) -> dict[str, Any]:
    """The whole manifest."""
    return _manifest(state, package_id).to_json()


@router.post("/{package_id}/verify", status_code=202, response_model=schemas.JobAccepted)
def verify(package_id: PackageId, request: Request, response: Response,
           state: Annotated[AppState, Depends(app_state)],
           caller: Annotated[Caller, Depends(require_role("operator"))]
           ) -> schemas.JobAccepted:
    """Read the package through and check every checksum: ``journal packages verify``."""
    _manifest(state, package_id)
    args = ["packages", "verify", package_id]
    ref = state.worker.launch(caller, "verify", args)
    record_call(state, caller, "verify", args + [f"job={ref}"])
    return accepted(request, response, ref)
