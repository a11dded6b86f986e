#ifndef WSGATE_WORKER_CONN_H
#define WSGATE_WORKER_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "common/ws_dec.h"

struct worker;
struct ws_hs;

/*
 * One client connection, RFC 6455 §4-§7: (TLS →) HANDSHAKE → OPEN → CLOSING → CLOSED.
 * Idle, it holds this struct and its embedded read event only: input goes through
 * the worker's scratch buffer, and buffers are allocated while bytes are pending
 * (a partial message, unsent output, a handshake in progress) and freed after.
 * Created by listener accept (conn_new), freed by the worker's reaper after
 * conn_release(); nothing frees a connection inside its own call chain.
 */

enum conn_state {
    CONN_PROXY, /* the PROXY protocol header, before anything else (--proxy-protocol) */
    CONN_TLS,   /* the TLS handshake, before the upgrade request (wss://) */
    CONN_HANDSHAKE,
    CONN_OPEN,
    CONN_CLOSING, /* our close frame or HTTP error is queued or sent; no data delivered */
    CONN_CLOSED,  /* released; waiting for the reaper */
};

#define CONN_F_CLOSE_SENT  0x02   /* our close frame is queued: nothing may follow it */
#define CONN_F_CORK        0x04   /* input being handled: small frames wait for one writev */
#define CONN_F_FLUSH_CLOSE 0x08   /* close TCP as soon as output is flushed */
#define CONN_F_LINGER      0x10   /* after the flush: shut down writes, read to EOF */
#define CONN_F_DISCARD     0x40   /* closing: input is read and dropped until EOF */
#define CONN_F_INDEXED     0x80   /* in the registry: opened, close event owed */
#define CONN_F_EVENT_DONE  0x100  /* the close event is published */
#define CONN_F_SPARED      0x200  /* named in the except list of the order being applied */
#define CONN_F_MATCHED     0x400  /* already matched by the order being applied */
#define CONN_F_HELLO       0x800  /* asked (?hello=1) for its id in a first text message */
#define CONN_F_ADMIN       0x1000 /* on the admin listener: /healthz, /readyz, /metrics */
#define CONN_F_EXPIRES     0x2000 /* its token expires: an entry in the expiry heap (auth.c) */

/* Why reading is paused (conn->pause): each reason is set and cleared on its own. */
#define CONN_PAUSE_OUTPUT  0x01 /* output over its high mark: the client is not reading */
#define CONN_PAUSE_INBOUND 0x02 /* its messages wait for Redis (inbound.h): on TL_PAUSED */

struct ws_unzip;

/* A data message being received (echo, publish and stream modes), counted in the
 * worker's --max-pending; for a compressed message (permessage-deflate) also its
 * inflater, counted there too (WS_UNZIP_COST), with cap 0 when the message is not
 * kept (drop mode). */
struct msgbuf {
    struct ws_unzip *unzip; /* owned: the inflater of a compressed message, or NULL */
    size_t len;
    size_t cap;
    uint8_t data[];
};

struct outq;
struct ssl_st;
struct ssl_ctx_st;

/* What only JWT and the per-address limits need, allocated only when they are on. */
struct conn_sec {
    struct proxy_proto *proxy; /* owned: a PROXY header that came in pieces, while it does */
    uint32_t ip_ticket;        /* its count in the per-address table (iplimit.h), 0 when none */
    char ident[];              /* "sub\0jti\0" of its token (auth.c), or "\0\0" without JWT */
};

struct conn {
    struct event ev;    /* embedded read/write event on fd */
    struct worker *w;   /* borrowed */
    struct conn *tprev; /* timer list links (worker.h) */
    struct conn *tnext;
    struct conn *hnext;    /* id index chain (registry.h) */
    struct member *groups; /* owned: ngroups memberships in gcap nodes, NULL when none */
    struct ws_hs *hs;      /* a partial request head: owned; the worker's while judged */
    struct outq *out;      /* owned while output is pending (outq.h) */
    struct msgbuf *msg;    /* owned while a data message is partly received */
    uint8_t *ctrl;         /* owned while a control frame is partly received */
    struct conn_sec *sec;  /* owned: who it is and its per-address count; NULL when neither
                              JWT nor a per-address limit is on */
    uint64_t seq;          /* connection id = w->id_prefix + seq */
    struct ws_dec dec;
    uint32_t stamp; /* when it joined its timer list (worker_now) */
    int fd;
    uint16_t flags;
    uint16_t close_code; /* the code we sent, for the log */
    uint8_t state;       /* enum conn_state */
    uint8_t tlist;       /* enum tlist */
    uint8_t ctrl_len;
    uint8_t remote_family; /* AF_INET or AF_INET6 */
    uint8_t pause;         /* CONN_PAUSE_* reasons; reading waits while any is set */
    uint8_t io_flags;      /* IO_F_* (io.h) */
    uint16_t ngroups;      /* up to --max-groups (1024) */
    uint16_t gcap;         /* member nodes allocated in groups (registry.c) */
    uint16_t remote_port;
    uint8_t remote_addr[16];
    struct ssl_st *ssl; /* owned by io.c on a TLS connection, else NULL */
};

/* Takes ownership of fd: on failure fd is closed. tls (borrowed) makes it a TLS
 * connection, NULL a plain one. Returns NULL when memory runs out. */
struct conn *conn_new(struct worker *w, int fd, const struct sockaddr *sa, struct ssl_ctx_st *tls);

/*
 * Starts the server's close: sends a close frame with code and reason (cut to
 * 123 bytes), stops delivering data, waits --close-timeout for the client's reply.
 * Does nothing for a connection already closing. Returns 0, or -1 when code may
 * not be sent.
 */
int conn_close(struct conn *c, unsigned code, const char *reason, const char *by);

/* Closes TCP at once and hands c to the reaper. Safe to call twice. */
void conn_release(struct conn *c, const char *why);

/* The connection starts with a PROXY protocol header (--proxy-protocol): its client
 * address, the per-address limits, then TLS when the worker has it, then the upgrade.
 * Call right after conn_new() with no TLS context. */
void conn_expect_proxy(struct conn *c);

/* Keeps the per-address ticket of a new connection (given back at release). Returns 0,
 * or -1 when memory runs out: then c was released and the ticket given back. */
int conn_keep_ticket(struct conn *c, uint32_t ticket);

/* Frees c; only the reaper calls this. */
void conn_free(struct conn *c);

/* Sends a text message to an open connection. Returns -1 when c was released. */
int conn_send_text(struct conn *c, const char *p, size_t len);

struct outq_frame;

/*
 * Between these two calls, the frames queued for a connection by conn_send_shared()
 * and conn_close() wait (corked, as the answers to one read do), and end() writes what
 * each connection got, with one writev each: orders that a loop turn applies one after
 * the other cost a connection one system call, not one per order. At most
 * CONN_BATCH_MAX connections are corked; past them, frames are written at once as
 * outside a batch.
 */
#define CONN_BATCH_MAX 1024
void conn_batch_begin(struct worker *w);
void conn_batch_end(struct worker *w);

/* What conn_send_shared() did with a frame. */
enum conn_push {
    CONN_PUSH_SENT,    /* written, or queued (by reference) behind earlier output */
    CONN_PUSH_SKIPPED, /* not open, or our close frame is queued: nothing may follow */
    CONN_PUSH_SLOW,    /* it would have taken the queue past --max-outbound: not queued,
                          the connection is closing with 1013 as a slow consumer */
    CONN_PUSH_GONE,    /* the write failed or memory ran out: c was released */
};

/*
 * Sends the whole frame f (header and payload, built once for many connections) to an
 * open connection: written at once when nothing waits for the socket, else a counted
 * reference to f is queued (never a copy), so a connection with nothing pending still
 * holds no buffer afterwards unless the kernel left part of f. A reference is taken
 * only when queued; the caller keeps its own. Returns an enum conn_push.
 */
int conn_send_shared(struct conn *c, struct outq_frame *f);

/* Answers a plain HTTP request with head (status line and headers, ending in a blank
 * line) and body, then closes the connection politely. */
void conn_http_respond(struct conn *c, const char *head, size_t hlen, const char *body,
                       size_t blen);

/* Stops reading an open c until conn_resume_inbound(): it waits on the worker's
 * TL_PAUSED list, where no keepalive runs (its pongs could not be read). */
void conn_pause_inbound(struct conn *c);

/* Reads c again: back on TL_ACTIVE, the keepalive from now. */
void conn_resume_inbound(struct conn *c);

/* Timer list expiry, called by the worker's tick for list heads. */
void conn_on_timeout(struct conn *c);

/* Writes the connection id ("gw1-1-5f3a9c1e-42") into buf. */
const char *conn_id(const struct conn *c, char *buf, size_t cap);

#define CONN_ID_MAX 128

/* Writes the client's address ("127.0.0.1:5555", "[::1]:5555") into buf. */
const char *conn_remote(const struct conn *c, char *buf, size_t cap);

#define CONN_REMOTE_MAX 64

#endif /* WSGATE_WORKER_CONN_H */
