#ifndef WSGATE_COMMON_SHA1_H
#define WSGATE_COMMON_SHA1_H

#include <stddef.h>
#include <stdint.h>

/*
 * SHA-1, FIPS 180-4 §6.1, for the one place RFC 6455 needs it: the opening
 * handshake's Sec-WebSocket-Accept (§1.3, §4.2.2), a proof that the server read the
 * key, not a security property. Kept here instead of OpenSSL's EVP digest because
 * OpenSSL 3 loads its provider tables on the first digest: about 2.3 MB of resident
 * memory in every worker process, which a gateway holding few connections per
 * worker pays again in each one (FACTS.md's figures are summed VmRSS).
 *
 * Embedded (usually on the stack); nothing to free. The result never depends on how
 * the input is cut across sha1_update() calls.
 */

#define SHA1_LEN 20

struct sha1 {
    uint32_t h[5];
    uint64_t len;      /* bytes hashed so far */
    uint8_t block[64]; /* a partial block, len % 64 bytes */
};

void sha1_init(struct sha1 *s);

/* Hashes p[0..len). */
void sha1_update(struct sha1 *s, const void *p, size_t len);

/* Writes the digest to out; s must be initialised again before reuse. */
void sha1_final(struct sha1 *s, uint8_t out[SHA1_LEN]);

#endif /* WSGATE_COMMON_SHA1_H */
