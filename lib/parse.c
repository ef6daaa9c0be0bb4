/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	parse 3 - small value parsers for configuration and protocols
 */
#include "lib/parse.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* pc_parse_duration - a number with an optional unit */
bool pc_parse_duration(const char *s, unsigned long long *ms)
{
    char *end;
    unsigned long long v, mul;

    while (isspace((unsigned char)*s))
        s++;
    if (!isdigit((unsigned char)*s))
        return false;
    v = strtoull(s, &end, 10);
    if (strcmp(end, "") == 0 || strcmp(end, "s") == 0)
        mul = 1000;
    else if (strcmp(end, "ms") == 0)
        mul = 1;
    else if (strcmp(end, "m") == 0)
        mul = 60000;
    else if (strcmp(end, "h") == 0)
        mul = 3600000;
    else if (strcmp(end, "d") == 0)
        mul = 86400000;
    else
        return false;
    if (v > (1ULL << 40) / mul)
        return false;
    *ms = v * mul;
    return true;
}

/* pc_parse_hostport - split an endpoint */
bool pc_parse_hostport(const char *s, char *host, size_t hs, char *port, size_t ps)
{
    const char *colon;
    size_t hl;

    if (strncmp(s, "unix:", 5) == 0) {
        if (strlen(s + 5) == 0 || strlen(s + 5) >= hs)
            return false;
        strcpy(host, s + 5);
        port[0] = 0;
        return true;
    }
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL || rb[1] != ':')
            return false;
        hl = (size_t)(rb - s - 1);
        s++;
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || memchr(s, ':', (size_t)(colon - s)) != NULL)
            return false;
        hl = (size_t)(colon - s);
    }
    if (hl == 0 || hl >= hs || strlen(colon + 1) == 0 || strlen(colon + 1) >= ps)
        return false;
    for (const char *p = colon + 1; *p; p++)
        if (!isdigit((unsigned char)*p))
            return false;
    long pn = strtol(colon + 1, NULL, 10);
    if (pn < 1 || pn > 65535)
        return false;
    memcpy(host, s, hl);
    host[hl] = 0;
    strcpy(port, colon + 1);
    return true;
}
