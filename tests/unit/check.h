#ifndef WSGATE_TESTS_UNIT_CHECK_H
#define WSGATE_TESTS_UNIT_CHECK_H

#include <stdio.h>

/* A tiny runner: CHECK counts; a failure prints file:line and the expression. */

extern int check_passed;
extern int check_failed;

#define CHECK(expr)                                                         \
    do {                                                                    \
        if (expr) {                                                         \
            check_passed++;                                                 \
        } else {                                                            \
            check_failed++;                                                 \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #expr); \
        }                                                                   \
    } while (0)

#include <stddef.h>
#include <stdint.h>

/* A copy of s[0..len) that ends exactly at its allocation, so ASan sees over-reads.
 * Exits when memory runs out. */
uint8_t *check_dup_exact(const void *s, size_t len);

/* Allocation failure on demand (tests/unit/chaos.c): the n-th allocation from now
 * on fails, once; 0 turns it off. chaos_allocations() counts allocations since. */
void chaos_fail_at(unsigned long n);
unsigned long chaos_allocations(void);
void *chaos_json_malloc(size_t n);
int chaos_crypto_install(void);
void chaos_crypto(int on);
size_t chaos_crypto_live(void); /* bytes OpenSSL's allocations hold now */

/* A self-signed EC P-256 certificate for cn, valid for days from now (negative: it
 * expired that long ago), and its key, written as PEM (key_path may be NULL).
 * Returns 0 or -1. */
int check_make_cert(const char *cn, long serial, int days, const char *cert_path,
                    const char *key_path);

/* One suite per common/ module (and worker/outq and worker/registry, pure too), each in
 * tests/unit/test_<module>.c. */
/* Weak, so a runner built from some modules only still links: a suite that is
 * missing counts as a failure. */
#define SUITE(name) void suite_##name(void) __attribute__((weak))
SUITE(utf8);
SUITE(ws_close);
SUITE(ws_enc);
SUITE(ws_dec);
SUITE(ws_hs);
SUITE(config);
SUITE(order);
SUITE(redis_url);
SUITE(order_sig);
SUITE(seen);
SUITE(token);
SUITE(chaos);
SUITE(base64);
SUITE(ws_pmd);
SUITE(ws_zip);
SUITE(origin);
SUITE(proxy_proto);
SUITE(iplimit);
SUITE(outq);
SUITE(tls);
SUITE(registry);
SUITE(slot);
SUITE(tomb);
#undef SUITE

#endif /* WSGATE_TESTS_UNIT_CHECK_H */
