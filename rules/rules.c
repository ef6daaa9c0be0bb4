/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	rules 3 - the rule language: lexer, parser and compiler
 * DESCRIPTION
 *	A hand-written recursive-descent parser over a one-token lookahead.
 *	Regular expressions are lexed only where the grammar expects one
 *	(after "~" or "!~"), so "/" needs no escaping anywhere else. Each
 *	error is reported with its file, line and column, and the parser
 *	then skips to the next statement keyword (rule, list, threshold,
 *	score-header), so one run lists every error in every file.
 *
 *	The result is read-only: regexes are JIT-compiled once and matched
 *	with a shared match context that carries the match and depth limits;
 *	match data is per session (rules/eval.c).
 * SEE ALSO
 *	portcullis.rules(5), pcre2api(3)
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lib/log.h"
#include "lib/pool.h"
#include "rules/rules_int.h"

#define RL_MAX_ERRORS 100
#define RL_MAX_FILE   (16u << 20) /* rule and list files: a sanity bound */
#define RL_MAX_NEST   64          /* parentheses and "not" */
#define RL_MAX_TESTS  1000        /* tests in one condition: bounds the evaluator's recursion */

const struct rl_field_info pc_rl_fields[RF_COUNT] = {
    [RF_CLIENT_IP] = {"client.ip", RK_IP, PC_RS_CONNECT, false},
    [RF_CLIENT_NAME] = {"client.name", RK_STR, PC_RS_CONNECT, false},
    [RF_CLIENT_PTR] = {"client.ptr", RK_STR, PC_RS_CONNECT, false},
    [RF_HELO] = {"helo", RK_STR, PC_RS_HELO, false},
    [RF_AUTH] = {"auth", RK_STR, PC_RS_MAIL, false},
    [RF_FROM] = {"from", RK_STR, PC_RS_MAIL, false},
    [RF_FROM_LOCAL] = {"from.local", RK_STR, PC_RS_MAIL, false},
    [RF_FROM_DOMAIN] = {"from.domain", RK_STR, PC_RS_MAIL, false},
    [RF_RCPT] = {"rcpt", RK_STR, PC_RS_RCPT, false},
    [RF_RCPT_LOCAL] = {"rcpt.local", RK_STR, PC_RS_RCPT, false},
    [RF_RCPT_DOMAIN] = {"rcpt.domain", RK_STR, PC_RS_RCPT, false},
    [RF_RCPT_COUNT] = {"rcpt.count", RK_NUM, PC_RS_RCPT, false},
    [RF_SIZE] = {"size", RK_NUM, PC_RS_HEADER, false},
    [RF_HEADER] = {"header", RK_STR, PC_RS_HEADER, true},
    [RF_HEADER_RAW] = {"header.raw", RK_STR, PC_RS_HEADER, true},
    [RF_HEADERS] = {"headers", RK_STR, PC_RS_HEADER, false},
    [RF_BODY] = {"body", RK_STR, PC_RS_BODY, false},
    [RF_BODY_RAW] = {"body.raw", RK_STR, PC_RS_BODY, false},
    [RF_PART_TYPE] = {"part.type", RK_STR, PC_RS_BODY, false},
    [RF_PART_FILENAME] = {"part.filename", RK_STR, PC_RS_BODY, false},
    [RF_PART_SIZE] = {"part.size", RK_NUM, PC_RS_BODY, false},
    [RF_PART_ENCODING] = {"part.encoding", RK_STR, PC_RS_BODY, false},
    [RF_PART_DISPOSITION] = {"part.disposition", RK_STR, PC_RS_BODY, false},
    [RF_PART_CHARSET] = {"part.charset", RK_STR, PC_RS_BODY, false},
    [RF_MIME_PARTS] = {"mime.parts", RK_NUM, PC_RS_BODY, false},
    [RF_MIME_DEPTH] = {"mime.depth", RK_NUM, PC_RS_BODY, false},
    [RF_FACT] = {"fact", RK_STR, PC_RS_CONNECT, true},
    [RF_SCORE] = {"score", RK_NUM, PC_RS_CONNECT, false},
};

static const struct {
    const char *name;
    enum pc_rstage stage;
} rl_stages[] = {
    {"connect", PC_RS_CONNECT}, {"helo", PC_RS_HELO},     {"mail", PC_RS_MAIL},
    {"rcpt", PC_RS_RCPT},       {"header", PC_RS_HEADER}, {"eoh", PC_RS_HEADER},
    {"body", PC_RS_BODY},       {"mime", PC_RS_BODY},     {"eom", PC_RS_BODY},
};

static const char *const rl_stage_names[PC_RS_COUNT] = {"connect", "helo",   "mail",
                                                        "rcpt",    "header", "body"};

enum tok_type { T_EOF, T_IDENT, T_STR, T_NUM, T_REGEX, T_OP, T_LP, T_RP, T_COMMA };

struct tok {
    enum tok_type t;
    const char *p; /* source text */
    size_t n;
    int line, col;
    char *s; /* T_STR: decoded; T_REGEX: pattern; T_IDENT/T_OP/T_NUM: copy */
    size_t slen;
    uint32_t reflags; /* T_REGEX: PCRE2 options */
};

struct parser {
    struct pc_rules *rs;
    struct pc_pool *pool;
    const char *file, *dir;
    const char *src, *end, *p, *bol;
    int line;
    struct tok cur;
    int *nerr;
    pc_rules_errfn *errfn;
    void *errarg;
    int depth, tests;
    /* growable arrays, copied into the pool at the end */
    struct rl_rule **rules;
    size_t nrules, rcap;
};

static void perr(struct parser *ps, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* perr - report one error at a token position */
static void perr(struct parser *ps, int line, int col, const char *fmt, ...)
{
    char msg[300], out[600];
    va_list ap;

    if (++*ps->nerr > RL_MAX_ERRORS)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (*ps->nerr == RL_MAX_ERRORS)
        snprintf(msg, sizeof(msg), "too many errors, giving up");
    snprintf(out, sizeof(out), "%s:%d:%d: %s", ps->file, line, col, msg);
    if (ps->errfn)
        ps->errfn(ps->errarg, out);
}

/* tok_desc - a token as shown in messages */
static const char *tok_desc(struct parser *ps, const struct tok *t)
{
    switch (t->t) {
    case T_EOF:
        return "end of file";
    case T_STR:
        return "a string";
    case T_REGEX:
        return "a regular expression";
    default:
        return pc_pool_printf(ps->pool, "\"%.*s\"", (int)(t->n > 40 ? 40 : t->n), t->p);
    }
}

/* col_of - 1-based column of a source pointer */
static int col_of(struct parser *ps, const char *p)
{
    return (int)(p - ps->bol) + 1;
}

/* lex_string - a double-quoted string with \" \\ \n \t escapes, on one line */
static void lex_string(struct parser *ps, struct tok *t)
{
    const char *p = ps->p + 1;
    char *out = pc_pool_alloc(ps->pool, (size_t)(ps->end - ps->p) + 1);
    size_t o = 0;

    t->t = T_STR;
    for (;;) {
        if (p >= ps->end || *p == '\n') {
            perr(ps, t->line, t->col, "unterminated string (strings end on the same line)");
            break;
        }
        if (*p == '"') {
            p++;
            break;
        }
        if (*p == '\\' && p + 1 < ps->end && p[1] != '\n') {
            p++;
            out[o++] = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
            p++;
            continue;
        }
        if (*p == 0) {
            perr(ps, ps->line, col_of(ps, p), "NUL byte in string");
            p++;
            continue;
        }
        out[o++] = *p++;
    }
    out[o] = 0;
    t->s = out;
    t->slen = o;
    t->n = (size_t)(p - ps->p);
    ps->p = p;
}

/* next - advance the lookahead */
static void next(struct parser *ps)
{
    struct tok *t = &ps->cur;
    const char *p;

again:
    while (ps->p < ps->end) {
        char c = *ps->p;
        if (c == '\n') {
            ps->line++;
            ps->bol = ++ps->p;
        } else if (c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v') {
            ps->p++;
        } else if (c == '#') {
            while (ps->p < ps->end && *ps->p != '\n')
                ps->p++;
        } else {
            break;
        }
    }
    memset(t, 0, sizeof(*t));
    t->p = ps->p;
    t->line = ps->line;
    t->col = col_of(ps, ps->p);
    if (ps->p >= ps->end) {
        t->t = T_EOF;
        return;
    }
    p = ps->p;
    unsigned char c = (unsigned char)*p;
    if (isalpha(c) || c == '_') {
        while (p < ps->end && (isalnum((unsigned char)*p) || *p == '_' || *p == '.' || *p == '-'))
            p++;
        t->t = T_IDENT;
    } else if (isdigit(c) ||
               ((c == '-' || c == '+') && p + 1 < ps->end && isdigit((unsigned char)p[1]))) {
        p++;
        while (p < ps->end && (isalnum((unsigned char)*p) || *p == '.'))
            p++;
        t->t = T_NUM;
    } else if (c == '"') {
        lex_string(ps, t);
        return;
    } else if (c == '(' || c == ')' || c == ',') {
        p++;
        t->t = c == '(' ? T_LP : c == ')' ? T_RP : T_COMMA;
    } else if (c != 0 && strchr("=!<>~", (int)c)) {
        p++;
        if (p < ps->end && (*p == '=' || (*p == '~' && c == '!')))
            p++;
        t->t = T_OP;
    } else {
        perr(ps, t->line, t->col,
             (c >= 0x20 && c < 0x7f) ? "unexpected character '%c'" : "unexpected byte 0x%02x", c);
        ps->p++;
        goto again;
    }
    t->n = (size_t)(p - ps->p);
    t->s = pc_pool_strndup(ps->pool, ps->p, t->n);
    ps->p = p;
}

/* lex_regex - /pattern/flags, read raw from just after the current "~" operator */
static bool lex_regex(struct parser *ps)
{
    struct tok *t = &ps->cur;

    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t'))
        ps->p++;
    memset(t, 0, sizeof(*t));
    t->p = ps->p;
    t->line = ps->line;
    t->col = col_of(ps, ps->p);
    if (ps->p >= ps->end || *ps->p != '/') {
        perr(ps, t->line, t->col, "expected a regular expression /.../ after \"~\"");
        next(ps);
        return false;
    }
    const char *p = ps->p + 1;
    char *out = pc_pool_alloc(ps->pool, (size_t)(ps->end - ps->p) + 1);
    size_t o = 0;
    for (;;) {
        if (p >= ps->end || *p == '\n') {
            perr(ps, t->line, t->col, "unterminated regular expression (missing closing /)");
            ps->p = p;
            next(ps);
            return false;
        }
        if (*p == '/')
            break;
        if (*p == '\\' && p + 1 < ps->end && p[1] == '/') { /* \/ is a literal slash */
            out[o++] = '/';
            p += 2;
            continue;
        }
        if (*p == '\\' && p + 1 < ps->end && p[1] != '\n')
            out[o++] = *p++;
        out[o++] = *p++;
    }
    out[o] = 0;
    p++;
    t->t = T_REGEX;
    t->s = out;
    t->slen = o;
    t->reflags = 0;
    while (p < ps->end && isalpha((unsigned char)*p)) {
        switch (*p) {
        case 'i':
            t->reflags |= PCRE2_CASELESS;
            break;
        case 'm':
            t->reflags |= PCRE2_MULTILINE;
            break;
        case 's':
            t->reflags |= PCRE2_DOTALL;
            break;
        case 'x':
            t->reflags |= PCRE2_EXTENDED;
            break;
        default:
            perr(ps, ps->line, col_of(ps, p), "unknown regular expression flag '%c' (i, m, s, x)",
                 *p);
        }
        p++;
    }
    t->n = (size_t)(p - ps->p);
    ps->p = p;
    return true;
}

/* is_kw - is the lookahead this identifier */
static bool is_kw(struct parser *ps, const char *kw)
{
    return ps->cur.t == T_IDENT && strcmp(ps->cur.s, kw) == 0;
}

/* is_stmt - a keyword that starts a statement (error recovery point) */
static bool is_stmt(struct parser *ps)
{
    return is_kw(ps, "rule") || is_kw(ps, "list") || is_kw(ps, "threshold") ||
           is_kw(ps, "score-header");
}

/* expect_kw - consume a keyword or report */
static bool expect_kw(struct parser *ps, const char *kw, const char *what)
{
    if (is_kw(ps, kw)) {
        next(ps);
        return true;
    }
    perr(ps, ps->cur.line, ps->cur.col, "expected \"%s\" %s, found %s", kw, what,
         tok_desc(ps, &ps->cur));
    return false;
}

/* parse_number - a number with an optional k, m or g (times 1024) suffix */
static bool parse_number(struct parser *ps, double *out, bool allow_suffix)
{
    const struct tok *t = &ps->cur;
    char *end;

    if (t->t != T_NUM) {
        perr(ps, t->line, t->col, "expected a number, found %s", tok_desc(ps, t));
        return false;
    }
    errno = 0;
    double v = strtod(t->s, &end);
    if (allow_suffix && *end && !end[1]) {
        switch (*end) {
        case 'k':
        case 'K':
            v *= 1024;
            end++;
            break;
        case 'm':
        case 'M':
            v *= 1048576;
            end++;
            break;
        case 'g':
        case 'G':
            v *= 1073741824.0;
            end++;
            break;
        default:
            break;
        }
    }
    if (*end || errno || v != v || v > 1e15 || v < -1e15) {
        perr(ps, t->line, t->col, "bad number \"%s\"", t->s);
        next(ps);
        return false;
    }
    *out = v;
    next(ps);
    return true;
}

/* compile_literal - a caseless literal for "contains" over a body: the JIT's vectorised
 * first-character search scans a megabyte of text far faster than a byte loop. Without
 * PCRE2_UTF, caseless means ASCII letters only, as contains_ci() does. NULL: use the loop. */
static pcre2_code *compile_literal(struct parser *ps, const char *s, size_t len)
{
    int ec;
    PCRE2_SIZE off;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)s, len, PCRE2_LITERAL | PCRE2_CASELESS, &ec, &off, NULL);

    if (re == NULL)
        return NULL;
    if (pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) != 0) {
        pcre2_code_free(re);
        return NULL;
    }
    pc_pool_cleanup(ps->pool, (void (*)(void *))pcre2_code_free, re);
    return re;
}

/* compile_re - JIT-compile a regex token */
static pcre2_code *compile_re(struct parser *ps, const struct tok *t)
{
    int ec;
    PCRE2_SIZE off;
    uint32_t opts = t->reflags | PCRE2_UTF | PCRE2_MATCH_INVALID_UTF;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)t->s, t->slen, opts, &ec, &off, NULL);

    if (re == NULL) {
        PCRE2_UCHAR msg[200];
        pcre2_get_error_message(ec, msg, sizeof(msg));
        perr(ps, t->line, t->col + 1 + (int)off, "bad regular expression: %s", (char *)msg);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* no JIT (e.g. exotic CPU): interpreter */
    pc_pool_cleanup(ps->pool, (void (*)(void *))pcre2_code_free, re);
    return re;
}

/* find_list - a declared list by name */
static const struct rl_list *find_list(struct parser *ps, const char *name)
{
    for (size_t i = 0; i < ps->rs->nlists; i++)
        if (strcmp(ps->rs->lists[i]->name, name) == 0)
            return ps->rs->lists[i];
    return NULL;
}

/* new_node - a zeroed expression node */
static struct rl_node *new_node(struct parser *ps, int type)
{
    struct rl_node *n = pc_pool_zalloc(ps->pool, sizeof(*n));
    n->type = type;
    return n;
}

static struct rl_node *parse_or(struct parser *ps, enum pc_rstage stage);

/* parse_test - FIELD [ARG] OP VALUE */
static struct rl_node *parse_test(struct parser *ps, enum pc_rstage stage)
{
    struct tok ft = ps->cur;
    int f;

    if (++ps->tests > RL_MAX_TESTS) {
        perr(ps, ft.line, ft.col, "condition too long (at most %d tests); split the rule",
             RL_MAX_TESTS);
        return NULL;
    }
    if (ft.t != T_IDENT) {
        perr(ps, ft.line, ft.col,
             "expected a condition (e.g. header \"Subject\" ~ /.../), found %s", tok_desc(ps, &ft));
        return NULL;
    }
    for (f = 0; f < RF_COUNT; f++)
        if (strcmp(pc_rl_fields[f].name, ft.s) == 0)
            break;
    if (f == RF_COUNT) {
        perr(ps, ft.line, ft.col, "unknown field \"%s\"", ft.s);
        next(ps);
        return NULL;
    }
    const struct rl_field_info *fi = &pc_rl_fields[f];
    struct rl_node *n = new_node(ps, RN_TEST);
    n->field = (enum rl_field)f;
    bool ok = true;
    if (fi->min_stage > stage) {
        perr(ps, ft.line, ft.col, "%s is not known yet at stage %s (earliest stage: %s)", fi->name,
             rl_stage_names[stage], rl_stage_names[fi->min_stage]);
        ok = false;
    }
    next(ps);
    if (fi->arg) {
        if (ps->cur.t != T_STR || ps->cur.slen == 0) {
            perr(ps, ps->cur.line, ps->cur.col, "%s needs a quoted name, e.g. %s \"%s\"", fi->name,
                 fi->name, f == RF_FACT ? "spf" : "Subject");
            return NULL;
        }
        n->arg = ps->cur.s;
        next(ps);
    }
    struct tok ot = ps->cur;
    bool negate = false;
    if (is_kw(ps, "exists")) {
        next(ps);
        n->op = RO_EXISTS;
        return ok ? n : NULL;
    }
    if (is_kw(ps, "contains")) {
        next(ps);
        if (fi->kind != RK_STR) {
            perr(ps, ot.line, ot.col, "\"contains\" needs a text field; %s is not one", fi->name);
            ok = false;
        }
        if (ps->cur.t != T_STR) {
            perr(ps, ps->cur.line, ps->cur.col, "expected a string after \"contains\", found %s",
                 tok_desc(ps, &ps->cur));
            return NULL;
        }
        n->op = RO_CONTAINS;
        n->str = ps->cur.s;
        n->str_len = ps->cur.slen;
        if (ok && (n->field == RF_BODY || n->field == RF_BODY_RAW) && n->str_len > 0)
            n->re = compile_literal(ps, n->str, n->str_len);
        next(ps);
        return ok ? n : NULL;
    }
    if (is_kw(ps, "in")) {
        next(ps);
        if (is_kw(ps, "list")) {
            next(ps);
            if (ps->cur.t != T_IDENT) {
                perr(ps, ps->cur.line, ps->cur.col, "expected a list name after \"in list\"");
                return NULL;
            }
            n->list = find_list(ps, ps->cur.s);
            if (n->list == NULL) {
                perr(ps, ps->cur.line, ps->cur.col,
                     "no list named \"%s\" (declare it with \"list\" before the rule)", ps->cur.s);
                ok = false;
            } else if (fi->kind == RK_NUM) {
                perr(ps, ot.line, ot.col, "%s is a number; it cannot be in a list", fi->name);
                ok = false;
            } else if ((n->list->kind == RL_CIDRS) != (fi->kind == RK_IP)) {
                perr(ps, ps->cur.line, ps->cur.col, "list \"%s\" holds %s; %s is %s", n->list->name,
                     n->list->kind == RL_CIDRS ? "networks" : "names", fi->name,
                     fi->kind == RK_IP ? "an address" : "a name");
                ok = false;
            }
            n->op = RO_IN_LIST;
            next(ps);
            return ok ? n : NULL;
        }
        if (fi->kind != RK_IP || ps->cur.t != T_STR) {
            perr(ps, ps->cur.line, ps->cur.col,
                 fi->kind == RK_IP ? "expected \"list NAME\" or a network \"192.0.2.0/24\""
                                   : "expected \"list NAME\" after \"in\"");
            if (ps->cur.t == T_STR)
                next(ps);
            return NULL;
        }
        if (!pc_cidr_parse(ps->cur.s, &n->cidr)) {
            perr(ps, ps->cur.line, ps->cur.col, "bad network \"%s\"", ps->cur.s);
            ok = false;
        }
        n->op = RO_IN_CIDR;
        next(ps);
        return ok ? n : NULL;
    }
    if (ot.t != T_OP) {
        perr(ps, ot.line, ot.col,
             "expected an operator (==, !=, ~, !~, <, <=, >, >=, contains, in, exists) after %s, "
             "found %s",
             fi->name, tok_desc(ps, &ot));
        return NULL;
    }
    const char *op = ot.s;
    if (strcmp(op, "~") == 0 || strcmp(op, "!~") == 0) {
        negate = op[0] == '!';
        if (!lex_regex(ps))
            return NULL;
        if (fi->kind == RK_NUM) {
            perr(ps, ot.line, ot.col, "%s is a number; use ==, <, > and such", fi->name);
            ok = false;
        }
        n->op = RO_MATCH;
        n->re = compile_re(ps, &ps->cur);
        if (n->re == NULL)
            ok = false;
        else if (n->field == RF_BODY || n->field == RF_BODY_RAW)
            pc_rl_prefilter(ps->pool, n, ps->cur.s, ps->cur.slen, ps->cur.reflags);
        next(ps);
    } else if (strcmp(op, "==") == 0 || strcmp(op, "!=") == 0) {
        negate = op[0] == '!';
        next(ps);
        n->op = RO_EQ;
        if (fi->kind == RK_NUM) {
            if (!parse_number(ps, &n->num, true))
                return NULL;
        } else {
            if (ps->cur.t != T_STR) {
                perr(ps, ps->cur.line, ps->cur.col, "expected a string after %s, found %s", op,
                     tok_desc(ps, &ps->cur));
                return NULL;
            }
            n->str = ps->cur.s;
            n->str_len = ps->cur.slen;
            if (fi->kind == RK_IP) {
                struct pc_ip ip;
                if (!pc_ip_parse(n->str, &ip)) {
                    perr(ps, ps->cur.line, ps->cur.col, "bad IP address \"%s\"", n->str);
                    ok = false;
                } else {
                    n->op = RO_IN_CIDR;
                    n->cidr.net = ip;
                    n->cidr.bits = 128;
                }
            }
            next(ps);
        }
    } else if (strcmp(op, "<") == 0 || strcmp(op, "<=") == 0 || strcmp(op, ">") == 0 ||
               strcmp(op, ">=") == 0) {
        next(ps);
        n->op = op[0] == '<' ? (op[1] ? RO_LE : RO_LT) : (op[1] ? RO_GE : RO_GT);
        if (fi->kind != RK_NUM) {
            perr(ps, ot.line, ot.col, "%s compares numbers; %s is not a number", op, fi->name);
            ok = false;
        }
        if (!parse_number(ps, &n->num, true))
            return NULL;
    } else {
        perr(ps, ot.line, ot.col, "unknown operator \"%s\"%s", op,
             strcmp(op, "=") == 0 ? " (did you mean ==?)" : "");
        next(ps);
        return NULL;
    }
    if (!ok)
        return NULL;
    if (negate) {
        struct rl_node *x = new_node(ps, RN_NOT);
        x->a = n;
        return x;
    }
    return n;
}

/* parse_unary - not, parentheses, or a test */
static struct rl_node *parse_unary(struct parser *ps, enum pc_rstage stage)
{
    if (++ps->depth > RL_MAX_NEST) {
        perr(ps, ps->cur.line, ps->cur.col, "condition nested too deeply (at most %d)",
             RL_MAX_NEST);
        ps->depth--;
        return NULL;
    }
    struct rl_node *r = NULL;
    if (is_kw(ps, "not")) {
        next(ps);
        struct rl_node *a = parse_unary(ps, stage);
        if (a) {
            r = new_node(ps, RN_NOT);
            r->a = a;
        }
    } else if (ps->cur.t == T_LP) {
        struct tok lp = ps->cur;
        next(ps);
        r = parse_or(ps, stage);
        if (r && ps->cur.t != T_RP) {
            perr(ps, ps->cur.line, ps->cur.col,
                 "expected \")\" to close the \"(\" at %d:%d, found %s", lp.line, lp.col,
                 tok_desc(ps, &ps->cur));
            r = NULL;
        } else if (r)
            next(ps);
    } else {
        r = parse_test(ps, stage);
    }
    ps->depth--;
    return r;
}

/* parse_and - unary ("and" unary)* */
static struct rl_node *parse_and(struct parser *ps, enum pc_rstage stage)
{
    struct rl_node *l = parse_unary(ps, stage);

    while (l && is_kw(ps, "and")) {
        next(ps);
        struct rl_node *r = parse_unary(ps, stage);
        if (r == NULL)
            return NULL;
        struct rl_node *n = new_node(ps, RN_AND);
        n->a = l, n->b = r;
        l = n;
    }
    return l;
}

/* parse_or - and ("or" and)* */
static struct rl_node *parse_or(struct parser *ps, enum pc_rstage stage)
{
    struct rl_node *l = parse_and(ps, stage);

    while (l && is_kw(ps, "or")) {
        next(ps);
        struct rl_node *r = parse_and(ps, stage);
        if (r == NULL)
            return NULL;
        struct rl_node *n = new_node(ps, RN_OR);
        n->a = l, n->b = r;
        l = n;
    }
    return l;
}

/* parse_reply - [CODE [ENH]] ["text"] for reject and tempfail */
static bool parse_reply(struct parser *ps, struct rl_action *a, int cls)
{
    a->code = cls == 5 ? 550 : 451;
    snprintf(a->enh, sizeof(a->enh), "%d.7.1", cls);
    a->text = cls == 5 ? "Rejected by policy" : "Temporarily rejected by policy, try again later";
    if (ps->cur.t == T_NUM) {
        struct tok ct = ps->cur;
        char *end;
        long code = strtol(ct.s, &end, 10);
        if (*end || code / 100 != cls || code % 100 > 99) {
            perr(ps, ct.line, ct.col, "reply code \"%s\" must be %dxx for %s", ct.s, cls,
                 cls == 5 ? "reject" : "tempfail");
            next(ps);
            return false;
        }
        a->code = (int)code;
        next(ps);
        if (ps->cur.t == T_NUM) {
            struct pc_enh e;
            if (!pc_enh_parse(ps->cur.s, &e) || e.cls != cls) {
                perr(ps, ps->cur.line, ps->cur.col,
                     "enhanced status code \"%s\" must look like %d.7.1 (RFC 3463)", ps->cur.s,
                     cls);
                next(ps);
                return false;
            }
            snprintf(a->enh, sizeof(a->enh), "%s", ps->cur.s);
            next(ps);
        }
    }
    if (ps->cur.t == T_STR) {
        if (strpbrk(ps->cur.s, "\r\n")) {
            perr(ps, ps->cur.line, ps->cur.col, "reply text must be one line");
            next(ps);
            return false;
        }
        a->text = ps->cur.s;
        next(ps);
    }
    return true;
}

/* header_name_ok - RFC 5322 field name: printable ASCII except colon */
static bool header_name_ok(const char *s)
{
    if (*s == 0)
        return false;
    for (; *s; s++)
        if (*s <= 32 || *s >= 127 || *s == ':')
            return false;
    return true;
}

/* parse_action - one action */
static bool parse_action(struct parser *ps, struct rl_action *a, enum pc_rstage stage,
                         bool threshold)
{
    struct tok t = ps->cur;

    memset(a, 0, sizeof(*a));
    if (t.t != T_IDENT) {
        perr(ps, t.line, t.col,
             "expected an action (accept, reject, tempfail, discard, "
             "add-header, remove-header, score), found %s",
             tok_desc(ps, &t));
        return false;
    }
    next(ps);
    if (strcmp(t.s, "accept") == 0) {
        a->type = RA_ACCEPT;
    } else if (strcmp(t.s, "discard") == 0) {
        a->type = RA_DISCARD;
    } else if (strcmp(t.s, "reject") == 0) {
        a->type = RA_REJECT;
        return parse_reply(ps, a, 5);
    } else if (strcmp(t.s, "tempfail") == 0) {
        a->type = RA_TEMPFAIL;
        return parse_reply(ps, a, 4);
    } else if (strcmp(t.s, "add-header") == 0 || strcmp(t.s, "remove-header") == 0) {
        bool add = t.s[0] == 'a';
        a->type = add ? RA_ADD_HEADER : RA_REMOVE_HEADER;
        if (ps->cur.t != T_STR || !header_name_ok(ps->cur.s)) {
            perr(ps, ps->cur.line, ps->cur.col,
                 "%s needs a header name in quotes, e.g. "
                 "\"X-Spam-Flag\"",
                 t.s);
            return false;
        }
        a->header = ps->cur.s;
        next(ps);
        if (add) {
            if (ps->cur.t != T_STR) {
                perr(ps, ps->cur.line, ps->cur.col,
                     "add-header needs a value in quotes after "
                     "the name");
                return false;
            }
            a->text = ps->cur.s;
            next(ps);
        }
        if (stage < (add ? PC_RS_MAIL : PC_RS_HEADER)) {
            perr(ps, t.line, t.col, "%s works from stage %s on, not at %s", t.s,
                 add ? "mail" : "header", rl_stage_names[stage]);
            return false;
        }
    } else if (strcmp(t.s, "score") == 0) {
        a->type = RA_SCORE;
        if (threshold) {
            perr(ps, t.line, t.col, "a threshold cannot add a score");
            return false;
        }
        return parse_number(ps, &a->score, false);
    } else {
        perr(ps, t.line, t.col,
             "unknown action \"%s\" (accept, reject, tempfail, discard, "
             "add-header, remove-header, score)",
             t.s);
        return false;
    }
    return true;
}

/* sync - skip to the next statement after an error */
static void sync(struct parser *ps)
{
    while (ps->cur.t != T_EOF && !is_stmt(ps))
        next(ps);
}

/* parse_rule - rule NAME [log-only] at STAGE [log-only] if COND then ACTION {, ACTION} */
static void parse_rule(struct parser *ps)
{
    struct tok rt = ps->cur;
    struct rl_rule *r = pc_pool_zalloc(ps->pool, sizeof(*r));

    next(ps);
    if (ps->cur.t != T_IDENT || is_stmt(ps)) {
        perr(ps, ps->cur.line, ps->cur.col, "expected a rule name after \"rule\", found %s",
             tok_desc(ps, &ps->cur));
        goto bad;
    }
    r->name = ps->cur.s;
    r->file = ps->file;
    r->line = rt.line;
    for (size_t i = 0; i < ps->nrules; i++)
        if (strcmp(ps->rules[i]->name, r->name) == 0) {
            perr(ps, ps->cur.line, ps->cur.col, "rule \"%s\" is already defined at %s:%d", r->name,
                 ps->rules[i]->file, ps->rules[i]->line);
            goto bad;
        }
    next(ps);
    if (is_kw(ps, "log-only")) {
        r->log_only = true;
        next(ps);
    }
    if (!expect_kw(ps, "at", "and a stage after the rule name"))
        goto bad;
    size_t k;
    for (k = 0; ps->cur.t == T_IDENT && k < sizeof(rl_stages) / sizeof(rl_stages[0]); k++)
        if (strcmp(rl_stages[k].name, ps->cur.s) == 0)
            break;
    if (ps->cur.t != T_IDENT || k == sizeof(rl_stages) / sizeof(rl_stages[0])) {
        perr(ps, ps->cur.line, ps->cur.col,
             "unknown stage %s (connect, helo, mail, rcpt, "
             "header, eoh, body, mime, eom)",
             tok_desc(ps, &ps->cur));
        goto bad;
    }
    r->stage = rl_stages[k].stage;
    next(ps);
    if (is_kw(ps, "log-only")) {
        r->log_only = true;
        next(ps);
    }
    if (!expect_kw(ps, "if", "and a condition"))
        goto bad;
    ps->tests = 0;
    r->cond = parse_or(ps, r->stage);
    if (r->cond == NULL)
        goto bad;
    if (!expect_kw(ps, "then", "and the actions after the condition"))
        goto bad;
    struct rl_action acts[16];
    for (;;) {
        if (r->nact == sizeof(acts) / sizeof(acts[0])) {
            perr(ps, ps->cur.line, ps->cur.col, "too many actions (at most 16)");
            goto bad;
        }
        if (!parse_action(ps, &acts[r->nact], r->stage, false))
            goto bad;
        r->nact++;
        if (ps->cur.t != T_COMMA)
            break;
        next(ps);
    }
    if (!is_stmt(ps) && ps->cur.t != T_EOF) {
        perr(ps, ps->cur.line, ps->cur.col,
             "expected \",\" and another action, or the next "
             "statement, found %s",
             tok_desc(ps, &ps->cur));
        goto bad;
    }
    r->act = pc_pool_alloc(ps->pool, r->nact * sizeof(*r->act));
    memcpy(r->act, acts, r->nact * sizeof(*r->act));
    if (ps->nrules == ps->rcap) {
        ps->rcap = ps->rcap ? ps->rcap * 2 : 16;
        ps->rules = realloc(ps->rules, ps->rcap * sizeof(*ps->rules));
        if (ps->rules == NULL)
            pc_fatal("out of memory");
    }
    ps->rules[ps->nrules++] = r;
    return;
bad:
    sync(ps);
}

/* load_list - read a list file: one entry per line, # comments */
static void load_list(struct parser *ps, struct rl_list *l, const char *path, const struct tok *at)
{
    char *full = path[0] == '/' ? (char *)path : pc_pool_printf(ps->pool, "%s/%s", ps->dir, path);
    struct stat st;
    FILE *f = fopen(full, "r");

    if (f == NULL || fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode) ||
        (size_t)st.st_size > RL_MAX_FILE) {
        perr(ps, at->line, at->col, "list \"%s\": cannot read %s: %s", l->name, full,
             f == NULL ? strerror(errno) : "not a regular file of at most 16 MB");
        if (f)
            fclose(f);
        return;
    }
    char line[1024];
    int ln = 0;
    while (fgets(line, sizeof(line), f)) {
        ln++;
        char *p = line, *e;
        if (strchr(line, '\n') == NULL && !feof(f)) { /* skip the rest of an overlong line */
            int ch;
            while ((ch = getc(f)) != EOF && ch != '\n')
                ;
            if (++*ps->nerr <= RL_MAX_ERRORS && ps->errfn) {
                char out[1200];
                snprintf(out, sizeof(out), "%s:%d:1: line longer than %zu bytes", full, ln,
                         sizeof(line) - 2);
                ps->errfn(ps->errarg, out);
            }
            continue;
        }
        while (*p == ' ' || *p == '\t')
            p++;
        if ((e = strchr(p, '#')) != NULL)
            *e = 0;
        e = p + strlen(p);
        while (e > p && isspace((unsigned char)e[-1]))
            *--e = 0;
        if (*p == 0)
            continue;
        const char *why = pc_rl_list_add(ps->pool, l, p);
        if (why && ++*ps->nerr <= RL_MAX_ERRORS && ps->errfn) {
            char out[1400];
            snprintf(out, sizeof(out), "%s:%d:%d: \"%.200s\": %s", full, ln, (int)(p - line) + 1, p,
                     why);
            ps->errfn(ps->errarg, out);
        }
    }
    fclose(f);
    pc_rl_list_seal(ps->pool, l);
}

/* parse_list - list NAME domains|addresses|cidrs "file" */
static void parse_list(struct parser *ps)
{
    next(ps);
    struct tok nt = ps->cur;
    if (nt.t != T_IDENT || is_stmt(ps)) {
        perr(ps, nt.line, nt.col, "expected a list name after \"list\", found %s",
             tok_desc(ps, &nt));
        goto bad;
    }
    if (find_list(ps, nt.s)) {
        perr(ps, nt.line, nt.col, "list \"%s\" is already defined", nt.s);
        goto bad;
    }
    next(ps);
    enum rl_list_kind kind;
    if (is_kw(ps, "domains"))
        kind = RL_DOMAINS;
    else if (is_kw(ps, "addresses"))
        kind = RL_ADDRESSES;
    else if (is_kw(ps, "cidrs") || is_kw(ps, "networks"))
        kind = RL_CIDRS;
    else {
        perr(ps, ps->cur.line, ps->cur.col,
             "expected the list kind (domains, addresses or "
             "cidrs), found %s",
             tok_desc(ps, &ps->cur));
        goto bad;
    }
    next(ps);
    if (ps->cur.t != T_STR || ps->cur.slen == 0) {
        perr(ps, ps->cur.line, ps->cur.col, "expected the list's file name in quotes, found %s",
             tok_desc(ps, &ps->cur));
        goto bad;
    }
    struct rl_list *l = pc_rl_list_new(ps->pool, nt.s, kind);
    load_list(ps, l, ps->cur.s, &ps->cur);
    struct pc_rules *rs = ps->rs;
    struct rl_list **v = pc_pool_alloc(ps->pool, (rs->nlists + 1) * sizeof(*v));
    if (rs->nlists)
        memcpy(v, rs->lists, rs->nlists * sizeof(*v));
    v[rs->nlists++] = l;
    rs->lists = v;
    next(ps);
    return;
bad:
    sync(ps);
}

/* parse_threshold - threshold SCORE ACTION */
static void parse_threshold(struct parser *ps)
{
    struct rl_threshold t;
    struct tok at;

    next(ps);
    if (!parse_number(ps, &t.score, false))
        goto bad;
    at = ps->cur;
    if (!parse_action(ps, &t.act, PC_RS_BODY, true))
        goto bad;
    if (t.act.type == RA_REMOVE_HEADER) {
        perr(ps, at.line, at.col,
             "a threshold can accept, reject, tempfail, discard or "
             "add-header");
        goto bad;
    }
    struct pc_rules *rs = ps->rs;
    struct rl_threshold *v = pc_pool_alloc(ps->pool, (rs->nthr + 1) * sizeof(*v));
    if (rs->nthr)
        memcpy(v, rs->thr, rs->nthr * sizeof(*v));
    v[rs->nthr++] = t;
    rs->thr = v;
    return;
bad:
    sync(ps);
}

/* parse_file - every statement of one file */
static void parse_file(struct parser *ps)
{
    next(ps);
    while (ps->cur.t != T_EOF && *ps->nerr < RL_MAX_ERRORS) {
        if (is_kw(ps, "rule")) {
            parse_rule(ps);
        } else if (is_kw(ps, "list")) {
            parse_list(ps);
        } else if (is_kw(ps, "threshold")) {
            parse_threshold(ps);
        } else if (is_kw(ps, "score-header")) {
            next(ps);
            if (ps->cur.t != T_STR || !header_name_ok(ps->cur.s)) {
                perr(ps, ps->cur.line, ps->cur.col, "score-header needs a header name in quotes");
                sync(ps);
                continue;
            }
            ps->rs->score_header = ps->cur.s;
            next(ps);
        } else {
            perr(ps, ps->cur.line, ps->cur.col,
                 "expected rule, list, threshold or "
                 "score-header, found %s",
                 tok_desc(ps, &ps->cur));
            next(ps);
            sync(ps);
        }
    }
}

/* rules_new - an empty set */
static struct pc_rules *rules_new(const struct pc_rules_limits *lim)
{
    struct pc_pool *pool = pc_pool_create(16384);
    struct pc_rules *rs = pc_pool_zalloc(pool, sizeof(*rs));

    rs->pool = pool;
    rs->lim = *lim;
    rs->mctx = pcre2_match_context_create(NULL);
    if (rs->mctx == NULL)
        pc_fatal("out of memory");
    pc_pool_cleanup(pool, (void (*)(void *))pcre2_match_context_free, rs->mctx);
    pcre2_set_match_limit(rs->mctx, (uint32_t)lim->match_limit);
    pcre2_set_depth_limit(rs->mctx, (uint32_t)lim->depth_limit);
    return rs;
}

/* parse_one - one source text into the set */
static void parse_one(struct parser *ps, const char *name, const char *text, size_t len)
{
    ps->file = pc_pool_strdup(ps->pool, name);
    const char *slash = strrchr(name, '/');
    ps->dir = slash ? pc_pool_strndup(ps->pool, name, (size_t)(slash - name)) : ".";
    ps->src = ps->p = ps->bol = text;
    ps->end = text + len;
    ps->line = 1;
    ps->depth = 0;
    parse_file(ps);
}

/* uses - what a condition reads from the MIME view: mark it in the set */
static void uses(struct pc_rules *rs, const struct rl_node *n)
{
    for (; n; n = n->b) {
        if (n->type != RN_TEST) {
            uses(rs, n->a);
            continue;
        }
        switch (n->field) {
        case RF_BODY:
            rs->mime_reads |= PC_MIME_SKIP_TEXT;
            break;
        case RF_PART_SIZE:
            rs->mime_reads |= PC_MIME_SKIP_SIZE;
            break;
        case RF_PART_TYPE:
        case RF_PART_FILENAME:
        case RF_PART_ENCODING:
        case RF_PART_DISPOSITION:
        case RF_PART_CHARSET:
        case RF_MIME_PARTS:
        case RF_MIME_DEPTH:
            break;
        case RF_FACT:
            if (strncmp(n->arg, "mime.", 5) != 0)
                continue;
            break;
        default:
            continue;
        }
        rs->needs_mime = true;
    }
}

/* finish - distribute rules by stage, sort thresholds; NULL on errors */
static struct pc_rules *finish(struct parser *ps, int nerr)
{
    struct pc_rules *rs = ps->rs;

    if (nerr) {
        free(ps->rules);
        pc_pool_destroy(rs->pool);
        return NULL;
    }
    for (size_t i = 0; i < ps->nrules; i++)
        rs->nrules[ps->rules[i]->stage]++;
    for (int s = 0; s < PC_RS_COUNT; s++) {
        rs->rules[s] = pc_pool_alloc(rs->pool, (rs->nrules[s] + 1) * sizeof(void *));
        rs->nrules[s] = 0;
    }
    for (size_t i = 0; i < ps->nrules; i++) {
        struct rl_rule *r = ps->rules[i];
        rs->rules[r->stage][rs->nrules[r->stage]++] = r;
        if (r->stage == PC_RS_BODY)
            uses(rs, r->cond);
    }
    free(ps->rules);
    /* Parse only what some rule reads (rules/mime.h). */
    rs->lim.mime.skip = (PC_MIME_SKIP_TEXT | PC_MIME_SKIP_SIZE) & ~rs->mime_reads;
    /* Thresholds ascending, stable: insertion sort (a handful of entries). */
    for (size_t i = 1; i < rs->nthr; i++) {
        struct rl_threshold t = rs->thr[i];
        size_t j = i;
        while (j > 0 && rs->thr[j - 1].score > t.score) {
            rs->thr[j] = rs->thr[j - 1];
            j--;
        }
        rs->thr[j] = t;
    }
    return rs;
}

/* pc_rules_compile_buf - one in-memory rule file */
struct pc_rules *pc_rules_compile_buf(const char *name, const char *text, size_t len,
                                      const struct pc_rules_limits *lim, pc_rules_errfn *errfn,
                                      void *arg)
{
    int nerr = 0;
    struct parser ps = {.nerr = &nerr, .errfn = errfn, .errarg = arg};

    ps.rs = rules_new(lim);
    ps.pool = ps.rs->pool;
    parse_one(&ps, name, text, len);
    return finish(&ps, nerr);
}

/* read_file - a whole rule file, bounded */
static char *read_file(const char *path, size_t *len, const char **why)
{
    FILE *f = fopen(path, "r");
    struct stat st;

    *why = NULL;
    if (f == NULL || fstat(fileno(f), &st) < 0) {
        *why = strerror(errno);
        if (f)
            fclose(f);
        return NULL;
    }
    if (!S_ISREG(st.st_mode) || (size_t)st.st_size > RL_MAX_FILE) {
        fclose(f);
        *why = "not a regular file of at most 16 MB";
        return NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL)
        pc_fatal("out of memory");
    *len = fread(buf, 1, (size_t)st.st_size, f);
    buf[*len] = 0;
    fclose(f);
    return buf;
}

/* pc_rules_compile - every file, every error */
struct pc_rules *pc_rules_compile(const char *const *files, size_t nfiles,
                                  const struct pc_rules_limits *lim, pc_rules_errfn *errfn,
                                  void *arg)
{
    int nerr = 0;
    struct parser ps = {.nerr = &nerr, .errfn = errfn, .errarg = arg};

    ps.rs = rules_new(lim);
    ps.pool = ps.rs->pool;
    for (size_t i = 0; i < nfiles; i++) {
        size_t len = 0;
        const char *why;
        char *text = read_file(files[i], &len, &why);
        if (text == NULL) {
            char out[600];
            snprintf(out, sizeof(out), "%s:0:0: cannot read rule file: %s", files[i], why);
            nerr++;
            if (errfn)
                errfn(arg, out);
            continue;
        }
        parse_one(&ps, files[i], text, len);
        free(text);
    }
    return finish(&ps, nerr);
}

/* pc_rules_free - release a compiled set */
void pc_rules_free(struct pc_rules *rs)
{
    if (rs)
        pc_pool_destroy(rs->pool);
}

/* pc_rules_count - how many rules run at a stage */
size_t pc_rules_count(const struct pc_rules *rs, enum pc_rstage s)
{
    return rs->nrules[s];
}

/* pc_rl_stage_name - a rule stage as written in rule files */
const char *pc_rl_stage_name(enum pc_rstage s)
{
    return s < PC_RS_COUNT ? rl_stage_names[s] : "?";
}
