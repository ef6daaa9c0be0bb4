/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	rules_int 3h - compiled rule set, shared by the compiler and the evaluator
 * DESCRIPTION
 *	Everything here is built by rules.c and read-only afterwards.
 */
#ifndef PC_RULES_INT_H
#define PC_RULES_INT_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "lib/cidr.h"
#include "rules/rules.h"

struct pc_pool;

enum rl_kind { RK_STR, RK_NUM, RK_IP };

enum rl_field {
    RF_CLIENT_IP,
    RF_CLIENT_NAME,
    RF_CLIENT_PTR,
    RF_HELO,
    RF_AUTH,
    RF_FROM,
    RF_FROM_LOCAL,
    RF_FROM_DOMAIN,
    RF_RCPT,
    RF_RCPT_LOCAL,
    RF_RCPT_DOMAIN,
    RF_RCPT_COUNT,
    RF_SIZE,
    RF_HEADER,
    RF_HEADER_RAW,
    RF_HEADERS,
    RF_BODY,
    RF_BODY_RAW,
    RF_PART_TYPE,
    RF_PART_FILENAME,
    RF_PART_SIZE,
    RF_PART_ENCODING,
    RF_PART_DISPOSITION,
    RF_PART_CHARSET,
    RF_MIME_PARTS,
    RF_MIME_DEPTH,
    RF_FACT,
    RF_SCORE,
    RF_COUNT
};

struct rl_field_info {
    const char *name;
    enum rl_kind kind;
    enum pc_rstage min_stage; /* earliest stage that knows the value */
    bool arg;                 /* takes a quoted argument: header "Subject", fact "spf" */
};
extern const struct rl_field_info pc_rl_fields[RF_COUNT];

enum rl_op {
    RO_EQ,
    RO_CONTAINS,
    RO_MATCH,
    RO_IN_LIST,
    RO_IN_CIDR,
    RO_EXISTS,
    RO_LT,
    RO_LE,
    RO_GT,
    RO_GE
};

enum rl_list_kind { RL_DOMAINS, RL_ADDRESSES, RL_CIDRS };

/* A list: open-addressing hash of lower-cased strings, or CIDRs bucketed by prefix length. */
struct rl_list {
    const char *name;
    enum rl_list_kind kind;
    const char **slots; /* domains/addresses: hash table, NULL = empty */
    size_t nslots, n;
    struct pc_ip *nets; /* cidrs: masked networks, hashed per prefix length */
    uint8_t *bits;
    size_t nnets, netslots;
    bool has_len[129];
};

struct rl_node {
    enum { RN_AND, RN_OR, RN_NOT, RN_TEST } type;
    struct rl_node *a, *b;
    /* RN_TEST */
    enum rl_field field;
    const char *arg;
    enum rl_op op;
    const char *str; /* RO_EQ / RO_CONTAINS value */
    size_t str_len;
    double num;
    pcre2_code *re;
    pcre2_code **lits; /* body regexes: some literal every match contains (prefilter.c) */
    const char **lit_strs;
    size_t nlits;
    const struct rl_list *list;
    struct pc_cidr cidr;
};

enum rl_act_type {
    RA_ACCEPT,
    RA_REJECT,
    RA_TEMPFAIL,
    RA_DISCARD,
    RA_ADD_HEADER,
    RA_REMOVE_HEADER,
    RA_SCORE
};

struct rl_action {
    enum rl_act_type type;
    int code;
    char enh[16];
    const char *text;   /* reply text or header value */
    const char *header; /* header name */
    double score;
};

struct rl_rule {
    const char *name;
    const char *file;
    int line;
    enum pc_rstage stage;
    bool log_only;
    struct rl_node *cond;
    struct rl_action *act;
    size_t nact;
};

struct rl_threshold {
    double score;
    struct rl_action act;
};

struct pc_rules {
    struct pc_pool *pool;
    struct rl_rule **rules[PC_RS_COUNT];
    size_t nrules[PC_RS_COUNT];
    struct rl_threshold *thr;
    size_t nthr;
    const char *score_header;
    struct rl_list **lists;
    size_t nlists;
    pcre2_match_context *mctx;
    struct pc_rules_limits lim; /* lim.mime.skip: what no rule reads */
    unsigned mime_reads;        /* PC_MIME_SKIP_* bits some rule needs */
    bool needs_mime;            /* some body-stage rule reads the MIME view */
};

const char *pc_rl_stage_name(enum pc_rstage);

/* prefilter.c */
/* pc_rl_prefilter - literals for a body regex into the node; false when there are none */
bool pc_rl_prefilter(struct pc_pool *, struct rl_node *, const char *pat, size_t len,
                     uint32_t reflags);
/* pc_rl_prefilter_pass - false when none of the node's literals occurs: the regex cannot match */
bool pc_rl_prefilter_pass(const struct rl_node *, const char *text, size_t len, pcre2_match_data *);

/* list.c */
struct rl_list *pc_rl_list_new(struct pc_pool *, const char *name, enum rl_list_kind);
/* pc_rl_list_add - one entry; NULL or why it is bad */
const char *pc_rl_list_add(struct pc_pool *, struct rl_list *, const char *entry);
void pc_rl_list_seal(struct pc_pool *, struct rl_list *);
bool pc_rl_list_has(const struct rl_list *, const char *value);
bool pc_rl_list_has_ip(const struct rl_list *, const struct pc_ip *);

#endif
