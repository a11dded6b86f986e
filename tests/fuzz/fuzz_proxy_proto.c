/* libFuzzer target: the PROXY protocol parser gives the same verdict, reason, address
 * and count of bytes consumed whether the stream arrives whole, one byte at a time or
 * cut at random, never consumes past the header nor more than its limits allow, and
 * never reads outside its input (each piece is copied to an allocation of its size).
 * Input: [split seed][connection bytes...]. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>

#include "common/proxy_proto.h"

struct outcome {
    enum proxy_proto_state state; /* DONE, FAILED or anything else: incomplete */
    size_t used;
    bool local;
    struct sockaddr_storage src;
    const char *why;
};

/* Feeds src in pieces (seed 0: whole; 1: byte by byte; else 1-17 bytes at random). */
static void run(const uint8_t *src, size_t len, uint32_t seed, struct outcome *o)
{
    struct proxy_proto h;
    size_t off = 0;

    proxy_proto_init(&h);
    memset(o, 0, sizeof(*o));
    while (off < len) {
        size_t piece = len - off;
        if (seed == 1) {
            piece = 1;
        } else if (seed != 0) {
            seed = seed * 1103515245u + 12345u;
            piece = 1 + (seed >> 16) % 17;
            if (piece > len - off)
                piece = len - off;
        }
        uint8_t *p = malloc(piece);
        if (p == NULL)
            abort();
        memcpy(p, src + off, piece);
        ssize_t n = proxy_proto_feed(&h, p, piece);
        free(p);
        if (n < 0)
            break;
        if ((size_t)n > piece)
            abort();
        o->used += (size_t)n;
        if (proxy_proto_is_done(&h))
            break;
        if ((size_t)n != piece) /* short only at the header's end */
            abort();
        off += piece;
    }
    o->state = h.state;
    o->local = h.local;
    o->src = h.src;
    o->why = h.why;
    if (h.state == PROXY_PROTO_FAILED && (h.why == NULL || proxy_proto_feed(&h, src, len) != -1))
        abort();
    if (h.state == PROXY_PROTO_DONE) {
        if (h.version == 1 && o->used > PROXY_PROTO_V1_MAX)
            abort();
        if (h.version == 2 && o->used > PROXY_PROTO_V2_MAX)
            abort();
        if (!h.local && h.src.ss_family != AF_INET && h.src.ss_family != AF_INET6)
            abort();
        if (len > 0 && proxy_proto_feed(&h, src, len) != 0)
            abort();
    }
}

static void same(const struct outcome *a, const struct outcome *b)
{
    if (a->state != b->state || a->why != b->why)
        abort();
    if (a->state == PROXY_PROTO_FAILED)
        return; /* the connection is closed: what was consumed before does not matter */
    if (a->used != b->used || a->local != b->local)
        abort();
    if (a->state == PROXY_PROTO_DONE && !a->local && memcmp(&a->src, &b->src, sizeof(a->src)) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct outcome whole, bytes, cut;

    if (size < 1)
        return 0;
    run(data + 1, size - 1, 0, &whole);
    run(data + 1, size - 1, 1, &bytes);
    run(data + 1, size - 1, (uint32_t)data[0] << 1 | 2u, &cut);
    same(&whole, &bytes);
    same(&whole, &cut);
    return 0;
}
