/*
 * distributor.receivers._otlp_json: the common case of otlp_json_to_protobuf, in C.
 *
 * encode(document) -> bytes | None
 * document: what orjson.loads returned for an OTLP/JSON ExportTraceServiceRequest (dicts, lists, str,
 * int, float, bool, None). Returns the canonical protobuf encoding of the request (fields in
 * field-number order, proto3 defaults left out: ExportTraceServiceRequest.SerializeToString() of the
 * same data), or None for anything that is not plainly valid OTLP/JSON in the spellings senders use.
 * The Python walk in otlp_json.py is the reference: it runs after a None and either encodes the body
 * (the rarer spellings: enum names, integers written as floats or "1e3", doubles as strings) or names
 * what is wrong. So every rule below either matches the walk exactly or answers None.
 *
 * The rules mirrored from the walk:
 * - both spellings of a field name (lowerCamelCase and the proto name); unknown keys and null values
 *   are skipped; a field given twice (both spellings) or two members of AnyValue's oneof: None.
 * - objects must be dicts, arrays lists; at most 100 levels of messages (the request is level 1).
 * - ids: exactly 16 or 8 hex digits (either case), "" means no id.
 * - integers: a JSON integer, or a decimal string [+-]?[0-9]+ (at most 20 characters here), within the
 *   field type's range; enums as such integers within int32 or by the name of a value (an unknown name:
 *   None). Floats in integer fields: None (the walk may
 *   have to re-read the body with exact integers).
 * - doubles: finite floats, integers (converted as float() does), "NaN", "Infinity", "-Infinity".
 * - bytes: base64 in either alphabet, padding optional, as the walk validates it.
 * - strings must encode as UTF-8 (no lone surrogates).
 * - proto3 defaults (0, "", false, empty bytes, a double with all bits zero) are left out except for
 *   oneof members; messages are written whenever present; repeated elements always.
 *
 * Why: the walk costs ~13 us per span in Python, most of it interpreting the field tables.
 *
 * No global mutable state: the output buffer belongs to one call.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 100

/* ---- The schema (opentelemetry-proto 1.45), checked against the descriptors at import -------------- */

enum { M_REQUEST, M_RESOURCE_SPANS, M_RESOURCE, M_KEY_VALUE, M_ANY_VALUE, M_ARRAY_VALUE, M_KV_LIST,
       M_ENTITY_REF, M_SCOPE_SPANS, M_SCOPE, M_SPAN, M_EVENT, M_LINK, M_STATUS, M_COUNT };

/* Field kinds; the proto type each stands for is in KIND_PROTO_TYPE. */
enum { K_STRING, K_BYTES, K_ID, K_BOOL, K_INT32, K_UINT32, K_INT64, K_FIXED32, K_FIXED64, K_ENUM,
       K_DOUBLE, K_MESSAGE, K_KIND_COUNT };

/* FieldDescriptor.TYPE_* numbers. */
static const uint8_t KIND_PROTO_TYPE[K_KIND_COUNT] = {
    [K_STRING] = 9, [K_BYTES] = 12, [K_ID] = 12,    [K_BOOL] = 8,     [K_INT32] = 5,    [K_UINT32] = 13,
    [K_INT64] = 3,  [K_FIXED32] = 7, [K_FIXED64] = 6, [K_ENUM] = 14, [K_DOUBLE] = 1, [K_MESSAGE] = 11,
};

/* Enums, whose values are numbered 0, 1, 2, ... */
enum { E_SPAN_KIND, E_STATUS_CODE, E_COUNT };

typedef struct {
    const char *full_name;
    const char *const *names; /* by number */
    uint8_t count;
} EnumDef;

static const char *const SPAN_KIND_NAMES[] = {
    "SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",      "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER",
};
static const char *const STATUS_CODE_NAMES[] = {"STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"};

static const EnumDef ENUMS[E_COUNT] = {
    [E_SPAN_KIND] = {"opentelemetry.proto.trace.v1.Span.SpanKind", SPAN_KIND_NAMES, 6},
    [E_STATUS_CODE] = {"opentelemetry.proto.trace.v1.Status.StatusCode", STATUS_CODE_NAMES, 3},
};

#define REPEATED 1
#define ONEOF 2 /* written even when it holds the default value */

typedef struct {
    const char *name;      /* proto name */
    const char *json_name; /* lowerCamelCase */
    uint8_t number, kind, flags;
    uint8_t message; /* K_MESSAGE: its message; K_ENUM: its enum */
    uint8_t id_size; /* K_ID: decoded size */
    uint8_t name_length, json_name_length;
} FieldDef;

typedef struct {
    const char *full_name;
    const FieldDef *fields; /* in field-number order */
    uint8_t count;
    uint8_t has_oneof;
} MessageDef;

#define LENGTHS(name, json) sizeof(name) - 1, sizeof(json) - 1
#define F(number, name, json, kind, flags) {name, json, number, K_##kind, flags, 0, 0, LENGTHS(name, json)}
#define SUB(number, name, json, message, flags) \
    {name, json, number, K_MESSAGE, flags, M_##message, 0, LENGTHS(name, json)}
#define ID(number, name, json, size) {name, json, number, K_ID, 0, 0, size, LENGTHS(name, json)}
#define ENUM(number, name, json, type) {name, json, number, K_ENUM, 0, E_##type, 0, LENGTHS(name, json)}
#define MAX_FIELDS 16

static const FieldDef REQUEST_FIELDS[] = {
    SUB(1, "resource_spans", "resourceSpans", RESOURCE_SPANS, REPEATED),
};
static const FieldDef RESOURCE_SPANS_FIELDS[] = {
    SUB(1, "resource", "resource", RESOURCE, 0),
    SUB(2, "scope_spans", "scopeSpans", SCOPE_SPANS, REPEATED),
    F(3, "schema_url", "schemaUrl", STRING, 0),
};
static const FieldDef RESOURCE_FIELDS[] = {
    SUB(1, "attributes", "attributes", KEY_VALUE, REPEATED),
    F(2, "dropped_attributes_count", "droppedAttributesCount", UINT32, 0),
    SUB(3, "entity_refs", "entityRefs", ENTITY_REF, REPEATED),
};
static const FieldDef KEY_VALUE_FIELDS[] = {
    F(1, "key", "key", STRING, 0),
    SUB(2, "value", "value", ANY_VALUE, 0),
    F(3, "key_strindex", "keyStrindex", INT32, 0),
};
static const FieldDef ANY_VALUE_FIELDS[] = {
    F(1, "string_value", "stringValue", STRING, ONEOF),
    F(2, "bool_value", "boolValue", BOOL, ONEOF),
    F(3, "int_value", "intValue", INT64, ONEOF),
    F(4, "double_value", "doubleValue", DOUBLE, ONEOF),
    SUB(5, "array_value", "arrayValue", ARRAY_VALUE, ONEOF),
    SUB(6, "kvlist_value", "kvlistValue", KV_LIST, ONEOF),
    F(7, "bytes_value", "bytesValue", BYTES, ONEOF),
    F(8, "string_value_strindex", "stringValueStrindex", INT32, ONEOF),
};
static const FieldDef ARRAY_VALUE_FIELDS[] = {
    SUB(1, "values", "values", ANY_VALUE, REPEATED),
};
static const FieldDef KV_LIST_FIELDS[] = {
    SUB(1, "values", "values", KEY_VALUE, REPEATED),
};
static const FieldDef ENTITY_REF_FIELDS[] = {
    F(1, "schema_url", "schemaUrl", STRING, 0),
    F(2, "type", "type", STRING, 0),
    F(3, "id_keys", "idKeys", STRING, REPEATED),
    F(4, "description_keys", "descriptionKeys", STRING, REPEATED),
};
static const FieldDef SCOPE_SPANS_FIELDS[] = {
    SUB(1, "scope", "scope", SCOPE, 0),
    SUB(2, "spans", "spans", SPAN, REPEATED),
    F(3, "schema_url", "schemaUrl", STRING, 0),
};
static const FieldDef SCOPE_FIELDS[] = {
    F(1, "name", "name", STRING, 0),
    F(2, "version", "version", STRING, 0),
    SUB(3, "attributes", "attributes", KEY_VALUE, REPEATED),
    F(4, "dropped_attributes_count", "droppedAttributesCount", UINT32, 0),
};
static const FieldDef SPAN_FIELDS[] = {
    ID(1, "trace_id", "traceId", 16),
    ID(2, "span_id", "spanId", 8),
    F(3, "trace_state", "traceState", STRING, 0),
    ID(4, "parent_span_id", "parentSpanId", 8),
    F(5, "name", "name", STRING, 0),
    ENUM(6, "kind", "kind", SPAN_KIND),
    F(7, "start_time_unix_nano", "startTimeUnixNano", FIXED64, 0),
    F(8, "end_time_unix_nano", "endTimeUnixNano", FIXED64, 0),
    SUB(9, "attributes", "attributes", KEY_VALUE, REPEATED),
    F(10, "dropped_attributes_count", "droppedAttributesCount", UINT32, 0),
    SUB(11, "events", "events", EVENT, REPEATED),
    F(12, "dropped_events_count", "droppedEventsCount", UINT32, 0),
    SUB(13, "links", "links", LINK, REPEATED),
    F(14, "dropped_links_count", "droppedLinksCount", UINT32, 0),
    SUB(15, "status", "status", STATUS, 0),
    F(16, "flags", "flags", FIXED32, 0),
};
static const FieldDef EVENT_FIELDS[] = {
    F(1, "time_unix_nano", "timeUnixNano", FIXED64, 0),
    F(2, "name", "name", STRING, 0),
    SUB(3, "attributes", "attributes", KEY_VALUE, REPEATED),
    F(4, "dropped_attributes_count", "droppedAttributesCount", UINT32, 0),
};
static const FieldDef LINK_FIELDS[] = {
    ID(1, "trace_id", "traceId", 16),
    ID(2, "span_id", "spanId", 8),
    F(3, "trace_state", "traceState", STRING, 0),
    SUB(4, "attributes", "attributes", KEY_VALUE, REPEATED),
    F(5, "dropped_attributes_count", "droppedAttributesCount", UINT32, 0),
    F(6, "flags", "flags", FIXED32, 0),
};
static const FieldDef STATUS_FIELDS[] = {
    F(2, "message", "message", STRING, 0),
    ENUM(3, "code", "code", STATUS_CODE),
};

#define MESSAGE(id, full_name, fields, has_oneof) \
    [id] = {full_name, fields, (uint8_t)(sizeof(fields) / sizeof(fields[0])), has_oneof}

static const MessageDef MESSAGES[M_COUNT] = {
    MESSAGE(M_REQUEST, "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest", REQUEST_FIELDS, 0),
    MESSAGE(M_RESOURCE_SPANS, "opentelemetry.proto.trace.v1.ResourceSpans", RESOURCE_SPANS_FIELDS, 0),
    MESSAGE(M_RESOURCE, "opentelemetry.proto.resource.v1.Resource", RESOURCE_FIELDS, 0),
    MESSAGE(M_KEY_VALUE, "opentelemetry.proto.common.v1.KeyValue", KEY_VALUE_FIELDS, 0),
    MESSAGE(M_ANY_VALUE, "opentelemetry.proto.common.v1.AnyValue", ANY_VALUE_FIELDS, 1),
    MESSAGE(M_ARRAY_VALUE, "opentelemetry.proto.common.v1.ArrayValue", ARRAY_VALUE_FIELDS, 0),
    MESSAGE(M_KV_LIST, "opentelemetry.proto.common.v1.KeyValueList", KV_LIST_FIELDS, 0),
    MESSAGE(M_ENTITY_REF, "opentelemetry.proto.common.v1.EntityRef", ENTITY_REF_FIELDS, 0),
    MESSAGE(M_SCOPE_SPANS, "opentelemetry.proto.trace.v1.ScopeSpans", SCOPE_SPANS_FIELDS, 0),
    MESSAGE(M_SCOPE, "opentelemetry.proto.common.v1.InstrumentationScope", SCOPE_FIELDS, 0),
    MESSAGE(M_SPAN, "opentelemetry.proto.trace.v1.Span", SPAN_FIELDS, 0),
    MESSAGE(M_EVENT, "opentelemetry.proto.trace.v1.Span.Event", EVENT_FIELDS, 0),
    MESSAGE(M_LINK, "opentelemetry.proto.trace.v1.Span.Link", LINK_FIELDS, 0),
    MESSAGE(M_STATUS, "opentelemetry.proto.trace.v1.Status", STATUS_FIELDS, 0),
};

/* ---- Output buffer ------------------------------------------------------------------------------- */

typedef struct {
    char *data;
    size_t length, capacity;
} Buffer;

/* 0, or -1 when out of memory. */
static int reserve(Buffer *out, size_t extra) {
    if (out->capacity - out->length >= extra) {
        return 0;
    }
    size_t capacity = out->capacity ? out->capacity : 4096;
    while (capacity - out->length < extra) {
        if (capacity > SIZE_MAX / 2) {
            return -1;
        }
        capacity *= 2;
    }
    char *data = realloc(out->data, capacity);
    if (data == NULL) {
        return -1;
    }
    out->data = data;
    out->capacity = capacity;
    return 0;
}

static int varint_size(uint64_t value) {
    int size = 1;
    while (value >= 0x80) {
        value >>= 7;
        size++;
    }
    return size;
}

/* Writes into reserved space (at most 10 bytes). */
static void put_varint(Buffer *out, uint64_t value) {
    char *at = out->data + out->length;
    while (value >= 0x80) {
        *at++ = (char)((value & 0x7F) | 0x80);
        value >>= 7;
    }
    *at++ = (char)value;
    out->length = (size_t)(at - out->data);
}

/* One byte, or two for Span.flags (field 16). */
static inline uint32_t tag_of(const FieldDef *field, int wire_type) {
    return (uint32_t)field->number << 3 | (uint32_t)wire_type;
}

static int put_length_delimited(Buffer *out, uint32_t tag, const char *data, size_t size) {
    if (reserve(out, 12 + size) < 0) {
        return -1;
    }
    put_varint(out, tag);
    put_varint(out, size);
    memcpy(out->data + out->length, data, size);
    out->length += size;
    return 0;
}

static void put_le(Buffer *out, uint64_t value, int size) {
    for (int i = 0; i < size; i++) {
        out->data[out->length++] = (char)(value >> (8 * i));
    }
}

/* ---- Values ----------------------------------------------------------------------------------- */

/* The UTF-8 of a str, or NULL (error cleared) when it has a lone surrogate. */
static const char *utf8_of(PyObject *text, Py_ssize_t *size) {
    const char *data = PyUnicode_AsUTF8AndSize(text, size);
    if (data == NULL) {
        PyErr_Clear();
    }
    return data;
}

/* A JSON integer or a decimal string as sign and magnitude; -1 for anything else. */
static int integer_of(PyObject *value, int *negative, uint64_t *magnitude) {
    if (PyLong_CheckExact(value)) {
        int overflow = 0;
        long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow == 0) {
            if (number == -1 && PyErr_Occurred()) {
                PyErr_Clear();
                return -1;
            }
            *negative = number < 0;
            *magnitude = number < 0 ? (uint64_t)(-(number + 1)) + 1 : (uint64_t)number;
            return 0;
        }
        if (overflow < 0) {
            return -1;
        }
        unsigned long long unsigned_number = PyLong_AsUnsignedLongLong(value);
        if (unsigned_number == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return -1;
        }
        *negative = 0;
        *magnitude = unsigned_number;
        return 0;
    }
    if (!PyUnicode_CheckExact(value) || !PyUnicode_IS_ASCII(value)) {
        return -1;
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(value);
    const Py_UCS1 *digits = PyUnicode_1BYTE_DATA(value);
    /* Longer strings (leading zeros) are left to the walk, which also knows int()'s digit limit. */
    if (length == 0 || length > 20) {
        return -1;
    }
    Py_ssize_t at = 0;
    *negative = 0;
    if (digits[0] == '+' || digits[0] == '-') {
        *negative = digits[0] == '-';
        at = 1;
    }
    if (at == length) {
        return -1;
    }
    uint64_t number = 0;
    for (; at < length; at++) {
        unsigned digit = (unsigned)digits[at] - '0';
        if (digit > 9 || number > (UINT64_MAX - digit) / 10) {
            return -1;
        }
        number = number * 10 + digit;
    }
    *magnitude = number;
    return 0;
}

static int hex_digit(unsigned c) {
    if (c - '0' <= 9) {
        return (int)(c - '0');
    }
    c |= 0x20;
    if (c - 'a' <= 5) {
        return (int)(c - 'a' + 10);
    }
    return -1;
}

/* -1 for a character outside both base64 alphabets. */
static int base64_digit(unsigned c) {
    if (c - 'A' <= 25) {
        return (int)(c - 'A');
    }
    if (c - 'a' <= 25) {
        return (int)(c - 'a' + 26);
    }
    if (c - '0' <= 9) {
        return (int)(c - '0' + 52);
    }
    if (c == '+' || c == '-') {
        return 62;
    }
    if (c == '/' || c == '_') {
        return 63;
    }
    return -1;
}

/* ---- The walk ---------------------------------------------------------------------------------- */

static int encode_message(Buffer *out, PyObject *object, int message, int depth);

/* A length-delimited submessage: the length is written after its content, moved when it takes more
 * than the one byte reserved. */
static int encode_submessage(Buffer *out, uint32_t tag, PyObject *object, int message, int depth) {
    if (reserve(out, 3) < 0) {
        return -1;
    }
    put_varint(out, tag);
    size_t start = ++out->length;
    if (encode_message(out, object, message, depth) < 0) {
        return -1;
    }
    size_t size = out->length - start;
    int size_bytes = varint_size(size);
    if (size_bytes > 1) {
        if (reserve(out, (size_t)size_bytes - 1) < 0) {
            return -1;
        }
        memmove(out->data + start + size_bytes - 1, out->data + start, size);
    }
    size_t end = out->length + (size_t)size_bytes - 1;
    out->length = start - 1;
    put_varint(out, size);
    out->length = end;
    return 0;
}

static int encode_string(Buffer *out, const FieldDef *field, PyObject *value, int always) {
    if (!PyUnicode_CheckExact(value)) {
        return -1;
    }
    if (!always && PyUnicode_GET_LENGTH(value) == 0) {
        return 0;
    }
    Py_ssize_t size;
    const char *data = utf8_of(value, &size);
    if (data == NULL) {
        return -1;
    }
    return put_length_delimited(out, tag_of(field, 2), data, (size_t)size);
}

static int encode_id(Buffer *out, const FieldDef *field, PyObject *value) {
    if (!PyUnicode_CheckExact(value)) {
        return -1;
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(value);
    if (length == 0) {
        return 0; /* no id */
    }
    if (!PyUnicode_IS_ASCII(value) || length != 2 * field->id_size) {
        return -1;
    }
    const Py_UCS1 *digits = PyUnicode_1BYTE_DATA(value);
    if (reserve(out, 3 + field->id_size) < 0) {
        return -1;
    }
    put_varint(out, tag_of(field, 2));
    char *at = out->data + out->length;
    *at++ = (char)field->id_size;
    for (int i = 0; i < field->id_size; i++) {
        int high = hex_digit(digits[2 * i]), low = hex_digit(digits[2 * i + 1]);
        if (high < 0 || low < 0) {
            return -1;
        }
        *at++ = (char)(high << 4 | low);
    }
    out->length = (size_t)(at - out->data);
    return 0;
}

static int encode_bytes(Buffer *out, const FieldDef *field, PyObject *value, int always) {
    if (!PyUnicode_CheckExact(value) || !PyUnicode_IS_ASCII(value)) {
        return -1;
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(value);
    const Py_UCS1 *text = PyUnicode_1BYTE_DATA(value);
    Py_ssize_t data_length = length;
    while (data_length > 0 && text[data_length - 1] == '=') {
        data_length--;
    }
    /* At most two '=' and only at the end; a lone trailing digit; padding to a whole group. */
    if (length - data_length > 2 || data_length % 4 == 1 || (data_length != length && length % 4)) {
        return -1;
    }
    size_t size = (size_t)(data_length / 4 * 3 + (data_length % 4 ? data_length % 4 - 1 : 0));
    if (!always && size == 0) {
        return 0;
    }
    if (reserve(out, 12 + size) < 0) {
        return -1;
    }
    put_varint(out, tag_of(field, 2));
    put_varint(out, size);
    char *at = out->data + out->length;
    uint32_t bits = 0;
    int count = 0;
    for (Py_ssize_t i = 0; i < data_length; i++) {
        int digit = base64_digit(text[i]);
        if (digit < 0) {
            return -1;
        }
        bits = bits << 6 | (uint32_t)digit;
        if (++count == 4) {
            *at++ = (char)(bits >> 16);
            *at++ = (char)(bits >> 8);
            *at++ = (char)bits;
            bits = 0;
            count = 0;
        }
    }
    /* A partial group: the bits past the last whole byte are dropped, as binascii does. */
    if (count == 2) {
        *at++ = (char)(bits >> 4);
    } else if (count == 3) {
        *at++ = (char)(bits >> 10);
        *at++ = (char)(bits >> 2);
    }
    out->length = (size_t)(at - out->data);
    return 0;
}

/* An enum value by name: its number, or -1 for a name the enum does not have (the walk leaves the
 * field unset then). */
static int enum_number(const FieldDef *field, PyObject *value, uint64_t *magnitude) {
    Py_ssize_t size;
    const char *name = utf8_of(value, &size);
    if (name == NULL) {
        return -1;
    }
    const EnumDef *def = &ENUMS[field->message];
    for (int number = 0; number < def->count; number++) {
        if (strlen(def->names[number]) == (size_t)size && memcmp(def->names[number], name, (size_t)size) == 0) {
            *magnitude = (uint64_t)number;
            return 0;
        }
    }
    return -1;
}

static int encode_integer(Buffer *out, const FieldDef *field, PyObject *value, int always) {
    int negative = 0;
    uint64_t magnitude;
    /* A string that does not start like an integer ([+-]?[0-9]+) is an enum name. */
    Py_UCS4 first = PyUnicode_CheckExact(value) && PyUnicode_GET_LENGTH(value) ? PyUnicode_READ_CHAR(value, 0) : '0';
    if (field->kind == K_ENUM && first != '+' && first != '-' && (first < '0' || first > '9')) {
        if (enum_number(field, value, &magnitude) < 0) {
            return -1;
        }
    } else if (integer_of(value, &negative, &magnitude) < 0) {
        return -1;
    }
    uint64_t number; /* as written: two's complement for negative numbers */
    switch (field->kind) {
    case K_INT32:
    case K_ENUM:
        if (magnitude > (negative ? (uint64_t)1 << 31 : ((uint64_t)1 << 31) - 1)) {
            return -1;
        }
        break;
    case K_INT64:
        if (magnitude > (negative ? (uint64_t)1 << 63 : ((uint64_t)1 << 63) - 1)) {
            return -1;
        }
        break;
    case K_UINT32:
    case K_FIXED32:
        if ((negative && magnitude) || magnitude > UINT32_MAX) {
            return -1;
        }
        break;
    default: /* K_FIXED64 */
        if (negative && magnitude) {
            return -1;
        }
    }
    number = negative ? (uint64_t)0 - magnitude : magnitude;
    if (!always && number == 0) {
        return 0;
    }
    if (reserve(out, 12) < 0) {
        return -1;
    }
    switch (field->kind) {
    case K_FIXED32:
        put_varint(out, tag_of(field, 5));
        put_le(out, number, 4);
        break;
    case K_FIXED64:
        put_varint(out, tag_of(field, 1));
        put_le(out, number, 8);
        break;
    default:
        put_varint(out, tag_of(field, 0));
        put_varint(out, number);
    }
    return 0;
}

static int encode_double(Buffer *out, const FieldDef *field, PyObject *value, int always) {
    double number;
    if (PyFloat_CheckExact(value)) {
        number = PyFloat_AS_DOUBLE(value);
    } else if (PyLong_CheckExact(value)) {
        number = PyLong_AsDouble(value); /* rounds as float() does */
        if (number == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return -1;
        }
    } else if (PyUnicode_CheckExact(value)) {
        Py_ssize_t size;
        const char *text = utf8_of(value, &size);
        if (text == NULL) {
            return -1;
        }
        /* The walk writes math.nan, whose bits are these on every platform CPython runs on; the
         * differential test pins them. */
        if (size == 3 && memcmp(text, "NaN", 3) == 0) {
            number = fabs(Py_NAN);
        } else if (size == 8 && memcmp(text, "Infinity", 8) == 0) {
            number = Py_HUGE_VAL;
        } else if (size == 9 && memcmp(text, "-Infinity", 9) == 0) {
            number = -Py_HUGE_VAL;
        } else {
            return -1; /* numbers as strings: the walk */
        }
        goto write;
    } else {
        return -1;
    }
    if (!isfinite(number)) {
        return -1;
    }
write:;
    uint64_t bits;
    memcpy(&bits, &number, sizeof bits);
    if (!always && bits == 0) {
        return 0;
    }
    if (reserve(out, 10) < 0) {
        return -1;
    }
    put_varint(out, tag_of(field, 1));
    put_le(out, bits, 8);
    return 0;
}

static int encode_field(Buffer *out, const FieldDef *field, PyObject *value, int depth) {
    int always = field->flags & ONEOF;
    if (field->flags & REPEATED) {
        if (!PyList_CheckExact(value)) {
            return -1;
        }
        uint32_t tag = tag_of(field, 2);
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(value); i++) {
            PyObject *item = PyList_GET_ITEM(value, i);
            if (field->kind == K_MESSAGE) {
                if (encode_submessage(out, tag, item, field->message, depth + 1) < 0) {
                    return -1;
                }
            } else if (encode_string(out, field, item, 1) < 0) { /* repeated strings only */
                return -1;
            }
        }
        return 0;
    }
    switch (field->kind) {
    case K_MESSAGE:
        return encode_submessage(out, tag_of(field, 2), value, field->message, depth + 1);
    case K_STRING:
        return encode_string(out, field, value, always);
    case K_ID:
        return encode_id(out, field, value);
    case K_BYTES:
        return encode_bytes(out, field, value, always);
    case K_BOOL:
        if (value != Py_True && value != Py_False) {
            return -1;
        }
        if (value == Py_False && !always) {
            return 0;
        }
        if (reserve(out, 3) < 0) {
            return -1;
        }
        put_varint(out, tag_of(field, 0));
        out->data[out->length++] = value == Py_True;
        return 0;
    case K_DOUBLE:
        return encode_double(out, field, value, always);
    default:
        return encode_integer(out, field, value, always);
    }
}

/* The field a key names, by either spelling; -1 for an unknown key. */
static int find_field(const MessageDef *message, PyObject *key) {
    if (!PyUnicode_CheckExact(key)) {
        return -1;
    }
    Py_ssize_t size;
    const char *name = utf8_of(key, &size); /* a key with a lone surrogate names no field */
    if (name == NULL) {
        return -1;
    }
    for (int i = 0; i < message->count; i++) {
        const FieldDef *field = &message->fields[i];
        if ((field->json_name_length == size && memcmp(field->json_name, name, (size_t)size) == 0) ||
            (field->name_length == size && memcmp(field->name, name, (size_t)size) == 0)) {
            return i;
        }
    }
    return -1;
}

static int encode_message(Buffer *out, PyObject *object, int message, int depth) {
    if (!PyDict_CheckExact(object) || depth > MAX_DEPTH) {
        return -1;
    }
    const MessageDef *def = &MESSAGES[message];
    /* Keys come in any order: each field's value goes into its slot, and slots are written in
     * field-number order. */
    PyObject *slots[MAX_FIELDS] = {NULL};
    Py_ssize_t position = 0;
    PyObject *key, *value;
    int oneof_members = 0;
    while (PyDict_Next(object, &position, &key, &value)) {
        if (value == Py_None) {
            continue; /* null: not set */
        }
        int slot = find_field(def, key);
        if (slot < 0) {
            continue; /* unknown fields are ignored */
        }
        if (slots[slot] != NULL) {
            return -1; /* both spellings */
        }
        slots[slot] = value;
        if (def->fields[slot].flags & ONEOF && ++oneof_members > 1) {
            return -1;
        }
    }
    for (int i = 0; i < def->count; i++) {
        if (slots[i] != NULL && encode_field(out, &def->fields[i], slots[i], depth) < 0) {
            return -1;
        }
    }
    return 0;
}

/* ---- Module ------------------------------------------------------------------------------------- */

static PyObject *otlp_json_encode(PyObject *module, PyObject *document) {
    (void)module;
    Buffer out = {NULL, 0, 0};
    if (reserve(&out, 1) < 0 || encode_message(&out, document, M_REQUEST, 1) < 0) {
        free(out.data);
        if (PyErr_Occurred()) {
            PyErr_Clear(); /* the walk will meet the same problem, and say what it is */
        }
        Py_RETURN_NONE;
    }
    PyObject *encoded = PyBytes_FromStringAndSize(out.data, (Py_ssize_t)out.length);
    free(out.data);
    return encoded;
}

static PyObject *otlp_json_schema(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    PyObject *rows = PyList_New(0);
    if (rows == NULL) {
        return NULL;
    }
    for (int m = 0; m < M_COUNT; m++) {
        const MessageDef *def = &MESSAGES[m];
        for (int i = 0; i < def->count; i++) {
            const FieldDef *field = &def->fields[i];
            PyObject *row = Py_BuildValue(
                "(sissiOOs)", def->full_name, field->number, field->name, field->json_name,
                KIND_PROTO_TYPE[field->kind], field->flags & REPEATED ? Py_True : Py_False,
                field->flags & ONEOF ? Py_True : Py_False,
                field->kind == K_MESSAGE ? MESSAGES[field->message].full_name : "");
            if (row == NULL || PyList_Append(rows, row) < 0) {
                Py_XDECREF(row);
                Py_DECREF(rows);
                return NULL;
            }
            Py_DECREF(row);
        }
    }
    for (int e = 0; e < E_COUNT; e++) {
        for (int number = 0; number < ENUMS[e].count; number++) {
            PyObject *row = Py_BuildValue("(sissiOOs)", ENUMS[e].full_name, number, ENUMS[e].names[number], "",
                                          0, Py_False, Py_False, "");
            if (row == NULL || PyList_Append(rows, row) < 0) {
                Py_XDECREF(row);
                Py_DECREF(rows);
                return NULL;
            }
            Py_DECREF(row);
        }
    }
    return rows;
}

static PyMethodDef otlp_json_methods[] = {
    {"encode", otlp_json_encode, METH_O,
     "encode(document)\n--\n\n"
     "The canonical protobuf encoding of an ExportTraceServiceRequest given as the objects orjson.loads "
     "returns, or None for anything but plainly valid OTLP/JSON (the Python walk then decides)."},
    {"schema", otlp_json_schema, METH_NOARGS,
     "schema()\n--\n\n"
     "The fields this module knows, as (message full name, number, name, json name, descriptor type, "
     "repeated, oneof member, message type full name or ''), then the enums' values as (enum full name, "
     "number, name, '', 0, False, False, '')."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot otlp_json_slots[] = {{0, NULL}};

static struct PyModuleDef otlp_json_module = {
    PyModuleDef_HEAD_INIT, "distributor.receivers._otlp_json",
    "OTLP/JSON trace requests -> canonical protobuf, for the common case.",
    0, otlp_json_methods, otlp_json_slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__otlp_json(void) { return PyModuleDef_Init(&otlp_json_module); }
