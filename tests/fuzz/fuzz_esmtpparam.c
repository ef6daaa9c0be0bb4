/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	fuzz_esmtpparam 1 - the DSN parameter validators (NOTIFY, ORCPT)
 * DESCRIPTION
 *	The first byte's low bit says whether SMTPUTF8 is in effect; the rest
 *	is a parameter value. Invariants: an accepted NOTIFY is NEVER or a
 *	comma list of the three keywords; an accepted ORCPT holds no control
 *	byte, space or "=", no 8-bit byte without SMTPUTF8, no control byte
 *	behind its xtext escapes, and survives the RCPT argument parser as the
 *	same parameter value, so that what we accept is what the backend gets.
 * SEE ALSO
 *	RFC 3461 sections 4.1 and 4.2, RFC 6533 section 3
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway/smtp_proto.h"
#include "lib/pool.h"

/* check_notify - an accepted NOTIFY is NEVER or SUCCESS/FAILURE/DELAY, comma separated */
static void check_notify(const char *v)
{
    if (!pc_notify_valid(v))
        return;
    if (strcasecmp(v, "NEVER") == 0)
        return;
    char *copy = strdup(v), *save = NULL;
    size_t n = 0;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save), n++)
        if (strcasecmp(t, "SUCCESS") && strcasecmp(t, "FAILURE") && strcasecmp(t, "DELAY"))
            abort();
    if (n == 0 || v[0] == ',' || v[strlen(v) - 1] == ',' || strstr(v, ",,"))
        abort();
    free(copy);
}

/* check_orcpt - an accepted ORCPT is safe to pass on, and parses back as itself */
static void check_orcpt(const char *v, bool utf8)
{
    if (!pc_orcpt_valid(v, utf8))
        return;
    const char *semi = strchr(v, ';');
    if (semi == NULL || semi == v || semi[1] == 0)
        abort();
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p <= 32 || *p == 127 || *p == '=' || (!utf8 && *p >= 128))
            abort();
        /* "+" is an escape in the xtext after the type only (an atom may hold "+") */
        if (*p == '+' && p > (const unsigned char *)semi && strncasecmp(v, "utf-8;", 6) != 0) {
            char hex[3] = {(char)p[1], (char)p[2], 0};
            unsigned long c = strtoul(hex, NULL, 16);
            if (c < 0x20 || c > 0x7e)
                abort();
        }
    }

    struct pc_pool *pool = pc_pool_create(1024);
    struct pc_path_args pa;
    const char *enh;
    char *arg = pc_pool_printf(pool, "TO:<u@example.com> ORCPT=%s", v);
    if (pc_path_args_parse(arg, strlen(arg), "TO:", pool, &pa, &enh) != NULL)
        abort();
    if (pa.nparams != 1 || strcmp(pa.params[0].key, "ORCPT") || strcmp(pa.params[0].value, v))
        abort();
    pc_pool_destroy(pool);
}

/* LLVMFuzzerTestOneInput - one flag byte, then one value */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    char *v = malloc(size);
    memcpy(v, data + 1, size - 1);
    v[size - 1] = 0;
    if (strlen(v) == size - 1) { /* values never hold NUL: the command line refuses it */
        check_notify(v);
        check_orcpt(v, data[0] & 1);
    }
    free(v);
    return 0;
}
