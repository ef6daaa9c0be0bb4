/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	fuzz_spfrecord 1 - the SPF DNS layer's record handling
 * DESCRIPTION
 *	Bytes as TXT RDATA: joined into a string (pc_dns_rdata_txt) and, if it
 *	claims to be an SPF record, checked against RFC 7208 syntax
 *	(spf_record_ok) as our libspf2 DNS layer does. Neither may read out of
 *	bounds, loop or crash; a record with bytes outside printable ASCII is
 *	never accepted, and the CIDR /0 rewrite keeps a valid record valid.
 * SEE ALSO
 *	RFC 7208 section 3.3, section 12
 */
#include "filters/spf.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* LLVMFuzzerTestOneInput - one TXT RDATA */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char txt[SPF_TXT_MAX];
    long n = pc_dns_rdata_txt((const char *)data, size, txt, sizeof(txt));

    if (n >= 0 && spf_is_record(txt, (size_t)n) && spf_record_ok(txt, (size_t)n)) {
        static char fixed[SPF_TXT_MAX];
        for (long i = 0; i < n; i++)
            if ((unsigned char)txt[i] < 0x20 || (unsigned char)txt[i] > 0x7e)
                abort();
        /* the /0 rewrite keeps a valid record valid, for either client family */
        for (int v4 = 0; v4 < 2; v4++) {
            long f = spf_rewrite_cidr0(txt, (size_t)n, v4, fixed, sizeof(fixed));
            if (f >= 0 && (f != (long)strlen(fixed) || !spf_record_ok(fixed, (size_t)f)))
                abort();
        }
    }
    /* and the raw bytes as a record, without the TXT framing */
    if (spf_is_record((const char *)data, size))
        (void)spf_record_ok((const char *)data, size);
    return 0;
}
