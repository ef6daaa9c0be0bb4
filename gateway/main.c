/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	portcullis 8 - SMTP filtering and policy gateway
 * SYNOPSIS
 *	portcullis [-c file] [-t] [-p] [-n] [-v] [-V] [-h]
 *	portcullis test [options] message...
 * DESCRIPTION
 *	Runs in the foreground (systemd style). -t checks the configuration
 *	and exits; -p prints every parameter with its default. Exit status
 *	follows sysexits(3), as systemd names them: EX_USAGE, EX_CONFIG for
 *	a configuration error, EX_UNAVAILABLE when a listener cannot bind.
 */
#include <getopt.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "gateway/conf.h"
#include "gateway/policy_door.h"
#include "gateway/server.h"
#include "gateway/testcmd.h"
#include "lib/log.h"

#ifndef PC_VERSION
#define PC_VERSION "0.1.0"
#endif

/* usage - say how to call us, on stdout when asked, else on stderr */
static int usage(FILE *out, int status)
{
    fprintf(out,
            "usage: portcullis [-c config] [-t] [-p] [-n] [-v] [-V]\n"
            "       portcullis test [-c config] [options] MESSAGE.eml | DIR | FILE.test...\n"
            "  -c, --config FILE  configuration (default " PC_CONFIG_FILE ")\n"
            "  -t, --check        check the configuration and rule files, then exit\n"
            "  -p, --defaults     print every parameter with its default (with -c: its value)\n"
            "  -n, --nondefaults  print the parameters the configuration changes\n"
            "  -v, --verbose      more logging (repeat for more)\n"
            "  -V, --version      print the version\n"
            "  -h, --help         this text\n"
            "  test               run the filter chain on a message: portcullis test --help\n"
            "Exit status: 0 ok, 64 usage, 78 configuration error, 69 a listener cannot bind.\n"
            "See portcullis(8).\n");
    return status;
}

/* main - parse arguments, load configuration, serve */
int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'}, {"check", no_argument, NULL, 't'},
        {"defaults", no_argument, NULL, 'p'},     {"nondefaults", no_argument, NULL, 'n'},
        {"verbose", no_argument, NULL, 'v'},      {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    const char *path = PC_CONFIG_FILE;
    int ch, test_only = 0, print = 0;
    bool path_given = false;
    struct pc_err err = {{0}};

    if (argc > 1 && strcmp(argv[1], "test") == 0)
        return pc_test_main(argc - 1, argv + 1);
    while ((ch = getopt_long(argc, argv, "c:tpnvVh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            path = optarg;
            path_given = true;
            break;
        case 't':
            test_only = 1;
            break;
        case 'p':
            print = 'p';
            break;
        case 'n':
            print = 'n';
            break;
        case 'v':
            pc_log_set_verbose(pc_verbose + 1);
            break;
        case 'V':
            printf("portcullis %s\n", PC_VERSION);
            return 0;
        case 'h':
            return usage(stdout, 0);
        default:
            return usage(stderr, EX_USAGE);
        }
    }
    if (optind != argc)
        return usage(stderr, EX_USAGE);
    /* -p alone: the defaults; -p -c FILE: what FILE makes of every parameter; -n: what differs. */
    if (print && pc_conf_print(print == 'p' && !path_given ? NULL : path, print == 'n', &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return EX_CONFIG;
    }
    if (print)
        return 0;
    struct pc_conf *conf = pc_conf_load(path, &err);
    if (conf == NULL) {
        fprintf(stderr, "%s\n", err.msg);
        return EX_CONFIG;
    }
    if (test_only) {
        pc_policy_check(conf); /* warnings only: the configuration is valid */
        pc_conf_unref(conf);
        return 0;
    }
    return pc_server_run(conf);
}
