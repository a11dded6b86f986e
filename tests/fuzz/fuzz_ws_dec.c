/* libFuzzer target: the frame decoder gives the same verdict, and on success the same
 * payload bytes and frame boundaries, whether the stream arrives whole or cut into
 * small pieces. Input: [max selector][split seed][client bytes...]; bit 2 of the max
 * selector negotiates permessage-deflate (RSV1 allowed on a data message's first frame,
 * which marks its chunks compressed). */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/ws_dec.h"

struct digest {
    uint64_t h;
    int close_code;
    size_t frames;
};

static void mix(struct digest *d, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        d->h ^= p[i];
        d->h *= 1099511628211ull;
    }
}

/* Feeds src in pieces of the sizes next_piece() picks (0: whole). */
static void run(const uint8_t *src, size_t len, uint64_t max, unsigned wbits, uint32_t seed,
                struct digest *d)
{
    uint8_t *buf = malloc(len > 0 ? len : 1);
    struct ws_dec dec;
    size_t off = 0;

    memset(d, 0, sizeof(*d));
    d->h = 14695981039346656037ull;
    if (buf == NULL)
        abort();
    memcpy(buf, src, len); /* the decoder unmasks in place */
    ws_dec_init(&dec, max);
    ws_dec_set_deflate(&dec, wbits);
    while (off < len) {
        size_t piece = len - off;
        if (seed != 0) {
            seed = seed * 1103515245u + 12345u;
            piece = 1 + (seed >> 16) % 17;
            if (piece > len - off)
                piece = len - off;
        }
        uint8_t *p = buf + off;
        size_t left = piece;
        while (left > 0) {
            struct ws_dec_out o;
            ssize_t n = ws_dec_feed(&dec, p, left, &o);
            if (n < 0) {
                d->close_code = dec.close_code;
                free(buf);
                return;
            }
            p += n;
            left -= (size_t)n;
            if (!o.ready)
                continue;
            mix(d, o.data, o.len);
            if (o.frame_end) {
                uint8_t mark[4] = {'F', o.opcode, (uint8_t)(o.msg_end ? 'M' : '-'),
                                   (uint8_t)(o.compressed ? 'Z' : '-')};
                mix(d, mark, sizeof(mark));
                d->frames++;
            }
        }
        off += piece;
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint64_t maxes[4] = {0, 125, 4096, 1 << 20};
    struct digest whole, cut;

    if (size < 2)
        return 0;
    uint64_t max = maxes[data[0] & 3];
    unsigned wbits = data[0] & 4 ? 15 : 0;
    uint32_t seed = data[1] | 1u;
    run(data + 2, size - 2, max, wbits, 0, &whole);
    run(data + 2, size - 2, max, wbits, seed, &cut);
    if (whole.close_code != cut.close_code)
        abort();
    if (whole.close_code == 0 && (whole.h != cut.h || whole.frames != cut.frames))
        abort();
    return 0;
}
