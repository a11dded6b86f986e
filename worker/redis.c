#include "worker/redis.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "common/log.h"
#include "common/redis_url.h"
#include "worker/apply.h"
#include "worker/inbound.h"
#include "worker/subs.h"
#include "worker/tombs.h"
#include "worker/worker.h"

#define ANNOUNCE_EVERY_MS 3000
#define ANNOUNCE_TTL_S    10
#define BEAT_MAX_MS       1000  /* heartbeat period: this, or a third of --redis-timeout */
#define SUB_CHANNELS      3     /* fleet, gateway, heartbeat (not the worker's) */
#define QUEUE_MAX_MSGS    10000 /* publishes kept while the publisher reconnects */
#define QUEUE_MAX_BYTES   (8u << 20)
#define STR_(x)           #x
#define STR(x)            STR_(x)

/* A publish waiting for the publisher to come back. */
struct queued {
    struct queued *next;
    size_t chan_len;
    size_t len;
    char data[]; /* channel, then message */
};

struct wredis {
    struct worker *w;
    struct redis_url url;
    struct rlink_static direct; /* the resolver of a redis:// or unix:// URL */
    struct sentinel *sentinel;  /* owned: the resolver of a sentinel:// URL, or NULL */
    struct rlink_resolver *res; /* one of them */
    struct rlink sub;
    struct rlink pub;
    struct event *announce;
    struct event *beat;
    struct subs *subs;  /* owned: group channels */
    struct cluster *cl; /* owned: instead of sub and pub with a cluster:// URL */
    char fleet_channel[160];
    char gw_channel[256];
    char wk_channel[320]; /* <channel>:worker:<id prefix>: orders for this worker only */
    char hb_channel[320];
    char announce_key[256];
    int subscribed;        /* channels confirmed on the current sub connection */
    bool wk_pending;       /* the worker channel's SUBSCRIBE is not answered yet */
    bool wk_refused;       /* Redis refused it: subscribed no more by this process */
    uint64_t hb_sent;      /* heartbeats published, numbered from 1 */
    uint64_t hb_seen;      /* the newest one back, or hb_sent when sub came up */
    struct queued *q_head; /* owned: FIFO of publishes made while pub was down */
    struct queued *q_tail;
    size_t q_msgs;
    size_t q_bytes;
};

static void on_announce(evutil_socket_t fd, short what, void *arg);

static bool links_up(const struct wredis *r)
{
    if (r->cl != NULL)
        return cluster_is_up(r->cl) && cluster_is_confirmed(r->cl, r->fleet_channel) &&
               cluster_is_confirmed(r->cl, r->gw_channel);
    return r->sub.up && r->pub.up;
}

/* Whether commands can be sent: the publisher, or in a cluster a slot map and a shard. */
static bool can_send(const struct wredis *r)
{
    return r->cl != NULL ? cluster_is_up(r->cl) : r->pub.up;
}

/* Sends a fire-and-forget command to the master of key's slot. Returns 0 or -1. */
static int cluster_send(struct wredis *r, const char *key, int argc, const char **argv)
{
    size_t argvlen[8];

    for (int i = 0; i < argc; i++)
        argvlen[i] = strlen(argv[i]);
    return cluster_command(r->cl, key, strlen(key), NULL, NULL, argc, argv, argvlen);
}

/* Publisher ------------------------------------------------------------------------ */

/* Sends a command on the publisher (up) whose reply is awaited. Returns 0 or -1. */
static int pub_command(struct wredis *r, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = redisvAsyncCommand(r->pub.ac, rlink_on_reply, NULL, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK)
        return -1;
    rlink_expect(&r->pub);
    return 0;
}

/* Sends what was published while the publisher was down, in order. */
static void queue_flush(struct wredis *r)
{
    struct queued *q = r->q_head;

    r->q_head = r->q_tail = NULL;
    r->q_msgs = r->q_bytes = 0;
    while (q != NULL) {
        struct queued *next = q->next;
        const char *msg = q->data + q->chan_len;

        if (pub_command(r, "PUBLISH %b %b", q->data, q->chan_len, msg, q->len) == 0)
            r->w->slot->redis.published++;
        else
            r->w->slot->redis.publish_dropped++;
        free(q);
        q = next;
    }
}

static void on_pub_setup(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rlink *l = rlink_of(ac);
    redisReply *rep = reply;

    if (l == NULL || rep == NULL)
        return;
    if (rep->type == REDIS_REPLY_ERROR)
        rlink_fail(l, RLINK_REFUSED, rep->str);
    else if (priv != NULL) /* the PING, last: everything before it was accepted */
        rlink_set_up(l);
}

/* SELECT the URL's db, then PING: its answer makes the publisher up. */
static int pub_setup(struct rlink *l)
{
    struct wredis *r = l->owner;
    redisAsyncContext *ac = l->ac;

    if (r->url.db != 0 &&
        redisAsyncCommand(ac, on_pub_setup, NULL, "SELECT %d", r->url.db) != REDIS_OK)
        return -1;
    return redisAsyncCommand(ac, on_pub_setup, r, "PING") == REDIS_OK ? 0 : -1;
}

static void pub_up(struct rlink *l)
{
    struct wredis *r = l->owner;

    queue_flush(r);
    inbound_on_up(r->w);
    on_announce(-1, 0, r); /* be listed at once, not at the next refresh */
}

static const struct rlink_ops pub_ops = {
    .name = "publisher",
    .up_note = "",
    .awaits = "replies",
    .setup = pub_setup,
    .up = pub_up,
};

/* Subscriber ----------------------------------------------------------------------- */

static void sub_confirmed(struct rlink *l)
{
    struct wredis *r = l->owner;

    if (++r->subscribed == SUB_CHANNELS)
        rlink_set_up(l);
}

/* A heartbeat is back: it and every one before it went through Redis. */
static void heartbeat(struct rlink *l, const redisReply *msg)
{
    struct wredis *r = l->owner;
    uint64_t seq;
    char *end;

    if (!l->up)
        return;
    seq = strtoull(msg->str, &end, 10);
    if (end == msg->str || *end != '\0' || seq <= r->hb_seen || seq > r->hb_sent)
        return;
    rlink_heard(l, (uint32_t)(seq - r->hb_seen));
    r->hb_seen = seq;
}

static bool is_channel(const redisReply *chan, const char *name)
{
    return strlen(name) == chan->len && memcmp(chan->str, name, chan->len) == 0;
}

static bool is_name(const char *chan, size_t clen, const char *name)
{
    return strlen(name) == clen && memcmp(chan, name, clen) == 0;
}

/* Every message goes by its channel: the heartbeat stays here (route()), the fleet's,
 * the gateway's and the worker's channels carry orders, a group channel orders for that
 * group. */
static void route_orders(struct wredis *r, const char *chan, size_t clen, const char *msg,
                         size_t mlen)
{
    const char *group;

    if (is_name(chan, clen, r->fleet_channel) || is_name(chan, clen, r->gw_channel) ||
        is_name(chan, clen, r->wk_channel)) {
        apply_order_text(r->w, msg, mlen);
    } else if ((group = subs_group_of(r->subs, chan, clen)) != NULL) {
        r->w->slot->subs.orders++;
        apply_group_order_text(r->w, group, msg, mlen);
    }
}

static void route(struct rlink *l, const redisReply *chan, const redisReply *msg)
{
    if (is_channel(chan, ((struct wredis *)l->owner)->hb_channel)) {
        heartbeat(l, msg);
        return;
    }
    /* A subscriber still delivering a backlog is alive: the heartbeat queued behind it is
     * late, not lost. Without this a burst of orders that took the worker longer than
     * --redis-timeout to read dropped the link, and the rest of the burst with it. */
    if (l->up)
        rlink_heard(l, 0);
    route_orders(l->owner, chan->str, chan->len, msg->str, msg->len);
}

/* Cluster ----------------------------------------------------------------------------- */

static void on_cluster_message(void *arg, const char *chan, size_t clen, const char *msg,
                               size_t mlen)
{
    route_orders(arg, chan, clen, msg, mlen);
}

/* A shard's command connection is up, or the masters changed: what waited goes out. */
static void on_cluster_up(void *arg)
{
    struct wredis *r = arg;

    inbound_on_up(r->w);
    on_announce(-1, 0, r); /* be listed at once, not at the next refresh */
    tombs_resync(r->w);    /* after a failover orders may have been missed */
}

/* The group channel hooks (subs.c) in a cluster: SSUBSCRIBE on the slot's master. */
static int cluster_sub(void *arg, const char *channel, bool on)
{
    return cluster_want(arg, channel, on);
}

/* The callback of every subscription: messages and the confirmations, which Redis
 * sends one per channel. Those of the order and heartbeat channels make the link up;
 * those of group channels are subs.c's. */
static void on_message(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rlink *l = rlink_of(ac);
    redisReply *rep = reply;
    const redisReply *kind, *chan;
    struct wredis *r;

    (void)priv;
    if (l == NULL || rep == NULL)
        return;
    if (rep->type == REDIS_REPLY_ERROR) {
        rlink_fail(l, RLINK_REFUSED, rep->str);
        return;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
        rep->element[0]->type != REDIS_REPLY_STRING || rep->element[1]->type != REDIS_REPLY_STRING)
        return;
    r = l->owner;
    kind = rep->element[0];
    chan = rep->element[1];
    if (strcmp(kind->str, "message") == 0) {
        if (rep->element[2]->type == REDIS_REPLY_STRING)
            route(l, chan, rep->element[2]);
    } else if (strcmp(kind->str, "subscribe") == 0) {
        if (is_channel(chan, r->wk_channel))
            r->wk_pending = false;
        else if (!subs_confirmed(r->subs, chan->str, chan->len, true))
            sub_confirmed(l);
    } else if (strcmp(kind->str, "unsubscribe") == 0) {
        subs_confirmed(r->subs, chan->str, chan->len, false);
    }
}

/* The order and heartbeat channels, the worker's channel, then every group channel
 * still wanted: one pipeline, answered in that order. */
static int sub_setup(struct rlink *l)
{
    struct wredis *r = l->owner;

    r->subscribed = 0;
    if (redisAsyncCommand(l->ac, on_message, NULL, "SUBSCRIBE %s %s %s", r->fleet_channel,
                          r->gw_channel, r->hb_channel) != REDIS_OK ||
        (!r->wk_refused &&
         redisAsyncCommand(l->ac, on_message, NULL, "SUBSCRIBE %s", r->wk_channel) != REDIS_OK))
        return -1;
    r->wk_pending = !r->wk_refused;
    subs_link_new(r->subs);
    return 0;
}

/* A draining worker takes no more orders: it does not resubscribe. */
static bool sub_wanted(struct rlink *l)
{
    return !((struct wredis *)l->owner)->w->draining;
}

/* The announce key says at once whether this worker gets orders. */
static void sub_changed(struct rlink *l)
{
    struct wredis *r = l->owner;

    r->hb_seen = r->hb_sent; /* heartbeats sent before are not awaited */
    on_announce(-1, 0, r);
}

/* Up again: orders may have been missed while it was down; the tombstones they set
 * are in Redis (tombs.c). */
static void sub_up(struct rlink *l)
{
    sub_changed(l);
    tombs_resync(((struct wredis *)l->owner)->w);
}

/*
 * The worker's own channel came after the others: an ACL written before it (README)
 * does not grant it, and a gateway upgraded under such an ACL must keep working. Its
 * SUBSCRIBE goes right behind the order channels', so Redis answers it right after
 * their three confirmations, before any group channel's; a refusal there makes hiredis
 * drop the connection (an error reply in subscribed mode). So a link lost to NOPERM
 * with the three confirmed and the worker channel unanswered lost it to that channel:
 * logged once and counted, and the link comes back without it. Publishers that find no
 * subscriber there (PUBLISH answers 0; wsgatectl does) use the fleet's channel.
 */
static void sub_down(struct rlink *l)
{
    struct wredis *r = l->owner;

    if (r->wk_pending && r->subscribed == SUB_CHANNELS && strncmp(l->why, "NOPERM", 6) == 0) {
        r->wk_refused = true;
        r->w->slot->redis.worker_channel_refused++;
        log_msg(LOG_WARN, NULL,
                "redis refused SUBSCRIBE %s (%s): orders for this worker's connections come "
                "through %s only; grant the channel in the ACL and restart to use it",
                r->wk_channel, l->why, r->fleet_channel);
    }
    r->wk_pending = false;
    subs_link_down(r->subs);
    sub_changed(l);
}

static const struct rlink_ops sub_ops = {
    .name = "subscriber",
    .up_note = " (subscribed)",
    .awaits = "heartbeats",
    .setup = sub_setup,
    .wanted = sub_wanted,
    .up = sub_up,
    .down = sub_down,
};

/* The registry's hooks: a group's channel is wanted while it has members here. */
static void group_first(void *arg, const char *name)
{
    subs_ref(arg, name);
}

static void group_last(void *arg, const char *name)
{
    subs_unref(arg, name);
}

/* Timers ---------------------------------------------------------------------------- */

/* Published whenever the publisher is up, so it is never idle past its deadline;
 * awaited on the subscriber while that is up. */
static void on_beat(evutil_socket_t fd, short what, void *arg)
{
    struct wredis *r = arg;
    char seq[24];

    (void)fd;
    (void)what;
    if (!r->pub.up)
        return;
    snprintf(seq, sizeof(seq), "%" PRIu64, r->hb_sent + 1);
    if (pub_command(r, "PUBLISH %s %s", r->hb_channel, seq) < 0)
        return;
    r->hb_sent++;
    if (r->sub.up)
        rlink_expect(&r->sub);
    else
        r->hb_seen = r->hb_sent;
}

static void on_announce(evutil_socket_t fd, short what, void *arg)
{
    struct wredis *r = arg;
    struct worker *w = r->w;
    char val[512];

    (void)fd;
    (void)what;
    if (r->cl != NULL)
        cluster_set_paused(r->cl, w->draining); /* a draining worker takes no more orders */
    if (!can_send(r))
        return;
    snprintf(val, sizeof(val),
             "{\"gateway\":\"%s\",\"worker\":%d,\"pid\":%d,\"conns\":%zu,\"draining\":%s,"
             "\"redis\":%s,\"ts\":%lld}",
             w->cfg->id, w->num, (int)getpid(), w->reg.ids_count, w->draining ? "true" : "false",
             links_up(r) ? "true" : "false", (long long)time(NULL));
    if (r->cl != NULL) {
        const char *argv[5] = {"SET", r->announce_key, val, "EX", STR(ANNOUNCE_TTL_S)};
        cluster_send(r, r->announce_key, 5, argv);
        return;
    }
    pub_command(r, "SET %s %s EX %d", r->announce_key, val, ANNOUNCE_TTL_S);
}

/* With a cluster:// URL: the fleet's and the gateway's channels are sharded channels
 * wanted from the start, group channels as members come; liveness by PING. */
static int cluster_start(struct wredis *r)
{
    struct worker *w = r->w;
    struct timeval every = {ANNOUNCE_EVERY_MS / 1000, 0};
    char prefix[sizeof(w->cfg->channel) + 8];

    r->cl = cluster_new(w->base, &r->url, w->cfg->redis_timeout_ms, on_cluster_message, r,
                        &w->slot->redis.cluster, &w->slot->redis.sub, &w->slot->redis.pub,
                        &w->slot->redis.publish_dropped);
    if (r->cl == NULL)
        goto err;
    cluster_set_up_fn(r->cl, on_cluster_up);
    if (cluster_want(r->cl, r->fleet_channel, true) < 0 ||
        cluster_want(r->cl, r->gw_channel, true) < 0 ||
        cluster_want(r->cl, r->wk_channel, true) < 0)
        goto err;
    snprintf(prefix, sizeof(prefix), "%s:group:", w->cfg->channel);
    r->subs = subs_new(w->base, &r->sub, prefix, on_message, NULL, &w->slot->subs);
    if (r->subs == NULL)
        goto err;
    subs_set_sharded(r->subs, cluster_sub, r->cl);
    r->announce = event_new(w->base, -1, EV_PERSIST, on_announce, r);
    if (r->announce == NULL || event_add(r->announce, &every) < 0)
        goto err;
    w->redis = r;
    w->reg.on_first = group_first;
    w->reg.on_last = group_last;
    w->reg.hook_arg = r->subs;
    log_msg(LOG_NOTICE, NULL, "redis cluster seeds=%zu sharded pub/sub", r->url.nseeds);
    return 0;
err:
    /* The worker exits next: its event_base and what is on it go with it. */
    log_msg(LOG_ERROR, NULL, "redis cluster: out of memory at start");
    redis_url_cleanup(&r->url);
    free(r);
    return -1;
}

int wredis_start(struct worker *w)
{
    struct wredis *r = calloc(1, sizeof(*r));
    uint32_t timeout = w->cfg->redis_timeout_ms;
    uint32_t beat_ms = timeout / 3 < BEAT_MAX_MS ? timeout / 3 : BEAT_MAX_MS;
    struct timeval every = {ANNOUNCE_EVERY_MS / 1000, 0};
    struct timeval beat = {beat_ms / 1000, (beat_ms % 1000) * 1000};
    uint32_t nonce;
    char err[256], prefix[sizeof(w->cfg->channel) + 8];

    if (r == NULL)
        return -1;
    r->w = w;
    if (redis_url_parse(w->cfg->redis, &r->url, err, sizeof(err)) < 0) {
        log_msg(LOG_ERROR, NULL, "--redis %s: %s", w->cfg->redis, err);
        free(r);
        return -1;
    }
    if (getrandom(&nonce, sizeof(nonce), 0) != sizeof(nonce))
        nonce = (uint32_t)getpid() ^ (uint32_t)time(NULL);
    snprintf(r->fleet_channel, sizeof(r->fleet_channel), "%s", w->cfg->channel);
    snprintf(r->gw_channel, sizeof(r->gw_channel), "%s:%s", w->cfg->channel, w->cfg->id);
    /* The connection ids' prefix without its last '-': a publisher finds the channel of
     * a connection's worker in its id (wsgatectl does). */
    snprintf(r->wk_channel, sizeof(r->wk_channel), "%s:worker:%.*s", w->cfg->channel,
             (int)(w->id_prefix_len - 1), w->id_prefix);
    snprintf(r->hb_channel, sizeof(r->hb_channel), "%s:hb:%s:%d:%08x", w->cfg->channel, w->cfg->id,
             w->num, nonce);
    snprintf(r->announce_key, sizeof(r->announce_key), "%s:gw:%s:%d", w->cfg->channel, w->cfg->id,
             w->num);
    if (r->url.nseeds > 0)
        return cluster_start(r);
    if (redis_url_is_sentinel(&r->url)) {
        r->sentinel = sentinel_new(w->base, &r->url, timeout, &w->slot->redis.sentinel);
        if (r->sentinel == NULL)
            goto err_free_url;
        r->res = sentinel_resolver(r->sentinel);
    } else {
        rlink_static_init(&r->direct, &r->url);
        r->res = &r->direct.res;
    }
    if (rlink_init(&r->sub, &sub_ops, r, w->base, r->res, timeout, &w->slot->redis.sub) < 0)
        goto err_free_url;
    if (rlink_init(&r->pub, &pub_ops, r, w->base, r->res, timeout, &w->slot->redis.pub) < 0)
        goto err_free_url;
    snprintf(prefix, sizeof(prefix), "%s:group:", w->cfg->channel);
    r->subs = subs_new(w->base, &r->sub, prefix, on_message, NULL, &w->slot->subs);
    if (r->subs == NULL)
        goto err_free_url;
    r->announce = event_new(w->base, -1, EV_PERSIST, on_announce, r);
    r->beat = event_new(w->base, -1, EV_PERSIST, on_beat, r);
    if (r->announce == NULL || r->beat == NULL || event_add(r->announce, &every) < 0 ||
        event_add(r->beat, &beat) < 0)
        goto err_free_url;
    w->redis = r;
    w->reg.on_first = group_first;
    w->reg.on_last = group_last;
    w->reg.hook_arg = r->subs;
    rlink_start(&r->sub);
    rlink_start(&r->pub);
    return 0;
err_free_url:
    /* The worker exits next: its event_base and the timers on it go with it. */
    redis_url_cleanup(&r->url);
    free(r);
    return -1;
}

struct rlink_resolver *wredis_link_resolver(struct worker *w, struct redis_url *url,
                                            struct rlink_static *direct)
{
    char err[256];

    if (w->redis->cl == NULL)
        return w->redis->res;
    if (redis_url_parse(w->cfg->redis, url, err, sizeof(err)) < 0) {
        log_msg(LOG_ERROR, NULL, "--redis: %s", err);
        return NULL;
    }
    rlink_static_init(direct, url);
    return &direct->res;
}

bool wredis_is_subscribed(const struct worker *w)
{
    return w->redis != NULL && links_up(w->redis);
}

/* Appends a publish to the queue kept while the publisher is down. Returns 0, or -1
 * when the queue is full or memory runs out. */
static int queue_push(struct wredis *r, const char *channel, const char *msg, size_t len)
{
    size_t clen = strlen(channel);
    struct queued *q;

    if (r->q_msgs >= QUEUE_MAX_MSGS || r->q_bytes + clen + len > QUEUE_MAX_BYTES)
        return -1;
    q = malloc(sizeof(*q) + clen + len);
    if (q == NULL)
        return -1;
    q->next = NULL;
    q->chan_len = clen;
    q->len = len;
    memcpy(q->data, channel, clen);
    memcpy(q->data + clen, msg, len);
    if (r->q_tail != NULL)
        r->q_tail->next = q;
    else
        r->q_head = q;
    r->q_tail = q;
    r->q_msgs++;
    r->q_bytes += clen + len;
    return 0;
}

void wredis_publish(struct worker *w, const char *channel, const char *msg, size_t len)
{
    struct wredis *r = w->redis;

    if (r->cl != NULL) {
        const char *argv[3] = {"SPUBLISH", channel, msg};
        size_t argvlen[3] = {8, strlen(channel), len};
        /* Kept by cluster.c, bounded, while the slot's master is unreachable. */
        if (cluster_command(r->cl, channel, argvlen[1], NULL, NULL, 3, argv, argvlen) == 0)
            w->slot->redis.published++;
        return;
    }
    if (r->pub.up && pub_command(r, "PUBLISH %s %b", channel, msg, len) == 0) {
        w->slot->redis.published++;
        return;
    }
    /* Kept, bounded, until the publisher is back: an order applied right after Redis
     * returns must not lose its acknowledgement. */
    if (queue_push(r, channel, msg, len) == 0)
        return;
    w->slot->redis.publish_dropped++;
    log_limited(LOG_WARN, NULL, "redis publisher down and its queue full: dropped a message for %s",
                channel);
}

bool wredis_pub_is_up(const struct worker *w)
{
    if (w->redis != NULL && w->redis->cl != NULL)
        return cluster_is_up(w->redis->cl);
    return w->redis != NULL && w->redis->pub.up && w->redis->pub.ac != NULL;
}

/* A tracked command's answer in a cluster; NULL: its connection was lost first. */
static void on_cluster_tracked(void *priv, const redisReply *rep)
{
    struct wredis_cb *cb = priv;
    enum wredis_status st = WREDIS_LOST;

    if (rep != NULL) {
        st = WREDIS_OK;
        if (rep->type == REDIS_REPLY_ERROR) {
            st = WREDIS_REFUSED;
            log_limited(LOG_WARN, NULL, "redis cluster: command refused: %s", rep->str);
        }
    }
    cb->done(cb, st);
}

/* A tracked command's answer; a NULL reply or a stale context is a lost one. */
static void on_tracked_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rlink *l = rlink_of(ac);
    redisReply *rep = reply;
    struct wredis_cb *cb = priv;
    enum wredis_status st = WREDIS_LOST;

    if (l != NULL && rep != NULL) {
        rlink_heard(l, 1);
        st = WREDIS_OK;
        if (rep->type == REDIS_REPLY_ERROR) {
            st = WREDIS_REFUSED;
            log_limited(LOG_WARN, NULL, "redis publisher: command refused: %s", rep->str);
        }
    }
    cb->done(cb, st);
}

int wredis_publish_tracked(struct worker *w, const char *channel, const char *msg, size_t len,
                           struct wredis_cb *cb)
{
    struct wredis *r = w->redis;

    if (r->cl != NULL) {
        const char *argv[3] = {"SPUBLISH", channel, msg};
        size_t argvlen[3] = {8, strlen(channel), len};
        return cluster_command(r->cl, channel, argvlen[1], on_cluster_tracked, cb, 3, argv,
                               argvlen);
    }
    if (!wredis_pub_is_up(w) || redisAsyncCommand(r->pub.ac, on_tracked_reply, cb, "PUBLISH %s %b",
                                                  channel, msg, len) != REDIS_OK)
        return -1;
    rlink_expect(&r->pub);
    return 0;
}

int wredis_xadd(struct worker *w, const char *stream, uint64_t maxlen, const char *field,
                const char *msg, size_t len, struct wredis_cb *cb)
{
    struct wredis *r = w->redis;
    char cap[24];

    snprintf(cap, sizeof(cap), "%" PRIu64, maxlen);
    if (r->cl != NULL) {
        const char *argv[7] = {"XADD", stream, "MAXLEN", "~", cap, "*", field};
        const char *av[8];
        size_t avlen[8];
        for (int i = 0; i < 7; i++) {
            av[i] = argv[i];
            avlen[i] = strlen(argv[i]);
        }
        av[7] = msg;
        avlen[7] = len;
        return cluster_command(r->cl, stream, strlen(stream), on_cluster_tracked, cb, 8, av, avlen);
    }
    if (!wredis_pub_is_up(w) ||
        redisAsyncCommand(r->pub.ac, on_tracked_reply, cb, "XADD %s MAXLEN ~ %s * %s %b", stream,
                          cap, field, msg, len) != REDIS_OK)
        return -1;
    rlink_expect(&r->pub);
    return 0;
}

int wredis_locate(struct worker *w, const char *key, struct redis_url *u)
{
    const char *host;
    char *copy;
    int port;

    if (w->redis == NULL || w->redis->cl == NULL)
        return 0;
    if (cluster_owner(w->redis->cl, key, strlen(key), &host, &port) < 0)
        return -1;
    if (u->host == NULL || strcmp(u->host, host) != 0) {
        copy = strdup(host);
        if (copy == NULL)
            return -1;
        free(u->host);
        u->host = copy;
    }
    u->port = port;
    return 0;
}

void wredis_stop(struct worker *w)
{
    struct wredis *r = w->redis;

    if (r == NULL)
        return;
    event_del(r->announce);
    if (r->cl != NULL) {
        const char *argv[2] = {"DEL", r->announce_key};
        if (cluster_is_up(r->cl))
            cluster_send(r, r->announce_key, 2, argv);
        cluster_stop(r->cl);
        return;
    }
    event_del(r->beat);
    rlink_close(&r->sub);
    if (r->pub.up)
        pub_command(r, "DEL %s", r->announce_key);
    rlink_stop(&r->pub);
    if (r->sentinel != NULL)
        sentinel_stop(r->sentinel);
}
