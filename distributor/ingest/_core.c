/*
 * distributor.ingest._core: one native pass over an OTLP ExportTraceServiceRequest.
 *
 * scan(payload, resource_keys, span_keys, missing, max_attribute_bytes)
 *   -> (batch_span_counts, batch_sizes, series | None, long_attribute) | None
 * resource_keys/span_keys: per label, the attribute keys to try in order (tuples of bytes); series is
 * None when either is None.
 *
 * Why a hand-written walker and not a protobuf decode: the cost of FromString is building objects,
 * not validating. This walks the wire format once by a constant table of OTLP field numbers and wire
 * types, checks everything upb checks (lengths, varints, tags, UTF-8 of string fields, groups, the
 * depth limit), computes the size protobuf would re-encode each message to (the "canonical" size,
 * which is what usage is billed on), and finds the dimension values as slices of the payload. No
 * Python object is built while walking (the GIL is released for immutable payloads); Python objects
 * are made once per distinct series at the end.
 *
 * Rules taken from upb, the protobuf runtime installed (each is pinned by the differential test):
 * - a tag is a varint of at most 5 bytes and at most UINT32_MAX; field number 0 is invalid (but
 *   accepted inside an unknown group); wire
 *   types 6 and 7 are invalid; an end-group tag is valid only to close the innermost open group with
 *   the same number.
 * - a length is a varint of at most 5 bytes, below INT32_MAX, and must fit in its parent; other
 *   varints have at most 10 bytes (bits past 64 dropped).
 * - a known field number with a different wire type is an unknown field; unknown fields are kept
 *   verbatim, so they count in the canonical size byte for byte as received.
 * - nesting: at most 100 messages or groups below the request (upb's default depth limit).
 * - int32/enum re-encode as 10 bytes when negative after truncation to 32 bits, uint32 truncates,
 *   bool re-encodes as 1 byte; implicit-presence fields equal to zero/empty are not re-encoded,
 *   repeated elements and oneof members always are.
 * A singular field seen twice, or two oneof members, means protobuf merges or replaces values; those
 * encodings (no real encoder writes them) are validated but answered with None: the caller then uses
 * the reference decode.
 *
 * No global mutable state: all scratch memory belongs to one call, and is bounded by the payload size
 * (at most one record per span and per series, and a span takes at least 2 bytes).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h> /* every x86-64 has SSE2; elsewhere the portable word loop below is used */
#endif

#define MAX_DEPTH 100

/* ---- The OTLP schema as installed (opentelemetry-proto 1.45) ---------------------------------- */

enum { M_REQUEST, M_RESOURCE_SPANS, M_RESOURCE, M_KEY_VALUE, M_ANY_VALUE, M_ARRAY_VALUE, M_KV_LIST,
       M_ENTITY_REF, M_SCOPE_SPANS, M_SCOPE, M_SPAN, M_EVENT, M_LINK, M_STATUS, M_COUNT };

enum { K_UNKNOWN, K_INT32, K_UINT32, K_INT64, K_BOOL, K_FIXED32, K_FIXED64, K_STRING, K_BYTES,
       K_MESSAGE };

/* What the walker does with a field beyond validating and sizing it. */
enum { R_NONE, R_BATCH, R_RESOURCE, R_SPAN, R_ATTRIBUTE, R_KV_KEY, R_KV_VALUE, R_STRING_VALUE };

#define REPEATED 1
#define ONEOF 2 /* a member of AnyValue's oneof: re-encoded even when zero */

typedef struct {
    uint8_t kind, message, flags, role;
} Field;

/* Fields are found by their whole tag (number << 3 | wire type), so a known number with another wire
 * type finds an empty entry: an unknown field, as upb treats it. Every OTLP tag is below 136 (Span's
 * flags, field 16, is the largest). With the inline ASCII check below, this table (instead of indexing
 * by number and comparing wire types) took the bench request (1000 spans, 305 kB) from ~185 to ~125 us. */
#define TAGS 136
#define VARINT(number, kind, flags) [(number) << 3] = {K_##kind, 0, flags, R_NONE}
#define FIXED64(number, flags) [(number) << 3 | 1] = {K_FIXED64, 0, flags, R_NONE}
#define FIXED32(number) [(number) << 3 | 5] = {K_FIXED32, 0, 0, R_NONE}
#define LEN(number, kind, flags, role) [(number) << 3 | 2] = {K_##kind, 0, flags, role}
#define SUB(number, message, flags, role) [(number) << 3 | 2] = {K_MESSAGE, M_##message, flags, role}
#define ATTRIBUTES(number) SUB(number, KEY_VALUE, REPEATED, R_ATTRIBUTE)

static const Field SCHEMA[M_COUNT][TAGS] = {
    [M_REQUEST] = {SUB(1, RESOURCE_SPANS, REPEATED, R_BATCH)},
    [M_RESOURCE_SPANS] = {SUB(1, RESOURCE, 0, R_RESOURCE), SUB(2, SCOPE_SPANS, REPEATED, R_NONE),
                          LEN(3, STRING, 0, R_NONE)},
    [M_RESOURCE] = {ATTRIBUTES(1), VARINT(2, UINT32, 0), SUB(3, ENTITY_REF, REPEATED, R_NONE)},
    [M_KEY_VALUE] = {LEN(1, STRING, 0, R_KV_KEY), SUB(2, ANY_VALUE, 0, R_KV_VALUE), VARINT(3, INT32, 0)},
    [M_ANY_VALUE] = {LEN(1, STRING, ONEOF, R_STRING_VALUE), VARINT(2, BOOL, ONEOF), VARINT(3, INT64, ONEOF),
                     FIXED64(4, ONEOF), SUB(5, ARRAY_VALUE, ONEOF, R_NONE), SUB(6, KV_LIST, ONEOF, R_NONE),
                     LEN(7, BYTES, ONEOF, R_NONE), VARINT(8, INT32, ONEOF)},
    [M_ARRAY_VALUE] = {SUB(1, ANY_VALUE, REPEATED, R_NONE)},
    [M_KV_LIST] = {SUB(1, KEY_VALUE, REPEATED, R_NONE)},
    [M_ENTITY_REF] = {LEN(1, STRING, 0, R_NONE), LEN(2, STRING, 0, R_NONE), LEN(3, STRING, REPEATED, R_NONE),
                      LEN(4, STRING, REPEATED, R_NONE)},
    [M_SCOPE_SPANS] = {SUB(1, SCOPE, 0, R_NONE), SUB(2, SPAN, REPEATED, R_SPAN), LEN(3, STRING, 0, R_NONE)},
    [M_SCOPE] = {LEN(1, STRING, 0, R_NONE), LEN(2, STRING, 0, R_NONE), ATTRIBUTES(3), VARINT(4, UINT32, 0)},
    [M_SPAN] = {LEN(1, BYTES, 0, R_NONE), LEN(2, BYTES, 0, R_NONE), LEN(3, STRING, 0, R_NONE),
                LEN(4, BYTES, 0, R_NONE), LEN(5, STRING, 0, R_NONE), VARINT(6, INT32, 0), FIXED64(7, 0),
                FIXED64(8, 0), ATTRIBUTES(9), VARINT(10, UINT32, 0), SUB(11, EVENT, REPEATED, R_NONE),
                VARINT(12, UINT32, 0), SUB(13, LINK, REPEATED, R_NONE), VARINT(14, UINT32, 0),
                SUB(15, STATUS, 0, R_NONE), FIXED32(16)},
    [M_EVENT] = {FIXED64(1, 0), LEN(2, STRING, 0, R_NONE), ATTRIBUTES(3), VARINT(4, UINT32, 0)},
    [M_LINK] = {LEN(1, BYTES, 0, R_NONE), LEN(2, BYTES, 0, R_NONE), LEN(3, STRING, 0, R_NONE), ATTRIBUTES(4),
                VARINT(5, UINT32, 0), FIXED32(6)},
    [M_STATUS] = {LEN(2, STRING, 0, R_NONE), VARINT(3, INT32, 0)},
};

/* ---- Per-call state ----------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *ptr; /* NULL: absent (the label takes `missing`) */
    Py_ssize_t len;
} Slice;

typedef struct {
    Slice text;
    int label, rank; /* rank: position among the label's keys, earlier wins */
} Key;

typedef struct {
    uint64_t hash;
    int64_t bytes, spans;
} Series;

typedef struct {
    /* configuration */
    int labels, tracking;
    Key *resource_keys, *span_keys;
    int resource_key_count, span_key_count;
    uint64_t resource_key_lengths, span_key_lengths; /* see key_length_bits */
    Py_ssize_t max_attribute_bytes;
    const uint8_t *readable_end; /* the payload's end: strings may be read in 16 bytes up to it */
    /* outcome */
    int invalid, needs_reference, long_attribute, out_of_memory;
    /* per batch */
    int64_t *batch_counts, *batch_sizes;
    Py_ssize_t batch_count, batch_capacity;
    Slice *resource_values; /* [labels] */
    int *resource_ranks, *span_ranks;
    /* per span of the current batch: canonical size; and, only for the spans with an attribute that
     * could be a dimension (the "claimed" spans, few or none in most requests), their index and the
     * values their own attributes give */
    int64_t *span_sizes;
    Py_ssize_t span_count, span_size_capacity;
    Py_ssize_t *claimed_spans;
    Slice *claimed_values; /* [claimed_capacity * labels] */
    Py_ssize_t claimed_count, claimed_capacity;
    Slice *span_claim; /* the current span's values in claimed_values, NULL until claimed */
    /* series, in arrival order, found by an open-addressing table of indexes + 1 */
    Series *series;
    Slice *series_values; /* [series_capacity * labels] */
    Py_ssize_t series_count, series_capacity;
    uint32_t *table;
    size_t table_mask;
    Slice *scratch; /* [2 * labels]: a run of spans' values, and the next span's */
} Scan;

static int grow(void **array, Py_ssize_t *capacity, Py_ssize_t needed, size_t element) {
    if (needed <= *capacity) return 0;
    Py_ssize_t capacity_now = *capacity ? *capacity : 16;
    while (capacity_now < needed) capacity_now *= 2;
    void *grown = realloc(*array, (size_t)capacity_now * element);
    if (!grown) return -1;
    *array = grown;
    *capacity = capacity_now;
    return 0;
}

static inline int varint_size(uint64_t value) {
    /* 7 bits per byte, branch-free; unsigned, so the division is a shift (signed, gcc added a
     * rounding fix-up for negatives that cannot occur, in every field's size). */
    return (int)(((unsigned)(63 - __builtin_clzll(value | 1)) * 9 + 73) >> 6);
}

/* A varint of at most `limit` bytes; NULL when longer or cut short. */
static inline const uint8_t *read_varint(const uint8_t *p, const uint8_t *end, uint64_t *value, int limit) {
    if (p < end && *p < 0x80) {
        *value = *p;
        return p + 1;
    }
    uint64_t result = 0;
    for (int i = 0; i < limit && p < end; i++) {
        uint8_t byte = *p++;
        result |= (uint64_t)(byte & 0x7f) << (7 * i);
        if (byte < 0x80) {
            *value = result;
            return p;
        }
    }
    return NULL;
}

/* Strict UTF-8 (no overlongs, no surrogates, nothing past U+10FFFF), as upb checks string fields. */
static __attribute__((noinline)) int utf8_valid_from(const uint8_t *p, const uint8_t *end) {
    while (p < end) {
        uint8_t c = *p;
        Py_ssize_t left = end - p;
        if (c < 0x80) {
            p++;
        } else if (c < 0xC2) {
            return 0;
        } else if (c < 0xE0) {
            if (left < 2 || (p[1] & 0xC0) != 0x80) return 0;
            p += 2;
        } else if (c < 0xF0) {
            if (left < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
            if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] >= 0xA0)) return 0;
            p += 3;
        } else if (c < 0xF5) {
            if (left < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
            if ((c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] >= 0x90)) return 0;
            p += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

/* Strings are mostly short and ASCII: 8 bytes are tested at a time, inline, and only a string with a
 * byte >= 0x80 takes the full check. */
static inline int utf8_valid(const uint8_t *p, const uint8_t *end) {
    const uint8_t *start = p;
    uint64_t word;
    for (; end - p >= 8; p += 8) {
        memcpy(&word, p, 8);
        if (word & 0x8080808080808080ULL) return utf8_valid_from(p, end);
    }
    if (end - start >= 8) { /* the last 8 bytes, overlapping what was tested */
        memcpy(&word, end - 8, 8);
        return (word & 0x8080808080808080ULL) ? utf8_valid_from(p, end) : 1;
    }
    for (; p < end; p++)
        if (*p >= 0x80) return utf8_valid_from(p, end);
    return 1;
}

/* The same, for a string that lies inside a buffer ending at `readable`. Nearly every OTLP string
 * (keys, names, short values) is at most 16 bytes and far from the payload's end, so one 16-byte load,
 * masked to the string's length, tests it without a loop or a call: the (c) bench scan went from
 * ~165 to ~150 us (utf8_valid was not inlined at its three call sites and was 7% of the profile). The
 * bytes read past the string are inside the payload and ignored. */
static inline int utf8_valid_in(const uint8_t *p, const uint8_t *end, const uint8_t *readable) {
    Py_ssize_t len = end - p;
    if (__builtin_expect(len <= 16 && readable - p >= 16, 1)) {
#ifdef __SSE2__
        unsigned high = (unsigned)_mm_movemask_epi8(_mm_loadu_si128((const __m128i *)(const void *)p));
        if (!(high & ((1u << len) - 1))) return 1;
#else
        uint64_t low, high;
        memcpy(&low, p, 8);
        memcpy(&high, p + 8, 8);
        uint64_t low_mask = len >= 8 ? ~0ULL : (1ULL << (8 * len)) - 1;
        uint64_t high_mask = len >= 16 ? ~0ULL : len > 8 ? (1ULL << (8 * (len - 8))) - 1 : 0;
        if (!(((low & low_mask) | (high & high_mask)) & 0x8080808080808080ULL)) return 1;
#endif
        return utf8_valid_from(p, end);
    }
    return utf8_valid(p, end);
}

static const uint8_t *skip_group(Scan *s, const uint8_t *p, const uint8_t *end, uint32_t number, int depth);

/* Skips the value of an unknown field whose tag was just read. NULL when invalid. */
static const uint8_t *skip_value(Scan *s, const uint8_t *p, const uint8_t *end, uint32_t number,
                                 uint32_t wire, int depth) {
    uint64_t value;
    switch (wire) {
    case 0:
        return read_varint(p, end, &value, 10);
    case 1:
        return end - p >= 8 ? p + 8 : NULL;
    case 5:
        return end - p >= 4 ? p + 4 : NULL;
    case 2:
        p = read_varint(p, end, &value, 5);
        if (!p || value >= INT32_MAX || value > (uint64_t)(end - p)) return NULL;
        return p + value;
    case 3:
        return skip_group(s, p, end, number, depth);
    default: /* 4 outside its group, 6, 7 */
        return NULL;
    }
}

static inline const uint8_t *read_tag(const uint8_t *p, const uint8_t *end, uint32_t *tag) {
    uint64_t value;
    p = read_varint(p, end, &value, 5);
    if (!p || value > UINT32_MAX) return NULL;
    *tag = (uint32_t)value;
    return p;
}

/* An unknown group: every field inside is unknown; it counts as a nesting level like a message.
 * upb accepts field number 0 inside a group (though not in a message), and so does this. */
static const uint8_t *skip_group(Scan *s, const uint8_t *p, const uint8_t *end, uint32_t number, int depth) {
    if (depth == 0) return NULL;
    while (p < end) {
        uint32_t tag;
        p = read_tag(p, end, &tag);
        if (!p) return NULL;
        if ((tag & 7) == 4) return (tag >> 3) == number ? p : NULL;
        p = skip_value(s, p, end, tag >> 3, tag & 7, depth - 1);
        if (!p) return NULL;
    }
    return NULL; /* the message or payload ended inside the group */
}

/* What a KeyValue tells its attribute list. */
typedef struct {
    Slice key, string_value; /* string_value.ptr NULL: the value holds no string */
} Attribute;

/* An attribute of a resource or span names a dimension value when it holds a non-empty string and
 * its key is one of the label's keys; per label the earliest-ranked key wins, and per key the first
 * occurrence (hence `<`). Keys are a handful, so a length check then memcmp beats hashing. */
static inline void match_attribute(const Attribute *attribute, const Key *keys, int key_count,
                                   uint64_t key_lengths, int *ranks, Slice *values) {
    if (!attribute->string_value.ptr || attribute->string_value.len == 0) return;
    /* Most attributes are not dimensions, and their key's length already says so: one bit test
     * instead of a pass over the keys (see key_length_bits). */
    if (!((key_lengths >> (attribute->key.len & 63)) & 1)) return;
    for (int i = 0; i < key_count; i++) {
        const Key *key = &keys[i];
        if (key->text.len == attribute->key.len && key->rank < ranks[key->label] &&
            memcmp(key->text.ptr, attribute->key.ptr, (size_t)key->text.len) == 0) {
            ranks[key->label] = key->rank;
            values[key->label] = attribute->string_value;
        }
    }
}

static int64_t scan_message(Scan *s, int type, const uint8_t *p, const uint8_t *end, int depth, void *out);

/* A KeyValue as every encoder writes it: key, then a value holding one string, int, bool or double,
 * with one-byte lengths. Half of a typical span's fields are in these two small messages, so they are
 * checked here without the two generic calls: the bench request went from ~260 to ~185 us. Always
 * inlined (into scan_span and the generic walk): called, its Attribute went through memory and back on
 * every span attribute; inlined, the (b) bench scan went from ~86 to ~81 us and the no-dimension scan
 * from ~82 to ~74 us (interleaved builds, medians).
 * Any other shape (including an invalid one) is left to the generic walk, from the start: this path
 * has no effect until it succeeds. */
static inline __attribute__((always_inline)) int64_t scan_key_value(Scan *s, const uint8_t *p, const uint8_t *end, int depth, Attribute *out) {
    const uint8_t *start = p;
    if (depth == 0 || end - p < 4 || p[0] != 0x0a || p[1] >= 0x80 || p[1] > end - p - 4) goto generic;
    const uint8_t *key = p + 2, *key_end = key + p[1];
    if (key_end[0] != 0x12 || key_end[1] >= 0x80 || key_end[1] != end - key_end - 2) goto generic;
    const uint8_t *value = key_end + 2;
    int64_t value_size;
    Slice string_value = {NULL, 0};
    if (value == end) {
        value_size = 0;
    } else {
        uint64_t number;
        switch (value[0]) {
        case 0x0a: /* string_value */
            if (end - value < 2 || value[1] != end - value - 2 || !utf8_valid_in(value + 2, end, s->readable_end)) goto generic;
            string_value = (Slice){value + 2, end - value - 2};
            value_size = end - value;
            break;
        case 0x10: /* bool_value */
        case 0x18: /* int_value */
            if (read_varint(value + 1, end, &number, 10) != end) goto generic;
            value_size = 1 + (value[0] == 0x10 ? 1 : varint_size(number));
            break;
        case 0x21: /* double_value */
            if (end - value != 9) goto generic;
            value_size = 9;
            break;
        default:
            goto generic;
        }
    }
    if (!utf8_valid_in(key, key_end, s->readable_end)) goto generic;
    if (out) {
        out->key = (Slice){key, key_end - key};
        out->string_value = string_value;
    }
    return (key_end > key ? 2 + (key_end - key) : 0) + 1 + varint_size((uint64_t)value_size) + value_size;
generic:
    return scan_message(s, M_KEY_VALUE, start, end, depth, out);
}

/* A length prefix as upb reads it: at most 5 bytes, below INT32_MAX, inside the message. NULL when
 * not (the caller's generic walk then decides whether that is invalid). */
static inline const uint8_t *read_length(const uint8_t *p, const uint8_t *end, uint64_t *length) {
    if (p < end && *p < 0x80) {
        *length = *p++;
    } else if (!(p = read_varint(p, end, length, 5)) || *length >= INT32_MAX) {
        return NULL;
    }
    return *length <= (uint64_t)(end - p) ? p : NULL;
}

/* The current span gets its own values only when one of its attributes may be a dimension (a non-empty
 * string whose key length is a span key's), so a span without one costs no setup here, and a batch
 * without such spans is one series in end_batch without a pass over its spans. In the (b) bench
 * request no span attribute passes the length test: with a setup for every span and end_batch's pass,
 * its scan took ~90 us; claimed lazily, ~86 us (interleaved builds, medians). */
static Slice *claim_span(Scan *s) {
    if (s->span_claim) return s->span_claim;
    Py_ssize_t at = s->claimed_count, capacity = s->claimed_capacity;
    if (grow((void **)&s->claimed_spans, &capacity, at + 1, sizeof(Py_ssize_t)) ||
        grow((void **)&s->claimed_values, &s->claimed_capacity, at + 1, sizeof(Slice) * (size_t)s->labels)) {
        s->out_of_memory = 1;
        return NULL;
    }
    s->claimed_spans[at] = s->span_count;
    s->claimed_count++;
    s->span_claim = &s->claimed_values[at * s->labels];
    for (int i = 0; i < s->labels; i++) {
        s->span_claim[i].ptr = NULL;
        s->span_ranks[i] = INT_MAX;
    }
    return s->span_claim;
}

/* A Span as every encoder writes it: each known field with its own one-byte tag (flags, field 16, with
 * its two-byte one), singular fields once. Spans are most of a request's bytes, and the generic walk
 * pays for its table lookup, role switches and flag tests on every one of their ~15 fields; a switch
 * on the tag byte instead took the (b) bench scan from ~110 to ~90 us and the no-dimension scan from
 * ~98 to ~79 us (interleaved builds, medians).
 * Anything else (an unknown field, another wire type, a repeated singular field, a length not as
 * upb reads it) restarts the generic walk from the span's start. What this path did before that is
 * harmless to repeat: a claimed span keeps its values (claim_span does not reset them), attribute
 * matches keep the first occurrence per rank (so the same slices win again), and long_attribute,
 * invalid, needs_reference and out_of_memory only ever get set. */
static int64_t scan_span(Scan *s, const uint8_t *p, const uint8_t *end, int depth, int tracking) {
    const uint8_t *start = p;
    int64_t size = 0;
    uint32_t seen = 0;
    if (depth == 0) goto generic; /* a span with attributes, events or links is then invalid */
    while (p < end) {
        uint32_t tag = *p++, number = tag >> 3;
        uint64_t value;
        if (tag == 0x85) { /* flags: fixed32, field 16, tag 0x85 0x01 */
            if (p >= end || *p != 0x01) goto generic;
            p++;
            number = 16;
        }
        if (number != 9 && number != 11 && number != 13) { /* singular */
            if (seen & (1u << number)) goto generic;
            seen |= 1u << number;
        }
        switch (tag) {
        case 0x0a: /* trace_id, span_id, parent_span_id: bytes */
        case 0x12:
        case 0x22:
        case 0x1a: /* trace_state, name: strings */
        case 0x2a: {
            if (!(p = read_length(p, end, &value))) goto generic;
            const uint8_t *body = p;
            p += value;
            if ((tag == 0x1a || tag == 0x2a) && !utf8_valid_in(body, p, s->readable_end)) goto generic;
            if (value) size += 1 + varint_size(value) + (int64_t)value;
            break;
        }
        case 0x30: /* kind: enum (int32) */
        case 0x50: /* dropped_attributes_count, dropped_events_count, dropped_links_count: uint32 */
        case 0x60:
        case 0x70:
            if (p < end && *p < 0x80) value = *p++;
            else if (!(p = read_varint(p, end, &value, 10))) goto generic;
            value = tag == 0x30 ? (uint64_t)(int64_t)(int32_t)(uint32_t)value : (uint32_t)value;
            if (value) size += 1 + varint_size(value);
            break;
        case 0x39: /* start_time_unix_nano, end_time_unix_nano: fixed64 */
        case 0x41:
            if (end - p < 8) goto generic;
            memcpy(&value, p, 8);
            p += 8;
            if (value) size += 9;
            break;
        case 0x85: { /* flags: fixed32 */
            uint32_t flags;
            if (end - p < 4) goto generic;
            memcpy(&flags, p, 4);
            p += 4;
            if (flags) size += 6;
            break;
        }
        case 0x4a: { /* attributes */
            if (!(p = read_length(p, end, &value))) goto generic;
            Attribute attribute = {{(const uint8_t *)"", 0}, {NULL, 0}};
            int64_t body_size = scan_key_value(s, p, p + value, depth - 1, &attribute);
            if (body_size < 0) return -1;
            p += value;
            if (s->max_attribute_bytes > 0 &&
                (attribute.key.len > s->max_attribute_bytes ||
                 (attribute.string_value.ptr && attribute.string_value.len > s->max_attribute_bytes)))
                s->long_attribute = 1;
            if (tracking && attribute.string_value.len > 0 &&
                ((s->span_key_lengths >> (attribute.key.len & 63)) & 1)) {
                if (!claim_span(s)) return -1;
                match_attribute(&attribute, s->span_keys, s->span_key_count, s->span_key_lengths, s->span_ranks,
                                s->span_claim);
            }
            size += 1 + varint_size((uint64_t)body_size) + body_size;
            break;
        }
        case 0x5a: /* events, links, status: the generic walk of their messages */
        case 0x6a:
        case 0x7a: {
            if (!(p = read_length(p, end, &value))) goto generic;
            int64_t body_size = scan_message(s, tag == 0x5a ? M_EVENT : tag == 0x6a ? M_LINK : M_STATUS, p,
                                             p + value, depth - 1, NULL);
            if (body_size < 0) return -1;
            p += value;
            size += 1 + varint_size((uint64_t)body_size) + body_size;
            break;
        }
        default:
            goto generic;
        }
    }
    return size;
generic:
    if (tracking && !claim_span(s)) return -1;
    return scan_message(s, M_SPAN, start, end, depth, tracking ? s->span_claim : NULL);
}

static int begin_batch(Scan *s) {
    s->span_count = 0;
    s->claimed_count = 0;
    for (int i = 0; i < s->labels; i++) {
        s->resource_values[i].ptr = NULL;
        s->resource_ranks[i] = INT_MAX;
    }
    return 0;
}

/* Up to 8 bytes of a value as one word, without reading past it (values are slices of the payload,
 * which may end right after one): 8 or more bytes are read as overlapping words by the caller, 4 to 7
 * as two overlapping halves, 1 to 3 as their first, middle and last bytes. */
static inline uint64_t short_word(const uint8_t *p, Py_ssize_t len) {
    uint32_t low, high;
    if (len >= 4) {
        memcpy(&low, p, 4);
        memcpy(&high, p + len - 4, 4);
        return (uint64_t)high << 32 | low;
    }
    if (len > 0) return (uint64_t)p[0] << 16 | (uint64_t)p[len / 2] << 8 | p[len - 1];
    return 0;
}

static inline uint64_t mix(uint64_t hash, uint64_t word) {
    hash = (hash ^ word) * 0x9E3779B97F4A7C15ULL;
    return hash ^ (hash >> 32);
}

/* A word at a time with a multiply-xorshift mix, each value's length mixed in (so "ab","c" and "a","bc"
 * differ, and an absent value, length -1, differs from an empty one). FNV-1a a byte at a time was
 * ~10% of the (c) bench scan: one dependent multiply per byte. */
static uint64_t hash_values(const Slice *values, int labels) {
    uint64_t hash = 0x243F6A8885A308D3ULL;
    for (int i = 0; i < labels; i++) {
        const uint8_t *p = values[i].ptr;
        Py_ssize_t len = p ? values[i].len : -1;
        if (len > 8) {
            uint64_t word;
            Py_ssize_t at = 0;
            for (; len - at > 8; at += 8) {
                memcpy(&word, p + at, 8);
                hash = mix(hash, word);
            }
            memcpy(&word, p + len - 8, 8); /* the last 8, overlapping */
            hash = mix(hash, word);
        } else if (len > 0) {
            hash = mix(hash, short_word(p, len));
        }
        hash = mix(hash, (uint64_t)len);
    }
    return hash ^ (hash >> 29);
}

static int same_values(const Slice *a, const Slice *b, int labels) {
    for (int i = 0; i < labels; i++) {
        if (!a[i].ptr != !b[i].ptr) return 0;
        if (a[i].ptr && (a[i].len != b[i].len || memcmp(a[i].ptr, b[i].ptr, (size_t)a[i].len) != 0)) return 0;
    }
    return 1;
}

static int add_to_series(Scan *s, const Slice *values, int64_t bytes, int64_t spans) {
    uint64_t hash = hash_values(values, s->labels);
    size_t slot = (size_t)hash & s->table_mask;
    while (s->table[slot]) {
        Series *series = &s->series[s->table[slot] - 1];
        if (series->hash == hash &&
            same_values(&s->series_values[(s->table[slot] - 1) * (size_t)s->labels], values, s->labels)) {
            series->bytes += bytes;
            series->spans += spans;
            return 0;
        }
        slot = (slot + 1) & s->table_mask;
    }
    Py_ssize_t index = s->series_count;
    Py_ssize_t capacity = s->series_capacity;
    if (grow((void **)&s->series, &capacity, index + 1, sizeof(Series)) ||
        grow((void **)&s->series_values, &s->series_capacity, index + 1, sizeof(Slice) * (size_t)s->labels))
        return -1;
    s->series[index] = (Series){hash, bytes, spans};
    memcpy(&s->series_values[index * s->labels], values, sizeof(Slice) * (size_t)s->labels);
    s->series_count++;
    s->table[slot] = (uint32_t)index + 1;
    if ((size_t)s->series_count * 2 > s->table_mask) { /* keep the load under 1/2: rehash */
        size_t mask = s->table_mask * 2 + 1;
        uint32_t *table = calloc(mask + 1, sizeof(uint32_t));
        if (!table) return -1;
        for (Py_ssize_t i = 0; i < s->series_count; i++) {
            size_t at = (size_t)s->series[i].hash & mask;
            while (table[at]) at = (at + 1) & mask;
            table[at] = (uint32_t)i + 1;
        }
        free(s->table);
        s->table = table;
        s->table_mask = mask;
    }
    return 0;
}

static int64_t round_half_even(int64_t numerator, int64_t denominator) {
    int64_t quotient = numerator / denominator, remainder = numerator % denominator;
    if (remainder < 0) quotient--, remainder += denominator; /* floor division, as Python's divmod */
    if (2 * remainder > denominator || (2 * remainder == denominator && (quotient & 1))) quotient++;
    return quotient;
}

/* A ResourceSpans ended: its size is known, so its non-span bytes can be shared among its spans. */
static int end_batch(Scan *s, int64_t size) {
    Py_ssize_t at = s->batch_count;
    Py_ssize_t capacity = s->batch_capacity;
    if (grow((void **)&s->batch_counts, &capacity, at + 1, sizeof(int64_t)) ||
        grow((void **)&s->batch_sizes, &s->batch_capacity, at + 1, sizeof(int64_t)))
        return -1;
    s->batch_counts[at] = s->span_count;
    s->batch_sizes[at] = size;
    s->batch_count++;
    int64_t spans = s->span_count;
    if (!s->tracking || spans == 0 || s->needs_reference) return 0;
    /* No span can have values of its own (no span keys), or none had an attribute that could be one:
     * every span has the resource's values, and the batch is one series. */
    if (s->span_key_count == 0 || s->claimed_count == 0) return add_to_series(s, s->resource_values, size, spans);
    int64_t span_bytes = 0;
    for (Py_ssize_t i = 0; i < spans; i++) span_bytes += s->span_sizes[i] + 1 + varint_size((uint64_t)s->span_sizes[i]);
    int64_t shared = size - span_bytes;
    int64_t portion = round_half_even(shared, spans);
    /* Consecutive spans whose values are the same slices (most often: none of their own, so the
     * resource's) are one run, added to its series once: in the (b) bench request every batch is one
     * run of 100 spans, and the per-span lookups were ~10% of its scan. Slices of the same bytes at
     * different places still compare equal in add_to_series; this only saves the lookups. */
    Slice *run = s->scratch, *next = s->scratch + s->labels;
    int64_t run_bytes = shared - portion * spans, run_spans = 0; /* the remainder goes to the first */
    Py_ssize_t claimed = 0;
    for (Py_ssize_t i = 0; i < spans; i++) {
        const Slice *own = NULL; /* unclaimed: the resource's values */
        if (claimed < s->claimed_count && s->claimed_spans[claimed] == i) own = &s->claimed_values[claimed++ * s->labels];
        int same = run_spans > 0;
        for (int label = 0; label < s->labels; label++) {
            next[label] = own && own[label].ptr ? own[label] : s->resource_values[label];
            same &= next[label].ptr == run[label].ptr && next[label].len == run[label].len;
        }
        if (!same && run_spans) {
            if (add_to_series(s, run, run_bytes, run_spans)) return -1;
            run_bytes = run_spans = 0;
        }
        if (!same) {
            Slice *swap = run;
            run = next;
            next = swap;
        }
        run_bytes += s->span_sizes[i] + 1 + varint_size((uint64_t)s->span_sizes[i]) + portion;
        run_spans++;
    }
    return add_to_series(s, run, run_bytes, run_spans);
}

/* Validates one message and returns the size protobuf re-encodes it to, or -1 (s->invalid or
 * s->out_of_memory set). `depth` is how many more levels may nest below this message. `out` is what
 * the parent wants from it: an Attribute for a KeyValue, the string Slice for an AnyValue. */
static int64_t scan_message(Scan *s, int type, const uint8_t *p, const uint8_t *end, int depth, void *out) {
    const Field *fields = SCHEMA[type];
    int64_t size = 0;
    uint32_t seen = 0; /* singular fields met so far: a second one means a merge */
    int oneof_seen = 0;
    while (p < end) {
        const uint8_t *field_start = p;
        uint32_t tag;
        if (*p < 0x80) {
            tag = *p++;
        } else if (!(p = read_tag(p, end, &tag))) {
            goto invalid;
        }
        uint32_t number = tag >> 3;
        const Field *field = &fields[tag < TAGS ? tag : 0];
        if (field->kind == K_UNKNOWN) {
            if (number == 0 || !(p = skip_value(s, p, end, number, tag & 7, depth))) goto invalid;
            size += p - field_start; /* kept verbatim */
            continue;
        }
        if (!(field->flags & REPEATED)) {
            if (seen & (1u << number)) s->needs_reference = 1;
            seen |= 1u << number;
        }
        if (field->flags & ONEOF) {
            if (oneof_seen) s->needs_reference = 1;
            oneof_seen = 1;
        }
        int present = (field->flags & (ONEOF | REPEATED)) != 0;
        int tag_size = number < 16 ? 1 : 2;
        uint64_t value;
        switch (field->kind) {
        case K_INT32:
        case K_UINT32:
        case K_INT64:
        case K_BOOL:
            if (!(p = read_varint(p, end, &value, 10))) goto invalid;
            if (field->kind == K_INT32) value = (uint64_t)(int64_t)(int32_t)(uint32_t)value;
            else if (field->kind == K_UINT32) value = (uint32_t)value;
            else if (field->kind == K_BOOL) value = value != 0;
            if (value || present) size += tag_size + varint_size(value);
            break;
        case K_FIXED32:
        case K_FIXED64: {
            int width = field->kind == K_FIXED32 ? 4 : 8;
            if (end - p < width) goto invalid;
            value = 0;
            memcpy(&value, p, (size_t)width); /* only zero or not matters: byte order does not */
            p += width;
            if (value || present) size += tag_size + width;
            break;
        }
        default: { /* length-delimited: string, bytes, message */
            if (p < end && *p < 0x80) {
                value = *p++;
            } else if (!(p = read_varint(p, end, &value, 5)) || value >= INT32_MAX) {
                goto invalid;
            }
            if (value > (uint64_t)(end - p)) goto invalid;
            const uint8_t *body = p, *body_end = p + value;
            p = body_end;
            int64_t body_size = (int64_t)value;
            if (field->kind == K_STRING) {
                if (!utf8_valid_in(body, body_end, s->readable_end)) goto invalid;
                if (!out) {
                } else if (field->role == R_KV_KEY) {
                    ((Attribute *)out)->key = (Slice){body, body_size};
                } else if (field->role == R_STRING_VALUE) {
                    *(Slice *)out = (Slice){body, body_size};
                }
            } else if (field->kind == K_MESSAGE) {
                if (depth == 0) goto invalid;
                Attribute attribute = {{(const uint8_t *)"", 0}, {NULL, 0}};
                void *child_out = NULL;
                switch (field->role) {
                case R_BATCH:
                    begin_batch(s);
                    break;
                case R_RESOURCE:
                    child_out = s->resource_values;
                    break;
                case R_SPAN:
                    if (s->labels && s->span_key_count) {
                        if (grow((void **)&s->span_sizes, &s->span_size_capacity, s->span_count + 1, sizeof(int64_t)))
                            goto out_of_memory;
                        s->span_claim = NULL;
                        child_out = s; /* only tells scan_span to track: see claim_span */
                    }
                    break;
                case R_ATTRIBUTE:
                    child_out = &attribute;
                    break;
                case R_KV_VALUE:
                    child_out = out ? &((Attribute *)out)->string_value : NULL;
                    break;
                }
                body_size = field->message == M_KEY_VALUE ? scan_key_value(s, body, body_end, depth - 1, child_out)
                            : field->message == M_SPAN    ? scan_span(s, body, body_end, depth - 1, child_out != NULL)
                                                          : scan_message(s, field->message, body, body_end, depth - 1, child_out);
                if (body_size < 0) return -1;
                switch (field->role) {
                case R_BATCH:
                    if (end_batch(s, body_size)) goto out_of_memory;
                    break;
                case R_SPAN:
                    if (child_out) s->span_sizes[s->span_count] = body_size;
                    s->span_count++;
                    break;
                case R_ATTRIBUTE:
                    if (s->max_attribute_bytes > 0 &&
                        (attribute.key.len > s->max_attribute_bytes ||
                         (attribute.string_value.ptr && attribute.string_value.len > s->max_attribute_bytes)))
                        s->long_attribute = 1;
                    if (type == M_RESOURCE && s->labels && out)
                        match_attribute(&attribute, s->resource_keys, s->resource_key_count,
                                        s->resource_key_lengths, s->resource_ranks, (Slice *)out);
                    else if (type == M_SPAN && out)
                        match_attribute(&attribute, s->span_keys, s->span_key_count, s->span_key_lengths,
                                        s->span_ranks, (Slice *)out);
                    break;
                }
                size += tag_size + varint_size((uint64_t)body_size) + body_size;
                break;
            }
            if (field->kind != K_MESSAGE && (body_size || present))
                size += tag_size + varint_size((uint64_t)body_size) + body_size;
        }
        }
    }
    return size;
invalid:
    s->invalid = 1;
    return -1;
out_of_memory:
    s->out_of_memory = 1;
    return -1;
}

/* ---- The Python function ------------------------------------------------------------------------ */

/* ((b"key", ...), ...) per label -> a flat list of keys carrying their label and rank. */
static int compile_keys(PyObject *spec, int labels, Key **keys, int *count) {
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) != labels) {
        PyErr_SetString(PyExc_TypeError, "span_keys must be a tuple as long as resource_keys");
        return -1;
    }
    int total = 0;
    for (int label = 0; label < labels; label++) {
        PyObject *label_keys = PyTuple_GET_ITEM(spec, label);
        if (!PyTuple_Check(label_keys)) {
            PyErr_SetString(PyExc_TypeError, "each label's keys must be a tuple of bytes");
            return -1;
        }
        total += (int)PyTuple_GET_SIZE(label_keys);
    }
    *keys = malloc(sizeof(Key) * (size_t)(total + 1));
    if (!*keys) {
        PyErr_NoMemory();
        return -1;
    }
    *count = 0;
    for (int label = 0; label < labels; label++) {
        PyObject *label_keys = PyTuple_GET_ITEM(spec, label);
        for (Py_ssize_t rank = 0; rank < PyTuple_GET_SIZE(label_keys); rank++) {
            PyObject *key = PyTuple_GET_ITEM(label_keys, rank);
            if (!PyBytes_Check(key)) {
                PyErr_SetString(PyExc_TypeError, "attribute keys must be bytes");
                return -1;
            }
            (*keys)[(*count)++] = (Key){{(const uint8_t *)PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key)},
                                        label, (int)rank};
        }
    }
    return 0;
}

/* Bit (length mod 64) set for every key's length: an attribute whose key length has no bit cannot
 * match (lengths that agree mod 64 only cost the full comparison). */
static uint64_t key_length_bits(const Key *keys, int count) {
    uint64_t bits = 0;
    for (int i = 0; i < count; i++) bits |= 1ULL << (keys[i].text.len & 63);
    return bits;
}

static PyObject *int64_list(const int64_t *values, Py_ssize_t count) {
    PyObject *list = PyList_New(count);
    for (Py_ssize_t i = 0; list && i < count; i++) {
        PyObject *item = PyLong_FromLongLong(values[i]);
        if (!item) Py_CLEAR(list);
        else PyList_SET_ITEM(list, i, item);
    }
    return list;
}

static PyObject *series_dict(Scan *s, PyObject *missing) {
    PyObject *dict = PyDict_New();
    for (Py_ssize_t i = 0; dict && i < s->series_count; i++) {
        PyObject *values = PyTuple_New(s->labels);
        PyObject *usage = values ? Py_BuildValue("(LL)", (long long)s->series[i].bytes,
                                                 (long long)s->series[i].spans) : NULL;
        for (int label = 0; usage && label < s->labels; label++) {
            const Slice *value = &s->series_values[i * s->labels + label];
            PyObject *text = value->ptr ? PyUnicode_DecodeUTF8((const char *)value->ptr, value->len, "strict")
                                        : Py_NewRef(missing);
            if (!text) Py_CLEAR(usage);
            else PyTuple_SET_ITEM(values, label, text);
        }
        if (!usage || PyDict_SetItem(dict, values, usage) < 0) Py_CLEAR(dict);
        Py_XDECREF(values);
        Py_XDECREF(usage);
    }
    return dict;
}

static void release(Scan *s) {
    free(s->resource_keys);
    free(s->span_keys);
    free(s->batch_counts);
    free(s->batch_sizes);
    free(s->resource_values);
    free(s->resource_ranks);
    free(s->span_ranks);
    free(s->span_sizes);
    free(s->claimed_spans);
    free(s->claimed_values);
    free(s->series);
    free(s->series_values);
    free(s->table);
    free(s->scratch);
}

static PyObject *core_scan(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "scan(payload, resource_keys, span_keys, missing, max_attribute_bytes)");
        return NULL;
    }
    PyObject *missing = args[3];
    if (!PyUnicode_Check(missing)) {
        PyErr_SetString(PyExc_TypeError, "missing must be a str");
        return NULL;
    }
    Py_ssize_t max_attribute_bytes = PyLong_AsSsize_t(args[4]);
    if (max_attribute_bytes == -1 && PyErr_Occurred()) return NULL;
    Scan s;
    memset(&s, 0, sizeof s);
    s.max_attribute_bytes = max_attribute_bytes;
    PyObject *result = NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    s.tracking = args[1] != Py_None && args[2] != Py_None; /* series need both, as in the reference */
    if (s.tracking) {
        if (!PyTuple_Check(args[1])) {
            PyErr_SetString(PyExc_TypeError, "resource_keys must be a tuple or None");
            goto done;
        }
        s.labels = (int)PyTuple_GET_SIZE(args[1]);
        if (compile_keys(args[1], s.labels, &s.resource_keys, &s.resource_key_count) < 0) goto done;
        if (compile_keys(args[2], s.labels, &s.span_keys, &s.span_key_count) < 0) goto done;
        s.resource_key_lengths = key_length_bits(s.resource_keys, s.resource_key_count);
        s.span_key_lengths = key_length_bits(s.span_keys, s.span_key_count);
    }
    size_t labels = (size_t)s.labels + 1;
    s.resource_values = calloc(labels, sizeof(Slice));
    s.scratch = calloc(2 * labels, sizeof(Slice));
    s.resource_ranks = calloc(labels, sizeof(int));
    s.span_ranks = calloc(labels, sizeof(int));
    s.table_mask = 15;
    s.table = calloc(s.table_mask + 1, sizeof(uint32_t));
    if (!s.resource_values || !s.scratch || !s.resource_ranks || !s.span_ranks || !s.table) {
        PyErr_NoMemory();
        goto done;
    }
    const uint8_t *payload = view.buf;
    s.readable_end = payload + view.len;
    if (PyBytes_Check(args[0])) { /* immutable: nothing can change it while the GIL is released */
        Py_BEGIN_ALLOW_THREADS
        scan_message(&s, M_REQUEST, payload, payload + view.len, MAX_DEPTH, NULL);
        Py_END_ALLOW_THREADS
    } else {
        scan_message(&s, M_REQUEST, payload, payload + view.len, MAX_DEPTH, NULL);
    }
    if (s.out_of_memory) {
        PyErr_NoMemory();
        goto done;
    }
    if (s.invalid) {
        PyErr_SetString(PyExc_ValueError, "not a valid ExportTraceServiceRequest");
        goto done;
    }
    if (s.needs_reference) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    PyObject *counts = int64_list(s.batch_counts, s.batch_count);
    PyObject *sizes = counts ? int64_list(s.batch_sizes, s.batch_count) : NULL;
    PyObject *series = !sizes ? NULL : s.tracking ? series_dict(&s, missing) : Py_NewRef(Py_None);
    if (series) result = PyTuple_Pack(4, counts, sizes, series, s.long_attribute ? Py_True : Py_False);
    Py_XDECREF(counts);
    Py_XDECREF(sizes);
    Py_XDECREF(series);
done:
    PyBuffer_Release(&view);
    release(&s);
    return result;
}

#ifdef CORE_FUZZ_COVERAGE
/* Fuzzing builds only (`make fuzz`, never installed). gcc has no libFuzzer instrumentation, but its
 * -fsanitize-coverage=trace-pc calls __sanitizer_cov_trace_pc in every basic block: each call site is
 * hashed to one of these 8-bit counters, which libFuzzer (inside atheris) reads as coverage. Hidden, so
 * libFuzzer's own (empty) function of that name cannot take the calls. atheris keeps its libFuzzer out
 * of the global namespace, so the harness passes the addresses of its two registration functions. */
#define FUZZ_COUNTERS 65536
static uint8_t fuzz_counters[FUZZ_COUNTERS];
static uintptr_t fuzz_pcs[2 * FUZZ_COUNTERS];

__attribute__((visibility("hidden"), no_sanitize_coverage)) void __sanitizer_cov_trace_pc(void) {
    uint64_t pc = (uint64_t)(uintptr_t)__builtin_return_address(0);
    fuzz_counters[(pc * 0x9E3779B97F4A7C15ULL) >> 48]++;
}

static PyObject *core_fuzz_coverage(PyObject *module, PyObject *args) {
    (void)module;
    unsigned long long counters_init, pcs_init;
    if (!PyArg_ParseTuple(args, "KK", &counters_init, &pcs_init)) return NULL;
    for (size_t i = 0; i < FUZZ_COUNTERS; i++) fuzz_pcs[2 * i] = i + 1;
    ((void (*)(uint8_t *, uint8_t *))(uintptr_t)counters_init)(fuzz_counters, fuzz_counters + FUZZ_COUNTERS);
    ((void (*)(const uintptr_t *, const uintptr_t *))(uintptr_t)pcs_init)(fuzz_pcs, fuzz_pcs + 2 * FUZZ_COUNTERS);
    Py_RETURN_NONE;
}
#endif

static PyMethodDef core_methods[] = {
    {"scan", (PyCFunction)(void (*)(void))core_scan, METH_FASTCALL,
     "scan(payload, resource_keys, span_keys, missing, max_attribute_bytes)\n--\n\n"
     "Validate an ExportTraceServiceRequest as protobuf would and measure it: returns (batch_span_counts, "
     "batch_sizes, series, long_attribute), or None when the reference decode must decide; raises "
     "ValueError when protobuf would refuse the payload."},
#ifdef CORE_FUZZ_COVERAGE
    {"_fuzz_coverage", core_fuzz_coverage, METH_VARARGS, "register coverage counters with libFuzzer"},
#endif
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot core_slots[] = {{0, NULL}};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "distributor.ingest._core",
    "One native pass over an OTLP trace export request: validation, canonical sizes, usage series.",
    0, core_methods, core_slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core(void) { return PyModuleDef_Init(&core_module); }
