#include "worker/redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "common/log.h"
#include "common/redis_url.h"
#include "worker/apply.h"
#include "worker/worker.h"

#define BACKOFF_MIN_MS     100
#define BACKOFF_MAX_MS     5000
#define CONNECT_TIMEOUT_MS 3000
#define ANNOUNCE_EVERY_MS  3000
#define ANNOUNCE_TTL_S     10
#define STUCK_MS           10000 /* pub replies older than this with commands waiting */
#define QUEUE_MAX_MSGS     10000 /* publishes kept while the publisher reconnects */
#define QUEUE_MAX_BYTES    (8u << 20)

/* A publish waiting for the publisher to come back. */
struct queued {
    struct queued *next;
    size_t chan_len;
    size_t len;
    char data[]; /* channel, then message */
};

enum link_kind { LINK_SUB, LINK_PUB };

struct link {
    struct wredis *r;
    enum link_kind kind;
    redisAsyncContext *ac; /* owned by hiredis once connected; NULL while down */
    struct event *retry;
    struct event *connect_timeout;
    unsigned backoff_ms;
    bool up;              /* connected (and, for sub, subscribed to both channels) */
    bool logged_down;     /* "lost" was logged for this outage */
    int subscribed;       /* sub: channels confirmed */
    unsigned pending;     /* pub: commands without a reply yet */
    long long last_reply; /* pub: ms */
};

struct wredis {
    struct worker *w;
    struct redis_url url;
    struct link sub;
    struct link pub;
    struct event *announce;
    char fleet_channel[160];
    char gw_channel[256];
    char announce_key[256];
    uint64_t rng;
    struct queued *q_head; /* owned: FIFO of publishes made while pub was down */
    struct queued *q_tail;
    size_t q_msgs;
    size_t q_bytes;
};

static void link_connect(struct link *l);

static long long mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *link_name(const struct link *l)
{
    return l->kind == LINK_SUB ? "subscriber" : "publisher";
}

/* Full jitter: a random wait in [backoff/2, backoff], so a fleet that lost Redis
 * together does not reconnect together. */
static void link_schedule_retry(struct link *l)
{
    struct wredis *r = l->r;
    struct timeval tv;
    unsigned ms;

    r->rng ^= r->rng << 13;
    r->rng ^= r->rng >> 7;
    r->rng ^= r->rng << 17;
    ms = l->backoff_ms / 2 + (unsigned)(r->rng % (l->backoff_ms / 2 + 1));
    l->backoff_ms = l->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : l->backoff_ms * 2;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    event_add(l->retry, &tv);
}

static void link_down(struct link *l, const char *why)
{
    bool was_up = l->up;

    l->ac = NULL;
    l->up = false;
    l->subscribed = 0;
    l->pending = 0;
    event_del(l->connect_timeout);
    if (!l->logged_down) {
        log_msg(was_up ? LOG_WARN : LOG_WARN, NULL, "redis %s down: %s; reconnecting", link_name(l),
                why);
        l->logged_down = true;
    }
    if (!l->r->w->draining || l->kind == LINK_PUB)
        link_schedule_retry(l);
}

static void link_up(struct link *l)
{
    if (l->up)
        return;
    l->up = true;
    l->backoff_ms = BACKOFF_MIN_MS;
    if (l->logged_down || l->r->w->slot->redis.reconnects > 0)
        l->r->w->slot->redis.reconnects++;
    log_msg(LOG_NOTICE, NULL, "redis %s up%s", link_name(l),
            l->kind == LINK_SUB ? " (subscribed)" : "");
    l->logged_down = false;
}

static void on_announce(evutil_socket_t fd, short what, void *arg);
static void pub_command_sent(struct link *l);
static void on_pub_reply(redisAsyncContext *ac, void *reply, void *priv);

/* Sends what was published while the publisher was down, in order. */
static void queue_flush(struct wredis *r)
{
    struct queued *q = r->q_head;

    r->q_head = r->q_tail = NULL;
    r->q_msgs = r->q_bytes = 0;
    while (q != NULL) {
        struct queued *next = q->next;
        redisAsyncCommand(r->pub.ac, on_pub_reply, NULL, "PUBLISH %b %b", q->data, q->chan_len,
                          q->data + q->chan_len, q->len);
        pub_command_sent(&r->pub);
        r->w->slot->redis.published++;
        free(q);
        q = next;
    }
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct link *l = ac->data;

    event_del(l->connect_timeout);
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback. */
        link_down(l, ac->errstr[0] ? ac->errstr : "connect failed");
        return;
    }
    if (l->kind == LINK_PUB) {
        link_up(l);
        queue_flush(l->r);
        on_announce(-1, 0, l->r); /* be listed at once, not at the next refresh */
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct link *l = ac->data;

    (void)status;
    if (l->ac != ac)
        return;
    link_down(l, ac->errstr[0] ? ac->errstr : "connection closed");
}

/* A reply to AUTH or SELECT: an error means this URL cannot work; drop and retry. */
static void on_setup_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    redisReply *rep = reply;
    struct link *l = ac->data;

    (void)priv;
    if (rep != NULL && rep->type == REDIS_REPLY_ERROR) {
        log_limited(LOG_ERROR, NULL, "redis %s setup refused: %s", link_name(l), rep->str);
        redisAsyncDisconnect(ac);
    }
}

static void on_sub_message(redisAsyncContext *ac, void *reply, void *priv)
{
    redisReply *rep = reply;
    struct link *l = ac->data;

    (void)priv;
    if (rep == NULL)
        return;
    if (rep->type == REDIS_REPLY_ERROR) {
        log_limited(LOG_ERROR, NULL, "redis SUBSCRIBE refused: %s", rep->str);
        redisAsyncDisconnect(ac);
        return;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
        rep->element[0]->type != REDIS_REPLY_STRING)
        return;
    if (strcmp(rep->element[0]->str, "subscribe") == 0) {
        if (++l->subscribed == 2)
            link_up(l);
        return;
    }
    if (strcmp(rep->element[0]->str, "message") == 0 && rep->element[2]->type == REDIS_REPLY_STRING)
        apply_order_text(l->r->w, rep->element[2]->str, rep->element[2]->len);
}

static void on_pub_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct link *l = ac->data;

    (void)reply;
    (void)priv;
    if (l->pending > 0)
        l->pending--;
    l->last_reply = mono_ms();
}

static void on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct link *l = arg;
    redisAsyncContext *ac = l->ac;

    (void)fd;
    (void)what;
    if (ac == NULL || (ac->c.flags & REDIS_CONNECTED))
        return;
    l->ac = NULL; /* not connected: hiredis calls no disconnect callback */
    redisAsyncFree(ac);
    link_down(l, "connect timeout");
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    link_connect(arg);
}

static void link_connect(struct link *l)
{
    struct wredis *r = l->r;
    struct timeval tv = {CONNECT_TIMEOUT_MS / 1000, (CONNECT_TIMEOUT_MS % 1000) * 1000};
    redisAsyncContext *ac;

    if (l->ac != NULL || (r->w->draining && l->kind == LINK_SUB))
        return;
    ac = r->url.path != NULL ? redisAsyncConnectUnix(r->url.path)
                             : redisAsyncConnect(r->url.host, r->url.port);
    if (ac == NULL || ac->err) {
        if (ac != NULL) {
            log_limited(LOG_WARN, NULL, "redis %s: %s", link_name(l), ac->errstr);
            redisAsyncFree(ac);
        }
        link_down(l, "cannot create a connection");
        return;
    }
    ac->data = l;
    if (redisLibeventAttach(ac, r->w->base) != REDIS_OK) {
        redisAsyncFree(ac);
        link_down(l, "cannot attach to the event loop");
        return;
    }
    l->ac = ac;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    redisEnableKeepAlive(&ac->c);
    event_add(l->connect_timeout, &tv);
    /* Queued now, written once connected. */
    if (r->url.password != NULL) {
        if (r->url.user != NULL)
            redisAsyncCommand(ac, on_setup_reply, NULL, "AUTH %s %s", r->url.user, r->url.password);
        else
            redisAsyncCommand(ac, on_setup_reply, NULL, "AUTH %s", r->url.password);
    }
    if (l->kind == LINK_SUB) {
        redisAsyncCommand(ac, on_sub_message, NULL, "SUBSCRIBE %s", r->fleet_channel);
        redisAsyncCommand(ac, on_sub_message, NULL, "SUBSCRIBE %s", r->gw_channel);
    } else if (r->url.db != 0) {
        redisAsyncCommand(ac, on_setup_reply, NULL, "SELECT %d", r->url.db);
    }
}

static void pub_command_sent(struct link *l)
{
    if (l->pending++ == 0)
        l->last_reply = mono_ms();
}

static void on_announce(evutil_socket_t fd, short what, void *arg)
{
    struct wredis *r = arg;
    struct worker *w = r->w;
    struct link *l = &r->pub;
    char val[512];

    (void)fd;
    (void)what;
    if (l->up && l->pending > 0 && mono_ms() - l->last_reply > STUCK_MS) {
        /* Redis stopped answering: start over rather than queue forever. */
        redisAsyncContext *ac = l->ac;
        log_msg(LOG_WARN, NULL, "redis publisher stuck (%u commands waiting); reconnecting",
                l->pending);
        redisAsyncFree(ac); /* calls on_disconnect, which schedules the retry */
        return;
    }
    if (!l->up)
        return;
    snprintf(val, sizeof(val),
             "{\"gateway\":\"%s\",\"worker\":%d,\"pid\":%d,\"conns\":%zu,\"draining\":%s,"
             "\"redis\":%s,\"ts\":%lld}",
             w->cfg->id, w->num, (int)getpid(), w->reg.ids_count, w->draining ? "true" : "false",
             r->sub.up ? "true" : "false", (long long)time(NULL));
    redisAsyncCommand(l->ac, on_pub_reply, NULL, "SET %s %s EX %d", r->announce_key, val,
                      ANNOUNCE_TTL_S);
    pub_command_sent(l);
}

static void link_init(struct wredis *r, struct link *l, enum link_kind kind)
{
    l->r = r;
    l->kind = kind;
    l->backoff_ms = BACKOFF_MIN_MS;
    l->retry = evtimer_new(r->w->base, on_retry, l);
    l->connect_timeout = evtimer_new(r->w->base, on_connect_timeout, l);
}

int wredis_start(struct worker *w)
{
    struct wredis *r = calloc(1, sizeof(*r));
    struct timeval every = {ANNOUNCE_EVERY_MS / 1000, 0};
    char err[256];

    if (r == NULL)
        return -1;
    r->w = w;
    if (redis_url_parse(w->cfg->redis, &r->url, err, sizeof(err)) < 0) {
        log_msg(LOG_ERROR, NULL, "--redis %s: %s", w->cfg->redis, err);
        free(r);
        return -1;
    }
    snprintf(r->fleet_channel, sizeof(r->fleet_channel), "%s", w->cfg->channel);
    snprintf(r->gw_channel, sizeof(r->gw_channel), "%s:%s", w->cfg->channel, w->cfg->id);
    snprintf(r->announce_key, sizeof(r->announce_key), "%s:gw:%s:%d", w->cfg->channel, w->cfg->id,
             w->num);
    if (getrandom(&r->rng, sizeof(r->rng), 0) != sizeof(r->rng) || r->rng == 0)
        r->rng = (uint64_t)getpid() * 2654435761u + 1;
    link_init(r, &r->sub, LINK_SUB);
    link_init(r, &r->pub, LINK_PUB);
    r->announce = event_new(w->base, -1, EV_PERSIST, on_announce, r);
    if (r->sub.retry == NULL || r->sub.connect_timeout == NULL || r->pub.retry == NULL ||
        r->pub.connect_timeout == NULL || r->announce == NULL ||
        event_add(r->announce, &every) < 0) {
        redis_url_cleanup(&r->url);
        free(r);
        return -1;
    }
    w->redis = r;
    link_connect(&r->sub);
    link_connect(&r->pub);
    return 0;
}

bool wredis_is_subscribed(const struct worker *w)
{
    return w->redis != NULL && w->redis->sub.up;
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

    if (r->pub.up) {
        redisAsyncCommand(r->pub.ac, on_pub_reply, NULL, "PUBLISH %s %b", channel, msg, len);
        pub_command_sent(&r->pub);
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

void wredis_stop(struct worker *w)
{
    struct wredis *r = w->redis;

    if (r == NULL)
        return;
    event_del(r->announce);
    if (r->sub.ac != NULL) {
        redisAsyncContext *ac = r->sub.ac;
        r->sub.ac = NULL;
        redisAsyncDisconnect(ac);
    }
    event_del(r->sub.retry);
    if (r->pub.up) {
        redisAsyncCommand(r->pub.ac, on_pub_reply, NULL, "DEL %s", r->announce_key);
        pub_command_sent(&r->pub);
    }
}
