/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	addr 3 - RFC 5321 path and mailbox parser
 * DESCRIPTION
 *	Strict where strictness protects the relay decision (domain syntax,
 *	quoting), lenient where real clients differ harmlessly (a missing
 *	pair of brackets, leading or doubled dots in a dot-string).
 * SEE ALSO
 *	RFC 5321 section 4.1.2
 */
#include "lib/addr.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "lib/pool.h"

/* atext - RFC 5322 3.2.3 atext */
static bool atext(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* pc_domain_valid - dot-separated labels of letters, digits, hyphens */
bool pc_domain_valid(const char *d, size_t len, bool allow_utf8)
{
    size_t label = 0;

    if (len == 0 || len > PC_DOMAIN_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)d[i];
        if (c == '.') {
            /* Empty labels are invalid; one trailing dot is tolerated. */
            if (label == 0 || d[i - 1] == '-')
                return false;
            if (i == len - 1)
                return true;
            label = 0;
            continue;
        }
        if (isalnum(c) || c == '_' || (c >= 0x80 && allow_utf8))
            ;
        else if (c == '-' && label > 0)
            ;
        else
            return false;
        if (++label > 63)
            return false;
    }
    return d[len - 1] != '-';
}

/* literal_valid - "[1.2.3.4]", "[IPv6:...]" or "[tag:content]" */
static bool literal_valid(const char *d, size_t len)
{
    if (len < 3 || d[0] != '[' || d[len - 1] != ']')
        return false;
    for (size_t i = 1; i < len - 1; i++) {
        unsigned char c = (unsigned char)d[i];
        /* dcontent: %d33-90 / %d94-126, i.e. printable without [ \ ] */
        if (c < 33 || c > 126 || c == '[' || c == '\\' || c == ']')
            return false;
    }
    return true;
}

/* pc_path_parse - parse "<[route:]mailbox>" or "<>" */
const char *pc_path_parse(const char *s, size_t len, struct pc_pool *pool, struct pc_mailbox *mb,
                          size_t *end)
{
    size_t i = 0, stop;
    bool bracket;

    memset(mb, 0, sizeof(*mb));
    mb->addr = mb->local = mb->domain = "";
    bracket = len > 0 && s[0] == '<';
    if (bracket) {
        i = 1;
        const char *gt = NULL;
        /* Find the closing bracket outside quotes. */
        bool q = false;
        for (size_t k = 1; k < len; k++) {
            if (q && s[k] == '\\' && k + 1 < len) {
                k++;
                continue;
            }
            if (s[k] == '"')
                q = !q;
            else if (!q && s[k] == '>') {
                gt = s + k;
                break;
            }
        }
        if (gt == NULL)
            return "missing closing '>'";
        stop = (size_t)(gt - s);
        *end = stop + 1;
    } else {
        stop = 0;
        while (stop < len && s[stop] != ' ')
            stop++;
        *end = stop;
    }
    if (stop - i > PC_PATH_MAX)
        return "address too long";
    if (stop == i) {
        if (!bracket)
            return "missing address";
        mb->null = true;
        return NULL;
    }
    /* Source route: @dom[,@dom]: (RFC 5321 4.1.2 A-d-l), accepted and dropped. */
    if (s[i] == '@') {
        const char *colon = memchr(s + i, ':', stop - i);
        if (colon == NULL)
            return "bad source route";
        size_t k = i;
        while (k < (size_t)(colon - s)) {
            if (s[k] != '@')
                return "bad source route";
            size_t e = k + 1;
            while (e < (size_t)(colon - s) && s[e] != ',')
                e++;
            if (!pc_domain_valid(s + k + 1, e - k - 1, false))
                return "bad source route";
            k = e + (s[e] == ',');
        }
        mb->route = true;
        i = (size_t)(colon - s) + 1;
    }
    /* Local part. */
    size_t lstart = i;
    char local[PC_PATH_MAX + 1];
    size_t ll = 0;
    if (i < stop && s[i] == '"') {
        mb->quoted = true;
        for (i++; i < stop && s[i] != '"'; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c == '\\') {
                if (++i >= stop || (unsigned char)s[i] < 32 || (unsigned char)s[i] > 126)
                    return "bad quoted local part";
                c = (unsigned char)s[i];
            } else if (c < 32 || c == 127) {
                return "bad character in address";
            }
            if (c >= 0x80)
                mb->utf8 = true;
            local[ll++] = (char)c;
        }
        if (i >= stop)
            return "unterminated quoted local part";
        i++;
    } else {
        for (; i < stop && s[i] != '@'; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c >= 0x80)
                mb->utf8 = true;
            else if (!atext(c) && c != '.')
                return "bad character in address";
            local[ll++] = (char)c;
        }
    }
    local[ll] = 0;
    size_t lend = i;
    if (ll == 0 && !mb->quoted)
        return "empty local part";
    if (i == stop) {
        /* RCPT TO:<Postmaster> is the one domain-less address (RFC 5321 4.1.1.3). */
        if (strcasecmp(local, "postmaster") != 0 || mb->quoted)
            return "missing domain";
        mb->addr = mb->local = pc_pool_strdup(pool, local);
        return NULL;
    }
    if (s[i] != '@')
        return "bad character in address";
    i++;
    const char *dom = s + i;
    size_t dl = stop - i;
    if (dl > 0 && dom[0] == '[') {
        if (!literal_valid(dom, dl))
            return "bad address literal";
        mb->literal = true;
    } else if (!pc_domain_valid(dom, dl, true)) {
        return "bad domain";
    }
    for (size_t k = 0; k < dl; k++)
        if ((unsigned char)dom[k] >= 0x80)
            mb->utf8 = true;
    mb->local = pc_pool_strdup(pool, local);
    mb->domain = pc_pool_strndup(pool, dom, dl);
    mb->addr = pc_pool_strndup(pool, s + lstart, stop - lstart);
    (void)lend;
    return NULL;
}

/* pc_domain_eq - case-insensitive, ignoring a trailing dot */
bool pc_domain_eq(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);

    if (la && a[la - 1] == '.')
        la--;
    if (lb && b[lb - 1] == '.')
        lb--;
    return la == lb && strncasecmp(a, b, la) == 0;
}

/* pc_domain_match - "example.com" matches itself; ".example.com" matches its subdomains */
bool pc_domain_match(const char *d, const char *pattern)
{
    if (pattern[0] != '.')
        return pc_domain_eq(d, pattern);
    size_t ld = strlen(d), lp = strlen(pattern);
    if (ld && d[ld - 1] == '.')
        ld--;
    /* ".example.com." is the same pattern as ".example.com", as pc_domain_eq has it. */
    if (lp > 1 && pattern[lp - 1] == '.')
        lp--;
    return ld > lp && strncasecmp(d + ld - lp, pattern, lp) == 0;
}
