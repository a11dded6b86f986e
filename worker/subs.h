#ifndef WSGATE_WORKER_SUBS_H
#define WSGATE_WORKER_SUBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/async.h>

struct event_base;
struct rlink;

/*
 * Group channels: while a worker holds at least one member of group NAME, its
 * subscriber link is subscribed to <channel>:group:NAME, so an order published there
 * reaches the workers that hold members and no others. A reference count per channel
 * (the registry's first- and last-member hooks take and drop it) decides:
 *   - batching: what changed in a loop turn goes out at the end of the turn, as one
 *     SUBSCRIBE or UNSUBSCRIBE of up to SUBS_BATCH channels per command;
 *   - hysteresis: a channel whose count falls to 0 stays subscribed SUBS_LINGER_MS, and
 *     a member that comes back within that time costs Redis nothing;
 *   - bounds: at most SUBS_INFLIGHT channels wait for Redis's confirmation (one reply
 *     per channel) at any time, so a worker with 100 000 groups neither builds one
 *     huge command nor makes Redis buffer 100 000 replies for it at once (its pubsub
 *     output limit would drop the link, and the resubscription with it, forever);
 *   - reconnects: a new subscriber connection subscribes every channel still wanted,
 *     pipelined right behind the order channels. The link counts as up on the order
 *     channels' confirmations alone: group channels never hold readiness back.
 * One per worker, made by wredis_start(); it sends on the link's current context.
 */

#define SUBS_BATCH     1024 /* channels in one SUBSCRIBE or UNSUBSCRIBE */
#define SUBS_INFLIGHT  8192 /* channels sent and not yet confirmed */
#define SUBS_LINGER_MS 1000 /* an unused channel's time before UNSUBSCRIBE */

struct subs_stats {
    uint64_t channels;     /* gauge: group channels Redis confirmed on the current link */
    uint64_t subscribes;   /* SUBSCRIBE commands sent for group channels */
    uint64_t unsubscribes; /* UNSUBSCRIBE commands sent */
    uint64_t orders;       /* messages received on group channels */
    uint64_t oom;          /* groups left without a channel: out of memory */
};

struct subs;

/* A tracker for channels named prefix + group (prefix is "<channel>:group:", copied),
 * sending on link (borrowed) with fn as the subscription callback (it receives every
 * message and confirmation of the channels). Returns NULL when memory runs out. */
struct subs *subs_new(struct event_base *base, struct rlink *link, const char *prefix,
                      redisCallbackFn *fn, void *fn_arg, struct subs_stats *st);

/* In a cluster: every channel goes to fn(arg, channel, true) when wanted and to
 * fn(arg, channel, false) when its linger time is over, instead of the link; fn returns
 * 0, or -1 when memory runs out. The confirmations are the cluster's; the channels
 * gauge then counts the channels handed over. */
typedef int subs_sharded_fn(void *arg, const char *channel, bool on);
void subs_set_sharded(struct subs *s, subs_sharded_fn *fn, void *arg);

/* The group gained its first member (ref) or lost its last one (unref). Out of memory
 * in ref is counted and logged: that group's channel orders miss this worker. */
void subs_ref(struct subs *s, const char *group);
void subs_unref(struct subs *s, const char *group);

/* The link has a new connection (its setup is being queued): every channel still
 * wanted is subscribed again, right away. */
void subs_link_new(struct subs *s);

/* The link's connection is gone: nothing is held any more. */
void subs_link_down(struct subs *s);

/* A subscribe (subscribed true) or unsubscribe confirmation for channel[0..len).
 * Returns false when that is not a group channel (then it is the caller's). */
bool subs_confirmed(struct subs *s, const char *channel, size_t len, bool subscribed);

/* The group a message on channel[0..len) is for, or NULL when that is not a group
 * channel. Points into channel: valid while it is. channel must be NUL-terminated. */
const char *subs_group_of(const struct subs *s, const char *channel, size_t len);

#endif /* WSGATE_WORKER_SUBS_H */
