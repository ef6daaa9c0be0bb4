/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	senderlogin 3 - the sender login map
 * DESCRIPTION
 *	Read once per configuration generation into a sorted table of keys,
 *	each with its owners; a lookup is at most three binary searches.
 * SEE ALSO
 *	postconf(5) smtpd_sender_login_maps
 */
#include "gateway/senderlogin.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "filters/filter.h"

/* Bounds: a line, and an address as RFC 5321 section 4.5.3.1 bounds a path. */
#define MAP_MAX_LINE    4096
#define MAP_MAX_ADDRESS 256

struct sender_entry {
    char *key;
    char **owners;
    size_t nowners;
};

struct pc_senders {
    struct sender_entry *e;
    size_t n;
};

/* entry_cmp - by key, case-insensitively */
static int entry_cmp(const void *a, const void *b)
{
    return strcasecmp(((const struct sender_entry *)a)->key, ((const struct sender_entry *)b)->key);
}

/* pc_senders_free - every entry */
void pc_senders_free(struct pc_senders *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n; i++) {
        for (size_t k = 0; k < m->e[i].nowners; k++)
            free(m->e[i].owners[k]);
        free(m->e[i].owners);
        free(m->e[i].key);
    }
    free(m->e);
    free(m);
}

/* key_ok - "local@domain" or "@domain", no blanks, bounded */
static bool key_ok(const char *k)
{
    const char *at = strrchr(k, '@');

    return at && at[1] && strlen(k) <= MAP_MAX_ADDRESS && strchr(k, '@') == at;
}

/* parse_line - "key owner[, owner...]" into e; NULL or why not */
static const char *parse_line(char *line, struct sender_entry *e)
{
    char *save = NULL, *key = strtok_r(line, " \t", &save);

    if (key == NULL || !key_ok(key))
        return "expected an address or @domain, then its owners";
    if ((e->key = strdup(key)) == NULL)
        return "out of memory";
    for (char *o; (o = strtok_r(NULL, " \t,", &save)) != NULL;) {
        char **no = realloc(e->owners, (e->nowners + 1) * sizeof(*no));
        if (no == NULL)
            return "out of memory";
        e->owners = no;
        if ((e->owners[e->nowners] = strdup(o)) == NULL)
            return "out of memory";
        e->nowners++;
    }
    return e->nowners ? NULL : "a key without owners";
}

/* pc_senders_load - read the map */
struct pc_senders *pc_senders_load(const char *path, const char *origin, struct pc_err *err)
{
    struct pc_senders *m = calloc(1, sizeof(*m));
    FILE *f = fopen(path, "r");
    char line[MAP_MAX_LINE + 2];
    size_t cap = 0;
    int lineno = 0;
    const char *why = NULL;

    origin = origin ? origin : "sender_login_map";
    if (m == NULL || f == NULL) {
        snprintf(err->msg, sizeof(err->msg), "%s: %s: %s", origin, path,
                 m ? strerror(errno) : "out of memory");
        if (f)
            fclose(f);
        free(m);
        return NULL;
    }
    while (why == NULL && fgets(line, sizeof(line), f)) {
        lineno++;
        size_t len = strlen(line);
        if (len > MAP_MAX_LINE || (len > 0 && line[len - 1] != '\n' && !feof(f))) {
            why = "line too long";
            break;
        }
        char *p = line + strspn(line, " \t");
        p[strcspn(p, "\r\n")] = 0;
        if (*p == 0 || *p == '#')
            continue;
        if (m->n == cap) {
            cap = cap ? 2 * cap : 64;
            struct sender_entry *ne = realloc(m->e, cap * sizeof(*ne));
            if (ne == NULL) {
                why = "out of memory";
                break;
            }
            m->e = ne;
        }
        memset(&m->e[m->n], 0, sizeof(m->e[0]));
        m->n++;
        why = parse_line(p, &m->e[m->n - 1]);
    }
    fclose(f);
    if (why == NULL && m->n > 1) {
        qsort(m->e, m->n, sizeof(m->e[0]), entry_cmp);
        for (size_t i = 1; i < m->n && why == NULL; i++)
            if (entry_cmp(&m->e[i - 1], &m->e[i]) == 0)
                why = "a key appears twice", lineno = 0;
    }
    if (why) {
        if (lineno)
            snprintf(err->msg, sizeof(err->msg), "%s: %s:%d: %s", origin, path, lineno, why);
        else
            snprintf(err->msg, sizeof(err->msg), "%s: %s: %s", origin, path, why);
        pc_senders_free(m);
        return NULL;
    }
    return m;
}

/* find - the entry for key */
static const struct sender_entry *find(const struct pc_senders *m, const char *key)
{
    struct sender_entry k = {.key = (char *)key};

    return m->n ? bsearch(&k, m->e, m->n, sizeof(k), entry_cmp) : NULL;
}

/* lookup - address, address without +extension, @domain */
static const struct sender_entry *lookup(const struct pc_senders *m, const char *address)
{
    char buf[MAP_MAX_ADDRESS + 1];
    const char *at = strrchr(address, '@');
    const struct sender_entry *e;

    if ((e = find(m, address)) != NULL)
        return e;
    if (at == NULL)
        return NULL;
    const char *plus = memchr(address, '+', (size_t)(at - address));
    if (plus && plus > address &&
        snprintf(buf, sizeof(buf), "%.*s%s", (int)(plus - address), address, at) <
            (int)sizeof(buf) &&
        (e = find(m, buf)) != NULL)
        return e;
    return find(m, at);
}

/* pc_senders_check - may user use address? */
enum pc_sender_result pc_senders_check(const struct pc_senders *m, const char *user,
                                       const char *address)
{
    if (address == NULL || address[0] == 0) /* the null sender */
        return user ? PC_SENDER_ALLOWED : PC_SENDER_UNMAPPED;
    if (strlen(address) > MAP_MAX_ADDRESS)
        return user ? PC_SENDER_MISMATCH : PC_SENDER_UNMAPPED;
    const struct sender_entry *e = lookup(m, address);
    if (user == NULL)
        return e ? PC_SENDER_OWNED : PC_SENDER_UNMAPPED;
    for (size_t i = 0; e && i < e->nowners; i++)
        if (strcasecmp(e->owners[i], user) == 0)
            return PC_SENDER_ALLOWED;
    return PC_SENDER_MISMATCH;
}
