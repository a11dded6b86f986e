#ifndef WSGATE_COMMON_WS_HS_H
#define WSGATE_COMMON_WS_HS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * The opening handshake, RFC 6455 §4.2: an incremental parser of the client's
 * upgrade request, and builders for the answers. Bytes may arrive one at a time;
 * the parser gathers them (up to max_header) until the blank line, then judges the
 * whole request once, so the result never depends on how it was cut.
 *
 * Verdicts (h->status):
 *   101  a valid upgrade: h->accept holds Sec-WebSocket-Accept
 *   400  malformed request line or header, missing/duplicate Host, a key that is
 *        not base64 of 16 bytes, Upgrade without "websocket" or Connection without
 *        "upgrade" on an upgrade request, HTTP version other than 1.1+
 *   405  a method other than GET
 *   426  Sec-WebSocket-Version other than 13 (answer carries Sec-WebSocket-Version: 13),
 *        or a plain GET that asks for no upgrade (h->upgrade is false)
 *   431  request head larger than max_header
 * h->why is a static one-line text for the log and the answer's body.
 */

#define WS_HS_ACCEPT_LEN  28 /* base64 of a 20-byte SHA-1 */
#define WS_HS_MAX_HEADERS 100

struct ws_hs_header {
    const char *name;  /* borrowed from h->buf, NUL-terminated, as sent */
    const char *value; /* borrowed from h->buf, NUL-terminated, trimmed */
};

struct ws_hs_param {
    char *key;   /* percent-decoded, NUL-terminated, owned */
    char *value; /* percent-decoded, NUL-terminated, owned ("" when absent) */
};

/*
 * Embedded or on the heap; owned by the connection while it handshakes. About 150
 * bytes plus the request head gathered so far: header lines are indexed only once
 * the head is whole. It holds no pointer into itself, so its bytes may be copied to
 * another place (moving what it owns: only the new copy is cleaned up then).
 */
struct ws_hs {
    size_t max_header;
    char *buf;  /* owned: the request head, then parsed in place */
    size_t len; /* bytes gathered */
    size_t cap;
    size_t scanned;    /* bytes already searched for the blank line */
    bool request_line; /* the first line has arrived whole (ends with CRLF) */
    int status;        /* 0 while incomplete, then 101 or an HTTP error status */
    const char *why;
    bool upgrade;               /* the request asked for a WebSocket upgrade */
    char method[8];             /* as sent, cut to 7 bytes */
    char *path;                 /* owned: percent-decoded path of the target, or NULL */
    char *query;                /* borrowed from buf: the raw query string after '?', or NULL */
    struct ws_hs_param *params; /* owned: decoded query parameters in order, repeats kept */
    size_t nparams;
    struct ws_hs_header *headers; /* owned: the nheaders lines, once judged */
    size_t nheaders;
    char accept[WS_HS_ACCEPT_LEN + 1];
};

void ws_hs_init(struct ws_hs *h, size_t max_header);

/* Frees what h owns; h may be initialised again. */
void ws_hs_cleanup(struct ws_hs *h);

/*
 * Feeds buf[0..len). Returns the bytes consumed: once h->status is set, the bytes
 * after the blank line are not consumed (they belong to the first frames). Returns
 * -1 only when memory runs out. Once status is set, further calls consume nothing.
 */
ssize_t ws_hs_feed(struct ws_hs *h, const uint8_t *buf, size_t len);

/*
 * Whether the first line of the head (the request line) has arrived whole, ended
 * by CRLF, whatever it holds; true from then on, verdict or not. A connection whose
 * head is still incomplete at the handshake timeout gets 408 when this is true
 * (the client started a request and was too slow), and is closed without an answer
 * when it is false (nothing that looks like HTTP came: a scanner or an idle socket).
 */
bool ws_hs_has_request_line(const struct ws_hs *h);

/* The first value of header name (case-insensitive), or NULL. Valid after a verdict. */
const char *ws_hs_header(const struct ws_hs *h, const char *name);

/* The values of every header line named name (case-insensitive), in order, into
 * v[0..max); returns how many there are (more than max: only max are written).
 * Borrowed, valid after a verdict. Repeated lines of a list header combine (RFC 7230
 * §3.2.2): Sec-WebSocket-Extensions may come so. */
size_t ws_hs_header_all(const struct ws_hs *h, const char *name, const char **v, size_t max);

/*
 * The idx-th query parameter named key (0 for the first), or NULL.
 */
const char *ws_hs_param(const struct ws_hs *h, const char *key, size_t idx);

/* out = base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")), NUL-terminated. */
void ws_hs_accept_key(const char *key, size_t key_len, char out[WS_HS_ACCEPT_LEN + 1]);

/*
 * Writes the 101 answer for h into out (cap bytes) with extra header lines
 * (each "Name: value\r\n", may be NULL). Returns its length, or 0 if it does not fit.
 */
size_t ws_hs_response_101(const struct ws_hs *h, const char *extra, char *out, size_t cap);

/*
 * Writes an error answer with status (400, 403, 404, 405, 408, 426, 429, 431, 500,
 * 503) and a short text/plain body why + "\n", "Connection: close"; 426 adds
 * "Sec-WebSocket-Version: 13" and "Upgrade: websocket", 405 adds "Allow: GET".
 * Returns its length, or 0 if it does not fit.
 */
size_t ws_hs_response_error(int status, const char *why, char *out, size_t cap);

/*
 * The same answer with "Retry-After: retry_after_s" (RFC 9110 §10.2.3, in seconds):
 * 429 for the per-address limits (RFC 6585 §4), 503 at capacity. Returns its length,
 * or 0 if it does not fit or status is not one ws_hs_response_error knows.
 */
size_t ws_hs_response_retry(int status, uint32_t retry_after_s, const char *why, char *out,
                            size_t cap);

#endif /* WSGATE_COMMON_WS_HS_H */
