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
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/wait.h>

#include "common/iplimit.h"
#include "common/log.h"
#include "worker/shm.h"
#include "worker/worker.h"

#define BACKOFF_MIN_MS  100
#define BACKOFF_MAX_MS  10000
#define STABLE_AFTER_MS 10000 /* a worker that lived this long resets its backoff */
#define STOP_GRACE_MS   5000  /* beyond the workers' own deadline */
#define ORDER_SWEEP_MS  1000  /* after a drain order, workers it missed get SIGTERM */
#define WATCH_MS        250   /* how often the master looks at the workers' ticks */
#define IPLIMIT_SLOTS   16384 /* addresses the per-address limits track at once */

struct slot {
    pid_t pid;            /* 0 when not running */
    long long started;    /* ms */
    long long respawn_at; /* ms; 0 = not waiting */
    unsigned backoff_ms;
    unsigned restarts;
    bool fatal;  /* exited 2: not restarted */
    bool killed; /* SIGKILLed by the watchdog, not reaped yet */
};

static volatile sig_atomic_t got_chld;
static volatile sig_atomic_t got_term;
static volatile sig_atomic_t got_alrm;
static volatile sig_atomic_t got_int;
static volatile sig_atomic_t got_usr1; /* a worker took a drain order */
static volatile sig_atomic_t got_hup;  /* reload the TLS certificate */

static void on_signal(int sig)
{
    int saved = errno;

    if (sig == SIGCHLD)
        got_chld = 1;
    else if (sig == SIGALRM)
        got_alrm = 1;
    else if (sig == SIGINT)
        got_int = 1;
    else if (sig == SIGUSR1)
        got_usr1 = 1;
    else if (sig == SIGHUP)
        got_hup = 1;
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
    pid_t pid;

    /* The watchdog counts from now, not from a tick of the previous worker. */
    shm->w[num - 1].last_tick_ms = now_ms();
    pid = fork();
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

struct master {
    const struct config *cfg;
    struct shm *shm;
    struct slot *slots;
    int running;
    bool stopping;
    long long deadline;   /* stopping: the rest is killed then */
    long long sweep_at;   /* after a drain order: SIGTERM to workers it missed; 0 = none */
    long long next_watch; /* next look at the workers' ticks */
};

/* The gateway ends: no worker is restarted any more, and the master exits once the
 * last one is gone or at the deadline. */
static void stop(struct master *m, const char *why)
{
    const struct config *cfg = m->cfg;

    m->stopping = true;
    m->shm->draining = 1;
    m->deadline = now_ms() + cfg->drain_delay_ms + cfg->drain_timeout_ms + STOP_GRACE_MS;
    log_msg(LOG_NOTICE, NULL, "draining (%s): every connection gets 1001 over %ums", why,
            cfg->drain_spread_ms);
}

/* Sends sig to the running workers (only_idle: those not draining yet); returns how
 * many got it. */
static int signal_workers(struct master *m, int sig, bool only_idle)
{
    int n = 0;

    for (int i = 0; i < m->cfg->workers; i++)
        if (m->slots[i].pid > 0 && !(only_idle && m->shm->w[i].draining)) {
            kill(m->slots[i].pid, sig);
            n++;
        }
    return n;
}

/* A worker whose loop has not ticked for --stall-kill is killed; the usual restart
 * follows. A stopped (SIGSTOP) worker is killed the same way. */
static void watch_ticks(struct master *m, long long now)
{
    const struct config *cfg = m->cfg;

    if (cfg->stall_kill_ms == 0)
        return;
    for (int i = 0; i < cfg->workers; i++) {
        struct shm_worker *sw = &m->shm->w[i];
        long long idle = now - sw->last_tick_ms;
        if (m->slots[i].pid <= 0 || m->slots[i].killed || idle < (long long)cfg->stall_kill_ms)
            continue;
        log_msg(LOG_ERROR, NULL, "worker w=%d pid=%d stalled: no tick for %lldms; killing it",
                i + 1, (int)m->slots[i].pid, idle);
        kill(m->slots[i].pid, SIGKILL);
        m->slots[i].killed = true;
        sw->stall_kills++;
    }
}

/* Reaps exited workers; schedules restarts unless the gateway is stopping. */
static void reap(struct master *m)
{
    const struct config *cfg = m->cfg;
    pid_t pid;
    int st;

    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        for (int i = 0; i < cfg->workers; i++) {
            struct slot *s = &m->slots[i];
            struct shm_worker *sw = &m->shm->w[i];
            bool drained = WIFEXITED(st) && WEXITSTATUS(st) == WORKER_EXIT_DRAINED;
            long long now;

            if (s->pid != pid)
                continue;
            s->pid = 0;
            s->killed = false;
            m->running--;
            if (m->shm->ipl != NULL) /* its connections are gone: so are their counts */
                iplimit_forget_worker(m->shm->ipl, (uint32_t)i);
            sw->pid = 0;
            sw->listening = false;
            sw->subscribed = false;
            sw->conns = 0;
            if (WIFSIGNALED(st))
                log_msg(m->stopping ? LOG_NOTICE : LOG_WARN, NULL,
                        "worker exited w=%d pid=%d signal=%d", i + 1, (int)pid, WTERMSIG(st));
            else
                log_msg((m->stopping && WEXITSTATUS(st) == 0) || drained ? LOG_NOTICE : LOG_WARN,
                        NULL, "worker exited w=%d pid=%d status=%d", i + 1, (int)pid,
                        WEXITSTATUS(st));
            if (drained && !m->stopping) {
                /* The order's notice (SIGUSR1) may not have been seen yet: the exit
                 * status says the same, so the gateway ends either way. */
                stop(m, "drain order");
                m->sweep_at = now_ms();
            }
            if (m->stopping)
                break;
            if (WIFEXITED(st) && WEXITSTATUS(st) == 2) {
                s->fatal = true;
                log_msg(LOG_ERROR, NULL, "worker w=%d failed to start; not restarting", i + 1);
                break;
            }
            now = now_ms();
            if (now - s->started >= STABLE_AFTER_MS)
                s->backoff_ms = BACKOFF_MIN_MS;
            s->respawn_at = now + s->backoff_ms;
            log_msg(LOG_NOTICE, NULL, "restarting worker w=%d in %ums", i + 1, s->backoff_ms);
            s->backoff_ms = s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->backoff_ms * 2;
            break;
        }
    }
}

/* The per-address limits table, shared by the workers: mapped before they fork. */
static int map_iplimit(const struct config *cfg, struct shm *shm)
{
    struct iplimit_conf c;
    size_t len;
    void *mem;

    if (cfg->max_conns_per_ip == 0 && cfg->max_handshakes_per_ip == 0)
        return 0;
    memset(&c, 0, sizeof(c));
    c.slots = IPLIMIT_SLOTS;
    c.nworkers = (uint32_t)cfg->workers;
    c.max_conns = cfg->max_conns_per_ip;
    c.rate = cfg->max_handshakes_per_ip;
    c.period_ms = cfg->handshakes_period_ms;
    if (getrandom(c.seed, sizeof(c.seed), 0) != (ssize_t)sizeof(c.seed)) {
        log_msg(LOG_ERROR, NULL, "no random seed for the per-address table");
        return -1;
    }
    len = iplimit_size(&c);
    mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED || (shm->ipl = iplimit_init(mem, len, &c)) == NULL) {
        log_msg(LOG_ERROR, NULL, "cannot map the per-address table (%zu bytes)", len);
        return -1;
    }
    log_msg(LOG_NOTICE, NULL, "per-address limits conns=%u handshakes=%u/%ums table=%zu bytes",
            c.max_conns, c.rate, c.period_ms, len);
    return 0;
}

int master_run(const struct config *cfg, int admin_fd)
{
    struct shm *shm = shm_create(cfg->workers);
    struct slot *slots = calloc((size_t)cfg->workers, sizeof(*slots));
    struct master m = {cfg, shm, slots, 0, false, 0, 0, 0};
    struct sigaction sa;
    sigset_t block, empty;
    int status = 0;

    if (slots == NULL || shm == NULL) {
        log_msg(LOG_ERROR, NULL, "out of memory");
        return 1;
    }
    log_set_tag("master");
    if (map_iplimit(cfg, shm) < 0)
        return 1;
    if (cfg->allow_origin.n == 0)
        log_msg(LOG_NOTICE, NULL, "no --allow-origin: browser pages from any site may connect");
    sigemptyset(&block);
    sigaddset(&block, SIGCHLD);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGALRM);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, SIGHUP);
    sigprocmask(SIG_BLOCK, &block, NULL);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&empty);

    log_msg(LOG_NOTICE, NULL, "starting id=%s workers=%d listen=%s:%u pid=%d", cfg->id,
            cfg->workers, cfg->listen_host[0] ? cfg->listen_host : "0.0.0.0", cfg->listen_port,
            (int)getpid());
    if (cfg->order_keys.n > 0) {
        char kids[ORDER_SIG_KEYS_MAX * (ORDER_SIG_KID_MAX + 1)] = "";
        size_t used = 0;

        for (size_t i = 0; i < cfg->order_keys.n; i++)
            used += (size_t)snprintf(kids + used, sizeof(kids) - used, "%s%s", i ? "," : "",
                                     cfg->order_keys.keys[i].kid);
        log_msg(LOG_NOTICE, NULL, "orders must be signed keys=%s max_age_ms=%u replay_max=%u", kids,
                cfg->order_max_age_ms, cfg->order_replay_max);
    }
    for (int i = 0; i < cfg->workers; i++) {
        slots[i].backoff_ms = BACKOFF_MIN_MS;
        if (spawn(cfg, shm, admin_fd, &slots[i], i + 1) == 0)
            m.running++;
    }

    for (;;) {
        long long now, next = 0;

        /* Signals first: a worker that a group-wide SIGTERM already stopped must not
         * be taken for a dead one and restarted. */
        if ((got_term || got_int) && !m.stopping) {
            /* SIGINT drains without the spread, as a second SIGTERM would. */
            int fwd = got_int ? SIGINT : SIGTERM;
            got_term = got_int = 0;
            stop(&m, fwd == SIGINT ? "SIGINT" : "SIGTERM");
            signal_workers(&m, fwd, false);
        } else if (got_term || got_int) {
            got_term = got_int = 0;
            m.sweep_at = 0;
            signal_workers(&m, SIGINT, false);
        }
        if ((got_usr1 || shm->drain_ordered) && !m.stopping) {
            /* A drain order ends the gateway as SIGTERM does. The other workers had
             * the same order; the ones it missed (a subscriber reconnecting) get
             * SIGTERM a moment later, so they drain too. */
            stop(&m, "drain order");
            m.sweep_at = now_ms() + ORDER_SWEEP_MS;
        }
        got_usr1 = 0;
        if (got_hup) {
            /* Each worker reads the certificate and key again (a worker started later
             * reads them anyway); while stopping there is nothing left to reload. */
            int n;
            got_hup = 0;
            if (!m.stopping) {
                n = signal_workers(&m, SIGHUP, false);
                log_msg(LOG_NOTICE, NULL, "SIGHUP: reloading TLS in %d worker(s)", n);
            }
        }
        if (got_chld) {
            got_chld = 0;
            reap(&m);
        }
        got_alrm = 0;
        now = now_ms();
        if (now >= m.next_watch) {
            watch_ticks(&m, now);
            m.next_watch = now + WATCH_MS;
        }
        if (cfg->stall_kill_ms > 0)
            next = m.next_watch - now;
        if (m.stopping) {
            if (m.running == 0)
                break;
            if (m.sweep_at != 0 && now >= m.sweep_at) {
                int n;
                m.sweep_at = 0;
                n = signal_workers(&m, SIGTERM, true);
                if (n > 0)
                    log_msg(LOG_NOTICE, NULL, "drain order: SIGTERM to %d worker(s) not draining",
                            n);
            }
            if (m.sweep_at != 0 && (next == 0 || m.sweep_at - now < next))
                next = m.sweep_at - now;
            if (now >= m.deadline) {
                log_msg(LOG_WARN, NULL, "stop deadline passed; killing %d workers", m.running);
                signal_workers(&m, SIGKILL, false);
                m.deadline = now + 1000000;
            }
            if (next == 0 || m.deadline - now < next)
                next = m.deadline - now;
        } else {
            int alive = 0;
            for (int i = 0; i < cfg->workers; i++) {
                struct slot *s = &slots[i];
                if (s->pid == 0 && s->respawn_at != 0 && now >= s->respawn_at) {
                    if (spawn(cfg, shm, admin_fd, s, i + 1) == 0) {
                        s->restarts++;
                        shm->w[i].restarts++;
                        m.running++;
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
                log_msg(LOG_ERROR, NULL, "no worker could start; exiting");
                status = 1;
                signal_workers(&m, SIGTERM, false);
                break;
            }
        }
        arm_alarm(next > 0 ? next : (next < 0 ? 1 : 0));
        if (!got_chld && !got_term && !got_int && !got_usr1 && !got_hup)
            sigsuspend(&empty);
    }
    arm_alarm(0);
    log_msg(LOG_NOTICE, NULL, "exiting status=%d", status);
    free(slots);
    return status;
}
