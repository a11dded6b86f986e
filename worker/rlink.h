#ifndef WSGATE_WORKER_RLINK_H
#define WSGATE_WORKER_RLINK_H

#include <stdbool.h>
#include <stdint.h>

struct event;
struct event_base;
struct redisAsyncContext;
struct redis_url;
struct rlink;

/*
 * One Redis connection on a worker's event_base (hiredis async API), kept usable:
 *   - it connects, sends AUTH when the URL has a password, then its owner's setup
 *     commands; it counts as up only when the owner has seen them answered
 *     (rlink_set_up()), never on a bare TCP connect;
 *   - connecting and setting up must finish within timeout_ms; once up, an answer the
 *     owner waits for (rlink_expect()) must be heard of (rlink_heard()) within
 *     timeout_ms of the last one. A link that misses a deadline is dropped;
 *   - a dropped, lost or refused link reconnects after a random wait in [b/2, b], b
 *     doubling from 100 ms to 1 s and back to 100 ms only when the link is up again;
 *   - going down and coming up are logged once each; a failure that repeats is logged
 *     again only when its reason changes, or every 10 s with the number of attempts.
 * Where it connects comes from a resolver (below), asked before every attempt: the
 * URL's one address, or the master the sentinels name (sentinel.c); a link whose
 * resolver asks for it sends ROLE after AUTH and fails unless the node says master.
 * The owner embeds struct rlink, calls rlink_init() then rlink_start(), and sends its
 * commands on l->ac while l->up. hiredis owns the context: it is freed by hiredis (the
 * owner's reply callbacks then run with a NULL reply) after l->ac was set to NULL, so
 * a reply callback starts with rlink_of(), which is NULL for such a stale context.
 */

struct rlink_stats {
    uint64_t connects;   /* connection attempts */
    uint64_t reconnects; /* up again after having been up */
    uint64_t refused;    /* AUTH or a setup command answered with an error */
    uint64_t timeouts;   /* a deadline missed: connect, setup or an awaited answer */
};

struct rlink_ops {
    const char *name;    /* "subscriber": in log lines */
    const char *up_note; /* appended to the "up" line */
    const char *awaits;  /* what rlink_expect() waits for, in the timeout line: "replies" */
    /* Queues the setup commands on a new connection, after AUTH. Returns 0, or -1 when
     * a command could not be queued. Required. */
    int (*setup)(struct rlink *l);
    /* Whether to (re)connect at all now; NULL means always. */
    bool (*wanted)(struct rlink *l);
    /* NULL, or before each connect, ahead of the resolver: points the owner's address
     * (the URL its static resolver reads) where to connect now (in a Redis Cluster, the
     * master of the owner's key). Returns 0, or -1 when that is not known yet: the
     * attempt fails and is retried after the backoff. */
    int (*locate)(struct rlink *l);
    void (*up)(struct rlink *l);   /* NULL, or called once the link is up */
    void (*down)(struct rlink *l); /* NULL, or called when a link that was up is lost */
};

enum rlink_fail {
    RLINK_LOST,      /* closed, reset, not reachable */
    RLINK_REFUSED,   /* an error reply to AUTH or setup: a wrong password, an unknown db */
    RLINK_TIMEOUT,   /* a deadline missed */
    RLINK_NOT_MASTER /* ROLE did not say master (counted as refused) */
};

/* Where to connect, filled by a resolver for one attempt: the strings need to stay
 * valid only until rlink has connected and queued AUTH (within the call). */
struct rlink_addr {
    const char *host;     /* borrowed; NULL for a unix socket */
    int port;             /* TCP port */
    const char *path;     /* borrowed; the unix socket, or NULL */
    const char *user;     /* borrowed; AUTH user, or NULL */
    const char *password; /* borrowed; AUTH password, or NULL for no AUTH */
    bool want_master;     /* send ROLE; anything but master fails the link */
    uint64_t gen;         /* the resolver's version of the address, handed back in failed */
};

/*
 * A resolver, embedded in whatever owns it. get() fills *a and returns 0, or returns 1
 * when it has no address to give yet: it calls rlink_resolved(l) once it has. failed()
 * hears of every failed attempt or lost connection on the address of generation gen.
 * A resolver may call rlink_resolved() and rlink_retry_now() at any time (they act at
 * the next loop turn), and rlink_fail() on any link but the one it is answering.
 */
struct rlink_resolver;

struct rlink_resolver_ops {
    int (*get)(struct rlink_resolver *r, struct rlink *l, struct rlink_addr *a);
    void (*failed)(struct rlink_resolver *r, struct rlink *l, uint64_t gen, enum rlink_fail kind);
};

struct rlink_resolver {
    const struct rlink_resolver_ops *ops; /* borrowed, static */
};

/* The static resolver: always the URL's address (borrowed: it outlives the links). */
struct rlink_static {
    struct rlink_resolver res;
    const struct redis_url *url;
};

void rlink_static_init(struct rlink_static *s, const struct redis_url *url);

struct rlink {
    const struct rlink_ops *ops;  /* borrowed, static */
    void *owner;                  /* borrowed: for the ops */
    struct event_base *base;      /* borrowed */
    struct rlink_resolver *res;   /* borrowed: where to connect */
    struct rlink *res_next;       /* the resolver's list of its links (it may use this) */
    struct rlink_stats *st;       /* borrowed: in the worker's shared memory slot */
    uint32_t timeout_ms;          /* --redis-timeout */
    struct redisAsyncContext *ac; /* NULL while down; hiredis owns and frees it */
    struct event *retry;          /* owned: the backoff wait, then a connect */
    struct event *check;          /* owned: deadlines, checked every 100 ms while connected */
    uint64_t rng;
    uint32_t backoff_ms;
    uint32_t pending;   /* awaited answers not heard of yet */
    long long since_ms; /* connect start; once up, the last answer or first awaited one */
    long long down_ms;  /* when the link started or was last lost */
    unsigned failures;  /* failed attempts since the link was last up (or started) */
    long long logged_ms;
    char why[128];  /* reason of the last failure logged */
    char where[96]; /* host:port or path of the current or last attempt, for the log */
    uint64_t gen;   /* the resolver's generation of that address */
    bool up;
    bool was_up; /* up once: the next up is a reconnect */
    bool stopped;
    bool waiting;    /* for the resolver's address */
    bool res_listed; /* on the resolver's list (the resolver sets and reads it) */
};

/* Prepares l (not connected). Returns 0, or -1 when memory runs out. */
int rlink_init(struct rlink *l, const struct rlink_ops *ops, void *owner, struct event_base *base,
               struct rlink_resolver *res, uint32_t timeout_ms, struct rlink_stats *st);

/* Connects now (and reconnects from then on). */
void rlink_start(struct rlink *l);

/* The resolver has an address for l, which waited for one: l connects at the next
 * loop turn. Does nothing unless l waits. */
void rlink_resolved(struct rlink *l);

/* l, when down and not stopped, connects at the next loop turn, without waiting out
 * its backoff (the resolver learned a new address). */
void rlink_retry_now(struct rlink *l);

/* The link of ac while ac is its current context; NULL for a context being freed. */
struct rlink *rlink_of(const struct redisAsyncContext *ac);

/* The setup was answered: the link is up (logged, counted, ops->up called). */
void rlink_set_up(struct rlink *l);

/* Drops the current connection (logged and counted as kind; why is copied) and
 * reconnects after the backoff. Safe inside the link's reply callbacks. */
void rlink_fail(struct rlink *l, enum rlink_fail kind, const char *why);

/* One more answer awaited: the deadline runs from now if none was pending. */
void rlink_expect(struct rlink *l);

/* n awaited answers arrived: the deadline runs again from now. */
void rlink_heard(struct rlink *l, uint32_t n);

/* The hiredis callback of a command whose answer is awaited (rlink_expect()) and
 * otherwise unused: heard, and an error answer logged (rate-limited) as refused. */
void rlink_on_reply(struct redisAsyncContext *ac, void *reply, void *priv);

/* No more reconnects or deadlines. rlink_close() also closes the connection once its
 * pending replies are in; rlink_stop() leaves it for what is still to be sent. */
void rlink_stop(struct rlink *l);
void rlink_close(struct rlink *l);

#endif /* WSGATE_WORKER_RLINK_H */
