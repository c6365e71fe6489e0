# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Kafka records (message format v2) appended to an open record batch's buffer in C: the
same bytes kafka-python's ``DefaultRecordBatchBuilder.append`` writes for each record, for
a whole list of records at once.

Each record is ``(key, value, header value)``: key ``bytes`` or None, value ``bytes``,
and exactly one header, whose name the caller gives once (already UTF-8).
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy


cdef inline Py_ssize_t _varint_size(int64_t value) noexcept:
    cdef uint64_t n = (<uint64_t>value << 1) ^ <uint64_t>(value >> 63)  # zigzag
    cdef Py_ssize_t size = 1
    while n > 0x7F:
        n >>= 7
        size += 1
    return size


cdef inline char* _put_varint(char* out, int64_t value) noexcept:
    cdef uint64_t n = (<uint64_t>value << 1) ^ <uint64_t>(value >> 63)
    while n > 0x7F:
        out[0] = <char>(0x80 | (n & 0x7F))
        out += 1
        n >>= 7
    out[0] = <char>n
    return out + 1


cdef inline char* _put_bytes(char* out, object data) noexcept:
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    out = _put_varint(out, size)
    memcpy(out, PyBytes_AS_STRING(data), size)
    return out + size


cdef inline Py_ssize_t _body_size(object key, object value, object header,
                                  Py_ssize_t name_size, int64_t timestamp_delta,
                                  int64_t offset_delta) noexcept:
    # a record less its length prefix: attributes, deltas, key, value and the one header
    return (1 + _varint_size(timestamp_delta) + _varint_size(offset_delta)
            + (1 if key is None else _varint_size(PyBytes_GET_SIZE(key))
               + PyBytes_GET_SIZE(key))
            + _varint_size(PyBytes_GET_SIZE(value)) + PyBytes_GET_SIZE(value)
            + 1 + _varint_size(name_size) + name_size
            + _varint_size(PyBytes_GET_SIZE(header)) + PyBytes_GET_SIZE(header))


def append_records(bytearray buffer not None, list records not None, Py_ssize_t start,
                   Py_ssize_t batch_size, int64_t offset, int64_t timestamp_delta,
                   bytes header_name not None, bint first):
    """Append ``records[start:]`` to ``buffer`` while they fit in ``batch_size`` (the first
    record of a batch always fits, as kafka-python's builder decides), offsets counted from
    ``offset``; returns how many were appended and the largest one's size in bytes."""
    cdef Py_ssize_t n = len(records), i, end, count, grow = 0, length, body, largest = 0
    cdef Py_ssize_t used = PyByteArray_GET_SIZE(buffer)
    cdef Py_ssize_t name_size = PyBytes_GET_SIZE(header_name)
    cdef tuple record
    cdef char* out
    if start < 0 or start > n:
        raise ValueError("start outside the records")
    # first pass: which records fit, checked against every field's type before a byte moves
    end = start
    for i in range(start, n):
        record = <tuple?>records[i]
        if len(record) != 3:
            raise TypeError("a record is (key, value, header value)")
        key, value, header = record
        if key is not None and type(key) is not bytes:
            raise TypeError(f"Not supported type for key: {type(key)}")
        if type(value) is not bytes or type(header) is not bytes:
            raise TypeError("a record's value and header value are bytes")
        body = _body_size(key, value, header, name_size, timestamp_delta,
                          offset + (i - start))
        length = body + _varint_size(body)
        if used + grow + length > batch_size and not (first and i == start):
            break
        grow += length
        if length > largest:
            largest = length
        end = i + 1
    count = end - start
    if not count:
        return 0, 0
    PyByteArray_Resize(buffer, used + grow)
    out = PyByteArray_AS_STRING(buffer) + used
    for i in range(start, end):
        key, value, header = <tuple>records[i]
        body = _body_size(key, value, header, name_size, timestamp_delta,
                          offset + (i - start))
        out = _put_varint(out, body)
        out[0] = 0  # attributes
        out = _put_varint(out + 1, timestamp_delta)
        out = _put_varint(out, offset + (i - start))
        if key is None:
            out = _put_varint(out, -1)
        else:
            out = _put_bytes(out, key)
        out = _put_bytes(out, value)
        out = _put_varint(out, 1)  # one header
        out = _put_bytes(out, header_name)
        out = _put_bytes(out, header)
    return count, largest
