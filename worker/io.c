#include "worker/io.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <openssl/err.h>

#include "common/log.h"
#include "common/tls.h"
#include "worker/conn.h"
#include "worker/worker.h"

/* TLS ------------------------------------------------------------------------------ */

int io_tls_start(struct conn *c, SSL_CTX *ctx)
{
    SSL *ssl = SSL_new(ctx);

    if (ssl == NULL)
        goto err;
    if (SSL_set_fd(ssl, c->fd) != 1)
        goto err_free_ssl;
    SSL_set_accept_state(ssl);
    c->ssl = ssl;
    c->io_flags = 0;
    return 0;
err_free_ssl:
    SSL_free(ssl);
err:
    ERR_clear_error();
    return -1;
}

/* The connection failed: every later call fails the same way, and no close_notify is
 * sent (RFC 8446 §6.2: after a fatal alert, or a broken socket, there is no one to
 * tell). Returns -1 with errno set. */
static ssize_t tls_fail(struct conn *c, int ssl_err)
{
    char id[CONN_ID_MAX];
    int err = errno == EPIPE ? EPIPE : ECONNRESET;

    c->io_flags |= IO_F_FATAL;
    if (ssl_err == SSL_ERROR_SYSCALL) {
        c->io_flags |= IO_F_RESET;
    } else {
        log_msg(LOG_DEBUG, conn_id(c, id, sizeof(id)), "tls error why=\"%s\"", tls_error_reason());
        err = EPROTO;
    }
    ERR_clear_error();
    errno = err;
    return -1;
}

/* The error a failed connection repeats. */
static ssize_t tls_failed(const struct conn *c)
{
    errno = (c->io_flags & IO_F_RESET) ? ECONNRESET : EPROTO;
    return -1;
}

int io_handshake(struct conn *c, const char **why)
{
    int r, e;

    c->io_flags &= (uint8_t)~IO_F_RD_WANTS_WRITE;
    ERR_clear_error();
    r = SSL_do_handshake(c->ssl);
    if (r == 1)
        return 1;
    e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        return 0;
    if (e == SSL_ERROR_WANT_WRITE) {
        c->io_flags |= IO_F_RD_WANTS_WRITE;
        return 0;
    }
    c->io_flags |= IO_F_FATAL;
    if (e == SSL_ERROR_SYSCALL) {
        c->io_flags |= IO_F_RESET;
        *why = ERR_peek_last_error() != 0 ? tls_error_reason() : errno != 0 ? "reset" : "eof";
    } else if (e == SSL_ERROR_ZERO_RETURN) {
        *why = "eof";
    } else {
        *why = tls_error_reason();
    }
    ERR_clear_error();
    return -1;
}

/*
 * Fills buf with as many records as it holds: OpenSSL reads ahead, so what it holds
 * is invisible to the event loop, and a short count must mean that it holds no whole
 * record (SSL_read() wants the socket) or that EOF or an error comes next.
 */
static ssize_t tls_read(struct conn *c, uint8_t *buf, size_t len)
{
    size_t got = 0;

    c->io_flags &= (uint8_t) ~(IO_F_MORE | IO_F_RD_WANTS_WRITE);
    if (c->io_flags & IO_F_FATAL)
        return tls_failed(c);
    while (got < len) {
        size_t want = len - got;
        int n, e;

        ERR_clear_error();
        n = SSL_read(c->ssl, buf + got, want > INT_MAX ? INT_MAX : (int)want);
        if (n > 0) {
            got += (size_t)n;
            continue;
        }
        e = SSL_get_error(c->ssl, n);
        switch (e) {
        case SSL_ERROR_WANT_WRITE:
        case SSL_ERROR_WANT_READ:
            if (e == SSL_ERROR_WANT_WRITE)
                c->io_flags |= IO_F_RD_WANTS_WRITE;
            if (got > 0)
                return (ssize_t)got;
            errno = EAGAIN;
            return -1;
        case SSL_ERROR_ZERO_RETURN: /* close_notify, or EOF (SSL_OP_IGNORE_UNEXPECTED_EOF) */
            if (got > 0) {
                c->io_flags |= IO_F_MORE; /* OpenSSL says 0 again next time */
                return (ssize_t)got;
            }
            return 0;
        default:
            tls_fail(c, e);
            if (got > 0) {
                c->io_flags |= IO_F_MORE; /* the error is the next call's */
                return (ssize_t)got;
            }
            return -1;
        }
    }
    c->io_flags |= IO_F_MORE; /* buf is full: there may be more records inside */
    return (ssize_t)got;
}

ssize_t io_read(struct conn *c, void *buf, size_t len)
{
    if (c->ssl == NULL)
        return recv(c->fd, buf, len, 0);
    return tls_read(c, buf, len);
}

/*
 * The next record's plaintext: up to IO_TLS_RECORD bytes from iov[i] at byte off, over
 * IO_TLS_GATHER entries at most. Its length is the least of IO_TLS_RECORD and the bytes
 * of those entries, so a retry offered the same bytes first (cut into entries the same
 * way or coarser) gets a record at least as long, as OpenSSL requires. A record that
 * is one entry is written in place; pieces are copied into the worker's scratch.
 */
static size_t tls_record(struct conn *c, const struct iovec *iov, int iovcnt, int i, size_t off,
                         const uint8_t **p)
{
    int end = iovcnt - i > IO_TLS_GATHER ? i + IO_TLS_GATHER : iovcnt;
    size_t first = iov[i].iov_len - off, n = 0;

    if (first >= IO_TLS_RECORD || i + 1 == end) {
        *p = (const uint8_t *)iov[i].iov_base + off;
        return first < IO_TLS_RECORD ? first : IO_TLS_RECORD;
    }
    for (; i < end && n < IO_TLS_RECORD; i++, off = 0) {
        size_t take = iov[i].iov_len - off;
        if (take > IO_TLS_RECORD - n)
            take = IO_TLS_RECORD - n;
        memcpy(c->w->tls_wbuf + n, (const uint8_t *)iov[i].iov_base + off, take);
        n += take;
    }
    *p = c->w->tls_wbuf;
    return n;
}

/* One SSL_write() per record, until the iovec is written or the socket is full. */
static ssize_t tls_writev(struct conn *c, const struct iovec *iov, int iovcnt, size_t *pin)
{
    size_t done = 0, off = 0;
    int i = 0;

    c->io_flags &= (uint8_t)~IO_F_WR_WANTS_READ;
    if (c->io_flags & IO_F_FATAL)
        return tls_failed(c);
    for (;;) {
        const uint8_t *p;
        size_t n, w;
        int r, e;

        while (i < iovcnt && off == iov[i].iov_len) {
            i++;
            off = 0;
        }
        if (i == iovcnt)
            break;
        n = tls_record(c, iov, iovcnt, i, off, &p);
        ERR_clear_error();
        r = SSL_write(c->ssl, p, (int)n);
        if (r > 0) {
            c->io_flags &= (uint8_t)~IO_F_WR_BLOCKED;
            done += (size_t)r;
            for (w = (size_t)r; w > 0;) { /* a client's max_fragment_length may cut it */
                size_t left = iov[i].iov_len - off;
                if (w < left) {
                    off += w;
                    break;
                }
                w -= left;
                i++;
                off = 0;
            }
            continue;
        }
        e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
            if (e == SSL_ERROR_WANT_READ)
                c->io_flags |= IO_F_WR_WANTS_READ;
            c->io_flags |= IO_F_WR_BLOCKED;
            *pin = n;
            break;
        }
        tls_fail(c, e);
        return done > 0 ? (ssize_t)done : -1; /* after some bytes, the next call fails */
    }
    if (done == 0 && *pin > 0) {
        errno = EAGAIN;
        return -1;
    }
    return (ssize_t)done;
}

ssize_t io_writev(struct conn *c, const struct iovec *iov, int iovcnt, size_t *pin)
{
    ssize_t r;

    *pin = 0;
    if (c->ssl != NULL)
        return tls_writev(c, iov, iovcnt, pin);
    /* send()/sendmsg() go to the socket layer directly; read()/writev() would pass
     * through the VFS first, which costs measurably per message. */
    do {
        if (iovcnt == 1) {
            r = send(c->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
        } else {
            struct msghdr m = {.msg_iov = (struct iovec *)(uintptr_t)iov,
                               .msg_iovlen = (size_t)iovcnt};
            r = sendmsg(c->fd, &m, MSG_NOSIGNAL);
        }
    } while (r < 0 && errno == EINTR);
    return r;
}

/* Our close_notify (RFC 8446 §6.1), once, and only where it can be sent whole: after
 * the handshake, with no record half sent and no error. One alert record; when the
 * socket is full it is dropped, as the connection ends anyway. */
static void tls_close_notify(struct conn *c)
{
    if ((c->io_flags & (IO_F_FATAL | IO_F_WR_BLOCKED)) || !SSL_is_init_finished(c->ssl) ||
        (SSL_get_shutdown(c->ssl) & SSL_SENT_SHUTDOWN))
        return;
    ERR_clear_error();
    (void)SSL_shutdown(c->ssl);
    ERR_clear_error();
}

void io_shutdown(struct conn *c)
{
    if (c->ssl != NULL)
        tls_close_notify(c);
    shutdown(c->fd, SHUT_WR);
}

void io_close(struct conn *c)
{
    if (c->ssl != NULL) {
        tls_close_notify(c);
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    close(c->fd);
    c->fd = -1;
}

short io_events(const struct conn *c, bool rd, bool wr)
{
    short ev = 0;

    if (rd)
        ev |= (c->io_flags & IO_F_RD_WANTS_WRITE) ? EV_WRITE : EV_READ;
    if (wr)
        ev |= (c->io_flags & IO_F_WR_WANTS_READ) ? EV_READ : EV_WRITE;
    return ev;
}

short io_ready(const struct conn *c, short what)
{
    short r = 0;

    if (c->ssl == NULL)
        return what;
    if (what & ((c->io_flags & IO_F_RD_WANTS_WRITE) ? EV_WRITE : EV_READ))
        r |= EV_READ;
    if (what & ((c->io_flags & IO_F_WR_WANTS_READ) ? EV_READ : EV_WRITE))
        r |= EV_WRITE;
    return r;
}

const char *io_tls_info(const struct conn *c, char *buf, size_t cap)
{
    const unsigned char *alpn = NULL;
    unsigned alen = 0;

    if (c->ssl == NULL) {
        snprintf(buf, cap, "plain");
        return buf;
    }
    SSL_get0_alpn_selected(c->ssl, &alpn, &alen);
    snprintf(buf, cap, "version=%s cipher=%s resumed=%d alpn=%.*s", SSL_get_version(c->ssl),
             SSL_get_cipher_name(c->ssl), SSL_session_reused(c->ssl), alen > 0 ? (int)alen : 1,
             alen > 0 ? (const char *)alpn : "-");
    return buf;
}

bool io_has_more(const struct conn *c)
{
    return c->ssl != NULL && (c->io_flags & IO_F_MORE);
}
