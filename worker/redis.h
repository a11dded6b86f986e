#ifndef WSGATE_WORKER_REDIS_H
#define WSGATE_WORKER_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct worker;

/*
 * The worker's two Redis connections, on its own event_base (hiredis async API):
 *   sub  SUBSCRIBEs to <channel> and <channel>:<gateway id>; each message is an order
 *   pub  PUBLISHes acknowledgements and events, and keeps this worker's announce key
 *        <channel>:gw:<gateway id>:<worker> (EX 10, refreshed every 3 s)
 * Either one lost, refused or stuck: reconnect with capped exponential backoff and
 * full jitter, resubscribe, log each state change once; clients stay connected.
 */

struct wredis_stats {
    uint64_t reconnects;
    uint64_t published;
    uint64_t publish_dropped; /* pub connection down: event or ack lost */
};

/* Starts connecting; returns 0, or -1 when the URL is bad or memory runs out. */
int wredis_start(struct worker *w);

/* True while subscribed to both channels: the readiness check's Redis part. */
bool wredis_is_subscribed(const struct worker *w);

/* Publishes msg[0..len) on channel, or drops it (counted) while pub is down. */
void wredis_publish(struct worker *w, const char *channel, const char *msg, size_t len);

/* Deletes the announce key (best effort) and closes both connections. */
void wredis_stop(struct worker *w);

#endif /* WSGATE_WORKER_REDIS_H */
