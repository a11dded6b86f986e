#include "common/ws_zip.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "common/utf8.h"

#define MEM_LEVEL 8

struct ws_zip {
    z_stream zs; /* never moves: zlib's state points back to it */
    unsigned wbits;
};

struct ws_unzip {
    z_stream zs;
    uint64_t max;       /* --max-message */
    uint64_t total;     /* inflated bytes so far */
    const uint8_t *in;  /* input handed over and not yet given to zlib */
    size_t in_len;
    const char *why;
    uint32_t utf8;      /* DFA state of a text message */
    uint16_t code;      /* 0 until it fails */
    bool text;
    bool last;          /* the end of the message was handed over */
    bool in_tail;       /* zlib is reading our 00 00 ff ff, not the peer's bytes */
    bool tail_given;
    bool ended;         /* a block with BFINAL set ended the stream */
    bool more;          /* the last piece filled up: zlib may hold more output */
};

/* RFC 7692 §7.2.2: the receiver appends this to the message's payload. */
static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};

struct ws_zip *ws_zip_new(unsigned wbits, int level)
{
    struct ws_zip *z;

    if (wbits < 9 || wbits > 15 || level < 1 || level > 9)
        return NULL;
    z = calloc(1, sizeof(*z));
    if (z == NULL)
        return NULL;
    /* negative window bits: raw deflate, no zlib header or trailer (§7.2.1) */
    if (deflateInit2(&z->zs, level, Z_DEFLATED, -(int)wbits, MEM_LEVEL, Z_DEFAULT_STRATEGY) !=
        Z_OK) {
        free(z);
        return NULL;
    }
    z->wbits = wbits;
    return z;
}

void ws_zip_free(struct ws_zip *z)
{
    if (z == NULL)
        return;
    deflateEnd(&z->zs);
    free(z);
}

size_t ws_zip_cost(unsigned wbits)
{
    /* zlib's zconf.h: (1 << (windowBits+2)) + (1 << (memLevel+9)), plus its state */
    return ((size_t)1 << (wbits + 2)) + ((size_t)1 << (MEM_LEVEL + 9)) + 6 * 1024;
}

static int grow(uint8_t **buf, size_t *cap, size_t need)
{
    uint8_t *p;

    if (need <= *cap)
        return 0;
    p = realloc(*buf, need);
    if (p == NULL)
        return -1;
    *buf = p;
    *cap = need;
    return 0;
}

ssize_t ws_zip_message(struct ws_zip *z, const uint8_t *in, size_t len, uint8_t **buf,
                       size_t *cap)
{
    size_t out = 0, left = len;
    int r;

    if (deflateReset(&z->zs) != Z_OK)
        return -1;
    /* a sync flush adds at most an empty stored block to deflateBound's figure */
    if (grow(buf, cap, (size_t)deflateBound(&z->zs, (uLong)(len < ULONG_MAX ? len : 0)) + 16) < 0)
        return -1;
    z->zs.next_in = (Bytef *)(uintptr_t)in;
    do {
        unsigned chunk = left < UINT_MAX ? (unsigned)left : UINT_MAX;
        z->zs.next_in = (Bytef *)(uintptr_t)(in + (len - left));
        z->zs.avail_in = chunk;
        do {
            size_t room;
            if (out == *cap && grow(buf, cap, *cap + *cap / 2 + 64) < 0)
                return -1;
            room = *cap - out < UINT_MAX ? *cap - out : UINT_MAX;
            z->zs.next_out = *buf + out;
            z->zs.avail_out = (unsigned)room;
            r = deflate(&z->zs, chunk == left ? Z_SYNC_FLUSH : Z_NO_FLUSH);
            if (r != Z_OK && r != Z_BUF_ERROR)
                return -1;
            out += room - z->zs.avail_out;
        } while (z->zs.avail_out == 0);
        left -= chunk;
    } while (left > 0);
    /* §7.2.1: the flush ends with 00 00 ff ff, which the receiver puts back */
    if (out < 4 || memcmp(*buf + out - 4, tail, 4) != 0)
        return -1;
    return (ssize_t)(out - 4);
}

struct ws_unzip *ws_unzip_new(uint64_t max_message, bool text)
{
    struct ws_unzip *u = calloc(1, sizeof(*u));

    if (u == NULL)
        return NULL;
    if (inflateInit2(&u->zs, -15) != Z_OK) {
        free(u);
        return NULL;
    }
    u->max = max_message;
    u->text = text;
    u->utf8 = UTF8_ACCEPT;
    return u;
}

void ws_unzip_free(struct ws_unzip *u)
{
    if (u == NULL)
        return;
    inflateEnd(&u->zs);
    free(u);
}

void ws_unzip_input(struct ws_unzip *u, const uint8_t *in, size_t len, bool last)
{
    u->in = in;
    u->in_len = len;
    u->last = last;
}

static ssize_t fail(struct ws_unzip *u, uint16_t code, const char *why)
{
    u->code = code;
    u->why = why;
    return -1;
}

/* Gives zlib its next input: the peer's bytes, then our tail. False when none is left. */
static bool refill(struct ws_unzip *u)
{
    if (u->in_len > 0) {
        unsigned n = u->in_len < UINT_MAX ? (unsigned)u->in_len : UINT_MAX;
        u->zs.next_in = (Bytef *)(uintptr_t)u->in;
        u->zs.avail_in = n;
        u->in += n;
        u->in_len -= n;
        u->in_tail = false;
        return true;
    }
    if (u->last && !u->tail_given) {
        u->zs.next_in = (Bytef *)(uintptr_t)tail;
        u->zs.avail_in = sizeof(tail);
        u->tail_given = true;
        u->in_tail = true;
        return true;
    }
    return false;
}

ssize_t ws_unzip_output(struct ws_unzip *u, uint8_t *out, size_t cap)
{
    unsigned room = cap < UINT_MAX ? (unsigned)cap : UINT_MAX;
    size_t n;
    int r;

    if (u->code != 0)
        return -1;
    for (;;) {
        /* a long match may leave output inside zlib with all input read: ask for it */
        if (u->zs.avail_in == 0 && !u->more && !refill(u)) {
            if (u->last && u->text && u->utf8 != UTF8_ACCEPT)
                return fail(u, 1007, "text message ends inside a code point");
            return 0;
        }
        if (u->ended) {
            if (!u->in_tail) /* the stream ended: nothing of the peer's may follow */
                return fail(u, 1007, "data after the final deflate block");
            u->zs.avail_in = 0;
            continue;
        }
        u->zs.next_out = out;
        u->zs.avail_out = room;
        r = inflate(&u->zs, Z_SYNC_FLUSH);
        n = room - u->zs.avail_out;
        u->more = u->zs.avail_out == 0;
        switch (r) {
        case Z_OK:
        case Z_BUF_ERROR: /* no progress: more input is needed */
            break;
        case Z_STREAM_END:
            u->ended = true;
            u->more = false;
            break;
        case Z_MEM_ERROR:
            return fail(u, 1011, "out of memory while inflating");
        default: /* Z_DATA_ERROR (a distance too far back: context taken over), ... */
            return fail(u, 1007, "invalid deflate data");
        }
        if (n > 0) {
            if (n > u->max - u->total) /* never more than max_message and one piece */
                return fail(u, 1009, "message too big once inflated");
            u->total += n;
            if (u->text) {
                u->utf8 = utf8_feed(u->utf8, out, n, NULL);
                if (u->utf8 == UTF8_REJECT)
                    return fail(u, 1007, "invalid UTF-8 in text message");
            }
            return (ssize_t)n;
        }
        if (r == Z_BUF_ERROR && u->zs.avail_in > 0)
            return fail(u, 1007, "invalid deflate data");
    }
}

unsigned ws_unzip_error(const struct ws_unzip *u, const char **why)
{
    if (why != NULL)
        *why = u->why;
    return u->code;
}

uint64_t ws_unzip_total(const struct ws_unzip *u)
{
    return u->total;
}
