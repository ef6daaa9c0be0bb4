/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	parse 3h - small value parsers for configuration and protocols
 */
#ifndef PC_PARSE_H
#define PC_PARSE_H

#include <stdbool.h>
#include <stddef.h>

/* pc_parse_duration - "300", "5s", "250ms", "5m", "1h", "1d" to milliseconds */
bool pc_parse_duration(const char *, unsigned long long *ms);
/* pc_parse_hostport - "host:port", "[v6]:port" or "unix:/path"; host and port copied out */
bool pc_parse_hostport(const char *, char *host, size_t hostsize, char *port, size_t portsize);

#endif
