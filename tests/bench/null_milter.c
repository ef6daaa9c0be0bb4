/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	null_milter - a libmilter milter that does nothing (tests/bench/milter-bench.sh)
 * SYNOPSIS
 *	null_milter inet:PORT@127.0.0.1
 * DESCRIPTION
 *	Every step continues at once, on libmilter's own thread, with no header edit: the cost
 *	of libmilter itself (a thread per connection, its protocol), against which the bench
 *	puts the milter door's (the same plus the bridge to the event loop and the engine).
 *	It negotiates the same steps as the door does for a content chain.
 */
#include <libmilter/mfapi.h>
#include <stdio.h>

/* nm_negotiate - the door's steps: no reply to header, end of header and body */
static sfsistat nm_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1, unsigned long f2,
                             unsigned long f3, unsigned long *pf0, unsigned long *pf1,
                             unsigned long *pf2, unsigned long *pf3)
{
    (void)ctx, (void)f0, (void)f2, (void)f3;
    *pf0 = 0;
    *pf1 = f1 & (SMFIP_NOUNKNOWN | SMFIP_NR_HDR | SMFIP_NR_EOH | SMFIP_NR_BODY);
    *pf2 = *pf3 = 0;
    return SMFIS_CONTINUE;
}

/* nm_noreply - header, end of header, body */
static sfsistat nm_header(SMFICTX *ctx, char *n, char *v)
{
    (void)ctx, (void)n, (void)v;
    return SMFIS_NOREPLY;
}

static sfsistat nm_eoh(SMFICTX *ctx)
{
    (void)ctx;
    return SMFIS_NOREPLY;
}

static sfsistat nm_body(SMFICTX *ctx, unsigned char *p, size_t n)
{
    (void)ctx, (void)p, (void)n;
    return SMFIS_NOREPLY;
}

/* main - serve until killed */
int main(int argc, char **argv)
{
    struct smfiDesc d = {.xxfi_name = "null",
                         .xxfi_version = SMFI_VERSION,
                         .xxfi_header = nm_header,
                         .xxfi_eoh = nm_eoh,
                         .xxfi_body = nm_body,
                         .xxfi_negotiate = nm_negotiate};

    if (argc != 2 || smfi_register(d) != MI_SUCCESS || smfi_setconn(argv[1]) != MI_SUCCESS) {
        fprintf(stderr, "usage: null_milter inet:PORT@127.0.0.1\n");
        return 64;
    }
    return smfi_main() == MI_SUCCESS ? 0 : 1;
}
