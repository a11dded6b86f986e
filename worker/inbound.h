#ifndef WSGATE_WORKER_INBOUND_H
#define WSGATE_WORKER_INBOUND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct conn;
struct worker;

/*
 * Client messages to backends (--inbound publish or stream): each whole data message
 * becomes a JSON envelope, PUBLISHed on --inbound-channel or XADDed to
 * --inbound-stream through the worker's Redis publisher (redis.c).
 *
 * Every envelope is held, and counted against --inbound-max-pending, from the moment
 * it is made until Redis answers it: queued while the publisher is down, then in
 * flight. While the publisher is down or more than half the budget is held, a
 * connection that hands over a message, or has input to read, stops being read
 * (CONN_PAUSE_INBOUND, on the worker's TL_PAUSED list, so no keepalive runs against it)
 * and TCP pushes back on the client; at a quarter, with the publisher up, every paused
 * connection is read again. A message that would take the budget past its end (more
 * than half of it in one read) is dropped and counted. A stream entry whose link fails before its
 * answer is sent again when the link is back (at least once); a publish is not (at
 * most once).
 */

enum inbound_drop {
    INBOUND_DROP_MODE,    /* --inbound drop: by design */
    INBOUND_DROP_FULL,    /* --inbound-max-pending full */
    INBOUND_DROP_LOST,    /* a publish whose link failed before Redis answered */
    INBOUND_DROP_REFUSED, /* Redis answered with an error (ACL, wrong type, OOM) */
    INBOUND_DROP_MEMORY,  /* out of memory making the envelope */
    INBOUND_DROP_COUNT
};

/* The label values of enum inbound_drop in /metrics, NULL-terminated. */
extern const char *const inbound_drop_keys[];

struct inbound_stats {
    uint64_t published; /* PUBLISH answered */
    uint64_t streamed;  /* XADD answered */
    uint64_t bytes;     /* payload bytes of those messages */
    uint64_t retried;   /* stream entries sent again after their link failed */
    uint64_t pauses;    /* times a connection was paused for inbound backpressure */
    uint64_t dropped[INBOUND_DROP_COUNT];
    uint64_t paused; /* gauge: connections paused now */
    uint64_t held;   /* gauge: envelope bytes queued or in flight */
};

/* Prepares the worker's inbound state when the mode needs Redis. Returns 0, or -1
 * when memory runs out. */
int inbound_start(struct worker *w);

/* A whole data message from c (op WS_OP_TEXT or WS_OP_BINARY), borrowed for the call. */
void inbound_message(struct conn *c, unsigned op, const uint8_t *p, size_t len);

/* Whether the worker reads no client messages now (publisher down, or over half of
 * --inbound-max-pending held): an open connection with input is paused before it is
 * read, so what is already held is all that can pass the half. */
bool inbound_blocked(const struct worker *w);

/* The publisher is up: sends what waited, and reads paused clients again if it can. */
void inbound_on_up(struct worker *w);

/* Refreshes the gauges (the worker's tick). */
void inbound_tick(struct worker *w);

#endif /* WSGATE_WORKER_INBOUND_H */
