#include <stdlib.h>
#include <string.h>

#include "common/ws_dec.h"
#include "tests/unit/check.h"

#define MAX_DEFAULT (1u << 20)

/* --- growable byte buffer -------------------------------------------------------------- */

struct bytes {
    uint8_t *p;
    size_t len;
    size_t cap;
};

static void bytes_add(struct bytes *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        uint8_t *np;

        while (cap < b->len + n)
            cap *= 2;
        np = realloc(b->p, cap);
        if (np == NULL) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        b->p = np;
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void bytes_free(struct bytes *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* --- building client frames ------------------------------------------------------------ */

#define F_UNMASKED 0x1 /* leave the mask bit clear */
#define F_LEN16    0x2 /* 16-bit length even when 7 bits would do */
#define F_LEN64    0x4 /* 64-bit length even when fewer bits would do */

static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d}; /* RFC 6455 §5.7 */

/* Appends a client frame with first byte b0 and payload[0..len) (len 'x' when NULL). */
static void add_frame(struct bytes *w, uint8_t b0, const void *payload, size_t len, unsigned flags)
{
    uint8_t hdr[14];
    size_t h = 0;
    uint8_t m = (flags & F_UNMASKED) ? 0 : 0x80;

    hdr[h++] = b0;
    if (len < 126 && !(flags & (F_LEN16 | F_LEN64))) {
        hdr[h++] = (uint8_t)(m | len);
    } else if (len <= 0xffff && !(flags & F_LEN64)) {
        hdr[h++] = (uint8_t)(m | 126);
        hdr[h++] = (uint8_t)(len >> 8);
        hdr[h++] = (uint8_t)len;
    } else {
        hdr[h++] = (uint8_t)(m | 127);
        for (int i = 7; i >= 0; i--)
            hdr[h++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    if (m) {
        memcpy(hdr + h, key, 4);
        h += 4;
    }
    bytes_add(w, hdr, h);
    for (size_t i = 0; i < len; i++) {
        uint8_t c = payload ? ((const uint8_t *)payload)[i] : (uint8_t)'x';

        if (m)
            c ^= key[i & 3];
        bytes_add(w, &c, 1);
    }
}

/* --- feeding and recording ------------------------------------------------------------- */

/* What came out of a decoder: the same for every way of cutting the input. */
struct result {
    struct bytes log; /* per finished message: opcode, 8-byte length, payload */
    size_t messages;
    int rc; /* 0, or -1 once failed */
    unsigned code;
    size_t bad; /* broken invariants (counted, checked once) */
};

struct sink {
    struct result r;
    struct bytes msg; /* the data message being gathered */
    uint8_t msg_op;
    struct bytes ctl; /* the control frame being gathered */
};

static void record(struct result *r, uint8_t op, const struct bytes *b)
{
    uint8_t len[8];

    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)((uint64_t)b->len >> (56 - 8 * i));
    bytes_add(&r->log, &op, 1);
    bytes_add(&r->log, len, 8);
    bytes_add(&r->log, b->p, b->len);
    r->messages++;
}

static void sink_event(struct sink *s, const struct ws_dec_out *o)
{
    if (o->msg_end && !o->frame_end)
        s->r.bad++;
    if (o->control) {
        if (o->opcode != WS_OP_CLOSE && o->opcode != WS_OP_PING && o->opcode != WS_OP_PONG)
            s->r.bad++;
        bytes_add(&s->ctl, o->data, o->len);
        if (o->frame_end != o->msg_end || s->ctl.len > 125)
            s->r.bad++;
        if (o->frame_end) {
            record(&s->r, o->opcode, &s->ctl);
            s->ctl.len = 0;
        }
        return;
    }
    if (o->opcode != WS_OP_TEXT && o->opcode != WS_OP_BINARY)
        s->r.bad++;
    if (s->ctl.len > 0) /* a control frame is never interrupted */
        s->r.bad++;
    if (s->msg_op == 0)
        s->msg_op = o->opcode;
    else if (s->msg_op != o->opcode)
        s->r.bad++;
    bytes_add(&s->msg, o->data, o->len);
    if (o->msg_end) {
        record(&s->r, s->msg_op, &s->msg);
        s->msg.len = 0;
        s->msg_op = 0;
    }
}

/* Feeds one piece from its own exact allocation, so ASan sees any over-read. */
static void feed_piece(struct ws_dec *d, struct sink *s, const uint8_t *src, size_t len)
{
    uint8_t *buf;
    size_t off = 0;

    if (s->r.rc < 0 || len == 0)
        return;
    buf = malloc(len);
    if (buf == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    memcpy(buf, src, len);
    while (off < len) {
        struct ws_dec_out o;
        ssize_t n = ws_dec_feed(d, buf + off, len - off, &o);

        if (n < 0) {
            s->r.rc = -1;
            s->r.code = d->close_code;
            if (d->why == NULL || o.ready ||
                (d->close_code != 1002 && d->close_code != 1007 && d->close_code != 1009))
                s->r.bad++;
            break;
        }
        if (n == 0 && !o.ready) { /* no progress: a stuck decoder */
            s->r.bad++;
            break;
        }
        if (o.ready) {
            if (o.len > 0 && (o.data < buf + off || o.data + o.len > buf + off + (size_t)n))
                s->r.bad++;
            else
                sink_event(s, &o);
        }
        off += (size_t)n;
    }
    free(buf);
}

static void finish(struct ws_dec *d, struct sink *s, struct result *r)
{
    struct ws_dec_out o;
    uint8_t one = 0x81;

    if (s->r.rc < 0 && (ws_dec_feed(d, &one, 1, &o) != -1 || o.ready)) /* sticky */
        s->r.bad++;
    bytes_free(&s->msg);
    bytes_free(&s->ctl);
    *r = s->r;
}

/* Feeds wire[0..len) cut into pieces of the given sizes (their sum is len). */
static void run_pieces(const uint8_t *wire, size_t len, const size_t *sizes, size_t n, uint64_t max,
                       struct result *r)
{
    struct ws_dec d;
    struct sink s;
    size_t off = 0;

    memset(&s, 0, sizeof(s));
    ws_dec_init(&d, max);
    for (size_t i = 0; i < n && off < len; i++) {
        feed_piece(&d, &s, wire + off, sizes[i]);
        off += sizes[i];
    }
    finish(&d, &s, r);
}

static bool same_result(const struct result *a, const struct result *b)
{
    return a->rc == b->rc && a->code == b->code && a->messages == b->messages &&
           a->log.len == b->log.len &&
           (a->log.len == 0 || memcmp(a->log.p, b->log.p, a->log.len) == 0) && a->bad == 0 &&
           b->bad == 0;
}

static uint32_t rng_state;

static uint32_t rng(void)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return rng_state >> 8;
}

/*
 * Feeds wire whole, at every cut (sampled for long inputs), byte by byte and in
 * seeded random splits; every run must give the whole run's result, which is
 * returned in *whole (the caller frees whole->log). Returns true when all agree.
 */
static bool run_all_splits(const char *name, const uint8_t *wire, size_t len, uint64_t max,
                           struct result *whole)
{
    size_t *sizes = malloc((len + 2) * sizeof(*sizes));
    size_t mismatches = 0;
    struct result r;

    if (sizes == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    sizes[0] = len;
    run_pieces(wire, len, sizes, 1, max, whole);
    if (whole->bad != 0)
        mismatches++;

    for (size_t cut = 0; cut <= len; cut++) {
        if (len > 600 && cut > 40 && cut + 40 < len && cut % 997 != 0)
            continue;
        sizes[0] = cut;
        sizes[1] = len - cut;
        run_pieces(wire, len, sizes, 2, max, &r);
        mismatches += !same_result(whole, &r);
        bytes_free(&r.log);
    }

    for (size_t i = 0; i < len; i++)
        sizes[i] = 1;
    run_pieces(wire, len, sizes, len, max, &r);
    mismatches += !same_result(whole, &r);
    bytes_free(&r.log);

    rng_state = 0x5eed1234u ^ (uint32_t)len;
    for (int round = 0; round < 50; round++) {
        size_t n = 0, off = 0, span = 1 + rng() % (round < 25 ? 16 : 300);

        while (off < len) {
            size_t k = 1 + rng() % span;

            if (k > len - off)
                k = len - off;
            sizes[n++] = k;
            off += k;
        }
        run_pieces(wire, len, sizes, n, max, &r);
        mismatches += !same_result(whole, &r);
        bytes_free(&r.log);
    }
    free(sizes);
    if (mismatches != 0)
        fprintf(stderr, "  ws_dec stream %s: %zu runs disagree\n", name, mismatches);
    return mismatches == 0;
}

/* Runs every split and checks the final verdict and the number of messages. */
static void expect_stream(const char *name, const struct bytes *w, uint64_t max, unsigned code,
                          size_t messages)
{
    struct result whole;
    bool ok = run_all_splits(name, w->p, w->len, max, &whole);

    CHECK(ok);
    ok = whole.code == code && whole.rc == (code ? -1 : 0) && whole.messages == messages;
    CHECK(ok);
    if (!ok)
        fprintf(stderr, "  ws_dec stream %s: code %u (want %u), %zu messages (want %zu)\n", name,
                whole.code, code, whole.messages, messages);
    bytes_free(&whole.log);
}

/* Message i of a result: its opcode and payload. */
static bool log_message(const struct result *r, size_t i, uint8_t *op, const uint8_t **p,
                        size_t *len)
{
    size_t off = 0;

    for (size_t k = 0; off + 9 <= r->log.len; k++) {
        uint64_t n = 0;

        for (int b = 0; b < 8; b++)
            n = n << 8 | r->log.p[off + 1 + (size_t)b];
        if (k == i) {
            *op = r->log.p[off];
            *p = r->log.p + off + 9;
            *len = (size_t)n;
            return true;
        }
        off += 9 + (size_t)n;
    }
    return false;
}

static bool has_message(const struct result *r, size_t i, uint8_t op, const void *p, size_t len)
{
    uint8_t got_op;
    const uint8_t *got;
    size_t got_len;

    return log_message(r, i, &got_op, &got, &got_len) && got_op == op && got_len == len &&
           (len == 0 || memcmp(got, p, len) == 0);
}

/* --- RFC 6455 §5.7 examples ------------------------------------------------------------ */

static void test_ws_dec_rfc_examples(void)
{
    static const uint8_t hello[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                    0x7f, 0x9f, 0x4d, 0x51, 0x58};
    static const uint8_t pong[] = {0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                   0x7f, 0x9f, 0x4d, 0x51, 0x58};
    static const uint8_t unmasked[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
    struct bytes w = {0};
    struct result r;
    uint8_t big[65536];

    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7 + 3);

    bytes_add(&w, hello, sizeof(hello));
    CHECK(run_all_splits("hello", w.p, w.len, MAX_DEFAULT, &r));
    CHECK(r.rc == 0 && r.messages == 1 && has_message(&r, 0, WS_OP_TEXT, "Hello", 5));
    bytes_free(&r.log);
    bytes_free(&w);

    bytes_add(&w, pong, sizeof(pong));
    CHECK(run_all_splits("pong", w.p, w.len, MAX_DEFAULT, &r));
    CHECK(r.rc == 0 && r.messages == 1 && has_message(&r, 0, WS_OP_PONG, "Hello", 5));
    bytes_free(&r.log);
    bytes_free(&w);

    bytes_add(&w, unmasked, sizeof(unmasked)); /* a server must refuse it: §5.1 */
    expect_stream("unmasked hello", &w, MAX_DEFAULT, 1002, 0);
    bytes_free(&w);

    /* "Hel" + "lo" with a ping in between */
    add_frame(&w, 0x01, "Hel", 3, 0);
    add_frame(&w, 0x89, "Hello", 5, 0);
    add_frame(&w, 0x80, "lo", 2, 0);
    CHECK(run_all_splits("fragmented hello", w.p, w.len, MAX_DEFAULT, &r));
    CHECK(r.rc == 0 && r.messages == 2 && has_message(&r, 0, WS_OP_PING, "Hello", 5) &&
          has_message(&r, 1, WS_OP_TEXT, "Hello", 5));
    bytes_free(&r.log);
    bytes_free(&w);

    /* 256 bytes with a 16-bit length, 64 KiB with a 64-bit length */
    add_frame(&w, 0x82, big, 256, 0);
    CHECK(w.len == 2 + 2 + 4 + 256 && w.p[1] == 0xfe && w.p[2] == 0x01 && w.p[3] == 0x00);
    CHECK(run_all_splits("256 binary", w.p, w.len, MAX_DEFAULT, &r));
    CHECK(r.rc == 0 && r.messages == 1 && has_message(&r, 0, WS_OP_BINARY, big, 256));
    bytes_free(&r.log);
    bytes_free(&w);

    add_frame(&w, 0x82, big, sizeof(big), 0);
    CHECK(w.len == 2 + 8 + 4 + 65536 && w.p[1] == 0xff && w.p[7] == 0x01);
    CHECK(run_all_splits("64k binary", w.p, w.len, MAX_DEFAULT, &r));
    CHECK(r.rc == 0 && r.messages == 1 && has_message(&r, 0, WS_OP_BINARY, big, sizeof(big)));
    bytes_free(&r.log);
    bytes_free(&w);
}

/* The event fields, one call at a time, for a frame fed whole. */
static void test_ws_dec_event_fields(void)
{
    static const uint8_t hello[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                    0x7f, 0x9f, 0x4d, 0x51, 0x58};
    uint8_t *buf = malloc(sizeof(hello));
    struct ws_dec d;
    struct ws_dec_out o;

    if (buf == NULL)
        return;
    memcpy(buf, hello, sizeof(hello));
    ws_dec_init(&d, MAX_DEFAULT);
    CHECK(ws_dec_is_idle(&d));
    CHECK(ws_dec_feed(&d, buf, 1, &o) == 1 && !o.ready && !ws_dec_is_idle(&d));
    CHECK(ws_dec_feed(&d, buf + 1, 2, &o) == 2 && !o.ready && !ws_dec_is_idle(&d));
    CHECK(ws_dec_feed(&d, buf + 3, 5, &o) == 5 && o.ready && o.opcode == WS_OP_TEXT && !o.control &&
          o.data == buf + 6 && o.len == 2 && !o.frame_end && !o.msg_end);
    CHECK(memcmp(buf + 6, "He", 2) == 0); /* unmasked in place */
    CHECK(ws_dec_feed(&d, buf + 8, 3, &o) == 3 && o.ready && o.data == buf + 8 && o.len == 3 &&
          o.frame_end && o.msg_end);
    CHECK(memcmp(buf + 6, "Hello", 5) == 0);
    CHECK(ws_dec_is_idle(&d));
    CHECK(ws_dec_feed(&d, buf, 0, &o) == 0 && !o.ready);
    free(buf);
}

/* Continuation frames report the message opcode; msg_end only on the FIN frame. */
static void test_ws_dec_fragment_fields(void)
{
    struct bytes w = {0};
    struct ws_dec d;
    struct ws_dec_out o;
    size_t off = 0;
    ssize_t n;

    add_frame(&w, 0x02, "ab", 2, 0);
    add_frame(&w, 0x8a, "p", 1, 0);
    add_frame(&w, 0x80, "cd", 2, 0);
    ws_dec_init(&d, MAX_DEFAULT);
    n = ws_dec_feed(&d, w.p, w.len, &o);
    CHECK(n == 8 && o.ready && o.opcode == WS_OP_BINARY && o.frame_end && !o.msg_end);
    CHECK(!ws_dec_is_idle(&d));
    off += (size_t)n;
    n = ws_dec_feed(&d, w.p + off, w.len - off, &o);
    CHECK(n == 7 && o.ready && o.opcode == WS_OP_PONG && o.control && o.msg_end && o.len == 1);
    CHECK(!ws_dec_is_idle(&d)); /* the binary message is still open */
    off += (size_t)n;
    n = ws_dec_feed(&d, w.p + off, w.len - off, &o);
    CHECK(n == 8 && o.ready && o.opcode == WS_OP_BINARY && !o.control && o.msg_end &&
          memcmp(o.data, "cd", 2) == 0);
    CHECK(ws_dec_is_idle(&d));
    bytes_free(&w);
}

/* --- empty frames ---------------------------------------------------------------------- */

static void test_ws_dec_empty_frame_at_buffer_end(void)
{
    static const uint8_t empty[] = {0x81, 0x80, 0x37, 0xfa, 0x21, 0x3d};
    uint8_t *buf = malloc(sizeof(empty));
    struct ws_dec d;
    struct ws_dec_out o;

    if (buf == NULL)
        return;
    memcpy(buf, empty, sizeof(empty));
    ws_dec_init(&d, MAX_DEFAULT);
    CHECK(ws_dec_feed(&d, buf, sizeof(empty), &o) == 6);
    CHECK(o.ready && o.len == 0 && o.frame_end && o.msg_end && o.opcode == WS_OP_TEXT);
    CHECK(ws_dec_is_idle(&d));

    ws_dec_init(&d, MAX_DEFAULT);
    CHECK(ws_dec_feed(&d, buf, 5, &o) == 5 && !o.ready);
    CHECK(ws_dec_feed(&d, buf + 5, 1, &o) == 1 && o.ready && o.len == 0 && o.msg_end);
    free(buf);
}

static void test_ws_dec_empty_frames(void)
{
    struct bytes w = {0};
    struct result r;

    add_frame(&w, 0x81, "", 0, 0);
    add_frame(&w, 0x02, "", 0, 0);
    add_frame(&w, 0x89, "", 0, 0);
    add_frame(&w, 0x00, "", 0, 0);
    add_frame(&w, 0x80, "", 0, 0);
    add_frame(&w, 0x88, "", 0, 0);
    CHECK(run_all_splits("empty frames", w.p, w.len, MAX_DEFAULT, &r));
    CHECK(r.rc == 0 && r.messages == 4 && has_message(&r, 0, WS_OP_TEXT, "", 0) &&
          has_message(&r, 1, WS_OP_PING, "", 0) && has_message(&r, 2, WS_OP_BINARY, "", 0) &&
          has_message(&r, 3, WS_OP_CLOSE, "", 0));
    bytes_free(&r.log);
    bytes_free(&w);
}

/* --- lengths --------------------------------------------------------------------------- */

static void test_ws_dec_non_minimal_lengths_accepted(void)
{
    struct bytes w = {0};
    struct result r;

    add_frame(&w, 0x81, "Hello", 5, F_LEN16);
    add_frame(&w, 0x82, "Hello", 5, F_LEN64);
    add_frame(&w, 0x81, "", 0, F_LEN64);
    CHECK(run_all_splits("non-minimal lengths", w.p, w.len, MAX_DEFAULT, &r));
    CHECK(r.rc == 0 && r.messages == 3 && has_message(&r, 0, WS_OP_TEXT, "Hello", 5) &&
          has_message(&r, 1, WS_OP_BINARY, "Hello", 5) && has_message(&r, 2, WS_OP_TEXT, "", 0));
    bytes_free(&r.log);
    bytes_free(&w);
}

/* --- protocol errors (1002) ------------------------------------------------------------ */

struct frame {
    uint8_t b0;
    unsigned flags;
    size_t len;
    const char *data; /* NULL: len bytes of 'x' */
};

static const struct {
    const char *name;
    struct frame f[3];
    size_t nf;
    unsigned code;
    size_t messages; /* finished before the error */
} rules[] = {
    {"unmasked text", {{0x81, F_UNMASKED, 5, "Hello"}}, 1, 1002, 0},
    {"unmasked ping", {{0x89, F_UNMASKED, 0, ""}}, 1, 1002, 0},
    {"unmasked continuation", {{0x01, 0, 1, "a"}, {0x80, F_UNMASKED, 1, "b"}}, 2, 1002, 0},
    {"RSV1", {{0xc1, 0, 1, "a"}}, 1, 1002, 0},
    {"RSV2", {{0xa1, 0, 1, "a"}}, 1, 1002, 0},
    {"RSV3", {{0x91, 0, 1, "a"}}, 1, 1002, 0},
    {"RSV on ping", {{0xc9, 0, 0, ""}}, 1, 1002, 0},
    {"RSV on continuation", {{0x01, 0, 1, "a"}, {0x90, 0, 1, "b"}}, 2, 1002, 0},
    {"opcode 3", {{0x83, 0, 1, "a"}}, 1, 1002, 0},
    {"opcode 4", {{0x84, 0, 1, "a"}}, 1, 1002, 0},
    {"opcode 5", {{0x85, 0, 1, "a"}}, 1, 1002, 0},
    {"opcode 6", {{0x86, 0, 1, "a"}}, 1, 1002, 0},
    {"opcode 7", {{0x87, 0, 1, "a"}}, 1, 1002, 0},
    {"opcode B", {{0x8b, 0, 1, "a"}}, 1, 1002, 0},
    {"opcode C", {{0x8c, 0, 1, "a"}}, 1, 1002, 0},
    {"opcode D", {{0x8d, 0, 1, "a"}}, 1, 1002, 0},
    {"opcode E", {{0x8e, 0, 1, "a"}}, 1, 1002, 0},
    {"opcode F", {{0x8f, 0, 1, "a"}}, 1, 1002, 0},
    {"opcode 3 after a message", {{0x81, 0, 1, "a"}, {0x03, 0, 0, ""}}, 2, 1002, 1},
    {"ping of 126 bytes", {{0x89, 0, 126, NULL}}, 1, 1002, 0},
    {"pong of 126 bytes", {{0x8a, 0, 126, NULL}}, 1, 1002, 0},
    {"close of 126 bytes", {{0x88, 0, 126, NULL}}, 1, 1002, 0},
    {"ping with a 16-bit length", {{0x89, F_LEN16, 5, "Hello"}}, 1, 1002, 0},
    {"ping with a 64-bit length", {{0x89, F_LEN64, 5, "Hello"}}, 1, 1002, 0},
    {"ping without FIN", {{0x09, 0, 1, "a"}}, 1, 1002, 0},
    {"pong without FIN", {{0x0a, 0, 1, "a"}}, 1, 1002, 0},
    {"close without FIN", {{0x08, 0, 2, "\x03\xe8"}}, 1, 1002, 0},
    {"continuation first", {{0x80, 0, 1, "a"}}, 1, 1002, 0},
    {"continuation not FIN first", {{0x00, 0, 1, "a"}}, 1, 1002, 0},
    {"continuation after a message", {{0x81, 0, 1, "a"}, {0x80, 0, 1, "b"}}, 2, 1002, 1},
    {"text inside text", {{0x01, 0, 1, "a"}, {0x81, 0, 1, "b"}}, 2, 1002, 0},
    {"binary inside text", {{0x01, 0, 1, "a"}, {0x82, 0, 1, "b"}}, 2, 1002, 0},
    {"text inside binary", {{0x02, 0, 1, "a"}, {0x01, 0, 1, "b"}}, 2, 1002, 0},
    {"text after ping inside text",
     {{0x01, 0, 1, "a"}, {0x89, 0, 1, "p"}, {0x81, 0, 1, "b"}},
     3,
     1002,
     1},
};

static void test_ws_dec_protocol_rules(void)
{
    for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
        struct bytes w = {0};

        for (size_t k = 0; k < rules[i].nf; k++) {
            const struct frame *f = &rules[i].f[k];

            add_frame(&w, f->b0, f->data, f->len, f->flags);
        }
        expect_stream(rules[i].name, &w, MAX_DEFAULT, rules[i].code, rules[i].messages);
        bytes_free(&w);
    }
}

static void test_ws_dec_64bit_top_bit(void)
{
    static const uint8_t hdr[] = {0x82, 0xff, 0x80, 0,    0,   0,   0,   0,   0,  0x05,
                                  0x37, 0xfa, 0x21, 0x3d, 'a', 'b', 'c', 'd', 'e'};
    struct bytes w = {0};

    bytes_add(&w, hdr, sizeof(hdr));
    expect_stream("64-bit top bit", &w, UINT64_MAX, 1002, 0);
    bytes_free(&w);
}

/* --- message size (1009) --------------------------------------------------------------- */

static void test_ws_dec_too_big(void)
{
    struct bytes w = {0};

    add_frame(&w, 0x82, NULL, 10, 0);
    expect_stream("exactly max", &w, 10, 0, 1);
    bytes_free(&w);

    add_frame(&w, 0x82, NULL, 11, 0);
    expect_stream("max + 1", &w, 10, 1009, 0);
    bytes_free(&w);

    add_frame(&w, 0x01, NULL, 6, 0);
    add_frame(&w, 0x89, NULL, 100, 0); /* control frames do not count */
    add_frame(&w, 0x80, NULL, 4, 0);
    expect_stream("fragments up to max", &w, 10, 0, 2);
    bytes_free(&w);

    add_frame(&w, 0x01, NULL, 6, 0);
    add_frame(&w, 0x00, NULL, 4, 0);
    add_frame(&w, 0x80, NULL, 1, 0);
    expect_stream("fragments over max", &w, 10, 1009, 0);
    bytes_free(&w);

    add_frame(&w, 0x82, NULL, 4, 0);
    add_frame(&w, 0x82, NULL, 4, 0);
    add_frame(&w, 0x82, NULL, 4, 0);
    expect_stream("the limit is per message", &w, 4, 0, 3);
    bytes_free(&w);
}

/* Only the header of an oversized frame is fed: the verdict comes without payload. */
static void test_ws_dec_too_big_before_payload(void)
{
    static const struct {
        const char *name;
        uint8_t hdr[10];
        size_t len;
        uint64_t max;
    } cases[] = {
        {"7-bit", {0x82, 0x8b}, 2, 10},
        {"16-bit", {0x81, 0xfe, 0x01, 0x00}, 4, 255},
        {"64-bit 1 TiB", {0x82, 0xff, 0, 0, 0x01, 0, 0, 0, 0, 0}, 10, MAX_DEFAULT},
        {"64-bit 2^63-1",
         {0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
         10,
         (1ull << 63) - 2},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct bytes w = {0};

        bytes_add(&w, cases[i].hdr, cases[i].len);
        expect_stream(cases[i].name, &w, cases[i].max, 1009, 0);
        bytes_free(&w);
    }

    /* the second fragment's header alone tips the message over */
    {
        struct bytes w = {0};
        static const uint8_t cont_hdr[] = {0x80, 0x85};

        add_frame(&w, 0x01, NULL, 6, 0);
        bytes_add(&w, cont_hdr, sizeof(cont_hdr));
        expect_stream("continuation header", &w, 10, 1009, 0);
        bytes_free(&w);
    }
}

/* --- UTF-8 (1007) ---------------------------------------------------------------------- */

static const struct {
    const char *name;
    const char *s;
    size_t len;
    bool valid;
} texts[] = {
    {"kosme", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 11, true},
    {"U+0000", "\x00", 1, true},
    {"U+007F", "\x7f", 1, true},
    {"U+0080", "\xc2\x80", 2, true},
    {"U+07FF", "\xdf\xbf", 2, true},
    {"U+0800", "\xe0\xa0\x80", 3, true},
    {"U+D7FF", "\xed\x9f\xbf", 3, true},
    {"U+E000", "\xee\x80\x80", 3, true},
    {"U+FFFD", "\xef\xbf\xbd", 3, true},
    {"U+FFFF", "\xef\xbf\xbf", 3, true},
    {"U+10000", "\xf0\x90\x80\x80", 4, true},
    {"U+10FFFF", "\xf4\x8f\xbf\xbf", 4, true},
    {"Hello-mu@ss-diff", "Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1", 22,
     true},
    {"C0 80", "\xc0\x80", 2, false},
    {"C1 BF", "\xc1\xbf", 2, false},
    {"E0 80 AF", "\xe0\x80\xaf", 3, false},
    {"F0 80 80 AF", "\xf0\x80\x80\xaf", 4, false},
    {"F8 overlong", "\xf8\x80\x80\x80\xaf", 5, false},
    {"U+D800", "\xed\xa0\x80", 3, false},
    {"U+DFFF", "\xed\xbf\xbf", 3, false},
    {"U+110000", "\xf4\x90\x80\x80", 4, false},
    {"lone continuation", "\x80", 1, false},
    {"continuations", "\x80\xbf\x80\xbf", 4, false},
    {"FE", "\xfe", 1, false},
    {"FF", "\xff", 1, false},
    {"kosme + surrogate", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\200edited", 20,
     false},
    {"ends in a 2-byte lead", "ab\xce", 3, false},
    {"ends inside a 4-byte", "\xf0\x9f\x98", 3, false},
};

/* Each text as one frame, and again with one byte per fragment and pings between. */
static void test_ws_dec_utf8_cases(void)
{
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        const char *s = texts[i].s;
        size_t len = texts[i].len;
        unsigned code = texts[i].valid ? 0 : 1007;
        struct bytes w = {0};

        add_frame(&w, 0x81, s, len, 0);
        expect_stream(texts[i].name, &w, MAX_DEFAULT, code, texts[i].valid);
        bytes_free(&w);

        for (size_t k = 0; k < len; k++) {
            add_frame(&w, (uint8_t)((k == 0 ? 0x01 : 0x00) | (k + 1 == len ? 0x80 : 0)), s + k, 1,
                      0);
            if (k % 2 == 0 && k + 1 < len)
                add_frame(&w, 0x89, "p", 1, 0);
        }
        /* the pings before the failing byte are counted as messages: only check the code */
        {
            struct result r;

            CHECK(run_all_splits(texts[i].name, w.p, w.len, MAX_DEFAULT, &r));
            CHECK(r.code == code);
            if (texts[i].valid)
                CHECK(r.messages > 0 && has_message(&r, r.messages - 1, WS_OP_TEXT, s, len));
            bytes_free(&r.log);
        }
        bytes_free(&w);

        /* binary messages are not UTF-8 checked */
        add_frame(&w, 0x82, s, len, 0);
        expect_stream(texts[i].name, &w, MAX_DEFAULT, 0, 1);
        bytes_free(&w);
    }
}

/* A code point split across two fragments, at every position, with a ping between. */
static void test_ws_dec_utf8_split_across_fragments(void)
{
    static const char kosme[] = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf0\x9f\x98\x80";
    size_t len = sizeof(kosme) - 1;

    for (size_t cut = 0; cut <= len; cut++) {
        struct bytes w = {0};
        struct result r;

        add_frame(&w, 0x01, kosme, cut, 0);
        add_frame(&w, 0x89, "x", 1, 0);
        add_frame(&w, 0x80, kosme + cut, len - cut, 0);
        CHECK(run_all_splits("kosme split", w.p, w.len, MAX_DEFAULT, &r));
        CHECK(r.rc == 0 && r.messages == 2 && has_message(&r, 1, WS_OP_TEXT, kosme, len));
        bytes_free(&r.log);
        bytes_free(&w);
    }
}

/* The first fragment alone fails: no need to wait for the end of the message. */
static void test_ws_dec_utf8_fails_fast(void)
{
    struct bytes w = {0};
    struct ws_dec d;
    struct ws_dec_out o;
    uint8_t *buf;
    size_t off = 0;

    add_frame(&w, 0x01, "ok\xc0 and more", 12, 0);
    expect_stream("bad byte in the first fragment", &w, MAX_DEFAULT, 1007, 0);

    /* byte by byte: "o" and "k" come out, the call holding C0 fails */
    buf = w.p;
    ws_dec_init(&d, MAX_DEFAULT);
    for (; off < 6; off++)
        CHECK(ws_dec_feed(&d, buf + off, 1, &o) == 1 && !o.ready);
    CHECK(ws_dec_feed(&d, buf + off, 1, &o) == 1 && o.ready && o.len == 1 && o.data[0] == 'o');
    off++;
    CHECK(ws_dec_feed(&d, buf + off, 1, &o) == 1 && o.ready && o.len == 1 && o.data[0] == 'k');
    off++;
    CHECK(ws_dec_feed(&d, buf + off, 1, &o) == -1 && !o.ready && d.close_code == 1007);
    CHECK(d.why != NULL && !ws_dec_is_idle(&d));
    bytes_free(&w);

    /* the whole chunk holding the bad byte is never reported */
    add_frame(&w, 0x01, "ok\xc0", 3, 0);
    ws_dec_init(&d, MAX_DEFAULT);
    CHECK(ws_dec_feed(&d, w.p, w.len, &o) == -1 && !o.ready && d.close_code == 1007);
    bytes_free(&w);

    /* a surrogate fails at its second byte, before the third arrives */
    add_frame(&w, 0x01, "\xed\xa0", 2, 0);
    expect_stream("surrogate in the first fragment", &w, MAX_DEFAULT, 1007, 0);
    bytes_free(&w);
}

/* A message that ends inside a code point fails at its end, even with an empty FIN frame. */
static void test_ws_dec_utf8_message_ends_mid_code_point(void)
{
    struct bytes w = {0};

    add_frame(&w, 0x01, "a\xce", 2, 0);
    expect_stream("open code point, not yet ended", &w, MAX_DEFAULT, 0, 0);
    add_frame(&w, 0x80, "", 0, 0);
    expect_stream("ends mid code point", &w, MAX_DEFAULT, 1007, 0);
    bytes_free(&w);

    add_frame(&w, 0x81, "\xe2\x82", 2, 0);
    expect_stream("single frame ends mid code point", &w, MAX_DEFAULT, 1007, 0);
    bytes_free(&w);
}

/* The UTF-8 state of a message does not leak into the next one. */
static void test_ws_dec_utf8_state_resets(void)
{
    struct bytes w = {0};

    add_frame(&w, 0x82, "\xce", 1, 0);
    add_frame(&w, 0x81, "\xba", 1, 0);
    expect_stream("binary then continuation byte", &w, MAX_DEFAULT, 1007, 1);
    bytes_free(&w);
}

/* --- close frames ---------------------------------------------------------------------- */

static void test_ws_dec_close_payload_not_checked(void)
{
    struct bytes w = {0};
    struct result r;

    add_frame(&w, 0x88, "\x03", 1, 0);
    CHECK(run_all_splits("1-byte close", w.p, w.len, MAX_DEFAULT, &r));
    CHECK(r.rc == 0 && has_message(&r, 0, WS_OP_CLOSE, "\x03", 1));
    bytes_free(&r.log);
    bytes_free(&w);

    add_frame(&w, 0x01, "a", 1, 0);
    add_frame(&w, 0x88, "\x03\xe8\xff", 3, 0);
    CHECK(run_all_splits("close inside a message", w.p, w.len, MAX_DEFAULT, &r));
    CHECK(r.rc == 0 && r.messages == 1 && has_message(&r, 0, WS_OP_CLOSE, "\x03\xe8\xff", 3));
    bytes_free(&r.log);
    bytes_free(&w);
}

/* --- a longer mixed stream --------------------------------------------------------------- */

static void test_ws_dec_mixed_stream(void)
{
    uint8_t blob[300];
    struct bytes w = {0};
    struct result r;

    for (size_t i = 0; i < sizeof(blob); i++)
        blob[i] = (uint8_t)(255 - i);
    add_frame(&w, 0x81, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 11, 0);
    add_frame(&w, 0x02, blob, 130, 0);
    add_frame(&w, 0x89, blob, 125, 0);
    add_frame(&w, 0x00, blob + 130, 0, F_LEN64);
    add_frame(&w, 0x80, blob + 130, 170, 0);
    add_frame(&w, 0x8a, "", 0, 0);
    add_frame(&w, 0x81, "", 0, 0);
    add_frame(&w, 0x88, "\x03\350bye", 5, 0);
    CHECK(run_all_splits("mixed", w.p, w.len, MAX_DEFAULT, &r));
    CHECK(r.rc == 0 && r.messages == 6);
    CHECK(has_message(&r, 0, WS_OP_TEXT, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 11));
    CHECK(has_message(&r, 1, WS_OP_PING, blob, 125));
    CHECK(has_message(&r, 2, WS_OP_BINARY, blob, 300));
    CHECK(has_message(&r, 3, WS_OP_PONG, "", 0));
    CHECK(has_message(&r, 4, WS_OP_TEXT, "", 0));
    CHECK(has_message(&r, 5, WS_OP_CLOSE, "\x03\350bye", 5));
    bytes_free(&r.log);
    bytes_free(&w);
}

/* Feeds w whole to a decoder with permessage-deflate (window 15) or not; returns the
 * close code (0: none) and counts the compressed and plain data chunks. */
static unsigned feed_deflate(const struct bytes *w, bool deflate, uint64_t max, size_t *zchunks,
                             size_t *plain)
{
    struct ws_dec d;
    struct ws_dec_out o;
    uint8_t *buf = check_dup_exact(w->p, w->len);
    size_t off = 0;

    ws_dec_init(&d, max);
    if (deflate)
        ws_dec_set_deflate(&d, 15);
    *zchunks = *plain = 0;
    while (off < w->len) {
        ssize_t n = ws_dec_feed(&d, buf + off, w->len - off, &o);
        if (n < 0)
            break;
        off += (size_t)n;
        if (o.ready && !o.control)
            (*(o.compressed ? zchunks : plain))++;
    }
    free(buf);
    return d.close_code;
}

static void test_ws_dec_rsv1_deflate(void)
{
    struct bytes w = {0};
    size_t z, p;
    struct ws_dec d;

    ws_dec_init(&d, 100);
    CHECK(ws_dec_deflate(&d) == 0);
    ws_dec_set_deflate(&d, 9);
    CHECK(ws_dec_deflate(&d) == 9);
    ws_dec_set_deflate(&d, 15);
    CHECK(ws_dec_deflate(&d) == 15);
    ws_dec_set_deflate(&d, 0);
    CHECK(ws_dec_deflate(&d) == 0);

    /* RSV1 on a first frame: compressed, continuations too, the next message not */
    add_frame(&w, 0x41, "\xff\xfe", 2, 0); /* not UTF-8: not checked while compressed */
    add_frame(&w, 0x00, "ab", 2, 0);
    add_frame(&w, 0x89, "", 0, 0); /* a ping between fragments */
    add_frame(&w, 0x80, "cd", 2, 0);
    add_frame(&w, 0x81, "plain", 5, 0);
    CHECK(feed_deflate(&w, true, 100, &z, &p) == 0 && z == 3 && p == 1);
    CHECK(feed_deflate(&w, false, 100, &z, &p) == 1002 && z == 0 && p == 0);
    bytes_free(&w);

    add_frame(&w, 0x01, "a", 1, 0);
    add_frame(&w, 0xc0, "b", 1, 0); /* RSV1 on a continuation */
    CHECK(feed_deflate(&w, true, 100, &z, &p) == 1002);
    bytes_free(&w);
    add_frame(&w, 0xc9, "", 0, 0); /* RSV1 on a ping */
    CHECK(feed_deflate(&w, true, 100, &z, &p) == 1002);
    bytes_free(&w);
    add_frame(&w, 0xa1, "a", 1, 0); /* RSV2 even with deflate */
    CHECK(feed_deflate(&w, true, 100, &z, &p) == 1002);
    bytes_free(&w);
    add_frame(&w, 0xe2, "a", 1, 0); /* RSV1 and RSV3 */
    CHECK(feed_deflate(&w, true, 100, &z, &p) == 1002);
    bytes_free(&w);

    /* the wire limit of a compressed message is max_message and its slack */
    add_frame(&w, 0xc2, NULL, 100 + WS_DEC_ZSLACK(100), 0);
    CHECK(feed_deflate(&w, true, 100, &z, &p) == 0 && z == 1);
    bytes_free(&w);
    add_frame(&w, 0xc2, NULL, 101 + WS_DEC_ZSLACK(100), 0);
    CHECK(feed_deflate(&w, true, 100, &z, &p) == 1009 && z == 0);
    bytes_free(&w);
    add_frame(&w, 0x82, NULL, 101, 0); /* uncompressed: max_message as before */
    CHECK(feed_deflate(&w, true, 100, &z, &p) == 1009);
    bytes_free(&w);
}

void suite_ws_dec(void)
{
    test_ws_dec_rsv1_deflate();
    test_ws_dec_rfc_examples();
    test_ws_dec_event_fields();
    test_ws_dec_fragment_fields();
    test_ws_dec_empty_frame_at_buffer_end();
    test_ws_dec_empty_frames();
    test_ws_dec_non_minimal_lengths_accepted();
    test_ws_dec_protocol_rules();
    test_ws_dec_64bit_top_bit();
    test_ws_dec_too_big();
    test_ws_dec_too_big_before_payload();
    test_ws_dec_utf8_cases();
    test_ws_dec_utf8_split_across_fragments();
    test_ws_dec_utf8_fails_fast();
    test_ws_dec_utf8_message_ends_mid_code_point();
    test_ws_dec_utf8_state_resets();
    test_ws_dec_close_payload_not_checked();
    test_ws_dec_mixed_stream();
}
