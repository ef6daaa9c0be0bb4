/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	fuzz_sasl 1 - the AUTH exchange decoder
 * DESCRIPTION
 *	The input is split at LF: the first line is the AUTH argument, the
 *	rest are client lines fed to pc_sasl_step while the decoder asks for
 *	more. Invariants: a challenge is one of the three we send; done gives
 *	a non-empty user name and a password, both NUL-terminated, within
 *	PC_SASL_MAX_FIELD and free of CR, LF; an error has a 5xx code whose
 *	class matches the enhanced code and leaves the decoder wiped.
 * SEE ALSO
 *	RFC 4954, RFC 4616
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/sasl.h"

/* check_field - bounded, no line breaks */
static void check_field(const char *f)
{
    size_t n = strnlen(f, PC_SASL_MAX_FIELD + 1);
    if (n > PC_SASL_MAX_FIELD || memchr(f, '\r', n) || memchr(f, '\n', n))
        abort();
}

/* LLVMFuzzerTestOneInput - one exchange */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct pc_sasl s;
    struct pc_sasl_result r;
    const char *p = (const char *)data, *end = p + size;
    const char *eol = memchr(p, '\n', size);
    size_t len = eol ? (size_t)(eol - p) : size;

    enum pc_sasl_status st = pc_sasl_start(&s, p, len, &r);
    p = eol ? eol + 1 : end;
    while (st == PC_SASL_CHALLENGE) {
        if (strcmp(r.challenge, "") && strcmp(r.challenge, "VXNlcm5hbWU6") &&
            strcmp(r.challenge, "UGFzc3dvcmQ6"))
            abort();
        if (p >= end)
            break;
        eol = memchr(p, '\n', (size_t)(end - p));
        len = eol ? (size_t)(eol - p) : (size_t)(end - p);
        st = pc_sasl_step(&s, p, len, &r);
        p = eol ? eol + 1 : end;
    }
    if (st == PC_SASL_DONE) {
        if (r.user[0] == 0)
            abort();
        check_field(r.user);
        check_field(r.pass);
    } else if (st == PC_SASL_ERROR) {
        if (r.code / 100 != 5 || r.enh[0] != 5 || r.text == NULL || s.pass[0] || s.user[0])
            abort();
    }
    pc_sasl_wipe(&s);
    return 0;
}
