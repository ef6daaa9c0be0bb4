/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	dkim 3 - verify DKIM signatures; sign mail from trusted sources
 * DESCRIPTION
 *	At the end of the message the filter feeds the spooled headers to
 *	libopendkim. Keys are never looked up by the library itself: its key
 *	callback answers from the keys this job has been given, and otherwise
 *	says "try again", so dkim_eoh() returns DKIM_STAT_CBTRYAGAIN and the
 *	filter asks the shared resolver (gateway/dns.h) and returns
 *	PC_PENDING. It asks for every signature's key at once (the names come
 *	from libopendkim's prescreen callback), so several signatures cost one
 *	round trip. When all have answered, dkim_eoh() is called again (it is
 *	re-entrant after CBTRYAGAIN), and once every key is known the body is
 *	canonicalised and hashed on a worker thread (gateway/worker.h) from
 *	the job's own copy of the body, and the filter resumes the chain.
 *	Signing hashes on the loop (trusted, usually small, submissions).
 *
 *	RFC 8301: rsa-sha1 signatures and RSA keys shorter than min_key_bits
 *	never pass (result "policy"). Ed25519 (RFC 8463) is accepted when the
 *	library supports it (libopendkim 2.11 does).
 *
 *	Clients in mynetworks, authenticated clients and clients of a trusted
 *	listener are signed instead of verified, like OpenDKIM's
 *	InternalHosts: the key table names keys (name domain:selector:file),
 *	the signing table maps the From address or domain (a glob, first
 *	match wins) to a key name. Keys are read and checked at configure
 *	time, so a missing key is an error at portcullis -t.
 *
 *	Facts: dkim (summary), dkim_sig (one per signature), dkim_partial
 *	(l= shorter than the body), dkim_signed (what we signed), dkim_mode
 *	(sign or verify: how this filter saw the source).
 * SEE ALSO
 *	RFC 6376, RFC 8301, RFC 8463, RFC 8601, opendkim.conf(5) KeyTable and SigningTable
 */
#include "filters/dkim.h"

#include <limits.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <opendkim/dkim.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "filters/filter.h"
#include "gateway/worker.h"
#include "lib/authres.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/pool.h"
#include "policy/chain.h"

#define DKIM_NAME_MAX 320
#define DKIM_TXT_MAX 4096
#define DKIM_CHUNK 65536

/* ---- verification job ------------------------------------------------ */

struct dkim_key_answer {
    char name[DKIM_NAME_MAX];
    enum pc_dns_status st;
    char *txt;
};

struct pc_dkimv {
    DKIM *d;
    DKIM_LIB *lib;
    const struct pc_msg *msg;
    int phase; /* 0 headers, 1 end of headers, 2 body, 3 done */
    unsigned min_key_bits;
    struct dkim_key_answer keys[PC_DKIM_MAX_SIGS];
    size_t nkeys;
    char want[DKIM_NAME_MAX];
    char prefetch[PC_DKIM_MAX_SIGS][DKIM_NAME_MAX]; /* every signature's key name */
    size_t nprefetch;
    struct pc_dkim_result res[PC_DKIM_MAX_SIGS];
    size_t nres;
    bool defer_body;
    int body_fd;     /* snapshot: duplicated spool descriptor, or -1 */
    char *body_mem;  /* snapshot: copy of an in-memory body */
    size_t body_len; /* snapshot length */
    bool snapshot;
};

/* key_name - "selector._domainkey.domain", false when it cannot be a DNS name */
static bool key_name(const char *sel, const char *dom, char *out, size_t size)
{
    int n;

    if (sel == NULL || dom == NULL)
        return false;
    n = snprintf(out, size, "%s._domainkey.%s", sel, dom);
    return n > 0 && (size_t)n < size && pc_domain_valid(out, (size_t)n, false);
}

/*
 * key_failed - a key lookup failed temporarily. Answering DKIM_CBSTAT_ERROR
 * would make dkim_eoh() stop before the remaining signatures, so the
 * signature is marked KEYFAIL and the library is told to "try again": it
 * re-enters, skips the marked signature and goes on with the next one.
 */
static DKIM_CBSTAT key_failed(DKIM_SIGINFO *sig)
{
    dkim_sig_seterror(sig, DKIM_SIGERROR_KEYFAIL);
    return DKIM_CBSTAT_TRYAGAIN;
}

/* key_lookup - libopendkim key callback: answer from the job, else "try again" */
static DKIM_CBSTAT key_lookup(DKIM *d, DKIM_SIGINFO *sig, u_char *buf, size_t buflen)
{
    struct pc_dkimv *j = dkim_get_user_context(d);
    char name[DKIM_NAME_MAX];

    if (j == NULL)
        return DKIM_CBSTAT_ERROR;
    if (!key_name((const char *)dkim_sig_getselector(sig), (const char *)dkim_sig_getdomain(sig),
                  name, sizeof(name)))
        return DKIM_CBSTAT_NOTFOUND; /* NUL, spaces or overlong: no such record can exist */
    for (size_t i = 0; i < j->nkeys; i++) {
        const struct dkim_key_answer *k = &j->keys[i];
        if (strcasecmp(k->name, name) != 0)
            continue;
        if (k->st == PC_DNS_NOTFOUND)
            return DKIM_CBSTAT_NOTFOUND;
        if (k->st == PC_DNS_TRYLATER || k->txt == NULL || strlen(k->txt) >= buflen)
            return key_failed(sig);
        memcpy(buf, k->txt, strlen(k->txt) + 1);
        return DKIM_CBSTAT_CONTINUE;
    }
    /* Bound the lookups one message can cause. */
    if (j->nkeys >= PC_DKIM_MAX_SIGS)
        return key_failed(sig);
    pc_strlcpy(j->want, name, sizeof(j->want));
    return DKIM_CBSTAT_TRYAGAIN;
}

/* prescreen - libopendkim's look at all signatures before any key: note their key names */
static DKIM_CBSTAT prescreen(DKIM *d, DKIM_SIGINFO **sigs, int nsigs)
{
    struct pc_dkimv *j = dkim_get_user_context(d);
    char name[DKIM_NAME_MAX];

    for (int i = 0; j && i < nsigs && j->nprefetch < PC_DKIM_MAX_SIGS; i++) {
        bool dup = false;
        if (!key_name((const char *)dkim_sig_getselector(sigs[i]),
                      (const char *)dkim_sig_getdomain(sigs[i]), name, sizeof(name)))
            continue;
        for (size_t k = 0; k < j->nprefetch && !dup; k++)
            dup = strcasecmp(j->prefetch[k], name) == 0;
        if (!dup)
            pc_strlcpy(j->prefetch[j->nprefetch++], name, DKIM_NAME_MAX);
    }
    return DKIM_CBSTAT_CONTINUE;
}

/* pc_dkim_verify_lib - library handle for verification */
struct dkim_lib *pc_dkim_verify_lib(unsigned min_key_bits)
{
    DKIM_LIB *lib = dkim_init(NULL, NULL);
    u_int bits = min_key_bits;
    u_int flags = DKIM_LIBFLAGS_BADSIGHANDLES;

    if (lib == NULL)
        return NULL;
    dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_MINKEYBITS, &bits, sizeof(bits));
    dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags, sizeof(flags));
    dkim_set_key_lookup(lib, key_lookup);
    dkim_set_prescreen(lib, prescreen);
    return lib;
}

/* pc_dkim_lib_free - close a library handle */
void pc_dkim_lib_free(struct dkim_lib *lib)
{
    if (lib)
        dkim_close(lib);
}

/* pc_dkimv_new - a job over a finished message */
struct pc_dkimv *pc_dkimv_new(struct dkim_lib *lib, const struct pc_msg *msg, const char *id)
{
    struct pc_dkimv *j = calloc(1, sizeof(*j));
    DKIM_STAT st;

    if (j == NULL)
        return NULL;
    j->lib = lib;
    j->msg = msg;
    j->body_fd = -1;
    j->min_key_bits = 1024;
    dkim_options(lib, DKIM_OP_GETOPT, DKIM_OPTS_MINKEYBITS, &j->min_key_bits,
                 sizeof(j->min_key_bits));
    j->d = dkim_verify(lib, (const unsigned char *)(id ? id : "-"), NULL, &st);
    if (j->d == NULL) {
        free(j);
        return NULL;
    }
    dkim_set_user_context(j->d, j);
    return j;
}

static void collect(struct pc_dkimv *);

/* pc_dkimv_free - release a job */
void pc_dkimv_free(struct pc_dkimv *j)
{
    if (j == NULL)
        return;
    if (j->d)
        dkim_free(j->d);
    for (size_t i = 0; i < j->nkeys; i++)
        free(j->keys[i].txt);
    if (j->body_fd >= 0)
        close(j->body_fd);
    free(j->body_mem);
    free(j);
}

/* pc_dkimv_defer_body - stop before hashing the body */
void pc_dkimv_defer_body(struct pc_dkimv *j)
{
    j->defer_body = true;
}

/* pc_dkimv_snapshot - take the body out of the session's hands; 0 or -1 */
int pc_dkimv_snapshot(struct pc_dkimv *j)
{
    const struct pc_msg *m = j->msg;

    j->body_len = m->body_len;
    if (m->body_fd >= 0) {
        if ((j->body_fd = fcntl(m->body_fd, F_DUPFD_CLOEXEC, 0)) < 0)
            return -1;
    } else if (m->body_len > 0) {
        if ((j->body_mem = malloc(m->body_len)) == NULL)
            return -1;
        memcpy(j->body_mem, m->body.data, m->body_len);
    }
    j->snapshot = true;
    j->msg = NULL;
    return 0;
}

/* body_read - from the snapshot if there is one, else from the message */
static ssize_t body_read(const struct pc_dkimv *j, size_t off, char *buf, size_t len)
{
    ssize_t n;

    if (!j->snapshot)
        return pc_msg_body_read(j->msg, off, buf, len);
    if (off >= j->body_len)
        return 0;
    if (len > j->body_len - off)
        len = j->body_len - off;
    if (j->body_fd < 0) {
        memcpy(buf, j->body_mem + off, len);
        return (ssize_t)len;
    }
    do
        n = pread(j->body_fd, buf, len, (off_t)off);
    while (n < 0 && errno == EINTR);
    return n;
}

/* pc_dkimv_body - hash the body, finish, collect results */
void pc_dkimv_body(struct pc_dkimv *j)
{
    size_t total = j->snapshot ? j->body_len : j->msg->body_len, off = 0;
    char *buf = malloc(DKIM_CHUNK);
    ssize_t n;

    while (buf && off < total && (n = body_read(j, off, buf, DKIM_CHUNK)) > 0) {
        dkim_body(j->d, (u_char *)buf, (size_t)n);
        off += (size_t)n;
    }
    free(buf);
    dkim_eom(j->d, NULL);
    collect(j);
    j->phase = 3;
}

/* pc_dkimv_want - the TXT name the job waits for */
const char *pc_dkimv_want(const struct pc_dkimv *j)
{
    return j->want;
}

/* answered - has this name an answer already */
static bool answered(const struct pc_dkimv *j, const char *name)
{
    for (size_t i = 0; i < j->nkeys; i++)
        if (strcasecmp(j->keys[i].name, name) == 0)
            return true;
    return false;
}

/* pc_dkimv_answer - an answer for one key name */
void pc_dkimv_answer(struct pc_dkimv *j, const char *name, enum pc_dns_status st, const char *txt)
{
    struct dkim_key_answer *k;

    if (name[0] == 0 || j->nkeys >= PC_DKIM_MAX_SIGS || answered(j, name))
        return;
    k = &j->keys[j->nkeys++];
    pc_strlcpy(k->name, name, sizeof(k->name));
    k->st = st == PC_DNS_FOUND && txt == NULL ? PC_DNS_NOTFOUND : st;
    k->txt = st == PC_DNS_FOUND && txt ? strdup(txt) : NULL;
    if (strcasecmp(name, j->want) == 0)
        j->want[0] = 0;
}

/* pc_dkimv_key - an answer for the wanted name */
void pc_dkimv_key(struct pc_dkimv *j, enum pc_dns_status st, const char *txt)
{
    char name[DKIM_NAME_MAX];

    pc_strlcpy(name, j->want, sizeof(name));
    pc_dkimv_answer(j, name, st, txt);
    j->want[0] = 0;
}

/* pc_dkimv_pending - names still to look up, the wanted one first */
size_t pc_dkimv_pending(const struct pc_dkimv *j, const char **names, size_t max)
{
    size_t n = 0;

    if (j->want[0] && n < max)
        names[n++] = j->want;
    for (size_t i = 0; i < j->nprefetch && n < max && j->nkeys + n < PC_DKIM_MAX_SIGS; i++)
        if (strcasecmp(j->prefetch[i], j->want) != 0 && !answered(j, j->prefetch[i]))
            names[n++] = j->prefetch[i];
    return n;
}

/* alg_name - a= value for facts and Authentication-Results */
static const char *alg_name(dkim_alg_t a)
{
    switch (a) {
    case DKIM_SIGN_RSASHA1:
        return "rsa-sha1";
    case DKIM_SIGN_RSASHA256:
        return "rsa-sha256";
    case DKIM_SIGN_ED25519SHA256:
        return "ed25519-sha256";
    default:
        return "unknown";
    }
}

/* key_outcome - result of an unprocessed signature from its key lookup */
static void key_outcome(const struct pc_dkimv *j, struct pc_dkim_result *r)
{
    char name[DKIM_NAME_MAX];

    if (!key_name(r->selector, r->domain, name, sizeof(name)))
        return;
    for (size_t i = 0; i < j->nkeys; i++)
        if (strcasecmp(j->keys[i].name, name) == 0) {
            if (j->keys[i].st == PC_DNS_TRYLATER) {
                r->result = "temperror";
                pc_strlcpy(r->reason, "key lookup failed", sizeof(r->reason));
            } else if (j->keys[i].st == PC_DNS_NOTFOUND) {
                r->result = "permerror";
                pc_strlcpy(r->reason, "key not found in DNS", sizeof(r->reason));
            }
            return;
        }
    if (j->nkeys >= PC_DKIM_MAX_SIGS) {
        r->result = "temperror";
        pc_strlcpy(r->reason, "too many keys to look up", sizeof(r->reason));
    }
}

/* classify - one signature's RFC 8601 result and a reason */
static void classify(struct pc_dkimv *j, DKIM_SIGINFO *sig, struct pc_dkim_result *r)
{
    unsigned flags = dkim_sig_getflags(sig);
    int err = dkim_sig_geterror(sig), bh = dkim_sig_getbh(sig);
    dkim_alg_t alg = DKIM_SIGN_UNKNOWN;
    unsigned bits = 0;
    const u_char *p;
    ssize_t msglen = -1, canonlen = -1, signlen = -1;

    if ((p = dkim_sig_getdomain(sig)) != NULL)
        pc_strlcpy(r->domain, (const char *)p, sizeof(r->domain));
    if ((p = dkim_sig_getselector(sig)) != NULL)
        pc_strlcpy(r->selector, (const char *)p, sizeof(r->selector));
    pc_printable(r->domain);
    pc_printable(r->selector);
    dkim_sig_getsignalg(sig, &alg);
    pc_strlcpy(r->alg, alg_name(alg), sizeof(r->alg));
    if (dkim_sig_getkeysize(sig, &bits) == DKIM_STAT_OK)
        r->key_bits = bits;
    r->l = -1;
    if ((p = dkim_sig_gettagvalue(sig, false, (u_char *)"l")) != NULL) {
        r->l = strtol((const char *)p, NULL, 10);
        if (dkim_sig_getcanonlen(j->d, sig, &msglen, &canonlen, &signlen) == DKIM_STAT_OK &&
            signlen >= 0 && msglen > signlen)
            r->partial_body = true;
    }
    if (flags & DKIM_SIGFLAG_IGNORE) {
        r->result = "neutral";
        pc_strlcpy(r->reason, "signature ignored", sizeof(r->reason));
    } else if (err == DKIM_SIGERROR_OK && (flags & DKIM_SIGFLAG_PASSED) && bh == DKIM_SIGBH_MATCH) {
        if (alg == DKIM_SIGN_RSASHA1) {
            r->result = "policy";
            pc_strlcpy(r->reason, "rsa-sha1 not accepted (RFC 8301)", sizeof(r->reason));
        } else if (alg != DKIM_SIGN_ED25519SHA256 && bits < j->min_key_bits) {
            r->result = "policy";
            pc_strlcpy(r->reason, "key too small (RFC 8301)", sizeof(r->reason));
        } else {
            r->result = "pass";
        }
    } else {
        switch (err) {
        case DKIM_SIGERROR_OK:
        case DKIM_SIGERROR_BADSIG:
            r->result = "fail";
            pc_strlcpy(r->reason,
                       bh == DKIM_SIGBH_MISMATCH ? "body hash mismatch" : "signature mismatch",
                       sizeof(r->reason));
            break;
        case DKIM_SIGERROR_UNKNOWN:
            /* The library leaves a signature unprocessed when our key callback
             * reported trouble; our own record of the lookup says which. */
            r->result = (flags & DKIM_SIGFLAG_PROCESSED) ? "fail" : "neutral";
            pc_strlcpy(r->reason, (flags & DKIM_SIGFLAG_PROCESSED) ? "not verified" : "not checked",
                       sizeof(r->reason));
            if (!(flags & DKIM_SIGFLAG_PROCESSED))
                key_outcome(j, r);
            break;
        case DKIM_SIGERROR_KEYFAIL:
            r->result = "temperror";
            pc_strlcpy(r->reason, "key lookup failed", sizeof(r->reason));
            break;
        case DKIM_SIGERROR_KEYTOOSMALL:
            r->result = "policy";
            pc_strlcpy(r->reason, "key too small (RFC 8301)", sizeof(r->reason));
            break;
        default:
            r->result = "permerror";
            pc_strlcpy(r->reason, dkim_sig_geterrorstr(err), sizeof(r->reason));
        }
    }
}

/* collect - results of every signature */
static void collect(struct pc_dkimv *j)
{
    DKIM_SIGINFO **sigs = NULL;
    int n = 0;

    if (dkim_getsiglist(j->d, &sigs, &n) != DKIM_STAT_OK || sigs == NULL)
        return;
    for (int i = 0; i < n && j->nres < PC_DKIM_MAX_SIGS; i++)
        classify(j, sigs[i], &j->res[j->nres++]);
}

/* pc_dkimv_run - advance until a key is needed or the job is done */
enum pc_dkimv_state pc_dkimv_run(struct pc_dkimv *j)
{
    const struct pc_msg *m = j->msg;
    DKIM_STAT st;

    if (j->phase == 0) {
        for (size_t i = 0; i < m->nhdrs; i++) {
            const struct pc_header *h = &m->hdrs[i];
            if (h->raw_len >= 2)
                dkim_header(j->d, (u_char *)m->head.data + h->raw_off, h->raw_len - 2);
        }
        j->phase = 1;
    }
    if (j->phase == 1) {
        /* Each round either asks for a key or settles a signature. */
        for (int round = 0; round <= 2 * PC_DKIM_MAX_SIGS + 2; round++) {
            j->want[0] = 0;
            st = dkim_eoh(j->d);
            if (st != DKIM_STAT_CBTRYAGAIN)
                break;
            if (j->want[0])
                return PC_DKIMV_NEED_KEY;
        }
        if (st == DKIM_STAT_NOSIG) {
            /* Either no signature or none usable: still report broken ones. */
            collect(j);
            j->phase = 3;
            return PC_DKIMV_DONE;
        }
        j->phase = 2;
    }
    if (j->phase == 2) {
        if (j->defer_body)
            return PC_DKIMV_NEED_BODY;
        pc_dkimv_body(j);
    }
    return PC_DKIMV_DONE;
}

/* pc_dkimv_results - outcome per signature */
const struct pc_dkim_result *pc_dkimv_results(const struct pc_dkimv *j, size_t *n)
{
    *n = j->nres;
    return j->res;
}

/* pc_dkim_txt_join - concatenate the character-strings of one TXT RDATA */
bool pc_dkim_txt_join(const char *rdata, size_t len, char *out, size_t outsize)
{
    size_t i = 0, o = 0;

    if (outsize == 0)
        return false;
    while (i < len) {
        size_t n = (unsigned char)rdata[i++];
        if (n > len - i || o + n >= outsize)
            return false;
        memcpy(out + o, rdata + i, n);
        o += n;
        i += n;
    }
    out[o] = 0;
    return memchr(out, 0, o) == NULL; /* a NUL inside would truncate the key silently */
}

/* ---- signing ---------------------------------------------------------- */

struct pc_dkim_key {
    char *domain, *selector;
    unsigned char *pem;
    dkim_alg_t alg;
};

/* pc_dkim_key_load - read and check a private key (RSA >= 1024 bits or Ed25519) */
struct pc_dkim_key *pc_dkim_key_load(const char *path, const char *domain, const char *selector,
                                     char *err, size_t errsize)
{
    struct pc_dkim_key *k = NULL;
    struct stat sb;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    char *data = NULL;
    EVP_PKEY *pk = NULL;
    BIO *bio = NULL;

    if (fd < 0 || fstat(fd, &sb) < 0) {
        snprintf(err, errsize, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (sb.st_size <= 0 || sb.st_size > 65536) {
        snprintf(err, errsize, "%s: not a key file (size %lld)", path, (long long)sb.st_size);
        goto fail;
    }
    data = calloc(1, (size_t)sb.st_size + 1);
    if (data == NULL || read(fd, data, (size_t)sb.st_size) != sb.st_size) {
        snprintf(err, errsize, "%s: read error", path);
        goto fail;
    }
    bio = BIO_new_mem_buf(data, (int)sb.st_size);
    pk = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    if (pk == NULL) {
        snprintf(err, errsize, "%s: not a PEM private key", path);
        goto fail;
    }
    k = calloc(1, sizeof(*k));
    if (k == NULL)
        goto fail;
    switch (EVP_PKEY_base_id(pk)) {
    case EVP_PKEY_RSA:
        if (EVP_PKEY_bits(pk) < 1024) {
            snprintf(err, errsize, "%s: RSA key of %d bits, at least 1024 needed (RFC 8301)", path,
                     EVP_PKEY_bits(pk));
            goto fail;
        }
        k->alg = DKIM_SIGN_RSASHA256;
        break;
    case EVP_PKEY_ED25519:
        k->alg = DKIM_SIGN_ED25519SHA256;
        break;
    default:
        snprintf(err, errsize, "%s: key type is neither RSA nor Ed25519", path);
        goto fail;
    }
    k->pem = (unsigned char *)data;
    data = NULL;
    k->domain = strdup(domain);
    k->selector = strdup(selector);
    EVP_PKEY_free(pk);
    BIO_free(bio);
    close(fd);
    return k;
fail:
    if (k)
        free(k);
    EVP_PKEY_free(pk);
    BIO_free(bio);
    free(data);
    if (fd >= 0)
        close(fd);
    return NULL;
}

/* pc_dkim_key_free - release a key */
void pc_dkim_key_free(struct pc_dkim_key *k)
{
    if (k == NULL)
        return;
    free(k->pem);
    free(k->domain);
    free(k->selector);
    free(k);
}

/* pc_dkim_key_alg - a= of the key */
const char *pc_dkim_key_alg(const struct pc_dkim_key *k)
{
    return alg_name(k->alg);
}

/* pc_dkim_sign_lib - library handle for signing, oversigning the named headers */
struct dkim_lib *pc_dkim_sign_lib(const char *const *oversign, size_t n)
{
    DKIM_LIB *lib = dkim_init(NULL, NULL);
    const u_char **hdrs;

    if (lib == NULL)
        return NULL;
    /* Sign RFC 6376 5.4's recommended fields only: the library's default is every
     * field, which would cover fields a later filter removes (a forged
     * Authentication-Results) and break the signature in transit. */
    dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_SIGNHDRS, dkim_should_signhdrs,
                 sizeof(const u_char **));
    if (n > 0) {
        hdrs = calloc(n + 1, sizeof(*hdrs));
        if (hdrs == NULL) {
            dkim_close(lib);
            return NULL;
        }
        for (size_t i = 0; i < n; i++)
            hdrs[i] = (const u_char *)oversign[i];
        /* The library copies the list. */
        dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_OVERSIGNHDRS, hdrs, sizeof(hdrs));
        free(hdrs);
    }
    return lib;
}

/* pc_dkim_sign - sign the message as it will go out (deleted headers left out) */
char *pc_dkim_sign(struct dkim_lib *lib, const struct pc_dkim_key *k, const struct pc_msg *m,
                   const char *id, bool rh, bool rb, char *err, size_t errsize)
{
    DKIM_STAT st;
    DKIM *d = dkim_sign(lib, (const u_char *)(id ? id : "-"), NULL, k->pem,
                        (const u_char *)k->selector, (const u_char *)k->domain,
                        rh ? DKIM_CANON_RELAXED : DKIM_CANON_SIMPLE,
                        rb ? DKIM_CANON_RELAXED : DKIM_CANON_SIMPLE, k->alg, -1, &st);
    char *buf = NULL, *out = NULL;
    u_char *sig = NULL;
    size_t off = 0, siglen = 0;
    ssize_t n;

    if (d == NULL) {
        snprintf(err, errsize, "dkim_sign: %s", dkim_getresultstr(st));
        return NULL;
    }
    for (size_t i = 0; i < m->nhdrs; i++) {
        const struct pc_header *h = &m->hdrs[i];
        if (!h->deleted && h->raw_len >= 2)
            dkim_header(d, (u_char *)m->head.data + h->raw_off, h->raw_len - 2);
    }
    if ((st = dkim_eoh(d)) != DKIM_STAT_OK)
        goto out;
    buf = malloc(DKIM_CHUNK);
    while (buf && off < m->body_len && (n = pc_msg_body_read(m, off, buf, DKIM_CHUNK)) > 0) {
        dkim_body(d, (u_char *)buf, (size_t)n);
        off += (size_t)n;
    }
    if ((st = dkim_eom(d, NULL)) != DKIM_STAT_OK)
        goto out;
    if ((st = dkim_getsighdr_d(d, strlen("DKIM-Signature: "), &sig, &siglen)) != DKIM_STAT_OK)
        goto out;
    out = strndup((const char *)sig, siglen);
out:
    if (out == NULL)
        snprintf(err, errsize, "signing failed: %s (%s)", dkim_getresultstr(st),
                 dkim_geterror(d) ? dkim_geterror(d) : "-");
    free(buf);
    dkim_free(d);
    return out;
}

/* ---- the filter ----------------------------------------------------------- */

struct dkim_keyent {
    char *name;
    struct pc_dkim_key *key;
};

struct dkim_signent {
    char *pattern;
    size_t key;
};

struct dkim_conf {
    DKIM_LIB *vlib, *slib;
    bool verify;
    unsigned min_key_bits;
    struct pc_cidr_list mynetworks;
    struct dkim_keyent *keys;
    size_t nkeys;
    struct dkim_signent *sigs;
    size_t nsigs;
    bool rh, rb;
};

struct dkim_task;
struct dkim_lookup;

struct dkim_ctx {
    struct pc_session *s;
    const struct dkim_conf *c;
    struct pc_dkimv *job;
    struct dkim_lookup *lookups; /* key lookups in flight, all at once */
    size_t inflight;
    struct dkim_task *task; /* body hashing on a worker */
};

/* One key lookup in flight; the answer is kept until all have arrived. */
struct dkim_lookup {
    struct dkim_ctx *x;
    struct pc_dns_query *q;
    char name[DKIM_NAME_MAX];
};

/* Owned by the worker until done() runs; x is NULL once the session gave up. */
struct dkim_task {
    struct pc_dkimv *job;
    struct dkim_ctx *x;
};

static cfg_opt_t dkim_opts[] = {
    CFG_BOOL("verify", cfg_true, CFGF_NONE),
    CFG_INT("min_key_bits", 1024, CFGF_NONE),
    CFG_STR_LIST("mynetworks", "{127.0.0.0/8, ::1/128}", CFGF_NONE),
    CFG_STR_LIST("key_table", "{}", CFGF_NONE),
    CFG_STR_LIST("signing_table", "{}", CFGF_NONE),
    CFG_STR("canonicalization", "relaxed/relaxed", CFGF_NONE),
    CFG_STR_LIST("oversign_headers", "{From}", CFGF_NONE),
    CFG_END()};

/* dkim_destroy - release configuration */
static void dkim_destroy(void *conf)
{
    struct dkim_conf *c = conf;

    if (c == NULL)
        return;
    pc_dkim_lib_free(c->vlib);
    pc_dkim_lib_free(c->slib);
    pc_cidr_list_free(&c->mynetworks);
    for (size_t i = 0; i < c->nkeys; i++) {
        free(c->keys[i].name);
        pc_dkim_key_free(c->keys[i].key);
    }
    free(c->keys);
    for (size_t i = 0; i < c->nsigs; i++)
        free(c->sigs[i].pattern);
    free(c->sigs);
    free(c);
}

/* canon_parse - "relaxed/simple" etc.; a single word applies to the header only (RFC 6376 3.5) */
static bool canon_parse(const char *v, bool *rh, bool *rb)
{
    char h[16] = "", b[16] = "simple";

    if (sscanf(v, "%15[a-z]/%15[a-z]", h, b) < 1)
        return false;
    if ((strcmp(h, "relaxed") != 0 && strcmp(h, "simple") != 0) ||
        (strcmp(b, "relaxed") != 0 && strcmp(b, "simple") != 0))
        return false;
    *rh = strcmp(h, "relaxed") == 0;
    *rb = strcmp(b, "relaxed") == 0;
    return true;
}

/* keytable_add - "name domain:selector:/path/to/key" */
static int keytable_add(struct dkim_conf *c, cfg_t *sec, const char *line, struct pc_err *err)
{
    char name[128], dom[256], sel[64], path[1024], full[PATH_MAX], e[300];
    const char *file;
    struct pc_dkim_key *k;

    if (sscanf(line, "%127s %255[^:]:%63[^:]:%1023s", name, dom, sel, path) != 4 ||
        !pc_domain_valid(dom, strlen(dom), false) || !pc_domain_valid(sel, strlen(sel), false)) {
        pc_err_set(err, sec, "dkim: key_table: bad entry \"%s\" (name domain:selector:keyfile)",
                   line);
        return -1;
    }
    for (size_t i = 0; i < c->nkeys; i++)
        if (strcmp(c->keys[i].name, name) == 0) {
            pc_err_set(err, sec, "dkim: key_table: key \"%s\" defined twice", name);
            return -1;
        }
    if ((file = pc_conf_path(sec, path, full, sizeof(full))) == NULL) {
        pc_err_set(err, sec, "dkim: key_table: key \"%s\": file name too long", name);
        return -1;
    }
    if ((k = pc_dkim_key_load(file, dom, sel, e, sizeof(e))) == NULL) {
        pc_err_set(err, sec, "dkim: key_table: key \"%s\": %s", name, e);
        return -1;
    }
    c->keys[c->nkeys].name = strdup(name);
    c->keys[c->nkeys++].key = k;
    return 0;
}

/* signtable_add - "pattern keyname" */
static int signtable_add(struct dkim_conf *c, cfg_t *sec, const char *line, struct pc_err *err)
{
    char pat[300], name[128];

    if (sscanf(line, "%299s %127s", pat, name) != 2) {
        pc_err_set(err, sec, "dkim: signing_table: bad entry \"%s\" (pattern keyname)", line);
        return -1;
    }
    for (size_t i = 0; i < c->nkeys; i++)
        if (strcmp(c->keys[i].name, name) == 0) {
            c->sigs[c->nsigs].pattern = strdup(pat);
            c->sigs[c->nsigs++].key = i;
            return 0;
        }
    pc_err_set(err, sec, "dkim: signing_table: \"%s\": no key named \"%s\" in key_table", pat, name);
    return -1;
}

/* dkim_configure - libraries, networks, keys */
static int dkim_configure(cfg_t *sec, void **out, struct pc_err *err)
{
    struct dkim_conf *c = calloc(1, sizeof(*c));
    long bits = cfg_getint(sec, "min_key_bits");
    unsigned nk = cfg_size(sec, "key_table"), ns = cfg_size(sec, "signing_table");
    unsigned no = cfg_size(sec, "oversign_headers");
    const char **over;

    if (c == NULL)
        return -1;
    pc_cidr_list_init(&c->mynetworks);
    *out = c;
    c->verify = cfg_getbool(sec, "verify");
    if (bits < 512 || bits > 16384) {
        pc_err_set(err, sec, "dkim: min_key_bits: %ld out of range 512..16384", bits);
        return -1;
    }
    c->min_key_bits = (unsigned)bits;
    if (!canon_parse(cfg_getstr(sec, "canonicalization"), &c->rh, &c->rb)) {
        pc_err_set(err, sec, "dkim: canonicalization: \"%s\" (relaxed|simple[/relaxed|simple])",
                   cfg_getstr(sec, "canonicalization"));
        return -1;
    }
    for (unsigned i = 0; i < cfg_size(sec, "mynetworks"); i++) {
        const char *n = cfg_getnstr(sec, "mynetworks", i);
        if (!pc_cidr_list_add(&c->mynetworks, n)) {
            pc_err_set(err, sec, "dkim: mynetworks: bad network \"%s\"", n);
            return -1;
        }
    }
    c->keys = calloc(nk + 1, sizeof(*c->keys));
    c->sigs = calloc(ns + 1, sizeof(*c->sigs));
    over = calloc(no + 1, sizeof(*over));
    if (c->keys == NULL || c->sigs == NULL || over == NULL) {
        free(over);
        return -1;
    }
    for (unsigned i = 0; i < nk; i++)
        if (keytable_add(c, sec, cfg_getnstr(sec, "key_table", i), err) < 0) {
            free(over);
            return -1;
        }
    for (unsigned i = 0; i < ns; i++)
        if (signtable_add(c, sec, cfg_getnstr(sec, "signing_table", i), err) < 0) {
            free(over);
            return -1;
        }
    for (unsigned i = 0; i < no; i++)
        over[i] = cfg_getnstr(sec, "oversign_headers", i);
    c->vlib = pc_dkim_verify_lib(c->min_key_bits);
    c->slib = pc_dkim_sign_lib(over, no);
    free(over);
    if (c->vlib == NULL || c->slib == NULL) {
        pc_err_set(err, sec, "dkim: cannot initialise libopendkim");
        return -1;
    }
    return 0;
}

/* dkim_attach - per-session context */
static int dkim_attach(struct pc_session *s, void *conf, void **ctx)
{
    struct dkim_ctx *x = pc_pool_zalloc(s->pool, sizeof(*x));

    x->s = s;
    x->c = conf;
    *ctx = x;
    return 0;
}

/* dkim_drop - cancel a lookup and free the job */
static void dkim_drop(struct dkim_ctx *x)
{
    for (size_t i = 0; x->lookups && i < PC_DKIM_MAX_SIGS; i++)
        if (x->lookups[i].q) {
            pc_dns_cancel(x->lookups[i].q);
            x->lookups[i].q = NULL;
        }
    x->inflight = 0;
    if (x->task) { /* the worker's done() frees it */
        x->task->x = NULL;
        x->task = NULL;
    }
    pc_dkimv_free(x->job);
    x->job = NULL;
}

/* dkim_reset - end of transaction */
static void dkim_reset(struct pc_session *s, void *conf, void *ctx)
{
    (void)s, (void)conf;
    dkim_drop(ctx);
}

/* dkim_cancel - the chain gave up on us */
static void dkim_cancel(struct pc_session *s, void *conf, void *ctx)
{
    (void)s, (void)conf;
    dkim_drop(ctx);
}

/* result_rank - which result summarises several signatures (best first) */
static int result_rank(const char *r)
{
    static const char *order[] = {"pass", "fail", "policy", "permerror", "temperror", "neutral"};

    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
        if (strcmp(r, order[i]) == 0)
            return (int)i;
    return 99;
}

/* dkim_facts - publish the job's results */
static void dkim_facts(struct pc_session *s, const struct pc_dkimv *j)
{
    size_t n;
    const struct pc_dkim_result *r = pc_dkimv_results(j, &n);
    const char *best = "none";

    for (size_t i = 0; i < n; i++) {
        pc_fact_add(s, "dkim_sig", "%s d=%s s=%s a=%s%s%s", r[i].result,
                    r[i].domain[0] ? r[i].domain : "-", r[i].selector[0] ? r[i].selector : "-",
                    r[i].alg, r[i].reason[0] ? " reason=" : "", r[i].reason);
        if (r[i].partial_body)
            pc_fact_add(s, "dkim_partial", "d=%s l=%ld", r[i].domain, r[i].l);
        if (i == 0 || result_rank(r[i].result) < result_rank(best))
            best = r[i].result;
        pc_debug("%s: dkim: d=%s s=%s a=%s bits=%u l=%ld: %s %s", s->txn->id, r[i].domain,
                 r[i].selector, r[i].alg, r[i].key_bits, r[i].l, r[i].result, r[i].reason);
    }
    pc_fact_add(s, "dkim", "%s", best);
}

static void dkim_on_key(void *arg, enum pc_dns_status st, const struct pc_dns_answer *a);

static void dkim_work(void *arg);
static void dkim_done(void *arg);

/* dkim_step - run the job; PC_PENDING while a key is looked up or the body hashed */
static enum pc_action dkim_step(struct dkim_ctx *x)
{
    struct pc_session *s = x->s;
    enum pc_dkimv_state st;

    while ((st = pc_dkimv_run(x->job)) != PC_DKIMV_DONE) {
        if (st == PC_DKIMV_NEED_BODY) {
            struct dkim_task *t = malloc(sizeof(*t));
            if (t == NULL || pc_dkimv_snapshot(x->job) < 0) {
                free(t);
                pc_dkimv_body(x->job); /* on the loop after all */
                continue;
            }
            t->job = x->job;
            t->x = x;
            x->job = NULL;
            x->task = t;
            pc_worker_submit(s->svc->workers, dkim_work, dkim_done, t);
            return PC_PENDING;
        }
        /* NEED_KEY: ask for every key the signatures need, all at once. */
        const char *names[PC_DKIM_MAX_SIGS];
        size_t n = pc_dkimv_pending(x->job, names, PC_DKIM_MAX_SIGS);
        if (s->svc == NULL || s->svc->dns == NULL || n == 0) {
            pc_dkimv_key(x->job, PC_DNS_TRYLATER, NULL);
            continue;
        }
        if (x->lookups == NULL)
            x->lookups = pc_pool_zalloc(s->pool, PC_DKIM_MAX_SIGS * sizeof(*x->lookups));
        for (size_t i = 0; i < n; i++) {
            struct dkim_lookup *l = &x->lookups[i];
            l->x = x;
            pc_strlcpy(l->name, names[i], sizeof(l->name));
            l->q = NULL;
        }
        x->inflight = n;
        for (size_t i = 0; i < n; i++) {
            struct dkim_lookup *l = &x->lookups[i];
            l->q = pc_dns_lookup(s->svc->dns, l->name, PC_DNS_T_TXT, dkim_on_key, l);
            if (l->q == NULL) {
                pc_dkimv_answer(x->job, l->name, PC_DNS_TRYLATER, NULL);
                x->inflight--;
            }
        }
        if (x->inflight > 0)
            return PC_PENDING;
    }
    dkim_facts(s, x->job);
    pc_dkimv_free(x->job);
    x->job = NULL;
    return PC_CONTINUE;
}

/* dkim_work - on a worker thread: only the job, never the session */
static void dkim_work(void *arg)
{
    struct dkim_task *t = arg;

    pc_dkimv_body(t->job);
}

/* dkim_done - back on the loop: publish and resume, unless the session gave up */
static void dkim_done(void *arg)
{
    struct dkim_task *t = arg;
    struct dkim_ctx *x = t->x;
    struct pc_verdict v;

    if (x == NULL) {
        pc_dkimv_free(t->job);
        free(t);
        return;
    }
    x->task = NULL;
    x->job = t->job;
    free(t);
    if (dkim_step(x) == PC_PENDING)
        return;
    pc_verdict_clear(&v);
    pc_chain_resume(x->s, &v);
}

/* dkim_on_key - one key arrived; when the last one has, continue the job and resume */
static void dkim_on_key(void *arg, enum pc_dns_status st, const struct pc_dns_answer *a)
{
    struct dkim_lookup *l = arg;
    struct dkim_ctx *x = l->x;
    char *txt = NULL;
    struct pc_verdict v;

    l->q = NULL;
    if (st == PC_DNS_FOUND && a && a->n > 0) {
        /* RFC 6376 3.6.2.2: several records give undefined results; use the first valid one. */
        txt = malloc(DKIM_TXT_MAX);
        bool ok = false;
        for (size_t i = 0; txt && i < a->n && !ok; i++)
            ok = pc_dkim_txt_join(a->rr[i], a->rr_len[i], txt, DKIM_TXT_MAX);
        if (!ok)
            st = PC_DNS_NOTFOUND;
    } else if (st == PC_DNS_FOUND) {
        st = PC_DNS_NOTFOUND;
    }
    pc_dkimv_answer(x->job, l->name, st, txt);
    free(txt);
    if (--x->inflight > 0)
        return;
    if (dkim_step(x) == PC_PENDING)
        return;
    pc_verdict_clear(&v);
    pc_chain_resume(x->s, &v);
}

/* dkim_trusted - a source whose mail we sign rather than verify */
static bool dkim_trusted(const struct dkim_conf *c, const struct pc_session *s)
{
    return s->trusted || s->auth_user || pc_cidr_list_match(&c->mynetworks, &s->client.ip);
}

/* from_address - the single From address as "local@domain", lower-cased domain */
static bool from_address(struct pc_session *s, char *out, size_t size, char *dom, size_t dsize)
{
    const struct pc_msg *m = &s->txn->msg;
    ssize_t i = pc_msg_header_find(m, "From", 0);
    struct pc_from_domains fd = {0};
    char *v, *lt, *gt;

    if (i < 0 || pc_msg_header_find(m, "From", 1) >= 0)
        return false;
    pc_from_parse(m->hdrs[i].value, m->hdrs[i].value_len, &fd);
    if (fd.malformed || fd.n != 1 || fd.ndomain != 1)
        return false;
    pc_strlcpy(dom, fd.domain[0], dsize);
    v = pc_msg_header_value(m, (size_t)i, s->txn->pool);
    if ((lt = strrchr(v, '<')) != NULL && (gt = strchr(lt, '>')) != NULL) {
        *gt = 0;
        v = lt + 1;
    }
    while (isspace((unsigned char)*v))
        v++;
    pc_strlcpy(out, v, size);
    for (char *e = out + strlen(out); e > out && isspace((unsigned char)e[-1]);)
        *--e = 0;
    return true;
}

/* dkim_sign_msg - sign with the first signing-table match for the From address */
static void dkim_sign_msg(struct pc_session *s, const struct dkim_conf *c)
{
    char addr[512], dom[256], e[300];
    const struct dkim_signent *hit = NULL;

    if (c->nsigs == 0)
        return;
    if (!from_address(s, addr, sizeof(addr), dom, sizeof(dom))) {
        pc_info("%s: dkim: not signed: no single From address", s->txn->id);
        return;
    }
    for (size_t i = 0; i < c->nsigs && hit == NULL; i++) {
        const char *p = c->sigs[i].pattern;
        const char *subject = strchr(p, '@') ? addr : dom;
        if (fnmatch(p, subject, FNM_CASEFOLD) == 0)
            hit = &c->sigs[i];
    }
    if (hit == NULL)
        return;
    const struct pc_dkim_key *k = c->keys[hit->key].key;
    char *sig = pc_dkim_sign(c->slib, k, &s->txn->msg, s->txn->id, c->rh, c->rb, e, sizeof(e));
    if (sig == NULL) {
        pc_warn("%s: dkim: %s", s->txn->id, e);
        return;
    }
    pc_header_add(s, "DKIM-Signature", sig);
    pc_fact_add(s, "dkim_signed", "d=%s s=%s a=%s", k->domain, k->selector, pc_dkim_key_alg(k));
    free(sig);
}

/* dkim_filter_eom - sign for trusted sources, verify for the others */
static enum pc_action dkim_filter_eom(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v)
{
    const struct dkim_conf *c = conf;
    struct dkim_ctx *x = ctx;

    (void)v;
    if (s->txn == NULL)
        return PC_CONTINUE;
    if (dkim_trusted(c, s)) {
        pc_fact_add(s, "dkim_mode", "sign");
        dkim_sign_msg(s, c);
        return PC_CONTINUE;
    }
    if (!c->verify)
        return PC_CONTINUE;
    pc_fact_add(s, "dkim_mode", "verify");
    dkim_drop(x);
    x->job = pc_dkimv_new(c->vlib, &s->txn->msg, s->txn->id);
    if (x->job == NULL) {
        pc_verdict_set(v, PC_ERROR, 0, NULL, "DKIM verification unavailable");
        return PC_ERROR;
    }
    if (s->svc && s->svc->workers)
        pc_dkimv_defer_body(x->job);
    return dkim_step(x);
}

const struct pc_filter_ops pc_filter_dkim = {
    .name = "dkim",
    .abi = PC_FILTER_ABI,
    .opts = dkim_opts,
    .configure = dkim_configure,
    .destroy = dkim_destroy,
    .attach = dkim_attach,
    .reset = dkim_reset,
    .detach = dkim_reset,
    .cancel = dkim_cancel,
    .stage = {[PC_STAGE_EOM] = dkim_filter_eom},
};
