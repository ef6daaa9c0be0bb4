/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	relay 3 - relay restriction: who may send where
 * DESCRIPTION
 *	Clients in mynetworks, authenticated clients and clients of a trusted
 *	listener may send anywhere. Everyone else may only send to the
 *	configured domains. A recipient is deliverable only when some filter
 *	marked it PC_RCPT_RELAY_OK; the core refuses the others, so a chain
 *	without this filter relays nothing.
 *
 *	Sender-specified routing (RFC 5321 section 3.6.1 says a server may
 *	refuse it) lets "user%other@our.domain" or "other!user@our.domain"
 *	reach a host we do not serve through a permissive backend; it is
 *	refused from untrusted clients, as Postfix's allow_untrusted_routing.
 * SEE ALSO
 *	RFC 5321 section 3.6, section 7.1
 */
#include <stdlib.h>
#include <string.h>

#include "core/filter.h"
#include "core/session.h"
#include "lib/log.h"

struct relay_conf {
    struct pc_cidr_list mynetworks;
    const char **domains;
    size_t ndomains;
    bool allow_untrusted_routing;
};

/* The filter's section as rows of the one configuration table (core/param.h). */
static const struct pc_param_row relay_params[] = {
    {"relay", "mynetworks", PT_LIST, "{127.0.0.0/8, ::1/128}", 0, 0, NULL,
     "clients that may relay; unset: mynetworks"},
    {"relay", "domains", PT_LIST, "{}", 0, 0, NULL, "recipient domains we accept for"},
    {"relay", "allow_untrusted_routing", PT_BOOL, "false", 0, 0, NULL,
     "accept %, ! and @ routing in recipients"},
    {0}};

/* relay_configure - networks and domains */
static int relay_configure(cfg_t *sec, void **out, struct pc_err *err)
{
    struct relay_conf *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return -1;
    pc_cidr_list_init(&c->mynetworks);
    *out = c;
    for (unsigned i = 0; i < cfg_size(sec, "mynetworks"); i++) {
        const char *n = cfg_getnstr(sec, "mynetworks", i);
        if (!pc_cidr_list_add(&c->mynetworks, n)) {
            pc_err_set(err, sec, "relay: mynetworks: bad network \"%s\"", n);
            return -1;
        }
    }
    c->ndomains = cfg_size(sec, "domains");
    c->domains = calloc(c->ndomains + 1, sizeof(char *));
    if (c->domains == NULL)
        return -1;
    for (unsigned i = 0; i < c->ndomains; i++) {
        const char *d = cfg_getnstr(sec, "domains", i);
        const char *check = d[0] == '.' ? d + 1 : d;
        if (!pc_domain_valid(check, strlen(check), true)) {
            pc_err_set(err, sec, "relay: domains: bad domain \"%s\"", d);
            return -1;
        }
        c->domains[i] = d;
    }
    c->allow_untrusted_routing = cfg_getbool(sec, "allow_untrusted_routing");
    return 0;
}

/* relay_destroy - release configuration */
static void relay_destroy(void *conf)
{
    struct relay_conf *c = conf;

    pc_cidr_list_free(&c->mynetworks);
    free(c->domains);
    free(c);
}

/* relay_trusted - may this client send anywhere */
static bool relay_trusted(const struct relay_conf *c, const struct pc_session *s)
{
    return s->trusted || s->auth_user || pc_cidr_list_match(&c->mynetworks, &s->client.ip);
}

/* relay_local - is the recipient domain one of ours */
static bool relay_local(const struct relay_conf *c, const struct pc_mailbox *mb)
{
    if (mb->domain[0] == 0) /* <postmaster> */
        return true;
    if (mb->literal)
        return false;
    for (size_t i = 0; i < c->ndomains; i++)
        if (pc_domain_match(mb->domain, c->domains[i]))
            return true;
    return false;
}

/* relay_rcpt - authorise or refuse one recipient */
static enum pc_action relay_rcpt(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v)
{
    const struct relay_conf *c = conf;
    struct pc_rcpt *r = s->txn->cur_rcpt;
    bool trusted = relay_trusted(c, s);

    (void)ctx;
    if (!trusted && !c->allow_untrusted_routing &&
        (r->mb.route || strpbrk(r->mb.local, "%!@") != NULL)) {
        pc_verdict_set(v, PC_REJECT, 554, "5.7.1",
                       "<%s>: Relay access denied (sender-specified routing)", r->mb.addr);
        return PC_REJECT;
    }
    /* Filters after us (greylist) share this trust: one fact per transaction. */
    if (trusted && !pc_fact_get(s, "relay"))
        pc_fact_add(s, "relay", "trusted");
    if (trusted || relay_local(c, &r->mb)) {
        r->flags |= PC_RCPT_RELAY_OK;
        return PC_CONTINUE;
    }
    pc_verdict_set(v, PC_REJECT, 554, "5.7.1", "<%s>: Relay access denied", r->mb.addr);
    return PC_REJECT;
}

const struct pc_filter_ops pc_filter_relay = {
    .name = "relay",
    .abi = PC_FILTER_ABI,
    .flags = PC_FILTER_GATE,
    .params = relay_params,
    .configure = relay_configure,
    .destroy = relay_destroy,
    .stage = {[PC_STAGE_RCPT] = relay_rcpt},
};
