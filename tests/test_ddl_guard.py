"""DDL carried by a package runs only if it is one statement of the expected shape."""

import pytest

from journal.errors import ValidationError
from restorer import ddl

GOOD = [
    ("table", 'CREATE TABLE "public"."document" ("id" bigint NOT NULL)', "public", "document"),
    ("constraint", "ALTER TABLE ONLY public.document ADD CONSTRAINT document_pkey PRIMARY KEY (id)",
     "public", "document"),
    ("index", "CREATE INDEX document_created_idx ON public.document USING btree (created DESC)",
     "public", "document"),
    ("foreign key", "ALTER TABLE ONLY public.document ADD CONSTRAINT d_fkey FOREIGN KEY (v) "
     "REFERENCES public.document_version(id) DEFERRABLE INITIALLY DEFERRED", "public", "document"),
    ("type", "CREATE TYPE public.document_status AS ENUM ('draft', 'x; y')", "public", None),
    ("table", 'CREATE TABLE "odd schema"."Odd ""Table""" ("select" int)', "odd schema",
     'Odd "Table"'),
    ("type", "CREATE DOMAIN public.positive AS integer NOT NULL CONSTRAINT p CHECK "
     "((VALUE > 0))", "public", "positive"),
    ("type", 'CREATE TYPE "Typen".point3 AS (x double precision, label "Typen".short_text)',
     "Typen", "point3"),
    ("type", "CREATE TYPE public.floatrange AS RANGE (SUBTYPE = double precision, "
     "MULTIRANGE_TYPE_NAME = public.floatmultirange)", "public", "floatrange"),
]


@pytest.mark.parametrize(("kind", "statement", "schema", "name"), GOOD)
def test_catalog_ddl_of_the_expected_shape_passes(kind, statement, schema, name) -> None:
    ddl.check(kind, statement, schema, name)


@pytest.mark.parametrize(("kind", "statement"), [
    ("constraint", "COPY public.document TO PROGRAM 'rm -rf /'"),
    ("index", "DROP TABLE public.document"),
    ("table", 'CREATE TABLE "public"."other" ("id" int)'),
    ("constraint", "ALTER TABLE ONLY public.auth_user ADD CONSTRAINT x PRIMARY KEY (id)"),
    ("foreign key", "ALTER TABLE ONLY public.document ADD CONSTRAINT x CHECK (true)"),
])
def test_statements_of_another_shape_or_table_are_refused(kind, statement) -> None:
    with pytest.raises(ValidationError, match="package DDL refused"):
        ddl.check(kind, statement, "public", "document")


def test_serial_and_identity_sequence_statements_pass_piece_by_piece() -> None:
    serial = ('CREATE SEQUENCE "public"."document_id_seq" AS bigint START WITH 1; '
              'ALTER SEQUENCE "public"."document_id_seq" OWNED BY "public"."document"."id"; '
              'ALTER TABLE ONLY "public"."document" ALTER COLUMN "id" SET DEFAULT '
              "nextval('\"public\".\"document_id_seq\"'::regclass)")
    pieces = ddl.split_sequence_ddl(serial)
    assert len(pieces) == 3
    for piece in pieces:
        kind = next(k for k in ("create sequence", "own sequence", "column default")
                    if ddl._COMPILED[k].match(piece))
        ddl.check(kind, piece, "public", "document")
    with pytest.raises(ValidationError):
        ddl.check("own sequence", 'ALTER SEQUENCE "public"."s" OWNED BY "public"."auth_user"."id"',
                  "public", "document")


@pytest.mark.integration
def test_a_second_statement_hidden_after_a_valid_one_never_runs(target_db: str) -> None:
    import psycopg

    with psycopg.connect(target_db) as conn:
        conn.execute("CREATE TABLE public.document (id int)")
        conn.commit()
        hostile = ("ALTER TABLE ONLY public.document ADD CONSTRAINT p PRIMARY KEY (id); "
                   "DROP TABLE public.document")
        with pytest.raises(psycopg.errors.SyntaxError, match="multiple commands"):
            ddl.run(conn, "constraint", hostile, "public", "document")
        conn.rollback()
        assert conn.execute("SELECT to_regclass('public.document')").fetchone()[0] is not None


@pytest.mark.parametrize("statement", [
    "CREATE DOMAIN public.other AS integer",
    "CREATE FUNCTION public.positive() RETURNS int AS 'select 1' LANGUAGE sql",
    "CREATE TYPE public.positive (INPUT = public.f, OUTPUT = public.g)",
    "CREATE EXTENSION plpython3u",
])
def test_type_statements_of_another_shape_or_type_are_refused(statement) -> None:
    with pytest.raises(ValidationError, match="package DDL refused"):
        ddl.check("type", statement, "public", "positive")
