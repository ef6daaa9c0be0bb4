/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	fuzz_smtpcmd 1 - the command line parser and MAIL/RCPT argument parser
 * DESCRIPTION
 *	One input is one command line (without its CRLF). Invariants: the
 *	argument points inside the line, the verb name is upper case and
 *	NUL-terminated, a parsed mailbox holds no control byte, a domain that
 *	is no address literal is a valid domain, a refusal carries a 5.x.x
 *	enhanced code, and parameters are at most PC_MAX_PARAMS, unique.
 * SEE ALSO
 *	RFC 5321 sections 4.1.1 and 4.1.2, RFC 3461
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway/smtp_proto.h"
#include "lib/pool.h"

/* no_ctl - no byte below 32 and no DEL in s */
static void no_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 32 || *s == 127)
            abort();
}

/* check_args - the path argument parser on one keyword */
static void check_args(const char *arg, size_t len, const char *kw)
{
    struct pc_pool *pool = pc_pool_create(1024);
    struct pc_path_args pa;
    const char *enh = NULL;
    const char *why = pc_path_args_parse(arg, len, kw, pool, &pa, &enh);

    if (why != NULL) {
        if (enh == NULL || (enh[0] != '5' && enh[0] != '4'))
            abort();
    } else {
        no_ctl(pa.mb.addr);
        no_ctl(pa.mb.domain);
        if (pa.mb.null && (pa.mb.addr[0] || pa.mb.domain[0]))
            abort();
        if (pa.mb.domain[0] && !pa.mb.literal &&
            !pc_domain_valid(pa.mb.domain, strlen(pa.mb.domain), true))
            abort();
        if (pa.nparams > PC_MAX_PARAMS)
            abort();
        for (size_t i = 0; i < pa.nparams; i++) {
            if (pa.params[i].key == NULL || pa.params[i].key[0] == 0)
                abort();
            no_ctl(pa.params[i].key);
            if (pa.params[i].value)
                no_ctl(pa.params[i].value);
            for (size_t j = 0; j < i; j++)
                if (strcasecmp(pa.params[i].key, pa.params[j].key) == 0)
                    abort();
        }
    }
    pc_pool_destroy(pool);
}

/* LLVMFuzzerTestOneInput - one command line */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy of exactly size bytes, so that ASan sees any read past the line. */
    char *line = malloc(size ? size : 1);
    struct pc_cmd c;

    memcpy(line, data, size);
    if (pc_cmd_parse(line, size, &c) == NULL) {
        if (c.arg < line || c.arg + c.arg_len > line + size)
            abort();
        if (memchr(c.name, 0, sizeof(c.name)) == NULL)
            abort();
        for (const char *p = c.name; *p; p++)
            if (*p >= 'a' && *p <= 'z')
                abort();
        for (size_t i = 0; i < size; i++)
            if (line[i] == '\r' || line[i] == '\n' || line[i] == 0)
                abort(); /* such a line must have been refused */
        if (c.verb == PC_VERB_MAIL)
            check_args(c.arg, c.arg_len, "FROM:");
        if (c.verb == PC_VERB_RCPT)
            check_args(c.arg, c.arg_len, "TO:");
    }
    /* The argument parser also on raw input, which the server never gives it, but cheaply. */
    check_args(line, size, size && (data[0] & 1) ? "TO:" : "FROM:");
    free(line);
    return 0;
}
