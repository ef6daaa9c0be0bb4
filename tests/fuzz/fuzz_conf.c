/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	fuzz_conf 1 - the configuration loader on arbitrary bytes
 * DESCRIPTION
 *	The input is written to a temporary file and loaded with
 *	pc_conf_load() (libconfuse, then our bounds and cross-checks, then
 *	every filter's configure()). Invariants: a refusal carries a message
 *	that names the file; a loaded configuration has at least one listener
 *	with a backend, and its bounds hold; either way nothing leaks.
 * SEE ALSO
 *	portcullis.conf(5)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "filters/filter.h"
#include "gateway/conf.h"
#include "lib/log.h"

/* LLVMFuzzerTestOneInput - one configuration file */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool init;
    char path[] = "/tmp/pc-fuzz-conf-XXXXXX";
    struct pc_err err;

    if (!init) {
        pc_log_init("fuzz", PC_LOG_STDERR, 0);
        if (getenv("PC_FUZZ_VERBOSE") == NULL)
            pc_log_set_verbose(-1);
        init = true;
    }
    /* Includes and file lookups would reach outside the input: leave them out. */
    if (memmem(data, size, "include", 7) || memmem(data, size, "file", 4))
        return 0;
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size)
        abort();
    close(fd);
    memset(&err, 0, sizeof(err));
    struct pc_conf *c = pc_conf_load(path, &err);
    unlink(path);
    if (c == NULL) {
        if (err.msg[0] == 0)
            abort();
        return 0;
    }
    for (size_t i = 0; i < c->nlisteners; i++)
        if (c->listeners[i].backend == NULL)
            abort();
    if (c->limits.max_line_length < 2 || c->limits.max_command_length < 2)
        abort();
    pc_conf_unref(c);
    return 0;
}
