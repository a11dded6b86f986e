#ifndef WSGATE_GATEWAY_MASTER_H
#define WSGATE_GATEWAY_MASTER_H

#include "common/config.h"

/*
 * The master process (admin_fd: the --admin listener shared by the workers, or -1): forks
 * cfg->workers workers, restarts one that dies (with a growing delay if it keeps dying; not after
 * exit status 2, a fatal setup error), and on SIGTERM/SIGINT forwards SIGTERM and waits for every
 * worker to finish, up to a deadline, then exits. Returns the process exit status.
 */
int master_run(const struct config *cfg, int admin_fd);

#endif /* WSGATE_GATEWAY_MASTER_H */
