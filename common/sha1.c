#include "common/sha1.h"

#include <string.h>

static uint32_t rol(uint32_t x, unsigned n)
{
    return x << n | x >> (32 - n);
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* One 512-bit block, FIPS 180-4 §6.1.2, with the 16-word schedule of §6.1.3. */
static void sha1_block(uint32_t h[5], const uint8_t *p)
{
    uint32_t w[16], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f, k, t;

    for (unsigned i = 0; i < 16; i++)
        w[i] = be32(p + 4 * i);
    for (unsigned i = 0; i < 80; i++) {
        if (i >= 16)
            w[i & 15] = rol(w[(i + 13) & 15] ^ w[(i + 8) & 15] ^ w[(i + 2) & 15] ^ w[i & 15], 1);
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5a827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ed9eba1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8f1bbcdc;
        } else {
            f = b ^ c ^ d;
            k = 0xca62c1d6;
        }
        t = rol(a, 5) + f + e + k + w[i & 15];
        e = d;
        d = c;
        c = rol(b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

void sha1_init(struct sha1 *s)
{
    static const uint32_t iv[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};

    memcpy(s->h, iv, sizeof(iv));
    s->len = 0;
}

void sha1_update(struct sha1 *s, const void *data, size_t len)
{
    const uint8_t *p = data;
    size_t have = (size_t)(s->len % 64), n;

    s->len += len;
    if (have > 0) {
        n = 64 - have < len ? 64 - have : len;
        memcpy(s->block + have, p, n);
        p += n;
        len -= n;
        if (have + n < 64)
            return;
        sha1_block(s->h, s->block);
    }
    for (; len >= 64; p += 64, len -= 64)
        sha1_block(s->h, p);
    if (len > 0)
        memcpy(s->block, p, len);
}

void sha1_final(struct sha1 *s, uint8_t out[SHA1_LEN])
{
    /* §5.1.1: a 1 bit, zeros to 56 mod 64 bytes, then the length in bits, big-endian */
    uint64_t bits = s->len * 8;
    uint8_t pad[72] = {0x80};
    size_t have = (size_t)(s->len % 64), n = have < 56 ? 56 - have : 120 - have;

    for (unsigned i = 0; i < 8; i++)
        pad[n + i] = (uint8_t)(bits >> (56 - 8 * i));
    sha1_update(s, pad, n + 8);
    for (unsigned i = 0; i < 5; i++) {
        out[4 * i] = (uint8_t)(s->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)s->h[i];
    }
}
