/* worker/outq: the output queue is pure code (no I/O), so it is tested here like
 * common/: what outq_iov() offers, what outq_consume() frees, which segments
 * outq_drop_data() keeps, the memory it counts, and every allocation failing. */

#include <stdlib.h>
#include <string.h>

#include "tests/unit/check.h"
#include "worker/outq.h"

static struct iovec iov_of(const char *s)
{
    struct iovec v = {(void *)(uintptr_t)s, strlen(s)};
    return v;
}

static int push(struct outq **q, unsigned kind, const char *s)
{
    struct iovec v = iov_of(s);
    return outq_push(q, kind, &v, 1, 0);
}

/* The queue's pending bytes, concatenated into buf (NUL-terminated). */
static const char *flat(const struct outq *q, char *buf, size_t cap)
{
    struct iovec v[16];
    bool all;
    int n = outq_iov(q, v, 16, &all);
    size_t at = 0;

    for (int i = 0; i < n && at + v[i].iov_len < cap; i++) {
        memcpy(buf + at, v[i].iov_base, v[i].iov_len);
        at += v[i].iov_len;
    }
    buf[at] = '\0';
    return buf;
}

static void test_outq_empty_queue_is_null(void)
{
    struct outq *q = NULL;
    struct iovec v[2];
    bool all = false;

    CHECK(outq_bytes(q) == 0 && outq_pending(q) == 0);
    CHECK(outq_iov(q, v, 2, &all) == 0 && all);
    outq_consume(&q, 10);
    CHECK(outq_drop_data(&q) == 0 && q == NULL);
    outq_free(NULL);
}

static void test_outq_pushes_in_order_and_frees_when_written(void)
{
    struct outq *q = NULL;
    char buf[64];

    CHECK(push(&q, OUTQ_CTRL, "HTTP/1.1 101\r\n\r\n") == 0 && q != NULL);
    CHECK(push(&q, OUTQ_DATA, "hello") == 0);
    CHECK(push(&q, OUTQ_CTRL, "pong") == 0);
    CHECK(outq_pending(q) == 16 + 5 + 4);
    CHECK(outq_bytes(q) == outq_cost(16) + outq_cost(5) + outq_cost(4));
    CHECK(strcmp(flat(q, buf, sizeof(buf)), "HTTP/1.1 101\r\n\r\nhellopong") == 0);
    outq_consume(&q, 18); /* the answer and "he" */
    CHECK(strcmp(flat(q, buf, sizeof(buf)), "llopong") == 0);
    CHECK(outq_bytes(q) == outq_cost(5) + outq_cost(4)); /* the answer was freed */
    outq_consume(&q, 7);
    CHECK(q == NULL);
}

static void test_outq_iov_says_when_it_holds_only_part(void)
{
    struct outq *q = NULL;
    struct iovec v[2];
    bool all = true;

    push(&q, OUTQ_DATA, "a");
    push(&q, OUTQ_DATA, "b");
    push(&q, OUTQ_DATA, "c");
    CHECK(outq_iov(q, v, 2, &all) == 2 && !all);
    outq_consume(&q, 1);
    CHECK(outq_iov(q, v, 2, &all) == 2 && all);
    outq_free(q);
}

/* A slow consumer: data frames not begun are dropped, the one on the wire finishes,
 * control frames stay in their places. */
static void test_outq_drop_keeps_started_and_control(void)
{
    struct outq *q = NULL;
    char buf[64];

    push(&q, OUTQ_DATA, "one");
    push(&q, OUTQ_DATA, "two");
    push(&q, OUTQ_CTRL, "PING");
    push(&q, OUTQ_DATA, "three");
    outq_consume(&q, 1); /* "o" is on the wire */
    CHECK(outq_drop_data(&q) == 3 + 5);
    CHECK(strcmp(flat(q, buf, sizeof(buf)), "nePING") == 0);
    CHECK(outq_bytes(q) == outq_cost(3) + outq_cost(4));
    CHECK(push(&q, OUTQ_CTRL, "CLOSE") == 0); /* the tail is right after a drop */
    CHECK(strcmp(flat(q, buf, sizeof(buf)), "nePINGCLOSE") == 0);
    outq_free(q);

    q = NULL; /* nothing started: every data frame goes, the queue with them */
    push(&q, OUTQ_DATA, "one");
    push(&q, OUTQ_DATA, "two");
    CHECK(outq_drop_data(&q) == 6 && q == NULL);
}

/* A TLS record waiting for its retry holds the first bytes: every segment it reaches
 * stays, whole, however the record cuts them; the rest may go. */
static void test_outq_pin_keeps_what_a_record_holds(void)
{
    struct outq *q = NULL;
    char buf[64];

    push(&q, OUTQ_DATA, "one");
    push(&q, OUTQ_DATA, "two");
    push(&q, OUTQ_DATA, "three");
    outq_pin(q, 4); /* "one" and the "t" of "two" */
    CHECK(outq_drop_data(&q) == 5);
    CHECK(strcmp(flat(q, buf, sizeof(buf)), "onetwo") == 0);
    outq_pin(q, 0);
    outq_pin(q, 100); /* more than it holds: all of it */
    CHECK(outq_drop_data(&q) == 0);
    outq_consume(&q, 6);
    CHECK(q == NULL);
    outq_pin(NULL, 10);

    push(&q, OUTQ_DATA, "abc");
    outq_pin(q, 3); /* exactly one segment */
    push(&q, OUTQ_DATA, "def");
    CHECK(outq_drop_data(&q) == 3);
    CHECK(strcmp(flat(q, buf, sizeof(buf)), "abc") == 0);
    outq_free(q);
}

/* A write that stopped inside a frame: the rest is queued as started. */
static void test_outq_push_with_skip_is_started(void)
{
    struct outq *q = NULL;
    struct iovec v[2] = {iov_of("head"), iov_of("payload")};
    char buf[64];

    CHECK(outq_push(&q, OUTQ_DATA, v, 2, 6) == 0);
    CHECK(strcmp(flat(q, buf, sizeof(buf)), "yload") == 0);
    CHECK(outq_bytes(q) == outq_cost(5));
    push(&q, OUTQ_DATA, "next");
    CHECK(outq_drop_data(&q) == 4);
    CHECK(strcmp(flat(q, buf, sizeof(buf)), "yload") == 0);
    outq_free(q);
}

/* One frame in two queues: each holds a reference; the last one out frees it (ASan
 * reports a leak or a double free otherwise). */
static void test_outq_shared_frame_is_counted(void)
{
    struct outq_frame *f = outq_frame_new(5);
    struct outq *a = NULL, *b = NULL;
    char buf[64];

    CHECK(f != NULL && f->refcnt == 1);
    memcpy(f->data, "fanout", 5);
    CHECK(outq_push_frame(&a, OUTQ_DATA, f, 0) == 0);
    CHECK(outq_push_frame(&b, OUTQ_DATA, f, 2) == 0);
    CHECK(f->refcnt == 3);
    outq_frame_unref(f); /* the sender's own reference */
    CHECK(strcmp(flat(a, buf, sizeof(buf)), "fanou") == 0);
    CHECK(strcmp(flat(b, buf, sizeof(buf)), "nou") == 0);
    CHECK(outq_bytes(a) == outq_cost(5) && outq_bytes(b) == outq_cost(5));
    CHECK(outq_drop_data(&b) == 0); /* started in b */
    outq_consume(&a, 5);
    CHECK(a == NULL && f->refcnt == 1);
    CHECK(outq_drop_data(&b) == 0 && b != NULL);
    outq_free(b);
    outq_frame_unref(NULL);
}

static int done_calls;

static void count_done(struct outq_frame *f)
{
    CHECK(f->refcnt == 0 && f->arg == &done_calls && f->stamp == 42);
    done_calls++;
}

/* done runs once, when the last queue let go of the frame, whichever way: written,
 * dropped as a slow consumer's, or freed with its connection. */
static void test_outq_frame_done_runs_at_the_last_reference(void)
{
    struct outq_frame *f = outq_frame_new(3);
    struct outq *a = NULL, *b = NULL, *c = NULL;

    CHECK(f != NULL && f->done == NULL);
    if (f == NULL)
        return;
    memcpy(f->data, "msg", 3);
    f->done = count_done;
    f->arg = &done_calls;
    f->stamp = 42;
    CHECK(outq_push_frame(&a, OUTQ_DATA, f, 0) == 0);
    CHECK(outq_push_frame(&b, OUTQ_DATA, f, 0) == 0);
    CHECK(outq_push_frame(&c, OUTQ_DATA, f, 1) == 0);
    outq_frame_unref(f); /* the sender's */
    outq_consume(&a, 3);
    CHECK(done_calls == 0 && outq_drop_data(&b) == 3 && b == NULL);
    CHECK(done_calls == 0);
    outq_free(c);
    CHECK(done_calls == 1);
}

/* A twin (the compressed form of a pushed message) keeps its base: the base's done
 * runs only once the copies of both forms are gone, whichever goes last. */
static void test_outq_twin_keeps_its_base(void)
{
    for (int twin_last = 0; twin_last < 2; twin_last++) {
        struct outq_frame *f = outq_frame_new(3), *z = outq_frame_new(2);
        struct outq *plain = NULL, *zipped = NULL;
        int before = done_calls;

        CHECK(f != NULL && z != NULL && z->base == NULL);
        if (f == NULL || z == NULL)
            return;
        f->done = count_done;
        f->arg = &done_calls;
        f->stamp = 42;
        z->base = outq_frame_ref(f);
        CHECK(f->refcnt == 2);
        CHECK(outq_push_frame(&plain, OUTQ_DATA, f, 0) == 0);
        CHECK(outq_push_frame(&zipped, OUTQ_DATA, z, 0) == 0);
        outq_frame_unref(f); /* the job's references */
        outq_frame_unref(z);
        if (twin_last) {
            outq_consume(&plain, 3);
            CHECK(done_calls == before && plain == NULL);
            outq_consume(&zipped, 2);
        } else {
            outq_free(zipped);
            CHECK(done_calls == before);
            outq_consume(&plain, 3);
        }
        CHECK(done_calls == before + 1);
    }
}

static void test_outq_every_allocation_fails_cleanly(void)
{
    for (unsigned long n = 1;; n++) {
        struct outq *q = NULL;
        struct outq_frame *f;
        unsigned long used;
        int r1, r2, r3 = -1;
        char buf[64];

        chaos_fail_at(n);
        r1 = push(&q, OUTQ_DATA, "abc");
        r2 = push(&q, OUTQ_CTRL, "de");
        f = outq_frame_new(2);
        if (f != NULL) {
            memcpy(f->data, "fg", 2);
            r3 = outq_push_frame(&q, OUTQ_DATA, f, 0);
        }
        used = chaos_allocations();
        chaos_fail_at(0);
        CHECK(outq_pending(q) == (r1 == 0 ? 3u : 0u) + (r2 == 0 ? 2u : 0u) + (r3 == 0 ? 2u : 0u));
        if (r1 == 0 && r2 == 0 && r3 == 0)
            CHECK(strcmp(flat(q, buf, sizeof(buf)), "abcdefg") == 0);
        outq_frame_unref(f);
        outq_free(q);
        if (n > used)
            break;
    }
}

void suite_outq(void)
{
    test_outq_empty_queue_is_null();
    test_outq_pushes_in_order_and_frees_when_written();
    test_outq_iov_says_when_it_holds_only_part();
    test_outq_drop_keeps_started_and_control();
    test_outq_push_with_skip_is_started();
    test_outq_pin_keeps_what_a_record_holds();
    test_outq_shared_frame_is_counted();
    test_outq_frame_done_runs_at_the_last_reference();
    test_outq_twin_keeps_its_base();
    test_outq_every_allocation_fails_cleanly();
}
