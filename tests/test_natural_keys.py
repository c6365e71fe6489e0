"""Natural keys and remap decisions (pure)."""

from __future__ import annotations

import pytest

from journal.errors import ConfigError, RestoreError
from restorer.graph import TableGraph
from restorer.natural_keys import detect_natural_key, resolve_natural_keys
from restorer.remap import (
    Decision,
    KeyMap,
    RowRemapper,
    decide,
    generic_foreign_keys,
    refuse_unsafe,
    undeclared_generic_keys,
)


def col(name, pg_type="integer", oid=23, not_null=True, default=None, identity=""):
    return {"name": name, "pg_type": pg_type, "type_oid": oid, "not_null": not_null,
            "default": default, "identity": identity, "generated": ""}


def fk(name, cols, ref, ref_cols=("id",)):
    return {"name": name, "columns": list(cols), "ref_table": ref, "ref_columns": list(ref_cols),
            "deferrable": False}


SERIAL = "nextval('x_id_seq'::regclass)"
CATALOG = {"tables": {
    "public.django_content_type": {
        "schema": "public", "name": "django_content_type",
        "columns": [col("id", default=SERIAL), col("app_label", "character varying(100)", 1043),
                    col("model", "character varying(100)", 1043)],
        "primary_key": ["id"], "unique": [{"name": "u", "columns": ["app_label", "model"]}],
        "foreign_keys": []},
    "public.auth_permission": {
        "schema": "public", "name": "auth_permission",
        "columns": [col("id", identity="d"), col("content_type_id"),
                    col("codename", "character varying(100)", 1043)],
        "primary_key": ["id"],
        "unique": [{"name": "u", "columns": ["content_type_id", "codename"]}],
        "foreign_keys": [fk("p_ct", ["content_type_id"], "public.django_content_type")]},
    "public.auth_user": {
        "schema": "public", "name": "auth_user",
        "columns": [col("id", identity="a"), col("username", "character varying(150)", 1043),
                    col("email", "text", 25, not_null=False)],
        "primary_key": ["id"], "unique": [{"name": "u", "columns": ["username"]},
                                          {"name": "e", "columns": ["email"]}],
        "foreign_keys": []},
    "public.django_admin_log": {
        "schema": "public", "name": "django_admin_log",
        "columns": [col("id", identity="d"), col("content_type_id", not_null=False),
                    col("user_id"), col("object_id", "text", 25, not_null=False)],
        "primary_key": ["id"], "unique": [],
        "foreign_keys": [fk("l_ct", ["content_type_id"], "public.django_content_type"),
                         fk("l_user", ["user_id"], "public.auth_user")]},
    "public.django_session": {
        "schema": "public", "name": "django_session",
        "columns": [col("session_key", "character varying(40)", 1043)],
        "primary_key": ["session_key"], "unique": [], "foreign_keys": []},
    "public.audit": {
        "schema": "public", "name": "audit",
        "columns": [col("a"), col("b")], "primary_key": ["a", "b"], "unique": [],
        "foreign_keys": []},
    "public.note": {
        "schema": "public", "name": "note",
        "columns": [col("id"), col("text", "text", 25)], "primary_key": ["id"], "unique": [],
        "foreign_keys": []},
}}


def test_detected_key_is_a_not_null_unique_constraint_not_the_primary_key():
    keys = resolve_natural_keys(CATALOG)
    assert keys["public.django_content_type"].columns == ("app_label", "model")
    assert keys["public.auth_permission"].columns == ("content_type_id", "codename")
    # email is unique but nullable: not a natural key
    assert keys["public.auth_user"].columns == ("username",)


def test_table_without_unique_columns_has_no_natural_key():
    assert resolve_natural_keys(CATALOG)["public.django_admin_log"] is None


def test_text_primary_key_is_its_own_natural_key():
    assert resolve_natural_keys(CATALOG)["public.django_session"].columns == ("session_key",)


def test_configuration_overrides_detection():
    keys = resolve_natural_keys(CATALOG, {"auth_user": ("email",)})
    assert keys["public.auth_user"].columns == ("email",)
    assert keys["public.auth_user"].origin == "config"


def test_configuration_naming_a_missing_column_is_an_error():
    with pytest.raises(ConfigError, match="auth_user"):
        resolve_natural_keys(CATALOG, {"public.auth_user": ("login",)})


def test_text_and_uuid_columns_are_preferred():
    table = {"columns": [col("id"), col("n"), col("uuid", "uuid", 2950)], "primary_key": ["id"],
             "unique": [{"name": "a", "columns": ["n"]}, {"name": "b", "columns": ["uuid"]}]}
    assert detect_natural_key(table) == ("uuid",)


@pytest.mark.parametrize(("matched", "taken", "policy", "expected"), [
    (True, False, "update", Decision.UPDATE),
    (True, True, "skip", Decision.SKIP),
    (True, False, "fail", Decision.REFUSE),
    (False, False, "fail", Decision.INSERT),
    (False, True, "update", Decision.INSERT_FRESH),
])
def test_decisions(matched, taken, policy, expected):
    assert decide(matched=matched, id_taken=taken, on_conflict=policy) is expected


def test_keymap_stores_only_differences_and_maps_the_rest_to_itself():
    km = KeyMap()
    km.set("t", (1,), (1,))
    km.set("t", (2,), (20,))
    assert km.target_of("t", (1,)) == (1,)
    assert km.target_of("t", (2,)) == (20,)
    assert km.target_of("t", (3,)) == (3,)
    assert km.remapped("t") == 1


def test_foreign_keys_and_generic_foreign_keys_are_remapped():
    graph = TableGraph(CATALOG)
    km = KeyMap()
    km.set("public.django_content_type", (7,), (3,))
    km.set("public.auth_user", (1,), (42,))
    generic = generic_foreign_keys({"django_admin_log": {"content_type": "content_type_id",
                                                         "object_id": "object_id"}})
    remapper = RowRemapper(graph, km, generic)
    remapper.observe("public.django_content_type", {"id": 7, "app_label": "auth", "model": "user"})
    row = {"id": 1, "content_type_id": 7, "user_id": 1, "object_id": "1"}
    out = remapper.remap("public.django_admin_log", row)
    assert out == {"id": 1, "content_type_id": 3, "user_id": 42, "object_id": "42"}


def test_deferred_foreign_key_loads_as_null():
    remapper = RowRemapper(TableGraph(CATALOG), KeyMap())
    out = remapper.remap("public.auth_permission", {"id": 1, "content_type_id": 2,
                                                    "codename": "x"}, frozenset({"p_ct"}))
    assert out["content_type_id"] is None


def test_undeclared_generic_foreign_key_is_found_with_the_line_to_add():
    found = undeclared_generic_keys(TableGraph(CATALOG), {})
    assert [t for t, _ in found] == ["public.django_admin_log"]
    assert 'object_id = "object_id"' in found[0][1]


def test_unsafe_populated_restore_is_refused_naming_table_and_config_line():
    graph = TableGraph(CATALOG)
    keys = resolve_natural_keys(CATALOG)
    with pytest.raises(RestoreError) as err:
        refuse_unsafe(graph, keys, {}, CATALOG, {"public.django_admin_log", "public.note"})
    text = str(err.value)
    assert "public.django_admin_log" in text and "[generic_foreign_keys]" in text
    assert "public.note" in text and "[natural_keys]" in text


def test_surrogate_table_without_natural_key_is_safe():
    graph = TableGraph(CATALOG)
    refuse_unsafe(graph, resolve_natural_keys(CATALOG), {}, CATALOG, {"public.auth_user"})
