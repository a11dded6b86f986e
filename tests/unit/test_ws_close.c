#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"
#include "common/ws_close.h"
#include "tests/unit/check.h"

static const struct {
    unsigned code;
    bool received; /* a client may send it */
    bool sendable; /* we may send it */
} close_codes[] = {
    {0, false, false},    {999, false, false},   {1000, true, true},   {1001, true, true},
    {1002, true, true},   {1003, true, true},    {1004, false, false}, {1005, false, false},
    {1006, false, false}, {1007, true, true},    {1008, true, true},   {1009, true, true},
    {1010, true, false},  {1011, true, true},    {1012, true, true},   {1013, true, true},
    {1014, true, true},   {1015, false, false},  {1016, false, false}, {2000, false, false},
    {2999, false, false}, {3000, true, true},    {4000, true, true},   {4999, true, true},
    {5000, false, false}, {65535, false, false},
};

static void test_ws_close_code_rules(void)
{
    for (size_t i = 0; i < sizeof(close_codes) / sizeof(close_codes[0]); i++) {
        bool ok = ws_close_code_is_valid_received(close_codes[i].code) == close_codes[i].received &&
                  ws_close_code_is_sendable(close_codes[i].code) == close_codes[i].sendable;

        CHECK(ok);
        if (!ok)
            fprintf(stderr, "  close code %u\n", close_codes[i].code);
    }
}

static const struct {
    const char *name;
    const char *payload;
    size_t len;
    int ret;       /* 0, or the close code to answer with */
    unsigned code; /* when ret == 0 */
} close_payloads[] = {
    {"empty", "", 0, 0, WS_CLOSE_NO_STATUS},
    {"1 byte", "\x03", 1, WS_CLOSE_PROTOCOL_ERROR, 0},
    {"code 0", "\x00\x00", 2, WS_CLOSE_PROTOCOL_ERROR, 0},
    {"code 999", "\x03\xe7", 2, WS_CLOSE_PROTOCOL_ERROR, 0},
    {"code 1000", "\x03\xe8", 2, 0, 1000},
    {"code 1001", "\x03\xe9", 2, 0, 1001},
    {"code 1002", "\x03\xea", 2, 0, 1002},
    {"code 1003", "\x03\xeb", 2, 0, 1003},
    {"code 1004", "\x03\xec", 2, WS_CLOSE_PROTOCOL_ERROR, 0},
    {"code 1005", "\x03\xed", 2, WS_CLOSE_PROTOCOL_ERROR, 0},
    {"code 1006", "\x03\xee", 2, WS_CLOSE_PROTOCOL_ERROR, 0},
    {"code 1007", "\x03\xef", 2, 0, 1007},
    {"code 1010", "\x03\xf2", 2, 0, 1010},
    {"code 1014", "\x03\xf6", 2, 0, 1014},
    {"code 1015", "\x03\xf7", 2, WS_CLOSE_PROTOCOL_ERROR, 0},
    {"code 1016", "\x03\xf8", 2, WS_CLOSE_PROTOCOL_ERROR, 0},
    {"code 2999", "\x0b\xb7", 2, WS_CLOSE_PROTOCOL_ERROR, 0},
    {"code 3000", "\x0b\xb8", 2, 0, 3000},
    {"code 4999", "\x13\x87", 2, 0, 4999},
    {"code 5000", "\x13\x88", 2, WS_CLOSE_PROTOCOL_ERROR, 0},
    {"code 65535", "\xff\xff", 2, WS_CLOSE_PROTOCOL_ERROR, 0},
    {"1000 + reason", "\x03\350bye", 5, 0, 1000},
    {"1000 + kosme", "\x03\xe8\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 13, 0, 1000},
    {"1000 + FF reason", "\x03\350a\xff", 4, WS_CLOSE_INVALID_DATA, 0},
    {"1000 + surrogate", "\x03\xe8\xed\xa0\x80", 5, WS_CLOSE_INVALID_DATA, 0},
    {"1000 + cut code point", "\x03\xe8\xce", 3, WS_CLOSE_INVALID_DATA, 0},
    {"1004 + bad reason", "\x03\xec\xff", 3, WS_CLOSE_PROTOCOL_ERROR, 0},
};

static void test_ws_close_parse_rules(void)
{
    for (size_t i = 0; i < sizeof(close_payloads) / sizeof(close_payloads[0]); i++) {
        size_t len = close_payloads[i].len;
        uint8_t *p = check_dup_exact(close_payloads[i].payload, len);
        unsigned code = 0;
        const uint8_t *reason = NULL;
        size_t reason_len = 99;
        int ret = ws_close_parse(p, len, &code, &reason, &reason_len);
        bool ok = ret == close_payloads[i].ret;

        if (ok && ret == 0) {
            ok = code == close_payloads[i].code && reason_len == (len > 2 ? len - 2 : 0) &&
                 (reason_len == 0 || reason == p + 2);
        }
        CHECK(ok);
        if (!ok)
            fprintf(stderr, "  close payload: %s (got %d)\n", close_payloads[i].name, ret);
        free(p);
    }
}

static void test_ws_close_parse_rejects_oversized(void)
{
    uint8_t p[126];
    unsigned code;
    const uint8_t *reason;
    size_t reason_len;

    memset(p, 'a', sizeof(p));
    p[0] = 0x03;
    p[1] = 0xe8;
    CHECK(ws_close_parse(p, 125, &code, &reason, &reason_len) == 0 && reason_len == 123);
    CHECK(ws_close_parse(p, 126, &code, &reason, &reason_len) == WS_CLOSE_PROTOCOL_ERROR);
}

static void test_ws_close_reason_cut(void)
{
    char long_reason[300];
    char emoji[124];
    const char *zh = "\xe6\x9c\x8d\xe5\x8a\xa1\xe7\xab\xaf\xe7\xbb\xb4\xe6\x8a\xa4\xe4\xb8\xad,"
                     "\xe8\xaf\xb7\xe7\xa8\x8d\xe5\x90\x8e\xe9\x87\x8d\xe8\xbf\x9e";
    size_t n;

    memset(long_reason, 'r', sizeof(long_reason));
    CHECK(ws_close_reason_cut(long_reason, sizeof(long_reason)) == WS_CLOSE_REASON_MAX);
    CHECK(ws_close_reason_cut(long_reason, 123) == 123);
    CHECK(ws_close_reason_cut(long_reason, 0) == 0);

    /* 120 ASCII bytes, then U+1F600 at bytes 120..123: byte 123 does not fit */
    memset(emoji, 'a', 120);
    memcpy(emoji + 120, "\xf0\x9f\x98\x80", 4);
    n = ws_close_reason_cut(emoji, sizeof(emoji));
    CHECK(n == 120);
    CHECK(utf8_is_valid((const uint8_t *)emoji, n));

    /* 11 CJK characters and a comma: 34 bytes, kept whole */
    CHECK(strlen(zh) == 34);
    CHECK(ws_close_reason_cut(zh, strlen(zh)) == 34);
}

/* 41 three-byte characters = 123 bytes fits; one more ASCII byte cuts a whole character. */
static void test_ws_close_reason_cut_cjk_boundary(void)
{
    char r[124];

    for (size_t i = 0; i < 41; i++)
        memcpy(r + 3 * i, "\xe4\xb8\xad", 3);
    CHECK(ws_close_reason_cut(r, 123) == 123);
    r[123] = 'x';
    CHECK(ws_close_reason_cut(r, 124) == 123);
    memmove(r + 1, r, 123);
    r[0] = 'x';
    CHECK(ws_close_reason_cut(r, 124) == 121);
}

void suite_ws_close(void)
{
    test_ws_close_code_rules();
    test_ws_close_parse_rules();
    test_ws_close_parse_rejects_oversized();
    test_ws_close_reason_cut();
    test_ws_close_reason_cut_cjk_boundary();
}
