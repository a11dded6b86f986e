#include "worker/tombs.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <jansson.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/redis_url.h"
#include "common/order.h"
#include "common/tomb.h"
#include "worker/apply.h"
#include "worker/conn.h"
#include "worker/redis.h"
#include "worker/registry.h"
#include "worker/worker.h"

#define EXPIRE_EVERY_MS 10000 /* held entries are swept this often */
#define HDEL_MAX        1000  /* expired fields one load deletes at most */

struct tombs {
    struct worker *w;
    struct rlink link;
    struct tomb_table *t;       /* owned */
    char key[160];              /* <channel>:tombs */
    uint32_t swept;             /* worker_now() of the last sweep */
    struct redis_url url;       /* in a cluster: where link connects (wredis_locate) */
    struct rlink_static direct; /* in a cluster: reads url */
};

static void held(struct tombs *tb)
{
    tb->w->slot->tombs.held = tomb_count(tb->t);
}

/* Closes the open members of a tombstone's group here, as an order would. */
static void enforce(struct tombs *tb, const struct tomb *e)
{
    struct worker *w = tb->w;
    struct group *g = registry_group(&w->reg, e->name);
    struct order o;
    char *names[1];
    size_t open = 0;

    for (struct member *m = g != NULL ? g->head : NULL; m != NULL; m = m->next)
        open += m->conn->state == CONN_OPEN;
    if (open == 0)
        return; /* none, or closing already (by the order itself, or a load before) */
    order_init(&o);
    o.op = ORDER_OP_CLOSE;
    o.target = ORDER_TARGET_GROUP;
    names[0] = e->name;
    o.names = names;
    o.nnames = 1;
    o.id = e->id;
    o.code = e->code;
    snprintf(o.reason, sizeof(o.reason), "%s", e->reason);
    o.reason_len = strlen(o.reason);
    w->slot->tombs.enforced += open;
    log_msg(LOG_NOTICE, NULL, "tombstone group=%s id=%s: closing %zu open connections", e->name,
            e->id != NULL ? e->id : "-", open);
    apply_close_order(w, &o, "tombstone", NULL); /* copies o: its strings are borrowed */
}

/* Holds a ban. Returns what came of it: TOMB_STALE for a late copy of a ban that an
 * unban lifted; TOMB_FULL or TOMB_NOMEM when there is no room (counted, logged). */
static enum tomb_put_result hold(struct tombs *tb, const char *name, int64_t until, int64_t ts,
                                 unsigned code, const char *reason, const char *id, long long now)
{
    enum tomb_put_result r = tomb_put(tb->t, name, strlen(name), until, ts, code, reason, id, now);

    if (r == TOMB_FULL || r == TOMB_NOMEM) {
        tb->w->slot->tombs.full++;
        log_limited(LOG_WARN, NULL, "tombstone group=%s not held: %s", name,
                    r == TOMB_FULL ? "--max-tombstones reached" : "out of memory");
    } else if (r == TOMB_STALE) {
        log_msg(LOG_NOTICE, NULL, "tombstone group=%s id=%s not held: an unban came after it", name,
                id != NULL ? id : "-");
    }
    return r;
}

/* HGETALL's answer: [field, value, ...]. Every tombstone still holding is held and
 * enforced on the connections open now; worker 1 deletes the expired fields. */
static void on_load(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rlink *l = rlink_of(ac);
    redisReply *rep = reply;
    struct tombs *tb;
    long long now = unix_ms();
    const char **expired = NULL;
    size_t *expired_len = NULL, nexpired = 0, loaded = 0;

    (void)priv;
    if (l == NULL || rep == NULL)
        return;
    tb = l->owner;
    if (rep->type != REDIS_REPLY_ARRAY) {
        rlink_fail(l, RLINK_REFUSED,
                   rep->type == REDIS_REPLY_ERROR ? rep->str : "HGETALL: not an array");
        return;
    }
    if (l->up)
        rlink_heard(l, 1);
    tb->w->slot->tombs.loads++;
    if (tb->w->num == 1 && rep->elements > 0) {
        expired = malloc(HDEL_MAX * sizeof(*expired));
        expired_len = malloc(HDEL_MAX * sizeof(*expired_len));
    }
    for (size_t i = 0; i + 1 < rep->elements; i += 2) {
        const redisReply *f = rep->element[i], *v = rep->element[i + 1];
        struct tomb e;
        const char *why = "not a string";

        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
            tomb_parse(f->str, f->len, v->str, v->len, &e, &why) < 0) {
            tb->w->slot->tombs.bad++;
            log_limited(LOG_WARN, NULL, "tombstone %.*s in %s skipped: %s",
                        f->type == REDIS_REPLY_STRING ? (int)f->len : 1,
                        f->type == REDIS_REPLY_STRING ? f->str : "?", tb->key, why);
            continue;
        }
        if (e.until_ms > now + (long long)ORDER_TTL_MAX)
            e.until_ms = now + (long long)ORDER_TTL_MAX; /* no more than a day from now */
        if (e.until_ms <= now) {
            if (expired != NULL && expired_len != NULL && nexpired < HDEL_MAX) {
                expired[nexpired] = f->str;
                expired_len[nexpired++] = f->len;
            }
        } else {
            enum tomb_put_result r =
                hold(tb, e.name, e.until_ms, e.ts_ms, e.code, e.reason, e.id, now);
            if (r == TOMB_ADDED || r == TOMB_UPDATED) {
                const struct tomb *held_now = tomb_find(tb->t, e.name, strlen(e.name), now);
                if (held_now != NULL)
                    enforce(tb, held_now);
            }
            loaded++;
        }
        tomb_cleanup(&e);
    }
    if (nexpired > 0 && l->ac != NULL) {
        const char **argv = malloc((nexpired + 2) * sizeof(*argv));
        size_t *argl = malloc((nexpired + 2) * sizeof(*argl));
        if (argv != NULL && argl != NULL) {
            argv[0] = "HDEL";
            argl[0] = 4;
            argv[1] = tb->key;
            argl[1] = strlen(tb->key);
            memcpy(argv + 2, expired, nexpired * sizeof(*argv));
            memcpy(argl + 2, expired_len, nexpired * sizeof(*argl));
            if (redisAsyncCommandArgv(l->ac, rlink_on_reply, NULL, (int)nexpired + 2, argv, argl) ==
                REDIS_OK)
                rlink_expect(l);
        }
        free(argv);
        free(argl);
    }
    free(expired);
    free(expired_len);
    held(tb);
    log_msg(loaded > 0 ? LOG_NOTICE : LOG_INFO, NULL,
            "tombstones loaded from %s: %zu holding, %zu expired", tb->key, loaded, nexpired);
    if (!l->up)
        rlink_set_up(l);
}

static int tombs_setup(struct rlink *l)
{
    struct tombs *tb = l->owner;

    return redisAsyncCommand(l->ac, on_load, NULL, "HGETALL %s", tb->key) == REDIS_OK ? 0 : -1;
}

/* In a Redis Cluster: the master of the hash's slot. */
static int tombs_locate(struct rlink *l)
{
    struct tombs *tb = l->owner;

    return wredis_locate(tb->w, tb->key, &tb->url);
}

static const struct rlink_ops tombs_ops = {
    .name = "tombstones",
    .up_note = " (loaded)",
    .awaits = "replies",
    .setup = tombs_setup,
    .locate = tombs_locate,
};

int tombs_start(struct worker *w)
{
    struct tombs *tb;
    struct rlink_resolver *res;
    uint64_t seed;

    if (w->cfg->max_tombstones == 0)
        return 0;
    tb = calloc(1, sizeof(*tb));
    if (tb == NULL)
        return -1;
    if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
        seed = ((uint64_t)(uint32_t)getpid() << 32) ^ (uint64_t)unix_ms();
    tb->w = w;
    snprintf(tb->key, sizeof(tb->key), "%s:tombs", w->cfg->channel);
    tb->t = tomb_table_new(w->cfg->max_tombstones, seed);
    if (tb->t == NULL)
        goto err_free;
    /* The worker's resolver (redis.c): a sentinel:// URL's master, followed through a
     * failover, as for the other links; in a cluster, the master of the key. */
    res = wredis_link_resolver(w, &tb->url, &tb->direct);
    if (res == NULL || rlink_init(&tb->link, &tombs_ops, tb, w->base, res, w->cfg->redis_timeout_ms,
                                  &w->slot->tombs.link) < 0)
        goto err_free_table;
    w->tombs = tb;
    w->slot->tombs.held = 0;
    rlink_start(&tb->link);
    return 0;
err_free_table:
    tomb_table_free(tb->t);
err_free:
    free(tb);
    return -1;
}

void tombs_stop(struct worker *w)
{
    if (w->tombs != NULL)
        rlink_close(&w->tombs->link);
}

bool tombs_check(struct conn *c)
{
    struct tombs *tb = c->w->tombs;
    const struct tomb *e = NULL;
    long long now;
    char id[CONN_ID_MAX];

    if (tb == NULL || tomb_count(tb->t) == 0)
        return false; /* the common case costs one load */
    now = unix_ms();
    for (size_t i = 0; i < c->ngroups && e == NULL; i++) {
        const char *name = c->groups[i].group->name;
        e = tomb_find(tb->t, name, strlen(name), now);
    }
    held(tb);
    if (e == NULL)
        return false;
    c->w->slot->tombs.refused++;
    log_limited(LOG_INFO, conn_id(c, id, sizeof(id)), "refused by tombstone group=%s id=%s code=%u",
                e->name, e->id != NULL ? e->id : "-", e->code);
    conn_close(c, e->code, e->reason, "tombstone");
    return true;
}

void tombs_add(struct worker *w, const struct order *o)
{
    struct tombs *tb = w->tombs;
    long long now = unix_ms();
    /* From the order's ts, the same moment on every gateway; a ts ahead of our clock
     * does not make a ban last longer than ttl_ms. */
    int64_t ts = o->ts >= 0 && o->ts < now ? o->ts : now;
    int64_t until = ts + (int64_t)o->ttl_ms;

    if (tb == NULL || until <= now)
        return;
    for (size_t i = 0; i < o->nnames; i++) {
        struct tomb e = {0};
        char field[sizeof(TOMB_FIELD_PREFIX) + ORDER_NAME_MAX];
        char *json;

        if (hold(tb, o->names[i], until, ts, o->code, o->reason, o->id, now) == TOMB_STALE)
            continue;           /* not stored either: a lifted ban must not come back */
        w->slot->tombs.added++; /* one this worker has no room for is still stored */
        log_msg(LOG_NOTICE, NULL, "tombstone group=%s id=%s ttl_ms=%u code=%u", o->names[i],
                o->id != NULL ? o->id : "-", o->ttl_ms, o->code);
        if (!tb->link.up || tb->link.ac == NULL)
            continue; /* the other workers store it; ours is held here */
        e.name = o->names[i];
        e.id = o->id;
        e.until_ms = until;
        e.ts_ms = ts;
        e.code = o->code;
        snprintf(e.reason, sizeof(e.reason), "%s", o->reason);
        json = tomb_to_json(&e);
        snprintf(field, sizeof(field), "%s%s", TOMB_FIELD_PREFIX, o->names[i]);
        if (json != NULL && redisAsyncCommand(tb->link.ac, rlink_on_reply, NULL, "HSET %s %s %s",
                                              tb->key, field, json) == REDIS_OK)
            rlink_expect(&tb->link);
        free(json);
    }
    held(tb);
}

static char *unban_ack(const struct worker *w, const struct order *o, size_t lifted)
{
    json_t *a = json_object();
    char *text = NULL;

    if (a == NULL)
        return NULL;
    if (json_object_set_new(a, "id", o->id != NULL ? json_string(o->id) : json_null()) == 0 &&
        json_object_set_new(a, "gateway", json_string(w->cfg->id)) == 0 &&
        json_object_set_new(a, "worker", json_integer(w->num)) == 0 &&
        json_object_set_new(a, "lifted", json_integer((json_int_t)lifted)) == 0)
        text = json_dumps(a, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(a);
    return text;
}

void tombs_unban(struct worker *w, const struct order *o)
{
    struct tombs *tb = w->tombs;
    long long now = unix_ms();
    int64_t ts = o->ts >= 0 && o->ts < now ? o->ts : now;
    size_t lifted = 0;
    char *ack;

    w->slot->orders.applied++;
    for (size_t i = 0; tb != NULL && i < o->nnames; i++) {
        char field[sizeof(TOMB_FIELD_PREFIX) + ORDER_NAME_MAX];
        /* A marker while a late copy of the ban may still come (from the stream). */
        int r = tomb_lift(tb->t, o->names[i], strlen(o->names[i]), ts,
                          now + (long long)w->cfg->orders_max_age_ms, now);

        if (r < 0) {
            w->slot->tombs.full++;
            log_limited(LOG_WARN, NULL, "unban group=%s: no room for its marker", o->names[i]);
        }
        lifted += r > 0;
        if (tomb_find(tb->t, o->names[i], strlen(o->names[i]), now) != NULL)
            continue; /* banned again after this unban was made: that ban stays */
        snprintf(field, sizeof(field), "%s%s", TOMB_FIELD_PREFIX, o->names[i]);
        if (tb->link.up && tb->link.ac != NULL &&
            redisAsyncCommand(tb->link.ac, rlink_on_reply, NULL, "HDEL %s %s", tb->key, field) ==
                REDIS_OK)
            rlink_expect(&tb->link);
    }
    if (tb != NULL)
        held(tb);
    w->slot->tombs.lifted += lifted;
    log_msg(LOG_NOTICE, NULL, "order id=%s op=unban groups=%zu lifted=%zu",
            o->id != NULL ? o->id : "-", o->nnames, lifted);
    if (o->reply_to == NULL)
        return;
    ack = unban_ack(w, o, lifted);
    if (ack == NULL) {
        log_limited(LOG_WARN, NULL, "out of memory for an acknowledgement");
        return;
    }
    wredis_publish(w, o->reply_to, ack, strlen(ack));
    free(ack);
}

void tombs_resync(struct worker *w)
{
    struct tombs *tb = w->tombs;

    if (tb == NULL || !tb->link.up || tb->link.ac == NULL)
        return; /* down: its own reconnect loads */
    if (redisAsyncCommand(tb->link.ac, on_load, NULL, "HGETALL %s", tb->key) == REDIS_OK)
        rlink_expect(&tb->link);
}

void tombs_tick(struct worker *w)
{
    struct tombs *tb = w->tombs;
    uint32_t now = worker_now(w);

    if (tb == NULL || now - tb->swept < EXPIRE_EVERY_MS)
        return;
    tb->swept = now;
    tomb_expire(tb->t, unix_ms());
    held(tb);
}
