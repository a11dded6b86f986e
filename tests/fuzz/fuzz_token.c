/*
 * libFuzzer target for the JWT path: token_verify() and token_extract() never crash,
 * leak or read outside their input, and their answers keep their promises. The first
 * byte picks what the rest is:
 *   0  a token, checked by an HS256 secret, an RSA key and a P-256 key;
 *   1  "header JSON\npayload JSON", signed here with the secret (HS256, or HS384/HS512
 *      when the header names them), so header and claim handling are reached;
 *   2  the same, signed with the P-256 key as ES256 (libjwt's parser and verifier);
 *   3  an upgrade request head: ws_hs, then token_extract() (cookie "jwt"), then verify.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "common/token.h"
#include "common/ws_hs.h"

#define NOW_MS     1700000000000LL
#define MAX_GROUPS 4

static const char secret[] = "fuzz-secret-fuzz-secret-fuzz-secret!";

static struct token_verifier *hs, *rsa, *ec;
static EVP_PKEY *ec_key;

static char *public_pem(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data, *out;
    long n;

    if (b == NULL || PEM_write_bio_PUBKEY(b, k) != 1 || (n = BIO_get_mem_data(b, &data)) <= 0 ||
        (out = strndup(data, (size_t)n)) == NULL)
        abort();
    BIO_free(b);
    return out;
}

static struct token_verifier *verifier(const char *pem)
{
    struct token_config c = {0};
    char err[256];
    struct token_verifier *v;

    c.max_groups = MAX_GROUPS;
    c.leeway_ms = 5000;
    if (pem != NULL) {
        c.public_key_pem = pem;
        c.public_key_pem_len = strlen(pem);
    } else {
        c.secret = (const uint8_t *)secret;
        c.secret_len = strlen(secret);
    }
    v = token_verifier_new(&c, err, sizeof(err));
    if (v == NULL)
        abort();
    return v;
}

static void setup(void)
{
    EVP_PKEY *rsa_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    char *pem;

    ec_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (rsa_key == NULL || ec_key == NULL)
        abort();
    hs = verifier(NULL);
    pem = public_pem(rsa_key);
    rsa = verifier(pem);
    free(pem);
    pem = public_pem(ec_key);
    ec = verifier(pem);
    free(pem);
    EVP_PKEY_free(rsa_key);
}

/* Verifies tok[0..len) from an allocation of exactly len bytes and checks the answer. */
static void verify(const struct token_verifier *v, const char *tok, size_t len)
{
    char *copy = malloc(len > 0 ? len : 1);
    struct token_claims c;
    struct token_error err = {NULL, NULL};
    bool known = false;

    if (copy == NULL)
        return;
    if (len > 0)
        memcpy(copy, tok, len);
    if (token_verify(v, copy, len, NOW_MS, &c, &err) == 0) {
        if (c.sub == NULL || c.alg == NULL || c.ngroups > MAX_GROUPS - 1 || c.exp_ms < 0 ||
            (c.ngroups > 0) != (c.groups != NULL))
            abort();
        if (strlen(c.sub) == 0 || strlen(c.sub) > TOKEN_SUB_MAX)
            abort();
        for (size_t i = 0; i < c.ngroups; i++)
            if (strncmp(c.groups[i], TOKEN_USER_PREFIX, strlen(TOKEN_USER_PREFIX)) == 0 ||
                strlen(c.groups[i]) > TOKEN_NAME_MAX)
                abort();
        token_claims_cleanup(&c);
    } else {
        for (size_t i = 0; i < TOKEN_NERROR_KEYS && !known; i++)
            known = err.key == token_error_keys[i];
        if (!known || err.why == NULL || c.sub != NULL || c.groups != NULL || c.jti != NULL)
            abort();
    }
    free(copy);
}

static size_t b64url(const uint8_t *in, size_t n, char *out)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    uint32_t acc = 0;
    unsigned bits = 0;

    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = abc[(acc >> bits) & 63];
        }
        acc &= 0xff;
    }
    if (bits > 0)
        out[o++] = abc[(acc << (6 - bits)) & 63];
    return o;
}

/* "header\npayload" → a token signed with the secret (es false) or the P-256 key. */
static void sign_and_verify(const uint8_t *data, size_t size, bool es)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t hl = nl != NULL ? (size_t)(nl - data) : size;
    size_t pl = nl != NULL ? size - hl - 1 : 0;
    char *tok = malloc(2 * size + 256);
    uint8_t sig[256];
    size_t n, sig_len = 0;

    if (tok == NULL)
        return;
    n = b64url(data, hl, tok);
    tok[n++] = '.';
    n += b64url(nl != NULL ? nl + 1 : data, pl, tok + n);
    if (!es) {
        const EVP_MD *md = memmem(data, hl, "HS384", 5) != NULL   ? EVP_sha384()
                           : memmem(data, hl, "HS512", 5) != NULL ? EVP_sha512()
                                                                  : EVP_sha256();
        unsigned int ulen = 0;
        if (HMAC(md, secret, (int)strlen(secret), (const unsigned char *)tok, n, sig, &ulen) ==
            NULL)
            abort();
        sig_len = ulen;
    } else {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        uint8_t der[128];
        size_t dl = sizeof(der);
        const unsigned char *p = der;
        ECDSA_SIG *es_sig;

        if (ctx == NULL || EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, ec_key) != 1 ||
            EVP_DigestSign(ctx, der, &dl, (const unsigned char *)tok, n) != 1)
            abort();
        EVP_MD_CTX_free(ctx);
        es_sig = d2i_ECDSA_SIG(NULL, &p, (long)dl);
        if (es_sig == NULL || BN_bn2binpad(ECDSA_SIG_get0_r(es_sig), sig, 32) != 32 ||
            BN_bn2binpad(ECDSA_SIG_get0_s(es_sig), sig + 32, 32) != 32)
            abort();
        ECDSA_SIG_free(es_sig);
        sig_len = 64;
    }
    tok[n++] = '.';
    n += b64url(sig, sig_len, tok + n);
    verify(es ? ec : hs, tok, n);
    free(tok);
}

static void extract_and_verify(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size > 0 ? size : 1);
    struct ws_hs h;
    const char *tok;
    size_t len;
    enum token_source src;

    if (copy == NULL)
        return;
    if (size > 0)
        memcpy(copy, data, size);
    ws_hs_init(&h, 4096);
    if (ws_hs_feed(&h, copy, size) < 0)
        abort();
    if (h.status != 0) {
        src = token_extract(&h, "jwt", &tok, &len);
        if ((src == TOKEN_SRC_NONE) != (tok == NULL) || (tok == NULL && len != 0))
            abort();
        if (strcmp(token_source_name(src), "none") == 0 && src != TOKEN_SRC_NONE)
            abort();
        if (tok != NULL) {
            /* the token is borrowed from h: the head's buffer or a decoded parameter */
            bool in_buf = tok >= h.buf && tok + len <= h.buf + h.len;
            if (src != TOKEN_SRC_QUERY && !in_buf)
                abort();
            verify(hs, tok, len);
        }
    }
    ws_hs_cleanup(&h);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (hs == NULL)
        setup();
    if (size == 0)
        return 0;
    switch (data[0] % 4) {
    case 0:
        verify(hs, (const char *)data + 1, size - 1);
        verify(rsa, (const char *)data + 1, size - 1);
        verify(ec, (const char *)data + 1, size - 1);
        break;
    case 1:
        sign_and_verify(data + 1, size - 1, false);
        break;
    case 2:
        sign_and_verify(data + 1, size - 1, true);
        break;
    default:
        extract_and_verify(data + 1, size - 1);
        break;
    }
    return 0;
}
