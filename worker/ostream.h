#ifndef WSGATE_WORKER_OSTREAM_H
#define WSGATE_WORKER_OSTREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "worker/rlink.h"

struct worker;

/*
 * Durable orders (--orders-stream NAME): besides the order channels, each worker reads
 * the Redis stream NAME on a link of its own (rlink.c) with a blocking
 *   XREAD COUNT <n> BLOCK <a third of --redis-timeout> STREAMS NAME <last id>
 * where <last id> is the newest entry it has read and n is 256, or fewer when
 * --max-send lets orders be long (n orders of the longest text fit in 64 MiB). After
 * any reconnect it reads on from there, so entries added while it was away are read
 * then. Where it starts: at
 * the moment the worker started, on Redis's clock (TIME, asked on every connect, gives
 * the offset), so orders added while it was starting are not missed and older ones are
 * not replayed to it.
 *
 * Each entry's field "order" holds one order, as on the fleet channel (signed when
 * --order-key is set). Entries older than --orders-max-age (their id's ms against
 * Redis's clock) are skipped and counted: a close applied that late is worse than
 * none. An order on the stream must carry "id"; apply.c applies each id once, whether
 * it came on the stream, on a channel, or both (common/seen.h). Entries without the
 * field "order" are counted and skipped.
 *
 * The blocking read is the link's liveness check: its answer (entries or nil after the
 * block) is awaited within --redis-timeout. A worker that drains stops reading.
 */

struct ostream_stats {
    uint64_t entries;    /* stream entries read */
    uint64_t orders;     /* orders handed to apply.c from the stream */
    uint64_t stale;      /* entries skipped: older than --orders-max-age */
    uint64_t bad;        /* entries skipped: no "order" field, or a malformed entry */
    uint64_t duplicates; /* orders not applied again: their id was seen (any source) */
    uint64_t dedup_full; /* orders applied unchecked: --orders-dedup-max ids held */
    uint64_t up;         /* gauge: 1 while the stream link reads */
    struct rlink_stats link;
};

/* Starts the reader when --orders-stream is set (else does nothing). Returns 0, or -1
 * when memory runs out. */
int ostream_start(struct worker *w);

/* True when the stream is off, or its link is up and reading. */
bool ostream_is_up(const struct worker *w);

/* Closes the link. */
void ostream_stop(struct worker *w);

#endif /* WSGATE_WORKER_OSTREAM_H */
