/* libFuzzer target: any bytes through order_sig_open() with a fixed keyring are refused
 * with a key and a text, or open to a body whose signature is the one the envelope
 * carried; any bytes sealed as a body open back to exactly those bytes, and the same
 * envelope with one hex digit of sig changed never opens. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "common/order.h"
#include "common/order_sig.h"

/* The keys the seeds in tests/fuzz/seeds/fuzz_order_sig are signed with. */
#define KEYS "k1:fuzz-secret-one-0123456789,k2:fuzz-secret-two-0123456789"

static struct order_sig_ring ring;

static void check_verified(const uint8_t *data, size_t size, const char *body, size_t blen)
{
    json_t *env = json_loadb((const char *)data, size, JSON_ALLOW_NUL, NULL);
    json_t *kid = json_object_get(env, "kid"), *sig = json_object_get(env, "sig");
    const struct order_sig_key *k;
    char *again;
    json_t *back;
    struct order o;
    struct order_error err;

    /* Only an envelope of a known key, carrying the body's own signature, opens. */
    if (!json_is_string(kid) || !json_is_string(sig) || json_object_size(env) != 3)
        abort();
    k = order_sig_ring_find(&ring, json_string_value(kid), json_string_length(kid));
    again = k != NULL ? order_sig_seal(k, body, blen) : NULL;
    back = again != NULL ? json_loads(again, 0, NULL) : NULL;
    if (back == NULL ||
        strcasecmp(json_string_value(json_object_get(back, "sig")), json_string_value(sig)) != 0)
        abort();
    json_decref(back);
    free(again);
    json_decref(env);
    /* The body goes on to the order rules; they may refuse it, never crash. */
    if (order_parse(body, blen, &o, &err) == 0) {
        if (order_check_signed(&o, 1700000000000LL, 60000, &err) < 0 && err.key == NULL)
            abort();
        order_cleanup(&o);
    }
}

static void round_trip(const uint8_t *data, size_t size)
{
    char *env = order_sig_seal(&ring.keys[1], (const char *)data, size);
    char *body = NULL, *sig;
    size_t blen;
    struct order_error err;

    if (env == NULL)
        return; /* not UTF-8: nothing to seal */
    if (order_sig_open(&ring, env, strlen(env), &body, &blen, &err) < 0) {
        if (size <= ORDER_MAX_BYTES || strcmp(err.key, "too_big") != 0)
            abort();
    } else if (blen != size || memcmp(body, data, size) != 0) {
        abort();
    }
    free(body);
    body = NULL;
    sig = strstr(env, "\"sig\":\"");
    if (sig == NULL)
        abort();
    sig += 7 + size % 64; /* one digit, changed to another */
    *sig = *sig == '0' ? '1' : '0';
    if (order_sig_open(&ring, env, strlen(env), &body, &blen, &err) == 0 ||
        (strcmp(err.key, "signature") != 0 && strcmp(err.key, "too_big") != 0))
        abort();
    free(env);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct order_error err = {0};
    char *body = NULL, text[200];
    size_t blen = 0;

    if (ring.n == 0 && order_sig_ring_add(&ring, KEYS, text, sizeof(text)) < 0)
        abort();
    if (order_sig_open(&ring, (const char *)data, size, &body, &blen, &err) == 0) {
        check_verified(data, size, body, blen);
        free(body);
    } else if (err.key == NULL || err.text[0] == '\0' || body != NULL) {
        abort();
    }
    round_trip(data, size);
    return 0;
}
