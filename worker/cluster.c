#include "worker/cluster.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/random.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/redis_url.h"
#include "common/slot.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 1000
#define CHECK_MS       100
#define RELOG_MS       10000
#define BEAT_MAX_MS    1000
#define MAX_HOPS       5                    /* MOVED/ASK followed per command */
#define MAX_NODES      (4 * SLOT_MAX_NODES) /* addresses ever seen */
#define WAIT_MAX_MSGS  10000                /* commands kept while their master is unreachable */
#define WAIT_MAX_BYTES (8u << 20)

/* What an answer on a connection is for; answers come in the order of the requests. */
enum req_kind { REQ_AUTH, REQ_PING, REQ_SSUB, REQ_SUNSUB, REQ_NODES, REQ_CMD, REQ_ASKING };

struct req {
    struct req *next;
    long long sent_ms;
    uint8_t kind; /* enum req_kind */
    uint8_t hops; /* REQ_CMD: redirections so far */
    unsigned slot;
    cluster_reply_fn *cb; /* REQ_CMD: NULL for fire-and-forget */
    void *priv;
    char *cmd; /* REQ_CMD: owned, the formatted command, kept for a redirection */
    size_t cmdlen;
    char chan[]; /* REQ_SSUB, REQ_SUNSUB: the channel, NUL-terminated */
};

struct cnode;

/* One connection to one node; up once its PING (after AUTH) is answered. */
struct cconn {
    struct cluster *c;
    struct cnode *node;
    struct rlink_stats *st; /* borrowed */
    bool is_sub;
    bool up;
    bool was_up;
    struct bufferevent *bev; /* owned; NULL while down */
    redisReader *rd;         /* owned; with bev */
    struct req *head;        /* owned: answers awaited, oldest first */
    struct req *tail;
    struct event *retry; /* owned: the backoff wait */
    uint32_t backoff_ms;
    unsigned failures;
    long long down_ms;
    long long logged_ms;
    long long last_tx_ms;
    long long last_rx_ms; /* bytes last arrived: a connection delivering a backlog lives */
    char why[128];        /* reason of the last failure logged */
};

struct cnode {
    struct cnode *next;
    char host[SLOT_HOST_MAX];
    int port;
    char name[SLOT_HOST_MAX + 8]; /* host:port, in log lines */
    bool owns;                    /* a master with slots in the current map */
    struct cconn sub;
    struct cconn pub;
};

struct chan {
    struct chan *hnext;
    uint64_t hash;
    unsigned slot;
    struct cnode *node; /* SSUBSCRIBE sent on node->sub's current connection; NULL: not */
    bool confirmed;
    size_t len;
    char name[];
};

/* A fire-and-forget command whose master is unreachable now. */
struct waiting {
    struct waiting *next;
    unsigned slot;
    size_t cmdlen;
    char *cmd; /* owned */
};

struct cluster {
    struct event_base *base;     /* borrowed */
    const struct redis_url *url; /* borrowed */
    uint32_t timeout_ms;
    uint32_t beat_ms;
    cluster_msg_fn *fn;
    void *arg;
    void (*up_fn)(void *arg);
    struct cluster_stats *st;
    struct rlink_stats *sub_st;
    struct rlink_stats *pub_st;
    uint64_t *dropped;
    struct slot_map *map;                 /* owned: the current one */
    struct slot_map *next;                /* owned: parsed into, then swapped */
    struct cnode *bynode[SLOT_MAX_NODES]; /* map->nodes[i]'s node */
    bool have_map;
    char masters[1024]; /* the masters of the last map logged */
    char map_why[160];  /* the last reason a map could not be learned, logged */
    long long map_logged_ms;
    struct cnode *nodes; /* owned */
    size_t nnodes;
    struct cnode *refresh_from; /* the node asked last */
    bool refreshing;
    long long refreshed_ms;
    struct chan **buckets; /* owned */
    size_t cap;
    size_t count;
    size_t homeless; /* wanted channels not sent anywhere */
    uint64_t seed;
    uint64_t rng;
    struct waiting *w_head; /* owned */
    struct waiting *w_tail;
    size_t w_msgs;
    size_t w_bytes;
    struct event *tick; /* owned */
    bool paused;
    bool stopped;
};

static void conn_start(struct cconn *k);
static void place(struct cluster *c, struct chan *ch);
static void refresh_start(struct cluster *c);

static uint64_t hash_name(uint64_t seed, const char *s, size_t len)
{
    uint64_t h = 14695981039346656037ull ^ seed;

    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

/* Channels ---------------------------------------------------------------------------- */

static struct chan *chan_find(const struct cluster *c, const char *name, size_t len)
{
    uint64_t h = hash_name(c->seed, name, len);

    for (struct chan *ch = c->buckets[h & (c->cap - 1)]; ch != NULL; ch = ch->hnext)
        if (ch->hash == h && ch->len == len && memcmp(ch->name, name, len) == 0)
            return ch;
    return NULL;
}

/* A failed resize only makes chains longer. */
static void chan_grow(struct cluster *c)
{
    size_t cap = c->cap * 2;
    struct chan **t = calloc(cap, sizeof(*t));

    if (t == NULL)
        return;
    for (size_t i = 0; i < c->cap; i++) {
        struct chan *ch = c->buckets[i];
        while (ch != NULL) {
            struct chan *next = ch->hnext;
            ch->hnext = t[ch->hash & (cap - 1)];
            t[ch->hash & (cap - 1)] = ch;
            ch = next;
        }
    }
    free(c->buckets);
    c->buckets = t;
    c->cap = cap;
}

/* Calls f on every channel (f may not free it). */
static void chan_each(struct cluster *c, void (*f)(struct cluster *, struct chan *, void *),
                      void *arg)
{
    for (size_t i = 0; i < c->cap; i++)
        for (struct chan *ch = c->buckets[i], *next; ch != NULL; ch = next) {
            next = ch->hnext;
            f(c, ch, arg);
        }
}

/* Nodes ------------------------------------------------------------------------------- */

static void on_retry(evutil_socket_t fd, short what, void *arg);

static int conn_init(struct cconn *k, struct cluster *c, struct cnode *n, bool is_sub)
{
    k->c = c;
    k->node = n;
    k->is_sub = is_sub;
    k->st = is_sub ? c->sub_st : c->pub_st;
    k->backoff_ms = BACKOFF_MIN_MS;
    k->down_ms = mono_ms();
    k->retry = evtimer_new(c->base, on_retry, k);
    return k->retry != NULL ? 0 : -1;
}

/* The node at host:port, made when first seen; NULL when memory runs out or too many
 * addresses were seen. */
static struct cnode *node_get(struct cluster *c, const char *host, int port)
{
    struct cnode *n;

    for (n = c->nodes; n != NULL; n = n->next)
        if (n->port == port && strcmp(n->host, host) == 0)
            return n;
    if (c->nnodes >= MAX_NODES || strlen(host) >= sizeof(n->host))
        return NULL;
    n = calloc(1, sizeof(*n));
    if (n == NULL)
        return NULL;
    snprintf(n->host, sizeof(n->host), "%s", host);
    n->port = port;
    snprintf(n->name, sizeof(n->name), strchr(host, ':') != NULL ? "[%s]:%d" : "%s:%d", host, port);
    if (conn_init(&n->sub, c, n, true) < 0 || conn_init(&n->pub, c, n, false) < 0) {
        if (n->sub.retry != NULL)
            event_free(n->sub.retry);
        free(n);
        return NULL;
    }
    n->next = c->nodes;
    c->nodes = n;
    c->nnodes++;
    return n;
}

/* The master of slot in the current map, or NULL. */
static struct cnode *owner_of(const struct cluster *c, unsigned slot)
{
    int i = c->have_map ? slot_map_owner(c->map, slot) : -1;

    return i >= 0 ? c->bynode[i] : NULL;
}

/* A MOVED says slot is host:port's now: the map says so too until the next one. */
static struct cnode *map_redirect(struct cluster *c, unsigned slot, const char *host, int port)
{
    struct cnode *n = node_get(c, host, port);
    int i;

    if (n == NULL || !c->have_map)
        return n;
    i = slot_map_node(c->map, host, strlen(host), port);
    if (i < 0)
        return n;
    c->bynode[i] = n;
    if (c->map->owner[slot] == 0)
        c->map->covered++;
    c->map->owner[slot] = (uint16_t)(i + 1);
    n->owns = true;
    return n;
}

/* Requests ---------------------------------------------------------------------------- */

/* Writes cmd[0..len) on k's connection and records the answer awaited. chan (may be
 * NULL) is copied; cmd is taken (owned by the request) when take is set. Returns the
 * request, or NULL when memory runs out (nothing written; cmd not taken). */
static struct req *send_req(struct cconn *k, enum req_kind kind, char *cmd, size_t len, bool take,
                            const char *chan)
{
    size_t clen = chan != NULL ? strlen(chan) : 0;
    struct req *q;

    if (k->bev == NULL) /* stopped */
        return NULL;
    q = calloc(1, sizeof(*q) + clen + 1);
    if (q == NULL)
        return NULL;
    if (bufferevent_write(k->bev, cmd, len) < 0) {
        free(q);
        return NULL;
    }
    q->kind = (uint8_t)kind;
    q->sent_ms = k->last_tx_ms = mono_ms();
    if (take) {
        q->cmd = cmd;
        q->cmdlen = len;
    }
    if (clen > 0)
        memcpy(q->chan, chan, clen);
    if (k->tail != NULL)
        k->tail->next = q;
    else
        k->head = q;
    k->tail = q;
    return q;
}

/* Formats and sends argv as a request of kind (chan as in send_req()). Returns 0 or -1. */
static int send_argv(struct cconn *k, enum req_kind kind, int argc, const char **argv,
                     const size_t *argvlen, const char *chan)
{
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    struct req *q;

    if (len < 0)
        return -1;
    q = send_req(k, kind, cmd, (size_t)len, false, chan);
    redisFreeCommand(cmd);
    return q != NULL ? 0 : -1;
}

static int send_chan(struct cconn *k, bool subscribe, const char *chan)
{
    const char *argv[2] = {subscribe ? "SSUBSCRIBE" : "SUNSUBSCRIBE", chan};
    size_t argvlen[2] = {strlen(argv[0]), strlen(chan)};

    return send_argv(k, subscribe ? REQ_SSUB : REQ_SUNSUB, 2, argv, argvlen, chan);
}

static struct req *pop_req(struct cconn *k)
{
    struct req *q = k->head;

    if (q != NULL) {
        k->head = q->next;
        if (k->head == NULL)
            k->tail = NULL;
    }
    return q;
}

static void free_req(struct req *q)
{
    if (q->cmd != NULL)
        redisFreeCommand(q->cmd);
    free(q);
}

/* Keeps a fire-and-forget command (taken) for when its master is reachable. */
static void wait_push(struct cluster *c, unsigned slot, char *cmd, size_t len)
{
    struct waiting *wt;

    if (c->w_msgs >= WAIT_MAX_MSGS || c->w_bytes + len > WAIT_MAX_BYTES ||
        (wt = malloc(sizeof(*wt))) == NULL) {
        (*c->dropped)++;
        log_limited(LOG_WARN, NULL,
                    "redis cluster: no master reachable for slot %u and the "
                    "queue is full: dropped a command",
                    slot);
        redisFreeCommand(cmd);
        return;
    }
    wt->next = NULL;
    wt->slot = slot;
    wt->cmd = cmd;
    wt->cmdlen = len;
    if (c->w_tail != NULL)
        c->w_tail->next = wt;
    else
        c->w_head = wt;
    c->w_tail = wt;
    c->w_msgs++;
    c->w_bytes += len;
}

/* The command connection to n, connected or connecting; NULL while it waits out its
 * backoff or cannot start. */
static struct cconn *pub_of(struct cnode *n)
{
    struct cconn *k = &n->pub;

    if (k->bev == NULL && !event_pending(k->retry, EV_TIMEOUT, NULL))
        conn_start(k);
    return k->bev != NULL ? k : NULL;
}

/* Sends cmd (taken) to node n (NULL: the slot's master), after ASKING when ask is set.
 * Returns 0, or -1 when there is no usable connection: then a command without cb is
 * kept for later, one with cb is freed. */
static int route(struct cluster *c, struct cnode *n, unsigned slot, cluster_reply_fn *cb,
                 void *priv, char *cmd, size_t len, uint8_t hops, bool ask)
{
    struct cconn *k;
    struct req *q;

    if (n == NULL)
        n = owner_of(c, slot);
    k = n != NULL && !c->stopped ? pub_of(n) : NULL;
    if (k != NULL && ask) {
        const char *argv[1] = {"ASKING"};
        size_t argvlen[1] = {6};
        if (send_argv(k, REQ_ASKING, 1, argv, argvlen, NULL) < 0)
            k = NULL;
    }
    if (k != NULL && (q = send_req(k, REQ_CMD, cmd, len, true, NULL)) != NULL) {
        q->cb = cb;
        q->priv = priv;
        q->slot = slot;
        q->hops = hops;
        return 0;
    }
    if (cb == NULL) {
        wait_push(c, slot, cmd, len);
        return 0;
    }
    redisFreeCommand(cmd);
    return -1;
}

/* Sends what waited, in order, as far as masters are reachable now. */
static void wait_flush(struct cluster *c)
{
    size_t n = c->w_msgs;

    while (n-- > 0 && c->w_head != NULL) {
        struct waiting *wt = c->w_head;
        c->w_head = wt->next;
        if (c->w_head == NULL)
            c->w_tail = NULL;
        c->w_msgs--;
        c->w_bytes -= wt->cmdlen;
        route(c, NULL, wt->slot, NULL, NULL, wt->cmd, wt->cmdlen, 0, false);
        free(wt);
    }
}

/* Connections ------------------------------------------------------------------------- */

static void log_failure(struct cconn *k, enum rlink_fail kind, bool was_up, const char *why)
{
    enum log_level level = kind == RLINK_REFUSED ? LOG_ERROR : LOG_WARN;
    const char *what = k->is_sub ? "shard subscriber" : "shard";
    long long now = mono_ms();

    if (was_up)
        log_msg(level, NULL, "redis %s %s down: %s (reconnecting)", what, k->node->name, why);
    else if (strcmp(why, k->why) != 0)
        log_msg(level, NULL, "redis %s %s: %s (retrying)", what, k->node->name, why);
    else if (now - k->logged_ms >= RELOG_MS)
        log_msg(level, NULL, "redis %s %s still down: %s attempts=%u down_ms=%lld", what,
                k->node->name, why, k->failures, now - k->down_ms);
    else
        return;
    snprintf(k->why, sizeof(k->why), "%s", why);
    k->logged_ms = now;
}

static void schedule_retry(struct cconn *k)
{
    struct cluster *c = k->c;
    struct timeval tv;
    uint32_t ms;

    /* Armed for every node, master or not: a seed that refuses (a wrong password) is
     * not asked again for the map before its backoff is over (pub_of()). */
    if (c->stopped || (k->is_sub && c->paused))
        return;
    c->rng ^= c->rng << 13;
    c->rng ^= c->rng >> 7;
    c->rng ^= c->rng << 17;
    ms = k->backoff_ms / 2 + (uint32_t)(c->rng % (k->backoff_ms / 2 + 1));
    k->backoff_ms = k->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : k->backoff_ms * 2;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    event_add(k->retry, &tv);
}

static void unplace(struct cluster *c, struct chan *ch, void *arg)
{
    if (ch->node != arg)
        return;
    if (ch->confirmed && c->st->channels > 0)
        c->st->channels--;
    ch->node = NULL;
    ch->confirmed = false;
    c->homeless++;
}

/* The connection is gone: counted, logged once, its awaited answers failed, its
 * channels homeless, a reconnect after the backoff and a new map soon. */
static void conn_fail(struct cconn *k, enum rlink_fail kind, const char *why)
{
    struct cluster *c = k->c;
    bool was_up = k->up;
    char copy[sizeof(k->why)];
    struct req *q;

    if (k->bev == NULL)
        return;
    snprintf(copy, sizeof(copy), "%s", why); /* why may live in a reply freed with rd */
    bufferevent_free(k->bev);
    redisReaderFree(k->rd);
    k->bev = NULL;
    k->rd = NULL;
    k->up = false;
    if (was_up) {
        k->down_ms = mono_ms();
        if (k->is_sub && c->st->shards > 0)
            c->st->shards--;
    }
    if (kind == RLINK_REFUSED)
        k->st->refused++;
    else if (kind == RLINK_TIMEOUT)
        k->st->timeouts++;
    k->failures++;
    log_failure(k, kind, was_up, copy);
    schedule_retry(k); /* first: a callback below that sends again finds it waiting */
    if (k->is_sub)
        chan_each(c, unplace, k->node);
    while ((q = pop_req(k)) != NULL) {
        if (q->kind == REQ_NODES)
            c->refreshing = false;
        if (q->kind == REQ_CMD && q->cb != NULL)
            q->cb(q->priv, NULL);
        else if (q->kind == REQ_CMD)
            (*c->dropped)++;
        free_req(q);
    }
    c->refreshed_ms = 0; /* a new map at the next check */
}

static void conn_up(struct cconn *k)
{
    struct cluster *c = k->c;
    long long now = mono_ms();

    k->up = true;
    k->backoff_ms = BACKOFF_MIN_MS;
    if (k->was_up)
        k->st->reconnects++;
    if (k->is_sub)
        c->st->shards++;
    if (k->was_up || k->failures > 0)
        log_msg(LOG_NOTICE, NULL, "redis %s %s up attempts=%u down_ms=%lld",
                k->is_sub ? "shard subscriber" : "shard", k->node->name, k->failures + 1,
                now - k->down_ms);
    else
        log_msg(LOG_NOTICE, NULL, "redis %s %s up", k->is_sub ? "shard subscriber" : "shard",
                k->node->name);
    k->was_up = true;
    k->failures = 0;
    k->why[0] = '\0';
    if (!k->is_sub) {
        wait_flush(c);
        if (c->up_fn != NULL)
            c->up_fn(c->arg);
    }
}

static bool is_kind(const redisReply *r, const char *kind)
{
    return r->type == REDIS_REPLY_STRING && strlen(kind) == r->len &&
           memcmp(r->str, kind, r->len) == 0;
}

static void on_smessage(struct cconn *k, const redisReply *chan, const redisReply *msg)
{
    struct cluster *c = k->c;
    struct chan *ch;

    if (chan->type != REDIS_REPLY_STRING || msg->type != REDIS_REPLY_STRING)
        return;
    ch = chan_find(c, chan->str, chan->len);
    if (ch != NULL && ch->node == k->node) /* not from a node it has left */
        c->fn(c->arg, chan->str, chan->len, msg->str, msg->len);
}

static void on_ssubscribed(struct cconn *k, const redisReply *chan)
{
    struct cluster *c = k->c;
    struct chan *ch = chan_find(c, chan->str, chan->len);

    if (ch != NULL && ch->node == k->node && !ch->confirmed) {
        ch->confirmed = true;
        c->st->channels++;
    }
}

/* Redis unsubscribed us by itself: the slot went to another master (a migration, or a
 * failover seen by this node). The channel follows it once the new map says where. */
static void on_sunsubscribed(struct cconn *k, const redisReply *chan)
{
    struct cluster *c = k->c;
    struct chan *ch = chan_find(c, chan->str, chan->len);

    c->st->sunsubscribed++;
    if (ch == NULL || ch->node != k->node)
        return;
    log_limited(LOG_NOTICE, NULL, "redis shard %s unsubscribed %s: its slot %u moved",
                k->node->name, ch->name, ch->slot);
    unplace(c, ch, k->node);
    c->refreshed_ms = 0;
    refresh_start(c);
}

static void on_ssub_error(struct cconn *k, const char *name, const redisReply *rep)
{
    struct cluster *c = k->c;
    struct chan *ch = chan_find(c, name, strlen(name));
    char host[SLOT_HOST_MAX];
    unsigned slot;
    int port;

    if (ch == NULL || ch->node != k->node)
        return;
    unplace(c, ch, k->node);
    if (slot_parse_redirect(rep->str, rep->len, &slot, host, sizeof(host), &port) == SLOT_MOVED &&
        slot == ch->slot && map_redirect(c, slot, host, port) != NULL) {
        c->st->moved++;
        c->refreshed_ms = 0;
        place(c, ch);
        return;
    }
    log_limited(LOG_WARN, NULL, "redis shard %s refused SSUBSCRIBE %s: %s", k->node->name, name,
                rep->str);
}

static void on_cmd_reply(struct cconn *k, struct req *q, const redisReply *rep)
{
    struct cluster *c = k->c;
    enum slot_redirect kind = SLOT_NONE;
    char host[SLOT_HOST_MAX];
    unsigned slot;
    int port;

    if (rep->type == REDIS_REPLY_ERROR)
        kind = slot_parse_redirect(rep->str, rep->len, &slot, host, sizeof(host), &port);
    if (kind != SLOT_NONE && q->hops < MAX_HOPS) {
        struct cnode *n =
            kind == SLOT_MOVED ? map_redirect(c, slot, host, port) : node_get(c, host, port);
        char *cmd = q->cmd;

        c->st->moved++;
        q->cmd = NULL;
        if (kind == SLOT_MOVED)
            c->refreshed_ms = 0;
        if (n != NULL && route(c, n, q->slot, q->cb, q->priv, cmd, q->cmdlen,
                               (uint8_t)(q->hops + 1), kind == SLOT_ASK) == 0)
            return;
        if (n == NULL)
            redisFreeCommand(cmd);
        if (q->cb != NULL)
            q->cb(q->priv, NULL);
        return;
    }
    if (kind != SLOT_NONE)
        c->st->redirects_lost++;
    if (rep->type == REDIS_REPLY_ERROR && q->cb == NULL)
        log_limited(LOG_WARN, NULL, "redis shard %s: command refused: %s", k->node->name, rep->str);
    if (q->cb != NULL)
        q->cb(q->priv, rep);
}

static void on_nodes(struct cconn *k, const redisReply *rep);

/* One answer or push from k's connection. */
static void dispatch(struct cconn *k, const redisReply *rep)
{
    struct req *q;

    if (rep->type == REDIS_REPLY_ARRAY && rep->elements >= 2 &&
        rep->element[0]->type == REDIS_REPLY_STRING &&
        rep->element[1]->type == REDIS_REPLY_STRING) {
        const redisReply *kind = rep->element[0], *chan = rep->element[1];
        bool theirs =
            k->head != NULL && (k->head->kind == REQ_SSUB || k->head->kind == REQ_SUNSUB) &&
            strlen(k->head->chan) == chan->len && memcmp(k->head->chan, chan->str, chan->len) == 0;

        if (is_kind(kind, "smessage") && rep->elements == 3) {
            on_smessage(k, chan, rep->element[2]);
            return;
        }
        if (is_kind(kind, "ssubscribe")) {
            if (theirs && k->head->kind == REQ_SSUB)
                free_req(pop_req(k));
            on_ssubscribed(k, chan);
            return;
        }
        if (is_kind(kind, "sunsubscribe")) {
            if (theirs && k->head->kind == REQ_SUNSUB)
                free_req(pop_req(k));
            else
                on_sunsubscribed(k, chan);
            return;
        }
    }
    q = pop_req(k);
    if (q == NULL) {
        conn_fail(k, RLINK_LOST, "an answer nobody waited for");
        return;
    }
    switch (q->kind) {
    case REQ_AUTH:
    case REQ_PING:
        if (rep->type == REDIS_REPLY_ERROR)
            conn_fail(k, RLINK_REFUSED, rep->str);
        else if (q->kind == REQ_PING && !k->up)
            conn_up(k);
        break;
    case REQ_SSUB:
        if (rep->type == REDIS_REPLY_ERROR)
            on_ssub_error(k, q->chan, rep);
        break;
    case REQ_NODES:
        on_nodes(k, rep);
        break;
    case REQ_CMD:
        on_cmd_reply(k, q, rep);
        break;
    default: /* SUNSUBSCRIBE and ASKING: nothing to do */
        break;
    }
    free_req(q);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct cconn *k = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len;

    k->last_rx_ms = mono_ms();
    while ((len = evbuffer_get_contiguous_space(in)) > 0) {
        unsigned char *p = evbuffer_pullup(in, (ev_ssize_t)len);
        if (p == NULL || redisReaderFeed(k->rd, (const char *)p, len) != REDIS_OK) {
            conn_fail(k, RLINK_LOST, "out of memory reading a reply");
            return;
        }
        evbuffer_drain(in, len);
    }
    for (;;) {
        void *reply = NULL;

        if (redisReaderGetReply(k->rd, &reply) != REDIS_OK) {
            char why[160];
            snprintf(why, sizeof(why), "protocol error: %s", k->rd->errstr);
            conn_fail(k, RLINK_LOST, why);
            return;
        }
        if (reply == NULL)
            return;
        dispatch(k, reply);
        freeReplyObject(reply);
        if (k->bev != bev) /* failed inside, maybe connected again since */
            return;
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct cconn *k = arg;
    char why[128];

    if (what & BEV_EVENT_CONNECTED) {
        int fd = (int)bufferevent_getfd(bev), one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
        return;
    }
    if (what & BEV_EVENT_EOF) {
        snprintf(why, sizeof(why), "connection closed");
    } else {
        int err = evutil_socket_geterror(bufferevent_getfd(bev));
        snprintf(why, sizeof(why), "%s",
                 err != 0 ? evutil_socket_error_to_string(err) : "connection error");
    }
    conn_fail(k, RLINK_LOST, why);
}

static void start_chan(struct cluster *c, struct chan *ch, void *arg)
{
    struct cnode *n = arg;

    if (ch->node == NULL && owner_of(c, ch->slot) == n && send_chan(&n->sub, true, ch->name) == 0) {
        ch->node = n;
        c->homeless--;
    }
}

/* Connects k now: AUTH when the URL has a password, a PING whose answer makes it up,
 * and on a subscriber every wanted channel of the node's slots, pipelined. */
static void conn_start(struct cconn *k)
{
    struct cluster *c = k->c;
    const struct redis_url *u = c->url;
    struct addrinfo hints = {0}, *ai = NULL;
    char port[8];
    const char *why = NULL;
    int rc;

    if (k->bev != NULL || c->stopped || (k->is_sub && c->paused))
        return;
    k->st->connects++;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof(port), "%d", k->node->port);
    rc = getaddrinfo(k->node->host, port, &hints, &ai);
    if (rc != 0) {
        why = gai_strerror(rc);
        goto err;
    }
    k->bev = bufferevent_socket_new(c->base, -1, BEV_OPT_CLOSE_ON_FREE);
    k->rd = redisReaderCreate();
    if (k->bev == NULL || k->rd == NULL) {
        why = "out of memory";
        goto err_free;
    }
    bufferevent_setcb(k->bev, on_read, NULL, on_event, k);
    if (bufferevent_enable(k->bev, EV_READ) < 0 ||
        bufferevent_socket_connect(k->bev, ai->ai_addr, (int)ai->ai_addrlen) < 0) {
        why = "cannot connect";
        goto err_free;
    }
    freeaddrinfo(ai);
    ai = NULL;
    k->last_tx_ms = k->last_rx_ms = mono_ms();
    if (u->password != NULL) {
        const char *argv[3] = {"AUTH", u->user != NULL ? u->user : u->password, u->password};
        size_t argvlen[3] = {4, strlen(argv[1]), strlen(u->password)};
        if (send_argv(k, REQ_AUTH, u->user != NULL ? 3 : 2, argv, argvlen, NULL) < 0)
            goto err_queue;
    }
    {
        const char *argv[1] = {"PING"};
        size_t argvlen[1] = {4};
        if (send_argv(k, REQ_PING, 1, argv, argvlen, NULL) < 0)
            goto err_queue;
    }
    if (k->is_sub)
        chan_each(c, start_chan, k->node);
    return;
err_queue:
    conn_fail(k, RLINK_LOST, "cannot queue the setup commands");
    return;
err_free:
    if (k->bev != NULL)
        bufferevent_free(k->bev);
    if (k->rd != NULL)
        redisReaderFree(k->rd);
    k->bev = NULL;
    k->rd = NULL;
err:
    if (ai != NULL)
        freeaddrinfo(ai);
    k->failures++;
    log_failure(k, RLINK_LOST, false, why);
    schedule_retry(k);
    c->refreshed_ms = 0;
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct cconn *k = arg;

    (void)fd;
    (void)what;
    if (k->is_sub) {
        if (k->node->owns) /* not a master any more: its channels went elsewhere */
            conn_start(k);
        return;
    }
    /* A command connection opens again when something is to be sent to a master. */
    if (k->node->owns && k->c->w_head != NULL)
        conn_start(k);
}

/* The slot map -------------------------------------------------------------------------- */

static void place_each(struct cluster *c, struct chan *ch, void *arg)
{
    (void)arg;
    place(c, ch);
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(struct cnode *const *)a)->name, (*(struct cnode *const *)b)->name);
}

/* Logs the masters (in name order: each node lists them in its own) when they changed;
 * returns whether they did. */
static bool log_map(struct cluster *c)
{
    struct cnode *sorted[SLOT_MAX_NODES];
    char list[sizeof(c->masters)];
    size_t n = 0;

    memcpy(sorted, c->bynode, c->map->nnodes * sizeof(sorted[0]));
    qsort(sorted, c->map->nnodes, sizeof(sorted[0]), by_name);
    list[0] = '\0';
    for (size_t i = 0; i < c->map->nnodes && n < sizeof(list); i++)
        n +=
            (size_t)snprintf(list + n, sizeof(list) - n, "%s%s", i > 0 ? "," : "", sorted[i]->name);
    if (strcmp(list, c->masters) == 0)
        return false;
    log_msg(LOG_NOTICE, NULL, "redis cluster map masters=%zu slots=%zu nodes=%s", c->map->nnodes,
            c->map->covered, list);
    memcpy(c->masters, list, sizeof(list));
    return true;
}

/* A map not learned: logged when the reason changes, or every RELOG_MS. */
static void map_failed(struct cluster *c, const struct cnode *n, const char *why)
{
    char line[sizeof(c->map_why)];
    long long now = mono_ms();

    snprintf(line, sizeof(line), "%s", why);
    if (strcmp(line, c->map_why) == 0 && now - c->map_logged_ms < RELOG_MS)
        return;
    log_msg(LOG_WARN, NULL, "redis cluster: no slot map from %s: %s", n->name, line);
    memcpy(c->map_why, line, sizeof(line));
    c->map_logged_ms = now;
}

static void on_nodes(struct cconn *k, const redisReply *rep)
{
    struct cluster *c = k->c;
    struct slot_map *m = c->next;
    const char *why = "not a string";
    int covered = -1;
    bool changed;

    c->refreshing = false;
    if (rep->type == REDIS_REPLY_STRING)
        covered = slot_map_parse_nodes(m, rep->str, rep->len, &why);
    else if (rep->type == REDIS_REPLY_ERROR)
        why = rep->str;
    if (covered <= 0) { /* tried again in CLUSTER_FAST_MS */
        map_failed(c, k->node, covered == 0 ? "no slot served (cluster not built yet?)" : why);
        return;
    }
    for (size_t i = 0; i < m->nnodes; i++) {
        c->bynode[i] = node_get(c, m->nodes[i].host, m->nodes[i].port);
        if (c->bynode[i] == NULL) {
            map_failed(c, k->node, "out of memory for a node");
            return;
        }
    }
    c->map_why[0] = '\0';
    c->next = c->map;
    c->map = m;
    c->have_map = true;
    c->st->maps++;
    for (struct cnode *n = c->nodes; n != NULL; n = n->next)
        n->owns = false;
    for (size_t i = 0; i < m->nnodes; i++)
        c->bynode[i]->owns = true;
    changed = log_map(c);
    chan_each(c, place_each, NULL);
    wait_flush(c);
    if (changed && c->up_fn != NULL)
        c->up_fn(c->arg);
}

/* Asks a node for CLUSTER NODES: one whose command connection is up, else the next one
 * (seeds included) not waiting out a backoff. */
static void refresh_start(struct cluster *c)
{
    const char *argv[2] = {"CLUSTER", "NODES"};
    size_t argvlen[2] = {7, 5};
    struct cnode *n, *pick = NULL;

    if (c->refreshing || c->stopped || c->nodes == NULL)
        return;
    c->refreshed_ms = mono_ms();
    for (n = c->nodes; n != NULL && pick == NULL; n = n->next)
        if (n->pub.up)
            pick = n;
    for (size_t tries = 0; pick == NULL && tries < c->nnodes; tries++) {
        n = c->refresh_from != NULL && c->refresh_from->next != NULL ? c->refresh_from->next
                                                                     : c->nodes;
        c->refresh_from = n;
        if (pub_of(n) != NULL)
            pick = n;
    }
    if (pick == NULL)
        return;
    c->refresh_from = pick;
    if (send_argv(&pick->pub, REQ_NODES, 2, argv, argvlen, NULL) == 0)
        c->refreshing = true;
}

/* Placement ----------------------------------------------------------------------------- */

/* Sends ch where its slot is served now: SUNSUBSCRIBE on the master it leaves (still
 * connected, by the invariant of ch->node), SSUBSCRIBE on the new one (connecting it if
 * needed; a subscriber waiting out its backoff takes it when it connects). */
static void place(struct cluster *c, struct chan *ch)
{
    struct cnode *owner = owner_of(c, ch->slot);

    if (ch->node != NULL && ch->node == owner)
        return;
    if (ch->node != NULL) {
        send_chan(&ch->node->sub, false, ch->name);
        unplace(c, ch, ch->node);
    }
    if (owner == NULL || c->stopped)
        return;
    if (owner->sub.bev == NULL) {
        if (!event_pending(owner->sub.retry, EV_TIMEOUT, NULL))
            conn_start(&owner->sub); /* sends every homeless channel of owner, ch too */
        return;
    }
    if (send_chan(&owner->sub, true, ch->name) == 0) {
        ch->node = owner;
        c->homeless--;
    }
}

/* Every CHECK_MS: deadlines and PINGs on every connection, the map when due. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct cluster *c = arg;
    long long now = mono_ms();
    long long every = c->homeless > 0 || !c->have_map ? CLUSTER_FAST_MS : CLUSTER_REFRESH_MS;

    (void)fd;
    (void)what;
    for (struct cnode *n = c->nodes; n != NULL; n = n->next) {
        struct cconn *ks[2] = {&n->sub, &n->pub};
        for (int i = 0; i < 2; i++) {
            struct cconn *k = ks[i];
            char why[96];

            if (k->bev == NULL)
                continue;
            /* Overdue, and nothing heard meanwhile: a PING answer queued behind a backlog
             * of messages Redis is still delivering is late, not lost. */
            if (k->head != NULL && now - k->head->sent_ms >= (long long)c->timeout_ms &&
                now - k->last_rx_ms >= (long long)c->timeout_ms) {
                snprintf(why, sizeof(why), "no answer to %s in %ums",
                         k->up ? "a command" : "connect and setup", c->timeout_ms);
                conn_fail(k, RLINK_TIMEOUT, why);
            } else if (k->head == NULL && now - k->last_tx_ms >= (long long)c->beat_ms) {
                const char *argv[1] = {"PING"};
                size_t argvlen[1] = {4};
                if (send_argv(k, REQ_PING, 1, argv, argvlen, NULL) < 0)
                    conn_fail(k, RLINK_LOST, "cannot queue a PING");
            }
        }
    }
    if (!c->refreshing && now - c->refreshed_ms >= every)
        refresh_start(c);
    if (c->w_head != NULL && c->have_map)
        wait_flush(c);
}

/* API ----------------------------------------------------------------------------------- */

struct cluster *cluster_new(struct event_base *base, const struct redis_url *url,
                            uint32_t timeout_ms, cluster_msg_fn *fn, void *arg,
                            struct cluster_stats *st, struct rlink_stats *sub_st,
                            struct rlink_stats *pub_st, uint64_t *dropped)
{
    struct cluster *c = calloc(1, sizeof(*c));
    struct timeval every = {0, CHECK_MS * 1000};

    if (c == NULL)
        return NULL;
    c->base = base;
    c->url = url;
    c->timeout_ms = timeout_ms;
    c->beat_ms = timeout_ms / 3 < BEAT_MAX_MS ? timeout_ms / 3 : BEAT_MAX_MS;
    if (c->beat_ms == 0)
        c->beat_ms = 1;
    c->fn = fn;
    c->arg = arg;
    c->st = st;
    c->sub_st = sub_st;
    c->pub_st = pub_st;
    c->dropped = dropped;
    memset(st, 0, sizeof(*st));
    if (getrandom(&c->seed, sizeof(c->seed), 0) != sizeof(c->seed))
        c->seed = (uint64_t)getpid() * 0x9e3779b97f4a7c15u;
    c->rng = c->seed | 1;
    c->cap = 64;
    c->buckets = calloc(c->cap, sizeof(*c->buckets));
    c->map = malloc(sizeof(*c->map));
    c->next = malloc(sizeof(*c->next));
    c->tick = event_new(base, -1, EV_PERSIST, on_tick, c);
    if (c->buckets == NULL || c->map == NULL || c->next == NULL || c->tick == NULL ||
        event_add(c->tick, &every) < 0)
        goto err;
    slot_map_clear(c->map);
    /* Seeds last in, first asked: the list is newest first. */
    for (size_t i = url->nseeds; i-- > 0;)
        if (node_get(c, url->seeds[i].host, url->seeds[i].port) == NULL)
            goto err;
    refresh_start(c);
    return c;
err:
    /* Only at start: the worker exits next, its event_base with it. */
    free(c->buckets);
    free(c->map);
    free(c->next);
    free(c);
    return NULL;
}

void cluster_set_up_fn(struct cluster *c, void (*up_fn)(void *arg))
{
    c->up_fn = up_fn;
}

int cluster_want(struct cluster *c, const char *channel, bool on)
{
    size_t len = strlen(channel);
    struct chan *ch = chan_find(c, channel, len);

    if (on) {
        if (ch != NULL)
            return 0;
        ch = calloc(1, sizeof(*ch) + len + 1);
        if (ch == NULL)
            return -1;
        ch->hash = hash_name(c->seed, channel, len);
        ch->slot = slot_of(channel, len);
        ch->len = len;
        memcpy(ch->name, channel, len);
        ch->hnext = c->buckets[ch->hash & (c->cap - 1)];
        c->buckets[ch->hash & (c->cap - 1)] = ch;
        c->homeless++;
        if (++c->count > c->cap)
            chan_grow(c);
        place(c, ch);
        return 0;
    }
    if (ch == NULL)
        return 0;
    if (ch->node != NULL) {
        send_chan(&ch->node->sub, false, ch->name);
        unplace(c, ch, ch->node);
    }
    c->homeless--;
    for (struct chan **pp = &c->buckets[ch->hash & (c->cap - 1)]; *pp != NULL; pp = &(*pp)->hnext) {
        if (*pp == ch) {
            *pp = ch->hnext;
            break;
        }
    }
    c->count--;
    free(ch);
    return 0;
}

bool cluster_is_confirmed(const struct cluster *c, const char *channel)
{
    const struct chan *ch = chan_find(c, channel, strlen(channel));

    return ch != NULL && ch->confirmed && ch->node != NULL && ch->node->sub.up;
}

int cluster_owner(const struct cluster *c, const char *key, size_t klen, const char **host,
                  int *port)
{
    const struct cnode *n = owner_of(c, slot_of(key, klen));

    if (n == NULL)
        return -1;
    *host = n->host;
    *port = n->port;
    return 0;
}

bool cluster_is_up(const struct cluster *c)
{
    if (!c->have_map)
        return false;
    for (const struct cnode *n = c->nodes; n != NULL; n = n->next)
        if (n->owns && n->pub.up)
            return true;
    return false;
}

int cluster_command(struct cluster *c, const char *key, size_t klen, cluster_reply_fn *cb,
                    void *priv, int argc, const char **argv, const size_t *argvlen)
{
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);

    if (len < 0) {
        if (cb == NULL)
            (*c->dropped)++;
        return -1;
    }
    return route(c, NULL, slot_of(key, klen), cb, priv, cmd, (size_t)len, 0, false);
}

void cluster_set_paused(struct cluster *c, bool paused)
{
    c->paused = paused;
}

void cluster_stop(struct cluster *c)
{
    c->stopped = true;
    event_del(c->tick);
    for (struct cnode *n = c->nodes; n != NULL; n = n->next) {
        event_del(n->sub.retry);
        event_del(n->pub.retry);
        if (n->sub.bev != NULL) {
            bufferevent_free(n->sub.bev);
            redisReaderFree(n->sub.rd);
            n->sub.bev = NULL;
            n->sub.rd = NULL;
        }
    }
}
