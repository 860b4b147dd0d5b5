/*
 * pyvs.http._scan: a strict scanner for the common HTTP/1.1 message head.
 *
 * Why this exists: validating a head through httptools costs one Python call per
 * field, which on small keep-alive exchanges was more than half of pyvs's Python
 * time per request. This scanner reads a whole head in one C call and reports the few
 * values the proxy needs.
 *
 * It is deliberately narrower than the HTTP grammar: it accepts only heads whose
 * every byte it understands (CRLF line ends, token field names followed directly by
 * a colon, visible-ASCII field values, no obs-fold, HTTP/1.1 only) and that need no
 * work beyond forwarding (no framing other than one Content-Length, no hop-by-hop
 * field except "Connection: keep-alive", no forwarding fields on a request, a
 * valid Host). For anything else it returns None and the caller validates the
 * head with llhttp, which stays the authority on what is malformed. So a head this
 * scanner accepts is one llhttp accepts too, with the same meaning (the test suite
 * checks that by differential fuzzing).
 *
 * bind(request_template, response_template): the head classes of pyvs.http.h1, given
 *     as instances holding their defaults; called once at import.
 * scan_request(block: bytes) -> RequestHead | None
 * scan_response(block: bytes, head_request: bool) -> ResponseHead | None
 *
 * ``block`` is a whole head ending with CRLF CRLF, as the caller cut it. The result
 * is built here as a copy of the template with the scanned values set, the same
 * object pyvs.http.h1 would build from llhttp's callbacks (its __init__ costs about
 * as much as the scan).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

/* Framing kinds, as in pyvs.http.h1 (RFC 9112 6.3). */
#define NO_BODY 0
#define LENGTH 1
#define UNTIL_CLOSE 3

/* A head class with __slots__: a template instance and the offset of every slot. */
#define MAX_SLOTS 40
typedef struct {
    PyObject *tmpl;
    Py_ssize_t offs[MAX_SLOTS];
    int n;
} Proto;

static Proto REQ, RESP;
static Py_ssize_t R_BLOCK, R_METHOD, R_TARGET, R_HOST, R_HOSTS, R_FRAMING, R_LENGTH, R_FIELDS;
static Py_ssize_t S_BLOCK, S_STATUS, S_FRAMING, S_LENGTH, S_KEEP_ALIVE;

/* Read a template's slot offsets into ``p`` (not yet in use: bind() commits). */
static int
proto_read(Proto *p, PyObject *tmpl)
{
    PyTypeObject *t = Py_TYPE(tmpl);
    PyMemberDef *m;
    if (!(t->tp_flags & Py_TPFLAGS_HEAPTYPE) || t->tp_dictoffset != 0 || t->tp_members == NULL) {
        PyErr_SetString(PyExc_TypeError, "bind() takes instances of classes with __slots__ and no __dict__");
        return -1;
    }
    p->n = 0;
    for (m = t->tp_members; m->name != NULL; m++) {
        if (m->type != T_OBJECT_EX || p->n == MAX_SLOTS) {
            PyErr_Format(PyExc_TypeError, "bind(): unexpected member %s", m->name);
            return -1;
        }
        p->offs[p->n++] = m->offset;
    }
    p->tmpl = tmpl;
    return 0;
}

static Py_ssize_t
slot_offset(PyObject *tmpl, const char *name)
{
    PyMemberDef *m;
    for (m = Py_TYPE(tmpl)->tp_members; m->name != NULL; m++)
        if (strcmp(m->name, name) == 0) return m->offset;
    PyErr_Format(PyExc_TypeError, "bind(): no slot %s", name);
    return -1;
}

/* A new instance holding the template's values. */
static PyObject *
proto_new(Proto *p)
{
    PyTypeObject *t = Py_TYPE(p->tmpl);
    PyObject *o = t->tp_alloc(t, 0);
    int i;
    if (o == NULL) return NULL;
    for (i = 0; i < p->n; i++) {
        PyObject *v = *(PyObject **)((char *)p->tmpl + p->offs[i]);
        Py_XINCREF(v);
        *(PyObject **)((char *)o + p->offs[i]) = v;
    }
    return o;
}

/* Replace a slot's value; steals ``v``. */
static void
put(PyObject *o, Py_ssize_t off, PyObject *v)
{
    PyObject **slot = (PyObject **)((char *)o + off);
    PyObject *old = *slot;
    *slot = v;
    Py_XDECREF(old);
}

/* All or nothing: the scans use the new templates and offsets only if every one of
 * them was found (a half-bound module would write at a wrong offset). */
static PyObject *
bind(PyObject *module, PyObject *args)
{
    PyObject *req, *resp, *old_req = REQ.tmpl, *old_resp = RESP.tmpl;
    Proto nreq, nresp;
    Py_ssize_t r[8], o[5];
    static const char *const rn[8] = {"block", "method", "target", "host", "_hosts", "framing", "length", "fields"};
    static const char *const on[5] = {"block", "status", "framing", "length", "keep_alive"};
    int i;
    if (!PyArg_ParseTuple(args, "OO", &req, &resp)) return NULL;
    if (proto_read(&nreq, req) < 0 || proto_read(&nresp, resp) < 0) return NULL;
    for (i = 0; i < 8; i++)
        if ((r[i] = slot_offset(req, rn[i])) < 0) return NULL;
    for (i = 0; i < 5; i++)
        if ((o[i] = slot_offset(resp, on[i])) < 0) return NULL;
    Py_INCREF(req);
    Py_INCREF(resp);
    REQ = nreq;
    RESP = nresp;
    R_BLOCK = r[0], R_METHOD = r[1], R_TARGET = r[2], R_HOST = r[3], R_HOSTS = r[4], R_FRAMING = r[5];
    R_LENGTH = r[6], R_FIELDS = r[7];
    S_BLOCK = o[0], S_STATUS = o[1], S_FRAMING = o[2], S_LENGTH = o[3], S_KEEP_ALIVE = o[4];
    Py_XDECREF(old_req);
    Py_XDECREF(old_resp);
    Py_RETURN_NONE;
}

/* Character classes (RFC 9110 5.6.2 tchar; field values: HTAB, SP, VCHAR). */
static unsigned char TCHAR[256];
static unsigned char VALUE[256];
/* Request-target characters accepted here: RFC 3986 pchar, "/", "?" and "%". */
static unsigned char TARGET[256];
/* reg-name characters (RFC 3986: unreserved, "%", sub-delims) and IP-literal ones. */
static unsigned char REGNAME[256];
static unsigned char IPLIT[256];

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
    for (c = 0; c < 256; c++) REGNAME[c] = TARGET[c] && !strchr(":@/?", c);
    for (p = "0123456789ABCDEFabcdef:."; *p; p++) IPLIT[(unsigned char)*p] = 1;
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

/* A Content-Length value: 1 to 15 digits (what llhttp reads as the same number). */
static int
content_length(const unsigned char *v, const unsigned char *e, long long *out)
{
    long long n = 0;
    if (e == v || e - v > 15) return -1;
    for (; v < e; v++) {
        if (*v < '0' || *v > '9') return -1;
        n = n * 10 + (*v - '0');
    }
    *out = n;
    return 0;
}

static int
is_keep_alive(const unsigned char *v, const unsigned char *e)
{
    return name_is(v, e - v, "keep-alive", 10);
}

/* A valid Host value (RFC 9110 7.2): uri-host [":" port], as h1._HOST. */
static int
valid_host(const unsigned char *p, const unsigned char *e)
{
    if (p < e && *p == '[') {
        const unsigned char *lit = ++p;
        while (p < e && IPLIT[*p]) p++;
        if (p == lit || p >= e || *p != ']') return 0;
        p++;
    } else {
        while (p < e && REGNAME[*p]) p++;
    }
    if (p < e && *p == ':')
        for (p++; p < e && *p >= '0' && *p <= '9'; p++)
            ;
    return p == e;
}

static PyObject *METHODS[8];
static const char *const METHOD_NAMES[8] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"};

static PyObject *
scan_request(PyObject *module, PyObject *arg)
{
    const unsigned char *p, *end, *m, *t, *host = NULL, *host_end = NULL, *vs, *ve;
    PyObject *method = NULL, *target, *hostobj, *block, *lenobj = NULL, *res;
    Py_ssize_t n;
    long long length = -1;
    int i, hosts = 0, fields = 0;

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

    /* Field lines up to the final CRLF (the block's last four bytes are CRLF CRLF, and
     * a field line ends at its first CR, so the lines end exactly there). */
    while (p < end - 2) {
        /* Counted for the listener's max_headers; past 255 llhttp's path counts (so the
         * count below is always a cached small int). */
        if (++fields > 255) Py_RETURN_NONE;
        switch (field(&p, end, &vs, &ve)) {
        case F_OTHER:
            break;
        case F_HOST:
            hosts++;
            host = vs;
            host_end = ve;
            break;
        case F_CONTENT_LENGTH: /* one, digits only: a body of that length */
            if (length >= 0 || content_length(vs, ve, &length) < 0) Py_RETURN_NONE;
            break;
        case F_CONNECTION:
            if (!is_keep_alive(vs, ve)) Py_RETURN_NONE;
            break;
        default: /* a chunked body, a hop-by-hop field, forwarding fields, or not in the subset */
            Py_RETURN_NONE;
        }
    }
    if (hosts != 1 || !valid_host(host, host_end)) Py_RETURN_NONE; /* llhttp's path: 400 */

    if (REQ.tmpl == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind() was not called");
        return NULL;
    }
    target = PyBytes_FromStringAndSize((const char *)t, tlen);
    hostobj = target ? PyBytes_FromStringAndSize((const char *)host, host_end - host) : NULL;
    block = hostobj ? PyBytes_FromStringAndSize((const char *)PyBytes_AS_STRING(arg), n - 2) : NULL;
    if (block && length >= 0) lenobj = PyLong_FromLongLong(length);
    res = block && (length < 0 || lenobj) ? proto_new(&REQ) : NULL;
    if (res == NULL) {
        Py_XDECREF(target);
        Py_XDECREF(hostobj);
        Py_XDECREF(block);
        Py_XDECREF(lenobj);
        return NULL;
    }
    if (lenobj != NULL) {
        put(res, R_FRAMING, PyLong_FromLong(LENGTH)); /* a cached small int: cannot fail */
        put(res, R_LENGTH, lenobj);
    }
    Py_INCREF(method);
    put(res, R_METHOD, method);
    put(res, R_TARGET, target);
    put(res, R_HOST, hostobj);
    put(res, R_BLOCK, block);
    put(res, R_HOSTS, PyLong_FromLong(1)); /* a cached small int: cannot fail */
    put(res, R_FIELDS, PyLong_FromLong(fields)); /* <= 255: a cached small int, cannot fail */
    return res;
}

static PyObject *
scan_response(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    const unsigned char *p, *end, *vs, *ve;
    PyObject *arg, *res, *block, *statusobj, *lenobj;
    Py_ssize_t n;
    long status;
    long long length = -1;
    int head_request, framing;

    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "scan_response() takes bytes and a bool");
        return NULL;
    }
    arg = args[0];
    if ((head_request = PyObject_IsTrue(args[1])) < 0) return NULL;
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

    while (p < end - 2) { /* field lines up to the final CRLF, as above */
        switch (field(&p, end, &vs, &ve)) {
        case F_OTHER:
        case F_HOST:
        case F_REQUEST: /* request-only names mean nothing in a response */
            break;
        case F_CONTENT_LENGTH:
            if (length >= 0 || content_length(vs, ve, &length) < 0) Py_RETURN_NONE;
            break;
        case F_CONNECTION:
            if (!is_keep_alive(vs, ve)) Py_RETURN_NONE;
            break;
        default:
            Py_RETURN_NONE;
        }
    }
    if (RESP.tmpl == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind() was not called");
        return NULL;
    }
    if (head_request || status == 204 || status == 304)
        framing = NO_BODY;
    else
        framing = length >= 0 ? LENGTH : UNTIL_CLOSE;
    lenobj = NULL;
    block = PyBytes_FromStringAndSize((const char *)PyBytes_AS_STRING(arg), n - 2);
    statusobj = block ? PyLong_FromLong(status) : NULL;
    if (statusobj && length >= 0) lenobj = PyLong_FromLongLong(length);
    res = statusobj && (length < 0 || lenobj) ? proto_new(&RESP) : NULL;
    if (res == NULL) {
        Py_XDECREF(block);
        Py_XDECREF(statusobj);
        Py_XDECREF(lenobj);
        return NULL;
    }
    put(res, S_BLOCK, block);
    put(res, S_STATUS, statusobj);
    put(res, S_FRAMING, PyLong_FromLong(framing));
    if (lenobj != NULL) put(res, S_LENGTH, lenobj);
    if (framing == UNTIL_CLOSE) put(res, S_KEEP_ALIVE, Py_NewRef(Py_False)); /* delimited by the close */
    return res;
}

static PyMethodDef scan_methods[] = {
    {"bind", bind, METH_VARARGS, "Register the request and response head templates."},
    {"scan_request", scan_request, METH_O, "The RequestHead of a plain request head, or None."},
    {"scan_response", (PyCFunction)(void (*)(void))scan_response, METH_FASTCALL,
     "The ResponseHead of a plain response head, or None."},
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
