/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	fuzz_dovecot 1 - the reader of Dovecot's auth answers
 * DESCRIPTION
 *	The input is split at LF into lines given to pc_dovecot_reply (as
 *	dv_read does, NUL-terminated). Invariants: a line is accepted only
 *	when it starts with OK, FAIL or CONT, a tab and a decimal id that fits
 *	an unsigned int; OK gives PC_AUTH_OK, CONT a temporary failure with
 *	cont set, FAIL a failure (temporary only with a "temp" argument).
 * SEE ALSO
 *	https://doc.dovecot.org/developer_manual/design/auth_protocol/
 */
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/authdb_int.h"

/* LLVMFuzzerTestOneInput - lines of answers */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    for (char *line = buf, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        unsigned long id;
        enum pc_auth_result res;
        bool cont;
        if (!pc_dovecot_reply(line, &id, &res, &cont))
            continue;
        if (id > UINT_MAX)
            abort();
        if (strncmp(line, "OK\t", 3) == 0 && (res != PC_AUTH_OK || cont))
            abort();
        if (strncmp(line, "CONT\t", 5) == 0 && (res != PC_AUTH_TEMPFAIL || !cont))
            abort();
        if (strncmp(line, "FAIL\t", 5) == 0 &&
            (cont || res == PC_AUTH_OK || (res == PC_AUTH_TEMPFAIL && !strstr(line, "temp"))))
            abort();
        if (strncmp(line, "OK\t", 3) && strncmp(line, "FAIL\t", 5) && strncmp(line, "CONT\t", 5))
            abort();
    }
    free(buf);
    return 0;
}
