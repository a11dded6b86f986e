/* wsgate: the gateway program. Parses and checks every setting, then hands over
 * to the master, which forks the workers. */

#include <stdio.h>
#include <string.h>

#include "version.h"

#include "common/config.h"
#include "common/log.h"
#include "gateway/master.h"
#include "worker/worker.h"

extern char **environ;

int main(int argc, char **argv)
{
    static struct config cfg;
    char err[512];
    int r, admin_fd;

    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--version") == 0) {
            printf("wsgate %s (git %s)\n", WSGATE_VERSION, WSGATE_GIT_REV);
            return 0;
        }
    config_defaults(&cfg);
    r = config_parse(&cfg, argc, argv, environ, err, sizeof(err));
    if (r == 1) {
        fputs(config_usage(), stdout);
        return 0;
    }
    if (r < 0) {
        fprintf(stderr, "wsgate: %s\n", err);
        return 2;
    }
    log_threshold = (enum log_level)cfg.log_level;
    log_set_tag("master");
    log_msg(LOG_NOTICE, NULL, "wsgate %s (git %s)", WSGATE_VERSION, WSGATE_GIT_REV);
    if (worker_check_listen(&cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "wsgate: %s\n", err);
        return 2;
    }
    admin_fd = worker_admin_listen(&cfg, err, sizeof(err));
    if (admin_fd == -2) {
        fprintf(stderr, "wsgate: %s\n", err);
        return 2;
    }
    return master_run(&cfg, admin_fd);
}
