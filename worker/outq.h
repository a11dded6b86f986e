#ifndef WSGATE_WORKER_OUTQ_H
#define WSGATE_WORKER_OUTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/*
 * A connection's output queue: the bytes the kernel did not take yet, as a list of
 * segments, one per frame (or HTTP answer). A segment either owns a copy of its
 * bytes or holds a counted reference to a shared frame, built once and queued into
 * many connections. The queue is written with one writev() from outq_iov(), knows
 * which segment is partly on the wire, and counts the memory it holds, so a caller
 * can bound it. Pure code: no I/O, no event loop.
 *
 * An empty queue is NULL: a connection with nothing pending holds nothing. The
 * functions that change a queue take its address and free it when it empties.
 */

/* A frame shared by several queues: created with one reference, freed by the last
 * outq_frame_unref(). Its bytes are what goes on the wire, never changed once queued.
 * The last reference goes when every queue has written (or dropped) its copy: done,
 * when set, is called then, just before the free, with arg and stamp as the caller
 * left them (apply.c times deliveries so).
 *
 * A frame may be another's twin: the same message in another form (compressed with
 * permessage-deflate, worker/deflate.h) for the recipients that take it. The twin
 * holds a reference to the frame it was made from (base), dropped when the twin is
 * freed, so the base's done runs once every copy of either form has left. */
struct outq_frame {
    uint32_t refcnt;
    size_t len;
    void (*done)(struct outq_frame *f); /* NULL: nothing to call */
    void *arg;                          /* the caller's, for done */
    uint64_t stamp;                     /* the caller's, for done */
    struct outq_frame *base;            /* a twin's counted reference to its base, or NULL */
    uint8_t data[];
};

/* A frame of len bytes (data not initialised), one reference, no done callback; NULL
 * when memory runs out. */
struct outq_frame *outq_frame_new(size_t len);

/* Takes another reference to f; returns f. */
struct outq_frame *outq_frame_ref(struct outq_frame *f);

/* Drops a reference; the last one calls f->done (when set) and frees f. NULL does
 * nothing. */
void outq_frame_unref(struct outq_frame *f);

/* Segment kinds. A data frame that has not started on the wire may be dropped
 * (outq_drop_data); everything else (pings, pongs, close frames, handshake and
 * HTTP answers) always leaves in order. */
#define OUTQ_CTRL 0
#define OUTQ_DATA 1

/* Opaque; created by the first push. */
struct outq;

/* Memory a segment of len bytes holds: what a push adds to outq_bytes(). */
size_t outq_cost(size_t len);

/* Memory the queue holds (segments and their bytes; a shared frame counts in full
 * in each queue that holds it). 0 for NULL. */
size_t outq_bytes(const struct outq *q);

/* Bytes still to write. 0 for NULL. */
size_t outq_pending(const struct outq *q);

/*
 * Appends a copy of the bytes of iov[0..iovcnt) from byte skip on, as one segment of
 * kind. skip > 0 says the first skip bytes are already on the wire: the segment is
 * started (never dropped); only allowed when *pq is empty. Creates the queue when
 * *pq is NULL. Returns 0, or -1 when memory runs out (the queue is unchanged).
 */
int outq_push(struct outq **pq, unsigned kind, const struct iovec *iov, int iovcnt, size_t skip);

/* Appends a reference to f (taken here; the caller keeps its own), from byte skip on,
 * with the same rules as outq_push(). Returns 0, or -1 when memory runs out. */
int outq_push_frame(struct outq **pq, unsigned kind, struct outq_frame *f, size_t skip);

/* Fills iov[0..max) with the pending bytes from the head on. Returns the number of
 * entries; *all says whether they hold the whole queue. Borrowed: valid until the
 * queue changes. */
int outq_iov(const struct outq *q, struct iovec *iov, int max, bool *all);

/* Marks n bytes from the head as written (n <= outq_pending()); frees the segments
 * done, and the queue when it is empty (*pq becomes NULL). */
void outq_consume(struct outq **pq, size_t n);

/* Marks the segments holding the first n pending bytes as started, so they are never
 * dropped: bytes that a TLS record holds while its write waits to be retried count as
 * begun on the wire (worker/io.h). NULL does nothing. */
void outq_pin(struct outq *q, size_t n);

/* Drops every data segment that has not started on the wire; the segment partly
 * written, and everything else, stays in order. Returns the bytes dropped. */
size_t outq_drop_data(struct outq **pq);

/* Frees q and every segment (frames lose one reference). NULL does nothing. */
void outq_free(struct outq *q);

#endif /* WSGATE_WORKER_OUTQ_H */
