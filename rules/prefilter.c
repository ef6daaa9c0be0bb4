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

/*
 * All literals of a rule set in one pass (Wu-Manber with blocks of two
 * bytes): instead of one literal search per literal per body, every body
 * is read once and a bit set says which literals occur; each regex then
 * asks its own bits. With m the shortest literal, the window is m bytes
 * and the table tells, for the last two bytes of the window (case folded,
 * hashed), how far the window may move without stepping over the start of
 * any literal: up to m - 1 bytes per look. Where it may not move, the
 * literals whose first m bytes end in that block (hashed) are compared in
 * full.
 * Hash collisions only shorten moves and add comparisons: never a miss.
 */
#define SCAN_HASH 4096

struct pc_rl_scan {
    size_t n, m;
    unsigned char *s[PC_RL_SCAN_MAX]; /* folded to ASCII lower case, as the search ignores it */
    size_t len[PC_RL_SCAN_MAX];
    int16_t next[PC_RL_SCAN_MAX];
    int16_t first[SCAN_HASH];
    /* by the window's last two bytes as they are (a | b << 8), every case of them: no folding
     * per byte where the window moves on, which is nearly everywhere */
    uint8_t *shift;
    struct pc_pool *pool;
};

/* fold - ASCII lower case (PCRE2's caseless literal without UTF folds only ASCII) */
static inline unsigned char fold(unsigned char c)
{
    return (unsigned char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
}

/* upper - ASCII upper case, the other case fold() takes to the same byte */
static inline unsigned char upper(unsigned char c)
{
    return (unsigned char)(c >= 'a' && c <= 'z' ? c - 32 : c);
}

/* block - the hash of two folded bytes */
static inline unsigned block(unsigned char a, unsigned char b)
{
    return ((unsigned)fold(a) * 61u + fold(b)) & (SCAN_HASH - 1);
}

/* pc_rl_scan_new - an empty set of literals */
struct pc_rl_scan *pc_rl_scan_new(struct pc_pool *pool)
{
    struct pc_rl_scan *sc = pc_pool_zalloc(pool, sizeof(*sc));

    sc->pool = pool;
    return sc;
}

/* pc_rl_scan_add - one literal (at least LIT_MIN bytes); its id, or -1 when the set is full */
int pc_rl_scan_add(struct pc_rl_scan *sc, const char *lit, size_t len)
{
    if (sc->n == PC_RL_SCAN_MAX || len < LIT_MIN)
        return -1;
    unsigned char *f = pc_pool_alloc(sc->pool, len);
    for (size_t i = 0; i < len; i++)
        f[i] = fold((unsigned char)lit[i]);
    sc->s[sc->n] = f;
    sc->len[sc->n] = len;
    return (int)sc->n++;
}

/* lower_shift - the window may move at most sh where it ends in a, b (folded) in any case */
static void lower_shift(struct pc_rl_scan *sc, unsigned char a, unsigned char b, uint8_t sh)
{
    unsigned char as[2] = {a, upper(a)}, bs[2] = {b, upper(b)};

    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            unsigned x = as[i] | (unsigned)bs[j] << 8;
            if (sh < sc->shift[x])
                sc->shift[x] = sh;
        }
}

/* pc_rl_scan_seal - the tables, once every literal is in */
void pc_rl_scan_seal(struct pc_rl_scan *sc)
{
    sc->m = SIZE_MAX;
    for (size_t k = 0; k < sc->n; k++)
        if (sc->len[k] < sc->m)
            sc->m = sc->len[k];
    if (sc->n == 0)
        return;
    size_t m = sc->m < 256 ? sc->m : 255; /* shifts fit a byte; a shorter window is still sound */
    sc->m = m;
    sc->shift = pc_pool_alloc(sc->pool, 65536);
    memset(sc->shift, (int)(m - 1), 65536);
    memset(sc->first, -1, sizeof(sc->first));
    for (size_t k = 0; k < sc->n; k++) {
        for (size_t j = 1; j < m; j++)
            lower_shift(sc, sc->s[k][j - 1], sc->s[k][j], (uint8_t)(m - 1 - j));
        unsigned h = block(sc->s[k][m - 2], sc->s[k][m - 1]);
        sc->next[k] = sc->first[h];
        sc->first[h] = (int16_t)k;
    }
}

/* eq_fold - does text start with the folded literal */
static bool eq_fold(const unsigned char *t, const unsigned char *lit, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (fold(t[i]) != lit[i])
            return false;
    return true;
}

/* candidates - the window starting at st may begin a literal: compare those that fit */
static void candidates(const struct pc_rl_scan *sc, const unsigned char *t, size_t len, size_t st,
                       unsigned h, uint64_t *found)
{
    for (int k = sc->first[h]; k >= 0; k = sc->next[k])
        if (len - st >= sc->len[k] && eq_fold(t + st, sc->s[k], sc->len[k]))
            found[k / 64] |= (uint64_t)1 << (k % 64);
}

/* pc_rl_scan_run - which literals occur in text: their bits in found */
void pc_rl_scan_run(const struct pc_rl_scan *sc, const char *text, size_t len,
                    uint64_t found[PC_RL_SCAN_MAX / 64])
{
    const unsigned char *t = (const unsigned char *)text;
    size_t m = sc->m;

    memset(found, 0, PC_RL_SCAN_MAX / 8);
    if (sc->n == 0 || len < m)
        return;
    for (size_t i = m - 1; i < len;) {
        size_t sh = sc->shift[t[i - 1] | (unsigned)t[i] << 8];
        if (sh) {
            i += sh;
            continue;
        }
        candidates(sc, t, len, i - (m - 1), block(t[i - 1], t[i]), found);
        i++;
    }
}
