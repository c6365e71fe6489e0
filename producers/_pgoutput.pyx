# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The pgoutput messages of every row change, and of each transaction's begin and commit,
decoded in C: the same values ``producers.pgoutput``'s Python decoder returns, or the same
ProtocolError.

Insert, Update, Delete, Begin and Commit are read here; every other message goes to the
Python decoder. So do bytes whose error the Python decoder takes from CPython itself
(struct's and bytes' words for a message cut short, which vary between Python versions),
and a negative column count or value length, which it refuses by name. The errors the
protocol reader words itself (a truncated value, binary or unknown tuple data, a missing new
or old tuple) are raised here, at the same point of the message.

The message values are frozen slotted dataclasses, made as ``object.__new__`` makes them and
filled as ``object.__setattr__`` fills them: 30 ns a message against 210 ns for calling the
class (its ``__init__`` sets each field through ``object.__setattr__`` in Python). Writing
the slots at their offsets saved 12 ns more; not worth reading CPython's descriptor structs.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_FromLongLong, PyLong_FromUnsignedLong
from cpython.object cimport PyObject_GenericSetAttr
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.stdint cimport INT64_MAX, int8_t, int16_t, int32_t, int64_t, uint32_t, uint64_t


cdef extern from *:
    """
    static PyObject* _pgo_alloc(PyObject* cls) {
        PyTypeObject* type = (PyTypeObject*)cls;
        return type->tp_alloc(type, 0);
    }
    """
    object _pgo_alloc(object cls)


# the dataclasses and values bound by producers.pgoutput (bind)
cdef object _Begin = None, _Commit = None, _Insert = None, _Update = None, _Delete = None
cdef object _UNCHANGED = None, _ProtocolError = None, _python_decode = None
cdef int64_t _epoch_offset = 0
cdef bint _bound = False
cdef str _K = "K", _O = "O"

# every field of the values made here, in the order of their classes' slots
_FIELDS = {
    "Begin": ("final_lsn", "commit_ts", "xid"),
    "Commit": ("flags", "commit_lsn", "end_lsn", "commit_ts"),
    "Insert": ("relid", "new"),
    "Update": ("relid", "old_kind", "old", "new"),
    "Delete": ("relid", "old_kind", "old"),
}
cdef str _relid = "relid", _new = "new", _old_kind = "old_kind", _old = "old"
cdef str _final_lsn = "final_lsn", _commit_ts = "commit_ts", _xid = "xid"
cdef str _flags = "flags", _commit_lsn = "commit_lsn", _end_lsn = "end_lsn"


def bind(begin: type, commit: type, insert: type, update: type, delete: type,
         unchanged: object, protocol_error: type, python_decode: object,
         epoch_offset_us: int) -> None:
    """Make ``decode`` return these classes and raise ``protocol_error``; every message it
    does not read is ``python_decode``'s."""
    global _Begin, _Commit, _Insert, _Update, _Delete, _UNCHANGED, _ProtocolError
    global _python_decode, _epoch_offset, _bound
    for cls in (begin, commit, insert, update, delete):
        # every slot is filled here: a field added to the class would otherwise stay unset
        if tuple(cls.__slots__) != _FIELDS[cls.__name__]:
            raise TypeError(f"{cls.__name__} has slots {cls.__slots__}, "
                            f"not {_FIELDS[cls.__name__]}")
    _Begin, _Commit, _Insert, _Update, _Delete = begin, commit, insert, update, delete
    _UNCHANGED, _ProtocolError, _python_decode = unchanged, protocol_error, python_decode
    _epoch_offset = epoch_offset_us
    _bound = True


cdef inline uint32_t _u32(const unsigned char* p) noexcept:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline int64_t _i64(const unsigned char* p) noexcept:
    return <int64_t>((<uint64_t>_u32(p) << 32) | _u32(p + 4))


cdef object _unix_micros(int64_t pg_micros):
    # far-future timestamps overflow int64 once moved to the Unix epoch: Python ints do not
    if pg_micros <= INT64_MAX - _epoch_offset:
        return PyLong_FromLongLong(pg_micros + _epoch_offset)
    return PyLong_FromLongLong(pg_micros) + _epoch_offset


cdef object _tuple(const unsigned char* buf, Py_ssize_t size, Py_ssize_t* at):
    # pgoutput.py's _tuple; None: the Python decoder is to read this message
    cdef Py_ssize_t pos = at[0], i, count
    cdef int32_t length
    cdef unsigned char kind
    if size - pos < 2:
        return None
    count = <int16_t>((buf[pos] << 8) | buf[pos + 1])
    pos += 2
    if count < 0:  # the Python decoder's error
        return None
    values = PyTuple_New(count)
    for i in range(count):
        if pos >= size:
            return None
        kind = buf[pos]
        pos += 1
        if kind == 0x74:  # 't' text
            if size - pos < 4:
                return None
            length = <int32_t>_u32(buf + pos)
            pos += 4
            if length < 0:
                return None
            if length > size - pos:
                raise _ProtocolError("tuple value is truncated")
            value = PyBytes_FromStringAndSize(<const char*>buf + pos, length)
            pos += length
        elif kind == 0x6E:  # 'n' null
            value = None
        elif kind == 0x75:  # 'u' unchanged TOAST
            value = _UNCHANGED
        elif kind == 0x62:  # 'b' binary
            raise _ProtocolError("binary tuple data received; capture asks for text")
        else:
            raise _ProtocolError(f"unknown tuple data kind {chr(kind)!r}")
        Py_INCREF(value)  # PyTuple_SET_ITEM steals a reference
        PyTuple_SET_ITEM(values, i, value)
    at[0] = pos
    return values


cdef object _insert(const unsigned char* buf, Py_ssize_t size):
    cdef Py_ssize_t pos = 6
    if size < 6:
        return None
    if buf[5] != 0x4E:  # 'N'
        raise _ProtocolError(f"insert without new tuple (got {chr(buf[5])!r})")
    new = _tuple(buf, size, &pos)
    if new is None:
        return None
    msg = _pgo_alloc(_Insert)
    PyObject_GenericSetAttr(msg, _relid, PyLong_FromUnsignedLong(_u32(buf + 1)))
    PyObject_GenericSetAttr(msg, _new, new)
    return msg


cdef object _update(const unsigned char* buf, Py_ssize_t size):
    cdef Py_ssize_t pos = 6
    cdef unsigned char kind
    if size < 6:
        return None
    kind = buf[5]
    old = None
    old_kind = None
    if kind == 0x4B or kind == 0x4F:  # 'K' key columns, 'O' old row
        old_kind = _K if kind == 0x4B else _O
        old = _tuple(buf, size, &pos)
        if old is None or pos >= size:
            return None
        kind = buf[pos]
        pos += 1
    if kind != 0x4E:  # 'N'
        raise _ProtocolError(f"update without new tuple (got {chr(kind)!r})")
    new = _tuple(buf, size, &pos)
    if new is None:
        return None
    msg = _pgo_alloc(_Update)
    PyObject_GenericSetAttr(msg, _relid, PyLong_FromUnsignedLong(_u32(buf + 1)))
    PyObject_GenericSetAttr(msg, _old_kind, old_kind)
    PyObject_GenericSetAttr(msg, _old, old)
    PyObject_GenericSetAttr(msg, _new, new)
    return msg


cdef object _delete(const unsigned char* buf, Py_ssize_t size):
    cdef Py_ssize_t pos = 6
    cdef unsigned char kind
    if size < 6:
        return None
    kind = buf[5]
    if kind != 0x4B and kind != 0x4F:
        raise _ProtocolError(f"delete without old tuple (got {chr(kind)!r})")
    old = _tuple(buf, size, &pos)
    if old is None:
        return None
    msg = _pgo_alloc(_Delete)
    PyObject_GenericSetAttr(msg, _relid, PyLong_FromUnsignedLong(_u32(buf + 1)))
    PyObject_GenericSetAttr(msg, _old_kind, _K if kind == 0x4B else _O)
    PyObject_GenericSetAttr(msg, _old, old)
    return msg


cdef object _begin(const unsigned char* buf, Py_ssize_t size):
    if size < 21:  # ">qqI" after the type byte
        return None
    msg = _pgo_alloc(_Begin)
    PyObject_GenericSetAttr(msg, _final_lsn, PyLong_FromLongLong(_i64(buf + 1)))
    PyObject_GenericSetAttr(msg, _commit_ts, _unix_micros(_i64(buf + 9)))
    PyObject_GenericSetAttr(msg, _xid, PyLong_FromUnsignedLong(_u32(buf + 17)))
    return msg


cdef object _commit(const unsigned char* buf, Py_ssize_t size):
    if size < 26:  # ">bqqq" after the type byte
        return None
    msg = _pgo_alloc(_Commit)
    PyObject_GenericSetAttr(msg, _flags, <int8_t>buf[1])
    PyObject_GenericSetAttr(msg, _commit_lsn, PyLong_FromLongLong(_i64(buf + 2)))
    PyObject_GenericSetAttr(msg, _end_lsn, PyLong_FromLongLong(_i64(buf + 10)))
    PyObject_GenericSetAttr(msg, _commit_ts, _unix_micros(_i64(buf + 18)))
    return msg


def decode(data: object) -> object:
    """Decode one pgoutput message, as ``producers.pgoutput.decode_python`` does."""
    if not _bound:
        raise RuntimeError("producers._pgoutput is used through producers.pgoutput")
    buf = data if type(data) is bytes else bytes(data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(buf)
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(buf)
    msg = None
    if size:
        if p[0] == 0x49:  # 'I'
            msg = _insert(p, size)
        elif p[0] == 0x55:  # 'U'
            msg = _update(p, size)
        elif p[0] == 0x44:  # 'D'
            msg = _delete(p, size)
        elif p[0] == 0x42:  # 'B'
            msg = _begin(p, size)
        elif p[0] == 0x43:  # 'C'
            msg = _commit(p, size)
    if msg is None:
        return _python_decode(buf)
    return msg
