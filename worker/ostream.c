#include "worker/ostream.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/redis_url.h"
#include "common/order.h"
#include "worker/apply.h"
#include "worker/redis.h"
#include "worker/worker.h"

#define READ_COUNT_MAX 256         /* entries per XREAD */
#define READ_BYTES     (64u << 20) /* ... fewer when orders may be large (send orders) */
#define BLOCK_MIN_MS   10

struct ostream {
    struct worker *w;
    struct rlink link;
    uint64_t last_ms;   /* the newest entry id read: ms part */
    uint64_t last_seq;  /* and sequence part */
    bool placed;        /* last_ms/last_seq hold a position (after the first TIME) */
    long long start_ms; /* Unix ms (our clock) when the worker started */
    long long skew_ms;  /* Redis's clock minus ours, from the last TIME */
    uint32_t block_ms;
    unsigned count;             /* entries per XREAD: READ_COUNT_MAX, or fewer so that that many
                                   orders of the longest text taken stay within READ_BYTES */
    struct redis_url url;       /* in a cluster: where link connects (wredis_locate) */
    struct rlink_static direct; /* in a cluster: reads url */
};

static void on_read(redisAsyncContext *ac, void *reply, void *priv);

static void read_next(struct ostream *s)
{
    char from[48];

    if (!s->link.up || s->link.ac == NULL || s->w->draining)
        return; /* a draining worker takes no more orders */
    snprintf(from, sizeof(from), "%" PRIu64 "-%" PRIu64, s->last_ms, s->last_seq);
    if (redisAsyncCommand(s->link.ac, on_read, NULL, "XREAD COUNT %u BLOCK %u STREAMS %s %s",
                          s->count, s->block_ms, s->w->cfg->orders_stream, from) != REDIS_OK) {
        rlink_fail(&s->link, RLINK_LOST, "cannot queue XREAD");
        return;
    }
    rlink_expect(&s->link);
}

/* "ms-seq" → its two parts. Returns 0, or -1 when it is not a stream id. */
static int parse_id(const char *p, size_t len, uint64_t *ms, uint64_t *seq)
{
    char buf[48], *end;

    if (len == 0 || len >= sizeof(buf))
        return -1;
    memcpy(buf, p, len);
    buf[len] = '\0';
    if (buf[0] < '0' || buf[0] > '9')
        return -1;
    *ms = strtoull(buf, &end, 10);
    if (*end != '-' || end[1] < '0' || end[1] > '9')
        return -1;
    *seq = strtoull(end + 1, &end, 10);
    return *end == '\0' ? 0 : -1;
}

static bool is_str(const redisReply *r)
{
    return r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

/* One entry: [id, [field, value, ...]]. */
static void entry(struct ostream *s, const redisReply *e, long long now_redis)
{
    struct worker *w = s->w;
    const redisReply *fields;
    uint64_t ms, seq;

    w->slot->ostream.entries++;
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || !is_str(e->element[0]) ||
        parse_id(e->element[0]->str, e->element[0]->len, &ms, &seq) < 0) {
        w->slot->ostream.bad++;
        log_limited(LOG_WARN, NULL, "orders stream: a malformed entry skipped");
        return;
    }
    if (ms < s->last_ms || (ms == s->last_ms && seq <= s->last_seq))
        return; /* read already: XREAD never gives it, but a position is never moved back */
    s->last_ms = ms;
    s->last_seq = seq;
    if (now_redis - (long long)ms > (long long)w->cfg->orders_max_age_ms) {
        w->slot->ostream.stale++;
        log_limited(LOG_WARN, NULL,
                    "orders stream: entry %" PRIu64 "-%" PRIu64 " skipped: %lld ms old, more "
                    "than --orders-max-age %u",
                    ms, seq, now_redis - (long long)ms, w->cfg->orders_max_age_ms);
        return;
    }
    fields = e->element[1];
    for (size_t i = 0; fields->type == REDIS_REPLY_ARRAY && i + 1 < fields->elements; i += 2) {
        const redisReply *f = fields->element[i], *v = fields->element[i + 1];
        if (is_str(f) && is_str(v) && f->len == 5 && memcmp(f->str, "order", 5) == 0) {
            w->slot->ostream.orders++;
            apply_stream_order_text(w, v->str, v->len);
            return;
        }
    }
    w->slot->ostream.bad++;
    log_limited(LOG_WARN, NULL,
                "orders stream: entry %" PRIu64 "-%" PRIu64 " skipped: no field \"order\"", ms,
                seq);
}

/* The answer to XREAD: nil when the block passed without entries, else
 * [[stream, [entry, ...]]]. */
static void on_read(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rlink *l = rlink_of(ac);
    redisReply *rep = reply;
    struct ostream *s;

    (void)priv;
    if (l == NULL || rep == NULL)
        return;
    s = l->owner;
    rlink_heard(l, 1);
    if (rep->type == REDIS_REPLY_ERROR) {
        rlink_fail(l, RLINK_REFUSED, rep->str);
        return;
    }
    if (rep->type == REDIS_REPLY_ARRAY) {
        long long now_redis = unix_ms() + s->skew_ms;
        for (size_t i = 0; i < rep->elements; i++) {
            const redisReply *st = rep->element[i];
            if (st->type != REDIS_REPLY_ARRAY || st->elements != 2 ||
                st->element[1]->type != REDIS_REPLY_ARRAY)
                continue;
            for (size_t k = 0; k < st->element[1]->elements; k++) {
                entry(s, st->element[1]->element[k], now_redis);
                if (rlink_of(ac) != l)
                    return; /* an order drained the worker and closed the link */
            }
        }
    }
    read_next(s);
}

/* TIME: Redis's clock, for the start position and the entries' age. */
static void on_time(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rlink *l = rlink_of(ac);
    redisReply *rep = reply;
    struct ostream *s;
    long long redis_ms;

    (void)priv;
    if (l == NULL || rep == NULL)
        return;
    s = l->owner;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 || !is_str(rep->element[0]) ||
        !is_str(rep->element[1])) {
        rlink_fail(l, RLINK_REFUSED, rep->type == REDIS_REPLY_ERROR ? rep->str : "bad TIME reply");
        return;
    }
    redis_ms = strtoll(rep->element[0]->str, NULL, 10) * 1000 +
               strtoll(rep->element[1]->str, NULL, 10) / 1000;
    s->skew_ms = redis_ms - unix_ms();
    if (!s->placed) {
        /* Just before the worker's start on Redis's clock: every entry from then on. */
        long long at = s->start_ms + s->skew_ms;
        s->last_ms = at > 0 ? (uint64_t)at - 1 : 0;
        s->last_seq = UINT64_MAX;
        s->placed = true;
        log_msg(LOG_INFO, NULL,
                "orders stream %s: reading from %" PRIu64 "-%" PRIu64 " skew_ms=%lld",
                s->w->cfg->orders_stream, s->last_ms, s->last_seq, s->skew_ms);
    }
    rlink_set_up(l);
}

static int stream_setup(struct rlink *l)
{
    return redisAsyncCommand(l->ac, on_time, NULL, "TIME") == REDIS_OK ? 0 : -1;
}

static bool stream_wanted(struct rlink *l)
{
    return !((struct ostream *)l->owner)->w->draining;
}

static void stream_up(struct rlink *l)
{
    struct ostream *s = l->owner;

    s->w->slot->ostream.up = 1;
    read_next(s);
}

static void stream_down(struct rlink *l)
{
    ((struct ostream *)l->owner)->w->slot->ostream.up = 0;
}

/* In a Redis Cluster: the master of the stream's slot. */
static int stream_locate(struct rlink *l)
{
    struct ostream *s = l->owner;

    return wredis_locate(s->w, s->w->cfg->orders_stream, &s->url);
}

static const struct rlink_ops stream_ops = {
    .name = "orders stream",
    .up_note = "",
    .awaits = "XREAD answers",
    .setup = stream_setup,
    .wanted = stream_wanted,
    .locate = stream_locate,
    .up = stream_up,
    .down = stream_down,
};

int ostream_start(struct worker *w)
{
    struct ostream *s;
    struct rlink_resolver *res;
    uint32_t t = w->cfg->redis_timeout_ms;

    if (w->cfg->orders_stream[0] == '\0')
        return 0;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -1;
    s->w = w;
    s->start_ms = unix_ms();
    s->block_ms = t / 3 > BLOCK_MIN_MS ? t / 3 : BLOCK_MIN_MS;
    {
        struct order_limits lim = {(size_t)w->cfg->max_send, NULL};
        size_t n = READ_BYTES / order_max_text(&lim);
        s->count = n < 1 ? 1 : n > READ_COUNT_MAX ? READ_COUNT_MAX : (unsigned)n;
    }
    /* The worker's resolver (redis.c): with a sentinel:// URL the stream is read from
     * the master of the moment, from the last entry read, through a failover; in a
     * cluster, from the master of the stream's key. */
    res = wredis_link_resolver(w, &s->url, &s->direct);
    if (res == NULL ||
        rlink_init(&s->link, &stream_ops, s, w->base, res, t, &w->slot->ostream.link) < 0) {
        free(s);
        return -1;
    }
    w->ostream = s;
    rlink_start(&s->link);
    return 0;
}

bool ostream_is_up(const struct worker *w)
{
    return w->ostream == NULL || w->ostream->link.up;
}

void ostream_stop(struct worker *w)
{
    if (w->ostream == NULL)
        return;
    w->slot->ostream.up = 0;
    rlink_close(&w->ostream->link);
}
