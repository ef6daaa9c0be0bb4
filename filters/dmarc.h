/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	dmarc 3h - DMARC evaluation steps, independent of the loop
 * DESCRIPTION
 *	pc_dmarc_from() finds the author domain in a spooled message and says
 *	whether it is unambiguous. pc_dmarc_pick() chooses the policy record
 *	among TXT answers. pc_dmarc_eval() runs libopendmarc's policy and
 *	alignment logic over the results the dkim and spf filters recorded.
 * SEE ALSO
 *	RFC 7489
 */
#ifndef PC_DMARC_H
#define PC_DMARC_H

#include <stdbool.h>
#include <stddef.h>

#include "gateway/msg.h"
#include "lib/authres.h"

enum pc_from_status {
    PC_FROM_ONE,       /* exactly one From field naming one domain */
    PC_FROM_NONE,      /* no From field, or no domain in it */
    PC_FROM_MULTIPLE,  /* several From fields, or mailboxes of different domains */
    PC_FROM_MALFORMED, /* one domain found, but some mailbox was unparseable */
};

enum pc_from_status pc_dmarc_from(const struct pc_msg *, struct pc_from_domains *);
const char *pc_from_status_name(enum pc_from_status);

/* pc_dmarc_pick - the single "v=DMARC1" record among joined TXT strings, or NULL */
const char *pc_dmarc_pick(const char *const *txt, size_t n);

#define PC_DMARC_MAX_DKIM 16

struct pc_dmarc_in {
    const char *from_domain;
    const char *record;     /* the policy record */
    const char *org_domain; /* where the record was found when it was not the From domain */
    const char *spf;        /* RFC 7208 result or NULL */
    const char *spf_domain; /* MAIL FROM domain (or HELO name) */
    bool spf_helo;
    size_t ndkim;
    const char *dkim_domain[PC_DMARC_MAX_DKIM];
    const char *dkim_selector[PC_DMARC_MAX_DKIM];
    const char *dkim_result[PC_DMARC_MAX_DKIM];
};

struct pc_dmarc_out {
    const char *result; /* pass fail none permerror */
    char policy;        /* 'r', 'q', 'n', or 0 when no record */
    bool sp_used;       /* the subdomain policy applied */
    bool dkim_aligned, spf_aligned;
    int pct;
};

/* pc_dmarc_eval - 0, or -1 when the record does not parse (out->result = "permerror") */
int pc_dmarc_eval(const struct pc_dmarc_in *, struct pc_dmarc_out *);

/* pc_dmarc_org_domain - organizational domain (public suffix list when loaded) */
void pc_dmarc_org_domain(const char *domain, char *out, size_t size);

/* pc_dmarc_library - one-time libopendmarc initialisation with a public suffix list */
int pc_dmarc_library(const char *psl_path);

#endif
