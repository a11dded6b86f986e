#include "worker/conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/uio.h>

#include "common/iplimit.h"
#include "common/log.h"
#include "common/proxy_proto.h"
#include "common/ws_close.h"
#include "common/ws_enc.h"
#include "common/ws_hs.h"
#include "common/ws_zip.h"
#include "worker/deflate.h"
#include "worker/hooks.h"
#include "worker/inbound.h"
#include "worker/io.h"
#include "worker/outq.h"
#include "worker/worker.h"

/* Reading pauses while this much output waits for a slow client (backpressure). */
#define OUT_HIGH_MARK (256 * 1024)
/* While input is handled, frames up to CORK_FRAME_MAX bytes wait (CORK_MAX at most in
 * all) so that what one read produces leaves in one writev. */
#define CORK_FRAME_MAX (16 * 1024)
#define CORK_MAX       (64 * 1024)
/* Queued segments offered to one writev. */
#define WRITE_IOV 64
_Static_assert(WRITE_IOV >= IO_TLS_GATHER, "a TLS retry must see its record's segments again");
/* Reads per readiness event, so one busy client cannot starve the others. */
#define READS_PER_EVENT 4
/* The smallest buffer for a message received in pieces. */
#define MSG_MIN 256
/* Control frame payloads, RFC 6455 §5.5. */
#define CTRL_MAX 125

#define SLOW_REASON "slow consumer"
#define BUSY_REASON "message buffer budget exceeded"

static void conn_on_event(evutil_socket_t fd, short what, void *arg);
static void conn_process(struct conn *c, uint8_t *buf, size_t len);
static void conn_enter_closing(struct conn *c);
static void conn_http_answer(struct conn *c, int status, const char *why, uint32_t retry_after_s);
static int conn_send_close(struct conn *c, unsigned code, const char *reason);

const char *conn_id(const struct conn *c, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s%llu", c->w->id_prefix, (unsigned long long)c->seq);
    return buf;
}

const char *conn_remote(const struct conn *c, char *buf, size_t cap)
{
    char a[INET6_ADDRSTRLEN] = "?";

    inet_ntop(c->remote_family, c->remote_addr, a, sizeof(a));
    snprintf(buf, cap, c->remote_family == AF_INET6 ? "[%s]:%u" : "%s:%u", a, c->remote_port);
    return buf;
}

/* Registers the event for what the connection needs now: read unless paused, write
 * while output is pending, in the directions io.c says those wait for. Input that TLS
 * holds already is read without waiting for the socket. */
static int conn_update_events(struct conn *c)
{
    bool rd = c->pause == 0;
    short want = (short)(EV_PERSIST | io_events(c, rd, c->out != NULL));

    if (event_get_events(&c->ev) != want || !event_pending(&c->ev, EV_READ | EV_WRITE, NULL)) {
        event_del(&c->ev);
        if (event_assign(&c->ev, c->w->base, c->fd, want, conn_on_event, c) < 0 ||
            event_add(&c->ev, NULL) < 0) {
            log_msg(LOG_ERROR, NULL, "event_add failed fd=%d", c->fd);
            return -1;
        }
    }
    if (rd && io_has_more(c))
        event_active(&c->ev, EV_READ, 1);
    return 0;
}

struct conn *conn_new(struct worker *w, int fd, const struct sockaddr *sa, struct ssl_ctx_st *tls)
{
    struct conn *c = calloc(1, sizeof(*c));

    if (c == NULL)
        goto err_close_fd;
    c->w = w;
    c->fd = fd;
    c->seq = ++w->next_seq;
    c->state = tls != NULL ? CONN_TLS : CONN_HANDSHAKE;
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        c->remote_family = AF_INET6;
        memcpy(c->remote_addr, &s6->sin6_addr, 16);
        c->remote_port = ntohs(s6->sin6_port);
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        c->remote_family = AF_INET;
        memcpy(c->remote_addr, &s4->sin_addr, 4);
        c->remote_port = ntohs(s4->sin_port);
    }
    ws_dec_init(&c->dec, w->cfg->max_message);
    if (event_assign(&c->ev, w->base, fd, EV_READ | EV_PERSIST, conn_on_event, c) < 0 ||
        event_add(&c->ev, NULL) < 0)
        goto err_free_conn;
    if (tls != NULL && io_tls_start(c, tls) < 0)
        goto err_del_event;
    w->nconns++;
    worker_tlist_move(w, c, TL_HANDSHAKE); /* --handshake-timeout covers TLS and the upgrade */
    return c;
err_del_event:
    event_del(&c->ev);
err_free_conn:
    free(c);
err_close_fd:
    close(fd);
    return NULL;
}

/* Frees the partly received message and its share of the worker's --max-pending. */
static void conn_free_msg(struct conn *c)
{
    if (c->msg != NULL) {
        c->w->pending_bytes -= c->msg->cap;
        if (c->msg->unzip != NULL) {
            ws_unzip_free(c->msg->unzip);
            c->w->pending_bytes -= WS_UNZIP_COST;
        }
        free(c->msg);
        c->msg = NULL;
    }
}

/* The same for the message and a partly received control frame. */
static void conn_free_pending(struct conn *c)
{
    conn_free_msg(c);
    if (c->ctrl != NULL) {
        c->w->pending_bytes -= CTRL_MAX;
        free(c->ctrl);
        c->ctrl = NULL;
        c->ctrl_len = 0;
    }
}

/* Frees the handshake's parser: c's own, or the worker's lent for one read. */
static void conn_hs_free(struct conn *c)
{
    if (c->hs == NULL)
        return;
    ws_hs_cleanup(c->hs);
    if (c->hs != &c->w->hs)
        free(c->hs);
    c->hs = NULL;
}

void conn_free(struct conn *c)
{
    conn_hs_free(c);
    c->w->out_bytes -= outq_bytes(c->out);
    outq_free(c->out);
    conn_free_pending(c);
    if (c->sec != NULL)
        free(c->sec->proxy);
    free(c->sec);
    free(c);
}

/* c->sec, made when a feature first needs it: ident "\0\0" (no token yet). */
static struct conn_sec *conn_sec(struct conn *c)
{
    if (c->sec == NULL)
        c->sec = calloc(1, sizeof(*c->sec) + 2);
    return c->sec;
}

int conn_keep_ticket(struct conn *c, uint32_t ticket)
{
    if (conn_sec(c) == NULL) {
        iplimit_release(c->w->shm->ipl, (uint32_t)(c->w->num - 1), ticket);
        conn_release(c, "out of memory");
        return -1;
    }
    c->sec->ip_ticket = ticket;
    return 0;
}

void conn_expect_proxy(struct conn *c)
{
    c->state = CONN_PROXY;
}

static void conn_set_remote(struct conn *c, const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        c->remote_family = AF_INET6;
        memcpy(c->remote_addr, &s6->sin6_addr, 16);
        c->remote_port = ntohs(s6->sin6_port);
    } else if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        c->remote_family = AF_INET;
        memcpy(c->remote_addr, &s4->sin_addr, 4);
        c->remote_port = ntohs(s4->sin_port);
    }
}

/* The client's address is known (from the header or the socket): per-address limits,
 * then TLS or the upgrade. A refusal is a 429 on a plain listener; on a TLS one no
 * HTTP can be said before TLS, so the connection is closed. */
static void conn_proxy_done(struct conn *c, const struct proxy_proto *p)
{
    struct worker *w = c->w;
    struct ssl_ctx_st *tls = w->tls; /* the current one: a reload since accept counts */

    if (!p->local)
        conn_set_remote(c, &p->src);
    if (w->shm->ipl != NULL) {
        struct sockaddr_storage ss;
        uint32_t ticket = 0, retry = 0;
        const char *why = NULL;

        memset(&ss, 0, sizeof(ss));
        if (c->remote_family == AF_INET6) {
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
            s6->sin6_family = AF_INET6;
            memcpy(&s6->sin6_addr, c->remote_addr, 16);
        } else {
            struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
            s4->sin_family = AF_INET;
            memcpy(&s4->sin_addr, c->remote_addr, 4);
        }
        if (worker_admit_address(w, (struct sockaddr *)&ss, &ticket, &retry, &why) < 0) {
            if (tls != NULL) {
                conn_release(c, why);
                return;
            }
            c->state = CONN_HANDSHAKE;
            conn_http_answer(c, 429, why, retry);
            return;
        }
        if (ticket > 0 && conn_keep_ticket(c, ticket) < 0)
            return;
    }
    if (tls != NULL) {
        if (io_tls_start(c, tls) < 0) {
            conn_release(c, "out of memory");
            return;
        }
        c->state = CONN_TLS;
    } else {
        c->state = CONN_HANDSHAKE;
    }
}

/*
 * The PROXY header (v1 or v2), read exactly: the bytes are peeked, the parser says how
 * many of them are the header's, and only those are taken from the socket, so nothing
 * after it (the upgrade request, a TLS ClientHello) is read before its turn. A header
 * that arrives whole is parsed on the stack; one in pieces keeps its parser in c->sec.
 */
static void conn_proxy(struct conn *c)
{
    struct worker *w = c->w;
    struct proxy_proto first, *p = c->sec != NULL ? c->sec->proxy : NULL;
    uint8_t *buf = w->rbuf;
    ssize_t got, n;
    char id[CONN_ID_MAX];

    if (p == NULL) {
        proxy_proto_init(&first);
        p = &first;
    }
    do {
        got = recv(c->fd, buf, w->rbuf_cap < PROXY_PROTO_V2_MAX ? w->rbuf_cap : PROXY_PROTO_V2_MAX,
                   MSG_PEEK);
    } while (got < 0 && errno == EINTR);
    if (got <= 0) {
        if (got == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            conn_release(c, got == 0 ? "eof in the proxy header" : "read error");
        return;
    }
    n = proxy_proto_feed(p, buf, (size_t)got);
    if (n < 0) {
        w->slot->st.proxy_errors++;
        log_limited(LOG_INFO, conn_id(c, id, sizeof(id)), "bad proxy header: %s", p->why);
        conn_release(c, "bad proxy header");
        return;
    }
    if (n > 0 && read(c->fd, buf, (size_t)n) != n) { /* the bytes just peeked */
        conn_release(c, "read error");
        return;
    }
    if (!proxy_proto_is_done(p)) {
        if (p == &first) {
            if (conn_sec(c) == NULL || (c->sec->proxy = malloc(sizeof(first))) == NULL) {
                conn_release(c, "out of memory");
                return;
            }
            *c->sec->proxy = first;
        }
        return;
    }
    conn_proxy_done(c, p);
    if (c->sec != NULL && c->sec->proxy != NULL) {
        free(c->sec->proxy);
        c->sec->proxy = NULL;
    }
}

void conn_release(struct conn *c, const char *why)
{
    struct worker *w = c->w;
    char id[CONN_ID_MAX];

    if (c->state == CONN_CLOSED)
        return;
    log_msg(LOG_DEBUG, conn_id(c, id, sizeof(id)), "tcp closed why=%s", why);
    hooks_conn_closed(c, why);
    c->state = CONN_CLOSED;
    event_del(&c->ev);
    io_close(c);
    worker_tlist_remove(w, c);
    if (c->flags & CONN_F_ADMIN)
        w->nadmin--;
    if (c->sec != NULL && c->sec->ip_ticket != 0) {
        iplimit_release(w->shm->ipl, (uint32_t)(w->num - 1), c->sec->ip_ticket);
        c->sec->ip_ticket = 0;
    }
    c->tnext = w->dead;
    w->dead = c;
    w->nconns--;
    worker_schedule_reap(w);
    worker_conn_gone(w);
}

/* Output -------------------------------------------------------------------------- */

/* The worker's total of queued output follows c->out, which held before bytes. */
static void out_track(struct conn *c, size_t before)
{
    c->w->out_bytes = c->w->out_bytes - before + outq_bytes(c->out);
}

/* Reading pauses over this much queued output (backpressure): OUT_HIGH_MARK, or half
 * of --max-outbound when that is less. */
static size_t out_high_mark(const struct worker *w)
{
    uint64_t half = w->cfg->max_outbound / 2;

    return half < OUT_HIGH_MARK ? (size_t)half : OUT_HIGH_MARK;
}

/* Bytes written to clients; admin answers are not client traffic. */
static void count_out(struct conn *c, size_t n)
{
    if (!(c->flags & CONN_F_ADMIN))
        c->w->slot->st.bytes_out += n;
}

static void conn_after_flush(struct conn *c)
{
    if (!(c->flags & CONN_F_FLUSH_CLOSE))
        return;
    if (c->flags & CONN_F_LINGER) {
        /* Send FIN after the last byte and read until the client closes too, so
         * unread input does not turn our close into an RST that eats the answer. */
        c->flags &= (uint16_t) ~(CONN_F_FLUSH_CLOSE | CONN_F_LINGER);
        io_shutdown(c);
        return;
    }
    conn_release(c, "closed");
}

/*
 * The client does not take its output: the data frames not yet begun are dropped,
 * the close frame (1013) goes next, and the close timeout runs as for any close.
 */
static void conn_slow(struct conn *c, const char *why)
{
    struct worker *w = c->w;
    size_t before = outq_bytes(c->out);
    char id[CONN_ID_MAX];

    if (c->state != CONN_OPEN)
        return;
    w->slot->st.slow_closes++;
    w->slot->st.closes_by_server++;
    log_limited(LOG_INFO, conn_id(c, id, sizeof(id)),
                "close code=%u by=slow queued=%zu pending=%zu why=\"%s\"", WS_CLOSE_TRY_AGAIN_LATER,
                before, outq_pending(c->out), why);
    outq_drop_data(&c->out);
    out_track(c, before);
    hooks_conn_closing(c, WS_CLOSE_TRY_AGAIN_LATER, SLOW_REASON, "slow");
    conn_enter_closing(c);
    conn_send_close(c, WS_CLOSE_TRY_AGAIN_LATER, SLOW_REASON);
}

/*
 * Queues iov from byte skip on, one frame of kind: a copy, or a reference to f when f
 * is not NULL (then iov is f's bytes). While open, a frame that would take the queue
 * past --max-outbound makes the client a slow consumer: the frame is not queued,
 * unless it has begun on the wire (skip > 0, or begun: its first bytes are in a TLS
 * record waiting to be retried), which is finished before the close frame. A shared
 * frame (a pushed message) is never too big for an empty queue: the client took all
 * its output so far, and the frame's memory is not its own. Returns -1 when c was
 * released.
 */
static int conn_queue(struct conn *c, const struct iovec *iov, int iovcnt, size_t skip,
                      size_t total, unsigned kind, bool begun, struct outq_frame *f)
{
    size_t before = outq_bytes(c->out);
    size_t cost = f != NULL ? outq_cost(f->len) : outq_cost(total - skip);
    bool over = c->state == CONN_OPEN && before + cost > c->w->cfg->max_outbound &&
                (f == NULL || before > 0);
    int r;

    if (over && skip == 0 && !begun) {
        conn_slow(c, "output over --max-outbound");
        return c->state == CONN_CLOSED ? -1 : 0;
    }
    r = f != NULL ? outq_push_frame(&c->out, kind, f, skip)
                  : outq_push(&c->out, kind, iov, iovcnt, skip);
    if (r < 0) {
        char id[CONN_ID_MAX];
        log_msg(LOG_WARN, conn_id(c, id, sizeof(id)), "out of memory for output");
        conn_release(c, "out of memory");
        return -1;
    }
    if (begun)
        outq_pin(c->out, outq_pending(c->out)); /* it is the tail: all of it */
    out_track(c, before);
    if (over)
        conn_slow(c, "output over --max-outbound");
    else if (outq_bytes(c->out) > out_high_mark(c->w))
        c->pause |= CONN_PAUSE_OUTPUT;
    return c->state == CONN_CLOSED ? -1 : 0;
}

/* After a write or a queue change: pausing, events, and what follows a flush. Returns
 * -1 when c was released. */
static int conn_after_write(struct conn *c)
{
    if (c->state == CONN_CLOSED)
        return -1;
    if (c->out == NULL) {
        c->pause &= (uint8_t)~CONN_PAUSE_OUTPUT;
        conn_after_flush(c);
        if (c->state == CONN_CLOSED)
            return -1;
    } else {
        c->flags &= (uint16_t)~CONN_F_CORK; /* the rest waits for the socket to be writable */
        if (outq_bytes(c->out) > out_high_mark(c->w))
            c->pause |= CONN_PAUSE_OUTPUT;
    }
    return conn_update_events(c) < 0 ? (conn_release(c, "event error"), -1) : 0;
}

/*
 * Writes what is queued and then iov (one frame of kind, or nothing), in one writev;
 * what the kernel does not take is queued (by reference when iov is shared frame f's
 * bytes). Returns -1 when c was released.
 */
static int conn_write(struct conn *c, const struct iovec *iov, int iovcnt, unsigned kind,
                      struct outq_frame *f)
{
    struct iovec v[WRITE_IOV + 2];
    size_t queued = 0, total = 0, done = 0, pin = 0, ahead;
    bool all;
    int n = outq_iov(c->out, v, WRITE_IOV, &all);

    for (int i = 0; i < n; i++)
        queued += v[i].iov_len;
    for (int i = 0; i < iovcnt; i++) {
        total += iov[i].iov_len;
        if (all)
            v[n++] = iov[i];
    }
    if (n > 0) {
        ssize_t r = io_writev(c, v, n, &pin);
        if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            int err = errno;
            conn_release(c, err == EPIPE || err == ECONNRESET ? "reset by peer"
                            : err == EPROTO                   ? "tls error"
                                                              : "write error");
            return -1;
        }
        done = r > 0 ? (size_t)r : 0;
        count_out(c, done);
    }
    if (queued > 0) {
        size_t before = outq_bytes(c->out);
        outq_consume(&c->out, done < queued ? done : queued);
        out_track(c, before);
    }
    /* A TLS record waiting to be retried holds the next pin bytes: they stay first,
     * and when they reach into iov, iov is queued as begun. */
    outq_pin(c->out, pin);
    ahead = done < queued ? queued - done : 0; /* queued bytes still ahead of iov */
    done = done > queued ? done - queued : 0;  /* of iov, which was only offered if all */
    if (iovcnt > 0 && done < total &&
        conn_queue(c, iov, iovcnt, done, total, kind, all && pin > ahead, f) < 0)
        return -1;
    return conn_after_write(c);
}

/* The socket is writable again. Returns -1 when c was released. */
static int conn_flush(struct conn *c)
{
    return conn_write(c, NULL, 0, OUTQ_CTRL, NULL);
}

/*
 * Sends one frame (or HTTP answer) of kind: written at once when nothing waits,
 * queued behind what does (a shared frame f, whose bytes iov holds, by reference).
 * While input is being handled (CONN_F_CORK), small frames are queued so that they
 * leave together when it is done. Nothing is ever sent after our close frame. Returns
 * -1 when the connection was released.
 */
static int conn_send_ref(struct conn *c, const struct iovec *iov, int iovcnt, unsigned kind,
                         struct outq_frame *f)
{
    size_t total = 0;

    if (c->flags & CONN_F_CLOSE_SENT)
        return 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (c->flags & CONN_F_CORK) {
        size_t room = out_high_mark(c->w) < CORK_MAX ? out_high_mark(c->w) : CORK_MAX;
        if (total <= CORK_FRAME_MAX && outq_bytes(c->out) + outq_cost(total) <= room)
            return conn_queue(c, iov, iovcnt, 0, total, kind, false, f);
        return conn_write(c, iov, iovcnt, kind, f);
    }
    if (c->out != NULL) /* the kernel is full: wait behind the rest */
        return conn_queue(c, iov, iovcnt, 0, total, kind, false, f) < 0 ? -1 : conn_after_write(c);
    return conn_write(c, iov, iovcnt, kind, f);
}

static int conn_send(struct conn *c, const struct iovec *iov, int iovcnt, unsigned kind)
{
    return conn_send_ref(c, iov, iovcnt, kind, NULL);
}

void conn_batch_begin(struct worker *w)
{
    if (w->batch_seqs == NULL)
        w->batch_seqs = malloc(CONN_BATCH_MAX * sizeof(*w->batch_seqs));
    w->batch_on = w->batch_seqs != NULL;
    w->batch_n = 0;
}

/* Corks c for the batch running, when there is one and room in it. A connection whose
 * output waits for the socket already queues: it is left as it is. */
static void batch_cork(struct conn *c)
{
    struct worker *w = c->w;

    if (!w->batch_on || (c->flags & CONN_F_CORK) || c->out != NULL || w->batch_n == CONN_BATCH_MAX)
        return;
    c->flags |= CONN_F_CORK;
    w->batch_seqs[w->batch_n++] = c->seq;
}

static void conn_uncork(struct conn *c);

void conn_batch_end(struct worker *w)
{
    /* By number, not pointer: a connection released meanwhile has left the registry. */
    for (uint32_t i = 0; i < w->batch_n; i++) {
        struct conn *c = registry_find_seq(&w->reg, w->batch_seqs[i]);
        if (c != NULL)
            conn_uncork(c);
    }
    w->batch_n = 0;
    w->batch_on = false;
}

int conn_send_shared(struct conn *c, struct outq_frame *f)
{
    struct iovec iov;

    if (c->state != CONN_OPEN || (c->flags & CONN_F_CLOSE_SENT))
        return CONN_PUSH_SKIPPED;
    batch_cork(c);
    iov.iov_base = f->data;
    iov.iov_len = f->len;
    conn_send_ref(c, &iov, 1, OUTQ_DATA, f);
    if (c->state == CONN_OPEN) {
        c->w->slot->st.msgs_out++;
        return CONN_PUSH_SENT;
    }
    /* Only a slow consumer's close (1013, the frame not queued) or a failed write left
     * the open state here. */
    return c->close_code == WS_CLOSE_TRY_AGAIN_LATER ? CONN_PUSH_SLOW : CONN_PUSH_GONE;
}

/* Input is handled: what it queued leaves now, in one writev. */
static void conn_uncork(struct conn *c)
{
    if (!(c->flags & CONN_F_CORK))
        return;
    c->flags &= (uint16_t)~CONN_F_CORK;
    if (c->state != CONN_CLOSED && c->out != NULL)
        conn_write(c, NULL, 0, OUTQ_CTRL, NULL);
}

/* One frame of its own; a data message to a client that negotiated permessage-deflate
 * goes compressed (deflate.h says when not). */
static int conn_send_frame(struct conn *c, unsigned opcode, const uint8_t *p, size_t len)
{
    uint8_t hdr[WS_FRAME_HDR_MAX];
    struct iovec iov[2];
    bool data = opcode == WS_OP_TEXT || opcode == WS_OP_BINARY;
    unsigned wbits = ws_dec_deflate(&c->dec);

    if (data && wbits != 0) {
        const uint8_t *body;
        ssize_t n = deflate_body(c->w, wbits, p, len, &body);
        if (n >= 0) { /* the body is copied or written before anything else compresses */
            p = body;
            len = (size_t)n;
            opcode |= WS_ENC_RSV1;
            c->w->slot->deflate.sent++;
        }
    }
    iov[0].iov_base = hdr;
    iov[0].iov_len = ws_enc_header(hdr, opcode, true, len);
    iov[1].iov_base = (void *)(uintptr_t)p;
    iov[1].iov_len = len;
    c->w->slot->st.msgs_out++;
    return conn_send(c, iov, len > 0 ? 2 : 1, data ? OUTQ_DATA : OUTQ_CTRL);
}

/* Queues our close frame; the caller decides what happens after it is flushed. */
static int conn_send_close(struct conn *c, unsigned code, const char *reason)
{
    uint8_t frame[WS_CLOSE_FRAME_MAX];
    struct iovec iov;
    size_t n;
    int r;

    n = ws_enc_close(frame, code, reason, reason != NULL ? strlen(reason) : 0, NULL);
    if (n == 0)
        n = ws_enc_close(frame, code, NULL, 0, NULL);
    if (n == 0)
        return 0;
    iov.iov_base = frame;
    iov.iov_len = n;
    c->close_code = (uint16_t)code;
    if (code < SHM_CLOSE_CODES && !(c->flags & CONN_F_CLOSE_SENT))
        c->w->slot->st.close_codes[code]++;
    r = conn_send(c, &iov, 1, OUTQ_CTRL);
    c->flags |= CONN_F_CLOSE_SENT;
    return r;
}

static void conn_enter_closing(struct conn *c)
{
    bool paused = c->pause & CONN_PAUSE_INBOUND;

    c->state = CONN_CLOSING;
    c->pause &= (uint8_t)~CONN_PAUSE_INBOUND; /* the client's close reply must be read */
    conn_free_msg(c);
    worker_tlist_move(c->w, c, TL_CLOSING);
    if (paused && conn_update_events(c) < 0)
        conn_release(c, "event error");
}

void conn_pause_inbound(struct conn *c)
{
    if (c->state != CONN_OPEN || (c->pause & CONN_PAUSE_INBOUND))
        return;
    c->pause |= CONN_PAUSE_INBOUND;
    c->w->slot->inbound.pauses++;
    worker_tlist_move(c->w, c, TL_PAUSED);
    if (conn_update_events(c) < 0)
        conn_release(c, "event error");
}

void conn_resume_inbound(struct conn *c)
{
    c->pause &= (uint8_t)~CONN_PAUSE_INBOUND;
    if (c->state == CONN_OPEN)
        worker_tlist_move(c->w, c, TL_ACTIVE);
    else if (c->tlist == TL_PAUSED)
        worker_tlist_remove(c->w, c);
    if (conn_update_events(c) < 0)
        conn_release(c, "event error");
}

int conn_close(struct conn *c, unsigned code, const char *reason, const char *by)
{
    char id[CONN_ID_MAX];

    if (!ws_close_code_is_sendable(code))
        return -1;
    if (c->state != CONN_OPEN)
        return 0;
    log_msg(LOG_INFO, conn_id(c, id, sizeof(id)), "close code=%u by=%s", code, by);
    batch_cork(c);
    c->w->slot->st.closes_by_server++;
    hooks_conn_closing(c, code, reason, by);
    conn_enter_closing(c);
    conn_send_close(c, code, reason);
    return 0;
}

/* An HTTP answer that ends the connection: flush it, then close politely. */
static void conn_http_answer(struct conn *c, int status, const char *why, uint32_t retry_after_s)
{
    char resp[512];
    struct iovec iov;
    size_t n = retry_after_s > 0
                   ? ws_hs_response_retry(status, retry_after_s, why, resp, sizeof(resp))
                   : ws_hs_response_error(status, why, resp, sizeof(resp));

    conn_enter_closing(c);
    c->flags |= CONN_F_FLUSH_CLOSE | CONN_F_LINGER | CONN_F_DISCARD;
    if (n == 0) {
        conn_release(c, "http error");
        return;
    }
    iov.iov_base = resp;
    iov.iov_len = n;
    if (conn_send(c, &iov, 1, OUTQ_CTRL) == 0)
        c->flags |= CONN_F_CLOSE_SENT;
}

static void conn_http_error(struct conn *c, int status, const char *why)
{
    c->w->slot->st.handshakes_failed++;
    conn_http_answer(c, status, why, 0);
}

void conn_http_respond(struct conn *c, const char *head, size_t hlen, const char *body, size_t blen)
{
    struct iovec iov[2] = {{(void *)(uintptr_t)head, hlen}, {(void *)(uintptr_t)body, blen}};

    conn_hs_free(c);
    conn_enter_closing(c);
    c->flags |= CONN_F_FLUSH_CLOSE | CONN_F_LINGER | CONN_F_DISCARD;
    if (conn_send(c, iov, blen > 0 ? 2 : 1, OUTQ_CTRL) == 0)
        c->flags |= CONN_F_CLOSE_SENT;
}

int conn_send_text(struct conn *c, const char *p, size_t len)
{
    if (c->state != CONN_OPEN)
        return 0;
    return conn_send_frame(c, WS_OP_TEXT, (const uint8_t *)p, len);
}

void conn_refuse(struct conn *c, int status, const char *why)
{
    char id[CONN_ID_MAX];

    log_limited(LOG_INFO, conn_id(c, id, sizeof(id)), "handshake refused status=%d why=\"%s\"",
                status, why);
    conn_hs_free(c);
    conn_http_error(c, status, why);
}

/* Protocol violation (RFC 6455 §7.1.7): close with the decoder's code, then linger. */
static void conn_fail(struct conn *c, unsigned code, const char *why)
{
    char id[CONN_ID_MAX];

    c->w->slot->st.protocol_errors++;
    if (c->state != CONN_OPEN) {
        conn_release(c, why);
        return;
    }
    log_limited(LOG_INFO, conn_id(c, id, sizeof(id)), "protocol error code=%u why=\"%s\"", code,
                why);
    hooks_conn_closing(c, code, why, "error");
    conn_enter_closing(c);
    c->flags |= CONN_F_FLUSH_CLOSE | CONN_F_LINGER | CONN_F_DISCARD;
    conn_send_close(c, code, why);
}

/* Handshake ------------------------------------------------------------------------ */

static void conn_upgrade(struct conn *c)
{
    char resp[1024], extra[512], id[CONN_ID_MAX], remote[CONN_REMOTE_MAX];
    struct iovec iov;
    size_t n;
    int len;
    int status;
    const char *why = NULL;

    conn_id(c, id, sizeof(id));
    status = hooks_conn_upgrading(c, &why);
    if (status != 0) {
        conn_refuse(c, status, why);
        return;
    }
    len = snprintf(extra, sizeof(extra), "X-Wsgate-Conn: %s\r\n", id);
    if (c->w->cfg->deflate && len > 0 && (size_t)len < sizeof(extra))
        deflate_negotiate(c->w, c, c->hs, extra + len, sizeof(extra) - (size_t)len);
    n = ws_hs_response_101(c->hs, extra, resp, sizeof(resp));
    conn_hs_free(c);
    if (n == 0) {
        conn_release(c, "101 too long");
        return;
    }
    c->state = CONN_OPEN;
    c->w->slot->st.handshakes_ok++;
    worker_tlist_move(c->w, c, TL_ACTIVE);
    log_msg(LOG_INFO, id, "open remote=%s", conn_remote(c, remote, sizeof(remote)));
    iov.iov_base = resp;
    iov.iov_len = n;
    if (conn_send(c, &iov, 1, OUTQ_CTRL) < 0)
        return;
    hooks_conn_opened(c);
}

/*
 * The head is partial: its bytes move from the worker's parser into one of c's own,
 * sized for what has arrived. Returns -1 when c was refused.
 */
static int conn_hs_keep(struct conn *c)
{
    struct worker *w = c->w;
    struct ws_hs *hs = malloc(sizeof(*hs));

    if (hs == NULL) {
        conn_refuse(c, 503, "out of memory");
        return -1;
    }
    memcpy(hs, &w->hs, sizeof(*hs));        /* a move: ws_hs holds no pointer into itself */
    ws_hs_init(&w->hs, w->cfg->max_header); /* forgets what hs owns now */
    c->hs = hs;
    return 0;
}

/* The verdict on a whole head; returns n, or -1 when c was released/refused. */
static ssize_t conn_hs_verdict(struct conn *c, ssize_t n)
{
    switch (c->hs->status) {
    case 101:
        if (c->flags & CONN_F_ADMIN) {
            conn_refuse(c, 404, "not found");
            return -1;
        }
        conn_upgrade(c);
        return c->state == CONN_OPEN ? n : -1;
    default:
        if (c->hs->status == 426 && !c->hs->upgrade && hooks_conn_plain_http(c))
            return -1;
        conn_refuse(c, c->hs->status, c->hs->why);
        return -1;
    }
}

/*
 * Returns bytes consumed by the handshake, or -1 when c was released/refused. Most
 * requests arrive in one read: the worker's parser judges them and c allocates
 * nothing, so many handshakes in flight leave no trail of freed blocks between the
 * connections that stay. Only a partial head gets a parser of its own.
 */
static ssize_t conn_handshake(struct conn *c, const uint8_t *buf, size_t len)
{
    struct worker *w = c->w;
    ssize_t n;

    if (c->hs == NULL)
        c->hs = &w->hs;
    n = ws_hs_feed(c->hs, buf, len);
    if (n < 0) {
        conn_refuse(c, 503, "out of memory");
        return -1;
    }
    if (c->hs->status == 0)
        return c->hs == &w->hs && conn_hs_keep(c) < 0 ? -1 : n;
    n = conn_hs_verdict(c, n);
    if (c->hs == &w->hs) /* every verdict frees it; the worker's must be free for the next */
        conn_hs_free(c);
    return n;
}

/* Frames --------------------------------------------------------------------------- */

static void conn_on_close_frame(struct conn *c, const uint8_t *p, size_t len)
{
    unsigned code = 0;
    const uint8_t *reason;
    size_t rlen;
    int err;
    char id[CONN_ID_MAX];

    c->flags |= CONN_F_DISCARD; /* nothing is read after it (§5.5.1) */
    if (c->flags & CONN_F_CLOSE_SENT) {
        /* The reply to our close: the server closes TCP first (§7.1.1). */
        c->flags |= CONN_F_FLUSH_CLOSE;
        c->flags &= (uint16_t)~CONN_F_LINGER;
        if (c->out == NULL)
            conn_release(c, "close handshake done");
        return;
    }
    err = ws_close_parse(p, len, &code, &reason, &rlen);
    c->w->slot->st.closes_by_client++;
    conn_id(c, id, sizeof(id));
    if (err != 0) {
        c->w->slot->st.protocol_errors++;
        log_limited(LOG_INFO, id, "bad close frame code=%d", err);
        hooks_conn_closing(c, (unsigned)err, "invalid close frame", "error");
        conn_enter_closing(c);
        c->flags |= CONN_F_FLUSH_CLOSE;
        conn_send_close(c, (unsigned)err, "invalid close frame");
        return;
    }
    log_msg(LOG_INFO, id, "close code=%u by=client", code);
    {
        char text[WS_CLOSE_REASON_MAX + 1]; /* a received reason is at most 123 bytes */
        if (rlen > 0)
            memcpy(text, reason, rlen);
        text[rlen] = '\0';
        hooks_conn_closing(c, code, text, "client");
    }
    conn_enter_closing(c);
    c->flags |= CONN_F_FLUSH_CLOSE;
    /* Echo the code (§5.5.1); an empty close is answered with an empty one. */
    if (code == WS_CLOSE_NO_STATUS)
        conn_send_close(c, 0, NULL);
    else
        conn_send_close(c, ws_close_code_is_sendable(code) ? code : WS_CLOSE_NORMAL, NULL);
}

static void conn_on_control(struct conn *c, unsigned op, const uint8_t *p, size_t len)
{
    switch (op) {
    case WS_OP_PING:
        if (c->state == CONN_OPEN)
            conn_send_frame(c, WS_OP_PONG, p, len);
        break;
    case WS_OP_PONG:
        break;
    case WS_OP_CLOSE:
        conn_on_close_frame(c, p, len);
        break;
    default:
        break;
    }
}

/* A whole data message, borrowed for the call: echoed, or handed to inbound.c. */
static void conn_deliver(struct conn *c, unsigned op, const uint8_t *p, size_t len)
{
    if (c->w->cfg->inbound == CONFIG_INBOUND_ECHO)
        conn_send_frame(c, op, p, len);
    else
        inbound_message(c, op, p, len);
}

/*
 * The worker's --max-pending budget is full: this connection's message does not fit.
 * 1013 tells the client to come back later; the others keep theirs.
 */
static void conn_busy(struct conn *c)
{
    struct worker *w = c->w;
    char id[CONN_ID_MAX];

    w->slot->st.pending_closes++;
    log_limited(LOG_WARN, conn_id(c, id, sizeof(id)),
                "close code=%u by=busy pending=%zu max_pending=%llu", WS_CLOSE_TRY_AGAIN_LATER,
                w->pending_bytes, (unsigned long long)w->cfg->max_pending);
    if (c->state != CONN_OPEN) {
        conn_release(c, "message buffers full");
        return;
    }
    w->slot->st.closes_by_server++;
    hooks_conn_closing(c, WS_CLOSE_TRY_AGAIN_LATER, BUSY_REASON, "busy");
    conn_enter_closing(c);
    conn_send_close(c, WS_CLOSE_TRY_AGAIN_LATER, BUSY_REASON);
}

/* Takes n more bytes of the worker's --max-pending budget. Returns false when they do
 * not fit. */
static bool pending_take(struct worker *w, size_t n)
{
    if (n > w->cfg->max_pending || w->pending_bytes > w->cfg->max_pending - n)
        return false;
    w->pending_bytes += n;
    return true;
}

/*
 * Makes room in c->msg for add more bytes. The buffer grows at once to what the
 * current frame needs (ahead: its bytes still to come), and by half at least, so many
 * small fragments cost few copies; never past --max-message, nor past what the frame
 * needs when the budget is short. Returns 0, 1 when the budget is full, -1 when
 * memory runs out.
 */
static int conn_msg_reserve(struct conn *c, size_t add, uint64_t ahead)
{
    struct worker *w = c->w;
    size_t len = c->msg != NULL ? c->msg->len : 0, cap = c->msg != NULL ? c->msg->cap : 0;
    uint64_t frame = (uint64_t)len + add + ahead; /* <= --max-message */
    uint64_t want = cap + cap / 2;
    struct msgbuf *m;

    if (len + add <= cap)
        return 0;
    if (want < MSG_MIN)
        want = MSG_MIN;
    if (want > w->cfg->max_message)
        want = w->cfg->max_message;
    if (want < frame)
        want = frame;
    if (!pending_take(w, (size_t)want - cap)) {
        want = frame;
        if (!pending_take(w, (size_t)want - cap))
            return 1;
    }
    m = realloc(c->msg, sizeof(*m) + (size_t)want);
    if (m == NULL) {
        w->pending_bytes -= (size_t)want - cap;
        return -1;
    }
    if (c->msg == NULL) {
        m->len = 0;
        m->unzip = NULL;
    }
    m->cap = (size_t)want;
    c->msg = m;
    return 0;
}

/* The inflater of a compressed message, made at its first frame (in a msgbuf of cap 0
 * until inflated bytes are kept). NULL when c was closed. */
static struct ws_unzip *conn_unzip(struct conn *c, unsigned opcode)
{
    struct worker *w = c->w;
    struct ws_unzip *u;

    if (c->msg != NULL && c->msg->unzip != NULL)
        return c->msg->unzip;
    if (!pending_take(w, WS_UNZIP_COST)) {
        conn_busy(c);
        return NULL;
    }
    u = ws_unzip_new(w->cfg->max_message, opcode == WS_OP_TEXT);
    if (u != NULL && c->msg == NULL) {
        c->msg = malloc(sizeof(*c->msg));
        if (c->msg != NULL)
            c->msg->len = c->msg->cap = 0;
    }
    if (u == NULL || c->msg == NULL) {
        ws_unzip_free(u);
        w->pending_bytes -= WS_UNZIP_COST;
        conn_fail(c, WS_CLOSE_INTERNAL_ERROR, "out of memory");
        return NULL;
    }
    c->msg->unzip = u;
    return u;
}

/*
 * A piece of a compressed message (permessage-deflate): inflated as it comes, in
 * pieces of DEFLATE_PIECE bytes, each checked (ws_zip.h: UTF-8, --max-message) before
 * it is kept (echo, publish, stream) or dropped; the inflater goes with the message.
 */
static void conn_on_zdata(struct conn *c, const struct ws_dec_out *o)
{
    struct worker *w = c->w;
    bool keep = w->cfg->inbound != CONFIG_INBOUND_DROP;
    struct ws_unzip *u = conn_unzip(c, o->opcode);
    uint8_t *piece = deflate_piece(w);
    struct msgbuf *m;
    const char *why;
    unsigned code;
    ssize_t n;
    int r;

    if (u == NULL)
        return;
    if (piece == NULL) {
        conn_fail(c, WS_CLOSE_INTERNAL_ERROR, "out of memory");
        return;
    }
    w->slot->deflate.inflated_in += o->len;
    ws_unzip_input(u, o->data, o->len, o->msg_end);
    while ((n = ws_unzip_output(u, piece, DEFLATE_PIECE)) > 0) {
        if (!keep)
            continue;
        r = conn_msg_reserve(c, (size_t)n, 0);
        if (r > 0) {
            conn_busy(c);
            return;
        }
        if (r < 0) {
            conn_fail(c, WS_CLOSE_INTERNAL_ERROR, "out of memory");
            return;
        }
        memcpy(c->msg->data + c->msg->len, piece, (size_t)n);
        c->msg->len += (size_t)n;
    }
    if (n < 0) {
        code = ws_unzip_error(u, &why);
        if (code == WS_CLOSE_TOO_BIG)
            w->slot->deflate.bombs++;
        else if (code == WS_CLOSE_INVALID_DATA)
            w->slot->deflate.inflate_errors++;
        conn_fail(c, code, why);
        return;
    }
    if (!o->msg_end)
        return;
    w->slot->deflate.inflated++;
    w->slot->deflate.inflated_out += ws_unzip_total(u);
    m = c->msg;
    c->msg = NULL;
    ws_unzip_free(u);
    w->pending_bytes -= WS_UNZIP_COST;
    if (keep)
        conn_deliver(c, o->opcode, m->data, m->len);
    else
        w->slot->inbound.dropped[INBOUND_DROP_MODE]++;
    w->pending_bytes -= m->cap;
    free(m);
}

static void conn_on_data(struct conn *c, const struct ws_dec_out *o)
{
    struct worker *w = c->w;
    int r;

    w->slot->st.bytes_in += o->len;
    if (o->msg_end)
        w->slot->st.msgs_in++;
    if (c->state != CONN_OPEN)
        return;
    if (o->compressed) {
        conn_on_zdata(c, o);
        return;
    }
    if (w->cfg->inbound == CONFIG_INBOUND_DROP) {
        if (o->msg_end)
            w->slot->inbound.dropped[INBOUND_DROP_MODE]++;
        return;
    }
    if (o->msg_end && c->msg == NULL) {
        conn_deliver(c, o->opcode, o->data, o->len);
        return;
    }
    if (o->len > 0) {
        r = conn_msg_reserve(c, o->len, c->dec.remaining);
        if (r > 0) {
            conn_busy(c);
            return;
        }
        if (r < 0) {
            conn_fail(c, WS_CLOSE_INTERNAL_ERROR, "out of memory");
            return;
        }
        memcpy(c->msg->data + c->msg->len, o->data, o->len);
        c->msg->len += o->len;
    }
    if (o->msg_end) { /* c->msg holds the message: only empty ones ended above */
        struct msgbuf *m = c->msg;
        c->msg = NULL;
        conn_deliver(c, o->opcode, m->data, m->len);
        w->pending_bytes -= m->cap;
        free(m);
    }
}

static void conn_frames(struct conn *c, uint8_t *p, size_t len)
{
    struct ws_dec_out o;

    while (len > 0 && c->state != CONN_CLOSED && !(c->flags & CONN_F_DISCARD)) {
        ssize_t n = ws_dec_feed(&c->dec, p, len, &o);

        if (n < 0) {
            conn_fail(c, c->dec.close_code, c->dec.why);
            return;
        }
        p += n;
        len -= (size_t)n;
        if (!o.ready)
            continue;
        if (!o.control) {
            conn_on_data(c, &o);
            continue;
        }
        if (o.frame_end && c->ctrl_len == 0) {
            conn_on_control(c, o.opcode, o.data, o.len);
            continue;
        }
        if (c->ctrl == NULL) {
            if (!pending_take(c->w, CTRL_MAX)) {
                conn_busy(c);
                return;
            }
            c->ctrl = malloc(CTRL_MAX);
            if (c->ctrl == NULL) {
                c->w->pending_bytes -= CTRL_MAX;
                conn_fail(c, WS_CLOSE_INTERNAL_ERROR, "out of memory");
                return;
            }
        }
        memcpy(c->ctrl + c->ctrl_len, o.data, o.len); /* control frames are <= 125 bytes */
        c->ctrl_len = (uint8_t)(c->ctrl_len + o.len);
        if (o.frame_end) {
            uint8_t *ctrl = c->ctrl;
            size_t clen = c->ctrl_len;
            c->ctrl = NULL;
            c->ctrl_len = 0;
            conn_on_control(c, o.opcode, ctrl, clen);
            c->w->pending_bytes -= CTRL_MAX;
            free(ctrl);
        }
    }
}

static void conn_process(struct conn *c, uint8_t *buf, size_t len)
{
    if (c->state == CONN_HANDSHAKE) {
        ssize_t n = conn_handshake(c, buf, len);
        if (n < 0)
            return;
        buf += n;
        len -= (size_t)n;
        if (len == 0 || c->state != CONN_OPEN)
            return;
    }
    if (c->state == CONN_OPEN)
        worker_tlist_move(c->w, c, TL_ACTIVE); /* heard from: the keepalive restarts */
    else if (c->flags & CONN_F_DISCARD)
        return; /* nothing more to decode: only waiting for EOF */
    conn_frames(c, buf, len);
}

static void conn_read(struct conn *c)
{
    struct worker *w = c->w;
    int i;

    if (c->state == CONN_OPEN && !(c->flags & CONN_F_ADMIN) && inbound_blocked(w)) {
        /* Its messages would have nowhere to go: they wait in the kernel (TCP pushes
         * back) rather than be read and dropped. */
        conn_pause_inbound(c);
        return;
    }
    if (c->out == NULL)
        c->flags |= CONN_F_CORK; /* the answers to this input leave together */
    for (i = 0; i < READS_PER_EVENT && c->state != CONN_CLOSED && c->pause == 0; i++) {
        ssize_t n = io_read(c, w->rbuf, w->rbuf_cap);

        if (n > 0) {
            conn_process(c, w->rbuf, (size_t)n);
            if ((size_t)n < w->rbuf_cap && !io_has_more(c))
                break;
            continue;
        }
        if (n == 0) {
            conn_release(c, c->state == CONN_CLOSING ? "closed" : "eof without close frame");
            break;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            conn_release(c, errno == EPROTO ? "tls error" : "read error");
        break;
    }
    conn_uncork(c);
    /* Input left inside OpenSSL wakes no event: come back for it after the others. */
    if (i == READS_PER_EVENT && c->state != CONN_CLOSED && io_has_more(c))
        event_active(&c->ev, EV_READ, 1);
}

/* The TLS handshake, before the upgrade request; --handshake-timeout runs from accept. */
static void conn_tls(struct conn *c)
{
    struct worker *w = c->w;
    char id[CONN_ID_MAX], remote[CONN_REMOTE_MAX], info[128];
    const char *why = "?";
    int r = io_handshake(c, &why);

    if (r < 0) {
        w->slot->st.tls_handshakes_failed++;
        log_limited(LOG_INFO, conn_id(c, id, sizeof(id)),
                    "tls handshake failed remote=%s why=\"%s\"",
                    conn_remote(c, remote, sizeof(remote)), why);
        conn_release(c, "tls handshake failed");
        return;
    }
    if (r > 0) {
        w->slot->st.tls_handshakes_ok++;
        c->state = CONN_HANDSHAKE;
        log_msg(LOG_DEBUG, conn_id(c, id, sizeof(id)), "tls handshake done %s",
                io_tls_info(c, info, sizeof(info)));
    }
    if (conn_update_events(c) < 0) {
        conn_release(c, "event error");
        return;
    }
    if (r > 0)
        conn_read(c); /* the request may have come with the handshake's last flight */
}

static void conn_on_event(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    (void)fd;
    if (c->state == CONN_PROXY) {
        if (what & EV_READ)
            conn_proxy(c);
        return;
    }
    what = io_ready(c, what);
    if (c->state == CONN_TLS) {
        if (what & EV_READ)
            conn_tls(c);
        return;
    }
    if ((what & EV_WRITE) && conn_flush(c) < 0)
        return;
    if ((what & EV_READ) && c->state != CONN_CLOSED)
        conn_read(c);
}

void conn_on_timeout(struct conn *c)
{
    struct worker *w = c->w;
    char id[CONN_ID_MAX];

    switch (c->tlist) {
    case TL_HANDSHAKE:
        w->slot->st.handshake_timeouts++;
        if (c->state == CONN_TLS)
            w->slot->st.tls_handshake_timeouts++;
        log_limited(LOG_INFO, conn_id(c, id, sizeof(id)), "%shandshake timeout",
                    c->state == CONN_TLS ? "tls " : "");
        if (c->hs != NULL && ws_hs_has_request_line(c->hs)) {
            /* A request began and stalled (slowloris): say so (RFC 9110 §15.5.9).
             * A connection that sent no request line gets no answer. */
            conn_hs_free(c);
            conn_http_answer(c, 408, "request timeout", 0);
        } else {
            conn_release(c, "handshake timeout");
        }
        break;
    case TL_ACTIVE: {
        /* Silent for --ping-interval: ask (§5.5.2). */
        uint8_t frame[2];
        size_t n = ws_enc_control(frame, WS_OP_PING, NULL, 0);
        struct iovec iov = {frame, n};
        worker_tlist_move(w, c, TL_PINGED);
        conn_send(c, &iov, 1, OUTQ_CTRL);
        break;
    }
    case TL_PINGED:
        if (c->out != NULL) {
            /* Silent because it does not read what we send: say why, not just cut. */
            conn_slow(c, "output still queued at the keepalive timeout");
            break;
        }
        w->slot->st.ping_timeouts++;
        log_msg(LOG_INFO, conn_id(c, id, sizeof(id)), "keepalive timeout");
        hooks_conn_closing(c, WS_CLOSE_ABNORMAL, "keepalive timeout", "timeout");
        conn_release(c, "keepalive timeout");
        break;
    case TL_CLOSING:
        w->slot->st.close_timeouts++;
        log_msg(LOG_DEBUG, conn_id(c, id, sizeof(id)), "close timeout");
        conn_release(c, "close timeout");
        break;
    default:
        worker_tlist_remove(w, c);
        break;
    }
}
