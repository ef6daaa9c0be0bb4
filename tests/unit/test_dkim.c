/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_dkim - DKIM verification and signing (filters/dkim.c)
 * DESCRIPTION
 *	Verification runs the same job the filter runs; keys come from the
 *	corpora's DNS files instead of the resolver (the one substitution).
 *	Tests that need ../shared/testdata skip when it is absent.
 * SEE ALSO
 *	RFC 6376, RFC 8301, RFC 8463 Appendix A
 */
#include <check.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <opendkim/dkim.h>
#include <unistd.h>

#include "tests/unit/dkimtest.h"

#define DKIMPY   TESTDATA "/dkim/dkimpy/"
#define MAILDKIM TESTDATA "/dkim/mail-dkim/"

/* rfc6376_keys - the two keys of the RFC 8463 Appendix A example */
static size_t rfc6376_keys(struct fake_dns *t)
{
    size_t len = 0;
    char *txt = slurp(DKIMPY "test.txt", &len);

    memset(t, 0, 2 * sizeof(*t));
    snprintf(t[0].name, sizeof(t[0].name), "brisbane._domainkey.football.example.com");
    snprintf(t[0].value, sizeof(t[0].value),
             "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=");
    snprintf(t[1].name, sizeof(t[1].name), "test._domainkey.football.example.com");
    ck_assert_ptr_nonnull(txt);
    txt[strcspn(txt, "\r\n")] = 0;
    snprintf(t[1].value, sizeof(t[1].value), "%s", txt);
    free(txt);
    return 2;
}

/* results_str - "result(reason); ..." for table comparison */
static void results_str(const struct pc_dkimv *j, char *out, size_t size)
{
    size_t n, o = 0;
    const struct pc_dkim_result *r = pc_dkimv_results(j, &n);

    out[0] = 0;
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(out + o, size - o, "%s%s%s%s%s", i ? "; " : "", r[i].result,
                              r[i].reason[0] ? "(" : "", r[i].reason, r[i].reason[0] ? ")" : "");
}

/* verify_file - verify a message text with a key table; results as a string */
static void verify_text(const char *text, size_t len, const struct fake_dns *t, size_t nt,
                        char *out, size_t size, int *lookups)
{
    struct dkim_lib *lib = pc_dkim_verify_lib(1024);
    struct pc_msg m;
    struct pc_dkimv *j;

    msg_from_buf(&m, text, len);
    j = verify_msg(lib, &m, t, nt, lookups);
    results_str(j, out, size);
    pc_dkimv_free(j);
    pc_msg_free(&m);
    pc_dkim_lib_free(lib);
}

START_TEST(rfc6376_both_pass)
{
    struct fake_dns t[2];
    size_t len = 0;
    char *msg, res[512];
    int lookups;

    if (!have_testdata())
        return;
    rfc6376_keys(t);
    msg = slurp(DKIMPY "rfc6376.signed.msg", &len);
    ck_assert_ptr_nonnull(msg);
    verify_text(msg, len, t, 2, res, sizeof(res), &lookups);
    ck_assert_str_eq(res, "pass; pass");
    ck_assert_int_eq(lookups, 2); /* one "try again" per key, never more */
    free(msg);
}
END_TEST

START_TEST(rfc6376_changed_word_fails_both)
{
    struct fake_dns t[2];
    size_t len = 0;
    char *msg, *w, res[512];
    int lookups;

    if (!have_testdata())
        return;
    rfc6376_keys(t);
    msg = slurp(DKIMPY "rfc6376.signed.msg", &len);
    w = strstr(msg, "hungry");
    ck_assert_ptr_nonnull(w);
    memcpy(w, "thirst", 6);
    verify_text(msg, len, t, 2, res, sizeof(res), &lookups);
    ck_assert_str_eq(res, "fail(body hash mismatch); fail(body hash mismatch)");
    free(msg);
}
END_TEST

START_TEST(rfc6376_key_trouble_per_signature)
{
    struct fake_dns t[2];
    size_t len = 0;
    char *msg, res[512];
    int lookups;

    if (!have_testdata())
        return;
    rfc6376_keys(t);
    t[0].st = PC_DNS_TRYLATER; /* ed25519 key: resolver timed out */
    msg = slurp(DKIMPY "rfc6376.signed.msg", &len);
    verify_text(msg, len, t, 2, res, sizeof(res), &lookups);
    /* A DNS failure for one signature does not spoil the other. */
    ck_assert_str_eq(res, "temperror(key lookup failed); pass");
    t[0].st = PC_DNS_NOTFOUND;
    verify_text(msg, len, t, 2, res, sizeof(res), &lookups);
    ck_assert_str_eq(res, "permerror(key not found in DNS); pass");
    free(msg);
}
END_TEST

START_TEST(no_signature)
{
    static const char msg[] = "From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n";
    char res[64];
    int lookups;

    verify_text(msg, sizeof(msg) - 1, NULL, 0, res, sizeof(res), &lookups);
    ck_assert_str_eq(res, "");
    ck_assert_int_eq(lookups, 0);
}
END_TEST

/*
 * The Mail::DKIM corpus under RFC 6376 + RFC 8301. Mail::DKIM's own
 * expectations (verifier.t) predate RFC 8301; here:
 *  - every rsa-sha1 signature that verifies is "policy": with 512/768-bit
 *    keys "key too small", with a 1024-bit key "rsa-sha1 not accepted";
 *  - pre-RFC drafts (no v=, v=0.5) are permerror "version missing" or
 *    "unsupported signature version"; DomainKeys (bad_dk_*, good_dk_*,
 *    dk_*) are not DKIM at all: no signature;
 *  - key problems keep Mail::DKIM's verdict class (permerror or
 *    temperror for DNS timeout/SERVFAIL);
 *  - the Ed25519 set is modern: goodkey passes, altered header/body fail.
 */
static const struct {
    const char *file, *maildkim, *expect;
} corpus[] = {
#include "tests/unit/dkim_corpus.inc"
};

START_TEST(maildkim_corpus)
{
    static struct fake_dns t[200];
    size_t nt;
    int lookups, npass = 0;

    if (!have_testdata())
        return;
    nt = fake_dns_load(MAILDKIM "FAKE_DNS.dat", t, 200);
    ck_assert_uint_gt(nt, 20);
    for (size_t i = 0; i < sizeof(corpus) / sizeof(corpus[0]); i++) {
        char path[512], res[1024];
        size_t len;
        snprintf(path, sizeof(path), MAILDKIM "corpus/%s", corpus[i].file);
        char *msg = slurp(path, &len);
        ck_assert_msg(msg != NULL, "%s missing", path);
        verify_text(msg, len, t, nt, res, sizeof(res), &lookups);
        ck_assert_msg(strcmp(res, corpus[i].expect) == 0, "%s: got \"%s\", expected \"%s\"",
                      corpus[i].file, res, corpus[i].expect);
        npass += strncmp(res, "pass", 4) == 0;
        /* Nothing Mail::DKIM finds failing or invalid may pass here. */
        if (strcmp(corpus[i].maildkim, "pass") != 0)
            ck_assert_msg(strstr(res, "pass") == NULL, "%s passes", corpus[i].file);
        free(msg);
    }
    ck_assert_int_eq(npass, 1); /* only goodkey_ed25519.txt */
}
END_TEST

/* sign_then_verify - our signer, then our verifier on the signed text */
static void sign_then_verify(const char *type, size_t bits, const char *expect_alg)
{
    static const char msg[] = "From: Joe <joe@example.org>\r\nTo: x@example.net\r\n"
                              "Subject: signed by portcullis\r\n\r\nHello,  world.\r\n\r\n\r\n";
    char path[] = "/tmp/pc-dkim-key-XXXXXX", e[300], res[256], *sig, *signed_msg;
    struct fake_dns t[1];
    const char *over[] = {"From"};
    struct dkim_lib *slib = pc_dkim_sign_lib(over, 1);
    struct pc_dkim_key *k;
    struct pc_msg m;
    int fd = mkstemp(path), lookups;

    ck_assert_int_ge(fd, 0);
    close(fd);
    memset(t, 0, sizeof(t));
    keypair(type, bits, path, t[0].value, sizeof(t[0].value));
    snprintf(t[0].name, sizeof(t[0].name), "sel1._domainkey.example.org");
    k = pc_dkim_key_load(path, "example.org", "sel1", e, sizeof(e));
    ck_assert_msg(k != NULL, "%s", e);
    ck_assert_str_eq(pc_dkim_key_alg(k), expect_alg);
    msg_from_buf(&m, msg, sizeof(msg) - 1);
    sig = pc_dkim_sign(slib, k, &m, "T1", true, true, e, sizeof(e));
    ck_assert_msg(sig != NULL, "%s", e);
    ck_assert_ptr_nonnull(strstr(sig, "c=relaxed/relaxed"));
    ck_assert_ptr_nonnull(strstr(sig, "d=example.org"));
    /* From oversigned: listed once more than it occurs. */
    ck_assert_ptr_nonnull(strcasestr(sig, "h=from:"));
    ck_assert_msg(strcasestr(strcasestr(sig, "h=from:") + 7, "from") != NULL, "%s", sig);
    signed_msg = malloc(strlen(sig) + sizeof(msg) + 32);
    sprintf(signed_msg, "DKIM-Signature: %s\r\n%s", sig, msg);
    verify_text(signed_msg, strlen(signed_msg), t, 1, res, sizeof(res), &lookups);
    ck_assert_str_eq(res, "pass");
    /* A From header added after signing is caught by the oversigning. */
    char *forged = malloc(strlen(signed_msg) + 64);
    sprintf(forged, "From: evil@example.com\r\n%s", signed_msg);
    verify_text(forged, strlen(forged), t, 1, res, sizeof(res), &lookups);
    ck_assert_str_eq(res, "fail(signature mismatch)");
    free(forged);
    free(signed_msg);
    free(sig);
    pc_msg_free(&m);
    pc_dkim_key_free(k);
    pc_dkim_lib_free(slib);
    unlink(path);
}

START_TEST(sign_rsa_sha256)
{
    sign_then_verify("RSA", 2048, "rsa-sha256");
}
END_TEST

START_TEST(sign_ed25519)
{
    sign_then_verify("ED25519", 0, "ed25519-sha256");
}
END_TEST

START_TEST(key_load_errors)
{
    char path[] = "/tmp/pc-dkim-key-XXXXXX", e[300], txt[2048];
    int fd = mkstemp(path);

    close(fd);
    ck_assert_ptr_null(pc_dkim_key_load("/nonexistent/key.pem", "a.example", "s", e, sizeof(e)));
    ck_assert_ptr_nonnull(strstr(e, "No such file"));
    keypair("RSA", 512, path, txt, sizeof(txt));
    ck_assert_ptr_null(pc_dkim_key_load(path, "a.example", "s", e, sizeof(e)));
    ck_assert_ptr_nonnull(strstr(e, "512 bits"));
    FILE *f = fopen(path, "w");
    fputs("not a key\n", f);
    fclose(f);
    ck_assert_ptr_null(pc_dkim_key_load(path, "a.example", "s", e, sizeof(e)));
    ck_assert_ptr_nonnull(strstr(e, "not a PEM private key"));
    unlink(path);
}
END_TEST

/*
 * l= : a signature covering only the first part of the body still passes
 * when text is appended, and the job reports the unsigned tail (fact
 * dkim_partial) so that rules can treat the appended content as unsigned.
 */
START_TEST(length_tag_partial)
{
    static const char msg[] = "From: a@example.org\r\nSubject: l\r\n\r\nsigned part\r\n";
    char path[] = "/tmp/pc-dkim-key-XXXXXX", txt[2048], *signed_msg;
    struct fake_dns t[1];
    size_t len = 0;
    int lookups;
    u_int flags = DKIM_LIBFLAGS_SIGNLEN;
    DKIM_STAT st;
    DKIM_LIB *lib = dkim_init(NULL, NULL);
    unsigned char *hdr = NULL;
    size_t hlen = 0;

    close(mkstemp(path));
    keypair("RSA", 2048, path, txt, sizeof(txt));
    char *pem = slurp(path, &len);
    dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags, sizeof(flags));
    DKIM *d =
        dkim_sign(lib, (u_char *)"L", NULL, (u_char *)pem, (u_char *)"l1", (u_char *)"example.org",
                  DKIM_CANON_RELAXED, DKIM_CANON_RELAXED, DKIM_SIGN_RSASHA256, -1, &st);
    ck_assert_ptr_nonnull(d);
    dkim_chunk(d, (u_char *)msg, sizeof(msg) - 1);
    dkim_chunk(d, NULL, 0);
    ck_assert_int_eq(dkim_eom(d, NULL), DKIM_STAT_OK);
    ck_assert_int_eq(dkim_getsighdr_d(d, 16, &hdr, &hlen), DKIM_STAT_OK);
    ck_assert_ptr_nonnull(strstr((char *)hdr, "l="));
    signed_msg = malloc(hlen + sizeof(msg) + 128);
    sprintf(signed_msg, "DKIM-Signature: %s\r\n%sappended by someone else\r\n", hdr, msg);
    dkim_free(d);
    dkim_close(lib);

    memset(t, 0, sizeof(t));
    snprintf(t[0].name, sizeof(t[0].name), "l1._domainkey.example.org");
    snprintf(t[0].value, sizeof(t[0].value), "%s", txt);
    struct dkim_lib *vlib = pc_dkim_verify_lib(1024);
    struct pc_msg m;
    msg_from_buf(&m, signed_msg, strlen(signed_msg));
    struct pc_dkimv *j = verify_msg(vlib, &m, t, 1, &lookups);
    size_t n;
    const struct pc_dkim_result *r = pc_dkimv_results(j, &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(r[0].result, "pass");
    ck_assert(r[0].l > 0);
    ck_assert(r[0].partial_body);
    pc_dkimv_free(j);
    pc_msg_free(&m);
    pc_dkim_lib_free(vlib);
    free(signed_msg);
    free(pem);
    unlink(path);
}
END_TEST

START_TEST(txt_join)
{
    char out[16];

    ck_assert(pc_dkim_txt_join("\3abc\2de", 7, out, sizeof(out)));
    ck_assert_str_eq(out, "abcde");
    ck_assert(!pc_dkim_txt_join("\5abc", 4, out, sizeof(out)));  /* length past the end */
    ck_assert(!pc_dkim_txt_join("\3a\0c", 4, out, sizeof(out))); /* NUL inside */
    ck_assert(!pc_dkim_txt_join("\20aaaaaaaaaaaaaaaa", 17, out, sizeof(out))); /* too long */
}
END_TEST

/*
 * __lsan_default_suppressions - libopendkim 2.11.0 leaks the parsed private key of
 * every Ed25519 signing operation inside dkim_privkey_load() (about 1.3 KB per
 * message); not ours to fix here, reported, and suppressed by that exact frame.
 */
const char *__asan_default_options(void);
const char *__lsan_default_suppressions(void);

/* __asan_default_options - full stacks (through libcrypto) so the suppression can match */
const char *__asan_default_options(void)
{
    return "fast_unwind_on_malloc=0";
}

const char *__lsan_default_suppressions(void)
{
    return "leak:dkim_privkey_load\n";
}

/* suite - the test cases */
static Suite *suite(void)
{
    Suite *s = suite_create("dkim");
    TCase *tc = tcase_create("dkim");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, rfc6376_both_pass);
    tcase_add_test(tc, rfc6376_changed_word_fails_both);
    tcase_add_test(tc, rfc6376_key_trouble_per_signature);
    tcase_add_test(tc, no_signature);
    tcase_add_test(tc, maildkim_corpus);
    tcase_add_test(tc, sign_rsa_sha256);
    tcase_add_test(tc, sign_ed25519);
    tcase_add_test(tc, key_load_errors);
    tcase_add_test(tc, txt_join);
    tcase_add_test(tc, length_tag_partial);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
