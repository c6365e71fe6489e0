"""Foreign-key graph: load order, cycle breaking, subset closure (pure)."""

from __future__ import annotations

import pytest

from journal.catalog import Catalog
from journal.errors import RestoreError
from restorer.graph import TableGraph


def table(name, fks=(), not_null=("id",)):
    cols = {"id"} | {c for fk in fks for c in fk[1]}
    return {
        "schema": "public", "name": name.split(".")[1],
        "columns": [{"name": c, "pg_type": "integer", "type_oid": 23, "not_null": c in not_null}
                    for c in sorted(cols)],
        "primary_key": ["id"],
        "foreign_keys": [{"name": f"{name}_{fk[0]}_fk", "columns": list(fk[1]),
                          "ref_table": fk[0], "ref_columns": ["id"], "deferrable": False}
                         for fk in fks],
    }


def catalog(*tables):
    return Catalog.parse({"tables": {t["schema"] + "." + t["name"]: t for t in tables}})


EDMS = catalog(
    table("public.auth_user"),
    table("public.document_type"),
    table("public.document", [("public.document_type", ["type_id"]),
                              ("public.auth_user", ["owner_id"]),
                              ("public.document_version", ["current_version_id"])],
          not_null=("id", "type_id", "owner_id")),
    table("public.document_version", [("public.document", ["document_id"])],
          not_null=("id", "document_id")),
    table("public.folder", [("public.folder", ["parent_id"])]),
)


def test_parents_load_before_children():
    order = TableGraph(EDMS).load_order().tables
    assert order.index("public.auth_user") < order.index("public.document")
    assert order.index("public.document_type") < order.index("public.document")


def test_cycle_is_broken_at_its_nullable_foreign_key():
    order = TableGraph(EDMS).load_order()
    assert ("public.document", "public.document_public.document_version_fk") in order.deferred
    assert order.tables.index("public.document") < order.tables.index("public.document_version")


def test_self_reference_is_deferred_to_a_second_pass():
    order = TableGraph(EDMS).load_order()
    assert ("public.folder", "public.folder_public.folder_fk") in order.deferred


def test_cycle_without_nullable_edge_is_refused():
    cat = catalog(table("public.a", [("public.b", ["b_id"])], not_null=("id", "b_id")),
                  table("public.b", [("public.a", ["a_id"])], not_null=("id", "a_id")))
    with pytest.raises(RestoreError, match="cycle with no nullable column"):
        TableGraph(cat).load_order()


def test_closure_adds_every_referenced_table():
    graph = TableGraph(EDMS)
    assert graph.closure(["public.document_version"]) == {
        "public.document_version", "public.document", "public.document_type",
        "public.auth_user"}
    assert graph.closure(["public.folder"]) == {"public.folder"}


def test_order_of_a_subset_ignores_tables_outside_it():
    order = TableGraph(EDMS).load_order(["public.document", "public.auth_user"])
    assert order.tables == ("public.auth_user", "public.document")
    assert not order.deferred
