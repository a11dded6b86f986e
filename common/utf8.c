#include "common/utf8.h"

/*
 * Bjoern Hoehrmann's DFA ("Flexible and Economical UTF-8 Decoder"), validation
 * only. The first 256 entries map a byte to one of 12 classes; the rest is the
 * transition table indexed by state + class, where states are multiples of 12.
 * Because every state names exactly which bytes may follow, a sequence is
 * rejected at the first byte that cannot continue it: C0/C1 and E0 80..9F and
 * F0 80..8F (overlong), ED A0..BF (surrogates), F4 90..BF and F5..FF (beyond
 * U+10FFFF), and a continuation byte with no lead byte.
 */
static const uint8_t utf8_class[256] = {
    /* 00..7f: ASCII */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* 80..8f, 90..9f, a0..bf: continuation bytes, split by what E0/ED/F0/F4 accept */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    /* c0..c1: always overlong; c2..df: 2-byte leads */
    8, 8, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    /* e0, e1..ec, ed, ee..ef, f0, f1..f3, f4, f5..ff */
    10, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4, 3, 3, 11, 6, 6, 6, 5, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
    8};

static const uint8_t utf8_trans[108] = {
    0,  12, 24, 36, 60, 96, 84, 12, 12, 12, 48, 72, /* 0: accept */
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, /* 12: reject */
    12, 0,  12, 12, 12, 12, 12, 0,  12, 0,  12, 12, /* 24: one byte left */
    12, 24, 12, 12, 12, 12, 12, 24, 12, 24, 12, 12, /* 36: two left */
    12, 12, 12, 12, 12, 12, 12, 24, 12, 12, 12, 12, /* 48: after e0, needs a0..bf */
    12, 24, 12, 12, 12, 12, 12, 12, 12, 24, 12, 12, /* 60: after ed, needs 80..9f */
    12, 12, 12, 12, 12, 12, 12, 36, 12, 36, 12, 12, /* 72: after f0, needs 90..bf */
    12, 36, 12, 12, 12, 12, 12, 36, 12, 36, 12, 12, /* 84: after f1..f3 */
    12, 36, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, /* 96: after f4, needs 80..8f */
};

uint32_t utf8_feed(uint32_t state, const uint8_t *s, size_t len, size_t *bad_at)
{
    if (state == UTF8_REJECT) {
        if (bad_at != NULL)
            *bad_at = 0;
        return UTF8_REJECT;
    }
    for (size_t i = 0; i < len; i++) {
        state = utf8_trans[state + utf8_class[s[i]]];
        if (state == UTF8_REJECT) {
            if (bad_at != NULL)
                *bad_at = i;
            return UTF8_REJECT;
        }
    }
    return state;
}

bool utf8_is_valid(const uint8_t *s, size_t len)
{
    return utf8_feed(UTF8_ACCEPT, s, len, NULL) == UTF8_ACCEPT;
}

size_t utf8_cut(const uint8_t *s, size_t len, size_t max)
{
    size_t n = max;

    if (len <= max)
        return len;
    /* s[max] is the first byte left out: back up while it continues a code point */
    while (n > 0 && (s[n] & 0xc0) == 0x80)
        n--;
    return n;
}
