#include "gateway/master.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/time.h>
#include <sys/wait.h>

#include "common/log.h"
#include "worker/shm.h"
#include "worker/worker.h"

#define BACKOFF_MIN_MS  100
#define BACKOFF_MAX_MS  10000
#define STABLE_AFTER_MS 10000 /* a worker that lived this long resets its backoff */
#define STOP_GRACE_MS   5000  /* beyond the workers' own deadline */

struct slot {
    pid_t pid;            /* 0 when not running */
    long long started;    /* ms */
    long long respawn_at; /* ms; 0 = not waiting */
    unsigned backoff_ms;
    unsigned restarts;
    bool fatal; /* exited 2 or drained: not restarted */
    bool drained;
};

static volatile sig_atomic_t got_chld;
static volatile sig_atomic_t got_term;
static volatile sig_atomic_t got_alrm;
static volatile sig_atomic_t got_int;

static void on_signal(int sig)
{
    int saved = errno;

    if (sig == SIGCHLD)
        got_chld = 1;
    else if (sig == SIGALRM)
        got_alrm = 1;
    else if (sig == SIGINT)
        got_int = 1;
    else
        got_term = 1;
    errno = saved;
}

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void arm_alarm(long long ms)
{
    struct itimerval it;

    memset(&it, 0, sizeof(it));
    if (ms > 0) {
        it.it_value.tv_sec = (time_t)(ms / 1000);
        it.it_value.tv_usec = (suseconds_t)((ms % 1000) * 1000);
        if (ms < 1)
            it.it_value.tv_usec = 1000;
    }
    setitimer(ITIMER_REAL, &it, NULL);
}

static int spawn(const struct config *cfg, struct shm *shm, int admin_fd, struct slot *s, int num)
{
    pid_t pid = fork();

    if (pid < 0) {
        int err = errno;
        log_msg(LOG_ERROR, NULL, "fork worker w=%d: %s", num, strerror(err));
        return -1;
    }
    if (pid == 0)
        _exit(worker_main(cfg, shm, admin_fd, num));
    s->pid = pid;
    shm->w[num - 1].pid = pid;
    s->started = now_ms();
    s->respawn_at = 0;
    return 0;
}

int master_run(const struct config *cfg, int admin_fd)
{
    struct shm *shm = shm_create(cfg->workers);
    struct slot *slots = calloc((size_t)cfg->workers, sizeof(*slots));
    struct sigaction sa;
    sigset_t block, empty;
    long long deadline = 0;
    int running = 0, status = 0;
    bool stopping = false;

    if (slots == NULL || shm == NULL) {
        log_msg(LOG_ERROR, NULL, "out of memory");
        return 1;
    }
    log_set_tag("master");
    sigemptyset(&block);
    sigaddset(&block, SIGCHLD);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGALRM);
    sigprocmask(SIG_BLOCK, &block, NULL);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&empty);

    log_msg(LOG_NOTICE, NULL, "starting id=%s workers=%d listen=%s:%u pid=%d", cfg->id,
            cfg->workers, cfg->listen_host[0] ? cfg->listen_host : "0.0.0.0", cfg->listen_port,
            (int)getpid());
    for (int i = 0; i < cfg->workers; i++) {
        slots[i].backoff_ms = BACKOFF_MIN_MS;
        if (spawn(cfg, shm, admin_fd, &slots[i], i + 1) == 0)
            running++;
    }

    for (;;) {
        long long now, next = 0;

        /* Signals first: a worker that a group-wide SIGTERM already stopped must not
         * be taken for a dead one and restarted. */
        if ((got_term || got_int) && !stopping) {
            /* SIGINT drains without the spread, as a second SIGTERM would. */
            int fwd = got_int ? SIGINT : SIGTERM;
            stopping = true;
            got_term = got_int = 0;
            shm->draining = 1;
            deadline = now_ms() + cfg->drain_delay_ms + cfg->drain_timeout_ms + STOP_GRACE_MS;
            log_msg(LOG_NOTICE, NULL, "draining: every connection gets 1001 over %ums",
                    cfg->drain_spread_ms);
            for (int i = 0; i < cfg->workers; i++)
                if (slots[i].pid > 0)
                    kill(slots[i].pid, fwd);
        } else if ((got_term || got_int) && stopping) {
            got_term = got_int = 0;
            for (int i = 0; i < cfg->workers; i++)
                if (slots[i].pid > 0)
                    kill(slots[i].pid, SIGINT);
        }
        if (got_chld) {
            pid_t pid;
            int st;

            got_chld = 0;
            while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
                for (int i = 0; i < cfg->workers; i++) {
                    struct slot *s = &slots[i];
                    if (s->pid != pid)
                        continue;
                    s->pid = 0;
                    running--;
                    shm->w[i].pid = 0;
                    shm->w[i].listening = false;
                    shm->w[i].subscribed = false;
                    shm->w[i].conns = 0;
                    if (WIFSIGNALED(st))
                        log_msg(stopping ? LOG_NOTICE : LOG_WARN, NULL,
                                "worker exited w=%d pid=%d signal=%d", i + 1, (int)pid,
                                WTERMSIG(st));
                    else
                        log_msg((stopping && WEXITSTATUS(st) == 0) ||
                                        WEXITSTATUS(st) == WORKER_EXIT_DRAINED
                                    ? LOG_NOTICE
                                    : LOG_WARN,
                                NULL, "worker exited w=%d pid=%d status=%d", i + 1, (int)pid,
                                WEXITSTATUS(st));
                    if (stopping)
                        break;
                    if (WIFEXITED(st) && WEXITSTATUS(st) == WORKER_EXIT_DRAINED) {
                        s->fatal = true; /* drained on an order: its job is done */
                        s->drained = true;
                        log_msg(LOG_NOTICE, NULL, "worker w=%d drained", i + 1);
                        break;
                    }
                    if (WIFEXITED(st) && WEXITSTATUS(st) == 2) {
                        s->fatal = true;
                        log_msg(LOG_ERROR, NULL, "worker w=%d failed to start; not restarting",
                                i + 1);
                        break;
                    }
                    now = now_ms();
                    if (now - s->started >= STABLE_AFTER_MS)
                        s->backoff_ms = BACKOFF_MIN_MS;
                    s->respawn_at = now + s->backoff_ms;
                    log_msg(LOG_NOTICE, NULL, "restarting worker w=%d in %ums", i + 1,
                            s->backoff_ms);
                    s->backoff_ms =
                        s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->backoff_ms * 2;
                    break;
                }
            }
        }
        got_alrm = 0;
        now = now_ms();
        if (stopping) {
            if (running == 0)
                break;
            if (now >= deadline) {
                log_msg(LOG_WARN, NULL, "stop deadline passed; killing %d workers", running);
                for (int i = 0; i < cfg->workers; i++)
                    if (slots[i].pid > 0)
                        kill(slots[i].pid, SIGKILL);
                deadline = now + 1000000;
            }
            next = deadline - now;
        } else {
            int alive = 0;
            for (int i = 0; i < cfg->workers; i++) {
                struct slot *s = &slots[i];
                if (s->pid == 0 && s->respawn_at != 0 && now >= s->respawn_at) {
                    if (spawn(cfg, shm, admin_fd, s, i + 1) == 0) {
                        s->restarts++;
                        shm->w[i].restarts++;
                        running++;
                    } else {
                        s->respawn_at = now + s->backoff_ms;
                    }
                }
                if (s->pid == 0 && s->respawn_at != 0 && (next == 0 || s->respawn_at - now < next))
                    next = s->respawn_at - now;
                if (!s->fatal)
                    alive++;
            }
            if (alive == 0) {
                bool all_drained = true;
                for (int i = 0; i < cfg->workers; i++)
                    all_drained = all_drained && slots[i].drained;
                if (all_drained && running == 0) {
                    log_msg(LOG_NOTICE, NULL, "every worker drained");
                    break;
                }
                if (!all_drained) {
                    log_msg(LOG_ERROR, NULL, "no worker could start; exiting");
                    status = 1;
                    for (int i = 0; i < cfg->workers; i++)
                        if (slots[i].pid > 0)
                            kill(slots[i].pid, SIGTERM);
                    break;
                }
            }
        }
        arm_alarm(next);
        if (!got_chld && !got_term && !got_int)
            sigsuspend(&empty);
    }
    arm_alarm(0);
    log_msg(LOG_NOTICE, NULL, "exiting status=%d", status);
    free(slots);
    return status;
}
