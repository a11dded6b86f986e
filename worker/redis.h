#ifndef WSGATE_WORKER_REDIS_H
#define WSGATE_WORKER_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "worker/cluster.h"
#include "worker/rlink.h"
#include "worker/sentinel.h"

struct worker;

/*
 * The worker's two Redis links (rlink.c), on its own event_base:
 *   sub  SUBSCRIBEs to <channel> and <channel>:<gateway id>, where each message is an
 *        order, and to its own heartbeat channel <channel>:hb:<gateway id>:<worker>:<nonce>;
 *        also, while this worker holds members of group NAME, to the group channel
 *        <channel>:group:NAME (subs.c), whose messages are orders for that group
 *   pub  PUBLISHes acknowledgements, events and, about every second, a heartbeat on
 *        that channel; keeps this worker's announce key <channel>:gw:<gateway id>:<worker>
 *        (EX 10, refreshed every 3 s)
 * A heartbeat checks the whole path, publisher to Redis to subscriber, without sending
 * the subscribed connection anything but SUBSCRIBE (hiredis 0.14 can hand the reply to
 * a PING there to the wrong callback). The subscriber is dropped when its heartbeats do
 * not come back within --redis-timeout, the publisher when its replies do not; either
 * one reconnects with a backoff capped at 1 s; clients stay connected. With a
 * sentinel:// URL both connect to the master the sentinels name (sentinel.h), and
 * follow it through a failover, resubscribing as on any reconnect.
 *
 * With --redis cluster://..., cluster.c replaces both links: every channel above is a
 * sharded channel (SSUBSCRIBE on the master of its slot, one subscriber connection per
 * master needed), everything published goes out with SPUBLISH (the announce key's SET,
 * XADD too) to the master of its slot; each connection is checked by PING instead of
 * the heartbeat channel.
 */

struct wredis_stats {
    uint64_t published;
    uint64_t publish_dropped;        /* pub connection down: event or ack lost */
    uint64_t worker_channel_refused; /* SUBSCRIBE of the worker's channel refused (ACL) */
    struct rlink_stats sub;          /* in a cluster: the shard subscriber connections */
    struct rlink_stats pub;          /* in a cluster: the shard command connections */
    struct sentinel_stats sentinel;  /* sentinel:// only */
    struct cluster_stats cluster;    /* cluster:// only */
};

struct rlink_resolver;

/*
 * Where a link of another module (tombstones, the orders stream) connects, once
 * wredis_start() succeeded: the worker's resolver (a static address, or the master the
 * sentinels name, followed through a failover). In a Redis Cluster the link connects to
 * the master of its key instead: url (the caller's) is parsed from --redis and direct
 * reads it, and the link's locate op points it with wredis_locate() before each
 * connect. Returns NULL when the URL cannot be parsed or memory runs out.
 */
struct redis_url;
struct rlink_static;
struct rlink_resolver *wredis_link_resolver(struct worker *w, struct redis_url *url,
                                            struct rlink_static *direct);

/* Starts connecting, and hooks the group channels to the registry's first and last
 * members; returns 0, or -1 when the URL is bad or memory runs out. */
int wredis_start(struct worker *w);

/* True while both links are up and answering: subscribed to the order and heartbeat
 * channels (group channels may still be on their way), heartbeats
 * coming back, the publisher's replies too. The readiness check's Redis part. */
bool wredis_is_subscribed(const struct worker *w);

/* Publishes msg[0..len) on channel, or drops it (counted) while pub is down. */
void wredis_publish(struct worker *w, const char *channel, const char *msg, size_t len);

/* How a tracked command ended: answered, answered with an error, or its link failed
 * before the answer (Redis may or may not have run it). */
enum wredis_status { WREDIS_OK, WREDIS_REFUSED, WREDIS_LOST };

/* Embedded first in the caller's record of a tracked command; done runs exactly once,
 * inside a hiredis callback (never inside the call that sent it). */
struct wredis_cb {
    void (*done)(struct wredis_cb *cb, enum wredis_status status);
};

/* True while the publisher is up: tracked commands can be sent. */
bool wredis_pub_is_up(const struct worker *w);

/* PUBLISHes msg[0..len) on channel, tracked by cb (borrowed until cb->done). Returns 0,
 * or -1 when the publisher is down or hiredis refused the command (cb is not called). */
int wredis_publish_tracked(struct worker *w, const char *channel, const char *msg, size_t len,
                           struct wredis_cb *cb);

/* XADD stream MAXLEN ~ maxlen * field msg, tracked by cb, as wredis_publish_tracked(). */
int wredis_xadd(struct worker *w, const char *stream, uint64_t maxlen, const char *field,
                const char *msg, size_t len, struct wredis_cb *cb);

/* For the other links on the URL (tombstones, the orders stream): in a cluster, points
 * u (from wredis_link_resolver()) at the master serving key's slot and returns 0, or -1
 * when no master is known yet; without a cluster returns 0. */
int wredis_locate(struct worker *w, const char *key, struct redis_url *u);

/* Deletes the announce key (best effort) and closes both connections. */
void wredis_stop(struct worker *w);

#endif /* WSGATE_WORKER_REDIS_H */
