# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Row records written in C: the bytes fastavro's ``schemaless_writer`` writes for a Row
datum (and the Python writers of ``journal/codec/encoder.py``, which stay the reference),
several times faster.

A row is written by a ``RowWriter`` built once per row schema from a program: one
``(name, kind, nullable, text, write, extra)`` per column (see encoder.py's
``_write_program``): ``write`` is encoder.py's Python writer of the column's typed branch,
called for the "delegate" kind (time, arrays...) and for a decimal of more than 18 digits;
``extra`` is a decimal's (precision, scale). Any value not plainly valid for its branch
raises ``Unhandled`` (the caller then hands the whole row to fastavro, which writes or
refuses it as before).

``journal_rows``: the row is a journal row (as ``reference.to_avro_row`` converts it for
fastavro): a ``str`` in a column with a text branch goes to that branch and a memoryview
is bytes. Otherwise the row is the datum fastavro would be given, where only the tuple
notation ``("string", text)`` selects the text branch.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.datetime cimport (
    date_day,
    date_month,
    date_year,
    datetime_day,
    datetime_hour,
    datetime_microsecond,
    datetime_minute,
    datetime_month,
    datetime_second,
    datetime_tzinfo,
    datetime_year,
    import_datetime,
    timedelta_days,
    timedelta_microseconds,
    timedelta_seconds,
)
from cpython.dict cimport PyDict_GetItem
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.ref cimport PyObject
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t, uint64_t
from libc.string cimport memcpy

from datetime import date, datetime, timedelta
from decimal import Decimal
from uuid import UUID

from journal.codec.wire import Unhandled


cdef extern from "Python.h":
    # struct's own packing (struct.pack("<f") raises OverflowError where this does)
    int PyFloat_Pack4(double x, char *p, int le) except -1
    int PyFloat_Pack8(double x, char *p, int le) except -1
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t *size) except NULL


import_datetime()

cdef object _DATE = date
cdef object _DATETIME = datetime
cdef object _TIMEDELTA = timedelta
cdef object _UUID = UUID
cdef object _DECIMAL = Decimal
cdef object _STRING = "string"

cdef enum:
    K_LONG, K_INT, K_STRING, K_BYTES, K_BOOLEAN, K_FLOAT, K_DOUBLE, K_DATE, K_TIMESTAMP
    K_LOCAL_TIMESTAMP, K_UUID, K_DECIMAL, K_DELEGATE

_KINDS = {"long": K_LONG, "int": K_INT, "string": K_STRING, "bytes": K_BYTES,
          "boolean": K_BOOLEAN, "float": K_FLOAT, "double": K_DOUBLE, "date": K_DATE,
          "timestamp-micros": K_TIMESTAMP, "local-timestamp-micros": K_LOCAL_TIMESTAMP,
          "uuid": K_UUID, "decimal": K_DECIMAL, "delegate": K_DELEGATE}
cdef int64_t MAX_C_DIGITS = 18  # an unscaled decimal of up to 18 digits fits an int64

cdef enum:
    EPOCH_ORDINAL = 719163  # date(1970, 1, 1).toordinal()
cdef int64_t MICROS_PER_DAY = 86400000000
cdef int64_t INT_MIN = -2147483648
cdef int64_t INT_MAX = 2147483647

cdef int[13] _DAYS_BEFORE_MONTH = [0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334]


cdef int _unhandled() except -1:
    raise Unhandled


cdef inline int64_t _ordinal(int y, int m, int d) noexcept:
    # CPython's ymd2ord: date.toordinal() without the call
    cdef int64_t before = y - 1
    cdef int64_t days = before * 365 + before // 4 - before // 100 + before // 400
    days += _DAYS_BEFORE_MONTH[m] + (m > 2 and (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)))
    return days + d


cdef class _Buffer:
    # one growing block reused for every row a writer writes
    cdef char* data
    cdef Py_ssize_t size
    cdef Py_ssize_t capacity

    def __cinit__(self):
        self.capacity = 256
        self.size = 0
        self.data = <char*>PyMem_Malloc(self.capacity)
        if self.data == NULL:
            raise MemoryError

    def __dealloc__(self):
        PyMem_Free(self.data)

    cdef inline int reserve(self, Py_ssize_t more) except -1:
        cdef Py_ssize_t need = self.size + more
        cdef Py_ssize_t capacity = self.capacity
        cdef char* grown
        if need <= capacity:
            return 0
        while capacity < need:
            capacity *= 2
        grown = <char*>PyMem_Realloc(self.data, capacity)
        if grown == NULL:
            raise MemoryError
        self.data = grown
        self.capacity = capacity
        return 0

    cdef inline int byte(self, unsigned char b) except -1:
        self.reserve(1)
        self.data[self.size] = <char>b
        self.size += 1
        return 0

    cdef inline int raw(self, const char* src, Py_ssize_t n) except -1:
        self.reserve(n)
        memcpy(self.data + self.size, src, n)
        self.size += n
        return 0

    cdef inline int long(self, int64_t value) except -1:
        # zigzag, then a little-endian base-128 varint (at most 10 bytes)
        cdef uint64_t n = (<uint64_t>value << 1) ^ <uint64_t>(value >> 63)
        self.reserve(10)
        while n > 0x7F:
            self.data[self.size] = <char>((n & 0x7F) | 0x80)
            self.size += 1
            n >>= 7
        self.data[self.size] = <char>n
        self.size += 1
        return 0

    cdef inline int string(self, object text) except -1:
        cdef Py_ssize_t n = 0
        cdef const char* utf8
        try:
            utf8 = PyUnicode_AsUTF8AndSize(text, &n)
        except UnicodeEncodeError:  # lone surrogates: fastavro's to refuse
            raise Unhandled from None
        self.long(n)
        return self.raw(utf8, n)


cdef inline int64_t _as_long(object value, int64_t low, int64_t high) except? -1:
    # an exact int (not a bool) within the Avro type's range, as encoder.py's _long/_int
    cdef int64_t n = 0
    if type(value) is not int:
        _unhandled()
    try:
        n = value
    except OverflowError:
        _unhandled()
    if n < low or n > high:
        _unhandled()
    return n


cdef class RowWriter:
    """The writer of one Row record schema: ``write(row)`` returns the record's bytes."""

    cdef tuple names
    cdef tuple writers
    cdef tuple extras
    cdef int* kinds
    cdef unsigned char* nullable
    cdef unsigned char* text
    cdef Py_ssize_t count
    cdef bint journal_rows
    cdef _Buffer out
    cdef bint busy

    def __cinit__(self, program, bint journal_rows=False):
        self.count = 0
        self.kinds = NULL
        self.nullable = NULL
        self.text = NULL

    def __init__(self, program, bint journal_rows=False):
        cdef Py_ssize_t i
        columns = tuple(program)
        n = len(columns)
        self.kinds = <int*>PyMem_Malloc(n * sizeof(int) + 1)
        self.nullable = <unsigned char*>PyMem_Malloc(n + 1)
        self.text = <unsigned char*>PyMem_Malloc(n + 1)
        if self.kinds == NULL or self.nullable == NULL or self.text == NULL:
            raise MemoryError
        self.count = n
        self.journal_rows = journal_rows
        self.out = _Buffer()
        names = []
        writers = []
        extras = []
        for i, (name, kind_name, nullable, text, write, extra) in enumerate(columns):
            if type(name) is not str:
                raise TypeError(f"column name {name!r} is not a str")
            kind = _KINDS[kind_name]
            if (kind == K_DELEGATE or kind == K_DECIMAL) and not callable(write):
                raise TypeError(f"column {name!r}: a delegate needs a writer")
            if kind == K_DECIMAL and not (type(extra) is tuple and len(extra) == 2
                                          and type(extra[0]) is int and type(extra[1]) is int
                                          and extra[0] >= 1 and extra[1] >= 0):
                raise TypeError(f"column {name!r}: a decimal needs (precision, scale)")
            extras.append(extra)
            self.kinds[i] = kind
            self.nullable[i] = bool(nullable)
            self.text[i] = bool(text)
            names.append(name)
            writers.append(write)
        self.names = tuple(names)
        self.writers = tuple(writers)
        self.extras = tuple(extras)

    def __dealloc__(self):
        PyMem_Free(self.kinds)
        PyMem_Free(self.nullable)
        PyMem_Free(self.text)

    def write(self, row):
        """The Avro binary of ``row`` (a dict keyed by column name), or Unhandled."""
        cdef _Buffer out
        if type(row) is not dict:
            _unhandled()
        # the Python a row may call (a delegate, utcoffset, str of a UUID) lets another
        # thread in, which may write with this writer too: it gets a buffer of its own
        if self.busy:
            return self._write(row, _Buffer())
        self.busy = True
        try:
            out = self.out
            out.size = 0
            return self._write(row, out)
        finally:
            self.busy = False

    cdef bytes _write(self, dict row, _Buffer out):
        self._append(row, out)
        return PyBytes_FromStringAndSize(out.data, out.size)

    cdef int _append(self, dict row, _Buffer out) except -1:
        cdef Py_ssize_t i
        cdef PyObject* found
        cdef int kind
        for i in range(self.count):
            found = PyDict_GetItem(row, self.names[i])
            # a missing field is null, as fastavro's record writer takes it
            value = None if found == NULL else <object>found
            if value is None:
                if not self.nullable[i]:
                    _unhandled()
                out.byte(0)
                continue
            kind = self.kinds[i]
            if type(value) is tuple:
                # fastavro's tuple notation, as avro_field_value names the "string" branch:
                # the text branch, or the typed one where that is a plain string
                if not (self.nullable[i] and (self.text[i] or kind == K_STRING)
                        and len(value) == 2 and type(value[0]) is str
                        and value[0] == _STRING and type(value[1]) is str):
                    _unhandled()
                out.byte(4 if self.text[i] else 2)
                out.string(value[1])
                continue
            if self.text[i] and type(value) is str:
                if not self.journal_rows:
                    _unhandled()  # fastavro would try the typed branch on the text first
                out.byte(4)  # PostgreSQL's text form of the value
                out.string(value)
                continue
            if self.nullable[i]:
                out.byte(2)
            self._value(kind, i, value, out)
        return 0

    cdef bint _decimal(self, Py_ssize_t i, object value, _Buffer out) except -1:
        # fastavro's prepare_bytes_decimal: the unscaled value's shortest two's complement
        # (a byte for the sign beyond its bit length), for up to 18 digits; False leaves
        # the value (more digits, NaN, Infinity, a scale or precision it refuses) to it
        cdef int64_t precision, scale, exponent, delta, j
        cdef uint64_t unscaled = 0
        cdef int64_t signed_value
        cdef int size, b
        cdef char packed[8]
        precision, scale = self.extras[i]
        sign, digits, exp = value.as_tuple()
        if type(exp) is not int or type(digits) is not tuple:
            return False
        try:
            exponent = exp
        except OverflowError:
            return False
        if len(<tuple>digits) > precision:
            return False
        delta = exponent + scale
        if delta < 0 or len(<tuple>digits) + delta > MAX_C_DIGITS:
            return False
        for digit in <tuple>digits:
            if type(digit) is not int:
                return False
            unscaled = unscaled * 10 + <int64_t>digit
        for j in range(delta):
            unscaled *= 10
        size = (_bit_length(unscaled) + 8) // 8
        signed_value = -<int64_t>unscaled if sign else <int64_t>unscaled
        for b in range(size):
            packed[size - 1 - b] = <char>((<uint64_t>signed_value >> (8 * b)) & 0xFF)
        out.long(size)
        out.raw(packed, size)
        return True

    cdef int _value(self, int kind, Py_ssize_t i, object value, _Buffer out) except -1:
        cdef char packed[8]
        cdef int64_t micros
        cdef object offset
        if kind == K_LONG:
            return out.long(_as_long(value, INT64_MIN, INT64_MAX))
        if kind == K_INT:
            return out.long(_as_long(value, INT_MIN, INT_MAX))
        if kind == K_STRING:
            if type(value) is not str:
                _unhandled()
            return out.string(value)
        if kind == K_BYTES:
            if type(value) is memoryview and self.journal_rows:
                value = bytes(value)
            elif type(value) is not bytes:
                _unhandled()
            out.long(len(value))
            return out.raw(<const char*>value, len(<bytes>value))
        if kind == K_BOOLEAN:
            if value is True:
                return out.byte(1)
            if value is False:
                return out.byte(0)
            return _unhandled()
        if kind == K_FLOAT or kind == K_DOUBLE:
            if type(value) is not float:
                _unhandled()
            try:
                if kind == K_FLOAT:
                    PyFloat_Pack4(<double>value, packed, 1)
                    return out.raw(packed, 4)
                PyFloat_Pack8(<double>value, packed, 1)
                return out.raw(packed, 8)
            except OverflowError:  # beyond a float's range: fastavro's to judge
                return _unhandled()
        if kind == K_DATE:
            if type(value) is not _DATE:
                _unhandled()
            return out.long(_ordinal(date_year(value), date_month(value), date_day(value))
                            - EPOCH_ORDINAL)
        if kind == K_TIMESTAMP or kind == K_LOCAL_TIMESTAMP:
            if type(value) is not _DATETIME:
                _unhandled()
            micros = ((_ordinal(datetime_year(value), datetime_month(value),
                                datetime_day(value)) - EPOCH_ORDINAL) * MICROS_PER_DAY
                      + (datetime_hour(value) * 3600 + datetime_minute(value) * 60
                         + datetime_second(value)) * <int64_t>1000000
                      + datetime_microsecond(value))
            if kind == K_TIMESTAMP:
                # an aware datetime minus the UTC epoch, as fastavro's writer; a naive one
                # it reads as local time (mktime): left to it
                if datetime_tzinfo(value) is None:
                    _unhandled()
                offset = value.utcoffset()
                if type(offset) is not _TIMEDELTA:
                    _unhandled()
                micros -= ((timedelta_days(offset) * <int64_t>86400
                            + timedelta_seconds(offset)) * <int64_t>1000000
                           + timedelta_microseconds(offset))
            return out.long(micros)
        if kind == K_UUID:
            if type(value) is _UUID:
                value = str(value)
            elif type(value) is not str:
                _unhandled()
            return out.string(value)
        if kind == K_DECIMAL and type(value) is _DECIMAL:
            if self._decimal(i, value, out):
                return 0
        # delegate (and a decimal C leaves): encoder.py's writer of the typed branch;
        # anything it raises is the reference path's to report
        try:
            data = self.writers[i](value)
        except Exception as exc:
            raise Unhandled from exc
        if type(data) is not bytes:
            _unhandled()
        return out.raw(<const char*>data, len(<bytes>data))


cdef inline int _bit_length(uint64_t n) noexcept:
    cdef int bits = 0
    while n:
        n >>= 1
        bits += 1
    return bits


cdef inline int _text(_Buffer out, object value) except -1:
    # encoder.py's _string: a str, or the reference path's to judge
    if type(value) is not str:
        _unhandled()
    return out.string(value)


cdef class ChangeWriter:
    """A table version's whole change event in C: ``write(...)`` returns ``(key, value)``,
    the bytes encoder.py's ``ChangeEncoder.encode`` writes (its Python envelope stays the
    reference), or raises Unhandled for a record it leaves to fastavro."""

    cdef RowWriter rows
    cdef bytes header
    cdef bytes schema_name
    cdef tuple key_indexes
    cdef bytes key_prefixed
    cdef _Buffer out
    cdef _Buffer key
    cdef bint busy

    def __init__(self, RowWriter rows not None, bytes header not None,
                 str schema not None, str name not None, tuple key_indexes not None,
                 tuple key_prefixed not None):
        cdef _Buffer source = _Buffer()
        self.rows = rows
        self.header = header
        source.string(schema)
        source.string(name)
        self.schema_name = PyBytes_FromStringAndSize(source.data, source.size)
        for i in key_indexes:
            if not 0 <= i < rows.count:
                raise ValueError(f"key column {i} outside the row's {rows.count}")
        if len(key_prefixed) != len(key_indexes):
            raise ValueError("one key prefix flag per key column")
        self.key_indexes = key_indexes
        self.key_prefixed = bytes(bool(p) for p in key_prefixed)
        self.out = _Buffer()
        self.key = _Buffer()

    def write(self, before, after, op, database, commit_lsn, seq, xid, commit_ts, snapshot,
              ts_ms, toast):
        if self.busy:  # another thread came in through the Python a row may call
            return self._write(before, after, op, database, commit_lsn, seq, xid, commit_ts,
                               snapshot, ts_ms, toast, _Buffer(), _Buffer())
        self.busy = True
        try:
            self.out.size = 0
            self.key.size = 0
            return self._write(before, after, op, database, commit_lsn, seq, xid, commit_ts,
                               snapshot, ts_ms, toast, self.out, self.key)
        finally:
            self.busy = False

    cdef tuple _write(self, before, after, op, database, commit_lsn, seq, xid, commit_ts,
                      snapshot, ts_ms, toast, _Buffer out, _Buffer key):
        cdef RowWriter rows = self.rows
        out.raw(<const char*>self.header, len(self.header))
        for image in (before, after):
            if image is None:
                out.byte(0)
                continue
            if type(image) is not dict:
                _unhandled()
            out.byte(2)
            rows._append(<dict>image, out)
        _text(out, op)
        _text(out, database)
        out.raw(<const char*>self.schema_name, len(self.schema_name))
        out.long(_as_long(commit_lsn, INT64_MIN, INT64_MAX))
        out.long(_as_long(seq, INT64_MIN, INT64_MAX))
        out.long(_as_long(xid, INT64_MIN, INT64_MAX))
        out.long(_as_long(commit_ts, INT64_MIN, INT64_MAX))  # a datetime: Python's path
        if snapshot is True:
            out.byte(1)
        elif snapshot is False:
            out.byte(0)
        else:
            _unhandled()
        out.long(_as_long(ts_ms, INT64_MIN, INT64_MAX))
        if toast:
            if type(toast) is not tuple:
                _unhandled()
            out.long(len(<tuple>toast))
            for name in <tuple>toast:
                _text(out, name)
        out.byte(0)  # the end of the (empty) array
        value = PyBytes_FromStringAndSize(out.data, out.size)
        row = after if after is not None else before
        if row is None or not self.key_indexes:
            return None, value
        self._key(<dict>row, key)
        return PyBytes_FromStringAndSize(key.data, key.size), value

    cdef int _key(self, dict row, _Buffer key) except -1:
        # the key record: each key column's typed branch, after branch 0 of its
        # [typed, "string"] union where the key field is one
        cdef RowWriter rows = self.rows
        cdef Py_ssize_t k = 0, i
        cdef PyObject* found
        for index in self.key_indexes:
            i = index
            found = PyDict_GetItem(row, rows.names[i])
            if found == NULL or <object>found is None or type(<object>found) is tuple:
                _unhandled()  # a missing or null key column: fastavro reports it
            if self.key_prefixed[k]:
                key.byte(0)
            rows._value(rows.kinds[i], i, <object>found, key)
            k += 1
        return 0
