#ifndef WSGATE_WORKER_CLUSTER_H
#define WSGATE_WORKER_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "worker/rlink.h"

struct event_base;
struct redis_url;
struct redisReply;

/*
 * A worker's links to a Redis Cluster (--redis cluster://...), with sharded pub/sub.
 * hiredis 0.14's async API asserts on the `smessage` pushes of SSUBSCRIBE, so this
 * module owns its sockets (libevent bufferevents) and keeps hiredis's redisReader as the
 * RESP parser. It holds:
 *   - the slot map, learned with CLUSTER NODES from any node (the URL's seeds first),
 *     learned again on every lost connection, MOVED, pushed sunsubscribe, every
 *     CLUSTER_REFRESH_MS, and every CLUSTER_FAST_MS while a wanted channel has no
 *     reachable owner (a failover in progress);
 *   - per master it needs, one subscriber connection holding the SSUBSCRIBEs of every
 *     wanted channel whose slot that master serves (SSUBSCRIBE takes channels of one
 *     slot only: one command per channel), and one command connection for SPUBLISH, SET,
 *     XADD..., opened when a command first goes there;
 *   - liveness per connection: a PING when it has sent nothing for a beat (a third of
 *     --redis-timeout, at most 1 s; in subscribed mode Redis answers ["pong", ""]), and
 *     every awaited answer due within --redis-timeout, or the connection is dropped;
 *   - jittered reconnects (100 ms doubling to 1 s), one log line per change of state.
 * A channel whose slot moves (MOVED, a pushed sunsubscribe, a new map after a failover)
 * is SSUBSCRIBEd on its new owner; the old one gets SUNSUBSCRIBE when still reachable.
 */

#define CLUSTER_REFRESH_MS 5000 /* slot map learned again at least this often */
#define CLUSTER_FAST_MS    200  /* ...and this often while a wanted channel is homeless */

struct cluster_stats {
    uint64_t shards;         /* gauge: subscriber connections up (one per master needed) */
    uint64_t channels;       /* gauge: sharded channels Redis confirmed (SSUBSCRIBE) */
    uint64_t maps;           /* slot maps learned */
    uint64_t moved;          /* MOVED and ASK redirections followed */
    uint64_t sunsubscribed;  /* channels Redis unsubscribed by itself (slot moved away) */
    uint64_t redirects_lost; /* commands dropped after too many redirections */
};

struct cluster;

/* A message on a wanted channel: channel[0..clen) (NUL-terminated), msg[0..mlen). */
typedef void cluster_msg_fn(void *arg, const char *channel, size_t clen, const char *msg,
                            size_t mlen);

/* A command's answer; rep is NULL when its connection was lost first (Redis may or may
 * not have run it). rep lives during the call only. */
typedef void cluster_reply_fn(void *priv, const struct redisReply *rep);

/* Connections on base to the cluster of url (borrowed; url->seeds set), each message of
 * a wanted channel to fn(arg, ...). sub_st and pub_st (borrowed, shared memory) count the
 * subscriber and command connections as rlink_stats do; *dropped counts commands with
 * no callback lost with their connection. Starts learning the slot map at once.
 * Returns NULL when memory runs out. */
struct cluster *cluster_new(struct event_base *base, const struct redis_url *url,
                            uint32_t timeout_ms, cluster_msg_fn *fn, void *arg,
                            struct cluster_stats *st, struct rlink_stats *sub_st,
                            struct rlink_stats *pub_st, uint64_t *dropped);

/* up_fn(arg) runs whenever a command connection comes up or a new slot map is learned:
 * commands refused while nothing was reachable may be sent again. */
void cluster_set_up_fn(struct cluster *c, void (*up_fn)(void *arg));

/* Subscribes (on) or unsubscribes a sharded channel (copied). Returns 0, or -1 when
 * memory runs out (counted by the caller). */
int cluster_want(struct cluster *c, const char *channel, bool on);

/* Whether channel is SSUBSCRIBEd and confirmed on the master of its slot. */
bool cluster_is_confirmed(const struct cluster *c, const char *channel);

/* The master serving key[0..klen)'s slot: *host (valid until the next map) and *port.
 * Returns 0, or -1 when no map is known yet. */
int cluster_owner(const struct cluster *c, const char *key, size_t klen, const char **host,
                  int *port);

/* Whether a slot map is known and at least one command connection is up. */
bool cluster_is_up(const struct cluster *c);

/* Sends argv[0..argc) to the master of key[0..klen)'s slot, following MOVED and ASK
 * (up to 5 times); cb (may be NULL) gets the answer, priv borrowed until then.
 * Returns 0, or -1 when no connection to that master is usable now (cb not called). */
int cluster_command(struct cluster *c, const char *key, size_t klen, cluster_reply_fn *cb,
                    void *priv, int argc, const char **argv, const size_t *argvlen);

/* Stops reconnecting the subscriber connections (true) or resumes (false): a draining
 * worker takes no more orders. */
void cluster_set_paused(struct cluster *c, bool paused);

/* Closes the subscriber connections and stops every timer and reconnect; the command
 * connections stay for what is still to be written (the process exits next). */
void cluster_stop(struct cluster *c);

#endif /* WSGATE_WORKER_CLUSTER_H */
