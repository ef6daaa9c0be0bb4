/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	dkimtest 3h - helpers shared by the DKIM and DMARC unit tests
 * DESCRIPTION
 *	Load a message file into a struct pc_msg exactly as the SMTP door
 *	spools it (line by line, CRLF or LF endings accepted), and answer key
 *	lookups from the third-party corpora's DNS files. Header-only: each
 *	unit test is one program.
 */
#ifndef PC_DKIMTEST_H
#define PC_DKIMTEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <check.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "filters/dkim.h"
#include "core/msg.h"

#define TESTDATA "../shared/testdata"

/* have_testdata_ - the shared corpus is next to the repository; says so when a test skips */
static inline int have_testdata_(const char *test)
{
    struct stat sb;
    if (stat(TESTDATA, &sb) == 0)
        return 1;
    printf("skip: %s: " TESTDATA " absent\n", test);
    fflush(stdout); /* check forks each test and ends the child with _exit */
    return 0;
}
#define have_testdata() have_testdata_(__func__)

/* slurp - whole file, NUL-terminated; NULL if missing */
static inline char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct stat sb;
    char *b;

    if (f == NULL || fstat(fileno(f), &sb) < 0)
        return f ? (fclose(f), NULL) : NULL;
    b = calloc(1, (size_t)sb.st_size + 1);
    *len = fread(b, 1, (size_t)sb.st_size, f);
    fclose(f);
    return b;
}

/* msg_from_buf_spool - spool a message given as text; body to a file past threshold */
static inline void msg_from_buf_spool(struct pc_msg *m, const char *b, size_t len, size_t threshold)
{
    size_t i = 0;

    pc_msg_init(m, 1 << 20, 1000, threshold, "/tmp");
    while (i < len) {
        const char *nl = memchr(b + i, '\n', len - i);
        size_t e = nl ? (size_t)(nl - b) : len, n = e - i;
        if (n > 0 && b[i + n - 1] == '\r')
            n--;
        pc_msg_line(m, b + i, n);
        i = e + 1;
    }
    pc_msg_finish(m);
}

/* msg_from_buf - spool a message given as text, in memory */
static inline void msg_from_buf(struct pc_msg *m, const char *b, size_t len)
{
    msg_from_buf_spool(m, b, len, 1 << 20);
}

struct fake_dns {
    char name[320];
    char value[4096];
    enum pc_dns_status st;
};

/* fake_dns_load - Mail::DKIM's FAKE_DNS.dat: "name value", NXDOMAIN, ~~timeout~~ */
static inline size_t fake_dns_load(const char *path, struct fake_dns *t, size_t max)
{
    size_t len = 0, n = 0;
    char *b = slurp(path, &len), *save = NULL;

    if (b == NULL)
        return 0;
    for (char *line = strtok_r(b, "\n", &save); line && n < max;
         line = strtok_r(NULL, "\n", &save)) {
        char *sp;
        if (line[0] == '#' || (sp = strpbrk(line, " \t")) == NULL)
            continue;
        *sp++ = 0;
        sp += strspn(sp, " \t");
        snprintf(t[n].name, sizeof(t[n].name), "%s", line);
        t[n].st = PC_DNS_FOUND;
        if (strncmp(sp, "NXDOMAIN", 8) == 0)
            t[n].st = PC_DNS_NOTFOUND;
        else if (strncmp(sp, "~~", 2) == 0)
            t[n].st = PC_DNS_TRYLATER;
        else if (strcmp(sp, "\"\"") == 0)
            t[n].value[0] = 0;
        else
            snprintf(t[n].value, sizeof(t[n].value), "%s", sp);
        n++;
    }
    free(b);
    return n;
}

/* verify_msg - run a verification job to the end, answering from the table */
static inline struct pc_dkimv *verify_msg(struct dkim_lib *lib, const struct pc_msg *m,
                                          const struct fake_dns *t, size_t n, int *lookups)
{
    struct pc_dkimv *j = pc_dkimv_new(lib, m, "test");

    *lookups = 0;
    while (pc_dkimv_run(j) == PC_DKIMV_NEED_KEY) {
        const char *want = pc_dkimv_want(j);
        size_t i;
        (*lookups)++;
        for (i = 0; i < n; i++)
            if (strcasecmp(t[i].name, want) == 0)
                break;
        if (i == n)
            pc_dkimv_key(j, PC_DNS_NOTFOUND, NULL);
        else
            pc_dkimv_key(j, t[i].st, t[i].value);
    }
    return j;
}

/* b64 - base64 of bytes, malloc'd */
static inline char *b64(const unsigned char *p, size_t n)
{
    char *o = malloc(4 * ((n + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)o, p, (int)n);
    return o;
}

/* keypair - generate a key, write the PEM, and its DNS record */
static inline void keypair(const char *type, size_t bits, const char *path, char *txt, size_t size)
{
    EVP_PKEY *pk =
        bits ? EVP_PKEY_Q_keygen(NULL, NULL, type, bits) : EVP_PKEY_Q_keygen(NULL, NULL, type);
    FILE *f = fopen(path, "w");
    unsigned char *der = NULL, raw[32];
    size_t rawlen = sizeof(raw);
    char *p;

    ck_assert_ptr_nonnull(pk);
    ck_assert_ptr_nonnull(f);
    PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    if (strcmp(type, "RSA") == 0) {
        int n = i2d_PUBKEY(pk, &der);
        p = b64(der, (size_t)n);
        snprintf(txt, size, "v=DKIM1; k=rsa; p=%s", p);
        OPENSSL_free(der);
    } else {
        EVP_PKEY_get_raw_public_key(pk, raw, &rawlen);
        p = b64(raw, rawlen);
        snprintf(txt, size, "v=DKIM1; k=ed25519; p=%s", p);
    }
    free(p);
    EVP_PKEY_free(pk);
}

#endif
