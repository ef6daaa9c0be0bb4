/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	authres 3 - authserv-id and From domain extraction
 * DESCRIPTION
 *	Both parsers walk the raw value once with explicit states for quoted
 *	strings, comments (nested, RFC 5322 3.2.2) and angle brackets, and
 *	store bounded copies only. They are deliberately conservative: when in
 *	doubt a From value is "malformed", which DMARC treats as a failure to
 *	find the author domain rather than guessing one (the guess is what
 *	spoofing attacks exploit: "Composition Kills", USENIX Security 2020).
 * SEE ALSO
 *	RFC 8601 section 2.2, RFC 5322 section 3.2 and 3.4, RFC 7489 section 6.6.1
 */
#include "lib/authres.h"

#include <ctype.h>
#include <string.h>

#include "lib/addr.h"

/* skip_cfws - past white space, folding and (nested) comments; returns new index */
static size_t skip_cfws(const char *v, size_t len, size_t i)
{
    int depth = 0;

    for (; i < len; i++) {
        char c = v[i];
        if (depth > 0) {
            if (c == '\\' && i + 1 < len)
                i++;
            else if (c == '(')
                depth++;
            else if (c == ')')
                depth--;
            continue;
        }
        if (c == '(')
            depth++;
        else if (c != ' ' && c != '\t' && c != '\r' && c != '\n')
            break;
    }
    return i;
}

/* tspecial - RFC 2045 tspecials, which end a token */
static bool tspecial(unsigned char c)
{
    return strchr("()<>@,;:\\\"/[]?=", c) != NULL;
}

/* pc_authres_servid - RFC 8601 authserv-id (a token or a quoted-string) */
bool pc_authres_servid(const char *v, size_t len, char *out, size_t outsize)
{
    size_t i = skip_cfws(v, len, 0), o = 0;

    if (outsize == 0)
        return false;
    if (i < len && v[i] == '"') {
        for (i++; i < len && v[i] != '"'; i++) {
            if (v[i] == '\\' && i + 1 < len)
                i++;
            if ((unsigned char)v[i] < ' ' || v[i] == 0x7f) /* NUL or controls: not an id */
                return false;
            if (o + 1 >= outsize)
                return false;
            out[o++] = v[i];
        }
        if (i >= len)
            return false; /* unterminated */
    } else {
        for (; i < len; i++) {
            unsigned char c = (unsigned char)v[i];
            if (c <= ' ' || c == 0x7f || tspecial(c))
                break;
            if (o + 1 >= outsize)
                return false;
            out[o++] = (char)c;
        }
    }
    out[o] = 0;
    return o > 0;
}

#define SEG_MAX 1024

struct seg {
    char b[SEG_MAX];
    size_t n;
    bool overflow;
};

/* seg_put - append one character of the current mailbox */
static void seg_put(struct seg *s, char c)
{
    if (s->n + 1 >= SEG_MAX)
        s->overflow = true;
    else
        s->b[s->n++] = c;
}

/* add_domain - store a lower-cased domain once */
static void add_domain(struct pc_from_domains *d, const char *p, size_t n)
{
    char tmp[256];

    if (n > 0 && p[n - 1] == '.')
        n--;
    if (n == 0 || n >= sizeof(tmp) || !pc_domain_valid(p, n, true)) {
        d->malformed = true;
        return;
    }
    for (size_t i = 0; i < n; i++)
        tmp[i] = (char)tolower((unsigned char)p[i]);
    tmp[n] = 0;
    for (size_t i = 0; i < d->ndomain; i++)
        if (strcmp(d->domain[i], tmp) == 0)
            return;
    if (d->ndomain < PC_FROM_MAX_DOMAINS)
        memcpy(d->domain[d->ndomain++], tmp, n + 1);
    else
        d->malformed = true;
}

/* add_addr - the domain of an addr-spec with white space removed, if it has one */
static void add_addr(struct pc_from_domains *d, const char *p, size_t n)
{
    char addr[SEG_MAX];
    size_t an = 0;
    const char *at;

    for (size_t i = 0; i < n && an < sizeof(addr); i++)
        if (!isspace((unsigned char)p[i]))
            addr[an++] = p[i];
    if (an && (at = memrchr(addr, '@', an)) != NULL && at + 1 < addr + an) {
        bool was = d->malformed;
        add_domain(d, at + 1, an - (size_t)(at + 1 - addr));
        d->malformed = was; /* a junk fragment does not count as a bad domain twice */
    }
}

/* seg_end - one mailbox ("name <addr>" or "addr") is complete */
static void seg_end(struct seg *s, struct pc_from_domains *d)
{
    char addr[SEG_MAX];
    size_t an = 0, start = 0, end = s->n;
    const char *lt, *gt;

    if (s->overflow) {
        d->n++;
        d->malformed = true;
        goto out;
    }
    /* Empty segments ("a@b,,c@d", an empty group) are not mailboxes. */
    bool empty = true;
    for (size_t i = 0; i < s->n; i++)
        if (!isspace((unsigned char)s->b[i]))
            empty = false;
    if (empty)
        goto out;
    d->n++;
    lt = memchr(s->b, '<', s->n);
    if (lt) {
        gt = memchr(lt, '>', s->n - (size_t)(lt - s->b));
        if (gt == NULL || memchr(lt + 1, '<', s->n - (size_t)(lt + 1 - s->b)) != NULL) {
            d->malformed = true;
            goto out;
        }
        for (const char *p = gt + 1; p < s->b + s->n; p++)
            if (!isspace((unsigned char)*p)) {
                /* "<a@b>c@d" or "<a@b>\": count every domain a reader might see, so
                 * that the ambiguity is detected rather than one side chosen. */
                d->malformed = true;
                add_addr(d, lt + 1, (size_t)(gt - lt - 1));
                add_addr(d, gt + 1, (size_t)(s->b + s->n - gt - 1));
                goto out;
            }
        start = (size_t)(lt + 1 - s->b);
        end = (size_t)(gt - s->b);
    }
    for (size_t i = start; i < end; i++)
        if (!isspace((unsigned char)s->b[i]))
            addr[an++] = s->b[i];
    const char *at = an ? memrchr(addr, '@', an) : NULL;
    if (at == NULL) {
        d->malformed = true;
        goto out;
    }
    add_domain(d, at + 1, an - (size_t)(at + 1 - addr));
out:
    s->n = 0;
    s->overflow = false;
}

/* pc_from_parse - RFC 5322 mailbox-list (with group syntax tolerated) */
void pc_from_parse(const char *v, size_t len, struct pc_from_domains *d)
{
    struct seg s = {.n = 0};
    bool quoted = false, angle = false, literal = false;
    int depth = 0;

    for (size_t i = 0; i < len; i++) {
        char c = v[i];
        if (c == 0) { /* NUL never belongs in a header; an attacker's truncation trick */
            d->malformed = true;
            continue;
        }
        if (depth > 0) {
            if (c == '\\' && i + 1 < len)
                i++;
            else if (c == '(')
                depth++;
            else if (c == ')')
                depth--;
            continue;
        }
        if (quoted) {
            if (c == '\\' && i + 1 < len)
                i++;
            else if (c == '"')
                quoted = false;
            /* Quoted text can hold '@', ',' or '<': keep a neutral stand-in. */
            seg_put(&s, 'q');
            continue;
        }
        if (literal) {
            seg_put(&s, c);
            if (c == ']')
                literal = false;
            continue;
        }
        switch (c) {
        case '"':
            quoted = true;
            seg_put(&s, 'q');
            break;
        case '(':
            depth++;
            seg_put(&s, ' ');
            break;
        case '[':
            literal = true;
            seg_put(&s, c);
            break;
        case '<':
            angle = true;
            seg_put(&s, c);
            break;
        case '>':
            angle = false;
            seg_put(&s, c);
            break;
        case ',':
        case ';':
            if (angle) {
                /* obs-route "<@a,@b:u@d>" (RFC 5322 4.4): commas inside the route are fine */
                const char *lt = memrchr(s.b, '<', s.n);
                if (c == ',' && lt && lt + 1 < s.b + s.n && lt[1] == '@')
                    break;
                d->malformed = true;
                seg_put(&s, c);
                break;
            }
            seg_end(&s, d);
            break;
        case ':':
            if (angle) { /* obsolete route "<@a,@b:u@d>": keep only what follows */
                s.n = 0;
                seg_put(&s, '<');
                break;
            }
            s.n = 0; /* group display name */
            break;
        default:
            seg_put(&s, c);
        }
    }
    if (quoted || depth > 0 || angle || literal)
        d->malformed = true;
    seg_end(&s, d);
}
