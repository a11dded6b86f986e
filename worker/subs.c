#include "worker/subs.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "common/clock.h"
#include "common/log.h"
#include "worker/rlink.h"

/*
 * Where a channel is:
 *   PENDING    wanted, not sent on the current connection: in s->pending
 *   SENT       SUBSCRIBE sent on the current connection (confirmed or not), in use
 *   IDLE       SENT, but no member left since since_ms: in s->idle, oldest first
 *   UNSUBBING  UNSUBSCRIBE sent, not confirmed yet: freed on the confirmation, or sent
 *              again then if a member came back meanwhile. A SUBSCRIBE is never
 *              pipelined behind an unconfirmed UNSUBSCRIBE of the same channel: hiredis
 *              would drop the channel's callback on the unsubscribe reply.
 * A channel neither wanted nor sent is freed at once.
 */
enum sub_state {
    SUB_PENDING,
    SUB_SENT,
    SUB_IDLE,
    SUB_UNSUBBING,
};

struct sub {
    struct sub *hnext; /* hash chain */
    struct sub *prev;  /* in pending or idle */
    struct sub *next;
    uint64_t hash;
    long long since_ms; /* IDLE: when its last member left */
    uint32_t refs;
    uint8_t state;  /* enum sub_state */
    size_t len;     /* bytes in channel */
    char channel[]; /* prefix + group, NUL-terminated */
};

struct sub_list {
    struct sub *head;
    struct sub *tail;
};

struct subs {
    struct rlink *link;       /* borrowed */
    subs_sharded_fn *sharded; /* NULL, or in a cluster: takes every (un)subscription */
    void *sharded_arg;
    redisCallbackFn *fn;
    void *fn_arg;
    struct subs_stats *st; /* borrowed: in the worker's shared memory slot */
    struct event *flush;   /* owned: end of the loop turn */
    struct event *linger;  /* owned: the oldest idle channel's time is up */
    struct sub **buckets;  /* owned */
    size_t cap;            /* power of two */
    size_t count;
    uint64_t seed;
    struct sub_list pending;
    struct sub_list idle;
    size_t inflight;  /* channels sent on this connection, not yet confirmed */
    bool flush_armed; /* flush is active: it runs once this turn */
    size_t prefix_len;
    char prefix[];
};

/* FNV-1a, seeded: group names come from clients and backends. */
static uint64_t hash_name(uint64_t seed, const char *s)
{
    uint64_t h = 14695981039346656037ull ^ seed;

    for (; *s != '\0'; s++) {
        h ^= (uint8_t)*s;
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static void list_push(struct sub_list *l, struct sub *e)
{
    e->next = NULL;
    e->prev = l->tail;
    if (l->tail != NULL)
        l->tail->next = e;
    else
        l->head = e;
    l->tail = e;
}

static void list_del(struct sub_list *l, struct sub *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        l->head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        l->tail = e->prev;
    e->prev = e->next = NULL;
}

static void schedule(struct subs *s)
{
    if (s->flush_armed)
        return;
    s->flush_armed = true;
    event_active(s->flush, EV_TIMEOUT, 0);
}

/* The entry for group, or NULL; *hash gets its hash. */
static struct sub *find(struct subs *s, const char *group, uint64_t *hash)
{
    uint64_t h = hash_name(s->seed, group);

    *hash = h;
    for (struct sub *e = s->buckets[h & (s->cap - 1)]; e != NULL; e = e->hnext)
        if (e->hash == h && strcmp(e->channel + s->prefix_len, group) == 0)
            return e;
    return NULL;
}

/* A failed resize only makes chains longer. */
static void grow(struct subs *s)
{
    size_t cap = s->cap * 2;
    struct sub **t = calloc(cap, sizeof(*t));

    if (t == NULL)
        return;
    for (size_t i = 0; i < s->cap; i++) {
        struct sub *e = s->buckets[i];
        while (e != NULL) {
            struct sub *next = e->hnext;
            e->hnext = t[e->hash & (cap - 1)];
            t[e->hash & (cap - 1)] = e;
            e = next;
        }
    }
    free(s->buckets);
    s->buckets = t;
    s->cap = cap;
}

/* Unhashes e (in no list) and frees it. */
static void drop(struct subs *s, struct sub *e)
{
    for (struct sub **pp = &s->buckets[e->hash & (s->cap - 1)]; *pp != NULL; pp = &(*pp)->hnext) {
        if (*pp == e) {
            *pp = e->hnext;
            break;
        }
    }
    s->count--;
    free(e);
}

void subs_ref(struct subs *s, const char *group)
{
    uint64_t h;
    struct sub *e = find(s, group, &h);
    size_t glen;

    if (e != NULL) {
        if (e->refs++ == 0 && e->state == SUB_IDLE) {
            list_del(&s->idle, e); /* back within the linger time: Redis hears nothing */
            e->state = SUB_SENT;
        }
        return;
    }
    glen = strlen(group);
    e = malloc(sizeof(*e) + s->prefix_len + glen + 1);
    if (e == NULL) {
        s->st->oom++;
        log_limited(LOG_WARN, NULL, "out of memory for group channel %s%s: its orders miss us",
                    s->prefix, group);
        return;
    }
    e->hash = h;
    e->refs = 1;
    e->state = SUB_PENDING;
    e->since_ms = 0;
    e->len = s->prefix_len + glen;
    memcpy(e->channel, s->prefix, s->prefix_len);
    memcpy(e->channel + s->prefix_len, group, glen + 1);
    e->hnext = s->buckets[h & (s->cap - 1)];
    s->buckets[h & (s->cap - 1)] = e;
    if (++s->count > s->cap)
        grow(s);
    list_push(&s->pending, e);
    schedule(s);
}

void subs_unref(struct subs *s, const char *group)
{
    uint64_t h;
    struct sub *e = find(s, group, &h);

    if (e == NULL || e->refs == 0 || --e->refs > 0)
        return; /* NULL: its ref ran out of memory */
    if (e->state == SUB_UNSUBBING)
        return;                    /* its confirmation frees it */
    if (e->state == SUB_PENDING) { /* never sent: nothing to take back */
        list_del(&s->pending, e);
        drop(s, e);
        return;
    }
    e->state = SUB_IDLE;
    e->since_ms = mono_ms();
    list_push(&s->idle, e);
    if (!event_pending(s->linger, EV_TIMEOUT, NULL)) {
        struct timeval tv = {SUBS_LINGER_MS / 1000, (SUBS_LINGER_MS % 1000) * 1000};
        event_add(s->linger, &tv);
    }
}

/* Sends one command of argv[0] and up to SUBS_BATCH channels taken from the head of
 * from: SUBSCRIBE moves them to SENT, UNSUBSCRIBE to UNSUBBING. With unsubscribe, only
 * channels idle since before cutoff are taken. A batch waits until the confirmations
 * awaited leave room for all of it, so commands stay whole while Redis catches up.
 * Returns how many channels were sent, 0 when none was due, there was no room, or the
 * command could not be queued (they stay). */
/* In a cluster, cluster.c subscribes each channel on its slot's master and follows it
 * there: a channel is handed over (SENT) or taken back (freed) at once. */
static size_t send_sharded(struct subs *s, struct sub_list *from, bool subscribe, long long cutoff)
{
    size_t n = 0;
    struct sub *e;

    while ((e = from->head) != NULL && n < SUBS_BATCH) {
        if (!subscribe && e->since_ms > cutoff)
            break;
        list_del(from, e);
        n++;
        if (!subscribe) {
            s->sharded(s->sharded_arg, e->channel, false);
            s->st->unsubscribes++;
            if (s->st->channels > 0)
                s->st->channels--;
            drop(s, e);
            continue;
        }
        if (s->sharded(s->sharded_arg, e->channel, true) < 0) {
            s->st->oom++;
            log_limited(LOG_WARN, NULL, "out of memory for group channel %s: its orders miss us",
                        e->channel);
            e->state = SUB_SENT; /* missed until the group empties and comes back */
            continue;
        }
        e->state = SUB_SENT;
        s->st->subscribes++;
        s->st->channels++;
    }
    return n;
}

static size_t send_batch(struct subs *s, struct sub_list *from, bool subscribe, long long cutoff)
{
    const char *argv[SUBS_BATCH + 1];
    size_t argvlen[SUBS_BATCH + 1];
    redisAsyncContext *ac = s->link->ac;
    size_t n = 0, room = SUBS_INFLIGHT - s->inflight;
    struct sub *e = from->head;
    int rc;

    if (s->sharded != NULL)
        return send_sharded(s, from, subscribe, cutoff);
    argv[0] = subscribe ? "SUBSCRIBE" : "UNSUBSCRIBE";
    argvlen[0] = strlen(argv[0]);
    for (; e != NULL && n < SUBS_BATCH; e = e->next) {
        if (!subscribe && e->since_ms > cutoff)
            break;
        argv[n + 1] = e->channel;
        argvlen[n + 1] = e->len;
        n++;
    }
    if (n == 0 || n > room)
        return 0;
    /* hiredis copies the arguments into its output buffer before returning. */
    if (subscribe)
        rc = redisAsyncCommandArgv(ac, s->fn, s->fn_arg, (int)n + 1, argv, argvlen);
    else
        rc = redisAsyncCommandArgv(ac, NULL, NULL, (int)n + 1, argv, argvlen);
    if (rc != REDIS_OK) {
        log_limited(LOG_WARN, NULL, "redis subscriber: cannot queue %s of %zu group channels",
                    argv[0], n);
        return 0;
    }
    s->inflight += n;
    for (size_t i = 0; i < n; i++) {
        e = from->head;
        list_del(from, e);
        e->state = subscribe ? SUB_SENT : SUB_UNSUBBING;
    }
    if (subscribe)
        s->st->subscribes++;
    else
        s->st->unsubscribes++;
    return n;
}

/* What changed this turn goes out now: expired idle channels first (their
 * UNSUBSCRIBE), then new ones, as long as confirmations awaited stay under bound. */
static void flush(struct subs *s)
{
    long long now = mono_ms(), cutoff = now - SUBS_LINGER_MS;

    s->flush_armed = false;
    if (s->link->ac == NULL && s->sharded == NULL) {
        /* No connection: an expired channel is subscribed nowhere; the rest waits for
         * subs_link_new(). */
        while (s->idle.head != NULL && s->idle.head->since_ms <= cutoff) {
            struct sub *e = s->idle.head;
            list_del(&s->idle, e);
            drop(s, e);
        }
    } else {
        while (send_batch(s, &s->idle, false, cutoff) > 0)
            ;
        while (send_batch(s, &s->pending, true, 0) > 0)
            ;
    }
    if (s->idle.head != NULL && !event_pending(s->linger, EV_TIMEOUT, NULL)) {
        long long wait = s->idle.head->since_ms + SUBS_LINGER_MS - now;
        struct timeval tv;
        if (wait < 1 && (s->link->ac != NULL || s->sharded != NULL))
            return; /* due, waiting for room: a confirmation flushes again */
        if (wait < 1)
            wait = 1;
        tv.tv_sec = (time_t)(wait / 1000);
        tv.tv_usec = (suseconds_t)(wait % 1000) * 1000;
        event_add(s->linger, &tv);
    }
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    flush(arg);
}

void subs_link_new(struct subs *s)
{
    s->inflight = 0;
    s->st->channels = 0;
    for (size_t i = 0; i < s->cap; i++) {
        struct sub *e = s->buckets[i];
        while (e != NULL) {
            struct sub *next = e->hnext;
            if (e->state == SUB_IDLE) /* not subscribed on the new connection */
                list_del(&s->idle, e);
            if (e->refs == 0) {
                drop(s, e);
            } else if (e->state != SUB_PENDING) {
                e->state = SUB_PENDING;
                list_push(&s->pending, e);
            }
            e = next;
        }
    }
    flush(s); /* pipelined right behind the setup's SUBSCRIBE */
}

void subs_link_down(struct subs *s)
{
    s->inflight = 0;
    s->st->channels = 0;
}

bool subs_confirmed(struct subs *s, const char *channel, size_t len, bool subscribed)
{
    const char *group = subs_group_of(s, channel, len);
    struct sub *e;
    uint64_t h;

    if (group == NULL)
        return false;
    if (subscribed) {
        s->st->channels++;
    } else {
        if (s->st->channels > 0)
            s->st->channels--;
        e = find(s, group, &h);
        if (e != NULL && e->state == SUB_UNSUBBING) {
            if (e->refs == 0) {
                drop(s, e);
            } else { /* a member came back while it was on its way out */
                e->state = SUB_PENDING;
                list_push(&s->pending, e);
            }
        }
    }
    if (s->inflight > 0)
        s->inflight--;
    if ((s->pending.head != NULL || s->idle.head != NULL) && s->inflight < SUBS_INFLIGHT)
        schedule(s); /* at most once a turn: what waited for room goes out */
    return true;
}

void subs_set_sharded(struct subs *s, subs_sharded_fn *fn, void *arg)
{
    s->sharded = fn;
    s->sharded_arg = arg;
}

const char *subs_group_of(const struct subs *s, const char *channel, size_t len)
{
    if (len <= s->prefix_len || memcmp(channel, s->prefix, s->prefix_len) != 0 ||
        memchr(channel, '\0', len) != NULL)
        return NULL;
    return channel + s->prefix_len;
}

struct subs *subs_new(struct event_base *base, struct rlink *link, const char *prefix,
                      redisCallbackFn *fn, void *fn_arg, struct subs_stats *st)
{
    size_t plen = strlen(prefix);
    struct subs *s = calloc(1, sizeof(*s) + plen + 1);

    if (s == NULL)
        return NULL;
    s->link = link;
    s->fn = fn;
    s->fn_arg = fn_arg;
    s->st = st;
    s->prefix_len = plen;
    memcpy(s->prefix, prefix, plen + 1);
    if (getrandom(&s->seed, sizeof(s->seed), 0) != sizeof(s->seed))
        s->seed = (uint64_t)getpid() * 0x9e3779b97f4a7c15u;
    s->cap = 256;
    s->buckets = calloc(s->cap, sizeof(*s->buckets));
    s->flush = event_new(base, -1, 0, on_flush, s);
    s->linger = evtimer_new(base, on_flush, s);
    if (s->buckets == NULL || s->flush == NULL || s->linger == NULL) {
        if (s->flush != NULL)
            event_free(s->flush);
        if (s->linger != NULL)
            event_free(s->linger);
        free(s->buckets);
        free(s);
        return NULL;
    }
    st->channels = 0;
    return s;
}
