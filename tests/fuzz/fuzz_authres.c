/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	fuzz_authres - libFuzzer target for the header parsers of DMARC and A-R
 * DESCRIPTION
 *	The input's first line is an Authentication-Results value (authserv-id
 *	parser); the whole input is also a header block whose From fields go
 *	through the From parser and pc_dmarc_from(), and whose TXT-like tail
 *	goes through pc_dkim_txt_join(). Checks invariants, not just crashes.
 * SEE ALSO
 *	RFC 8601, RFC 5322 section 3.4, lib/authres.c, filters/dmarc.c
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "filters/dkim.h"
#include "filters/dmarc.h"
#include "lib/authres.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* LLVMFuzzerTestOneInput - one input */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    const char *nl = memchr(p, '\n', size);
    size_t first = nl ? (size_t)(nl - p) : size;
    char id[64], txt[300];
    struct pc_from_domains fd;
    struct pc_msg m;

    if (pc_authres_servid(p, first, id, sizeof(id)) &&
        (strlen(id) == 0 || strlen(id) >= sizeof(id)))
        abort();
    memset(&fd, 0, sizeof(fd));
    pc_from_parse(p, size, &fd);
    if (fd.ndomain > PC_FROM_MAX_DOMAINS)
        abort();
    for (size_t i = 0; i < fd.ndomain; i++)
        if (fd.domain[i][0] == 0 || strlen(fd.domain[i]) > 253)
            abort();
    pc_dkim_txt_join(p, size, txt, sizeof(txt));

    pc_msg_init(&m, 65536, 100, 65536, "/tmp");
    for (size_t i = 0; i < size;) {
        const char *e = memchr(p + i, '\n', size - i);
        size_t end = e ? (size_t)(e - p) : size;
        pc_msg_line(&m, p + i, end - i);
        i = end + 1;
    }
    pc_msg_finish(&m);
    enum pc_from_status st = pc_dmarc_from(&m, &fd);
    if (st == PC_FROM_ONE && fd.ndomain != 1)
        abort();
    pc_msg_free(&m);
    return 0;
}
