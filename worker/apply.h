#ifndef WSGATE_WORKER_APPLY_H
#define WSGATE_WORKER_APPLY_H

#include <stddef.h>
#include <stdint.h>

struct worker;

/*
 * Orders from Redis: parse and check (common/order.c), match against this worker's
 * indexes, then close the matches in batches of at most APPLY_BATCH per loop turn, at
 * random moments across spread_ms, and acknowledge on reply_to when done.
 */

#define APPLY_BATCH 1024

/* Counters by refusal key: "json", "code", ... (order_error.key). */
#define APPLY_REFUSE_KEYS 26

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
};

/* The refusal keys, in the order of apply_stats.refused_by; NULL-terminated. */
extern const char *const apply_refuse_keys[];

struct order;

/* Matches and closes per o (a close order, or an "all" order built by the drain);
 * by names the closer in logs and events ("order:<id>" when NULL). */
struct job;

/* When owner is not NULL, *owner points to the job while it runs and is set to NULL
 * when it ends. */
void apply_close_order(struct worker *w, const struct order *o, const char *by, struct job **owner);

/* Makes every remaining close of j due now (still at most APPLY_BATCH a loop turn). */
void apply_job_hurry(struct job *j);

/* Handles one message from the orders channels. With --order-key, the message must be
 * a signed envelope (common/order_sig.h): one that does not verify is counted and logged,
 * never answered; a verified order that is stale, lacks ts or id, or was seen already
 * is answered on its reply_to with the error. */
void apply_order_text(struct worker *w, const char *text, size_t len);

#endif /* WSGATE_WORKER_APPLY_H */
