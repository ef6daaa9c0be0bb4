/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	sasl 3 - the AUTH exchange decoder (PLAIN and LOGIN)
 * DESCRIPTION
 *	Decodes what the client sends during AUTH into a user name and a
 *	password, or into the reply RFC 4954 section 6 prescribes for the
 *	fault. Base64 is decoded strictly (no whitespace, padding only at the
 *	end) because a lenient decoder lets two different lines mean the same
 *	credentials, which the fuzz target would have to special-case.
 * SEE ALSO
 *	RFC 4954, RFC 4616, RFC 4648
 */
#include "gateway/sasl.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

/* LOGIN's challenges, base64 of "Username:" and "Password:" as deployed clients expect. */
#define LOGIN_USER_CHALLENGE "VXNlcm5hbWU6"
#define LOGIN_PASS_CHALLENGE "UGFzc3dvcmQ6"

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* b64val - value of one base64 character, -1 if none */
static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* pc_base64_decode - strict RFC 4648 base64; -1 on bad input or when out is too small */
long pc_base64_decode(const char *in, size_t len, unsigned char *out, size_t size)
{
    size_t n = 0;

    if (len % 4 != 0)
        return -1;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)in[i + k];
            /* '=' only in the last quantum, only in its last two places, only trailing. */
            if (c == '=' && i + 4 == len && k >= 2 && (k == 3 || in[i + 3] == '=')) {
                v[k] = 0, pad++;
                continue;
            }
            if ((v[k] = b64val(c)) < 0)
                return -1;
        }
        unsigned long w = (unsigned long)v[0] << 18 | (unsigned long)v[1] << 12 |
                          (unsigned long)v[2] << 6 | (unsigned long)v[3];
        /* RFC 4648 section 3.5: the bits under the padding must be zero. */
        if ((pad == 1 && (w & 0xff)) || (pad == 2 && (w & 0xffff)))
            return -1;
        if (n + (size_t)(3 - pad) > size)
            return -1;
        out[n++] = (unsigned char)(w >> 16);
        if (pad < 2)
            out[n++] = (unsigned char)(w >> 8);
        if (pad < 1)
            out[n++] = (unsigned char)w;
    }
    return (long)n;
}

/* pc_base64_encode - NUL-terminated; -1 when out is too small */
long pc_base64_encode(const unsigned char *in, size_t len, char *out, size_t size)
{
    size_t need = (len + 2) / 3 * 4 + 1, n = 0;

    if (need > size)
        return -1;
    for (size_t i = 0; i < len; i += 3) {
        unsigned long w = (unsigned long)in[i] << 16;
        if (i + 1 < len)
            w |= (unsigned long)in[i + 1] << 8;
        if (i + 2 < len)
            w |= in[i + 2];
        out[n++] = b64[w >> 18 & 63];
        out[n++] = b64[w >> 12 & 63];
        out[n++] = i + 1 < len ? b64[w >> 6 & 63] : '=';
        out[n++] = i + 2 < len ? b64[w & 63] : '=';
    }
    out[n] = 0;
    return (long)n;
}

/* pc_sasl_mechanisms - the EHLO keyword's argument */
const char *pc_sasl_mechanisms(void)
{
    return "PLAIN LOGIN";
}

/* pc_sasl_wipe - forget the credentials */
void pc_sasl_wipe(struct pc_sasl *s)
{
    explicit_bzero(s, sizeof(*s));
}

/* fail - wipe and describe the reply */
static enum pc_sasl_status fail(struct pc_sasl *s, struct pc_sasl_result *r, int code, unsigned c,
                                unsigned sub, unsigned det, const char *text)
{
    pc_sasl_wipe(s);
    memset(r, 0, sizeof(*r));
    r->code = code, r->enh[0] = c, r->enh[1] = sub, r->enh[2] = det, r->text = text;
    return PC_SASL_ERROR;
}

/* challenge - ask for another line */
static enum pc_sasl_status challenge(struct pc_sasl_result *r, const char *text)
{
    memset(r, 0, sizeof(*r));
    r->challenge = text;
    return PC_SASL_CHALLENGE;
}

/* done - the credentials are in s */
static enum pc_sasl_status done(struct pc_sasl *s, struct pc_sasl_result *r)
{
    memset(r, 0, sizeof(*r));
    r->user = s->user, r->pass = s->pass;
    return PC_SASL_DONE;
}

/* bad_b64 - RFC 4954 section 4: a response that is not base64 ends the exchange */
static enum pc_sasl_status bad_b64(struct pc_sasl *s, struct pc_sasl_result *r)
{
    return fail(s, r, 501, 5, 5, 2, "Cannot decode the response (base64)");
}

/* copy_field - a decoded name or password: bounded, no NUL, CR or LF inside */
static bool copy_field(char *dst, const unsigned char *src, size_t len)
{
    if (len > PC_SASL_MAX_FIELD || memchr(src, 0, len) || memchr(src, '\r', len) ||
        memchr(src, '\n', len))
        return false;
    memcpy(dst, src, len);
    dst[len] = 0;
    return true;
}

/* decode_response - "=" is an empty response (RFC 4954 section 4), otherwise base64 */
static long decode_response(const char *line, size_t len, unsigned char *out, size_t size)
{
    if (len == 1 && line[0] == '=')
        return 0;
    if (len == 0)
        return -1;
    return pc_base64_decode(line, len, out, size);
}

/* plain_message - RFC 4616 section 2: [authzid] NUL authcid NUL passwd */
static enum pc_sasl_status plain_message(struct pc_sasl *s, const unsigned char *m, size_t n,
                                         struct pc_sasl_result *r)
{
    const unsigned char *nul1 = memchr(m, 0, n);
    const unsigned char *nul2 = nul1 ? memchr(nul1 + 1, 0, n - (size_t)(nul1 + 1 - m)) : NULL;

    if (nul2 == NULL)
        return fail(s, r, 501, 5, 5, 2, "Malformed PLAIN message");
    size_t zlen = (size_t)(nul1 - m), ulen = (size_t)(nul2 - nul1 - 1);
    size_t plen = n - (size_t)(nul2 + 1 - m);
    if (ulen == 0 || !copy_field(s->user, nul1 + 1, ulen) || !copy_field(s->pass, nul2 + 1, plen))
        return fail(s, r, 501, 5, 5, 2, "Malformed PLAIN message");
    /* Acting for another identity (an authzid unlike the authcid) is not offered. */
    if (zlen > 0 && (zlen != ulen || memcmp(m, nul1 + 1, ulen) != 0))
        return fail(s, r, 535, 5, 7, 8, "Authentication credentials invalid");
    return done(s, r);
}

/* respond - one decoded client response in the current state */
static enum pc_sasl_status respond(struct pc_sasl *s, const char *line, size_t len,
                                   struct pc_sasl_result *r)
{
    unsigned char m[3 * PC_SASL_MAX_FIELD + 3];
    long n;

    if (len > PC_SASL_MAX_LINE)
        return fail(s, r, 500, 5, 5, 6, "Authentication exchange line is too long");
    if (len == 1 && line[0] == '*') /* RFC 4954 section 4: the client cancels */
        return fail(s, r, 501, 5, 0, 0, "Authentication cancelled");
    if ((n = decode_response(line, len, m, sizeof(m))) < 0) {
        explicit_bzero(m, sizeof(m));
        return bad_b64(s, r);
    }
    enum pc_sasl_status st;
    if (s->mech == PC_SASL_PLAIN) {
        st = plain_message(s, m, (size_t)n, r);
    } else if (s->step == 0) {
        if (n == 0 || !copy_field(s->user, m, (size_t)n))
            st = fail(s, r, 501, 5, 5, 2, "Malformed user name");
        else
            s->step = 1, st = challenge(r, LOGIN_PASS_CHALLENGE);
    } else {
        st = copy_field(s->pass, m, (size_t)n) ? done(s, r)
                                               : fail(s, r, 501, 5, 5, 2, "Malformed password");
    }
    explicit_bzero(m, sizeof(m));
    return st;
}

/* pc_sasl_start - AUTH mechanism [SP initial-response] (RFC 4954 section 4) */
enum pc_sasl_status pc_sasl_start(struct pc_sasl *s, const char *args, size_t len,
                                  struct pc_sasl_result *r)
{
    memset(s, 0, sizeof(*s));
    const char *sp = memchr(args, ' ', len);
    size_t mlen = sp ? (size_t)(sp - args) : len;

    if (mlen == 5 && strncasecmp(args, "PLAIN", 5) == 0)
        s->mech = PC_SASL_PLAIN;
    else if (mlen == 5 && strncasecmp(args, "LOGIN", 5) == 0)
        s->mech = PC_SASL_LOGIN;
    else if (mlen == 0)
        return fail(s, r, 501, 5, 5, 4, "Syntax: AUTH mechanism [initial-response]");
    else
        return fail(s, r, 504, 5, 5, 4, "Unrecognized authentication type");
    if (sp == NULL)
        return challenge(r, s->mech == PC_SASL_PLAIN ? "" : LOGIN_USER_CHALLENGE);
    if (memchr(sp + 1, ' ', len - mlen - 1))
        return fail(s, r, 501, 5, 5, 4, "Syntax: AUTH mechanism [initial-response]");
    /* An initial response of "*" is not a cancel, there is nothing to cancel yet. */
    if (len - mlen - 1 == 1 && sp[1] == '*')
        return bad_b64(s, r);
    return respond(s, sp + 1, len - mlen - 1, r);
}

/* pc_sasl_step - one client line of the exchange */
enum pc_sasl_status pc_sasl_step(struct pc_sasl *s, const char *line, size_t len,
                                 struct pc_sasl_result *r)
{
    if (s->mech == PC_SASL_NONE)
        return fail(s, r, 503, 5, 5, 1, "No authentication exchange in progress");
    return respond(s, line, len, r);
}
