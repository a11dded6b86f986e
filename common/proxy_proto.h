#ifndef WSGATE_COMMON_PROXY_PROTO_H
#define WSGATE_COMMON_PROXY_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

/*
 * The PROXY protocol header (haproxy's proxy-protocol.txt, versions 1 and 2) that a
 * load balancer sends before the client's own bytes, telling who the client is: an
 * incremental parser, fed the connection's first bytes as they arrive, whose result
 * never depends on how they were cut.
 *
 * Only a listener configured for it (--proxy-protocol) parses it, and then every
 * connection must start with it: guessing whether it is there would let any client
 * claim any address (spec §5). Accepted:
 *   v1  "PROXY TCP4 <src> <dst> <sport> <dport>\r\n", TCP6 likewise, at most 107
 *       bytes with the CRLF; addresses canonical (no leading zeros in IPv4, ports
 *       0-65535 without leading zeros), fields separated by exactly one space;
 *       "PROXY UNKNOWN" followed by CRLF or by a space and anything up to the CRLF.
 *   v2  the 12-byte signature, version 2, command LOCAL (the balancer's own health
 *       check: the family and any address are ignored) or PROXY; for PROXY, TCP or
 *       UDP over IPv4 or IPv6 and AF_UNIX (address lengths 12, 36, 216 at least),
 *       or an unspecified family or transport; a header of at most
 *       PROXY_PROTO_V2_MAX bytes in all. After the address block come TLVs, which
 *       are skipped one by one (a TLV running past the header's length fails).
 * The client's address is taken only from TCP over IPv4/IPv6 (v1 TCP4/TCP6, v2
 * 0x11/0x21). v1 UNKNOWN, v2 LOCAL and every other v2 family leave h->local set:
 * keep the socket's own peer address (spec §2.1 and §2.2 ask exactly this).
 *
 * Embedded in the connection (no allocation); no pointer into the caller's buffer
 * outlives a call.
 */

#define PROXY_PROTO_V1_MAX 107  /* the longest v1 line, CRLF included (spec §2.1) */
#define PROXY_PROTO_V2_MAX 4096 /* our bound on a whole v2 header, TLVs included */

enum proxy_proto_state {
    PROXY_PROTO_START,   /* nothing yet */
    PROXY_PROTO_V1,      /* gathering the v1 line */
    PROXY_PROTO_V2_HEAD, /* gathering the 16 fixed bytes of v2 */
    PROXY_PROTO_V2_ADDR, /* gathering a TCP address block */
    PROXY_PROTO_V2_TLV,  /* gathering the 3 bytes that start a TLV */
    PROXY_PROTO_V2_SKIP, /* skipping bytes we do not read */
    PROXY_PROTO_DONE,
    PROXY_PROTO_FAILED,
};

struct proxy_proto {
    enum proxy_proto_state state;
    uint8_t buf[PROXY_PROTO_V1_MAX]; /* the v1 line; the v2 head and address */
    size_t have;                     /* bytes gathered in buf */
    size_t want;                     /* v2: bytes to gather into buf before the next step */
    size_t left;                     /* v2: bytes of the header after its 16 still to come */
    size_t skip;                     /* v2: bytes to pass over before the next step */
    int version;                     /* 1 or 2 once the first byte is seen, else 0 */
    bool local;                      /* done: keep the socket's own peer address */
    struct sockaddr_storage src;     /* done and !local: the client's address and port */
    const char *why;                 /* failed: a static one-line reason */
};

void proxy_proto_init(struct proxy_proto *h);

/*
 * Feeds buf[0..len). Returns the bytes consumed, never past the header's last byte:
 * once proxy_proto_is_done(h), what is left of buf belongs to the client (the
 * upgrade request), and later calls consume nothing. Returns 0..len with the header
 * still incomplete when all of buf was taken: call again with more bytes. Returns
 * -1 when the bytes are not a header we accept: h->why says why, and every later
 * call returns -1 (the caller closes the connection without answering).
 */
ssize_t proxy_proto_feed(struct proxy_proto *h, const uint8_t *buf, size_t len);

/* Whether the whole header has been read; h->local and h->src are then final. */
bool proxy_proto_is_done(const struct proxy_proto *h);

#endif /* WSGATE_COMMON_PROXY_PROTO_H */
