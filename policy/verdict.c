/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	verdict 3 - stages, actions and verdicts
 * DESCRIPTION
 *	Default replies follow Postfix and RFC 3463: policy refusals are
 *	x.7.1, recipient-stage ones keep the address subject where it
 *	applies, and a reply code's class always matches its enhanced code.
 */
#include "policy/verdict.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const pc_stage_names[PC_STAGE_COUNT] = {
    [PC_STAGE_CONNECT] = "connect", [PC_STAGE_HELO] = "helo",   [PC_STAGE_MAIL] = "mail",
    [PC_STAGE_RCPT] = "rcpt",       [PC_STAGE_DATA] = "data",   [PC_STAGE_HEADER] = "header",
    [PC_STAGE_EOH] = "eoh",         [PC_STAGE_BODY] = "body",   [PC_STAGE_EOM] = "eom",
};

/* pc_stage_name - stage to text */
const char *pc_stage_name(enum pc_stage s)
{
    return (unsigned)s < PC_STAGE_COUNT ? pc_stage_names[s] : "?";
}

/* pc_stage_parse - text to stage */
bool pc_stage_parse(const char *name, enum pc_stage *out)
{
    for (int i = 0; i < PC_STAGE_COUNT; i++)
        if (strcasecmp(name, pc_stage_names[i]) == 0) {
            *out = (enum pc_stage)i;
            return true;
        }
    return false;
}

/* pc_action_name - action to text */
const char *pc_action_name(enum pc_action a)
{
    static const char *const n[] = {"continue", "accept",     "tempfail", "reject",
                                    "discard",  "disconnect", "error",    "pending"};
    return (unsigned)a < sizeof(n) / sizeof(n[0]) ? n[a] : "?";
}

/* pc_enh_parse - "class.subject.detail" (RFC 3463 section 2) */
bool pc_enh_parse(const char *s, struct pc_enh *e)
{
    unsigned long v[3];
    char *end;

    for (int i = 0; i < 3; i++) {
        if (*s < '0' || *s > '9')
            return false;
        v[i] = strtoul(s, &end, 10);
        if (end - s > 3 || v[i] > 999)
            return false;
        if (i < 2 && *end != '.')
            return false;
        s = end + (i < 2);
    }
    if (*s || (v[0] != 2 && v[0] != 4 && v[0] != 5))
        return false;
    e->cls = (uint8_t)v[0];
    e->subject = (uint16_t)v[1];
    e->detail = (uint16_t)v[2];
    return true;
}

/* pc_enh_format - numbers to text */
const char *pc_enh_format(const struct pc_enh *e, char *buf, int size)
{
    snprintf(buf, (size_t)size, "%u.%u.%u", e->cls, e->subject, e->detail);
    return buf;
}

/* pc_verdict_clear - CONTINUE, nothing set */
void pc_verdict_clear(struct pc_verdict *v)
{
    memset(v, 0, sizeof(*v));
}

/* pc_verdict_set - fill a decision */
void pc_verdict_set(struct pc_verdict *v, enum pc_action a, int code, const char *enh,
                    const char *fmt, ...)
{
    v->action = a;
    v->code = code;
    memset(&v->enh, 0, sizeof(v->enh));
    if (enh && !pc_enh_parse(enh, &v->enh))
        memset(&v->enh, 0, sizeof(v->enh));
    v->text[0] = 0;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(v->text, sizeof(v->text), fmt, ap);
        va_end(ap);
    }
}

/* pc_verdict_is_final - does it end the stage */
bool pc_verdict_is_final(const struct pc_verdict *v)
{
    return v->action != PC_CONTINUE && v->action != PC_PENDING;
}

/* pc_verdict_finish - defaults, class agreement, clean text */
void pc_verdict_finish(struct pc_verdict *v, enum pc_stage stage)
{
    int want;

    switch (v->action) {
    case PC_TEMPFAIL:
    case PC_ERROR:
        want = 4;
        break;
    case PC_REJECT:
        want = 5;
        break;
    case PC_DISCONNECT:
        v->code = 421;
        want = 4;
        break;
    default:
        want = 2;
        break;
    }
    if (v->code / 100 != want) {
        if (want == 4)
            v->code = stage == PC_STAGE_RCPT ? 450 : 451;
        else if (want == 5)
            v->code = stage == PC_STAGE_CONNECT ? 554 : 550;
        else
            v->code = 250;
    }
    if (v->enh.cls != want) {
        /* Keep subject.detail a filter chose; only the class follows the code. */
        if (v->enh.cls == 0) {
            v->enh.subject = want == 2 ? 0 : 7;
            v->enh.detail = want == 2 ? 0 : 1;
        }
        v->enh.cls = (uint8_t)want;
    }
    for (char *p = v->text; *p; p++)
        if (*p == '\r' || *p == '\n' || (unsigned char)*p < 0x20)
            *p = ' ';
    if (v->text[0] == 0) {
        const char *t = want == 2   ? "Ok"
                        : want == 4 ? "Service temporarily unavailable, try again later"
                                    : "Rejected by policy";
        snprintf(v->text, sizeof(v->text), "%s", t);
    }
}
