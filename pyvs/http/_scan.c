/*
 * pyvs.http._scan: a strict scanner for the common HTTP/1.1 message head.
 *
 * Why this exists: validating a head through httptools costs one Python call per
 * field, which on small keep-alive exchanges is over half of pyvs's own CPU per
 * request. This scanner reads a whole head in one C call and reports the few
 * values the proxy needs.
 *
 * It is deliberately narrower than the HTTP grammar: it accepts only heads whose
 * every byte it understands (CRLF line ends, token field names followed directly by
 * a colon, visible-ASCII field values, no obs-fold, HTTP/1.1 only) and that need no
 * work beyond forwarding (no framing other than one Content-Length on a response,
 * no hop-by-hop field except "Connection: keep-alive", no forwarding fields on a
 * request). For anything else it returns None and the caller validates the head
 * with llhttp, which stays the authority on what is malformed. So a head this
 * scanner accepts is one llhttp accepts too, with the same meaning (the test suite
 * checks that by differential fuzzing).
 *
 * scan_request(block: bytes) -> (method, target, host) | None
 * scan_response(block: bytes) -> (status, content_length or -1) | None
 *
 * ``block`` is a whole head ending with CRLF CRLF, as the caller cut it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Character classes (RFC 9110 5.6.2 tchar; field values: HTAB, SP, VCHAR). */
static unsigned char TCHAR[256];
static unsigned char VALUE[256];
/* Request-target characters accepted here: RFC 3986 pchar, "/", "?" and "%". */
static unsigned char TARGET[256];

static void
init_tables(void)
{
    int c;
    const char *p;
    for (c = '0'; c <= '9'; c++) TCHAR[c] = TARGET[c] = 1;
    for (c = 'A'; c <= 'Z'; c++) TCHAR[c] = TARGET[c] = 1;
    for (c = 'a'; c <= 'z'; c++) TCHAR[c] = TARGET[c] = 1;
    for (p = "!#$%&'*+-.^_`|~"; *p; p++) TCHAR[(unsigned char)*p] = 1;
    for (p = "-._~!$&'()*+,;=:@/?%"; *p; p++) TARGET[(unsigned char)*p] = 1;
    VALUE['\t'] = 1;
    for (c = 0x20; c <= 0x7e; c++) VALUE[c] = 1;
}

/* Field names the proxy acts on. */
enum {
    F_OTHER = 0,
    F_HOST,
    F_CONTENT_LENGTH,
    F_CONNECTION,
    F_HOP,      /* Transfer-Encoding, Upgrade, Keep-Alive, TE, Trailer, Proxy-* */
    F_REQUEST,  /* request fields that need work: Expect, X-Forwarded-*, Forwarded */
};

/* Case-insensitive comparison of a token with a lower-case literal. For a tchar,
 * (c | 0x20) equals a lower-case letter only when c is that letter in either case,
 * and equals '-' only when c is '-'. */
static int
name_is(const unsigned char *name, Py_ssize_t len, const char *lower, Py_ssize_t llen)
{
    Py_ssize_t i;
    if (len != llen) return 0;
    for (i = 0; i < len; i++)
        if ((name[i] | 0x20) != (unsigned char)lower[i]) return 0;
    return 1;
}

#define IS(lit) name_is(name, len, lit, (Py_ssize_t)sizeof(lit) - 1)

static int
classify(const unsigned char *name, Py_ssize_t len)
{
    switch (name[0] | 0x20) {
    case 'h':
        return IS("host") ? F_HOST : F_OTHER;
    case 'c':
        if (IS("content-length")) return F_CONTENT_LENGTH;
        return IS("connection") ? F_CONNECTION : F_OTHER;
    case 't':
        return IS("transfer-encoding") || IS("te") || IS("trailer") ? F_HOP : F_OTHER;
    case 'u':
        return IS("upgrade") ? F_HOP : F_OTHER;
    case 'k':
        return IS("keep-alive") ? F_HOP : F_OTHER;
    case 'p':
        return len >= 6 && name_is(name, 6, "proxy-", 6) ? F_HOP : F_OTHER;
    case 'e':
        return IS("expect") ? F_REQUEST : F_OTHER;
    case 'x':
        return IS("x-forwarded-for") || IS("x-forwarded-proto") || IS("x-forwarded-host") ? F_REQUEST : F_OTHER;
    case 'f':
        return IS("forwarded") ? F_REQUEST : F_OTHER;
    default:
        return F_OTHER;
    }
}

/* One field line at *pp. On success returns its class and sets the value span
 * (without surrounding SP/HTAB) and *pp to the next line; -1 when the line is not
 * in the accepted subset. */
static int
field(const unsigned char **pp, const unsigned char *end, const unsigned char **vs, const unsigned char **ve)
{
    const unsigned char *p = *pp, *name = p, *v, *e;
    while (p < end && TCHAR[*p]) p++;
    if (p == name || p >= end || *p != ':') return -1;
    int code = classify(name, p - name);
    p++;
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    v = p;
    while (p < end && VALUE[*p]) p++;
    if (p + 1 >= end || p[0] != '\r' || p[1] != '\n') return -1;
    e = p;
    while (e > v && (e[-1] == ' ' || e[-1] == '\t')) e--;
    *vs = v;
    *ve = e;
    *pp = p + 2;
    return code;
}

static int
is_keep_alive(const unsigned char *v, const unsigned char *e)
{
    return name_is(v, e - v, "keep-alive", 10);
}

static PyObject *METHODS[8];
static const char *const METHOD_NAMES[8] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"};

static PyObject *
scan_request(PyObject *module, PyObject *arg)
{
    const unsigned char *p, *end, *m, *t, *host = NULL, *host_end = NULL, *vs, *ve;
    PyObject *method = NULL, *target, *hostobj, *res;
    Py_ssize_t n;
    int i, hosts = 0;

    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "scan_request() takes bytes");
        return NULL;
    }
    p = (const unsigned char *)PyBytes_AS_STRING(arg);
    n = PyBytes_GET_SIZE(arg);
    end = p + n;
    if (n < 4 || memcmp(end - 4, "\r\n\r\n", 4) != 0) Py_RETURN_NONE;

    m = p;
    while (p < end && *p >= 'A' && *p <= 'Z') p++;
    if (p >= end || *p != ' ') Py_RETURN_NONE;
    for (i = 0; i < 8; i++) {
        size_t len = strlen(METHOD_NAMES[i]);
        if ((size_t)(p - m) == len && memcmp(m, METHOD_NAMES[i], len) == 0) {
            method = METHODS[i];
            break;
        }
    }
    if (method == NULL) Py_RETURN_NONE;
    p++;
    t = p;
    if (p >= end || *p != '/') Py_RETURN_NONE;
    while (p < end && TARGET[*p]) p++;
    if (end - p < 11 || memcmp(p, " HTTP/1.1\r\n", 11) != 0) Py_RETURN_NONE;
    Py_ssize_t tlen = p - t;
    p += 11;

    for (;;) {
        if (p >= end) Py_RETURN_NONE;
        if (*p == '\r') {
            if (p + 2 != end || p[1] != '\n') Py_RETURN_NONE;
            break;
        }
        switch (field(&p, end, &vs, &ve)) {
        case F_OTHER:
            break;
        case F_HOST:
            hosts++;
            host = vs;
            host_end = ve;
            break;
        case F_CONNECTION:
            if (!is_keep_alive(vs, ve)) Py_RETURN_NONE;
            break;
        default: /* a body, a hop-by-hop field, forwarding fields, or not in the subset */
            Py_RETURN_NONE;
        }
    }
    if (hosts != 1) Py_RETURN_NONE;

    target = PyBytes_FromStringAndSize((const char *)t, tlen);
    if (target == NULL) return NULL;
    hostobj = PyBytes_FromStringAndSize((const char *)host, host_end - host);
    if (hostobj == NULL) {
        Py_DECREF(target);
        return NULL;
    }
    res = PyTuple_New(3);
    if (res == NULL) {
        Py_DECREF(target);
        Py_DECREF(hostobj);
        return NULL;
    }
    Py_INCREF(method);
    PyTuple_SET_ITEM(res, 0, method);
    PyTuple_SET_ITEM(res, 1, target);
    PyTuple_SET_ITEM(res, 2, hostobj);
    return res;
}

static PyObject *
scan_response(PyObject *module, PyObject *arg)
{
    const unsigned char *p, *end, *vs, *ve;
    Py_ssize_t n;
    long status;
    long long length = -1;

    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "scan_response() takes bytes");
        return NULL;
    }
    p = (const unsigned char *)PyBytes_AS_STRING(arg);
    n = PyBytes_GET_SIZE(arg);
    end = p + n;
    if (n < 17 || memcmp(end - 4, "\r\n\r\n", 4) != 0 || memcmp(p, "HTTP/1.1 ", 9) != 0) Py_RETURN_NONE;
    p += 9;
    if (p[0] < '2' || p[0] > '5' || p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9' || p[3] != ' ')
        Py_RETURN_NONE; /* 1xx (interim, 101) and odd codes: llhttp decides */
    status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    p += 4;
    while (p < end && VALUE[*p]) p++; /* reason phrase */
    if (p + 1 >= end || p[0] != '\r' || p[1] != '\n') Py_RETURN_NONE;
    p += 2;

    for (;;) {
        if (p >= end) Py_RETURN_NONE;
        if (*p == '\r') {
            if (p + 2 != end || p[1] != '\n') Py_RETURN_NONE;
            break;
        }
        switch (field(&p, end, &vs, &ve)) {
        case F_OTHER:
        case F_HOST:
        case F_REQUEST: /* request-only names mean nothing in a response */
            break;
        case F_CONTENT_LENGTH:
            if (length >= 0 || ve == vs || ve - vs > 15) Py_RETURN_NONE;
            length = 0;
            for (; vs < ve; vs++) {
                if (*vs < '0' || *vs > '9') Py_RETURN_NONE;
                length = length * 10 + (*vs - '0');
            }
            break;
        case F_CONNECTION:
            if (!is_keep_alive(vs, ve)) Py_RETURN_NONE;
            break;
        default:
            Py_RETURN_NONE;
        }
    }
    return Py_BuildValue("(lL)", status, length);
}

static PyMethodDef scan_methods[] = {
    {"scan_request", scan_request, METH_O, "(method, target, host) of a plain request head, or None."},
    {"scan_response", scan_response, METH_O, "(status, content_length or -1) of a plain response head, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef scan_module = {
    PyModuleDef_HEAD_INIT, "_scan", "Strict one-call scanner for common HTTP/1.1 heads.", -1, scan_methods,
};

PyMODINIT_FUNC
PyInit__scan(void)
{
    int i;
    init_tables();
    for (i = 0; i < 8; i++) {
        if (METHODS[i] == NULL) {
            METHODS[i] = PyBytes_FromString(METHOD_NAMES[i]);
            if (METHODS[i] == NULL) return NULL;
        }
    }
    return PyModule_Create(&scan_module);
}
