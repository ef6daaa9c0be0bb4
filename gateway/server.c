/*
 * NAME
 *	server 3 - the process: event loop, listeners, signals, reload
 */
#include "gateway/server.h"

#include "gateway/conf.h"
#include "lib/log.h"

/* pc_server_run - placeholder until the listener lands */
int pc_server_run(struct pc_conf *conf)
{
    pc_conf_unref(conf);
    pc_fatal("not yet");
}
