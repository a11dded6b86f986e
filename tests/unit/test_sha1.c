#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/sha1.h"
#include "tests/unit/check.h"

static void hex(const uint8_t md[SHA1_LEN], char out[2 * SHA1_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < SHA1_LEN; i++) {
        out[2 * i] = digits[md[i] >> 4];
        out[2 * i + 1] = digits[md[i] & 15];
    }
    out[2 * SHA1_LEN] = '\0';
}

static void digest(const void *p, size_t len, char out[2 * SHA1_LEN + 1])
{
    struct sha1 s;
    uint8_t md[SHA1_LEN];

    sha1_init(&s);
    sha1_update(&s, p, len);
    sha1_final(&s, md);
    hex(md, out);
}

/* FIPS 180-2 appendix A and the NIST example vectors, plus lengths around the
 * padding boundaries (55, 56, 63, 64 bytes: one or two final blocks). */
static void test_sha1_known_vectors(void)
{
    static const struct {
        const char *in;
        const char *md;
    } cases[] = {
        {"", "da39a3ee5e6b4b0d3255bfef95601890afd80709"},
        {"abc", "a9993e364706816aba3e25717850c26c9cd0d89d"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "84983e441c3bd26ebaae4aa1f95129e5e54670f1"},
        {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqr"
         "lmnopqrsmnopqrstnopqrstu",
         "a49b2446a02c645bf419f995b67091253a04a259"},
        {"The quick brown fox jumps over the lazy dog", "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"},
        {"dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11",
         "b37a4f2cc0624f1690f64606cf385945b2bec4ea"}, /* RFC 6455 §1.3's sample */
    };
    char out[2 * SHA1_LEN + 1];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = strlen(cases[i].in);
        uint8_t *in = check_dup_exact(cases[i].in, n);
        digest(in, n, out);
        CHECK(strcmp(out, cases[i].md) == 0);
        free(in);
    }
}

static void test_sha1_million_a(void)
{
    struct sha1 s;
    uint8_t block[1000], md[SHA1_LEN];
    char out[2 * SHA1_LEN + 1];

    memset(block, 'a', sizeof(block));
    sha1_init(&s);
    for (int i = 0; i < 1000; i++)
        sha1_update(&s, block, sizeof(block));
    sha1_final(&s, md);
    hex(md, out);
    CHECK(strcmp(out, "34aa973cd4c4daa4f61eeb2bdbad27316534016f") == 0);
}

/* Every length from 0 to 300 agrees with OpenSSL, whole and cut at every point. */
static void test_sha1_matches_openssl_at_every_cut(void)
{
    uint8_t buf[300], md[SHA1_LEN], ref[EVP_MAX_MD_SIZE];
    unsigned int ref_len;
    unsigned seed = 1;
    int bad = 0;

    for (size_t i = 0; i < sizeof(buf); i++) {
        seed = seed * 1103515245u + 12345u;
        buf[i] = (uint8_t)(seed >> 16);
    }
    for (size_t len = 0; len <= sizeof(buf); len++) {
        uint8_t *in = check_dup_exact(buf, len);
        CHECK(EVP_Digest(in, len, ref, &ref_len, EVP_sha1(), NULL) == 1 && ref_len == SHA1_LEN);
        for (size_t cut = 0; cut <= len; cut++) {
            struct sha1 s;
            sha1_init(&s);
            sha1_update(&s, in, cut);
            sha1_update(&s, in + cut, len - cut);
            sha1_final(&s, md);
            bad += memcmp(md, ref, SHA1_LEN) != 0;
        }
        free(in);
    }
    CHECK(bad == 0);
}

void suite_sha1(void)
{
    test_sha1_known_vectors();
    test_sha1_million_a();
    test_sha1_matches_openssl_at_every_cut();
}
