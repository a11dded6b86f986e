#include "worker/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/tls.h"
#include "common/ws_close.h"
#include "common/ws_hs.h"
#include "worker/auth.h"
#include "worker/conn.h"
#include "worker/inbound.h"
#include "worker/hooks.h"
#include "worker/io.h"
#include "worker/ostream.h"
#include "worker/redis.h"
#include "worker/tombs.h"
#include "common/iplimit.h"
#include "common/order.h"

#define RBUF_SIZE    (64 * 1024)
#define TICK_MS      50
#define ACCEPT_BATCH 64 /* accepts per readiness event */
#define FD_RESERVE                                                  \
    24 /* files kept free for Redis, logs and the 503 answers, plus \
          --max-admin-conns for admin requests */
#define ACCEPT_RETRY_MS 100

uint32_t worker_now(struct worker *w)
{
    struct timeval tv;

    event_base_gettimeofday_cached(w->base, &tv);
    w->now_ms = (uint32_t)((uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000);
    return w->now_ms;
}

void worker_tlist_remove(struct worker *w, struct conn *c)
{
    struct tlist_head *l;

    if (c->tlist == TL_NONE)
        return;
    l = &w->tl[c->tlist];
    if (c->tprev != NULL)
        c->tprev->tnext = c->tnext;
    else
        l->head = c->tnext;
    if (c->tnext != NULL)
        c->tnext->tprev = c->tprev;
    else
        l->tail = c->tprev;
    c->tprev = c->tnext = NULL;
    c->tlist = TL_NONE;
    l->n--;
}

void worker_tlist_move(struct worker *w, struct conn *c, enum tlist which)
{
    struct tlist_head *l = &w->tl[which];

    if (c->tlist == which && l->tail == c) {
        c->stamp = w->now_ms; /* already last: only the stamp changes */
        return;
    }
    worker_tlist_remove(w, c);
    c->tlist = (uint8_t)which;
    c->stamp = w->now_ms;
    c->tprev = l->tail;
    c->tnext = NULL;
    if (l->tail != NULL)
        l->tail->tnext = c;
    else
        l->head = c;
    l->tail = c;
    l->n++;
}

/* Client connections: admin ones never count against the capacity. */
static size_t clients(const struct worker *w)
{
    return w->nconns - w->nadmin;
}

void worker_schedule_reap(struct worker *w)
{
    event_active(w->reaper, EV_TIMEOUT, 0);
}

static void worker_on_reap(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct conn *c = w->dead;

    (void)fd;
    (void)what;
    w->dead = NULL;
    while (c != NULL) {
        struct conn *next = c->tnext;
        conn_free(c);
        c = next;
    }
}

static void worker_on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    uint32_t now;

    (void)fd;
    (void)what;
    now = worker_now(w);
    w->slot->last_tick_ms = mono_ms(); /* the watchdog's heartbeat (master.c, admin.c) */
    w->slot->conns = w->reg.ids_count;
    w->slot->groups = w->reg.groups_count;
    w->slot->at_capacity = clients(w) >= w->max_conns;
    w->slot->subscribed = wredis_is_subscribed(w) && ostream_is_up(w);
    w->slot->out_bytes = w->out_bytes;
    w->slot->pending_bytes = w->pending_bytes;
    apply_tick(w);
    auth_tick(w);
    inbound_tick(w);
    tombs_tick(w);
    for (int i = TL_HANDSHAKE; i < TL_COUNT; i++) {
        struct tlist_head *l = &w->tl[i];
        if (l->timeout_ms == 0)
            continue;
        /* Heads are the oldest: stop at the first that has time left. */
        while (l->head != NULL && (int32_t)(now - l->head->stamp) >= (int32_t)l->timeout_ms)
            conn_on_timeout(l->head);
    }
}

/* Listener ------------------------------------------------------------------------- */

static int listen_socket(const char *host, uint16_t port, bool reuseport)
{
    struct sockaddr_storage ss;
    socklen_t slen;
    int fd, one = 1, err;

    memset(&ss, 0, sizeof(ss));
    if (strchr(host, ':') != NULL) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        inet_pton(AF_INET6, host, &s6->sin6_addr);
        slen = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        if (host[0] != '\0')
            inet_pton(AF_INET, host, &s4->sin_addr);
        slen = sizeof(*s4);
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
        bind(fd, (struct sockaddr *)&ss, slen) < 0 || listen(fd, 4096) < 0) {
        err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

int worker_admin_listen(const struct config *cfg, char *err, size_t errlen)
{
    int fd;

    if (cfg->admin_port == 0)
        return -1;
    /* One socket for the whole gateway, without SO_REUSEPORT: a second gateway on the
     * same admin address is an error, not a silent sharing of /readyz. */
    fd = listen_socket(cfg->admin_host, cfg->admin_port, false);
    if (fd < 0) {
        snprintf(err, errlen, "cannot listen on --admin %s:%u: %s", cfg->admin_host,
                 cfg->admin_port, strerror(-fd));
        return -2;
    }
    return fd;
}

int worker_check_listen(const struct config *cfg, char *err, size_t errlen)
{
    int fd = listen_socket(cfg->listen_host, cfg->listen_port, true);

    if (fd < 0) {
        snprintf(err, errlen, "cannot listen on %s:%u: %s",
                 cfg->listen_host[0] ? cfg->listen_host : "0.0.0.0", cfg->listen_port,
                 strerror(-fd));
        return -1;
    }
    close(fd);
    return 0;
}

/* At the file limit a client still gets an answer, not a hang or an RST; a TLS client
 * gets its connection closed (an answer in clear would not reach it either). */
static void refuse_full(struct worker *w, int fd, bool admin)
{
    char resp[256];
    size_t n = ws_hs_response_error(503, admin ? "too many admin requests" : "gateway at capacity",
                                    resp, sizeof(resp));

    if (admin || w->tls == NULL) {
        ssize_t r = write(fd, resp, n);
        (void)r;
    }
    if (admin) {
        w->slot->st.admin_refused++;
        log_limited(LOG_WARN, NULL, "refused an admin request: %zu in progress", w->nadmin);
    } else {
        w->slot->st.refused_full++;
        log_limited(LOG_WARN, NULL, "refused a client: at capacity conns=%zu", clients(w));
    }
    shutdown(fd, SHUT_WR);
    close(fd);
}

int worker_admit_address(struct worker *w, const struct sockaddr *sa, uint32_t *ticket,
                         uint32_t *retry_after_s, const char **why)
{
    enum iplimit_verdict v = iplimit_acquire(w->shm->ipl, (uint32_t)(w->num - 1), sa,
                                             (uint64_t)mono_ms(), ticket, retry_after_s);

    if (v == IPLIMIT_OK)
        return 0;
    if (v == IPLIMIT_UNTRACKED) {
        w->slot->st.ip_untracked++;
        log_limited(LOG_WARN, NULL, "per-address table full: a client admitted without limits");
        return 0;
    }
    if (v == IPLIMIT_TOO_MANY_CONNS) {
        w->slot->st.ip_refused_conns++;
        *why = "too many connections from this address";
    } else {
        w->slot->st.ip_refused_rate++;
        *why = "too many handshakes from this address";
    }
    log_limited(LOG_INFO, NULL, "refused a client: %s", *why);
    return -1;
}

/* At accept: 429 with Retry-After, written at once like the 503 at capacity. Returns
 * the ticket to keep (0: none), or -1 when the client was refused. */
static long admit_address(struct worker *w, int fd, const struct sockaddr *sa)
{
    uint32_t ticket = 0, retry = 0;
    const char *why = NULL;
    char resp[300];
    size_t n;
    ssize_t r;

    if (worker_admit_address(w, sa, &ticket, &retry, &why) == 0)
        return ticket;
    n = ws_hs_response_retry(429, retry, why, resp, sizeof(resp));
    r = write(fd, resp, n);
    (void)r;
    shutdown(fd, SHUT_WR);
    close(fd);
    return -1;
}

/* Accepts what is pending on lfd. Admin connections are marked so, and never count
 * as clients. Returns when the queue is empty, after a batch, or on an error. */
static void accept_batch(struct worker *w, int lfd, bool admin, int max)
{
    for (int i = 0; i < max; i++) {
        struct sockaddr_storage ss;
        socklen_t slen = sizeof(ss);
        int fd = accept4(lfd, (struct sockaddr *)&ss, &slen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        struct conn *c;
        long ticket = 0;
        bool proxied;
        int one = 1;

        if (fd < 0) {
            int err = errno;
            if (err == EINTR || err == ECONNABORTED)
                continue;
            if (err == EAGAIN || err == EWOULDBLOCK)
                return;
            w->slot->st.accept_errors++;
            if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
                /* Back off instead of spinning on a readable listener we cannot serve;
                 * open connections keep being served meanwhile. */
                struct timeval tv = {0, ACCEPT_RETRY_MS * 1000};
                log_limited(LOG_WARN, NULL, "accept: %s; pausing accepts", strerror(err));
                if (w->listen_ev != NULL)
                    event_del(w->listen_ev);
                if (w->admin_ev != NULL)
                    event_del(w->admin_ev);
                event_add(w->accept_retry, &tv);
                return;
            }
            log_limited(LOG_WARN, NULL, "accept: %s", strerror(err));
            return;
        }
        if (!admin)
            w->slot->st.accepted++;
        /* Clients and admin requests have separate budgets: a gateway full of clients
         * still answers its probes and /metrics from the reserve. */
        if (admin ? w->nadmin >= (size_t)w->cfg->max_admin_conns : clients(w) >= w->max_conns) {
            if (!admin)
                w->slot->at_capacity = true;
            refuse_full(w, fd, admin);
            continue;
        }
        /* Behind --proxy-protocol the address is known once the header is read (conn.c). */
        if (!admin && w->shm->ipl != NULL && !w->cfg->proxy_protocol &&
            (ticket = admit_address(w, fd, (struct sockaddr *)&ss)) < 0)
            continue;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        proxied = !admin && w->cfg->proxy_protocol;
        c = conn_new(w, fd, (struct sockaddr *)&ss, admin || proxied ? NULL : w->tls);
        if (c == NULL || (ticket > 0 && conn_keep_ticket(c, (uint32_t)ticket) < 0)) {
            if (c == NULL)
                iplimit_release(w->shm->ipl, (uint32_t)(w->num - 1), (uint32_t)ticket);
            log_limited(LOG_WARN, NULL, "out of memory for a connection");
            continue;
        }
        if (admin) {
            c->flags |= CONN_F_ADMIN;
            w->nadmin++;
        }
        if (proxied)
            conn_expect_proxy(c);
    }
}

static void worker_on_accept(evutil_socket_t lfd, short what, void *arg)
{
    struct worker *w = arg;

    (void)what;
    worker_now(w);
    accept_batch(w, lfd, false, ACCEPT_BATCH);
}

static void worker_on_admin_accept(evutil_socket_t lfd, short what, void *arg)
{
    struct worker *w = arg;

    (void)what;
    worker_now(w);
    accept_batch(w, lfd, true, 8);
}

static void worker_on_accept_retry(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;

    (void)fd;
    (void)what;
    if (w->listen_fd >= 0)
        event_add(w->listen_ev, NULL);
    if (w->admin_ev != NULL)
        event_add(w->admin_ev, NULL);
}

/* Closes the client listener. What the kernel already queued for it is accepted
 * first: those handshakes complete and are drained, instead of being reset. */
static void worker_close_listener(struct worker *w)
{
    if (w->listen_fd < 0)
        return;
    accept_batch(w, w->listen_fd, false, 1 << 20);
    event_del(w->listen_ev);
    close(w->listen_fd);
    w->listen_fd = -1;
    w->slot->listening = false;
}

/* Draining ------------------------------------------------------------------------- */

void worker_conn_gone(struct worker *w)
{
    if (w->draining && w->listen_fd < 0 && clients(w) == 0)
        event_active(w->drain_check, EV_TIMEOUT, 0);
}

/* Deferred, so it never runs inside a close or a job's own loop: with no client
 * left, the drain's remaining closes all refer to gone connections; let the job
 * finish (and acknowledge) at once, then exit. */
static void worker_on_drain_check(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;

    (void)fd;
    (void)what;
    if (!w->draining || w->listen_fd >= 0 || clients(w) > 0)
        return;
    if (w->drain_job != NULL) {
        apply_job_hurry(w->drain_job);
        return;
    }
    event_base_loopexit(w->base, NULL);
}

static void worker_on_exit_timer(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;

    (void)fd;
    (void)what;
    log_msg(LOG_NOTICE, NULL, "drain timeout: cutting %zu connections", clients(w));
    event_base_loopexit(w->base, NULL);
}

/* After --drain-delay: the listener closes and every open connection gets 1001 at
 * its own moment across the spread. Connections that finish their handshake later
 * are closed as soon as they open (hooks.c). */
static void worker_on_drain_delay(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct order o;

    (void)fd;
    (void)what;
    worker_now(w);
    worker_close_listener(w);
    order_init(&o);
    o.target = ORDER_TARGET_ALL;
    o.code = WS_CLOSE_GOING_AWAY;
    memcpy(o.reason, w->drain_reason, sizeof(o.reason));
    o.reason_len = strlen(o.reason);
    o.spread_ms = w->hurry ? 0 : w->drain_spread_ms;
    o.id = w->drain_id;
    o.reply_to = w->drain_reply_to;
    log_msg(LOG_NOTICE, NULL, "drain: listener closed; closing %zu connections over %ums",
            clients(w), o.spread_ms);
    apply_close_order(w, &o, "drain", &w->drain_job);
    if (clients(w) == 0)
        event_base_loopexit(w->base, NULL);
}

void worker_drain(struct worker *w, bool ordered, const char *reason, uint32_t spread_ms,
                  const char *id, const char *reply_to)
{
    struct timeval tv;
    uint32_t delay = w->cfg->drain_delay_ms, limit = w->cfg->drain_timeout_ms;

    if (w->draining) {
        if (reply_to != NULL) {
            char *nack = order_nack_json(id, w->cfg->id, w->num, "already draining");
            if (nack != NULL)
                wredis_publish(w, reply_to, nack, strlen(nack));
            free(nack);
        }
        return;
    }
    w->draining = true;
    w->slot->draining = true;
    w->shm->draining = 1; /* readiness fails at once, for every worker */
    if (ordered) {
        /* The whole gateway ends, as on SIGTERM: tell the master now (it drains the
         * workers the order did not reach) and say so again in the exit status. */
        w->shm->drain_ordered = 1;
        w->exit_status = WORKER_EXIT_DRAINED;
        kill(getppid(), SIGUSR1);
    }
    snprintf(w->drain_reason, sizeof(w->drain_reason), "%s",
             reason != NULL ? reason : w->cfg->drain_reason);
    w->drain_spread_ms = spread_ms;
    w->drain_id = id != NULL ? strdup(id) : NULL;
    w->drain_reply_to = reply_to != NULL ? strdup(reply_to) : NULL;
    log_msg(LOG_NOTICE, NULL, "draining conns=%zu delay_ms=%u spread_ms=%u timeout_ms=%u",
            clients(w), delay, spread_ms, limit);
    /* The spread has to fit in the deadline, with room for the last close replies. */
    if (limit < delay + spread_ms)
        log_msg(LOG_WARN, NULL, "drain spread ends after the drain timeout: the rest is cut");
    tv.tv_sec = limit / 1000;
    tv.tv_usec = (limit % 1000) * 1000;
    event_add(w->exit_timer, &tv);
    tv.tv_sec = delay / 1000;
    tv.tv_usec = (delay % 1000) * 1000;
    event_add(w->drain_timer, &tv);
}

/* A second SIGTERM, or SIGINT, during a drain: skip the rest of the spread. */
static void worker_hurry(struct worker *w)
{
    w->hurry = true;
    if (event_pending(w->drain_timer, EV_TIMEOUT, NULL)) {
        struct timeval now = {0, 0};
        event_add(w->drain_timer, &now);
    }
    if (w->drain_job != NULL)
        apply_job_hurry(w->drain_job);
}

static void worker_on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct worker *w = arg;

    (void)what;
    log_msg(LOG_NOTICE, NULL, "got %s%s", sig == SIGTERM ? "SIGTERM" : "SIGINT",
            w->draining ? " while draining: closing the rest now" : "");
    if (w->draining) {
        worker_hurry(w);
        return;
    }
    worker_drain(w, false, NULL, w->cfg->drain_spread_ms, NULL, NULL);
    if (sig == SIGINT)
        worker_hurry(w);
}

/* TLS ------------------------------------------------------------------------------ */

/* Makes the context new TLS connections get, from the files as they are now. */
static int worker_load_tls(struct worker *w, const char *what)
{
    const struct config *cfg = w->cfg;
    char err[512], desc[512];
    SSL_CTX *ctx = tls_ctx_new(cfg->tls_cert, cfg->tls_key, cfg->tls_min_version,
                               cfg->tls_ticket_key, err, sizeof(err));

    if (ctx == NULL) {
        log_msg(LOG_ERROR, NULL, "tls %s failed%s: %s", what,
                w->tls != NULL ? " (the certificate loaded before stays)" : "", err);
        return -1;
    }
    /* Connections keep the context they were made with: SSL_new() took a reference. */
    SSL_CTX_free(w->tls);
    w->tls = ctx;
    log_msg(tls_ctx_expired(ctx) ? LOG_WARN : LOG_NOTICE, NULL, "tls %s cert=%s %s%s", what,
            cfg->tls_cert, tls_ctx_describe(ctx, desc, sizeof(desc)),
            tls_ctx_expired(ctx) ? " (expired)" : "");
    return 0;
}

/* SIGHUP: the certificate and key are read again. New connections get them; open
 * ones keep theirs; if the files do not load, everything stays as it was. */
static void worker_on_hup(evutil_socket_t sig, short what, void *arg)
{
    struct worker *w = arg;

    (void)sig;
    (void)what;
    if (w->tls == NULL) {
        log_msg(LOG_NOTICE, NULL, "got SIGHUP: no TLS, nothing to reload");
        return;
    }
    if (worker_load_tls(w, "reload") < 0) {
        w->slot->st.tls_reloads_failed++;
        return;
    }
    w->slot->st.tls_reloads_ok++;
}

/* Setup ---------------------------------------------------------------------------- */

static size_t raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t want = rl.rlim_max;
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY ? 1u << 20 : (size_t)rl.rlim_cur;
}

int worker_main(const struct config *cfg, struct shm *shm, int admin_fd, int num)
{
    struct worker w;
    struct timeval tick = {0, TICK_MS * 1000};
    uint32_t nonce;
    char tag[16];
    size_t nofile, reserve;
    int status = 1;
    sigset_t none, stops;

    /* The master's handlers are reset before anything is unblocked, and SIGTERM,
     * SIGINT and SIGHUP stay blocked until the loop's own handlers are in place: a signal sent
     * while the worker sets up waits for them, instead of running the master's
     * handler in this process (lost) or killing the worker mid-setup. */
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    signal(SIGALRM, SIG_DFL);
    signal(SIGUSR1, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    sigemptyset(&none);
    sigemptyset(&stops);
    sigaddset(&stops, SIGTERM);
    sigaddset(&stops, SIGINT);
    sigaddset(&stops, SIGHUP);
    sigprocmask(SIG_SETMASK, &stops, NULL);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    snprintf(tag, sizeof(tag), "w%d", num);
    log_set_tag(tag);

    memset(&w, 0, sizeof(w));
    w.cfg = cfg;
    w.num = num;
    w.listen_fd = -1;
    w.shm = shm;
    w.slot = &shm->w[num - 1];
    w.slot->pid = getpid();
    w.slot->listening = false;
    w.slot->subscribed = false;
    w.slot->draining = false;
    w.slot->at_capacity = false;
    w.slot->last_tick_ms = mono_ms();
    w.slot->conns = 0;
    w.slot->deflate.zip_bytes = 0; /* a gauge of this process's compressors */
    if (getrandom(&nonce, sizeof(nonce), 0) != sizeof(nonce))
        nonce = (uint32_t)getpid() ^ (uint32_t)time(NULL);
    /* Unique across the fleet (gateway id), the host's workers and restarts (nonce). */
    snprintf(w.id_prefix, sizeof(w.id_prefix), "%s-%d-%08x-", cfg->id, num, nonce);
    w.id_prefix_len = strlen(w.id_prefix);
    nofile = raise_nofile();
    reserve = FD_RESERVE + (size_t)cfg->max_admin_conns;
    w.max_conns = nofile > reserve * 2 ? nofile - reserve : nofile / 2;
    w.rbuf_cap = RBUF_SIZE;
    w.rbuf = malloc(w.rbuf_cap);
    ws_hs_init(&w.hs, cfg->max_header);
    w.tl[TL_HANDSHAKE].timeout_ms = cfg->handshake_timeout_ms;
    w.tl[TL_ACTIVE].timeout_ms = cfg->ping_interval_ms;
    w.tl[TL_PINGED].timeout_ms = cfg->ping_interval_ms;
    w.tl[TL_CLOSING].timeout_ms = cfg->close_timeout_ms;

    w.base = event_base_new();
    if (w.base == NULL || w.rbuf == NULL || registry_init(&w.reg) < 0 ||
        event_base_priority_init(w.base, WORKER_PRIOS) < 0) {
        log_msg(LOG_ERROR, NULL, "cannot create the event loop");
        goto out;
    }
    if (config_tls_enabled(cfg)) {
        w.tls_wbuf = malloc(IO_TLS_RECORD);
        if (w.tls_wbuf == NULL || worker_load_tls(&w, "loaded") < 0) {
            status = 2; /* the files were good a moment ago in the master: not a flake */
            goto out;
        }
    }
    w.listen_fd = listen_socket(cfg->listen_host, cfg->listen_port, true);
    if (w.listen_fd < 0) {
        log_msg(LOG_ERROR, NULL, "listen %s:%u: %s", cfg->listen_host, cfg->listen_port,
                strerror(-w.listen_fd));
        w.listen_fd = -1;
        status = 2;
        goto out;
    }
    w.listen_ev = event_new(w.base, w.listen_fd, EV_READ | EV_PERSIST, worker_on_accept, &w);
    w.accept_retry = evtimer_new(w.base, worker_on_accept_retry, &w);
    w.tick = event_new(w.base, -1, EV_PERSIST, worker_on_tick, &w);
    if (w.tick != NULL) /* the heartbeat must not wait behind a long run of I/O */
        event_priority_set(w.tick, WORKER_PRIO_JOBS);
    w.reaper = event_new(w.base, -1, 0, worker_on_reap, &w);
    w.sig_term = evsignal_new(w.base, SIGTERM, worker_on_signal, &w);
    w.sig_int = evsignal_new(w.base, SIGINT, worker_on_signal, &w);
    w.sig_hup = evsignal_new(w.base, SIGHUP, worker_on_hup, &w);
    w.exit_timer = evtimer_new(w.base, worker_on_exit_timer, &w);
    w.drain_timer = evtimer_new(w.base, worker_on_drain_delay, &w);
    w.drain_check = event_new(w.base, -1, 0, worker_on_drain_check, &w);
    if (admin_fd >= 0) {
        w.admin_ev = event_new(w.base, admin_fd, EV_READ | EV_PERSIST, worker_on_admin_accept, &w);
        if (w.admin_ev == NULL || event_add(w.admin_ev, NULL) < 0) {
            log_msg(LOG_ERROR, NULL, "cannot watch the admin listener");
            goto out;
        }
    }
    if (w.listen_ev == NULL || w.accept_retry == NULL || w.tick == NULL || w.reaper == NULL ||
        w.sig_term == NULL || w.sig_int == NULL || w.sig_hup == NULL || w.exit_timer == NULL ||
        w.drain_timer == NULL || w.drain_check == NULL || event_add(w.listen_ev, NULL) < 0 ||
        event_add(w.tick, &tick) < 0 || event_add(w.sig_term, NULL) < 0 ||
        event_add(w.sig_int, NULL) < 0 || event_add(w.sig_hup, NULL) < 0) {
        log_msg(LOG_ERROR, NULL, "cannot set up worker events");
        goto out;
    }
    sigprocmask(SIG_SETMASK, &none, NULL); /* a SIGTERM that waited is taken now */
    if (auth_init(&w) < 0 || inbound_start(&w) < 0 || wredis_start(&w) < 0 ||
        tombs_start(&w) < 0 || ostream_start(&w) < 0) {
        status = 2;
        goto out;
    }
    {
        /* The first accept key faults in libcrypto's SHA-1 and base64 code (with the
         * kernel's fault-around, a few hundred KB of shared library text this process
         * maps): a cost of the worker's start, not of its first clients. */
        char accept[WS_HS_ACCEPT_LEN + 1];
        ws_hs_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, accept);
    }
    worker_now(&w);
    w.slot->listening = true;
    log_msg(LOG_NOTICE, NULL, "worker ready listen=%s:%u pid=%d capacity=%zu%s%s%s",
            cfg->listen_host[0] ? cfg->listen_host : "0.0.0.0", cfg->listen_port, (int)getpid(),
            w.max_conns, cfg->inbound != CONFIG_INBOUND_DROP ? " inbound=" : "",
            cfg->inbound != CONFIG_INBOUND_DROP ? config_inbound_name(cfg->inbound) : "",
            w.tls != NULL ? " tls=on" : "");
    if (event_base_dispatch(w.base) < 0) {
        log_msg(LOG_ERROR, NULL, "event loop failed");
        goto out;
    }
    status = w.exit_status;
    ostream_stop(&w);
    tombs_stop(&w);
    wredis_stop(&w);
    for (int i = 0; i < 3; i++) /* let the last events and the announce DEL go out */
        event_base_loop(w.base, EVLOOP_NONBLOCK);
    w.slot->listening = false;
    w.slot->subscribed = false;
    w.slot->conns = 0;
    log_msg(LOG_NOTICE, NULL, "worker exiting conns=%zu", w.nconns);
out:
    /* The process exits next: the kernel closes what is left. */
    return status;
}
