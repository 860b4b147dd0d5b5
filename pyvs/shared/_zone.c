/*
 * pyvs.shared._zone: atomic words and small hash tables in memory shared by the
 * supervisor and every worker (a MAP_SHARED memfd mapped before the workers fork).
 *
 * Why C: a count that two processes change at once must change with one atomic
 * instruction, and a stick table that two processes fill at once must let exactly
 * one of them create an entry. Python has neither across processes. The pure-Python
 * twin (pyvs/shared/pyzone.py) keeps the same layout and algorithms and takes a
 * byte-range lock (fcntl) where this file uses an atomic instruction or a spinlock;
 * the test suite runs the same tests against both.
 *
 * Words are int64, indexed from the start of the buffer.
 *
 * Zone(buffer)                the mapping (kept exported while the object lives)
 *   add(i, d) -> int          atomic add, returns the new value
 *   get(i) -> int / set(i, v) atomic load / store
 *   cas(i, old, new) -> bool  compare and swap
 *   table_get(base, tag, now, ttl) -> int            value or -1 (live entries only;
 *                                                    ttl > 0 pushes the expiry)
 *   table_claim(base, tag, value, now, ttl, expect) -> int   the value that holds:
 *        expect == -1: learn (a live entry wins over ``value``)
 *        expect >= 0:  move (replace only an entry still holding ``expect``)
 *        expect == -2: put (overwrite)
 *   table_del(base, tag) -> bool
 *   table_sweep(base, now, limit) -> int             expired entries removed
 *   gcra(base, tag, now, interval, tau) -> int       0 = admitted, else wait (same unit)
 *   count_add(base, tag, owner, owners, delta, limit, now, ttl) -> int
 *                                                    a key's count over all owners, or -1
 *   drop_owner(base, owner) -> int                   remove one owner's counts
 *
 * A table region at word ``base``: [lock, count, evictions, capacity, max_entries,
 * sweep cursor, 0, 0] then ``capacity`` slots of [tag, value, expires]; tag 0 is an
 * empty slot (callers never pass tag 0). Linear probing, deletion by backward
 * shift (no tombstones), so a lookup always ends at an empty slot: capacity is a
 * power of two above max_entries. A full table evicts the entry expiring first
 * among up to 8 sampled ones (counted in ``evictions``).
 *
 * The lock word holds the owner's pid. A process that dies holding it (SIGKILL
 * between two instructions) is found out by the waiters (gone, or a zombie in
 * /proc/PID/stat) and its lock taken over, so no lock is ever left held. The table
 * it was changing may then hold one duplicated or one missing entry: soft state
 * (a session balanced again, a count one off until its key is touched).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int64_t *w;
    Py_ssize_t n;
} Zone;

/* This process's pid, for lock words; refreshed in a forked child. */
static int64_t my_pid;

static void
child_after_fork(void)
{
    my_pid = (int64_t)getpid();
}

enum { H_LOCK, H_COUNT, H_EVICT, H_CAP, H_MAX, H_CURSOR, HEADER = 8, SLOT = 3 };

static int
zone_init(Zone *self, PyObject *args, PyObject *kwds)
{
    PyObject *buf;
    if (!PyArg_ParseTuple(args, "O", &buf))
        return -1;
    if (self->w != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Zone already initialised");
        return -1;
    }
    if (PyObject_GetBuffer(buf, &self->view, PyBUF_WRITABLE) < 0)
        return -1;
    if (((uintptr_t)self->view.buf) % 8 != 0) {
        PyBuffer_Release(&self->view);
        PyErr_SetString(PyExc_ValueError, "buffer not 8-byte aligned");
        return -1;
    }
    self->w = (int64_t *)self->view.buf;
    self->n = self->view.len / 8;
    return 0;
}

static void
zone_dealloc(Zone *self)
{
    if (self->w != NULL)
        PyBuffer_Release(&self->view);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
get_args(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, int64_t *out)
{
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "expected %zd arguments, got %zd", want, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        out[i] = PyLong_AsLongLong(args[i]);
        if (out[i] == -1 && PyErr_Occurred())
            return -1;
    }
    return 0;
}

static int
check_index(Zone *self, int64_t i, int64_t span)
{
    if (i < 0 || span < 0 || i + span > self->n) {
        PyErr_Format(PyExc_IndexError, "word %lld outside the zone", (long long)i);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------- plain words */

static PyObject *
zone_add(Zone *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t a[2];
    if (get_args(args, nargs, 2, a) < 0 || check_index(self, a[0], 1) < 0)
        return NULL;
    return PyLong_FromLongLong(__atomic_add_fetch(&self->w[a[0]], a[1], __ATOMIC_SEQ_CST));
}

static PyObject *
zone_get(Zone *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t a[1];
    if (get_args(args, nargs, 1, a) < 0 || check_index(self, a[0], 1) < 0)
        return NULL;
    return PyLong_FromLongLong(__atomic_load_n(&self->w[a[0]], __ATOMIC_ACQUIRE));
}

static PyObject *
zone_set(Zone *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t a[2];
    if (get_args(args, nargs, 2, a) < 0 || check_index(self, a[0], 1) < 0)
        return NULL;
    __atomic_store_n(&self->w[a[0]], a[1], __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

static PyObject *
zone_cas(Zone *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t a[3];
    if (get_args(args, nargs, 3, a) < 0 || check_index(self, a[0], 1) < 0)
        return NULL;
    int64_t expected = a[1];
    int ok = __atomic_compare_exchange_n(&self->w[a[0]], &expected, a[2], 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return PyBool_FromLong(ok);
}

/* ------------------------------------------------------------------ locks */

/* Is the process holding a lock gone? Gone, or a zombie its parent has not reaped
 * yet (kill() still succeeds on a zombie, and the supervisor that would reap it may
 * be the very process waiting here). */
static int
holder_dead(int64_t pid)
{
    if (pid <= 0)
        return 0;
    if (kill((pid_t)pid, 0) != 0 && errno == ESRCH)
        return 1;
    char path[64];
    snprintf(path, sizeof path, "/proc/%lld/stat", (long long)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return errno == ENOENT;
    char buf[512];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p != NULL && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

static void
lock(int64_t *word)
{
    unsigned spins = 0;
    for (;;) {
        int64_t expected = 0;
        if (__atomic_compare_exchange_n(word, &expected, my_pid, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return;
        if (expected == my_pid) {
            /* Never held by us while we ask (no lock is held across Python code):
             * a dead process with our (reused) pid left it. */
            return;
        }
        spins++;
        if (spins < 64)
            continue;
        sched_yield();
        if (spins % 256 == 0 && holder_dead(expected)) {
            /* The holder died with the lock: take it over. */
            if (__atomic_compare_exchange_n(word, &expected, my_pid, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
                return;
        }
    }
}

static void
unlock(int64_t *word)
{
    __atomic_store_n(word, 0, __ATOMIC_RELEASE);
}

/* ----------------------------------------------------------------- tables */

typedef struct {
    int64_t *h;     /* header */
    int64_t *s;     /* slots */
    uint64_t mask;
} Table;

static int
table_at(Zone *self, int64_t base, Table *t)
{
    if (check_index(self, base, HEADER) < 0)
        return -1;
    int64_t *h = self->w + base;
    int64_t cap = h[H_CAP];
    if (cap <= 0 || (cap & (cap - 1)) != 0 || check_index(self, base, HEADER + SLOT * cap) < 0) {
        PyErr_Format(PyExc_ValueError, "no table at word %lld", (long long)base);
        return -1;
    }
    t->h = h;
    t->s = h + HEADER;
    t->mask = (uint64_t)cap - 1;
    return 0;
}

/* The slot holding ``tag``, or the empty slot ending its probe sequence. */
static uint64_t
find(Table *t, int64_t tag, int *found)
{
    uint64_t i = (uint64_t)tag & t->mask;
    for (;;) {
        int64_t x = t->s[i * SLOT];
        if (x == tag) {
            *found = 1;
            return i;
        }
        if (x == 0) {
            *found = 0;
            return i;
        }
        i = (i + 1) & t->mask;
    }
}

static void
remove_at(Table *t, uint64_t i)
{
    uint64_t j = i;
    for (;;) {
        j = (j + 1) & t->mask;
        int64_t *sj = t->s + j * SLOT;
        if (sj[0] == 0)
            break;
        uint64_t k = (uint64_t)sj[0] & t->mask;
        int stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (stays)
            continue;
        int64_t *si = t->s + i * SLOT;
        si[0] = sj[0];
        si[1] = sj[1];
        si[2] = sj[2];
        i = j;
    }
    int64_t *si = t->s + i * SLOT;
    si[0] = 0;
    si[1] = 0;
    si[2] = 0;
    t->h[H_COUNT]--;
}

/* Make room when the table holds max_entries: drop the sampled entry expiring first. */
static void
evict_one(Table *t, int64_t tag)
{
    uint64_t i = ((uint64_t)tag * 0x9E3779B97F4A7C15ULL) & t->mask;
    int64_t best_exp = INT64_MAX;
    uint64_t best = 0;
    int seen = 0;
    for (uint64_t n = 0; n <= t->mask && seen < 8; n++, i = (i + 1) & t->mask) {
        int64_t *si = t->s + i * SLOT;
        if (si[0] == 0)
            continue;
        seen++;
        if (si[2] < best_exp) {
            best_exp = si[2];
            best = i;
        }
    }
    if (seen) {
        remove_at(t, best);
        t->h[H_EVICT]++;
    }
}

static void
insert(Table *t, int64_t tag, int64_t value, int64_t expires)
{
    int found;
    if (t->h[H_COUNT] >= t->h[H_MAX])
        evict_one(t, tag);
    uint64_t i = find(t, tag, &found);
    int64_t *si = t->s + i * SLOT;
    if (!found)
        t->h[H_COUNT]++;
    si[0] = tag;
    si[1] = value;
    si[2] = expires;
}

static PyObject *
zone_table_get(Zone *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t a[4];
    Table t;
    if (get_args(args, nargs, 4, a) < 0 || table_at(self, a[0], &t) < 0)
        return NULL;
    int64_t tag = a[1], now = a[2], ttl = a[3], out = -1;
    int found;
    lock(&t.h[H_LOCK]);
    uint64_t i = find(&t, tag, &found);
    if (found) {
        int64_t *si = t.s + i * SLOT;
        if (si[2] > now) {
            out = si[1];
            if (ttl > 0 && now + ttl > si[2])
                si[2] = now + ttl;
        }
        else
            remove_at(&t, i);
    }
    unlock(&t.h[H_LOCK]);
    return PyLong_FromLongLong(out);
}

static PyObject *
zone_table_claim(Zone *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t a[6];
    Table t;
    if (get_args(args, nargs, 6, a) < 0 || table_at(self, a[0], &t) < 0)
        return NULL;
    int64_t tag = a[1], value = a[2], now = a[3], ttl = a[4], expect = a[5], out = value;
    int found;
    lock(&t.h[H_LOCK]);
    uint64_t i = find(&t, tag, &found);
    if (found && t.s[i * SLOT + 2] > now) {
        int64_t *si = t.s + i * SLOT;
        if (expect == -2 || (expect >= 0 && si[1] == expect))
            si[1] = value;
        else
            out = si[1];
        si[2] = now + ttl;
    }
    else if (found) {
        int64_t *si = t.s + i * SLOT;
        si[1] = value;
        si[2] = now + ttl;
    }
    else
        insert(&t, tag, value, now + ttl);
    unlock(&t.h[H_LOCK]);
    return PyLong_FromLongLong(out);
}

static PyObject *
zone_table_del(Zone *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t a[2];
    Table t;
    if (get_args(args, nargs, 2, a) < 0 || table_at(self, a[0], &t) < 0)
        return NULL;
    int found;
    lock(&t.h[H_LOCK]);
    uint64_t i = find(&t, a[1], &found);
    if (found)
        remove_at(&t, i);
    unlock(&t.h[H_LOCK]);
    return PyBool_FromLong(found);
}

static PyObject *
zone_table_sweep(Zone *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t a[3];
    Table t;
    if (get_args(args, nargs, 3, a) < 0 || table_at(self, a[0], &t) < 0)
        return NULL;
    int64_t now = a[1], limit = a[2], removed = 0;
    lock(&t.h[H_LOCK]);
    uint64_t i = (uint64_t)t.h[H_CURSOR] & t.mask;
    for (int64_t n = 0; n < limit; n++) {
        int64_t *si = t.s + i * SLOT;
        if (si[0] != 0 && si[2] <= now) {
            remove_at(&t, i);
            removed++;
            continue; /* a later entry may have moved into slot i: look again */
        }
        i = (i + 1) & t.mask;
    }
    t.h[H_CURSOR] = (int64_t)i;
    unlock(&t.h[H_LOCK]);
    return PyLong_FromLongLong(removed);
}

static PyObject *
zone_gcra(Zone *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t a[5];
    Table t;
    if (get_args(args, nargs, 5, a) < 0 || table_at(self, a[0], &t) < 0)
        return NULL;
    int64_t tag = a[1], now = a[2], interval = a[3], tau = a[4], wait = 0;
    int found;
    lock(&t.h[H_LOCK]);
    uint64_t i = find(&t, tag, &found);
    int64_t tat = found ? t.s[i * SLOT + 1] : now;
    if (tat < now)
        tat = now;
    if (tat - now > tau)
        wait = tat - now - tau;
    else if (found) {
        t.s[i * SLOT + 1] = tat + interval;
        t.s[i * SLOT + 2] = tat + interval;
    }
    else
        insert(&t, tag, tat + interval, tat + interval);
    unlock(&t.h[H_LOCK]);
    return PyLong_FromLongLong(wait);
}

/* The tag of (key, owner): one entry per worker per key (counts a worker owns). */
static int64_t
owner_tag(int64_t tag, int64_t owner)
{
    int64_t t = (int64_t)(((uint64_t)tag + (uint64_t)(owner + 1) * 0x9E3779B97F4A7C15ULL) & 0x7FFFFFFFFFFFFFFFULL);
    return t ? t : 1;
}

/* count_add(base, tag, owner, owners, delta, limit, now, ttl) -> the key's total over
 * every owner after the change, or -1 (nothing changed) when ``delta`` > 0 would take
 * it above ``limit`` (0: no limit). Values are owner << 32 | count. */
static PyObject *
zone_count_add(Zone *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t a[8];
    Table t;
    if (get_args(args, nargs, 8, a) < 0 || table_at(self, a[0], &t) < 0)
        return NULL;
    int64_t tag = a[1], owner = a[2], owners = a[3], delta = a[4], limit = a[5], now = a[6], ttl = a[7];
    if (owner < 0 || owner >= owners || owners > 4096) {
        PyErr_SetString(PyExc_ValueError, "owner outside 0..owners-1");
        return NULL;
    }
    int found;
    int64_t total = 0, mine = 0;
    lock(&t.h[H_LOCK]);
    for (int64_t i = 0; i < owners; i++) {
        uint64_t j = find(&t, owner_tag(tag, i), &found);
        if (found) {
            int64_t c = t.s[j * SLOT + 1] & 0xFFFFFFFF;
            total += c;
            if (i == owner)
                mine = c;
        }
    }
    if (delta > 0 && limit > 0 && total + delta > limit) {
        unlock(&t.h[H_LOCK]);
        return PyLong_FromLongLong(-1);
    }
    int64_t own = mine + delta;
    if (own < 0)
        own = 0;
    total += own - mine;
    int64_t mt = owner_tag(tag, owner);
    uint64_t j = find(&t, mt, &found);
    if (own == 0) {
        if (found)
            remove_at(&t, j);
    }
    else if (found) {
        t.s[j * SLOT + 1] = (owner << 32) | own;
        t.s[j * SLOT + 2] = now + ttl;
    }
    else
        insert(&t, mt, (owner << 32) | own, now + ttl);
    unlock(&t.h[H_LOCK]);
    return PyLong_FromLongLong(total);
}

/* drop_owner(base, owner) -> entries removed: a dead worker's counts. */
static PyObject *
zone_drop_owner(Zone *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t a[2];
    Table t;
    if (get_args(args, nargs, 2, a) < 0 || table_at(self, a[0], &t) < 0)
        return NULL;
    int64_t removed = 0;
    lock(&t.h[H_LOCK]);
    for (uint64_t i = 0; i <= t.mask;) {
        int64_t *si = t.s + i * SLOT;
        if (si[0] != 0 && (si[1] >> 32) == a[1]) {
            remove_at(&t, i);
            removed++;
            continue;
        }
        i++;
    }
    unlock(&t.h[H_LOCK]);
    return PyLong_FromLongLong(removed);
}

static PyMethodDef zone_methods[] = {
    {"add", (PyCFunction)(void (*)(void))zone_add, METH_FASTCALL, "add(i, d) -> new value (atomic)"},
    {"get", (PyCFunction)(void (*)(void))zone_get, METH_FASTCALL, "get(i) -> value"},
    {"set", (PyCFunction)(void (*)(void))zone_set, METH_FASTCALL, "set(i, v)"},
    {"cas", (PyCFunction)(void (*)(void))zone_cas, METH_FASTCALL, "cas(i, old, new) -> bool"},
    {"table_get", (PyCFunction)(void (*)(void))zone_table_get, METH_FASTCALL, "live value of tag or -1"},
    {"table_claim", (PyCFunction)(void (*)(void))zone_table_claim, METH_FASTCALL, "learn, move or put"},
    {"table_del", (PyCFunction)(void (*)(void))zone_table_del, METH_FASTCALL, "remove tag"},
    {"table_sweep", (PyCFunction)(void (*)(void))zone_table_sweep, METH_FASTCALL, "remove expired entries"},
    {"gcra", (PyCFunction)(void (*)(void))zone_gcra, METH_FASTCALL, "rate limit: 0 or the wait"},
    {"count_add", (PyCFunction)(void (*)(void))zone_count_add, METH_FASTCALL, "per-key counts by owner"},
    {"drop_owner", (PyCFunction)(void (*)(void))zone_drop_owner, METH_FASTCALL, "remove an owner's counts"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ZoneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pyvs.shared._zone.Zone",
    .tp_basicsize = sizeof(Zone),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Atomic words and locked hash tables over a shared writable buffer.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)zone_init,
    .tp_dealloc = (destructor)zone_dealloc,
    .tp_methods = zone_methods,
};

static struct PyModuleDef zone_module = {
    PyModuleDef_HEAD_INIT, "_zone", "Shared-memory words and tables for pyvs workers.", -1, NULL,
};

PyMODINIT_FUNC
PyInit__zone(void)
{
    if (PyType_Ready(&ZoneType) < 0)
        return NULL;
    my_pid = (int64_t)getpid();
    if (pthread_atfork(NULL, NULL, child_after_fork) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    PyObject *m = PyModule_Create(&zone_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ZoneType);
    if (PyModule_AddObject(m, "Zone", (PyObject *)&ZoneType) < 0) {
        Py_DECREF(&ZoneType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
