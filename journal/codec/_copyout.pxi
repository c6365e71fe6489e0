# COPY text's formatting rules, written into a growing buffer: included by _copytext.pyx
# (values of decoded rows) and _fastread.pyx (values read straight from Avro bytes), so
# both write each kind of value with the same code. The including module defines
# ``_unhandled()`` (raises Unhandled) and cimports PyMem_*, memcpy, strlen and the
# integer types.

cdef extern from "Python.h":
    # float's repr: the shortest digits that read back as the same double
    char* PyOS_double_to_string(double val, char format_code, int precision, int flags,
                                int *type) except NULL
    int Py_DTSF_ADD_DOT_0

cdef const char* _COPY_HEX = b"0123456789abcdef"
# each byte's two hex digits, so bytea is written two output bytes per lookup
cdef char _COPY_HEX_PAIRS[512]
for _byte in range(256):
    _COPY_HEX_PAIRS[2 * _byte] = _COPY_HEX[_byte >> 4]
    _COPY_HEX_PAIRS[2 * _byte + 1] = _COPY_HEX[_byte & 15]


cdef struct CopyOut:
    char* data
    Py_ssize_t size
    Py_ssize_t capacity


cdef int _out_init(CopyOut* out, Py_ssize_t capacity) except -1:
    out.size = 0
    out.capacity = capacity if capacity > 16 else 16
    out.data = <char*>PyMem_Malloc(out.capacity)
    if out.data == NULL:
        raise MemoryError
    return 0


cdef void _out_free(CopyOut* out) noexcept:
    PyMem_Free(out.data)
    out.data = NULL


cdef inline int _out_reserve(CopyOut* out, Py_ssize_t more) except -1:
    cdef Py_ssize_t need = out.size + more
    cdef Py_ssize_t capacity = out.capacity
    cdef char* grown
    if need <= capacity:
        return 0
    while capacity < need:
        capacity *= 2
    grown = <char*>PyMem_Realloc(out.data, capacity)
    if grown == NULL:
        raise MemoryError
    out.data = grown
    out.capacity = capacity
    return 0


cdef inline int _out_byte(CopyOut* out, char b) except -1:
    _out_reserve(out, 1)
    out.data[out.size] = b
    out.size += 1
    return 0


cdef inline int _out_raw(CopyOut* out, const char* src, Py_ssize_t n) except -1:
    _out_reserve(out, n)
    memcpy(out.data + out.size, src, n)
    out.size += n
    return 0


cdef int _out_digits(CopyOut* out, uint64_t value, int width) except -1:
    # decimal digits, zero-padded to ``width``
    cdef char tmp[24]
    cdef int k = 24
    while True:
        k -= 1
        tmp[k] = <char>(48 + value % 10)
        value //= 10
        width -= 1
        if value == 0 and width <= 0:
            break
    return _out_raw(out, tmp + k, 24 - k)


cdef inline int _out_long(CopyOut* out, int64_t number) except -1:
    if number < 0:
        _out_byte(out, 45)
        return _out_digits(out, <uint64_t>0 - <uint64_t>number, 0)
    return _out_digits(out, <uint64_t>number, 0)


cdef int _out_text(CopyOut* out, const char* s, Py_ssize_t n) except -1:
    # COPY's escapes for the bytes psycopg escapes (\b \t \n \v \f \r \\); a NUL is
    # refused by psycopg's text dumper, so it is left to it
    cdef Py_ssize_t j
    cdef unsigned char c
    cdef char* to
    cdef uint64_t word
    _out_reserve(out, 2 * n)
    to = out.data + out.size
    j = 0
    while j < n:
        if j + 8 <= n:
            # eight bytes at a time while none is a control byte up to \r or a backslash
            # (most text has none: a byte at a time was most of formatting's time)
            memcpy(&word, s + j, 8)
            if not (((word - 0x0E0E0E0E0E0E0E0EULL) & ~word)
                    | (((word ^ 0x5C5C5C5C5C5C5C5CULL) - 0x0101010101010101ULL)
                       & ~(word ^ 0x5C5C5C5C5C5C5C5CULL))) & 0x8080808080808080ULL:
                memcpy(to, s + j, 8)
                to += 8
                j += 8
                continue
        c = <unsigned char>s[j]
        j += 1
        if c > 13 and c != 92:  # the common case: nothing to escape
            to[0] = <char>c
            to += 1
            continue
        if c == 92:
            to[0] = 92
            to[1] = 92
        elif c == 8:
            to[0] = 92
            to[1] = 98  # b
        elif c == 9:
            to[0] = 92
            to[1] = 116  # t
        elif c == 10:
            to[0] = 92
            to[1] = 110  # n
        elif c == 11:
            to[0] = 92
            to[1] = 118  # v
        elif c == 12:
            to[0] = 92
            to[1] = 102  # f
        elif c == 13:
            to[0] = 92
            to[1] = 114  # r
        elif c == 0:
            return _unhandled()
        else:
            to[0] = <char>c
            to += 1
            continue
        to += 2
    out.size = to - out.data
    return 0


cdef int _out_bytea(CopyOut* out, const unsigned char* raw, Py_ssize_t n) except -1:
    # the bytea hex literal \x..., its backslash escaped for COPY
    cdef Py_ssize_t j
    cdef char* to
    _out_reserve(out, 3 + 2 * n)
    to = out.data + out.size
    to[0] = 92
    to[1] = 92
    to[2] = 120  # x
    to += 3
    for j in range(n):
        memcpy(to, _COPY_HEX_PAIRS + 2 * raw[j], 2)
        to += 2
    out.size = to - out.data
    return 0


cdef int _out_double(CopyOut* out, double value) except -1:
    # Python's repr of the float (nan, inf and -inf too, which PostgreSQL reads)
    cdef char* text = PyOS_double_to_string(value, b"r", 0, Py_DTSF_ADD_DOT_0, NULL)
    try:
        _out_raw(out, text, strlen(text))
    finally:
        PyMem_Free(text)
    return 0


cdef int _out_date(CopyOut* out, int year, int month, int day) except -1:
    _out_digits(out, year, 4)
    _out_byte(out, 45)
    _out_digits(out, month, 2)
    _out_byte(out, 45)
    return _out_digits(out, day, 2)


cdef int _out_clock(CopyOut* out, int hour, int minute, int second, int microsecond,
                    bint utc) except -1:
    # a timestamp's time of day after its date, as str(datetime) spells it: microseconds
    # only when there are some, +00:00 for an aware UTC one
    _out_byte(out, 32)
    _out_digits(out, hour, 2)
    _out_byte(out, 58)
    _out_digits(out, minute, 2)
    _out_byte(out, 58)
    _out_digits(out, second, 2)
    if microsecond:
        _out_byte(out, 46)
        _out_digits(out, microsecond, 6)
    if utc:
        _out_raw(out, b"+00:00", 6)
    return 0
