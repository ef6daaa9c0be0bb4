/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	authdb 3 - the password file back end, dispatch, and the failure counter
 * DESCRIPTION
 *	The password file is read into a sorted table (user, hash). A check
 *	copies the hash and the password into a work item that a worker
 *	thread verifies with crypt_rn; the result comes back to the loop by
 *	the worker pool's completion queue. The table is never shared with
 *	a worker, so a reload can replace it while checks are in flight.
 * SEE ALSO
 *	crypt(5), crypt_rn(3), RFC 4954 section 6
 */
#include <crypt.h>
#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "filters/filter.h"
#include "gateway/authdb_int.h"
#include "gateway/worker.h"

/* A password file line longer than this is an error, not something to guess at. */
#define PASSWD_MAX_LINE 4096

struct pw_entry {
    char *user, *hash; /* hash NULL: a locked account ("!" or "*"), never matches */
};

struct pw_table {
    struct pw_entry *e;
    size_t n;
    char *dummy; /* a real hash of the file, so an unknown user costs a crypt too */
};

struct pw_db {
    struct pc_authdb base;
    char *path, *origin;
    struct pc_workers *workers;
    struct pw_table t;
};

struct pw_req {
    struct pc_auth_req base;
    pc_auth_cb *cb;
    void *arg;
    bool cancelled, known, ok;
    char *hash;
    char *pass;
    size_t passlen;
};

/* pc_authdb_start - dispatch */
struct pc_auth_req *pc_authdb_start(struct pc_authdb *db, const struct pc_auth_creds *c,
                                    pc_auth_cb *cb, void *arg)
{
    return db->ops->start(db, c, cb, arg);
}

/* pc_auth_cancel - dispatch */
void pc_auth_cancel(struct pc_auth_req *r)
{
    if (r)
        r->db->ops->cancel(r);
}

/* pc_authdb_free - dispatch */
void pc_authdb_free(struct pc_authdb *db)
{
    if (db)
        db->ops->destroy(db);
}

/* hash_ok - a crypt(3) hash of a family we accept: strong, salted, tunable cost */
static bool hash_ok(const char *h)
{
    static const char *const prefixes[] = {"$y$",  "$gy$", "$7$", "$2b$",
                                           "$2y$", "$2a$", "$6$", "$5$"};
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        if (strncmp(h, prefixes[i], strlen(prefixes[i])) == 0 &&
            strlen(h) > strlen(prefixes[i]) + 8)
            return true;
    return false;
}

/* strip_scheme - "{SHA512-CRYPT}$6$..." -> "$6$..."; NULL for a scheme we do not take */
static const char *strip_scheme(const char *h)
{
    static const char *const schemes[] = {"{CRYPT}", "{YESCRYPT}", "{BLF-CRYPT}", "{SHA512-CRYPT}",
                                          "{SHA256-CRYPT}"};
    if (h[0] != '{')
        return h;
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
        if (strncasecmp(h, schemes[i], strlen(schemes[i])) == 0)
            return h + strlen(schemes[i]);
    return NULL;
}

/* table_free - entries and strings */
static void table_free(struct pw_table *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->e[i].user);
        free(t->e[i].hash);
    }
    free(t->e);
    free(t->dummy);
    memset(t, 0, sizeof(*t));
}

/* entry_cmp - by user name, case-insensitively (user names as Dovecot's %Lu compares them) */
static int entry_cmp(const void *a, const void *b)
{
    return strcasecmp(((const struct pw_entry *)a)->user, ((const struct pw_entry *)b)->user);
}

/* parse_line - "user:hash[:...]" into e; NULL or why not */
static const char *parse_line(char *line, struct pw_entry *e)
{
    char *colon = strchr(line, ':');

    if (colon == NULL || colon == line)
        return "expected user:hash";
    *colon = 0;
    char *hash = colon + 1, *end = strchr(hash, ':');
    if (end)
        *end = 0;
    for (const char *p = line; *p; p++)
        if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p))
            return "white space or a control character in the user name";
    if (hash[0] == '!' || hash[0] == '*') { /* a locked account */
        e->hash = NULL;
    } else {
        const char *h = strip_scheme(hash);
        if (h == NULL)
            return "unsupported {SCHEME} (use a crypt(3) hash: {CRYPT}, {YESCRYPT}, "
                   "{BLF-CRYPT}, {SHA512-CRYPT}, {SHA256-CRYPT})";
        if (!hash_ok(h))
            return "not a yescrypt, bcrypt, sha512-crypt or sha256-crypt hash";
        if ((e->hash = strdup(h)) == NULL)
            return "out of memory";
    }
    if ((e->user = strdup(line)) == NULL)
        return "out of memory";
    return NULL;
}

/* table_load - read path; -1 and err "origin: path:line: why" */
static int table_load(const char *path, const char *origin, struct pw_table *t, struct pc_err *err)
{
    FILE *f = fopen(path, "r");
    char line[PASSWD_MAX_LINE + 2];
    size_t cap = 0;
    int lineno = 0;
    const char *why = NULL;

    memset(t, 0, sizeof(*t));
    if (f == NULL) {
        snprintf(err->msg, sizeof(err->msg), "%s: password_file %s: %s", origin, path,
                 strerror(errno));
        return -1;
    }
    while (why == NULL && fgets(line, sizeof(line), f)) {
        lineno++;
        size_t len = strlen(line);
        if (len > PASSWD_MAX_LINE || (len > 0 && line[len - 1] != '\n' && !feof(f))) {
            why = "line too long";
            break;
        }
        line[strcspn(line, "\r\n")] = 0;
        if (line[0] == 0 || line[0] == '#')
            continue;
        if (t->n == cap) {
            cap = cap ? 2 * cap : 64;
            struct pw_entry *ne = realloc(t->e, cap * sizeof(*ne));
            if (ne == NULL) {
                why = "out of memory";
                break;
            }
            t->e = ne;
        }
        memset(&t->e[t->n], 0, sizeof(t->e[0]));
        why = parse_line(line, &t->e[t->n]);
        t->n++;
        explicit_bzero(line, sizeof(line));
    }
    fclose(f);
    if (why == NULL && t->n > 1) {
        qsort(t->e, t->n, sizeof(t->e[0]), entry_cmp);
        for (size_t i = 1; i < t->n && why == NULL; i++)
            if (entry_cmp(&t->e[i - 1], &t->e[i]) == 0)
                why = "a user appears twice", lineno = 0;
    }
    for (size_t i = 0; why == NULL && i < t->n && t->dummy == NULL; i++)
        if (t->e[i].hash && (t->dummy = strdup(t->e[i].hash)) == NULL)
            why = "out of memory";
    if (why) {
        if (lineno)
            snprintf(err->msg, sizeof(err->msg), "%s: password_file %s:%d: %s", origin, path,
                     lineno, why);
        else
            snprintf(err->msg, sizeof(err->msg), "%s: password_file %s: %s", origin, path, why);
        table_free(t);
        return -1;
    }
    return 0;
}

/* pw_work - on a worker thread: the expensive part */
static void pw_work(void *arg)
{
    struct pw_req *r = arg;
    struct crypt_data *cd = calloc(1, sizeof(*cd));

    r->ok = false;
    if (cd && r->hash) {
        const char *out = crypt_rn(r->pass, r->hash, cd, sizeof(*cd));
        /* crypt_rn returns NULL (or a "*" string) on a malformed setting. */
        r->ok = out && out[0] != '*' && strlen(out) == strlen(r->hash) &&
                CRYPTO_memcmp(out, r->hash, strlen(out)) == 0 && r->known;
    }
    if (cd) {
        explicit_bzero(cd, sizeof(*cd));
        free(cd);
    }
    explicit_bzero(r->pass, r->passlen);
}

/* pw_done - on the loop: answer unless cancelled */
static void pw_done(void *arg)
{
    struct pw_req *r = arg;

    if (!r->cancelled)
        r->cb(r->ok ? PC_AUTH_OK : PC_AUTH_FAIL, r->arg);
    free(r->hash);
    free(r->pass);
    free(r);
}

/* pw_start - look the user up and send the hash check to a worker */
static struct pc_auth_req *pw_start(struct pc_authdb *db, const struct pc_auth_creds *c,
                                    pc_auth_cb *cb, void *arg)
{
    struct pw_db *d = (struct pw_db *)db;
    struct pw_req *r = calloc(1, sizeof(*r));
    struct pw_entry key = {.user = (char *)c->user};
    struct pw_entry *e = d->t.n ? bsearch(&key, d->t.e, d->t.n, sizeof(key), entry_cmp) : NULL;

    if (r == NULL)
        return NULL;
    r->base.db = db, r->cb = cb, r->arg = arg;
    r->known = e && e->hash;
    /* An unknown or locked user is checked against another user's hash: the same cost. */
    const char *h = r->known ? e->hash : d->t.dummy;
    r->passlen = strlen(c->pass) + 1;
    if ((h && (r->hash = strdup(h)) == NULL) || (r->pass = malloc(r->passlen)) == NULL) {
        free(r->hash);
        free(r);
        return NULL;
    }
    memcpy(r->pass, c->pass, r->passlen);
    pc_worker_submit(d->workers, pw_work, pw_done, r);
    return &r->base;
}

/* pw_cancel - the answer will be dropped */
static void pw_cancel(struct pc_auth_req *req)
{
    ((struct pw_req *)req)->cancelled = true;
}

/* pw_destroy - work in flight owns its copies and needs nothing from here */
static void pw_destroy(struct pc_authdb *db)
{
    struct pw_db *d = (struct pw_db *)db;

    table_free(&d->t);
    free(d->path);
    free(d->origin);
    free(d);
}

static const struct pc_authdb_ops pw_ops = {
    .name = "password_file", .start = pw_start, .cancel = pw_cancel, .destroy = pw_destroy};

/* pc_authdb_passwd_new - load the file */
struct pc_authdb *pc_authdb_passwd_new(const char *path, const char *origin,
                                       struct pc_workers *workers, struct pc_err *err)
{
    struct pw_db *d = calloc(1, sizeof(*d));

    origin = origin ? origin : "auth";
    if (d == NULL || (d->path = strdup(path)) == NULL || (d->origin = strdup(origin)) == NULL) {
        snprintf(err->msg, sizeof(err->msg), "%s: out of memory", origin);
        if (d)
            free(d->path);
        free(d);
        return NULL;
    }
    d->base.ops = &pw_ops;
    d->workers = workers;
    if (table_load(path, origin, &d->t, err) < 0) {
        pw_destroy(&d->base);
        return NULL;
    }
    return &d->base;
}

/* pc_authdb_passwd_reload - a new table, or the old one and err */
int pc_authdb_passwd_reload(struct pc_authdb *db, struct pc_err *err)
{
    struct pw_db *d = (struct pw_db *)db;
    struct pw_table t;

    if (table_load(d->path, d->origin, &t, err) < 0)
        return -1;
    table_free(&d->t);
    d->t = t;
    return 0;
}

/* pc_authdb_passwd_check - parse only */
int pc_authdb_passwd_check(const char *path, const char *origin, struct pc_err *err)
{
    struct pw_table t;

    if (table_load(path, origin ? origin : "auth", &t, err) < 0)
        return -1;
    table_free(&t);
    return 0;
}

/* Failed attempts per client address. */
struct fail_slot {
    char addr[48]; /* an IPv6 text form fits in 46 */
    unsigned count;
    time_t first;
};

struct pc_authfail {
    unsigned limit, window;
    size_t n;
    struct fail_slot *slot;
};

/* pc_authfail_new - a table of max_entries slots */
struct pc_authfail *pc_authfail_new(unsigned limit, unsigned window_seconds, size_t max_entries)
{
    struct pc_authfail *f = calloc(1, sizeof(*f));

    if (f == NULL || max_entries == 0 ||
        (f->slot = calloc(max_entries, sizeof(*f->slot))) == NULL) {
        free(f);
        return NULL;
    }
    f->limit = limit, f->window = window_seconds, f->n = max_entries;
    return f;
}

/* pc_authfail_free - the table */
void pc_authfail_free(struct pc_authfail *f)
{
    if (f) {
        free(f->slot);
        free(f);
    }
}

/* fail_hash - FNV-1a of the address */
static size_t fail_hash(const char *s)
{
    unsigned long h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return (size_t)h;
}

/* PROBE - slots looked at per address: a bounded cost, and the oldest of them makes room */
#define PROBE 8

/* fail_find - the slot of addr, or (create) a free, expired or the oldest slot nearby */
static struct fail_slot *fail_find(struct pc_authfail *f, const char *addr, time_t now, bool create)
{
    size_t h = fail_hash(addr);
    struct fail_slot *victim = NULL;
    bool victim_free = false;

    for (size_t i = 0; i < PROBE && i < f->n; i++) {
        struct fail_slot *s = &f->slot[(h + i) % f->n];
        bool expired = s->addr[0] == 0 || now - s->first >= (time_t)f->window;
        if (s->addr[0] && strcmp(s->addr, addr) == 0) {
            if (expired)
                s->count = 0, s->first = now;
            return s;
        }
        /* Room: the first free or expired slot, else the one whose window began first. */
        if (expired) {
            if (!victim_free)
                victim = s, victim_free = true;
        } else if (victim == NULL || (!victim_free && s->first < victim->first)) {
            victim = s;
        }
    }
    if (!create || strlen(addr) >= sizeof(victim->addr))
        return NULL;
    snprintf(victim->addr, sizeof(victim->addr), "%s", addr);
    victim->count = 0, victim->first = now;
    return victim;
}

/* pc_authfail_add - one more failure */
unsigned pc_authfail_add(struct pc_authfail *f, const char *addr, time_t now)
{
    struct fail_slot *s = fail_find(f, addr, now, true);

    return s ? ++s->count : 0;
}

/* pc_authfail_count - failures within the window */
unsigned pc_authfail_count(struct pc_authfail *f, const char *addr, time_t now)
{
    struct fail_slot *s = fail_find(f, addr, now, false);

    return s ? s->count : 0;
}

/* pc_authfail_over - at or past the limit */
bool pc_authfail_over(struct pc_authfail *f, const char *addr, time_t now)
{
    return pc_authfail_count(f, addr, now) >= f->limit;
}
