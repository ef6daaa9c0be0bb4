/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	policy_attr 3 - parse a Postfix policy delegation request
 * DESCRIPTION
 *	See policy_attr.h. The request's bytes are copied into its buffer
 *	with each "=" and LF turned into NUL, so that names and values are C
 *	strings that live as long as the request and never point into the
 *	connection's input buffer, which moves on. An attribute name is a
 *	word of letters, digits, "_", "-" and "."; a value is any bytes but
 *	NUL and control characters other than tab (Postfix's values are text,
 *	possibly UTF-8). A repeated name keeps its first value.
 * SEE ALSO
 *	Postfix SMTPD_POLICY_README, attr_scan_plain(3)
 */
#include "lib/policy_attr.h"

#include <stdbool.h>
#include <string.h>

/* name_ok - a non-empty attribute name of safe characters */
static bool name_ok(const char *p, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return false;
    }
    return true;
}

/* value_ok - no NUL, no control character but tab */
static bool value_ok(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

/* add_line - one "name=value" line (without its end) into the request */
static const char *add_line(struct pc_pa_request *r, char *line, size_t n)
{
    char *eq = memchr(line, '=', n);

    if (eq == NULL)
        return "a line without \"=\"";
    if (!name_ok(line, (size_t)(eq - line)))
        return "a bad attribute name";
    if (!value_ok(eq + 1, n - (size_t)(eq - line) - 1))
        return "a control character in a value";
    if (r->nattrs == PC_PA_ATTRS_MAX)
        return "too many attributes";
    *eq = 0;
    line[n] = 0;
    r->attrs[r->nattrs].name = line;
    r->attrs[r->nattrs].value = eq + 1;
    r->nattrs++;
    return NULL;
}

/* pc_pa_parse - one request block */
enum pc_pa_status pc_pa_parse(const char *data, size_t len, struct pc_pa_request *r, size_t *used,
                              const char **why)
{
    size_t off = 0;

    r->nattrs = 0;
    *used = 0;
    *why = NULL;
    for (;;) {
        size_t room = len - off, lim = room < PC_PA_LINE_MAX + 2 ? room : PC_PA_LINE_MAX + 2;
        const char *nl = memchr(data + off, '\n', lim);
        if (nl == NULL) {
            *why = room > PC_PA_LINE_MAX + 1 ? "a line too long" : NULL;
            if (*why == NULL && off + room > PC_PA_SIZE_MAX)
                *why = "a request too large";
            return *why ? PC_PA_ERROR : PC_PA_MORE;
        }
        size_t n = (size_t)(nl - (data + off)), end = off + n + 1;
        if (n > 0 && data[off + n - 1] == '\r')
            n--;
        if (n > PC_PA_LINE_MAX)
            return *why = "a line too long", PC_PA_ERROR;
        if (end > PC_PA_SIZE_MAX)
            return *why = "a request too large", PC_PA_ERROR;
        if (n == 0) {
            if (r->nattrs == 0)
                return *why = "an empty request", PC_PA_ERROR;
            *used = end;
            return PC_PA_OK;
        }
        memcpy(r->buf + off, data + off, n);
        if ((*why = add_line(r, r->buf + off, n)) != NULL)
            return PC_PA_ERROR;
        off = end;
    }
}

/* pc_pa_get - the first value of name */
const char *pc_pa_get(const struct pc_pa_request *r, const char *name)
{
    for (size_t i = 0; i < r->nattrs; i++)
        if (strcmp(r->attrs[i].name, name) == 0)
            return r->attrs[i].value;
    return NULL;
}
