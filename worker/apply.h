#ifndef WSGATE_WORKER_APPLY_H
#define WSGATE_WORKER_APPLY_H

#include <stddef.h>
#include <stdint.h>

struct worker;

/*
 * Orders from Redis: parse and check (common/order.c), match against this worker's
 * indexes, then close the matches (close orders) or push one shared frame to them
 * (send orders) in batches of at most APPLY_BATCH per loop turn, and acknowledge on
 * reply_to when done.
 *
 * Order per connection: orders become jobs that run one after the other, in the order
 * the worker received them (a FIFO). Only the head job runs; the next one is matched
 * when its turn comes, so a send never overtakes an earlier close still running its
 * batches, nor a close an earlier send. A close with spread_ms also waits for its turn,
 * then leaves the FIFO and closes each match at its own moment across the window (a
 * close scheduled for later, by design: what is sent meanwhile goes before it). An
 * order that finds the FIFO empty and fits in one batch is done before the call
 * returns. At most --max-jobs jobs run or wait at once (the drain's own job is never
 * refused); a job whose connections are gone (closed by a later order, say) shrinks,
 * and ends early when none is left. Join and leave orders match the same way and
 * change the matches' groups (registry.h), in batches of APPLY_BATCH too.
 */

#define APPLY_BATCH 1024

/* Job entries a tick may check for gone connections. */
#define APPLY_SWEEP 65536

/* Counters by refusal key: "json", "code", ... (order_error.key). */
#define APPLY_REFUSE_KEYS 28

struct apply_stats {
    uint64_t received;
    uint64_t applied;
    uint64_t ignored; /* meant for another gateway */
    uint64_t refused;
    uint64_t refused_by[APPLY_REFUSE_KEYS];
    uint64_t rejected_max_affected;
    uint64_t reasons_cut;
    uint64_t matched;
    uint64_t closed;
    uint64_t jobs; /* gauge: jobs running or waiting */
};

struct job;

/* The jobs of one worker (embedded in struct worker, zeroed at start). */
struct apply_jobs {
    struct job *head;      /* every job, running or waiting */
    struct job *cursor;    /* the next job the sweep looks at, or NULL between sweeps */
    struct job *fifo;      /* jobs in their turn: the head runs, the others wait */
    struct job *fifo_tail; /* the last of them, NULL when none */
    size_t n;
    uint64_t swept; /* connections closed (close events) when the last sweep began */
};

/* The refusal keys, in the order of apply_stats.refused_by; NULL-terminated. */
extern const char *const apply_refuse_keys[];

struct order;

/* Matches and closes per o (a close order, or an "all" order built by the drain), in
 * its turn; o is copied (its strings may be borrowed). by names the closer in logs and
 * events ("order:<id>" when NULL). When owner is not NULL, *owner points to the job
 * while it waits or runs and is set to NULL when it ends. */
void apply_close_order(struct worker *w, const struct order *o, const char *by, struct job **owner);

/* Makes every remaining close of j due now (still at most APPLY_BATCH a loop turn); a
 * job still waiting for its turn will not spread. */
void apply_job_hurry(struct job *j);

/* Handles one message from the orders channels. With --order-key, the message must be
 * a signed envelope (common/order_sig.h): one that does not verify is counted and logged,
 * never answered; a verified order that is stale, lacks ts or id, or was seen already
 * is answered on its reply_to with the error. */
void apply_order_text(struct worker *w, const char *text, size_t len);

/* The same for a message on the group channel of group (<channel>:group:NAME): the
 * order targets that group (common/order.h, struct order_limits). A signed one must
 * name the group in its signed text, since the signature does not cover the channel. */
void apply_group_order_text(struct worker *w, const char *group, const char *text, size_t len);

/* The same for an entry of --orders-stream (ostream.c): as on the fleet channel, but
 * the order must carry an id; with the stream on, every order id is applied once
 * whichever way it came (a duplicate is counted and dropped unanswered). */
void apply_stream_order_text(struct worker *w, const char *text, size_t len);

/* From the worker's tick: once connections have closed, drops them from the jobs that
 * still hold them (APPLY_SWEEP entries a tick at most), freeing what they held and
 * ending the jobs left with none. */
void apply_tick(struct worker *w);

#endif /* WSGATE_WORKER_APPLY_H */
