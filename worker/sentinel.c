#include "worker/sentinel.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "common/log.h"
#include "common/redis_url.h"

/* The sentinels' channel, subscribed as a pattern that matches it alone (no glob
 * characters): see on_switch(). */
#define SWITCH      "+switch-master"
#define PING_MAX_MS 1000 /* the watch link's PING period: this, or a third of the timeout */

struct sentinel {
    struct rlink_resolver master_res; /* the data links': the master */
    struct rlink_resolver list_res;   /* the query and watch links': the sentinels in turn */
    const struct redis_url *url;      /* borrowed */
    struct sentinel_stats *st;        /* borrowed: in the worker's shared memory slot */
    struct rlink query;
    struct rlink watch;
    struct event *ping; /* owned: the watch link's PING, so a hung sentinel is noticed */
    size_t query_at;    /* the sentinel each of the two is on, in url->sentinels */
    size_t watch_at;
    struct rlink *links; /* data links that asked for the master, through res_next */
    uint64_t gen;        /* the master's address version; 0 until one is known */
    char host[256];
    int port;
    bool stale;   /* a link failed on the current address: ask before handing it out */
    bool asking;  /* a query is on its way on the query link */
    bool rotate;  /* the query link's sentinel named a node that is not a master */
    bool replica; /* the current address is that node: never handed out again */
};

static struct sentinel *of_master(struct rlink_resolver *r)
{
    return (struct sentinel *)(void *)((char *)r - offsetof(struct sentinel, master_res));
}

static struct sentinel *of_list(struct rlink_resolver *r)
{
    return (struct sentinel *)(void *)((char *)r - offsetof(struct sentinel, list_res));
}

/* The master is at host:port (said by via): links still on another address are
 * dropped, links down connect now. */
static void set_master(struct sentinel *s, const char *host, int port, const char *via)
{
    bool moved = s->gen == 0 || port != s->port || strcmp(host, s->host) != 0;

    s->stale = false;
    s->replica = false;
    if (moved) {
        if (s->gen != 0) {
            s->st->failovers++;
            log_msg(LOG_NOTICE, NULL, "redis master %s moved: %s:%d -> %s:%d via=%s",
                    s->url->master, s->host, s->port, host, port, via);
        } else {
            log_msg(LOG_NOTICE, NULL, "redis master %s at %s:%d via=%s", s->url->master, host, port,
                    via);
        }
        snprintf(s->host, sizeof(s->host), "%s", host);
        s->port = port;
        s->gen++;
    }
    for (struct rlink *l = s->links; l != NULL; l = l->res_next) {
        if (!moved) {
            rlink_resolved(l);
            continue;
        }
        if (l->ac != NULL && l->gen != s->gen)
            rlink_fail(l, RLINK_LOST, "the master moved");
        rlink_retry_now(l);
    }
}

/* Query link ----------------------------------------------------------------------- */

static void on_answer(redisAsyncContext *ac, void *reply, void *priv);

/* The watch link listens to the sentinel that last named the master: one that named
 * no master or a replica, passed over by the query link, would announce no failover. */
static void follow(struct sentinel *s)
{
    if (s->watch_at == s->query_at)
        return;
    if (s->watch.ac != NULL)
        rlink_fail(&s->watch, RLINK_LOST, "moving to the sentinel that named the master");
    s->watch_at = s->query_at; /* after rlink_fail, whose failed() moved it on by one */
}

static int send_query(struct sentinel *s)
{
    if (redisAsyncCommand(s->query.ac, on_answer, NULL, "SENTINEL get-master-addr-by-name %s",
                          s->url->master) != REDIS_OK)
        return -1;
    s->st->queries++;
    s->asking = true;
    return 0;
}

/* Asks the sentinels where the master is, unless a question is on its way already or
 * the query link is connecting (its setup asks). */
static void ask(struct sentinel *s)
{
    if (s->asking || !s->query.up)
        return;
    if (s->rotate) {
        s->rotate = false; /* the next sentinel is asked when the link is back */
        rlink_fail(&s->query, RLINK_REFUSED, "named a node that is not a master");
        return;
    }
    if (send_query(s) < 0)
        rlink_fail(&s->query, RLINK_LOST, "cannot queue SENTINEL get-master-addr-by-name");
    else
        rlink_expect(&s->query);
}

/* The answer is [host, port], or nil for a name the sentinel does not monitor. */
static void on_answer(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rlink *l = rlink_of(ac);
    redisReply *rep = reply;
    struct sentinel *s;
    char why[200];
    int port;

    (void)priv;
    if (l == NULL || rep == NULL)
        return;
    s = l->owner;
    s->asking = false;
    if (l->up)
        rlink_heard(l, 1);
    if (rep->type == REDIS_REPLY_NIL) {
        s->st->errors++;
        snprintf(why, sizeof(why), "no master named %s", s->url->master);
        rlink_fail(&s->query, RLINK_REFUSED, why);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        s->st->errors++;
        rlink_fail(&s->query, RLINK_REFUSED, rep->str);
        return;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        rep->element[0]->type != REDIS_REPLY_STRING ||
        rep->element[1]->type != REDIS_REPLY_STRING ||
        redis_url_check_addr(rep->element[0]->str, rep->element[0]->len, rep->element[1]->str,
                             rep->element[1]->len, &port) < 0) {
        s->st->errors++;
        rlink_fail(&s->query, RLINK_REFUSED,
                   "malformed answer to SENTINEL get-master-addr-by-name");
        return;
    }
    rlink_set_up(l);
    set_master(s, rep->element[0]->str, port, l->where);
    follow(s);
}

/* Every new query connection asks first: it is up once a sentinel names the master. */
static int query_setup(struct rlink *l)
{
    return send_query(l->owner);
}

static const struct rlink_ops query_ops = {
    .name = "sentinel",
    .up_note = " (master named)",
    .awaits = "answers",
    .setup = query_setup,
};

/* Watch link ----------------------------------------------------------------------- */

/* The sentinels agreed on a new master (or, for another master, nothing to do). */
static void switch_master(struct sentinel *s, const redisReply *msg)
{
    char host[256];
    int port, r;

    r = redis_url_switch_master(msg->str, msg->len, s->url->master, host, sizeof(host), &port);
    if (r > 0) {
        set_master(s, host, port, "+switch-master");
    } else if (r < 0) {
        s->st->errors++;
        log_limited(LOG_WARN, NULL, "redis sentinel: malformed +switch-master message: %.200s",
                    msg->str);
    }
}

static void on_switch(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rlink *l = rlink_of(ac);
    redisReply *rep = reply;

    (void)priv;
    if (l == NULL || rep == NULL)
        return;
    if (rep->type == REDIS_REPLY_ERROR) {
        rlink_fail(l, RLINK_REFUSED, rep->str);
        return;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 2 ||
        rep->element[0]->type != REDIS_REPLY_STRING)
        return;
    /* Any reply proves the sentinel alive: the PING's ["pong", "+switch-master"] or a
     * message. (hiredis 0.14 routes a subscribed connection's replies by their second
     * element, among patterns when the first begins with 'p': so the channel is
     * subscribed as a pattern and PING names it, or the pong would reach no callback.) */
    if (l->up && l->pending > 0)
        rlink_heard(l, 1);
    if (strcmp(rep->element[0]->str, "psubscribe") == 0)
        rlink_set_up(l);
    else if (strcmp(rep->element[0]->str, "pmessage") == 0 && rep->elements >= 4 &&
             rep->element[3]->type == REDIS_REPLY_STRING)
        switch_master(l->owner, rep->element[3]);
}

/* While the watch link is up and has no PING out, one more: its answer is awaited
 * within the timeout, so a sentinel that stopped answering is left for the next. */
static void on_ping(evutil_socket_t fd, short what, void *arg)
{
    struct sentinel *s = arg;

    (void)fd;
    (void)what;
    if (!s->watch.up || s->watch.ac == NULL || s->watch.pending > 0)
        return;
    if (redisAsyncCommand(s->watch.ac, on_switch, NULL, "PING %s", SWITCH) != REDIS_OK)
        rlink_fail(&s->watch, RLINK_LOST, "cannot queue PING");
    else
        rlink_expect(&s->watch);
}

static int watch_setup(struct rlink *l)
{
    return redisAsyncCommand(l->ac, on_switch, NULL, "PSUBSCRIBE %s", SWITCH) == REDIS_OK ? 0 : -1;
}

static const struct rlink_ops watch_ops = {
    .name = "sentinel subscriber",
    .up_note = " (+switch-master)",
    .awaits = "answers",
    .setup = watch_setup,
};

/* Resolvers ------------------------------------------------------------------------- */

/* The data links: the master once named; while the name is being asked again after a
 * failure, the last address still, when no sentinel can be asked right now (ROLE
 * guards it). */
static int master_get(struct rlink_resolver *r, struct rlink *l, struct rlink_addr *a)
{
    struct sentinel *s = of_master(r);

    if (!l->res_listed) {
        l->res_listed = true;
        l->res_next = s->links;
        s->links = l;
    }
    if (s->gen == 0 || s->stale) {
        ask(s);
        if (s->gen == 0 || s->replica || s->query.up)
            return 1; /* set_master() or the query link's failure decides */
    }
    a->host = s->host;
    a->port = s->port;
    a->user = s->url->user;
    a->password = s->url->password;
    a->want_master = true;
    a->gen = s->gen;
    return 0;
}

static void master_failed(struct rlink_resolver *r, struct rlink *l, uint64_t gen,
                          enum rlink_fail kind)
{
    struct sentinel *s = of_master(r);

    (void)l;
    if (gen != s->gen)
        return; /* an address already replaced */
    s->stale = true;
    if (kind == RLINK_NOT_MASTER) {
        s->st->not_master++;
        s->rotate = true;
        s->replica = true;
    }
}

static const struct rlink_resolver_ops master_ops = {
    .get = master_get,
    .failed = master_failed,
};

static int list_get(struct rlink_resolver *r, struct rlink *l, struct rlink_addr *a)
{
    struct sentinel *s = of_list(r);
    const struct redis_url_node *n = &s->url->sentinels[l == &s->query ? s->query_at : s->watch_at];

    a->host = n->host;
    a->port = n->port;
    a->user = s->url->sentinel_user;
    a->password = s->url->sentinel_password;
    return 0;
}

/* A sentinel that failed is left for the next one in the list. Links waiting for the
 * master while the query link is down are let go on the last address, if any. */
static void list_failed(struct rlink_resolver *r, struct rlink *l, uint64_t gen,
                        enum rlink_fail kind)
{
    struct sentinel *s = of_list(r);
    size_t *at = l == &s->query ? &s->query_at : &s->watch_at;

    (void)gen;
    (void)kind;
    *at = (*at + 1) % s->url->nsentinels;
    if (l != &s->query)
        return;
    s->asking = false;
    s->rotate = false;
    if (s->gen != 0 && !s->replica) {
        for (struct rlink *d = s->links; d != NULL; d = d->res_next)
            rlink_resolved(d);
    }
}

static const struct rlink_resolver_ops list_ops = {
    .get = list_get,
    .failed = list_failed,
};

struct sentinel *sentinel_new(struct event_base *base, const struct redis_url *u,
                              uint32_t timeout_ms, struct sentinel_stats *st)
{
    struct sentinel *s = calloc(1, sizeof(*s));
    uint32_t ping_ms = timeout_ms / 3 < PING_MAX_MS ? timeout_ms / 3 : PING_MAX_MS;
    struct timeval every = {ping_ms / 1000, (ping_ms % 1000) * 1000};

    if (s == NULL)
        return NULL;
    s->master_res.ops = &master_ops;
    s->list_res.ops = &list_ops;
    s->url = u;
    s->st = st;
    if (rlink_init(&s->query, &query_ops, s, base, &s->list_res, timeout_ms, &st->links) < 0)
        goto err_free;
    if (rlink_init(&s->watch, &watch_ops, s, base, &s->list_res, timeout_ms, &st->links) < 0)
        goto err_free; /* the worker exits next: its event_base takes the query's timers */
    s->ping = event_new(base, -1, EV_PERSIST, on_ping, s);
    if (s->ping == NULL || event_add(s->ping, &every) < 0)
        goto err_free;
    rlink_start(&s->query);
    rlink_start(&s->watch);
    return s;
err_free:
    free(s);
    return NULL;
}

struct rlink_resolver *sentinel_resolver(struct sentinel *s)
{
    return &s->master_res;
}

void sentinel_stop(struct sentinel *s)
{
    event_del(s->ping);
    rlink_close(&s->query);
    rlink_close(&s->watch);
}
