/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	fuzz_dkim - libFuzzer target: arbitrary messages through the DKIM verification job
 * DESCRIPTION
 *	The input is a message as the SMTP door spools it. Every key the job
 *	asks for is answered in turn with a valid RSA key record, a malformed
 *	record, "not found" and "try later", so that signature parsing, the
 *	try-again re-entry of dkim_eoh() and the result classification all
 *	see hostile input. Invariants: bounded results, every result a known
 *	RFC 8601 word.
 * SEE ALSO
 *	RFC 6376, filters/dkim.c
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "filters/dkim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct dkim_lib *lib;

/* LLVMFuzzerTestOneInput - one message */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const keys[] = {
        "v=DKIM1; k=rsa; "
        "p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6w"
        "y5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/"
        "8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5Qjv"
        "HO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB",
        "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
        "v=DKIM1; k=rsa; p=%%%;;; h=sha1:; t=y:s",
        "",
    };
    const char *p = (const char *)data;
    struct pc_msg m;
    struct pc_dkimv *j;
    size_t n, turn = 0;

    if (lib == NULL)
        lib = pc_dkim_verify_lib(1024);
    pc_msg_init(&m, 65536, 200, 1 << 20, "/tmp");
    for (size_t i = 0; i < size;) {
        const char *e = memchr(p + i, '\n', size - i);
        size_t end = e ? (size_t)(e - p) : size, len = end - i;
        if (len > 0 && p[i + len - 1] == '\r')
            len--;
        pc_msg_line(&m, p + i, len);
        i = end + 1;
    }
    pc_msg_finish(&m);
    j = pc_dkimv_new(lib, &m, "fuzz");
    while (pc_dkimv_run(j) == PC_DKIMV_NEED_KEY) {
        switch (turn++ % 6) {
        case 4:
            pc_dkimv_key(j, PC_DNS_NOTFOUND, NULL);
            break;
        case 5:
            pc_dkimv_key(j, PC_DNS_TRYLATER, NULL);
            break;
        default:
            pc_dkimv_key(j, PC_DNS_FOUND, keys[turn % 4]);
        }
        if (turn > 64)
            abort(); /* the job must not ask forever */
    }
    const struct pc_dkim_result *r = pc_dkimv_results(j, &n);
    if (n > PC_DKIM_MAX_SIGS)
        abort();
    for (size_t i = 0; i < n; i++) {
        static const char *ok[] = {"pass", "fail", "policy", "neutral", "temperror", "permerror"};
        size_t k = 0;
        while (k < 6 && strcmp(r[i].result, ok[k]) != 0)
            k++;
        if (k == 6)
            abort();
    }
    pc_dkimv_free(j);
    pc_msg_free(&m);
    return 0;
}
