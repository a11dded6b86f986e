#ifndef WSGATE_COMMON_ORDER_SIG_H
#define WSGATE_COMMON_ORDER_SIG_H

#include <stdbool.h>
#include <stddef.h>

#include "common/order.h"

/*
 * Signed orders. With keys configured (--order-key), every order arrives as an envelope
 * of exactly three string fields:
 *
 *   {"kid": "KEYID", "sig": "<64 hex digits>", "body": "<the order JSON, as a string>"}
 *
 * sig is HMAC-SHA256, keyed with the bytes of KEYID's secret, over the UTF-8 bytes of
 * the body string: the value of "body" after JSON unescaping, exactly as the publisher
 * serialised its order. Nothing is re-serialised or normalised on either side, so a
 * publisher signs the very string it puts in "body" (Python: the str from json.dumps,
 * encoded as UTF-8; Node: the string from JSON.stringify, as UTF-8). Hex digits may be
 * upper or lower case. The body is then an ordinary order for order_parse().
 *
 * A key is "KEYID:SECRET": the key id is 1 to ORDER_SIG_KID_MAX characters of
 * A-Z a-z 0-9 . _ -; the secret is everything after the first colon, used as bytes,
 * 16 to 256 of printable ASCII other than space and comma (so a list of keys can be
 * separated by commas or spaces).
 */

#define ORDER_SIG_KID_MAX    64
#define ORDER_SIG_SECRET_MIN 16
#define ORDER_SIG_SECRET_MAX 256
#define ORDER_SIG_KEYS_MAX   8 /* keys in one ring: enough to rotate without a gap */
#define ORDER_SIG_HEX_LEN    64
/* An envelope longer than this is refused before parsing: the largest body
 * (ORDER_MAX_BYTES) with every byte written as a six-byte \u escape, and the rest. */
#define ORDER_SIG_MAX_BYTES (6 * ORDER_MAX_BYTES + 1024)

struct order_sig_key {
    char kid[ORDER_SIG_KID_MAX + 1]; /* NUL-terminated */
    unsigned char secret[ORDER_SIG_SECRET_MAX];
    size_t secret_len;
};

/* A keyring, embedded by its owner (struct config): nothing is allocated. Starts
 * zeroed (n == 0: orders are not signed). */
struct order_sig_ring {
    struct order_sig_key keys[ORDER_SIG_KEYS_MAX];
    size_t n;
};

/*
 * Adds the keys of text, one or more "KEYID:SECRET" separated by commas or white space,
 * to ring. All or nothing: returns 0, or -1 with a one-line message in err and ring
 * unchanged (a bad entry, a key id already in ring, or more than ORDER_SIG_KEYS_MAX
 * keys). The message names a key by its id and position, never by its secret.
 */
int order_sig_ring_add(struct order_sig_ring *ring, const char *text, char *err, size_t errlen);

/* Forgets every key of ring, secrets wiped. */
void order_sig_ring_clear(struct order_sig_ring *ring);

/* The key with id kid[0..len), or NULL. */
const struct order_sig_key *order_sig_ring_find(const struct order_sig_ring *ring, const char *kid,
                                                size_t len);

/*
 * Checks the envelope text[0..len) (need not be NUL-terminated) against ring. Returns 0
 * with *body a malloc'd, NUL-terminated copy of the verified body (*body_len bytes, not
 * counting the NUL; the body may hold NUL bytes of its own) that the caller frees; or -1
 * with *body NULL and err->key one of:
 *   "unsigned"  a JSON object with none of kid, sig, body (a plain order)
 *   "envelope"  not JSON, not an object, or not exactly the three string fields
 *   "too_big"   the envelope or its body is over its limit
 *   "kid"       no key of that id in ring
 *   "signature" sig is not 64 hex digits, or does not match the body
 *   "oom"       out of memory (or HMAC failed)
 * Nothing in a refused envelope is trusted: not even the body's reply_to.
 */
int order_sig_open(const struct order_sig_ring *ring, const char *text, size_t len, char **body,
                   size_t *body_len, struct order_error *err);

/*
 * order_sig_open() for bodies of up to max_body bytes (order_max_text() of the worker's
 * limits: a send order's body may be larger than ORDER_MAX_BYTES). The envelope may then
 * be as long as order_sig_max_text(max_body).
 */
int order_sig_open_with(const struct order_sig_ring *ring, const char *text, size_t len,
                        size_t max_body, char **body, size_t *body_len, struct order_error *err);

/* The longest envelope order_sig_open_with() reads for bodies of max_body bytes: every
 * byte of the body written as a six-byte \u escape, and the rest. */
size_t order_sig_max_text(size_t max_body);

/*
 * The envelope of body[0..len) signed with key: compact JSON text with the fields in
 * the order kid, sig (lower case), body. Returns malloc'd text, or NULL when body is
 * not valid UTF-8 or memory runs out.
 */
char *order_sig_seal(const struct order_sig_key *key, const char *body, size_t len);

#endif /* WSGATE_COMMON_ORDER_SIG_H */
