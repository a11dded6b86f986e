#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"
#include "common/ws_close.h"
#include "common/ws_dec.h"
#include "common/ws_enc.h"
#include "tests/unit/check.h"

static const struct {
    uint64_t len;
    size_t hdr_len;
    uint8_t hdr[WS_FRAME_HDR_MAX];
} header_cases[] = {
    {0, 2, {0x82, 0x00}},
    {1, 2, {0x82, 0x01}},
    {125, 2, {0x82, 0x7d}},
    {126, 4, {0x82, 0x7e, 0x00, 0x7e}},
    {256, 4, {0x82, 0x7e, 0x01, 0x00}},
    {65535, 4, {0x82, 0x7e, 0xff, 0xff}},
    {65536, 10, {0x82, 0x7f, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00}},
    {0x0123456789abcdefull, 10, {0x82, 0x7f, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}},
};

static void test_ws_enc_header_lengths(void)
{
    for (size_t i = 0; i < sizeof(header_cases) / sizeof(header_cases[0]); i++) {
        uint8_t out[WS_FRAME_HDR_MAX];
        size_t n = ws_enc_header(out, WS_OP_BINARY, true, header_cases[i].len);

        CHECK(n == header_cases[i].hdr_len);
        CHECK(memcmp(out, header_cases[i].hdr, header_cases[i].hdr_len) == 0);
        if (n != header_cases[i].hdr_len)
            fprintf(stderr, "  header length %llu\n", (unsigned long long)header_cases[i].len);
    }
}

static void test_ws_enc_header_fin_and_opcode(void)
{
    uint8_t out[WS_FRAME_HDR_MAX];

    CHECK(ws_enc_header(out, WS_OP_TEXT, false, 3) == 2 && out[0] == 0x01 && out[1] == 0x03);
    CHECK(ws_enc_header(out, WS_OP_CONT, true, 0) == 2 && out[0] == 0x80 && out[1] == 0x00);
    CHECK(ws_enc_header(out, WS_OP_TEXT, true, 5) == 2 && out[0] == 0x81 && out[1] == 0x05);
}

static void test_ws_enc_control(void)
{
    uint8_t payload[126], out[2 + 126];

    memset(payload, 'p', sizeof(payload));
    CHECK(ws_enc_control(out, WS_OP_PING, (const uint8_t *)"Hello", 5) == 7);
    CHECK(memcmp(out, "\x89\005Hello", 7) == 0);
    CHECK(ws_enc_control(out, WS_OP_PONG, NULL, 0) == 2 && out[0] == 0x8a && out[1] == 0);
    CHECK(ws_enc_control(out, WS_OP_PONG, payload, 125) == 127 && out[1] == 125);
    CHECK(memcmp(out + 2, payload, 125) == 0);
    CHECK(ws_enc_control(out, WS_OP_PING, payload, 126) == 0);
    CHECK(ws_enc_control(out, WS_OP_TEXT, payload, 1) == 0);
    CHECK(ws_enc_control(out, WS_OP_BINARY, payload, 1) == 0);
    CHECK(ws_enc_control(out, WS_OP_CONT, payload, 1) == 0);
    CHECK(ws_enc_control(out, 0xb, payload, 1) == 0);
}

static void test_ws_enc_close_refuses_unsendable_codes(void)
{
    static const unsigned bad[] = {1, 999, 1004, 1005, 1006, 1010, 1015, 1016, 2999, 5000, 65535};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint8_t out[WS_CLOSE_FRAME_MAX];
        bool cut = true;

        CHECK(ws_enc_close(out, bad[i], "x", 1, &cut) == 0 && !cut);
    }
}

/* Parses the frame back: what a peer would see. */
static bool close_round_trip(const uint8_t *frame, size_t n, unsigned want_code, const char *want,
                             size_t want_len)
{
    unsigned code;
    const uint8_t *reason;
    size_t reason_len;

    if (n < 2 || frame[0] != 0x88 || frame[1] != n - 2 || n > WS_CLOSE_FRAME_MAX)
        return false;
    if (ws_close_parse(frame + 2, n - 2, &code, &reason, &reason_len) != 0)
        return false;
    return code == want_code && reason_len == want_len && memcmp(reason, want, want_len) == 0;
}

static void test_ws_enc_close(void)
{
    static const unsigned good[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009,
                                    1011, 1012, 1013, 1014, 3000, 4999};
    const char *zh = "\xe6\x9c\x8d\xe5\x8a\xa1\xe7\xab\xaf\xe7\xbb\xb4\xe6\x8a\xa4\xe4\xb8\xad,"
                     "\xe8\xaf\xb7\xe7\xa8\x8d\xe5\x90\x8e\xe9\x87\x8d\xe8\xbf\x9e";
    uint8_t out[WS_CLOSE_FRAME_MAX];
    char *r300 = malloc(300), emoji[124];
    bool cut = true;
    size_t n;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        n = ws_enc_close(out, good[i], "bye", 3, &cut);
        CHECK(n == 7 && !cut && close_round_trip(out, n, good[i], "bye", 3));
    }
    n = ws_enc_close(out, 1000, "bye", 3, NULL);
    CHECK(n == 7 && memcmp(out, "\x88\x05\x03\350bye", 7) == 0);
    n = ws_enc_close(out, 1001, NULL, 0, &cut);
    CHECK(n == 4 && memcmp(out, "\x88\x02\x03\xe9", 4) == 0 && !cut);

    /* code 0: the empty close that answers a close without a code */
    cut = true;
    n = ws_enc_close(out, 0, "ignored", 7, &cut);
    CHECK(n == 2 && out[0] == 0x88 && out[1] == 0x00 && !cut);

    /* a 300-byte reason is cut to 123 bytes */
    CHECK(r300 != NULL);
    if (r300 != NULL) {
        memset(r300, 'r', 300);
        n = ws_enc_close(out, 1001, r300, 300, &cut);
        CHECK(n == WS_CLOSE_FRAME_MAX && cut && close_round_trip(out, n, 1001, r300, 123));
        free(r300);
    }

    /* a 4-byte emoji at bytes 120..123 is dropped whole */
    memset(emoji, 'a', 120);
    memcpy(emoji + 120, "\xf0\x9f\x98\x80", 4);
    n = ws_enc_close(out, 1008, emoji, sizeof(emoji), &cut);
    CHECK(n == 2 + 2 + 120 && cut && close_round_trip(out, n, 1008, emoji, 120));
    CHECK(utf8_is_valid(out + 4, n - 4));

    /* the Chinese reason is kept whole */
    n = ws_enc_close(out, 1012, zh, strlen(zh), &cut);
    CHECK(n == 2 + 2 + 34 && !cut && close_round_trip(out, n, 1012, zh, 34));

    /* a reason that is not UTF-8 builds no frame */
    CHECK(ws_enc_close(out, 1000, "a\xff", 2, &cut) == 0);
    CHECK(ws_enc_close(out, 1000, "\xed\xa0\x80", 3, &cut) == 0);
    CHECK(ws_enc_close(out, 1000, "\xce", 1, &cut) == 0);
}

void suite_ws_enc(void)
{
    test_ws_enc_header_lengths();
    test_ws_enc_header_fin_and_opcode();
    test_ws_enc_control();
    test_ws_enc_close_refuses_unsendable_codes();
    test_ws_enc_close();
}
