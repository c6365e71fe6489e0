"""A schema change of the stream as statements for the target: pure decisions over catalogs.

``table_statements`` turns one table's previous and new CATALOG entries into quoted
``ALTER TABLE`` statements, column by column through the source's ``attnum`` (so a
rename is a rename, not a drop and an add); ``key_statements`` then brings constraints,
foreign keys and indexes to the new entry by comparing them with the target's own (read
after the column changes, which PostgreSQL applies to them); ``enum_statements`` rebuilds
an enum type with new values. What cannot be said exactly raises ``RestoreError`` — the
restore runs in one transaction, so the target is then left as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg import sql

from journal.catalog import ColumnEntry, ForeignKeyEntry, TableEntry, TypeEntry
from journal.errors import RestoreError
from restorer import ddl


@dataclass(frozen=True)
class Statement:
    """One statement and what ``restorer.ddl`` checks it against."""

    kind: str
    text: str
    schema: str
    name: str | None


@dataclass(frozen=True)
class LiveKeys:
    """A target table's constraints, foreign keys and other indexes, as the CATALOG
    spells them (statement -> the object's name)."""

    constraints: dict[str, str]
    foreign_keys: dict[str, str]
    indexes: dict[str, str]


@dataclass(frozen=True)
class EnumColumn:
    """A target column whose type is an enum (or an array of it)."""

    schema: str
    table: str
    column: str
    is_array: bool
    has_default: bool


def _text(statement: sql.Composable) -> str:
    return statement.as_string(None)


def _alter(schema: str, name: str, action: sql.Composable) -> Statement:
    return Statement("alter table", _text(sql.SQL("ALTER TABLE ONLY {} {}").format(
        sql.Identifier(schema, name), action)), schema, name)


def create_statements(entry: TableEntry, existing: set[str]) -> list[Statement]:
    """A table that appeared in the stream: created as in an empty target, with the
    foreign keys whose referenced table exists."""
    schema, name = entry.schema, entry.name
    if entry.create_table is None:
        raise RestoreError(f"{entry.qualified} appeared in the stream without the DDL that "
                           "creates it: restore from a full snapshot taken after it")
    out = [Statement("table", entry.create_table, schema, name)]
    out += [Statement("constraint", s, schema, name) for s in entry.constraints]
    out += [Statement("index", s, schema, name) for s in entry.indexes]
    for seq in entry.sequences:
        out += [Statement("sequence", s, schema, name) for s in ddl.split_sequence_ddl(seq.ddl)]
    here = entry.qualified
    out += [Statement("foreign key", _fk_ddl(entry, fk), schema, name)
            for fk in entry.foreign_keys
            if fk.ref_table in existing or fk.ref_table == here]
    return out


def _fk_ddl(entry: TableEntry, fk: ForeignKeyEntry) -> str:
    if fk.ddl is None:
        raise RestoreError(f"{entry.qualified}: the catalog has no DDL for its foreign key "
                           f"{fk.name}: restore from a full snapshot taken after it")
    return fk.ddl


def drop_statement(qualified: str, entry: TableEntry | None) -> Statement:
    schema, _, name = qualified.partition(".")
    if entry is not None:
        schema, name = entry.schema, entry.name
    # CASCADE drops the foreign keys that referenced it, as the source's own drop must have
    return Statement("drop table", _text(sql.SQL("DROP TABLE {} CASCADE").format(
        sql.Identifier(schema, name))), schema, name)


def table_statements(old: TableEntry, new: TableEntry,
                     missing: dict[str, str | None]) -> list[Statement]:
    """Columns of one table from ``old`` to ``new`` (dropped first, then renamed,
    retyped, added, and defaults and NOT NULL set)."""
    schema, name = old.schema, old.name
    where = new.qualified
    if new.schema != schema:
        raise RestoreError(f"table {schema}.{name} moved to schema {new.schema}: not "
                           "replayed; restore to a point before it, or from a newer snapshot")
    out: list[Statement] = []
    if new.name != name:
        out.append(_alter(schema, name, sql.SQL("RENAME TO {}").format(
            sql.Identifier(new.name))))
        name = new.name
    old_cols = _by_attnum(old, where)
    new_cols = _by_attnum(new, where)
    renames = {n: (old_cols[n].name, c.name) for n, c in new_cols.items()
               if n in old_cols and old_cols[n].name != c.name}
    for n in sorted(set(old_cols) - set(new_cols)):
        out.append(_alter(schema, name, sql.SQL("DROP COLUMN {}").format(
            sql.Identifier(old_cols[n].name))))
    taken = {c.name for n, c in old_cols.items() if n in new_cols and n not in renames}
    pending = dict(renames)
    while pending:  # a rename onto a name still in use waits for that one to move
        ready = [n for n, (_, to) in pending.items()
                 if to not in taken and to not in {f for f, _ in pending.values()}]
        if not ready:  # names swapped in a cycle: one moves aside first
            n = min(pending)
            frm, to = pending[n]
            aside = f"{frm}_journal_{n}"
            out.append(_alter(schema, name, sql.SQL("RENAME COLUMN {} TO {}").format(
                sql.Identifier(frm), sql.Identifier(aside))))
            pending[n] = (aside, to)
            continue
        for n in ready:
            frm, to = pending.pop(n)
            out.append(_alter(schema, name, sql.SQL("RENAME COLUMN {} TO {}").format(
                sql.Identifier(frm), sql.Identifier(to))))
    for n in sorted(set(old_cols) & set(new_cols)):
        before, after = old_cols[n], new_cols[n]
        out += _column_changes(schema, name, before, after)
    for n in sorted(set(new_cols) - set(old_cols)):
        out += _add_column(schema, name, new_cols[n], missing, new)
    return out


def _by_attnum(entry: TableEntry, where: str) -> dict[int, ColumnEntry]:
    by_attnum = {c.attnum: c for c in entry.columns if c.attnum is not None}
    if len(by_attnum) != len(entry.columns):
        raise RestoreError(f"{where}: the packages describe its columns without attnums "
                           "(written by an older capture): a schema change is not replayed; "
                           "restore from a full snapshot taken after it")
    return by_attnum


def _column_changes(schema: str, name: str, before: ColumnEntry,
                    after: ColumnEntry) -> list[Statement]:
    out: list[Statement] = []
    column = sql.Identifier(after.name)
    if before.generated != after.generated:
        raise RestoreError(f"{schema}.{name}.{after.name}: a change of its generation "
                           "expression is not replayed")
    if before.pg_type != after.pg_type:
        out.append(_alter(schema, name, sql.SQL("ALTER COLUMN {} TYPE {}").format(
            column, sql.SQL(after.pg_type))))
    if (not after.generated and before.default != after.default
            and not before.uses_sequence and not after.uses_sequence):
        if after.default is None:
            out.append(_alter(schema, name, sql.SQL("ALTER COLUMN {} DROP DEFAULT").format(
                column)))
        else:
            out.append(_alter(schema, name, sql.SQL("ALTER COLUMN {} SET DEFAULT {}").format(
                column, sql.SQL(after.default))))
    if before.not_null != after.not_null:
        verb = "SET NOT NULL" if after.not_null else "DROP NOT NULL"
        out.append(_alter(schema, name, sql.SQL("ALTER COLUMN {} " + verb).format(column)))
    return out


def _add_column(schema: str, name: str, column: ColumnEntry,
                missing: dict[str, str | None], entry: TableEntry) -> list[Statement]:
    ident = sql.Identifier(column.name)
    pg_type = sql.SQL(column.pg_type)
    if column.generated:
        if column.default is None:
            raise RestoreError(f"{schema}.{name}.{column.name}: a generated column without "
                               "its expression in the catalog is not replayed")
        kind = "STORED" if column.generated == "s" else "VIRTUAL"
        return [_alter(schema, name, sql.SQL("ADD COLUMN {} {} GENERATED ALWAYS AS ({}) "
                                             + kind).format(ident, pg_type,
                                                            sql.SQL(column.default)))]
    if column.name in missing and missing[column.name] is not None:
        # existing rows hold the value the default had when the column was added
        add = sql.SQL("ADD COLUMN {} {} DEFAULT {}::{}").format(
            ident, pg_type, sql.Literal(missing[column.name]), pg_type)
    else:
        add = sql.SQL("ADD COLUMN {} {}").format(ident, pg_type)
    if column.not_null:
        add = sql.SQL("{} NOT NULL").format(add)
    out = [_alter(schema, name, add)]
    default = column.default
    if column.uses_sequence:
        for seq in entry.sequences:
            if seq.column == column.name:
                out += [Statement("sequence", s, schema, name)
                        for s in ddl.split_sequence_ddl(seq.ddl)]
    elif default is not None:
        out.append(_alter(schema, name, sql.SQL("ALTER COLUMN {} SET DEFAULT {}").format(
            ident, sql.SQL(default))))
    elif column.name in missing:
        out.append(_alter(schema, name, sql.SQL("ALTER COLUMN {} DROP DEFAULT").format(ident)))
    return out


def key_statements(entry: TableEntry, live: LiveKeys) -> list[Statement]:
    """Constraints, foreign keys and indexes of the target table to those of ``entry``:
    the ones the entry no longer has are dropped, the new ones created."""
    schema, name = entry.schema, entry.name
    wanted_constraints = list(entry.constraints)
    wanted_fks = [_fk_ddl(entry, fk) for fk in entry.foreign_keys]
    wanted_indexes = list(entry.indexes)
    out: list[Statement] = []
    for statement, constraint in sorted(live.foreign_keys.items()):
        if statement not in wanted_fks:
            out.append(_alter(schema, name, sql.SQL("DROP CONSTRAINT {}").format(
                sql.Identifier(constraint))))
    for statement, index in sorted(live.indexes.items()):
        if statement not in wanted_indexes:
            out.append(Statement("drop index", _text(sql.SQL("DROP INDEX {}").format(
                sql.Identifier(schema, index))), schema, None))
    # non-primary constraints first: a replaced primary key may be what they stood on
    for statement, constraint in sorted(live.constraints.items(),
                                        key=lambda kv: " PRIMARY KEY " in kv[0]):
        if statement not in wanted_constraints:
            out.append(_alter(schema, name, sql.SQL("DROP CONSTRAINT {}").format(
                sql.Identifier(constraint))))
    out += [Statement("constraint", s, schema, name) for s in wanted_constraints
            if s not in live.constraints]
    out += [Statement("index", s, schema, name) for s in wanted_indexes if s not in live.indexes]
    out += [Statement("foreign key", s, schema, name) for s in wanted_fks
            if s not in live.foreign_keys]
    return out


def enum_statements(old_labels: Sequence[str] | None, new: TypeEntry,
                    columns: list[EnumColumn], defaults: dict[tuple[str, str, str], str | None]
                    ) -> list[Statement]:
    """An enum type from the target's labels (None: it has no such type) to ``new``. A
    value added inside the restore's one transaction could not be used in it (PostgreSQL's
    rule for ALTER TYPE … ADD VALUE), so the type is rebuilt: renamed aside, created anew,
    columns converted through text."""
    schema, name = new.schema, new.name
    if old_labels is None:
        return [Statement("type", new.ddl, schema, name)]
    new_labels = tuple(new.labels or ())
    if tuple(old_labels) == new_labels:
        return []
    if not set(old_labels) <= set(new_labels):
        raise RestoreError(f"enum type {schema}.{name} lost values "
                           f"{sorted(set(old_labels) - set(new_labels))}: not replayed")
    aside = f"{name}_journal_old"
    out = [Statement("alter type", _text(sql.SQL("ALTER TYPE {} RENAME TO {}").format(
        sql.Identifier(schema, name), sql.Identifier(aside))), schema, None),
        Statement("type", new.ddl, schema, name)]
    enum = sql.Identifier(schema, name)
    for c in columns:
        col = sql.Identifier(c.column)
        if c.has_default:
            out.append(_alter(c.schema, c.table, sql.SQL("ALTER COLUMN {} DROP DEFAULT").format(
                col)))
        target = sql.SQL("{}[]").format(enum) if c.is_array else enum
        via = sql.SQL("text[]" if c.is_array else "text")
        out.append(_alter(c.schema, c.table, sql.SQL(
            "ALTER COLUMN {col} TYPE {t} USING {col}::{via}::{t}").format(
            col=col, t=target, via=via)))
        default = defaults.get((c.schema, c.table, c.column))
        if default is not None:
            out.append(_alter(c.schema, c.table, sql.SQL("ALTER COLUMN {} SET DEFAULT {}").format(
                col, sql.SQL(default))))
    out.append(Statement("drop type", _text(sql.SQL("DROP TYPE {}").format(
        sql.Identifier(schema, aside))), schema, None))
    return out


def partition_statements(old: TableEntry, new: TableEntry) -> list[Statement]:
    """Partitions ``new`` has and ``old`` had not (created empty at the source: capture
    refuses the other ways a partition joins or leaves), parents first, with what each
    has beyond its parent's."""
    known = {(p.schema, p.name) for p in old.partitions}
    out: list[Statement] = []
    for p in new.partitions:
        if (p.schema, p.name) in known:
            continue
        out.append(Statement("partition", p.ddl, p.schema, p.name))
        out += [Statement("constraint", c, p.schema, p.name) for c in p.constraints]
        out += [Statement("index", i, p.schema, p.name) for i in p.indexes]
        if p.replica_identity.ddl:
            out.append(Statement("replica identity", p.replica_identity.ddl, p.schema, p.name))
    return out
