/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	prefilter 3 - literal prefilter for regexes over a message body
 * DESCRIPTION
 *	A body regex such as /\b(viagra|cialis|levitra)\b/i costs about a
 *	millisecond per megabyte of text even JIT-compiled, because its
 *	first character is a common letter. Most messages contain none of
 *	its words. At compile time we derive from the pattern a small set
 *	of literals such that every match contains at least one of them;
 *	at run time the JIT's literal search (which looks for a rare pair of
 *	bytes, vectorised) tells in a few microseconds whether the regex
 *	can match at all, and only then does the regex run.
 *
 *	The derivation must be sound: when in doubt it gives up, and the
 *	regex then always runs. It reads a conservative subset of PCRE2
 *	syntax: literal characters and escaped punctuation, ".", classes,
 *	the escapes \b \B \A \z \Z \G \d \D \s \S \w \W \h \H \v \V \R \N
 *	\t \n \r \f \a \e and backreferences as non-literal atoms, groups
 *	"(" and "(?:", alternation and quantifiers. Anything else ("(?i)",
 *	lookarounds, \Q, \x, \p, verbs, extended mode) means no prefilter.
 *	A sequence yields its longest literal run, or the set of a group
 *	that is not optional; an alternation yields the union of its
 *	branches, each of which must yield something.
 *
 *	The literal search ignores ASCII case. A caseless regex in UTF mode
 *	also matches k and s by U+212A KELVIN SIGN and U+017F LATIN SMALL
 *	LETTER LONG S, and non-ASCII letters by their other case, so for
 *	caseless patterns those characters end a literal run.
 * SEE ALSO
 *	pcre2pattern(3), pcre2jit(3)
 */
#include <ctype.h>
#include <stdint.h>
#include <string.h>

#include "lib/pool.h"
#include "rules/rules_int.h"

#define LIT_MAX  16 /* literals per regex */
#define LIT_LEN  64 /* bytes per literal */
#define LIT_MIN  3  /* shorter literals filter too little */
#define NEST_MAX 32 /* group nesting we follow */

struct litset {
    int n;
    size_t minlen;
    char s[LIT_MAX][LIT_LEN];
    size_t len[LIT_MAX];
};

struct lx {
    const char *p, *end;
    bool icase;
    bool fail;
};

static bool lx_alt(struct lx *, struct litset *, int depth);

/* quant - skip a quantifier: 0 none, 1 may repeat zero times, 2 at least once */
static int quant(struct lx *x)
{
    int q = 0;

    if (x->p >= x->end)
        return 0;
    if (*x->p == '?' || *x->p == '*') {
        x->p++;
        q = 1;
    } else if (*x->p == '+') {
        x->p++;
        q = 2;
    } else if (*x->p == '{') {
        const char *p = x->p + 1;
        unsigned long lo = 0;
        bool digits = false;
        while (p < x->end && isdigit((unsigned char)*p))
            lo = lo * 10 + (unsigned long)(*p++ - '0'), digits = true;
        if (p < x->end && *p == ',') {
            p++;
            while (p < x->end && isdigit((unsigned char)*p))
                p++;
        }
        if (!digits || p >= x->end || *p != '}') { /* a literal "{": not in our subset */
            x->fail = true;
            return 0;
        }
        x->p = p + 1;
        q = lo == 0 ? 1 : 2;
    } else {
        return 0;
    }
    if (x->p < x->end && (*x->p == '?' || *x->p == '+')) /* lazy or possessive */
        x->p++;
    return q;
}

/* consider - keep the better candidate: the larger shortest literal */
static void consider(struct litset *best, bool *have, const struct litset *c)
{
    if (c->n == 0 || c->minlen < LIT_MIN)
        return;
    if (!*have || c->minlen > best->minlen) {
        *best = *c;
        *have = true;
    }
}

/* flush - the literal run so far becomes a candidate */
static void flush(struct litset *best, bool *have, char *run, size_t *rl)
{
    if (*rl >= LIT_MIN) {
        struct litset c = {.n = 1, .minlen = *rl};
        memcpy(c.s[0], run, *rl);
        c.len[0] = *rl;
        consider(best, have, &c);
    }
    *rl = 0;
}

/* skip_class - past "[...]"; false when it does not end */
static bool skip_class(struct lx *x)
{
    const char *p = x->p + 1;

    if (p < x->end && *p == '^')
        p++;
    if (p < x->end && *p == ']')
        p++;
    while (p < x->end && *p != ']') {
        if (*p == '\\')
            p += 2;
        else if (*p == '[' && p + 1 < x->end && p[1] == ':') {
            const char *e = p + 2;
            while (e + 1 < x->end && !(e[0] == ':' && e[1] == ']'))
                e++;
            if (e + 1 >= x->end)
                return false;
            p = e + 2;
        } else
            p++;
    }
    if (p >= x->end)
        return false;
    x->p = p + 1;
    return true;
}

/* lx_seq - one branch: the best literal set some part of every match contains */
static bool lx_seq(struct lx *x, struct litset *out, int depth)
{
    char run[LIT_LEN];
    size_t rl = 0;
    bool have = false;

    while (x->p < x->end && *x->p != '|' && *x->p != ')' && !x->fail) {
        unsigned char c = (unsigned char)*x->p;
        if (c == '(') {
            x->p++;
            if (x->p < x->end && (*x->p == '?' || *x->p == '*')) {
                if (*x->p == '?' && x->p + 1 < x->end && x->p[1] == ':')
                    x->p += 2;
                else
                    return x->fail = true, false;
            }
            if (depth >= NEST_MAX)
                return x->fail = true, false;
            struct litset g;
            bool gok = lx_alt(x, &g, depth + 1);
            if (x->fail || x->p >= x->end || *x->p != ')')
                return x->fail = true, false;
            x->p++;
            int q = quant(x);
            flush(out, &have, run, &rl);
            if (gok && q != 1)
                consider(out, &have, &g);
            continue;
        }
        if (c == '[') {
            if (!skip_class(x))
                return x->fail = true, false;
            flush(out, &have, run, &rl);
            quant(x);
            continue;
        }
        if (c == '.' || c == '^' || c == '$') {
            x->p++;
            flush(out, &have, run, &rl);
            quant(x);
            continue;
        }
        if (c == '*' || c == '+' || c == '?' || c == '{')
            return x->fail = true, false;
        if (c == '\\') {
            if (x->p + 1 >= x->end)
                return x->fail = true, false;
            unsigned char e = (unsigned char)x->p[1];
            x->p += 2;
            if (isdigit(e)) { /* a backreference */
                while (x->p < x->end && isdigit((unsigned char)*x->p))
                    x->p++;
                flush(out, &have, run, &rl);
                quant(x);
                continue;
            }
            if (isalpha(e)) {
                if (strchr("bBAzZG", e)) { /* zero width */
                    flush(out, &have, run, &rl);
                    continue;
                }
                if (strchr("dDsSwWhHvVRNtnrfae", e)) {
                    flush(out, &have, run, &rl);
                    quant(x);
                    continue;
                }
                return x->fail = true, false;
            }
            if (e < 0x20 || e >= 0x7f)
                return x->fail = true, false;
            c = e; /* escaped punctuation is itself */
        } else {
            x->p++;
        }
        /* one literal byte */
        int q = quant(x);
        if (q == 1 || (x->icase && (c >= 0x80 || strchr("kKsS", c)))) {
            flush(out, &have, run, &rl);
            continue;
        }
        if (rl == LIT_LEN)
            flush(out, &have, run, &rl);
        run[rl++] = (char)c;
        if (q == 2)
            flush(out, &have, run, &rl);
    }
    flush(out, &have, run, &rl);
    return have && !x->fail;
}

/* lx_alt - alternatives up to ")" or the end: the union of their sets */
static bool lx_alt(struct lx *x, struct litset *out, int depth)
{
    bool ok = true;

    out->n = 0;
    out->minlen = SIZE_MAX;
    for (;;) {
        struct litset b;
        memset(&b, 0, sizeof(b));
        if (!lx_seq(x, &b, depth))
            ok = false;
        if (x->fail)
            return false;
        if (ok && out->n + b.n <= LIT_MAX) {
            for (int i = 0; i < b.n; i++) {
                memcpy(out->s[out->n], b.s[i], b.len[i]);
                out->len[out->n++] = b.len[i];
                if (b.len[i] < out->minlen)
                    out->minlen = b.len[i];
            }
        } else {
            ok = false;
        }
        if (x->p < x->end && *x->p == '|') {
            x->p++;
            continue;
        }
        break;
    }
    return ok && out->n > 0;
}

/* pc_rl_prefilter - literals for a body regex into the node; false when there are none */
bool pc_rl_prefilter(struct pc_pool *pool, struct rl_node *n, const char *pat, size_t len,
                     uint32_t reflags)
{
    struct lx x = {.p = pat, .end = pat + len, .icase = (reflags & PCRE2_CASELESS) != 0};
    struct litset set;

    if (reflags & PCRE2_EXTENDED) /* blanks and comments are not literals there */
        return false;
    if (!lx_alt(&x, &set, 0) || x.fail || x.p != x.end)
        return false;
    pcre2_code **lits = pc_pool_zalloc(pool, (size_t)set.n * sizeof(*lits));
    const char **strs = pc_pool_zalloc(pool, (size_t)set.n * sizeof(*strs));
    for (int i = 0; i < set.n; i++) {
        int ec;
        PCRE2_SIZE off;
        lits[i] = pcre2_compile((PCRE2_SPTR)set.s[i], set.len[i], PCRE2_LITERAL | PCRE2_CASELESS,
                                &ec, &off, NULL);
        if (lits[i] == NULL)
            return false;
        pc_pool_cleanup(pool, (void (*)(void *))pcre2_code_free, lits[i]);
        pcre2_jit_compile(lits[i], PCRE2_JIT_COMPLETE);
        strs[i] = pc_pool_strndup(pool, set.s[i], set.len[i]);
    }
    n->lits = lits;
    n->lit_strs = strs;
    n->nlits = (size_t)set.n;
    return true;
}

/* pc_rl_prefilter_pass - could the regex match this text: does one of its literals occur */
bool pc_rl_prefilter_pass(const struct rl_node *n, const char *text, size_t len,
                          pcre2_match_data *md)
{
    for (size_t i = 0; i < n->nlits; i++)
        if (pcre2_match(n->lits[i], (PCRE2_SPTR)text, len, 0, 0, md, NULL) >= 0)
            return true;
    return false;
}
