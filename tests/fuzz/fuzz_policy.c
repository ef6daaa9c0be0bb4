/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	fuzz_policy 1 - the Postfix policy delegation request parser
 * DESCRIPTION
 *	The input is what a policy client sent on a connection. Invariants:
 *	an error has a reason; a whole request took at most the bytes given
 *	and the bounds, ends with its empty line, has 1 to PC_PA_ATTRS_MAX
 *	attributes with safe names and values; every shorter prefix of it
 *	says "more" (the parser never decides on bytes it has not seen); and
 *	the attributes written back as a request parse to the same list.
 * SEE ALSO
 *	Postfix SMTPD_POLICY_README
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/policy_attr.h"

/* check_attr - a name and a value the door can use as C strings */
static void check_attr(const struct pc_pa_attr *a)
{
    if (a->name[0] == 0 || strchr(a->name, '='))
        abort();
    for (const char *p = a->value; *p; p++)
        if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f)
            abort();
}

/* round_trip - write the attributes back as a request: the same list */
static void round_trip(const struct pc_pa_request *r)
{
    static struct pc_pa_request back;
    char *out = malloc(PC_PA_SIZE_MAX + 1);
    size_t o = 0, used;
    const char *why;

    for (size_t i = 0; i < r->nattrs; i++)
        o += (size_t)snprintf(out + o, PC_PA_SIZE_MAX + 1 - o, "%s=%s\n", r->attrs[i].name,
                              r->attrs[i].value);
    out[o++] = '\n';
    if (o > PC_PA_SIZE_MAX || pc_pa_parse(out, o, &back, &used, &why) != PC_PA_OK || used != o ||
        back.nattrs != r->nattrs)
        abort();
    for (size_t i = 0; i < r->nattrs; i++)
        if (strcmp(back.attrs[i].name, r->attrs[i].name) ||
            strcmp(back.attrs[i].value, r->attrs[i].value))
            abort();
    free(out);
}

/* LLVMFuzzerTestOneInput - a connection's bytes */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct pc_pa_request req, cut;
    char *copy = malloc(size ? size : 1); /* exact size: ASan sees reads past it */
    size_t used, u2;
    const char *why;

    memcpy(copy, data, size);
    enum pc_pa_status st = pc_pa_parse(copy, size, &req, &used, &why);
    if (st == PC_PA_ERROR && (why == NULL || why[0] == 0))
        abort();
    if (st == PC_PA_OK) {
        if (used == 0 || used > size || used > PC_PA_SIZE_MAX || copy[used - 1] != '\n' ||
            req.nattrs == 0 || req.nattrs > PC_PA_ATTRS_MAX)
            abort();
        for (size_t i = 0; i < req.nattrs; i++)
            check_attr(&req.attrs[i]);
        size_t cuts[3] = {0, used / 2, used - 1};
        for (int i = 0; i < 3; i++)
            if (pc_pa_parse(copy, cuts[i], &cut, &u2, &why) != PC_PA_MORE)
                abort();
        round_trip(&req);
    }
    free(copy);
    return 0;
}
