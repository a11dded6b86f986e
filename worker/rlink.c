#include "worker/rlink.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/redis_url.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 1000 /* every worker is back within about a second of Redis */
#define CHECK_MS       100
#define RELOG_MS       10000 /* a failure that repeats is logged again after this */

static void link_connect(struct rlink *l);

/* Full jitter over the upper half: workers that lost Redis together do not all come
 * back in the same millisecond, and none waits more than BACKOFF_MAX_MS. */
static void schedule_retry(struct rlink *l)
{
    struct timeval tv;
    uint32_t ms;

    if (l->stopped || (l->ops->wanted != NULL && !l->ops->wanted(l)))
        return;
    l->rng ^= l->rng << 13;
    l->rng ^= l->rng >> 7;
    l->rng ^= l->rng << 17;
    ms = l->backoff_ms / 2 + (uint32_t)(l->rng % (l->backoff_ms / 2 + 1));
    l->backoff_ms = l->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : l->backoff_ms * 2;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    if (event_add(l->retry, &tv) < 0)
        log_msg(LOG_ERROR, NULL, "redis %s: cannot arm the reconnect timer", l->ops->name);
}

/* A lost link is one line; while it stays down, a new reason is one more line, the
 * same reason again one line per RELOG_MS with the attempts so far. */
static void log_failure(struct rlink *l, enum rlink_fail kind, bool was_up, const char *why)
{
    enum log_level level = kind == RLINK_REFUSED ? LOG_ERROR : LOG_WARN;
    long long now = mono_ms();

    if (was_up)
        log_msg(level, NULL, "redis %s down: %s (reconnecting) addr=%s", l->ops->name, why,
                l->where);
    else if (strcmp(why, l->why) != 0)
        log_msg(level, NULL, "redis %s: %s (retrying) addr=%s", l->ops->name, why, l->where);
    else if (now - l->logged_ms >= RELOG_MS)
        log_msg(level, NULL, "redis %s still down: %s attempts=%u down_ms=%lld addr=%s",
                l->ops->name, why, l->failures, now - l->down_ms, l->where);
    else
        return;
    snprintf(l->why, sizeof(l->why), "%s", why);
    l->logged_ms = now;
}

/* The connection is gone (l->ac already NULL): count, log, reconnect later. */
static void link_down(struct rlink *l, enum rlink_fail kind, const char *why)
{
    bool was_up = l->up;

    l->up = false;
    l->pending = 0;
    event_del(l->check);
    if (kind == RLINK_REFUSED || kind == RLINK_NOT_MASTER)
        l->st->refused++;
    else if (kind == RLINK_TIMEOUT)
        l->st->timeouts++;
    if (was_up) {
        l->down_ms = mono_ms();
        l->failures = 0; /* counts failed attempts to come back, not the loss */
    } else {
        l->failures++;
    }
    log_failure(l, kind, was_up, why);
    l->res->ops->failed(l->res, l, l->gen, kind);
    if (was_up && l->ops->down != NULL)
        l->ops->down(l);
    schedule_retry(l);
}

struct rlink *rlink_of(const struct redisAsyncContext *ac)
{
    struct rlink *l = ac->data;

    return l != NULL && l->ac == ac ? l : NULL;
}

void rlink_fail(struct rlink *l, enum rlink_fail kind, const char *why)
{
    redisAsyncContext *ac = l->ac;
    char copy[sizeof(l->why)];

    if (ac == NULL)
        return;
    snprintf(copy, sizeof(copy), "%s", why); /* why may live in a reply freed with ac */
    l->ac = NULL; /* from now on its callbacks, and its disconnect callback, see a stale one */
    redisAsyncFree(ac); /* inside one of its callbacks hiredis frees it when that returns */
    link_down(l, kind, copy);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct rlink *l = rlink_of(ac);

    if (l == NULL || status == REDIS_OK)
        return;   /* connected: up only once the setup is answered */
    l->ac = NULL; /* hiredis frees it after this callback */
    link_down(l, RLINK_LOST, ac->errstr[0] != '\0' ? ac->errstr : "cannot connect");
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct rlink *l = rlink_of(ac);

    (void)status;
    if (l == NULL)
        return;
    l->ac = NULL;
    /* REDIS_ERR_OTHER: an error reply no command waited for, such as the NOAUTH that
     * answers a SUBSCRIBE sent without a password; hiredis drops the connection. */
    link_down(l, ac->err == REDIS_ERR_OTHER ? RLINK_REFUSED : RLINK_LOST,
              ac->errstr[0] != '\0' ? ac->errstr : "connection closed");
}

static void on_auth(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rlink *l = rlink_of(ac);
    redisReply *rep = reply;

    (void)priv;
    if (l != NULL && rep != NULL && rep->type == REDIS_REPLY_ERROR)
        rlink_fail(l, RLINK_REFUSED, rep->str);
}

/* ROLE's first element names what the node is: "master", "slave" or "sentinel". */
static void on_role(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rlink *l = rlink_of(ac);
    redisReply *rep = reply;
    char why[64];

    (void)priv;
    if (l == NULL || rep == NULL)
        return;
    if (rep->type == REDIS_REPLY_ERROR) {
        rlink_fail(l, RLINK_REFUSED, rep->str);
        return;
    }
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 &&
        rep->element[0]->type == REDIS_REPLY_STRING && strcmp(rep->element[0]->str, "master") == 0)
        return;
    snprintf(why, sizeof(why), "not a master (ROLE says %.20s)",
             rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 &&
                     rep->element[0]->type == REDIS_REPLY_STRING
                 ? rep->element[0]->str
                 : "something else");
    rlink_fail(l, RLINK_NOT_MASTER, why);
}

/* Every CHECK_MS while connected: the setup deadline, then the answer deadline. */
static void on_check(evutil_socket_t fd, short what, void *arg)
{
    struct rlink *l = arg;
    long long now = mono_ms();
    char why[96];

    (void)fd;
    (void)what;
    if (l->ac == NULL || now - l->since_ms < (long long)l->timeout_ms)
        return;
    if (!l->up)
        snprintf(why, sizeof(why), "no answer to %s in %ums",
                 (l->ac->c.flags & REDIS_CONNECTED) ? "setup" : "connect", l->timeout_ms);
    else if (l->pending > 0)
        snprintf(why, sizeof(why), "no %s back in %ums", l->ops->awaits, l->timeout_ms);
    else
        return;
    rlink_fail(l, RLINK_TIMEOUT, why);
}

/*
 * hiredis's own libevent adapter (adapters/libevent.h) registers a one-shot read event
 * that hiredis adds again after every read, and a one-shot write event for every batch
 * of commands: two epoll_ctl() calls per read and per write, more than the read or
 * write itself costs at a few orders per wake-up. This one keeps the read event
 * persistent, and once the connection is up writes what was queued at the end of the
 * loop turn, waiting for the socket to be writable only when the kernel would not take
 * it all (as conn.c does for clients).
 */
struct rlink_ev {
    redisAsyncContext *ac;
    struct event *rev;  /* EV_READ | EV_PERSIST */
    struct event *wev;  /* EV_WRITE: waits for the socket */
    struct event *wnow; /* no fd: writes at the end of the loop turn */
};

static struct rlink_ev *writing_now; /* inside ev_write_now() for this one */

static void ev_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    redisAsyncHandleRead(((struct rlink_ev *)arg)->ac);
}

static void ev_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    redisAsyncHandleWrite(((struct rlink_ev *)arg)->ac);
}

/* hiredis asks for its write event again from inside when the kernel took part only. */
static void ev_write_now(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    writing_now = arg;
    redisAsyncHandleWrite(((struct rlink_ev *)arg)->ac); /* may free arg */
    writing_now = NULL;
}

static void ev_add_read(void *data)
{
    event_add(((struct rlink_ev *)data)->rev, NULL); /* pending already: no system call */
}

static void ev_del_read(void *data)
{
    event_del(((struct rlink_ev *)data)->rev);
}

static void ev_add_write(void *data)
{
    struct rlink_ev *e = data;

    /* Until connected, writability is what says the connect ended. */
    if (!(e->ac->c.flags & REDIS_CONNECTED) || writing_now == e)
        event_add(e->wev, NULL);
    else
        event_active(e->wnow, EV_TIMEOUT, 1);
}

static void ev_del_write(void *data)
{
    struct rlink_ev *e = data;

    event_del(e->wev);
    event_del(e->wnow);
}

static void ev_cleanup(void *data)
{
    struct rlink_ev *e = data;

    if (writing_now == e)
        writing_now = NULL;
    event_free(e->rev);
    event_free(e->wev);
    event_free(e->wnow);
    free(e);
}

static int ev_attach(redisAsyncContext *ac, struct event_base *base)
{
    struct rlink_ev *e = calloc(1, sizeof(*e));
    int fd = ac->c.fd;

    if (e == NULL)
        return -1;
    e->ac = ac;
    e->rev = event_new(base, fd, EV_READ | EV_PERSIST, ev_read, e);
    e->wev = event_new(base, fd, EV_WRITE, ev_write, e);
    e->wnow = event_new(base, -1, 0, ev_write_now, e);
    if (e->rev == NULL || e->wev == NULL || e->wnow == NULL || event_add(e->rev, NULL) < 0 ||
        event_add(e->wev, NULL) < 0) {
        if (e->rev != NULL)
            event_free(e->rev);
        if (e->wev != NULL)
            event_free(e->wev);
        if (e->wnow != NULL)
            event_free(e->wnow);
        free(e);
        return -1;
    }
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    ac->ev.data = e;
    return 0;
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    link_connect(arg);
}

static void link_connect(struct rlink *l)
{
    struct timeval every = {0, CHECK_MS * 1000};
    struct rlink_addr a = {0};
    redisAsyncContext *ac;
    char why[128];
    int rc = REDIS_OK;

    if (l->ac != NULL || l->stopped || (l->ops->wanted != NULL && !l->ops->wanted(l)))
        return;
    /* In a Redis Cluster the owner points its address at its key's master first. */
    if (l->ops->locate != NULL && l->ops->locate(l) < 0) {
        link_down(l, RLINK_LOST, "no master known yet for its key");
        return;
    }
    l->waiting = false;
    if (l->res->ops->get(l->res, l, &a) != 0) {
        l->waiting = true; /* rlink_resolved() comes back here */
        return;
    }
    l->gen = a.gen;
    if (a.path != NULL)
        snprintf(l->where, sizeof(l->where), "%s", a.path);
    else
        snprintf(l->where, sizeof(l->where), strchr(a.host, ':') ? "[%s]:%d" : "%s:%d", a.host,
                 a.port);
    l->st->connects++;
    ac = a.path != NULL ? redisAsyncConnectUnix(a.path) : redisAsyncConnect(a.host, a.port);
    if (ac == NULL) {
        link_down(l, RLINK_LOST, "out of memory");
        return;
    }
    if (ac->err) {
        snprintf(why, sizeof(why), "%s", ac->errstr);
        redisAsyncFree(ac);
        link_down(l, RLINK_LOST, why);
        return;
    }
    ac->data = l;
    if (ev_attach(ac, l->base) < 0) {
        redisAsyncFree(ac);
        link_down(l, RLINK_LOST, "cannot attach to the event loop");
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    redisEnableKeepAlive(&ac->c);
    l->ac = ac;
    l->since_ms = mono_ms();
    l->pending = 0;
    if (event_add(l->check, &every) < 0) {
        rlink_fail(l, RLINK_LOST, "cannot arm the deadline timer");
        return;
    }
    /* Queued now, written once connected; answered in this order. ROLE comes before
     * the setup, so a replica is dropped before anything counts on it. */
    if (a.password != NULL && a.user != NULL)
        rc = redisAsyncCommand(ac, on_auth, NULL, "AUTH %s %s", a.user, a.password);
    else if (a.password != NULL)
        rc = redisAsyncCommand(ac, on_auth, NULL, "AUTH %s", a.password);
    if (rc == REDIS_OK && a.want_master)
        rc = redisAsyncCommand(ac, on_role, NULL, "ROLE");
    if (rc != REDIS_OK || l->ops->setup(l) < 0)
        rlink_fail(l, RLINK_LOST, "cannot queue the setup commands");
}

static int static_get(struct rlink_resolver *r, struct rlink *l, struct rlink_addr *a)
{
    const struct redis_url *u = ((struct rlink_static *)r)->url;

    (void)l;
    a->host = u->host;
    a->port = u->port;
    a->path = u->path;
    a->user = u->user;
    a->password = u->password;
    return 0;
}

static void static_failed(struct rlink_resolver *r, struct rlink *l, uint64_t gen,
                          enum rlink_fail kind)
{
    (void)r;
    (void)l;
    (void)gen;
    (void)kind;
}

static const struct rlink_resolver_ops static_ops = {
    .get = static_get,
    .failed = static_failed,
};

void rlink_static_init(struct rlink_static *s, const struct redis_url *url)
{
    s->res.ops = &static_ops;
    s->url = url;
}

int rlink_init(struct rlink *l, const struct rlink_ops *ops, void *owner, struct event_base *base,
               struct rlink_resolver *res, uint32_t timeout_ms, struct rlink_stats *st)
{
    memset(l, 0, sizeof(*l));
    l->ops = ops;
    l->owner = owner;
    l->base = base;
    l->res = res;
    l->timeout_ms = timeout_ms;
    l->st = st;
    l->backoff_ms = BACKOFF_MIN_MS;
    if (getrandom(&l->rng, sizeof(l->rng), 0) != sizeof(l->rng) || l->rng == 0)
        l->rng = ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)l ^ 0x9e3779b97f4a7c15u;
    l->retry = evtimer_new(base, on_retry, l);
    l->check = event_new(base, -1, EV_PERSIST, on_check, l);
    if (l->retry == NULL || l->check == NULL) {
        if (l->retry != NULL)
            event_free(l->retry);
        if (l->check != NULL)
            event_free(l->check);
        return -1;
    }
    return 0;
}

void rlink_resolved(struct rlink *l)
{
    if (l->waiting)
        rlink_retry_now(l);
}

void rlink_retry_now(struct rlink *l)
{
    if (l->ac != NULL || l->stopped)
        return;
    event_del(l->retry);
    event_active(l->retry, EV_TIMEOUT, 0); /* never inside the caller's call chain */
}

void rlink_start(struct rlink *l)
{
    l->stopped = false;
    l->down_ms = mono_ms();
    link_connect(l);
}

void rlink_set_up(struct rlink *l)
{
    long long now = mono_ms();

    if (l->up)
        return;
    l->up = true;
    l->backoff_ms = BACKOFF_MIN_MS;
    l->pending = 0;
    l->since_ms = now;
    if (l->was_up)
        l->st->reconnects++;
    if (l->was_up || l->failures > 0)
        log_msg(LOG_NOTICE, NULL, "redis %s up%s attempts=%u down_ms=%lld addr=%s", l->ops->name,
                l->ops->up_note, l->failures + 1, now - l->down_ms, l->where);
    else
        log_msg(LOG_NOTICE, NULL, "redis %s up%s addr=%s", l->ops->name, l->ops->up_note, l->where);
    l->was_up = true;
    l->failures = 0;
    l->why[0] = '\0';
    if (l->ops->up != NULL)
        l->ops->up(l);
}

void rlink_expect(struct rlink *l)
{
    if (l->pending++ == 0)
        l->since_ms = mono_ms();
}

void rlink_heard(struct rlink *l, uint32_t n)
{
    l->pending = n < l->pending ? l->pending - n : 0;
    l->since_ms = mono_ms();
}

void rlink_on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rlink *l = rlink_of(ac);
    redisReply *rep = reply;

    (void)priv;
    if (l == NULL || rep == NULL)
        return;
    rlink_heard(l, 1);
    if (rep->type == REDIS_REPLY_ERROR)
        log_limited(LOG_WARN, NULL, "redis %s: command refused: %s", l->ops->name, rep->str);
}

void rlink_stop(struct rlink *l)
{
    l->stopped = true;
    event_del(l->retry);
    event_del(l->check);
}

void rlink_close(struct rlink *l)
{
    redisAsyncContext *ac = l->ac;

    rlink_stop(l);
    if (ac == NULL)
        return;
    l->up = false;
    l->ac = NULL;
    redisAsyncDisconnect(ac);
}
