/*
 * pyvs.tls._tickets: session-ticket keys that rotate on a clock, the same in every worker.
 *
 * Why this exists: Python's ssl module does not expose OpenSSL's ticket key callback,
 * so the keys of a context are OpenSSL's own random ones. They are shared by the
 * workers only because the contexts are built before the fork, and they never change
 * while a generation runs. nginx (ssl_session_ticket_key, several files) and HAProxy
 * (tls-ticket-keys, three keys) rotate them: the newest key encrypts, the older ones
 * still decrypt for a while and ask the client to take a fresh ticket.
 *
 * Theory of operation
 * -------------------
 * Time is cut into epochs of ``period`` seconds (epoch = floor(unix time / period)).
 * The keys of epoch e are derived from a secret that the supervisor draws once
 * (before any worker is forked, so every worker has it) and a label naming the
 * listener's security settings:
 *
 *     L           = HMAC-SHA256(secret, label)
 *     T_i(e)      = HMAC-SHA256(L, "pyvs-ticket" || be64(e) || i)     i = 1, 2, 3
 *     name(e)     = be64(e) || T_1(e)[0:8]        (16 bytes, sent in clear in the ticket)
 *     aes(e)      = T_2(e)                          (AES-256-CBC)
 *     mac(e)      = T_3(e)                          (HMAC-SHA256)
 *
 * So every worker computes the same keys for the same epoch without talking to the
 * others -- no shared memory to keep consistent, no rotation message to miss -- and
 * a reload of the configuration keeps them (same secret, same label). A ticket is
 * encrypted with the key of the current epoch; one whose name says epoch e decrypts
 * when e is the current epoch (resume) or the one before (resume, and OpenSSL sends
 * a new ticket under the current key: return value 2); anything older, or a name
 * whose tag does not match (another listener, another pyvs instance), is unknown and
 * the client does a full handshake. A ticket thus resumes for at least one and at
 * most two periods.
 *
 * The keys of the last two epochs are cached per context (derivation is three HMACs,
 * done once per epoch and process). Workers are single-threaded; the supervisor only
 * uses a context in its start-up self-test, before forking.
 *
 * Finding the SSL_CTX of a Python ssl.SSLContext: CPython's _ssl keeps it as the first
 * member after the object header (PySSLContext in Modules/_ssl.c, unchanged from 3.7
 * to 3.13). That layout is not an API, so install() is guarded: the caller checks the
 * interpreter and that this module uses the very OpenSSL _ssl uses; install() checks
 * the type and that what it found answers SSL_CTX_get_options() and
 * SSL_CTX_get_verify_mode() with the values Python reports; pyvs.tls.tickets then
 * proves the whole thing with a real handshake and resumption before relying on it,
 * and falls back to OpenSSL's own keys (logged) when anything does not hold.
 *
 * install(ctx, secret, label, period, options, verify_mode) -> None
 * new_tickets(sslobj._sslobj, n) -> bool     TLS 1.3 tickets sent with the next write
 * stats() -> (encrypted, resumed, renewed, unknown)      counters of this process
 * set_clock(t)          tests: use ``t`` (seconds) as the time; 0: the real clock
 * openssl_version() -> int    OPENSSL_VERSION_NUMBER of the library linked here
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/opensslv.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#if OPENSSL_VERSION_NUMBER < 0x30000000L
#error "pyvs.tls._tickets needs OpenSSL 3 (SSL_CTX_set_tlsext_ticket_key_evp_cb)"
#endif

#define NAME_LEN 16
#define KEY_LEN 32

typedef struct {
    unsigned long long epoch;
    int valid;
    unsigned char name[NAME_LEN];
    unsigned char aes[KEY_LEN];
    unsigned char mac[KEY_LEN];
} epoch_keys;

typedef struct {
    unsigned char lsecret[KEY_LEN];  /* L = HMAC(secret, label) */
    unsigned long long period;       /* seconds, >= 1 */
    epoch_keys slot[2];              /* indexed by epoch parity */
} ticket_keys;

static int ex_index = -1;
static EVP_CIPHER *aes_cbc;  /* fetched once: EVP_aes_256_cbc() would be looked up per ticket */
static double test_clock = 0.0;
static unsigned long long n_encrypted, n_resumed, n_renewed, n_unknown;

static void
free_keys(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent; (void)ad; (void)idx; (void)argl; (void)argp;
    if (ptr != NULL) {
        OPENSSL_cleanse(ptr, sizeof(ticket_keys));
        OPENSSL_free(ptr);
    }
}

static unsigned long long
current_epoch(const ticket_keys *k)
{
    double now;
    if (test_clock > 0) {
        now = test_clock;
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        now = (double)ts.tv_sec;
    }
    return (unsigned long long)(now / (double)k->period);
}

static void
be64(unsigned char out[8], unsigned long long v)
{
    for (int i = 7; i >= 0; i--) {
        out[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

/* The keys of epoch e (cached); NULL when the HMAC fails. */
static const epoch_keys *
keys_of(ticket_keys *k, unsigned long long e)
{
    epoch_keys *s = &k->slot[e & 1];
    if (s->valid && s->epoch == e)
        return s;
    unsigned char msg[11 + 8 + 1];
    unsigned char out[3][KEY_LEN];
    unsigned int len;
    memcpy(msg, "pyvs-ticket", 11);
    be64(msg + 11, e);
    for (int i = 0; i < 3; i++) {
        msg[19] = (unsigned char)(i + 1);
        len = KEY_LEN;
        if (HMAC(EVP_sha256(), k->lsecret, KEY_LEN, msg, sizeof msg, out[i], &len) == NULL)
            return NULL;
    }
    s->valid = 0;
    s->epoch = e;
    be64(s->name, e);
    memcpy(s->name + 8, out[0], 8);
    memcpy(s->aes, out[1], KEY_LEN);
    memcpy(s->mac, out[2], KEY_LEN);
    s->valid = 1;
    OPENSSL_cleanse(out, sizeof out);
    return s;
}

static int
set_mac(EVP_MAC_CTX *hctx, const epoch_keys *s)
{
    OSSL_PARAM params[3];
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)s->mac, KEY_LEN);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[2] = OSSL_PARAM_construct_end();
    return EVP_MAC_CTX_set_params(hctx, params);
}

/* OpenSSL's ticket key callback (see SSL_CTX_set_tlsext_ticket_key_evp_cb(3)). */
static int
ticket_cb(SSL *ssl, unsigned char key_name[NAME_LEN], unsigned char *iv,
          EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    ticket_keys *k = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ex_index);
    if (k == NULL)
        return 0;  /* no ticket / unknown ticket: a full handshake, never an error */
    unsigned long long cur = current_epoch(k);
    if (enc) {
        const epoch_keys *s = keys_of(k, cur);
        if (s == NULL)
            return 0;
        memcpy(key_name, s->name, NAME_LEN);
        if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(aes_cbc)) <= 0)
            return -1;
        if (!EVP_EncryptInit_ex(cctx, aes_cbc, NULL, s->aes, iv) || !set_mac(hctx, s))
            return -1;
        n_encrypted++;
        return 1;
    }
    unsigned long long e = 0;
    for (int i = 0; i < 8; i++)
        e = (e << 8) | key_name[i];
    if (e != cur && e + 1 != cur) {
        n_unknown++;
        return 0;
    }
    const epoch_keys *s = keys_of(k, e);
    if (s == NULL || CRYPTO_memcmp(s->name, key_name, NAME_LEN) != 0) {
        n_unknown++;
        return 0;
    }
    if (!EVP_DecryptInit_ex(cctx, aes_cbc, NULL, s->aes, iv) || !set_mac(hctx, s))
        return -1;
    if (e == cur) {
        n_resumed++;
        return 1;
    }
    n_renewed++;
    return 2;  /* resume, and send a ticket under the current key */
}

/* The SSL_CTX inside a Python ssl.SSLContext (see the header), or NULL with an error. */
static SSL_CTX *
ssl_ctx_of(PyObject *obj, unsigned long long options, int verify_mode)
{
    PyTypeObject *t = Py_TYPE(obj);
    int found = 0;
    for (PyTypeObject *b = t; b != NULL; b = b->tp_base) {
        if (strcmp(b->tp_name, "_ssl._SSLContext") == 0) {
            found = b->tp_basicsize >= (Py_ssize_t)(sizeof(PyObject) + sizeof(void *));
            break;
        }
    }
    if (!found) {
        PyErr_SetString(PyExc_TypeError, "not an ssl.SSLContext of CPython's _ssl");
        return NULL;
    }
    SSL_CTX *ctx = *(SSL_CTX **)((char *)obj + sizeof(PyObject));
    if (ctx == NULL || ((size_t)ctx % sizeof(void *)) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "unexpected SSLContext layout");
        return NULL;
    }
    /* The same copy of OpenSSL as _ssl's (a Python with its own static OpenSSL of the
       same version would pass the version check): a server context of _ssl's was made
       with TLS_server_method(), whose address differs between two copies. */
    if (SSL_CTX_get_ssl_method(ctx) != TLS_server_method()) {
        PyErr_SetString(PyExc_RuntimeError, "the SSLContext is not a server context of this OpenSSL");
        return NULL;
    }
    /* ssl.CERT_NONE / CERT_OPTIONAL / CERT_REQUIRED as _ssl sets them */
    static const int modes[3] = {SSL_VERIFY_NONE, SSL_VERIFY_PEER,
                                 SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT};
    int mode = SSL_CTX_get_verify_mode(ctx) & (SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
    if ((unsigned long long)SSL_CTX_get_options(ctx) != options
            || verify_mode < 0 || verify_mode > 2 || mode != modes[verify_mode]) {
        PyErr_SetString(PyExc_RuntimeError, "SSLContext layout check failed (options/verify mode differ)");
        return NULL;
    }
    return ctx;
}

static PyObject *
check(PyObject *self, PyObject *args)
{
    PyObject *pyctx;
    unsigned long long options;
    int verify_mode;
    (void)self;
    if (!PyArg_ParseTuple(args, "OKi", &pyctx, &options, &verify_mode))
        return NULL;
    if (ssl_ctx_of(pyctx, options, verify_mode) == NULL)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
install(PyObject *self, PyObject *args)
{
    PyObject *pyctx;
    Py_buffer secret, label;
    unsigned long long period, options;
    int verify_mode;
    (void)self;
    if (!PyArg_ParseTuple(args, "Oy*y*KKi", &pyctx, &secret, &label, &period, &options, &verify_mode))
        return NULL;
    PyObject *result = NULL;
    ticket_keys *k = NULL;
    if (secret.len != KEY_LEN || period < 1) {
        PyErr_SetString(PyExc_ValueError, "secret must be 32 bytes and period >= 1 s");
        goto done;
    }
    SSL_CTX *ctx = ssl_ctx_of(pyctx, options, verify_mode);
    if (ctx == NULL)
        goto done;
    k = OPENSSL_zalloc(sizeof *k);
    if (k == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    unsigned int len = KEY_LEN;
    if (HMAC(EVP_sha256(), secret.buf, KEY_LEN, label.buf, (size_t)label.len, k->lsecret, &len) == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "HMAC-SHA256 unavailable");
        goto done;
    }
    k->period = period;
    ticket_keys *old = SSL_CTX_get_ex_data(ctx, ex_index);
    if (!SSL_CTX_set_ex_data(ctx, ex_index, k)) {
        PyErr_SetString(PyExc_RuntimeError, "SSL_CTX_set_ex_data failed");
        goto done;
    }
    if (old != NULL)
        free_keys(NULL, old, NULL, 0, 0, NULL);
    k = NULL;  /* owned by the context now (freed with it) */
    if (!SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb)) {
        PyErr_SetString(PyExc_RuntimeError, "SSL_CTX_set_tlsext_ticket_key_evp_cb failed");
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    if (k != NULL)
        free_keys(NULL, k, NULL, 0, 0, NULL);
    PyBuffer_Release(&secret);
    PyBuffer_Release(&label);
    return result;
}

/* The SSL of an _ssl._SSLSocket (the C object behind an SSLObject): in PySSLSocket
 * (Modules/_ssl.c) it follows the weak reference to the socket, and is followed by the
 * PySSLContext whose SSL_CTX must be the SSL's -- checked on every call. */
static SSL *
ssl_of(PyObject *obj)
{
    if (strcmp(Py_TYPE(obj)->tp_name, "_ssl._SSLSocket") != 0) {
        PyErr_SetString(PyExc_TypeError, "not an _ssl._SSLSocket");
        return NULL;
    }
    char *base = (char *)obj + sizeof(PyObject);
    SSL *ssl = *(SSL **)(base + sizeof(PyObject *));
    PyObject *ctxobj = *(PyObject **)(base + sizeof(PyObject *) + sizeof(SSL *));
    if (ssl == NULL || ctxobj == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "unexpected SSLObject layout");
        return NULL;
    }
    PyTypeObject *t = Py_TYPE(ctxobj);
    while (t != NULL && strcmp(t->tp_name, "_ssl._SSLContext") != 0)
        t = t->tp_base;
    if (t == NULL || SSL_get_SSL_CTX(ssl) != *(SSL_CTX **)((char *)ctxobj + sizeof(PyObject))) {
        PyErr_SetString(PyExc_RuntimeError, "unexpected SSLObject layout");
        return NULL;
    }
    return ssl;
}

/* new_tickets(sslobj, n): queue n TLS 1.3 session tickets on a server connection whose
 * handshake is done; OpenSSL writes them in front of the next application data, so the
 * tickets and the first response leave in one write (with num_tickets = 0 on the
 * context, none is sent at the end of the handshake). False: not TLS 1.3 (TLS 1.2
 * tickets are part of its handshake) or not possible. */
static PyObject *
new_tickets(PyObject *self, PyObject *args)
{
    PyObject *obj;
    int n;
    (void)self;
    if (!PyArg_ParseTuple(args, "Oi", &obj, &n))
        return NULL;
    SSL *ssl = ssl_of(obj);
    if (ssl == NULL)
        return NULL;
    if (!SSL_is_server(ssl) || SSL_version(ssl) != TLS1_3_VERSION || !SSL_is_init_finished(ssl))
        Py_RETURN_FALSE;
    for (int i = 0; i < n; i++) {
        if (!SSL_new_session_ticket(ssl)) {
            ERR_clear_error();
            Py_RETURN_FALSE;
        }
    }
    Py_RETURN_TRUE;
}

static PyObject *
stats(PyObject *self, PyObject *noargs)
{
    (void)self; (void)noargs;
    return Py_BuildValue("KKKK", n_encrypted, n_resumed, n_renewed, n_unknown);
}

static PyObject *
set_clock(PyObject *self, PyObject *arg)
{
    (void)self;
    double t = PyFloat_AsDouble(arg);
    if (t == -1.0 && PyErr_Occurred())
        return NULL;
    test_clock = t;
    Py_RETURN_NONE;
}

static PyObject *
openssl_version(PyObject *self, PyObject *noargs)
{
    (void)self; (void)noargs;
    return PyLong_FromUnsignedLong(OpenSSL_version_num());
}

static PyMethodDef methods[] = {
    {"check", check, METH_VARARGS, "Raise unless ctx's SSL_CTX can be found and is this OpenSSL's."},
    {"install", install, METH_VARARGS, "Rotate ctx's ticket keys on a clock (see the module source)."},
    {"new_tickets", new_tickets, METH_VARARGS, "Queue n TLS 1.3 tickets for the next write."},
    {"stats", stats, METH_NOARGS, "(encrypted, resumed, renewed, unknown) tickets in this process."},
    {"set_clock", set_clock, METH_O, "Tests: the time in seconds the keys follow (0: the real clock)."},
    {"openssl_version", openssl_version, METH_NOARGS, "OpenSSL_version_num() of the linked library."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pyvs.tls._tickets",
    "Session-ticket keys derived per time epoch (pyvs/tls/tickets.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__tickets(void)
{
    if (aes_cbc == NULL) {
        aes_cbc = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
        if (aes_cbc == NULL) {
            PyErr_SetString(PyExc_ImportError, "AES-256-CBC is not available");
            return NULL;
        }
    }
    if (ex_index < 0) {
        ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, free_keys);
        if (ex_index < 0) {
            PyErr_SetString(PyExc_ImportError, "SSL_CTX_get_ex_new_index failed");
            return NULL;
        }
    }
    return PyModule_Create(&module);
}
