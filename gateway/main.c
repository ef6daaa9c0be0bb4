/*
 * NAME
 *	portcullis 8 - SMTP filtering and policy gateway
 * SYNOPSIS
 *	portcullis [-c file] [-t] [-p] [-v] [-V]
 * DESCRIPTION
 *	Runs in the foreground (systemd style). -t checks the configuration
 *	and exits; -p prints every parameter with its default.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway/conf.h"
#include "gateway/server.h"
#include "lib/log.h"

int pc_test_main(int argc, char **argv); /* gateway/testcmd.c */

#ifndef PC_VERSION
#define PC_VERSION "0.1.0"
#endif

/* usage - say how to call us */
static void usage(void)
{
    fprintf(stderr, "usage: portcullis [-c config] [-t] [-p] [-v] [-V]\n");
    exit(2);
}

/* main - parse arguments, load configuration, serve */
int main(int argc, char **argv)
{
    const char *path = NULL;
    int ch, test_only = 0;
    struct pc_err err = {{0}};

    if (argc > 1 && strcmp(argv[1], "test") == 0)
        return pc_test_main(argc - 1, argv + 1);
    while ((ch = getopt(argc, argv, "c:tpvV")) != -1) {
        switch (ch) {
        case 'c':
            path = optarg;
            break;
        case 't':
            test_only = 1;
            break;
        case 'p':
            pc_conf_print_defaults();
            return 0;
        case 'v':
            pc_log_set_verbose(pc_verbose + 1);
            break;
        case 'V':
            printf("portcullis %s\n", PC_VERSION);
            return 0;
        default:
            usage();
        }
    }
    if (optind != argc)
        usage();
    struct pc_conf *conf = pc_conf_load(path, &err);
    if (conf == NULL) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    if (test_only) {
        pc_conf_unref(conf);
        return 0;
    }
    return pc_server_run(conf);
}
