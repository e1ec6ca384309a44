/*
 * k3s_netpol._logemu: the field splitter of logscan's fast path, in C.
 *
 * rows(data, events) reads ulogd2 LOGEMU lines (bytes) and accepts only lines logscan's
 * canonical regex (_canonical_logemu) accepts, returning the same groups: for events
 * (stamp, node, prefix, "src DST=dst", id, proto, spt, dpt, seq, tail, mark), otherwise
 * (node, prefix, "src DST=dst", proto, dpt); an absent SEQ is "". Each row ends
 * with the packet's key: node, "src DST=dst", id, proto, spt, dpt and seq joined by "\n". Addresses
 * are IPv4 (parts 0 to 255, no leading zero) and ports 0 to 65535, or the line is left. A line
 * with a byte beyond ASCII is left to the regex (None), as is a chunk holding a carriage return.
 * tests/test_logemu_ext.py holds the two to the same answers, line by line.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    const char *start;
    Py_ssize_t length;
} Span;

static const char *const MONTHS = "JanFebMarAprMayJunJulAugSepOctNovDec";

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static int is_hex(char c) {
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* An IPv4 address as the regex takes it: four parts 0 to 255 without leading zeros. */
static int ipv4_address(const char **at, const char *end) {
    const char *cursor = *at;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (cursor >= end || *cursor != '.') {
                return 0;
            }
            cursor++;
        }
        const char *start = cursor;
        int value = 0;
        while (cursor < end && is_digit(*cursor) && cursor - start < 3) {
            value = value * 10 + (*cursor - '0');
            cursor++;
        }
        if (cursor == start || (cursor < end && is_digit(*cursor)) || value > 255
            || (*start == '0' && cursor - start > 1)) {
            return 0;
        }
    }
    *at = cursor;
    return 1;
}


/* Consumes `word` (of `length` bytes) at *at; 0 when the line does not continue with it. */
static inline int literal_of(const char **at, const char *end, const char *word, size_t length) {
    if ((size_t)(end - *at) < length || memcmp(*at, word, length) != 0) {
        return 0;
    }
    *at += length;
    return 1;
}
#define literal(at, end, word) literal_of((at), (end), (word), sizeof(word) - 1)

/* One or more characters up to the next space (TOS=, PREC=, IN=, OUT=, MAC= values). */
static const char *until_space(const char *at, const char *end) {
    while (at < end && *at != ' ') {
        at++;
    }
    return at;
}

/* [0-9]+ ; with canonical, also not a leading zero followed by a digit. */
static int digits(const char **at, const char *end, int canonical, Span *span) {
    const char *start = *at, *cursor = *at;
    while (cursor < end && is_digit(*cursor)) {
        cursor++;
    }
    if (cursor == start || (canonical && *start == '0' && cursor - start > 1)) {
        return 0;
    }
    if (span != NULL) {
        span->start = start;
        span->length = cursor - start;
    }
    *at = cursor;
    return 1;
}

/* A port as the regex takes it: canonical digits, 0 to 65535. */
static int port(const char **at, const char *end, Span *span) {
    const char *start = *at;
    if (!digits(at, end, 1, span)) {
        return 0;
    }
    if (*at - start > 5) {
        return 0;
    }
    long value = 0;
    for (const char *cursor = start; cursor < *at; cursor++) {
        value = value * 10 + (*cursor - '0');
    }
    return value <= 65535;
}

static int stamp_ok(const char *line, const char *end) {
    if (end - line < 16) {
        return 0;
    }
    int month = 0;
    for (; month < 12; month++) {
        if (memcmp(line, MONTHS + 3 * month, 3) == 0) {
            break;
        }
    }
    return month < 12 && line[3] == ' ' && (line[4] == ' ' || (line[4] >= '1' && line[4] <= '9'))
           && is_digit(line[5]) && line[6] == ' ' && is_digit(line[7]) && is_digit(line[8])
           && line[9] == ':' && is_digit(line[10]) && is_digit(line[11]) && line[12] == ':'
           && is_digit(line[13]) && is_digit(line[14]) && line[15] == ' ';
}

enum { STAMP, NODE, PREFIX, ADDRESSES, ID, PROTO, SPT, DPT, SEQ, TAIL, MARK, FIELDS };

static int all_ascii(const char *line, const char *end) {
    const char *at = line;
    for (; end - at >= 8; at += 8) {
        uint64_t word;
        memcpy(&word, at, 8);
        if (word & 0x8080808080808080ull) {
            return 0;
        }
    }
    for (; at < end; at++) {
        if ((unsigned char)*at & 0x80) {
            return 0;
        }
    }
    return 1;
}

/* Splits one ASCII line (no newline) into fields; 0 when the regex would not match it, or
   when the line is not ASCII. */
static int split_line(const char *line, const char *end, Span fields[FIELDS]) {
    const char *at = line;
    if (!stamp_ok(line, end) || !all_ascii(line, end)) {
        return 0;
    }
    fields[STAMP] = (Span){line, 15};
    at = line + 16;

    const char *node = at;
    while (at < end && *at != ' ' && *at != '=') {
        at++;
    }
    if (at == node || at == end || *at != ' ') {
        return 0;
    }
    fields[NODE] = (Span){node, at - node};
    at++;

    /* The prefix holds no '=': the first '=' must be IN='s, preceded by a space. */
    const char *equals = memchr(at, '=', (size_t)(end - at));
    if (equals == NULL || equals - 2 < at || equals[-2] != 'I' || equals[-1] != 'N'
        || equals[-3] != ' ') {
        return 0;
    }
    fields[PREFIX] = (Span){at, equals - 2 - at};
    at = until_space(equals + 1, end);
    if (!literal(&at, end, " OUT=")) {
        return 0;
    }
    at = until_space(at, end);
    if (!literal(&at, end, " ")) {
        return 0;
    }
    if (literal(&at, end, "MAC=")) {
        at = until_space(at, end);
        if (!literal(&at, end, " ")) {
            return 0;
        }
    }

    if (!literal(&at, end, "SRC=")) {
        return 0;
    }
    const char *addresses = at;
    if (!ipv4_address(&at, end) || !literal(&at, end, " DST=") || !ipv4_address(&at, end)) {
        return 0;
    }
    fields[ADDRESSES] = (Span){addresses, at - addresses};

    if (!literal(&at, end, " LEN=") || !digits(&at, end, 0, NULL) || !literal(&at, end, " TOS=")) {
        return 0;
    }
    const char *value = at;
    at = until_space(at, end);
    if (at == value || !literal(&at, end, " PREC=")) {
        return 0;
    }
    value = at;
    at = until_space(at, end);
    if (at == value || !literal(&at, end, " TTL=") || !digits(&at, end, 0, NULL)
        || !literal(&at, end, " ID=") || !digits(&at, end, 1, &fields[ID])
        || !literal(&at, end, " ")) {
        return 0;
    }
    literal(&at, end, "DF ");
    if (!literal(&at, end, "PROTO=")) {
        return 0;
    }
    const char *protocol = at;
    while (at < end && *at >= 'A' && *at <= 'Z') {
        at++;
    }
    if (at == protocol) {
        return 0;
    }
    fields[PROTO] = (Span){protocol, at - protocol};
    int tcp = at - protocol == 3 && memcmp(protocol, "TCP", 3) == 0;
    if (!literal(&at, end, " SPT=") || !port(&at, end, &fields[SPT])
        || !literal(&at, end, " DPT=") || !port(&at, end, &fields[DPT])) {
        return 0;
    }
    fields[SEQ] = (Span){at, 0};
    if (literal(&at, end, " SEQ=")) {
        /* Another protocol's SEQ= is left to the full parser, which ignores it. */
        if (!tcp || !digits(&at, end, 1, &fields[SEQ])) {
            return 0;
        }
    }
    if (!literal(&at, end, " ")) {
        return 0;
    }

    /* The tail runs to the line's last "MARK=", which must follow a space and end the line
       with hex digits (after an optional 0x). An earlier MARK= cannot: a later one follows it. */
    const char *tail = at;
    const char *mark = NULL;
    for (const char *cursor = end - 5; cursor >= tail; cursor--) {
        if (*cursor == 'M' && memcmp(cursor, "MARK=", 5) == 0) {
            mark = cursor;
            break;
        }
    }
    if (mark == NULL || mark[-1] != ' ') {
        return 0;
    }
    fields[TAIL] = (Span){tail, mark - tail};
    at = mark + 5;
    if (end - at > 2 && at[0] == '0' && at[1] == 'x') {
        at += 2;
    }
    const char *hex = at;
    while (at < end && is_hex(*at)) {
        at++;
    }
    if (at == hex || at != end) {
        return 0;
    }
    fields[MARK] = (Span){hex, end - hex};
    return 1;
}

static PyObject *ascii_text(Span span) {
    PyObject *text = PyUnicode_New(span.length, 127);
    if (text != NULL && span.length > 0) {
        memcpy(PyUnicode_1BYTE_DATA(text), span.start, (size_t)span.length);
    }
    return text;
}

static const int EVENT_FIELDS[] = {STAMP, NODE, PREFIX, ADDRESSES, ID, PROTO,
                                   SPT,   DPT,  SEQ,    TAIL,      MARK};
static const int SUMMARY_FIELDS[] = {NODE, PREFIX, ADDRESSES, PROTO, DPT};

/* Fields that repeat from line to line share one string object per value (and so its cached
   hash); a small direct-mapped table per field, alive for one call. */
#define SHARED_SLOTS 64
static const int SHARED_FIELD[FIELDS] = {
    [STAMP] = 1, [NODE] = 1, [PREFIX] = 1, [PROTO] = 1, [DPT] = 1, [TAIL] = 1, [MARK] = 1,
};
typedef PyObject *SharedTable[FIELDS][SHARED_SLOTS];

static PyObject *shared_text(SharedTable shared, int field, Span span) {
    if (!SHARED_FIELD[field]) {
        return ascii_text(span);
    }
    /* A slot by length and three bytes: a collision only costs a new string. */
    size_t hash = (size_t)span.length;
    if (span.length > 0) {
        hash = hash * 31 + (unsigned char)span.start[span.length - 1];
        hash = hash * 31 + (unsigned char)span.start[span.length / 2];
        hash = hash * 31 + (unsigned char)span.start[span.length * 3 / 4];
    }
    PyObject **slot = &shared[field][hash % SHARED_SLOTS];
    if (*slot != NULL && PyUnicode_GET_LENGTH(*slot) == span.length
        && memcmp(PyUnicode_1BYTE_DATA(*slot), span.start, (size_t)span.length) == 0) {
        return Py_NewRef(*slot);
    }
    PyObject *text = ascii_text(span);
    if (text != NULL) {
        Py_XSETREF(*slot, Py_NewRef(text));
    }
    return text;
}

static const int KEY_FIELDS[] = {NODE, ADDRESSES, ID, PROTO, SPT, DPT, SEQ};
#define KEY_PARTS ((int)(sizeof(KEY_FIELDS) / sizeof(KEY_FIELDS[0])))

static PyObject *packet_key(const Span fields[FIELDS]) {
    Py_ssize_t length = KEY_PARTS - 1;
    for (int part = 0; part < KEY_PARTS; part++) {
        length += fields[KEY_FIELDS[part]].length;
    }
    PyObject *key = PyUnicode_New(length, 127);
    if (key == NULL) {
        return NULL;
    }
    char *out = (char *)PyUnicode_1BYTE_DATA(key);
    for (int part = 0; part < KEY_PARTS; part++) {
        if (part > 0) {
            *out++ = '\n';
        }
        Span span = fields[KEY_FIELDS[part]];
        memcpy(out, span.start, (size_t)span.length);
        out += span.length;
    }
    return key;
}

static PyObject *row_of(SharedTable shared, const Span fields[FIELDS], int events) {
    const int *order = events ? EVENT_FIELDS : SUMMARY_FIELDS;
    Py_ssize_t count = events ? 11 : 5;
    PyObject *row = PyTuple_New(count + 1);
    if (row == NULL) {
        return NULL;
    }
    for (Py_ssize_t index = 0; index < count; index++) {
        PyObject *text = shared_text(shared, order[index], fields[order[index]]);
        if (text == NULL) {
            Py_DECREF(row);
            return NULL;
        }
        PyTuple_SET_ITEM(row, index, text);
    }
    PyObject *key = packet_key(fields);
    if (key == NULL) {
        Py_DECREF(row);
        return NULL;
    }
    PyTuple_SET_ITEM(row, count, key);
    /* Strings only: no cycle can pass through it, so the collector need not walk a million. */
    PyObject_GC_UnTrack(row);
    return row;
}

static void release_shared(SharedTable shared) {
    for (int field = 0; field < FIELDS; field++) {
        for (int slot = 0; slot < SHARED_SLOTS; slot++) {
            Py_CLEAR(shared[field][slot]);
        }
    }
}

static PyObject *rows_of(const char *cursor, Py_ssize_t length, int events) {
    const char *end = cursor + length;
    if (memchr(cursor, '\r', (size_t)length) != NULL) {
        Py_RETURN_NONE; /* \r ends lines too: logscan normalises those chunks first */
    }
    PyObject *found = PyList_New(0);
    if (found == NULL) {
        return NULL;
    }
    SharedTable shared = {{NULL}};
    Py_ssize_t misses = 0;
    Span fields[FIELDS];
    while (cursor < end) {
        const char *newline = memchr(cursor, '\n', (size_t)(end - cursor));
        const char *line_end = newline == NULL ? end : newline;
        PyObject *row;
        if (split_line(cursor, line_end, fields)) {
            row = row_of(shared, fields, events);
            if (row == NULL) {
                release_shared(shared);
                Py_DECREF(found);
                return NULL;
            }
        } else {
            misses++;
            row = Py_NewRef(Py_None);
        }
        int failed = PyList_Append(found, row);
        Py_DECREF(row);
        if (failed) {
            release_shared(shared);
            Py_DECREF(found);
            return NULL;
        }
        cursor = line_end + 1;
    }
    release_shared(shared);
    return Py_BuildValue("(Nn)", found, misses);
}

/* Any bytes-like object: logscan hands over slices of one reused buffer. */
static PyObject *rows(PyObject *module, PyObject *args) {
    Py_buffer data;
    int events;
    (void)module;
    if (!PyArg_ParseTuple(args, "y*p:rows", &data, &events)) {
        return NULL;
    }
    PyObject *result = rows_of((const char *)data.buf, data.len, events);
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef methods[] = {
    {"rows", rows, METH_VARARGS,
     "rows(data, events) -> (list of a row or None per line, lines that are None), or None "
     "when data holds a carriage return."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_logemu",
    .m_doc = "logscan's LOGEMU field splitter.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__logemu(void) { return PyModule_Create(&module); }
