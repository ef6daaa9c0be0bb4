/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	fuzz_ptrname 1 - PTR RDATA decoding and the host name sanitiser
 * DESCRIPTION
 *	Whatever a hostile DNS server puts in a PTR record, the decoded text
 *	is printable and bounded, and the sanitised name is either "unknown"
 *	or a lower-case LDH host name: nothing else may reach a log line, a
 *	header or the backend.
 * SEE ALSO
 *	RFC 1035 section 3.3.12
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/dns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* LLVMFuzzerTestOneInput - one RDATA */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char text[PC_DNS_NAME_MAX * 4 + 8], clean[PC_DNS_NAME_MAX];
    int n = pc_dns_rdata_name((const char *)data, size, text, sizeof(text));

    if (n < 0)
        return 0;
    if ((size_t)n != strlen(text))
        abort();
    for (int i = 0; i < n; i++)
        if (text[i] < 0x21 || text[i] > 0x7e)
            abort();
    pc_dns_hostname_clean(text, (size_t)n, clean, sizeof(clean));
    if (strcmp(clean, "unknown") != 0) {
        if (!pc_dns_hostname_ok(clean) || strlen(clean) > 253)
            abort();
        for (const char *p = clean; *p; p++)
            if (isupper((unsigned char)*p))
                abort();
    }
    /* the sanitiser on raw bytes too (callers may hand it anything) */
    pc_dns_hostname_clean((const char *)data, size, clean, sizeof(clean));
    for (const char *p = clean; *p; p++)
        if (*p < 0x21 || *p > 0x7e)
            abort();
    return 0;
}
