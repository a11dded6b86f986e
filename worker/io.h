#ifndef WSGATE_WORKER_IO_H
#define WSGATE_WORKER_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <openssl/ssl.h>

struct conn;

/*
 * The socket layer under conn.c: reads, writes, shutdown and close on a connection's
 * socket, plain or TLS, and the readiness each one waits for. conn.c does no socket
 * I/O of its own. io.c owns c->ssl and c->io_flags, and reads c->fd and c->w.
 *
 * A plain connection costs what it did before io.c: one read(), writev(), shutdown()
 * or close() per call, after one test of c->ssl.
 *
 * A TLS connection holds one SSL from io_tls_start() to io_close(). Its operations do
 * not always wait for their own direction: a read may need the socket writable (the
 * handshake's next flight), a write may need it readable. io_events() turns what the
 * caller wants to do into the events to register, io_ready() the events that fired
 * back into what to do. Input may also wait inside OpenSSL while the socket is quiet:
 * io_has_more() says to read again before waiting on the socket.
 */

/* c->io_flags */
#define IO_F_RD_WANTS_WRITE 0x01 /* TLS: reading (or the handshake) waits for writability */
#define IO_F_WR_WANTS_READ  0x02 /* TLS: a blocked write waits for readability */
#define IO_F_MORE           0x04 /* TLS: OpenSSL may hold input beyond what was returned */
#define IO_F_WR_BLOCKED     0x08 /* TLS: a record is half sent; its write must be retried */
#define IO_F_FATAL          0x10 /* TLS: the connection failed; every later call fails */
#define IO_F_RESET          0x20 /* ... and it was the socket (reset, broken pipe) */

/* Bytes of one TLS record's plaintext: the most one SSL_write() is given. */
#define IO_TLS_RECORD 16384
/* iovec entries gathered into one record at most. A retry must see at least the same
 * bytes again, so a caller's iovec holds at least this many entries of its queue. */
#define IO_TLS_GATHER 32

/*
 * Makes c a TLS connection from ctx (borrowed; the SSL takes its own reference, so a
 * reload may free ctx while c lives). The handshake runs in io_handshake(). Returns
 * 0, or -1 when memory runs out.
 */
int io_tls_start(struct conn *c, SSL_CTX *ctx);

/*
 * Advances the TLS handshake. Returns 1 once it is done, 0 while it waits for the
 * socket (io_events() says which way), -1 when it failed: *why is a static reason for
 * the log ("wrong version number", "http request", "eof").
 */
int io_handshake(struct conn *c, const char **why);

/*
 * Reads up to len bytes. Returns the count, 0 at EOF (FIN, or TLS close_notify), or
 * -1 with errno: EAGAIN (wait: io_events()), EINTR (plain: call again), EPROTO (TLS
 * error), or the socket's error. On TLS, a short count with data may hold back an EOF
 * or an error for the next call; io_has_more() is then true.
 */
ssize_t io_read(struct conn *c, void *buf, size_t len);

/*
 * Writes iov[0..iovcnt) in order. Returns the bytes written (maybe fewer than
 * offered), or -1 with errno: EAGAIN when nothing could be written, EPIPE or
 * ECONNRESET (the peer is gone), EPROTO (TLS error).
 *
 * *pin is OpenSSL's retry rule: when it is above 0, a TLS record holding the next
 * *pin bytes (right after those written) is encrypted and half sent, and the next
 * call must offer those same bytes first, at any address but unchanged, with as many
 * or more after them. The caller keeps them at the head of its queue and never drops
 * them. Always 0 on a plain connection.
 */
ssize_t io_writev(struct conn *c, const struct iovec *iov, int iovcnt, size_t *pin);

/* Ends the output side: TLS close_notify (when the handshake is done, nothing is
 * half sent and no error happened), then shutdown(SHUT_WR). Input can still be read. */
void io_shutdown(struct conn *c);

/* close_notify as in io_shutdown(), frees the SSL, closes the socket (c->fd = -1). */
void io_close(struct conn *c);

/* The libevent events (EV_READ, EV_WRITE) to wait for so that c can read (rd) and
 * write queued output (wr). */
short io_events(const struct conn *c, bool rd, bool wr);

/* What the events in what make possible: EV_READ to read (or go on with the
 * handshake), EV_WRITE to write. */
short io_ready(const struct conn *c, short what);

/* Writes "version=TLSv1.3 cipher=TLS_AES_128_GCM_SHA256 resumed=0 alpn=http/1.1" for
 * the log into buf; returns buf. */
const char *io_tls_info(const struct conn *c, char *buf, size_t cap);

/* True when input may be waiting inside OpenSSL: read again before waiting. */
bool io_has_more(const struct conn *c);

#endif /* WSGATE_WORKER_IO_H */
