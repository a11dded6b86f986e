#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"
#include "tests/unit/check.h"

/*
 * Reference written from Unicode 15 Table 3-7 (well-formed byte sequences), kept
 * independent of the DFA: returns the index of the first byte that no well-formed
 * text can have there, or len; *complete tells whether s ends between code points.
 */
static size_t ref_bad_at(const uint8_t *s, size_t len, bool *complete)
{
    size_t i = 0;

    *complete = true;
    while (i < len) {
        uint8_t b = s[i], lo = 0x80, hi = 0xbf;
        size_t need;

        if (b <= 0x7f) {
            i++;
            continue;
        }
        if (b >= 0xc2 && b <= 0xdf) {
            need = 1;
        } else if (b >= 0xe0 && b <= 0xef) {
            need = 2;
            if (b == 0xe0)
                lo = 0xa0;
            if (b == 0xed)
                hi = 0x9f;
        } else if (b >= 0xf0 && b <= 0xf4) {
            need = 3;
            if (b == 0xf0)
                lo = 0x90;
            if (b == 0xf4)
                hi = 0x8f;
        } else {
            return i;
        }
        i++;
        for (size_t k = 0; k < need; k++, i++) {
            if (i == len) {
                *complete = false;
                return len;
            }
            if (s[i] < (k == 0 ? lo : 0x80) || s[i] > (k == 0 ? hi : 0xbf))
                return i;
        }
    }
    return len;
}

struct utf8_case {
    const char *name;
    const char *s;
    size_t len;
    size_t bad_at; /* (size_t)-1: valid */
};

#define VALID ((size_t)-1)

/* Autobahn 6.x style: boundary code points and classic malformations. */
static const struct utf8_case utf8_cases[] = {
    {"empty", "", 0, VALID},
    {"kosme", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 11, VALID},
    {"U+0000", "\x00", 1, VALID},
    {"U+007F", "\x7f", 1, VALID},
    {"U+0080", "\xc2\x80", 2, VALID},
    {"U+07FF", "\xdf\xbf", 2, VALID},
    {"U+0800", "\xe0\xa0\x80", 3, VALID},
    {"U+D7FF", "\xed\x9f\xbf", 3, VALID},
    {"U+E000", "\xee\x80\x80", 3, VALID},
    {"U+FFFD", "\xef\xbf\xbd", 3, VALID},
    {"U+FFFE", "\xef\xbf\xbe", 3, VALID},
    {"U+FFFF", "\xef\xbf\xbf", 3, VALID},
    {"U+10000", "\xf0\x90\x80\x80", 4, VALID},
    {"U+10FFFF", "\xf4\x8f\xbf\xbf", 4, VALID},
    {"emoji", "\xf0\x9f\x98\x80", 4, VALID},
    {"lone continuation 80", "\x80", 1, 0},
    {"lone continuation BF", "\xbf", 1, 0},
    {"continuation after ASCII", "ab\x80", 3, 2},
    {"C0 80 overlong NUL", "\xc0\x80", 2, 0},
    {"C1 BF overlong", "\xc1\xbf", 2, 0},
    {"E0 80 80 overlong", "\xe0\x80\x80", 3, 1},
    {"E0 9F BF overlong", "\xe0\x9f\xbf", 3, 1},
    {"F0 80 80 80 overlong", "\xf0\x80\x80\x80", 4, 1},
    {"F0 8F BF BF overlong", "\xf0\x8f\xbf\xbf", 4, 1},
    {"U+D800 surrogate", "\xed\xa0\x80", 3, 1},
    {"U+DBFF surrogate", "\xed\xaf\xbf", 3, 1},
    {"U+DC00 surrogate", "\xed\xb0\x80", 3, 1},
    {"U+DFFF surrogate", "\xed\xbf\xbf", 3, 1},
    {"surrogate pair", "\xed\xa0\x80\xed\xb0\x80", 6, 1},
    {"U+110000", "\xf4\x90\x80\x80", 4, 1},
    {"F5 lead", "\xf5\x80\x80\x80", 4, 0},
    {"F8 5-byte lead", "\xf8\x88\x80\x80\x80", 5, 0},
    {"FC 6-byte lead", "\xfc\x84\x80\x80\x80\x80", 6, 0},
    {"FE", "\xfe", 1, 0},
    {"FF", "\xff", 1, 0},
    {"FE FE FF FF", "\xfe\xfe\xff\xff", 4, 0},
    {"2-byte lead then ASCII", "\316a", 2, 1},
    {"3-byte lead then ASCII", "\xe0\240a", 3, 2},
    {"kosme then surrogate", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\200edited", 20,
     12},
};

static void test_utf8_cases(void)
{
    for (size_t i = 0; i < sizeof(utf8_cases) / sizeof(utf8_cases[0]); i++) {
        const struct utf8_case *c = &utf8_cases[i];
        uint8_t *s = check_dup_exact(c->s, c->len);
        size_t bad = 999;
        uint32_t st = utf8_feed(UTF8_ACCEPT, s, c->len, &bad);
        bool ok = c->bad_at == VALID
                      ? st == UTF8_ACCEPT && utf8_is_valid(s, c->len)
                      : st == UTF8_REJECT && bad == c->bad_at && !utf8_is_valid(s, c->len);

        CHECK(ok);
        if (!ok)
            fprintf(stderr, "  utf8 case: %s\n", c->name);
        /* the same verdict whatever the cut, and the same first bad byte */
        for (size_t cut = 0; cut <= c->len; cut++) {
            size_t b1 = 999, b2 = 999;
            uint32_t a = utf8_feed(UTF8_ACCEPT, s, cut, &b1);
            uint32_t z = utf8_feed(a, s + cut, c->len - cut, &b2);

            if (a == UTF8_REJECT)
                CHECK(z == UTF8_REJECT && b1 == c->bad_at && b2 == 0);
            else
                CHECK(z == st && (z != UTF8_REJECT || cut + b2 == c->bad_at));
        }
        free(s);
    }
}

static void test_utf8_incomplete_is_not_accept(void)
{
    static const char *prefixes[] = {"\xce", "\xe0\xa0", "\xef\xbf",
                                     "\xf0", "\xf0\x90", "\xf4\x8f\xbf"};

    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
        size_t len = strlen(prefixes[i]);
        uint8_t *s = check_dup_exact(prefixes[i], len);
        uint32_t st = utf8_feed(UTF8_ACCEPT, s, len, NULL);

        CHECK(st != UTF8_ACCEPT && st != UTF8_REJECT);
        CHECK(!utf8_is_valid(s, len));
        free(s);
    }
}

static void test_utf8_reject_is_sticky(void)
{
    size_t bad = 7;

    CHECK(utf8_feed(UTF8_REJECT, (const uint8_t *)"abc", 3, &bad) == UTF8_REJECT && bad == 0);
    CHECK(utf8_feed(UTF8_REJECT, (const uint8_t *)"", 0, NULL) == UTF8_REJECT);
}

/*
 * Every 1- and 2-byte input, and every 3- and 4-byte input whose last bytes come
 * from a set of edge values, against the reference: the same first bad byte.
 */
static void test_utf8_matches_reference(void)
{
    static const uint8_t edge[] = {0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc2, 0xf4};
    const size_t ne = sizeof(edge);
    size_t mismatches = 0, checked = 0;

    for (unsigned b0 = 0; b0 < 256; b0++) {
        for (unsigned b1 = 0; b1 < 256; b1++) {
            for (size_t k = 0; k < ne * ne + 2; k++) {
                uint8_t s[4] = {(uint8_t)b0, (uint8_t)b1, 0, 0};
                size_t len, bad = 0, ref;
                bool complete;
                uint32_t st;

                if (k == ne * ne) {
                    len = 1;
                    if (b1 != 0)
                        continue;
                } else if (k == ne * ne + 1) {
                    len = 2;
                } else {
                    len = 4;
                    s[2] = edge[k / ne];
                    s[3] = edge[k % ne];
                    if (b0 < 0xc2 || b0 > 0xf4)
                        continue; /* the tail cannot matter */
                }
                st = utf8_feed(UTF8_ACCEPT, s, len, &bad);
                ref = ref_bad_at(s, len, &complete);
                checked++;
                if (ref < len)
                    mismatches += !(st == UTF8_REJECT && bad == ref);
                else
                    mismatches +=
                        !(complete ? st == UTF8_ACCEPT : st != UTF8_ACCEPT && st != UTF8_REJECT);
            }
        }
    }
    CHECK(checked > 100000);
    CHECK(mismatches == 0);
}

static void test_utf8_cut(void)
{
    /* "aé€😀": 1 + 2 + 3 + 4 bytes; boundaries at 0, 1, 3, 6, 10 */
    static const char text[] = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
    static const size_t want[11] = {0, 1, 1, 3, 3, 3, 6, 6, 6, 6, 10};
    uint8_t *s = check_dup_exact(text, 10);

    for (size_t max = 0; max <= 10; max++)
        CHECK(utf8_cut(s, 10, max) == want[max]);
    CHECK(utf8_cut(s, 10, 50) == 10);
    CHECK(utf8_cut(s, 3, 2) == 1);
    CHECK(utf8_cut(s, 0, 0) == 0);
    free(s);
}

static void test_utf8_cut_keeps_valid_prefix(void)
{
    static const char text[] = "\xe6\x9c\x8d\xe5\x8a\xa1 ok \xf0\x9f\x98\x80\xce\xba!";
    size_t len = sizeof(text) - 1;
    uint8_t *s = check_dup_exact(text, len);

    for (size_t max = 0; max <= len; max++) {
        size_t n = utf8_cut(s, len, max);

        CHECK(n <= max && utf8_is_valid(s, n));
        CHECK(n == len || max - n < 4);
    }
    free(s);
}

void suite_utf8(void)
{
    test_utf8_cases();
    test_utf8_incomplete_is_not_accept();
    test_utf8_reject_is_sticky();
    test_utf8_matches_reference();
    test_utf8_cut();
    test_utf8_cut_keeps_valid_prefix();
}
