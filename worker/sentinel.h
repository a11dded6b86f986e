#ifndef WSGATE_WORKER_SENTINEL_H
#define WSGATE_WORKER_SENTINEL_H

#include <stdint.h>

#include "worker/rlink.h"

struct event_base;
struct redis_url;

/*
 * The Sentinel resolver: where the master named in a sentinel:// URL is, for every
 * Redis link of a worker (rlink.h). It keeps two links of its own to the sentinels,
 * each on one sentinel at a time, moving to the next in the URL's order when that one
 * fails (unreachable, a deadline missed, refused, no master by that name):
 *   query  asks SENTINEL get-master-addr-by-name MASTER when it connects, and again
 *          whenever a link asks for the address after a failure on it; up once a
 *          sentinel has named the master
 *   watch  SUBSCRIBEs to +switch-master, so a failover is followed the moment the
 *          sentinels announce it instead of at the next failure; a PING every second
 *          (a third of the timeout if less) must be answered within the timeout, and
 *          it joins the sentinel that last named the master
 * A data link gets the last address named, with ROLE checked on every connection: a
 * node that is not a master is dropped (counted), and the next sentinel is asked. When
 * the address changes (a failover), links still on the old one are dropped and every
 * link down reconnects at once, without waiting out its backoff; the owners resubscribe
 * what they hold as on any reconnect. A link asking while no sentinel can name the
 * master waits, down: the readiness check fails until the master is found.
 * One per worker, made by wredis_start() for a sentinel:// --redis.
 */

struct sentinel_stats {
    uint64_t queries;         /* SENTINEL get-master-addr-by-name sent */
    uint64_t errors;          /* answers naming no usable master: unknown name, error, garbage */
    uint64_t failovers;       /* the master's address changed after one was known */
    uint64_t not_master;      /* data connections dropped: ROLE did not say master */
    struct rlink_stats links; /* the query and watch links together */
};

struct sentinel;

/* A resolver for u (borrowed, sentinel://, outlives it), connecting now. Returns NULL
 * when memory runs out. */
struct sentinel *sentinel_new(struct event_base *base, const struct redis_url *u,
                              uint32_t timeout_ms, struct sentinel_stats *st);

/* The resolver to hand to rlink_init() for the data links. */
struct rlink_resolver *sentinel_resolver(struct sentinel *s);

/* Closes the sentinel links (the worker is leaving). */
void sentinel_stop(struct sentinel *s);

#endif /* WSGATE_WORKER_SENTINEL_H */
