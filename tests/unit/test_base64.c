#include <stdlib.h>
#include <string.h>

#include "common/base64.h"
#include "tests/unit/check.h"

/* RFC 4648 §10's vectors, both ways. */
static void test_base64_rfc4648_vectors(void)
{
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const coded[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                        "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};

    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
        char out[16];
        uint8_t back[16];
        size_t n = base64_encode((const uint8_t *)plain[i], strlen(plain[i]), out);
        uint8_t *exact = check_dup_exact(coded[i], strlen(coded[i]));
        long m;

        CHECK(n == strlen(coded[i]) && strcmp(out, coded[i]) == 0);
        m = base64_decode((const char *)exact, strlen(coded[i]), back);
        CHECK(m == (long)strlen(plain[i]) && memcmp(back, plain[i], (size_t)m) == 0);
        free(exact);
    }
}

static void test_base64_every_byte_round_trips(void)
{
    uint8_t in[256], back[256];
    char text[BASE64_ENCODED_LEN(256) + 1];

    for (int i = 0; i < 256; i++)
        in[i] = (uint8_t)i;
    for (size_t n = 0; n <= 256; n += 37) {
        size_t t = base64_encode(in, n, text);
        CHECK(t == BASE64_ENCODED_LEN(n));
        CHECK(base64_decode(text, t, back) == (long)n && memcmp(in, back, n) == 0);
    }
}

static void test_base64_refuses_what_is_not_strict(void)
{
    static const char *const bad[] = {
        "Zg",       /* no padding */
        "Zg=",      /* short padding */
        "Zh==",     /* unused bits set: one text per byte string */
        "Zm9=",     /* the same, with one pad */
        "Z===",     /* too much padding */
        "Zg==Zg==", /* padding inside */
        "Zm9v\n",   /* whitespace */
        "Zm-v",     /* URL alphabet */
        "Zm_v",     /* URL alphabet */
        "Zm9v Zg==",
        "=Zm9",
        "Zg=x",
    };
    uint8_t out[16];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(base64_decode(bad[i], strlen(bad[i]), out) == -1);
}

void suite_base64(void)
{
    test_base64_rfc4648_vectors();
    test_base64_every_byte_round_trips();
    test_base64_refuses_what_is_not_strict();
}
