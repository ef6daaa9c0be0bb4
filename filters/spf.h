/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	spf 3h - Sender Policy Framework evaluation with libspf2
 * DESCRIPTION
 *	A job holds everything one check needs, copied, so that pc_spf_run()
 *	can run on a worker thread without touching the session. Its DNS
 *	lookups go to the shared resolver (core/dns.h) on the loop and the
 *	worker waits for each answer (filters/spf.c says why and how).
 * SEE ALSO
 *	RFC 7208, RFC 7372, libspf2
 */
#ifndef PC_SPF_H
#define PC_SPF_H

#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "core/dns.h"
#include "core/services.h"
#include "lib/addr.h"
#include "lib/cidr.h"

enum pc_spf_result {
    PC_SPF_NONE,
    PC_SPF_NEUTRAL,
    PC_SPF_PASS,
    PC_SPF_FAIL,
    PC_SPF_SOFTFAIL,
    PC_SPF_TEMPERROR,
    PC_SPF_PERMERROR,
    PC_SPF_COUNT
};

extern const char *const pc_spf_result_names[PC_SPF_COUNT];

/* What a check needs, copied so that the worker never touches the session. */
struct pc_spf_job {
    struct pc_dns *dns;
    struct event_base *base;
    unsigned guard_ms;
    struct pc_ip ip;
    char helo[PC_DNS_NAME_MAX];
    char sender[PC_PATH_MAX + 1]; /* local@domain or "" */
    char domain[PC_DNS_NAME_MAX];
    char receiver[PC_DNS_NAME_MAX];
    bool helo_identity;
    /* results */
    enum pc_spf_result result;
    unsigned voids;
    bool bad_record;                     /* an SPF record failed spf_record_ok() */
    char ptr_names[32][PC_DNS_NAME_MAX]; /* PTR answers so far: their A lookups are not voids */
    unsigned nptr_names;
    bool mx_over; /* an MX answer had more than 10 names (RFC 7208 4.6.4) */
    char comment[256];
    /* owner */
    void *owner; /* the caller's; NULL once it gave up on the job */
    /* Read by the worker: once set, or past the deadline, lookups fail at once, so an
     * abandoned or endless check (a record with many slow names) frees its worker soon. */
    _Atomic bool abandoned;
    struct timespec deadline; /* CLOCK_MONOTONIC */
};

/* pc_spf_job_init - what to check: MAIL FROM, or HELO (as postmaster@helo) when use_helo */
void pc_spf_job_init(struct pc_spf_job *, const struct pc_services *, const struct pc_ip *ip,
                     const char *helo, const char *from_addr, const char *from_domain,
                     bool use_helo);
/* pc_spf_run - evaluate the job's identity (blocking: a worker thread) */
void pc_spf_run(struct pc_spf_job *);
/* pc_spf_quiet - silence libspf2's own stderr chatter (process-wide, set once) */
void pc_spf_quiet(void);

#endif
