#include "worker/outq.h"

#include <stdlib.h>
#include <string.h>

#define SEG_STARTED 0x80 /* some of its bytes are on the wire: it is never dropped */

struct seg {
    struct seg *next;
    struct outq_frame *frame; /* counted reference, or NULL: the bytes are in data[] */
    const uint8_t *p;         /* first byte still to write */
    size_t len;               /* bytes still to write */
    size_t cost;              /* what it adds to q->bytes */
    uint8_t kind;             /* OUTQ_DATA or OUTQ_CTRL, | SEG_STARTED */
    uint8_t data[];
};

struct outq {
    struct seg *head;
    struct seg *tail;
    size_t bytes;   /* memory held, the sum of the segments' cost */
    size_t pending; /* bytes still to write */
};

struct outq_frame *outq_frame_new(size_t len)
{
    struct outq_frame *f = malloc(sizeof(*f) + len);

    if (f == NULL)
        return NULL;
    f->refcnt = 1;
    f->len = len;
    f->done = NULL;
    f->arg = NULL;
    f->stamp = 0;
    f->base = NULL;
    return f;
}

struct outq_frame *outq_frame_ref(struct outq_frame *f)
{
    f->refcnt++;
    return f;
}

void outq_frame_unref(struct outq_frame *f)
{
    struct outq_frame *base;

    if (f == NULL || --f->refcnt > 0)
        return;
    if (f->done != NULL)
        f->done(f);
    base = f->base;
    free(f);
    outq_frame_unref(base); /* a twin's base: at most one level */
}

size_t outq_cost(size_t len)
{
    return sizeof(struct seg) + len;
}

size_t outq_bytes(const struct outq *q)
{
    return q != NULL ? q->bytes : 0;
}

size_t outq_pending(const struct outq *q)
{
    return q != NULL ? q->pending : 0;
}

static void seg_free(struct seg *s)
{
    outq_frame_unref(s->frame);
    free(s);
}

/* Links s at the tail, creating the queue when needed. Returns -1 when memory runs
 * out (s is not freed). */
static int link_seg(struct outq **pq, struct seg *s)
{
    struct outq *q = *pq;

    if (q == NULL) {
        q = calloc(1, sizeof(*q));
        if (q == NULL)
            return -1;
        *pq = q;
    }
    s->next = NULL;
    if (q->tail != NULL)
        q->tail->next = s;
    else
        q->head = s;
    q->tail = s;
    q->bytes += s->cost;
    q->pending += s->len;
    return 0;
}

int outq_push(struct outq **pq, unsigned kind, const struct iovec *iov, int iovcnt, size_t skip)
{
    size_t total = 0, at = 0, left = skip;
    struct seg *s;

    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (skip > total)
        skip = left = total;
    s = malloc(sizeof(*s) + (total - skip));
    if (s == NULL)
        return -1;
    for (int i = 0; i < iovcnt; i++) {
        const uint8_t *p = iov[i].iov_base;
        size_t n = iov[i].iov_len;
        if (left >= n) {
            left -= n;
            continue;
        }
        memcpy(s->data + at, p + left, n - left);
        at += n - left;
        left = 0;
    }
    s->frame = NULL;
    s->p = s->data;
    s->len = total - skip;
    s->cost = outq_cost(total - skip);
    s->kind = (uint8_t)(kind | (skip > 0 ? SEG_STARTED : 0));
    if (link_seg(pq, s) < 0) {
        free(s);
        return -1;
    }
    return 0;
}

int outq_push_frame(struct outq **pq, unsigned kind, struct outq_frame *f, size_t skip)
{
    struct seg *s = malloc(sizeof(*s));

    if (s == NULL)
        return -1;
    if (skip > f->len)
        skip = f->len;
    s->frame = f;
    s->p = f->data + skip;
    s->len = f->len - skip;
    s->cost = outq_cost(f->len);
    s->kind = (uint8_t)(kind | (skip > 0 ? SEG_STARTED : 0));
    if (link_seg(pq, s) < 0) {
        free(s);
        return -1;
    }
    outq_frame_ref(f);
    return 0;
}

int outq_iov(const struct outq *q, struct iovec *iov, int max, bool *all)
{
    int n = 0;
    const struct seg *s = q != NULL ? q->head : NULL;

    for (; s != NULL && n < max; s = s->next) {
        iov[n].iov_base = (void *)(uintptr_t)s->p;
        iov[n].iov_len = s->len;
        n++;
    }
    *all = s == NULL;
    return n;
}

void outq_consume(struct outq **pq, size_t n)
{
    struct outq *q = *pq;

    if (q == NULL)
        return;
    if (n > q->pending)
        n = q->pending;
    q->pending -= n;
    while (q->head != NULL) {
        struct seg *s = q->head;
        if (n < s->len) {
            s->p += n;
            s->len -= n;
            if (n > 0)
                s->kind |= SEG_STARTED;
            break;
        }
        n -= s->len;
        q->head = s->next;
        q->bytes -= s->cost;
        seg_free(s);
    }
    if (q->head == NULL) {
        free(q);
        *pq = NULL;
    }
}

void outq_pin(struct outq *q, size_t n)
{
    for (struct seg *s = q != NULL ? q->head : NULL; s != NULL && n > 0; s = s->next) {
        s->kind |= SEG_STARTED;
        n -= n < s->len ? n : s->len;
    }
}

size_t outq_drop_data(struct outq **pq)
{
    struct outq *q = *pq;
    struct seg **link, *prev = NULL;
    size_t dropped = 0;

    if (q == NULL)
        return 0;
    for (link = &q->head; *link != NULL;) {
        struct seg *s = *link;
        if ((s->kind & ~SEG_STARTED) != OUTQ_DATA || (s->kind & SEG_STARTED)) {
            prev = s;
            link = &s->next;
            continue;
        }
        *link = s->next;
        dropped += s->len;
        q->pending -= s->len;
        q->bytes -= s->cost;
        seg_free(s);
    }
    q->tail = prev;
    if (q->head == NULL) {
        free(q);
        *pq = NULL;
    }
    return dropped;
}

void outq_free(struct outq *q)
{
    if (q == NULL)
        return;
    while (q->head != NULL) {
        struct seg *s = q->head;
        q->head = s->next;
        seg_free(s);
    }
    free(q);
}
