# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Journal rows formatted as COPY text in C: the bytes psycopg's ``Copy.write_row`` sends
for the same values (its text dumpers, then COPY's backslash escapes), without its
per-value dumper lookup, which cost restores about 5 µs a row.

How each kind of value is written lives in ``_copyout.pxi``, which ``_fastread.pyx`` shares
to write a package's rows as COPY text straight from their Avro bytes.

A ``RowFormatter`` is built once per COPY from its column names; ``add(row)`` appends one
row (a dict or other mapping) to its buffer and ``take()`` hands the buffered bytes over.
Values are dispatched on their exact type, one-dimensional lists of one such type as
psycopg's ``ListDumper`` writes them; any value this does not format as psycopg would
(nested or mixed lists, bytea arrays, times, intervals, subclasses, NaN decimals, text with
NUL...) raises ``Unhandled`` with the buffer as it was before the row, so the caller sends
that row through psycopg, which formats or refuses it as it always did. A missing column
raises KeyError.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.datetime cimport (
    PyDate_CheckExact,
    PyDateTime_CheckExact,
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
)
from cpython.dict cimport PyDict_GetItem
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.ref cimport PyObject
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy, memmove, strlen

from datetime import date, datetime, timezone
from decimal import Decimal
from uuid import UUID

from journal.codec.wire import Unhandled


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t *size) except NULL
    bint PyUnicode_CheckExact(object o)
    bint PyLong_CheckExact(object o)
    bint PyFloat_CheckExact(object o)
    bint PyBytes_CheckExact(object o)
    bint PyBool_Check(object o)
    bint PyDict_CheckExact(object o)
    bint PyList_CheckExact(object o)
    long long PyLong_AsLongLongAndOverflow(object o, int* overflow) except? -1
    unsigned long long PyLong_AsUnsignedLongLongMask(object o) except? -1
    double PyFloat_AS_DOUBLE(object o)


import_datetime()

cdef object _UTC = timezone.utc
cdef object _DECIMAL = Decimal
cdef object _UUID = UUID
cdef object _SIXTY_FOUR = 64
# the item types of a list formatted here (bytes: psycopg's escaping depends on the
# connection's libpq escaping, left to it)
cdef frozenset _ARRAY_ITEMS = frozenset([str, int, float, bool, Decimal, date, datetime, UUID])


cdef int _unhandled() except -1:
    raise Unhandled


include "_copyout.pxi"


cdef bint _needs_quotes(const unsigned char* s, Py_ssize_t n) noexcept:
    # psycopg's ListDumper quotes an element (its _get_needs_quotes_regexp): empty, any of
    # " { } , \ or ASCII white space, the word NULL in any case, or a Unicode space
    # CockroachDB strips (U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000)
    cdef Py_ssize_t j
    cdef unsigned char c
    if n == 0:
        return True
    if n == 4 and (s[0] | 0x20) == 110 and (s[1] | 0x20) == 117 and (s[2] | 0x20) == 108 \
            and (s[3] | 0x20) == 108:
        return True
    for j in range(n):
        c = s[j]
        if c == 34 or c == 123 or c == 125 or c == 44 or c == 92 or c == 32 \
                or (9 <= c <= 13):
            return True
        if c >= 0xE1 and j + 2 < n:
            if c == 0xE1 and s[j + 1] == 0x9A and s[j + 2] == 0x80:
                return True
            if c == 0xE2 and s[j + 1] == 0x80 and (s[j + 2] <= 0x8A and s[j + 2] >= 0x80
                                                   or s[j + 2] == 0xA8 or s[j + 2] == 0xA9
                                                   or s[j + 2] == 0xAF):
                return True
            if c == 0xE2 and s[j + 1] == 0x81 and s[j + 2] == 0x9F:
                return True
            if c == 0xE3 and s[j + 1] == 0x80 and s[j + 2] == 0x80:
                return True
    return False


cdef class RowFormatter:
    """COPY text of rows with ``columns``, in that order, buffered until ``take()``."""

    cdef tuple columns
    cdef CopyOut out

    def __cinit__(self, columns):
        self.columns = tuple(columns)
        self.out.data = NULL
        _out_init(&self.out, 1 << 16)

    def __dealloc__(self):
        _out_free(&self.out)

    @property
    def buffered(self) -> int:
        """How many bytes wait for ``take()``."""
        return self.out.size

    def take(self) -> bytes:
        """The rows added since the last ``take()``, as one block of COPY text."""
        text = PyBytes_FromStringAndSize(self.out.data, self.out.size)
        self.out.size = 0
        return text

    def append(self, text: bytes) -> None:
        """Appends rows already formatted (psycopg's, for a row ``add`` refused)."""
        self._raw(PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text))

    def add(self, row) -> int:
        """Appends ``row``'s values; returns the bytes now buffered. Unhandled (buffer
        unchanged) for a value psycopg must format; KeyError for a missing column."""
        cdef Py_ssize_t start = self.out.size
        cdef Py_ssize_t i, n = len(self.columns)
        cdef PyObject* found
        cdef bint exact = PyDict_CheckExact(row)
        try:
            for i in range(n):
                if i:
                    self._byte(9)  # tab
                column = self.columns[i]
                if exact:
                    found = PyDict_GetItem(row, column)
                    if found == NULL:
                        raise KeyError(column)
                    self._value(<object>found)
                else:
                    self._value(row[column])
            self._byte(10)  # newline
        except BaseException:
            self.out.size = start
            raise
        return self.out.size

    cdef inline int _byte(self, char b) except -1:
        return _out_byte(&self.out, b)

    cdef inline int _raw(self, const char* src, Py_ssize_t n) except -1:
        return _out_raw(&self.out, src, n)

    cdef inline int _text(self, const char* s, Py_ssize_t n) except -1:
        return _out_text(&self.out, s, n)

    cdef int _str_of(self, object value) except -1:
        # str(value), escaped: for the few values psycopg formats with str() we do not
        cdef Py_ssize_t n = 0
        cdef const char* s = PyUnicode_AsUTF8AndSize(str(value), &n)
        return self._text(s, n)

    cdef int _array(self, list items) except -1:
        # a one-dimensional list of one handled type, as psycopg's ListDumper writes it:
        # {a,NULL,"b c"}; nested, mixed or other items are left to psycopg, which picks the
        # element type from them (or refuses a mix)
        cdef Py_ssize_t j, n = len(items), start, k
        cdef object cls = None
        cdef const char* s
        cdef Py_ssize_t size = 0
        for item in items:
            if item is None:
                continue
            if cls is None:
                cls = type(item)
                if cls not in _ARRAY_ITEMS:
                    return _unhandled()
            elif type(item) is not cls:
                return _unhandled()
        if n == 0:
            return self._raw(b"{}", 2)
        self._byte(123)  # {
        for j in range(n):
            if j:
                self._byte(44)  # ,
            item = items[j]
            if item is None:
                self._raw(b"NULL", 4)
            elif cls is str:
                try:
                    s = PyUnicode_AsUTF8AndSize(item, &size)
                except UnicodeEncodeError:  # lone surrogates: psycopg's error to raise
                    return _unhandled()
                if _needs_quotes(<const unsigned char*>s, size):
                    self._quoted(s, size)
                else:
                    self._text(s, size)
            else:
                # numbers, dates, timestamps, UUIDs: no quote or backslash in their text,
                # and nothing COPY escapes, but a space (a timestamp's) asks for quotes
                start = self.out.size
                self._value(item)
                k = self.out.size - start
                if _needs_quotes(<const unsigned char*>self.out.data + start, k):
                    _out_reserve(&self.out, 2)
                    memmove(self.out.data + start + 1, self.out.data + start, k)
                    self.out.data[start] = 34
                    self.out.data[start + k + 1] = 34
                    self.out.size += 2
        return self._byte(125)  # }

    cdef int _quoted(self, const char* s, Py_ssize_t n) except -1:
        # a quoted array element: " and \ backslash-escaped, then all of it COPY-escaped
        cdef Py_ssize_t j
        self._byte(34)
        for j in range(n):
            if s[j] == 34:
                self._raw(b'\\\\"', 3)
            elif s[j] == 92:
                self._raw(b"\\\\\\\\", 4)
            else:
                self._text(s + j, 1)
        return self._byte(34)

    cdef int _value(self, object value) except -1:
        cdef Py_ssize_t n = 0
        cdef const char* s
        cdef long long number
        cdef int overflow = 0
        cdef Py_ssize_t j
        cdef char* out
        cdef uint64_t high, low
        cdef int k
        if value is None:
            return self._raw(b"\\N", 2)
        if PyUnicode_CheckExact(value):
            try:
                s = PyUnicode_AsUTF8AndSize(value, &n)
            except UnicodeEncodeError:  # lone surrogates: psycopg's error to raise
                return _unhandled()
            return self._text(s, n)
        if PyBool_Check(value):  # before int: bool is an int
            return self._byte(116 if value is True else 102)  # t / f
        if PyLong_CheckExact(value):
            number = PyLong_AsLongLongAndOverflow(value, &overflow)
            if overflow:
                return self._str_of(value)
            return _out_long(&self.out, number)
        if PyFloat_CheckExact(value):
            return _out_double(&self.out, PyFloat_AS_DOUBLE(value))
        if PyBytes_CheckExact(value):
            return _out_bytea(&self.out, <const unsigned char*>PyBytes_AS_STRING(value),
                              PyBytes_GET_SIZE(value))
        if PyDateTime_CheckExact(value):
            tz = datetime_tzinfo(value)
            if tz is not None and tz is not _UTC:  # another offset: str() spells it
                return self._str_of(value)
            _out_date(&self.out, datetime_year(value), datetime_month(value),
                      datetime_day(value))
            return _out_clock(&self.out, datetime_hour(value), datetime_minute(value),
                              datetime_second(value), datetime_microsecond(value),
                              tz is not None)
        if PyDate_CheckExact(value):
            return _out_date(&self.out, date_year(value), date_month(value), date_day(value))
        if PyList_CheckExact(value):
            return self._array(value)
        cls = type(value)
        if cls is _UUID:
            number_obj = value.int
            low = PyLong_AsUnsignedLongLongMask(number_obj)
            high = PyLong_AsUnsignedLongLongMask(number_obj >> _SIXTY_FOUR)
            _out_reserve(&self.out, 32)
            out = self.out.data + self.out.size
            for k in range(16):
                out[15 - k] = _COPY_HEX[high & 15]
                out[31 - k] = _COPY_HEX[low & 15]
                high >>= 4
                low >>= 4
            self.out.size += 32
            return 0
        if cls is _DECIMAL:
            text = str(value)
            s = PyUnicode_AsUTF8AndSize(text, &n)
            for j in range(n):
                if s[j] == 78:  # "N": a NaN, which psycopg's dumpers spell differently
                    return _unhandled()
            return self._raw(s, n)
        return _unhandled()
