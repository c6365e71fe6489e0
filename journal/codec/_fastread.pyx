# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Row records and change event envelopes read in C: the same bytes, values, types and
positions as the readers ``journal/codec/decoder.py`` generates in Python (which stay the
reference), several times faster.

A row is read by a ``RowReader`` built once per row schema from a program: one
``(name, kind, nullable, text, read, extra)`` per column (see decoder.py's
``_row_program``): ``read`` is decoder.py's Python reader of the column's type, called
for the "delegate" kind (time, arrays of other items...); ``extra`` is what a "decimal"
(fastavro's conversion and the schema) or an "array" (item kind, nullable items) needs.
Any bytes not plainly valid raise ``Unhandled`` (the caller then hands them to fastavro);
every read is bounds-checked against the buffer's length.

``RowReader.check`` walks rows judging their bytes as ``read`` does without building them,
and checks their primary keys' order: what verifying a package's table members needs.
``RowReader.copy`` writes rows as COPY text straight from their bytes, the text
``_copytext``'s ``RowFormatter`` writes of the rows ``read`` makes (with the same code,
``_copyout.pxi``), without building them: what restoring a package's table members needs.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.datetime cimport date_new, datetime_new, import_datetime
from cpython.dict cimport PyDict_SetItem
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.list cimport PyList_Append
from cpython.long cimport PyLong_FromString
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcmp, memcpy, strlen

from datetime import timezone
from uuid import UUID, SafeUUID

from journal.codec.wire import KeyOrder, Unhandled
from journal.events import ChangeEvent
from journal.positions import Position


cdef extern from "Python.h":
    # struct's own unpacking, so NaN payloads come out as struct.unpack gives them
    double PyFloat_Unpack4(const char *p, int le) except? -1.0
    double PyFloat_Unpack8(const char *p, int le) except? -1.0
    # object.__setattr__: UUID forbids its own, decoder.py's _read_uuid sets slots so too
    int PyObject_GenericSetAttr(object o, object name, object value) except -1


import_datetime()

cdef object _UTC = timezone.utc  # the tzinfo of fastavro's (and decoder.py's) epoch
cdef object _UUID = UUID
cdef object _UNKNOWN = SafeUUID.unknown
cdef object _new_object = object.__new__

# column kinds; the flags say which union branches the column has
cdef enum:
    K_LONG, K_STRING, K_BYTES, K_BOOLEAN, K_FLOAT, K_DOUBLE, K_DATE, K_TIMESTAMP
    K_LOCAL_TIMESTAMP, K_UUID, K_DECIMAL, K_ARRAY, K_DELEGATE

_KINDS = {"long": K_LONG, "int": K_LONG, "string": K_STRING, "bytes": K_BYTES,
          "boolean": K_BOOLEAN, "float": K_FLOAT, "double": K_DOUBLE, "date": K_DATE,
          "timestamp-micros": K_TIMESTAMP, "local-timestamp-micros": K_LOCAL_TIMESTAMP,
          "uuid": K_UUID, "decimal": K_DECIMAL, "array": K_ARRAY, "delegate": K_DELEGATE}

# a key column's value as packages' sort_key orders them: typed values, then text forms
# (a text-branch column's), then NULL
cdef enum:
    CLASS_TYPED = 1
    CLASS_TEXT = 2
    CLASS_NULL = 3

cdef enum:
    MAX_ORDINAL = 3652059  # date(9999, 12, 31).toordinal()
    EPOCH_ORDINAL = 719163  # date(1970, 1, 1).toordinal()
cdef int64_t MICROS_PER_DAY = 86400000000

cdef int[13] _DAYS_BEFORE_MONTH = [0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334]
cdef int[13] _DAYS_IN_MONTH = [0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


cdef void* _alloc(size_t size) except NULL:
    cdef void* block = PyMem_Malloc(size if size else 1)
    if block == NULL:
        raise MemoryError
    return block


cdef void _free(void* block) noexcept:
    PyMem_Free(block)


cdef int _unhandled() except -1:
    raise Unhandled


include "_copyout.pxi"


cdef inline int _read_long(const unsigned char* buf, Py_ssize_t length, Py_ssize_t* pos,
                           int64_t* out) except -1:
    # at most 10 bytes and 64 bits, as decoder.py's _read_long: longer is fastavro's to judge
    cdef Py_ssize_t p = pos[0]
    cdef uint64_t n = 0
    cdef unsigned int shift = 0
    cdef unsigned char b
    while True:
        if p >= length:
            return _unhandled()
        b = buf[p]
        p += 1
        if shift == 63:
            if b > 1:  # a continuation bit or bits beyond the 64th
                return _unhandled()
            n |= (<uint64_t>b) << 63
            break
        n |= (<uint64_t>(b & 0x7F)) << shift
        if b < 0x80:
            break
        shift += 7
    out[0] = <int64_t>((n >> 1) ^ (<uint64_t>0 - (n & 1)))
    pos[0] = p
    return 0


cdef inline int _read_size(const unsigned char* buf, Py_ssize_t length, Py_ssize_t* pos,
                           Py_ssize_t* size) except -1:
    # a length prefix: non-negative and within the bytes left, checked before any allocation
    cdef int64_t n = 0
    _read_long(buf, length, pos, &n)
    if n < 0 or n > length - pos[0]:
        return _unhandled()
    size[0] = <Py_ssize_t>n
    return 0


cdef inline object _read_string(const unsigned char* buf, Py_ssize_t length, Py_ssize_t* pos):
    cdef Py_ssize_t size = 0
    _read_size(buf, length, pos, &size)
    try:
        text = PyUnicode_DecodeUTF8(<const char*>buf + pos[0], size, NULL)
    except UnicodeDecodeError:
        raise Unhandled from None
    pos[0] += size
    return text


cdef inline object _read_bytes(const unsigned char* buf, Py_ssize_t length, Py_ssize_t* pos):
    cdef Py_ssize_t size = 0
    _read_size(buf, length, pos, &size)
    data = PyBytes_FromStringAndSize(<const char*>buf + pos[0], size)
    pos[0] += size
    return data


cdef inline bint _hex(unsigned char c) noexcept:
    return (c - 48u) < 10u or ((c | 0x20) - 97u) < 6u


cdef object _read_uuid(const unsigned char* buf, Py_ssize_t length, Py_ssize_t* pos):
    # decoder.py's _read_uuid: 32 hex digits (hyphens anywhere) make the UUID directly;
    # any other text goes through UUID(text), which raises where the Python reader does
    cdef Py_ssize_t size = 0, j, count = 0
    cdef char digits[33]
    cdef unsigned char c
    cdef bint plain = True
    _read_size(buf, length, pos, &size)
    cdef const unsigned char* text = buf + pos[0]
    for j in range(size):
        c = text[j]
        if c == 45:  # "-"
            continue
        if count == 32 or not _hex(c):
            plain = False
            break
        digits[count] = <char>c
        count += 1
    if plain and count == 32:
        digits[32] = 0
        value = _new_object(_UUID)
        PyObject_GenericSetAttr(value, "int", PyLong_FromString(digits, NULL, 16))
        PyObject_GenericSetAttr(value, "is_safe", _UNKNOWN)
        pos[0] += size
        return value
    try:
        string = PyUnicode_DecodeUTF8(<const char*>text, size, NULL)
    except UnicodeDecodeError:
        raise Unhandled from None
    pos[0] += size
    try:
        return _UUID(string)
    except ValueError:
        raise Unhandled from None


cdef inline void _ymd(int64_t ordinal, int* year, int* month, int* day) noexcept:
    # CPython's _ord2ymd, for 1 <= ordinal <= MAX_ORDINAL
    cdef int64_t n = ordinal - 1
    cdef int64_t n400 = n // 146097
    n = n % 146097
    cdef int64_t n100 = n // 36524
    n = n % 36524
    cdef int64_t n4 = n // 1461
    n = n % 1461
    cdef int64_t n1 = n // 365
    n = n % 365
    cdef int y = <int>(n400 * 400 + 1 + n100 * 100 + n4 * 4 + n1)
    if n1 == 4 or n100 == 4:
        year[0] = y - 1
        month[0] = 12
        day[0] = 31
        return
    cdef int leap = n1 == 3 and (n4 != 24 or n100 == 3)
    cdef int m = <int>((n + 50) >> 5)
    cdef int preceding = _DAYS_BEFORE_MONTH[m] + (m > 2 and leap)
    if preceding > n:
        m -= 1
        preceding -= _DAYS_IN_MONTH[m] + (m == 2 and leap)
    year[0] = y
    month[0] = m
    day[0] = <int>(n - preceding + 1)


cdef inline int _check_days(int64_t days) except -1:
    # date.fromordinal's range; beyond it the Python reader raises too (for a timestamp
    # the Python sum overflows, OverflowError, for the same days)
    if days < 1 - EPOCH_ORDINAL or days > MAX_ORDINAL - EPOCH_ORDINAL:
        return _unhandled()
    return 0


cdef inline int _split_micros(int64_t micros, int64_t* days, int64_t* rest) except -1:
    # the epoch + timedelta(microseconds=micros): floor division, as timedelta normalises
    days[0] = micros // MICROS_PER_DAY
    rest[0] = micros % MICROS_PER_DAY
    if rest[0] < 0:
        rest[0] += MICROS_PER_DAY
        days[0] -= 1
    return _check_days(days[0])


cdef inline object _date(int64_t days):
    cdef int y, m, d
    _check_days(days)
    _ymd(days + EPOCH_ORDINAL, &y, &m, &d)
    return date_new(y, m, d)


cdef inline object _timestamp(int64_t micros, object tz):
    cdef int64_t days = 0, rest = 0
    cdef int y, m, d
    _split_micros(micros, &days, &rest)
    _ymd(days + EPOCH_ORDINAL, &y, &m, &d)
    cdef int64_t seconds = rest // 1000000
    return datetime_new(y, m, d, <int>(seconds // 3600), <int>(seconds // 60 % 60),
                        <int>(seconds % 60), <int>(rest % 1000000), tz)


cdef inline int _check_utf8(const unsigned char* text, Py_ssize_t size) except -1:
    # ASCII is valid UTF-8 as it is; any other byte: the decoder ``read`` uses judges
    cdef Py_ssize_t j = 0
    cdef uint64_t word
    while j + 8 <= size:
        memcpy(&word, text + j, 8)
        if word & 0x8080808080808080ULL:
            break
        j += 8
    while j < size:
        if text[j] >= 0x80:
            try:
                PyUnicode_DecodeUTF8(<const char*>text, size, NULL)
            except UnicodeDecodeError:
                raise Unhandled from None
            return 0
        j += 1
    return 0


cdef Py_ssize_t _skip_uuid(const unsigned char* buf, Py_ssize_t length, Py_ssize_t p
                           ) except -1:
    # the 32 hex digits _read_uuid reads directly; any other text it judges itself
    cdef Py_ssize_t start = p, size = 0, j, count = 0
    cdef unsigned char c
    _read_size(buf, length, &p, &size)
    for j in range(size):
        c = buf[p + j]
        if c == 45:  # "-"
            continue
        if count == 32 or not _hex(c):
            count = -1
            break
        count += 1
    if count == 32:
        return p + size
    _read_uuid(buf, length, &start)
    return start


cdef bint _uuid_digits(const unsigned char* buf, Py_ssize_t length, Py_ssize_t p,
                       unsigned char* digits) except -1:
    # a plain uuid's 32 hex digits in lower case (their text order is the UUIDs' order),
    # or False for other text (braces, urn:uuid:)
    cdef Py_ssize_t size = 0, j, count = 0
    cdef unsigned char c
    _read_size(buf, length, &p, &size)
    for j in range(size):
        c = buf[p + j]
        if c == 45:
            continue
        if count == 32 or not _hex(c):
            return False
        digits[count] = c | 0x20
        count += 1
    return count == 32


cdef int _compare_value(int kind, const unsigned char* buf, Py_ssize_t length,
                        Py_ssize_t a, Py_ssize_t b) except? -2:
    # two values of one key column (already walked), ordered as Python orders the values
    # ``read`` makes of them: -1, 0 or 1
    cdef int64_t x = 0, y = 0
    cdef Py_ssize_t xs = 0, ys = 0
    cdef int r
    cdef unsigned char dx[32]
    cdef unsigned char dy[32]
    if kind == K_STRING or kind == K_BYTES:
        # bytes compare bytewise; str by code point, which is UTF-8's byte order
        _read_size(buf, length, &a, &xs)
        _read_size(buf, length, &b, &ys)
        r = memcmp(buf + a, buf + b, xs if xs < ys else ys)
        if r:
            return -1 if r < 0 else 1
        return (xs > ys) - (xs < ys)
    if kind == K_BOOLEAN:
        return (buf[a] != 0) - (buf[b] != 0)
    if kind == K_UUID:
        if _uuid_digits(buf, length, a, dx) and _uuid_digits(buf, length, b, dy):
            r = memcmp(dx, dy, 32)
            return (r > 0) - (r < 0)
        # other text: the UUIDs _read_uuid makes of it, ordered by their numbers as UUID is
        x_int = _read_uuid(buf, length, &a).int
        y_int = _read_uuid(buf, length, &b).int
        return (x_int > y_int) - (x_int < y_int)
    # long, date, timestamps: the days or microseconds order the values
    _read_long(buf, length, &a, &x)
    _read_long(buf, length, &b, &y)
    return (x > y) - (x < y)


cdef inline bint _ordered_in_c(int kind) noexcept:
    # kinds whose values _compare_value orders; floats (NaN), decimals, arrays and
    # delegated types are ordered by building their values
    return (kind == K_LONG or kind == K_STRING or kind == K_BYTES or kind == K_BOOLEAN
            or kind == K_DATE or kind == K_TIMESTAMP or kind == K_LOCAL_TIMESTAMP
            or kind == K_UUID)


cdef class RowReader:
    """The reader of one Row record schema: ``read(buf, pos)`` returns ``(row, pos)``."""

    cdef tuple names
    cdef tuple delegates
    cdef tuple extras
    cdef int* kinds
    cdef unsigned char* nullable
    cdef unsigned char* text
    cdef int* item_kinds
    cdef unsigned char* item_nullable
    cdef Py_ssize_t count

    def __cinit__(self, program):
        self.count = 0
        self.kinds = NULL
        self.nullable = NULL
        self.text = NULL
        self.item_kinds = NULL
        self.item_nullable = NULL

    def __init__(self, program):
        cdef Py_ssize_t i
        columns = tuple(program)
        n = len(columns)
        self.kinds = <int*>_alloc(n * sizeof(int))
        self.nullable = <unsigned char*>_alloc(n)
        self.text = <unsigned char*>_alloc(n)
        self.item_kinds = <int*>_alloc(n * sizeof(int))
        self.item_nullable = <unsigned char*>_alloc(n)
        self.count = n
        names = []
        delegates = []
        extras = []
        for i, (name, kind_name, nullable, text, read, extra) in enumerate(columns):
            names.append(name)
            kind = _KINDS[kind_name]
            self.kinds[i] = kind
            self.nullable[i] = bool(nullable)
            self.text[i] = bool(text)
            self.item_kinds[i] = K_DELEGATE
            self.item_nullable[i] = False
            if kind == K_DELEGATE and not callable(read):
                raise TypeError(f"column {name!r}: a delegate needs a reader")
            if kind == K_DECIMAL and not callable(extra[0]):
                raise TypeError(f"column {name!r}: a decimal needs its conversion")
            if kind == K_ARRAY:
                self.item_kinds[i] = _KINDS[extra[0]]
                self.item_nullable[i] = bool(extra[1])
                if self.item_kinds[i] >= K_ARRAY:  # nested or delegated items: Python's
                    raise ValueError(f"column {name!r}: items of kind {extra[0]!r}")
            delegates.append(read)
            extras.append(extra)
        self.names = tuple(names)
        self.delegates = tuple(delegates)
        self.extras = tuple(extras)

    def __dealloc__(self):
        _free(self.kinds)
        _free(self.nullable)
        _free(self.text)
        _free(self.item_kinds)
        _free(self.item_nullable)

    def read(self, bytes buf not None, Py_ssize_t pos):
        """The row (a dict keyed by column name) at ``pos`` and the position after it."""
        cdef Py_ssize_t p = pos
        row = self._read(buf, &p)
        return row, p

    def check(self, bytes buf not None, Py_ssize_t pos, Py_ssize_t count, key_columns,
              previous, order):
        """Walk ``count`` rows from ``pos``, judging their bytes as ``read`` does without
        building them: ``(position after them, order(last row's key values))``, the key
        values those of the columns at indices ``key_columns`` (no key: None). Each row's
        ``order(key)`` must be greater than the row's before (the first row's than
        ``previous``, unless it is None), else KeyOrder; bytes ``read`` refuses, and any a
        walk leaves to the row by row path, raise Unhandled."""
        cdef const unsigned char* data = <const unsigned char*>PyBytes_AS_STRING(buf)
        cdef Py_ssize_t length = PyBytes_GET_SIZE(buf)
        cdef Py_ssize_t p = pos, r, j, nkeys = len(key_columns)
        cdef Py_ssize_t* slot = NULL
        cdef Py_ssize_t* columns = NULL
        cdef Py_ssize_t* at = NULL
        cdef unsigned char* classes = NULL
        cdef Py_ssize_t *here
        cdef Py_ssize_t *before
        cdef unsigned char *here_class
        cdef unsigned char *before_class
        cdef bint in_c = True
        if p < 0 or p > length:
            _unhandled()
        try:
            slot = <Py_ssize_t*>_alloc(self.count * sizeof(Py_ssize_t))
            columns = <Py_ssize_t*>_alloc(nkeys * sizeof(Py_ssize_t))
            # this row's key and the row's before: where each value starts, and its class
            at = <Py_ssize_t*>_alloc(2 * nkeys * sizeof(Py_ssize_t))
            classes = <unsigned char*>_alloc(2 * nkeys)
            for j in range(self.count):
                slot[j] = -1
            for j, column in enumerate(key_columns):
                if not 0 <= column < self.count or slot[column] >= 0:
                    raise ValueError(f"key columns {key_columns!r}")
                columns[j] = column
                slot[column] = j
                # a text form beside typed str values would be ordered apart from them
                in_c = in_c and _ordered_in_c(self.kinds[column]) and not (
                    self.kinds[column] == K_STRING and self.text[column])
            for r in range(count):
                here = at + (r & 1) * nkeys
                before = at + (1 - (r & 1)) * nkeys
                here_class = classes + (r & 1) * nkeys
                before_class = classes + (1 - (r & 1)) * nkeys
                self._walk(buf, data, length, &p, slot, here, here_class)
                if not nkeys:
                    continue
                if in_c and r > 0:
                    # compared in C with the row before: key values are built only for
                    # the first row (against ``previous``) and the last (returned)
                    if self._compare(data, length, columns, nkeys, before, before_class,
                                     here, here_class) >= 0:
                        raise KeyOrder(r)
                    if r == count - 1:
                        previous = order(self._key_values(buf, data, length, columns,
                                                          nkeys, here, here_class))
                    continue
                key = order(self._key_values(buf, data, length, columns, nkeys, here,
                                             here_class))
                if previous is not None and not previous < key:
                    raise KeyOrder(r)
                previous = key
        finally:
            _free(slot)
            _free(columns)
            _free(at)
            _free(classes)
        return p, previous if nkeys else None

    def copy(self, bytes buf not None, Py_ssize_t pos, Py_ssize_t count, fields,
             Py_ssize_t chunk):
        """COPY text of up to ``count`` rows from ``pos``, of the columns at indices
        ``fields`` in that order: ``(chunks, rows, position)``, ``chunks`` a list of
        ``(text, rows)`` each ending with a row and handed over from ``chunk`` bytes,
        ``rows`` how many rows they hold, ``position`` where the row after them starts.
        The text is RowFormatter's of the rows ``read`` makes; it stops before a row it
        does not write so (bytes ``read`` refuses, a decimal, an array or a delegated
        value, a string with NUL, a uuid in another spelling), leaving it to the caller."""
        cdef const unsigned char* data = <const unsigned char*>PyBytes_AS_STRING(buf)
        cdef Py_ssize_t length = PyBytes_GET_SIZE(buf)
        cdef Py_ssize_t p = pos, r, j, start, nfields = len(fields), done = 0, pending = 0
        cdef Py_ssize_t* slot = NULL
        cdef Py_ssize_t* at = NULL
        cdef Py_ssize_t* columns = NULL
        cdef unsigned char* classes = NULL
        cdef CopyOut out
        cdef list chunks = []
        out.data = NULL
        if p < 0 or p > length:
            _unhandled()
        try:
            slot = <Py_ssize_t*>_alloc(self.count * sizeof(Py_ssize_t))
            at = <Py_ssize_t*>_alloc(self.count * sizeof(Py_ssize_t))
            classes = <unsigned char*>_alloc(self.count)
            columns = <Py_ssize_t*>_alloc(nfields * sizeof(Py_ssize_t))
            for j in range(self.count):
                slot[j] = j  # every column's value noted by the walk
            for j, field in enumerate(fields):
                if not 0 <= field < self.count:
                    raise ValueError(f"fields {fields!r}")
                columns[j] = field
            _out_init(&out, chunk + (chunk >> 3))
            for r in range(count):
                start = p
                try:
                    # the row judged whole first, as ``read`` judges it, then written
                    self._walk(buf, data, length, &p, slot, at, classes)
                    self._copy_row(data, length, columns, nfields, at, classes, &out)
                except Unhandled:
                    p = start
                    break
                done += 1
                pending += 1
                if out.size >= chunk:
                    chunks.append((PyBytes_FromStringAndSize(out.data, out.size), pending))
                    out.size = 0
                    pending = 0
            if pending:
                chunks.append((PyBytes_FromStringAndSize(out.data, out.size), pending))
        finally:
            _free(slot)
            _free(at)
            _free(classes)
            _free(columns)
            _out_free(&out)
        return chunks, done, p

    cdef int _copy_row(self, const unsigned char* data, Py_ssize_t length,
                       Py_ssize_t* columns, Py_ssize_t nfields, Py_ssize_t* at,
                       unsigned char* classes, CopyOut* out) except -1:
        # a walked row's COPY line; Unhandled (nothing written) for a value
        # RowFormatter leaves to psycopg or one not read here
        cdef Py_ssize_t j, i, p, size = 0
        cdef int64_t n = 0, days = 0, rest = 0, seconds
        cdef int y, m, d, kind
        cdef unsigned char digits[32]
        cdef Py_ssize_t begin = out.size
        try:
            for j in range(nfields):
                if j:
                    _out_byte(out, 9)  # tab
                i = columns[j]
                p = at[i]
                if classes[i] == CLASS_NULL:
                    _out_raw(out, b"\\N", 2)
                    continue
                kind = K_STRING if classes[i] == CLASS_TEXT else self.kinds[i]
                if kind == K_LONG:
                    _read_long(data, length, &p, &n)
                    _out_long(out, n)
                elif kind == K_STRING:
                    _read_size(data, length, &p, &size)
                    _out_text(out, <const char*>data + p, size)
                elif kind == K_BYTES:
                    _read_size(data, length, &p, &size)
                    _out_bytea(out, data + p, size)
                elif kind == K_BOOLEAN:
                    _out_byte(out, 116 if data[p] != 0 else 102)  # t / f
                elif kind == K_FLOAT:
                    _out_double(out, PyFloat_Unpack4(<const char*>data + p, 1))
                elif kind == K_DOUBLE:
                    _out_double(out, PyFloat_Unpack8(<const char*>data + p, 1))
                elif kind == K_DATE:
                    _read_long(data, length, &p, &n)
                    _check_days(n)
                    _ymd(n + EPOCH_ORDINAL, &y, &m, &d)
                    _out_date(out, y, m, d)
                elif kind == K_TIMESTAMP or kind == K_LOCAL_TIMESTAMP:
                    _read_long(data, length, &p, &n)
                    _split_micros(n, &days, &rest)
                    _ymd(days + EPOCH_ORDINAL, &y, &m, &d)
                    _out_date(out, y, m, d)
                    seconds = rest // 1000000
                    _out_clock(out, <int>(seconds // 3600), <int>(seconds // 60 % 60),
                               <int>(seconds % 60), <int>(rest % 1000000),
                               kind == K_TIMESTAMP)
                elif kind == K_UUID:
                    # RowFormatter writes a UUID's 32 digits, lower case, no hyphens
                    if not _uuid_digits(data, length, p, digits):
                        _unhandled()
                    _out_raw(out, <const char*>digits, 32)
                else:  # decimals, arrays, delegated kinds: their values are built
                    _unhandled()
            _out_byte(out, 10)  # newline
        except BaseException:
            out.size = begin
            raise
        return 0

    cdef int _walk(self, bytes buf, const unsigned char* data, Py_ssize_t length,
                   Py_ssize_t* pos, Py_ssize_t* slot, Py_ssize_t* at,
                   unsigned char* classes) except -1:
        # one row as _read judges it; a key column's value position and class noted
        cdef Py_ssize_t p = pos[0]
        cdef Py_ssize_t i, k
        cdef unsigned char tag, value_class
        cdef int kind
        for i in range(self.count):
            kind = self.kinds[i]
            k = slot[i]
            value_class = CLASS_TYPED
            if self.nullable[i]:
                if p >= length:
                    _unhandled()
                tag = data[p]
                p += 1
                if tag == 0:
                    if k >= 0:
                        at[k] = p
                        classes[k] = CLASS_NULL
                    continue
                if tag == 4 and self.text[i]:
                    kind = K_STRING
                    value_class = CLASS_TEXT
                elif tag != 2:
                    _unhandled()
            if k >= 0:
                at[k] = p
                classes[k] = value_class
            p = self._skip(kind, i, buf, data, length, p)
        pos[0] = p
        return 0

    cdef Py_ssize_t _skip(self, int kind, Py_ssize_t i, bytes buf, const unsigned char* data,
                          Py_ssize_t length, Py_ssize_t p) except -1:
        # the position after one value, judged as _scalar, _array or _delegate judge it
        cdef int64_t n = 0, days = 0, rest = 0
        cdef Py_ssize_t size = 0
        if kind == K_LONG:
            _read_long(data, length, &p, &n)
            return p
        if kind == K_STRING:
            _read_size(data, length, &p, &size)
            _check_utf8(data + p, size)
            return p + size
        if kind == K_BYTES:
            _read_size(data, length, &p, &size)
            return p + size
        if kind == K_BOOLEAN:
            if p >= length:
                _unhandled()
            return p + 1
        if kind == K_FLOAT:
            if length - p < 4:
                _unhandled()
            return p + 4
        if kind == K_DOUBLE:
            if length - p < 8:
                _unhandled()
            return p + 8
        if kind == K_DATE:
            _read_long(data, length, &p, &n)
            _check_days(n)
            return p
        if kind == K_TIMESTAMP or kind == K_LOCAL_TIMESTAMP:
            _read_long(data, length, &p, &n)
            _split_micros(n, &days, &rest)
            return p
        if kind == K_UUID:
            return _skip_uuid(data, length, p)
        if kind == K_ARRAY:
            self._array(i, data, length, &p)
            return p
        if kind == K_DELEGATE:
            return self._delegate(i, buf, p)[1]
        self._scalar(kind, i, data, length, &p)  # a decimal: fastavro's conversion judges
        return p

    cdef int _compare(self, const unsigned char* data, Py_ssize_t length,
                      Py_ssize_t* columns, Py_ssize_t nkeys, Py_ssize_t* a_at,
                      unsigned char* a_class, Py_ssize_t* b_at, unsigned char* b_class
                      ) except? -2:
        # two walked rows' keys as sort_key orders them: by class, then by value
        cdef Py_ssize_t j
        cdef int r
        for j in range(nkeys):
            if a_class[j] != b_class[j]:
                return -1 if a_class[j] < b_class[j] else 1
            if a_class[j] == CLASS_NULL:
                continue
            r = _compare_value(K_STRING if a_class[j] == CLASS_TEXT
                               else self.kinds[columns[j]], data, length, a_at[j], b_at[j])
            if r:
                return r
        return 0

    cdef tuple _key_values(self, bytes buf, const unsigned char* data, Py_ssize_t length,
                           Py_ssize_t* columns, Py_ssize_t nkeys, Py_ssize_t* at,
                           unsigned char* classes):
        # a walked row's key values, as ``read`` makes them
        cdef Py_ssize_t j, i, p
        cdef int kind
        values = []
        for j in range(nkeys):
            i = columns[j]
            p = at[j]
            kind = self.kinds[i]
            if classes[j] == CLASS_NULL:
                value = None
            elif classes[j] == CLASS_TEXT:
                value = _read_string(data, length, &p)
            elif kind == K_ARRAY:
                value = self._array(i, data, length, &p)
            elif kind == K_DELEGATE:
                value = self._delegate(i, buf, p)[0]
            else:
                value = self._scalar(kind, i, data, length, &p)
            values.append(value)
        return tuple(values)

    cdef dict _read(self, bytes buf, Py_ssize_t* pos):
        cdef const unsigned char* data = <const unsigned char*>PyBytes_AS_STRING(buf)
        cdef Py_ssize_t length = PyBytes_GET_SIZE(buf)
        cdef Py_ssize_t p = pos[0]
        cdef Py_ssize_t i
        cdef unsigned char tag
        cdef int kind
        cdef dict row = {}
        if p < 0 or p > length:
            _unhandled()
        for i in range(self.count):
            kind = self.kinds[i]
            if self.nullable[i]:
                if p >= length:
                    _unhandled()
                tag = data[p]
                p += 1
                if tag == 0:
                    PyDict_SetItem(row, self.names[i], None)
                    continue
                if tag == 4 and self.text[i]:  # PostgreSQL's text form of the value
                    kind = K_STRING
                elif tag != 2:
                    _unhandled()
            if kind == K_ARRAY:
                value = self._array(i, data, length, &p)
            elif kind == K_DELEGATE:
                value, p = self._delegate(i, buf, p)
            else:
                value = self._scalar(kind, i, data, length, &p)
            PyDict_SetItem(row, self.names[i], value)
        pos[0] = p
        return row

    cdef inline object _scalar(self, int kind, Py_ssize_t i, const unsigned char* data,
                               Py_ssize_t length, Py_ssize_t* pos):
        cdef int64_t n = 0
        cdef Py_ssize_t p = pos[0]
        if kind == K_LONG:
            _read_long(data, length, pos, &n)
            return n
        if kind == K_STRING:
            return _read_string(data, length, pos)
        if kind == K_BYTES:
            return _read_bytes(data, length, pos)
        if kind == K_BOOLEAN:
            if p >= length:
                _unhandled()
            pos[0] = p + 1
            return data[p] != 0  # fastavro: any byte but 0 is true
        if kind == K_FLOAT:
            if length - p < 4:
                _unhandled()
            pos[0] = p + 4
            return PyFloat_Unpack4(<const char*>data + p, 1)
        if kind == K_DOUBLE:
            if length - p < 8:
                _unhandled()
            pos[0] = p + 8
            return PyFloat_Unpack8(<const char*>data + p, 1)
        if kind == K_DATE:
            _read_long(data, length, pos, &n)
            return _date(n)
        if kind == K_TIMESTAMP:
            _read_long(data, length, pos, &n)
            return _timestamp(n, _UTC)
        if kind == K_LOCAL_TIMESTAMP:
            _read_long(data, length, pos, &n)
            return _timestamp(n, None)
        if kind == K_UUID:
            return _read_uuid(data, length, pos)
        if kind == K_DECIMAL:
            raw = _read_bytes(data, length, pos)
            convert, schema = self.extras[i]
            try:  # fastavro's own conversion and context, as decoder.py's _read_decimal
                return convert(raw, schema)
            except Exception as exc:
                raise Unhandled from exc
        return _unhandled()

    cdef list _array(self, Py_ssize_t i, const unsigned char* data, Py_ssize_t length,
                     Py_ssize_t* pos):
        # decoder.py's _read_array: blocks of items until a zero count
        cdef int kind = self.item_kinds[i]
        cdef bint nullable = self.item_nullable[i]
        cdef int64_t count = 0, j
        cdef unsigned char tag
        cdef list out = []
        _read_long(data, length, pos, &count)
        while count:
            # every item takes at least one byte: a count beyond the bytes left is garbage
            if count < 0 or count > length - pos[0]:
                _unhandled()
            for j in range(count):
                if nullable:
                    if pos[0] >= length:
                        _unhandled()
                    tag = data[pos[0]]
                    pos[0] += 1
                    if tag == 0:
                        PyList_Append(out, None)
                        continue
                    if tag != 2:
                        _unhandled()
                PyList_Append(out, self._scalar(kind, i, data, length, pos))
            _read_long(data, length, pos, &count)
        return out

    cdef tuple _delegate(self, Py_ssize_t i, bytes buf, Py_ssize_t p):
        # decoder.py's reader; what it raises on bad bytes (IndexError past the end, a
        # struct or UnicodeDecodeError) is Unhandled here, as every other column's is
        try:
            value, end = self.delegates[i](buf, p)
        except Unhandled:
            raise
        except Exception as exc:
            raise Unhandled from exc
        if not p <= end <= PyBytes_GET_SIZE(buf):
            _unhandled()
        return value, end


cdef class ChangeReader:
    """The reader of one table version's change events (``envelope_schema``'s shape): the
    ``ChangeEvent`` of a single-object encoded value, as decoder.py's ``_ChangeDecoder``."""

    cdef RowReader rows
    cdef object table

    def __init__(self, RowReader rows not None, table):
        self.rows = rows
        self.table = table

    def decode(self, bytes buf not None):
        """The change event of ``buf`` (header included), or Unhandled."""
        cdef const unsigned char* data = <const unsigned char*>PyBytes_AS_STRING(buf)
        cdef Py_ssize_t length = PyBytes_GET_SIZE(buf)
        cdef Py_ssize_t p = 10  # after C3 01 and the fingerprint
        cdef int64_t commit_lsn = 0, seq = 0, xid = 0, commit_ts = 0, ts_ms = 0, count = 0
        cdef Py_ssize_t size = 0
        before = self._optional_row(buf, &p)
        after = self._optional_row(buf, &p)
        op = _read_string(data, length, &p)
        database = _read_string(data, length, &p)
        # schema and table: the registry's TableSchema names them; read to reject what
        # fastavro rejects
        _read_string(data, length, &p)
        _read_string(data, length, &p)
        _read_long(data, length, &p, &commit_lsn)
        _read_long(data, length, &p, &seq)
        _read_long(data, length, &p, &xid)
        _read_long(data, length, &p, &commit_ts)
        if p >= length:
            _unhandled()
        snapshot = data[p] != 0
        p += 1
        _read_long(data, length, &p, &ts_ms)
        _read_long(data, length, &p, &count)
        toast = []
        while count:
            # every item takes at least one byte: a count beyond the bytes left is garbage
            if count < 0 or count > length - p:
                _unhandled()
            for _ in range(count):
                toast.append(_read_string(data, length, &p))
            _read_long(data, length, &p, &count)
        return ChangeEvent(op, database, self.table, Position(commit_lsn, seq), xid,
                           commit_ts, before, after, tuple(toast), snapshot, ts_ms)

    cdef object _optional_row(self, bytes buf, Py_ssize_t* pos):
        cdef Py_ssize_t p = pos[0]
        if p >= PyBytes_GET_SIZE(buf):
            _unhandled()
        cdef unsigned char tag = (<const unsigned char*>PyBytes_AS_STRING(buf))[p]
        if tag == 0:
            pos[0] = p + 1
            return None
        if tag != 2:
            _unhandled()
        pos[0] = p + 1
        return self.rows._read(buf, pos)


