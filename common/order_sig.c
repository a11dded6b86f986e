#include "common/order_sig.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/text.h"

#define MAC_LEN (ORDER_SIG_HEX_LEN / 2) /* SHA-256 */

/* Key ids end up in logs and counters' neighbours: a short, plain alphabet. */
static bool is_kid(const char *s, size_t len)
{
    if (len == 0 || len > ORDER_SIG_KID_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
            return false;
    return true;
}

static bool is_separator(char ch)
{
    return ch == ',' || isspace((unsigned char)ch);
}

/* One "KEYID:SECRET" of tok[0..len) into k; n is its position, for the message. */
static int parse_key(const char *tok, size_t len, size_t n, struct order_sig_key *k, char *err,
                     size_t errlen)
{
    const char *colon = memchr(tok, ':', len);
    size_t kid_len, secret_len;

    if (colon == NULL) {
        snprintf(err, errlen, "key %zu: expected KEYID:SECRET", n);
        return -1;
    }
    kid_len = (size_t)(colon - tok);
    secret_len = len - kid_len - 1;
    if (!is_kid(tok, kid_len)) {
        snprintf(err, errlen, "key %zu: the key id must be 1 to %d characters of A-Z a-z 0-9 . _ -",
                 n, ORDER_SIG_KID_MAX);
        return -1;
    }
    memcpy(k->kid, tok, kid_len);
    k->kid[kid_len] = '\0';
    if (secret_len < ORDER_SIG_SECRET_MIN || secret_len > ORDER_SIG_SECRET_MAX) {
        snprintf(err, errlen, "key %s: the secret must be %d to %d bytes, not %zu", k->kid,
                 ORDER_SIG_SECRET_MIN, ORDER_SIG_SECRET_MAX, secret_len);
        return -1;
    }
    for (size_t i = 0; i < secret_len; i++) {
        unsigned char ch = (unsigned char)colon[1 + i];
        if (ch <= ' ' || ch >= 0x7f) {
            snprintf(err, errlen, "key %s: the secret must be printable ASCII", k->kid);
            return -1;
        }
    }
    memcpy(k->secret, colon + 1, secret_len);
    k->secret_len = secret_len;
    return 0;
}

int order_sig_ring_add(struct order_sig_ring *ring, const char *text, char *err, size_t errlen)
{
    struct order_sig_ring next = *ring;
    const char *p = text;
    size_t added = 0;
    int rc = -1;

    for (;;) {
        const char *tok;
        struct order_sig_key *k;

        while (*p != '\0' && is_separator(*p))
            p++;
        if (*p == '\0')
            break;
        tok = p;
        while (*p != '\0' && !is_separator(*p))
            p++;
        if (next.n == ORDER_SIG_KEYS_MAX) {
            snprintf(err, errlen, "more than %d keys", ORDER_SIG_KEYS_MAX);
            goto out;
        }
        k = &next.keys[next.n];
        if (parse_key(tok, (size_t)(p - tok), ring->n + added + 1, k, err, errlen) < 0)
            goto out;
        if (order_sig_ring_find(&next, k->kid, strlen(k->kid)) != NULL) {
            snprintf(err, errlen, "key %s: given twice", k->kid);
            goto out;
        }
        next.n++;
        added++;
    }
    if (added == 0) {
        snprintf(err, errlen, "expected KEYID:SECRET");
        goto out;
    }
    *ring = next;
    rc = 0;
out:
    OPENSSL_cleanse(&next, sizeof(next));
    return rc;
}

void order_sig_ring_clear(struct order_sig_ring *ring)
{
    OPENSSL_cleanse(ring, sizeof(*ring));
    ring->n = 0;
}

const struct order_sig_key *order_sig_ring_find(const struct order_sig_ring *ring, const char *kid,
                                                size_t len)
{
    for (size_t i = 0; i < ring->n; i++)
        if (strlen(ring->keys[i].kid) == len && memcmp(ring->keys[i].kid, kid, len) == 0)
            return &ring->keys[i];
    return NULL;
}

static int mac(const struct order_sig_key *key, const char *body, size_t len,
               unsigned char out[MAC_LEN])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;

    if (HMAC(EVP_sha256(), key->secret, (int)key->secret_len, (const unsigned char *)body, len, md,
             &md_len) == NULL ||
        md_len != MAC_LEN)
        return -1;
    memcpy(out, md, MAC_LEN);
    return 0;
}

/* 64 hex digits, either case, into 32 bytes. */
static bool unhex(const char *s, size_t len, unsigned char out[MAC_LEN])
{
    if (len != ORDER_SIG_HEX_LEN)
        return false;
    for (size_t i = 0; i < MAC_LEN; i++) {
        int hi = text_hex_value((unsigned char)s[2 * i]);
        int lo = text_hex_value((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}

size_t order_sig_max_text(size_t max_body)
{
    if (max_body > (SIZE_MAX - 1024) / 6)
        return SIZE_MAX;
    return 6 * max_body + 1024;
}

int order_sig_open(const struct order_sig_ring *ring, const char *text, size_t len, char **body,
                   size_t *body_len, struct order_error *err)
{
    return order_sig_open_with(ring, text, len, ORDER_MAX_BYTES, body, body_len, err);
}

int order_sig_open_with(const struct order_sig_ring *ring, const char *text, size_t len,
                        size_t max_body, char **body, size_t *body_len, struct order_error *err)
{
    static const char *const fields[3] = {"kid", "sig", "body"};
    json_t *root, *v[3];
    const struct order_sig_key *key;
    unsigned char want[MAC_LEN], got[MAC_LEN];
    json_error_t jerr;
    const char *b;
    size_t blen;
    int rc = -1, present = 0;

    *body = NULL;
    *body_len = 0;
    if (len > order_sig_max_text(max_body))
        return order_refuse(err, "too_big", "signed order is %zu bytes, more than %zu", len,
                      order_sig_max_text(max_body));
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY, &jerr);
    if (root == NULL) {
        if (json_error_code(&jerr) == json_error_out_of_memory)
            return order_refuse(err, "oom", "out of memory");
        return order_refuse(err, "envelope", "not JSON: %s (line %d column %d)", jerr.text,
                            jerr.line, jerr.column);
    }
    if (!json_is_object(root)) {
        order_refuse(err, "envelope", "signed order: must be a JSON object");
        goto out;
    }
    for (int i = 0; i < 3; i++) {
        v[i] = json_object_get(root, fields[i]);
        present += v[i] != NULL;
    }
    if (present == 0) {
        order_refuse(err, "unsigned", "order is not signed (no kid, sig and body)");
        goto out;
    }
    if (present < 3 || json_object_size(root) != 3) {
        order_refuse(err, "envelope", "signed order: must have exactly kid, sig and body");
        goto out;
    }
    for (int i = 0; i < 3; i++) {
        if (!json_is_string(v[i])) {
            order_refuse(err, "envelope", "signed order: %s must be a string", fields[i]);
            goto out;
        }
    }
    /* Only an id of the configured alphabet is echoed: the text goes to the log. */
    key = order_sig_ring_find(ring, json_string_value(v[0]), json_string_length(v[0]));
    if (key == NULL) {
        if (is_kid(json_string_value(v[0]), json_string_length(v[0])))
            order_refuse(err, "kid", "kid: no key %s", json_string_value(v[0]));
        else
            order_refuse(err, "kid", "kid: not a key id");
        goto out;
    }
    if (!unhex(json_string_value(v[1]), json_string_length(v[1]), want)) {
        order_refuse(err, "signature", "sig: must be %d hex digits", ORDER_SIG_HEX_LEN);
        goto out;
    }
    b = json_string_value(v[2]);
    blen = json_string_length(v[2]);
    if (blen > max_body) {
        order_refuse(err, "too_big", "body is %zu bytes, more than %zu", blen, max_body);
        goto out;
    }
    if (mac(key, b, blen, got) < 0) {
        order_refuse(err, "oom", "HMAC failed");
        goto out;
    }
    if (CRYPTO_memcmp(got, want, MAC_LEN) != 0) {
        order_refuse(err, "signature", "sig: does not match the body (key %s)", key->kid);
        goto out;
    }
    *body = malloc(blen + 1);
    if (*body == NULL) {
        order_refuse(err, "oom", "out of memory");
        goto out;
    }
    memcpy(*body, b, blen);
    (*body)[blen] = '\0';
    *body_len = blen;
    rc = 0;
out:
    json_decref(root);
    return rc;
}

/* set_new: steals value, fails on NULL (out of memory, or text that is not UTF-8). */
static int set_new(json_t *obj, const char *key, json_t *value)
{
    return value == NULL ? -1 : json_object_set_new(obj, key, value);
}

char *order_sig_seal(const struct order_sig_key *key, const char *body, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char m[MAC_LEN];
    char hex[ORDER_SIG_HEX_LEN];
    json_t *obj;
    char *text = NULL;

    if (mac(key, body, len, m) < 0)
        return NULL;
    for (size_t i = 0; i < MAC_LEN; i++) {
        hex[2 * i] = digits[m[i] >> 4];
        hex[2 * i + 1] = digits[m[i] & 0x0f];
    }
    obj = json_object();
    if (obj == NULL)
        return NULL;
    if (set_new(obj, "kid", json_string(key->kid)) == 0 &&
        set_new(obj, "sig", json_stringn(hex, sizeof(hex))) == 0 &&
        set_new(obj, "body", json_stringn(body, len)) == 0)
        text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    return text;
}
