#ifndef WSGATE_WORKER_TOMBS_H
#define WSGATE_WORKER_TOMBS_H

#include <stdbool.h>
#include <stdint.h>

#include "worker/rlink.h"

struct conn;
struct order;
struct worker;

/*
 * Tombstones (close orders with ttl_ms; common/tomb.h holds the table and the JSON).
 * They live in the Redis hash <channel>:tombs (field group:<name>, value with the
 * moment it ends, code, reason and order id), so no gateway holds state that matters:
 *   - each worker keeps a copy in a hash table (--max-tombstones entries at most), and
 *     checks every connection as its upgrade completes: one lookup per group of the
 *     connection; a match is closed at once with the tombstone's code and reason, and
 *     its close event says "by":"tombstone";
 *   - its own Redis link loads the hash (HGETALL) on every connect, before the link
 *     counts as up, and again whenever the subscriber comes back (orders may have been
 *     missed meanwhile); connections already open that a loaded tombstone matches are
 *     closed then (fail-safe: a ban missed during an outage is still enforced);
 *   - a close order with ttl_ms adds its tombstone here and HSETs it in Redis (every
 *     worker that applies it does, the same value); an unban order lifts it here,
 *     leaving a marker for --orders-max-age so that a late copy of the ban is not held
 *     again (common/tomb.h), and HDELs it. Worker 1 of each gateway HDELs expired
 *     fields it loads.
 * While Redis has not answered yet (a worker that starts without Redis), new
 * connections are checked against what is held: nothing, at first (fail-open; said in
 * the README).
 */

struct tombs_stats {
    uint64_t held;     /* gauge: tombstones and unban markers this worker holds */
    uint64_t added;    /* tombstones set by close orders with ttl_ms */
    uint64_t lifted;   /* tombstones lifted by unban orders */
    uint64_t refused;  /* new connections closed by a tombstone */
    uint64_t enforced; /* open connections closed when a loaded tombstone matched them */
    uint64_t full;     /* tombstones not held: --max-tombstones reached */
    uint64_t bad;      /* fields of the Redis hash that did not parse */
    uint64_t loads;    /* loads of the hash */
    struct rlink_stats link;
};

/* Starts the link and the table (not when --max-tombstones is 0). Returns 0 or -1. */
int tombs_start(struct worker *w);

/* Closes the link. */
void tombs_stop(struct worker *w);

/* The upgrade of c completed: true when a tombstone matched and c is being closed. */
bool tombs_check(struct conn *c);

/* A close order with ttl_ms applies: holds its tombstone and stores it in Redis. */
void tombs_add(struct worker *w, const struct order *o);

/* An unban order: lifts the tombstones of its groups here and in Redis, and answers
 * on reply_to with {"id","gateway","worker","lifted": N}. */
void tombs_unban(struct worker *w, const struct order *o);

/* The subscriber came back: orders may have been missed, load the hash again. */
void tombs_resync(struct worker *w);

/* From the worker's tick: drops expired entries now and then. */
void tombs_tick(struct worker *w);

#endif /* WSGATE_WORKER_TOMBS_H */
