/* common/token: tokens made here at run time with OpenSSL (and some with libjwt's own
 * encoder), checked against a table of what must be accepted and what refused. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <jwt.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "common/token.h"
#include "common/ws_hs.h"
#include "tests/unit/check.h"

#define NOW_MS 1700000000000LL /* 2023-11-14T22:13:20Z */

static const char secret[] = "0123456789abcdef0123456789abcdef-wsgate-test";
static const char other_secret[] = "another secret of more than thirty-two bytes";

/* Keys made once for the suite. */
enum key_id { K_RSA, K_RSA2, K_P256, K_P256B, K_P384, K_NKEYS };
static EVP_PKEY *keys[K_NKEYS];
static char *pems[K_NKEYS]; /* public keys, PEM */

/* --- helpers ------------------------------------------------------------------------------- */

static char *pem_public(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data, *out;
    long n;

    if (b == NULL || PEM_write_bio_PUBKEY(b, k) != 1 || (n = BIO_get_mem_data(b, &data)) <= 0)
        exit(1);
    out = strndup(data, (size_t)n);
    BIO_free(b);
    if (out == NULL)
        exit(1);
    return out;
}

static char *pem_private(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data, *out;
    long n;

    if (b == NULL || PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) != 1 ||
        (n = BIO_get_mem_data(b, &data)) <= 0)
        exit(1);
    out = strndup(data, (size_t)n);
    BIO_free(b);
    if (out == NULL)
        exit(1);
    return out;
}

static void b64url(const uint8_t *in, size_t n, char *out)
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
    }
    if (bits > 0)
        out[o++] = abc[(acc << (6 - bits)) & 63];
    out[o] = '\0';
}

static const EVP_MD *md_of(const char *alg)
{
    return strstr(alg, "384") ? EVP_sha384() : strstr(alg, "512") ? EVP_sha512() : EVP_sha256();
}

/* How a test token is signed. */
enum signer {
    S_SECRET,       /* HMAC with the configured secret */
    S_OTHER_SECRET, /* HMAC with another secret */
    S_PEM_SECRET,   /* HMAC keyed with the RSA public key's PEM text: the classic confusion */
    S_RSA,
    S_RSA2, /* another RSA key */
    S_P256,
    S_P256B,
    S_P384,
    S_EMPTY, /* no signature at all */
};

/* Signs input with the key of s, the way alg wants; returns the signature's length. */
static size_t sign(enum signer s, const char *alg, const char *input, uint8_t *sig)
{
    const EVP_MD *md = md_of(alg);
    EVP_PKEY *k = NULL;
    EVP_MD_CTX *ctx;
    EVP_PKEY_CTX *pctx = NULL;
    unsigned int ulen = 0;
    uint8_t der[1024];
    size_t len = sizeof(der);

    switch (s) {
    case S_EMPTY:
        return 0;
    case S_SECRET:
    case S_OTHER_SECRET:
    case S_PEM_SECRET: {
        const char *key = s == S_SECRET ? secret : s == S_OTHER_SECRET ? other_secret : pems[K_RSA];
        HMAC(md, key, (int)strlen(key), (const unsigned char *)input, strlen(input), sig, &ulen);
        return ulen;
    }
    case S_RSA:
        k = keys[K_RSA];
        break;
    case S_RSA2:
        k = keys[K_RSA2];
        break;
    case S_P256:
        k = keys[K_P256];
        break;
    case S_P256B:
        k = keys[K_P256B];
        break;
    case S_P384:
        k = keys[K_P384];
        break;
    }
    ctx = EVP_MD_CTX_new();
    if (ctx == NULL || EVP_DigestSignInit(ctx, &pctx, md, NULL, k) != 1)
        exit(1);
    if (alg[0] == 'P' && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) <= 0 ||
                          EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) <= 0))
        exit(1);
    if (EVP_DigestSign(ctx, der, &len, (const unsigned char *)input, strlen(input)) != 1)
        exit(1);
    EVP_MD_CTX_free(ctx);
    if (EVP_PKEY_get_base_id(k) == EVP_PKEY_EC) { /* DER → R || S (RFC 7518 §3.4) */
        const unsigned char *p = der;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)len);
        int half = (EVP_PKEY_get_bits(k) + 7) / 8;
        if (es == NULL || BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, half) != half ||
            BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + half, half) != half)
            exit(1);
        ECDSA_SIG_free(es);
        return (size_t)(2 * half);
    }
    memcpy(sig, der, len);
    return len;
}

/* "b64(header).b64(payload).b64(signature)"; the caller frees it. */
static char *make_token(const char *header, const char *payload, enum signer s)
{
    size_t hl = strlen(header), pl = strlen(payload);
    char *out = malloc(2 * (hl + pl) + 1024);
    uint8_t sig[1024];
    const char *alg = strstr(header, "\"alg\":\"");
    char alg_name[16] = "HS256";
    size_t n;

    if (out == NULL)
        exit(1);
    if (alg != NULL)
        sscanf(alg + 7, "%15[A-Za-z0-9]", alg_name);
    b64url((const uint8_t *)header, hl, out);
    strcat(out, ".");
    b64url((const uint8_t *)payload, pl, out + strlen(out));
    n = sign(s, alg_name, out, sig);
    strcat(out, ".");
    b64url(sig, n, out + strlen(out));
    return out;
}

/* Verifiers for the table. */
enum vid { V_HS, V_RSA, V_P256, V_P384, V_AUD, V_NOEXP, V_STRICT, V_NVERIFIERS };
static struct token_verifier *verifiers[V_NVERIFIERS];

static struct token_verifier *new_verifier(enum vid id)
{
    struct token_config c = {0};
    char err[256];
    struct token_verifier *v;

    c.leeway_ms = 5000;
    c.max_groups = 4;
    switch (id) {
    case V_RSA:
    case V_P256:
    case V_P384:
        c.public_key_pem = pems[id == V_RSA ? K_RSA : id == V_P256 ? K_P256 : K_P384];
        c.public_key_pem_len = strlen(c.public_key_pem);
        break;
    default:
        c.secret = (const uint8_t *)secret;
        c.secret_len = strlen(secret);
        break;
    }
    if (id == V_AUD) {
        c.issuer = "https://idp.example";
        c.audience = "wsgate";
    }
    c.allow_no_exp = id == V_NOEXP;
    if (id == V_STRICT)
        c.leeway_ms = 0;
    v = token_verifier_new(&c, err, sizeof(err));
    if (v == NULL) {
        fprintf(stderr, "verifier %d: %s\n", (int)id, err);
        exit(1);
    }
    return v;
}

static void setup(void)
{
    keys[K_RSA] = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    keys[K_RSA2] = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    keys[K_P256] = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    keys[K_P256B] = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    keys[K_P384] = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    for (int i = 0; i < K_NKEYS; i++) {
        if (keys[i] == NULL)
            exit(1);
        pems[i] = pem_public(keys[i]);
    }
    for (int i = 0; i < V_NVERIFIERS; i++)
        verifiers[i] = new_verifier((enum vid)i);
}

static void teardown(void)
{
    for (int i = 0; i < V_NVERIFIERS; i++)
        token_verifier_free(verifiers[i]);
    for (int i = 0; i < K_NKEYS; i++) {
        EVP_PKEY_free(keys[i]);
        free(pems[i]);
    }
}

/* Verifies tok from an allocation of exactly its length, so ASan sees over-reads. */
static int verify_exact(const struct token_verifier *v, const char *tok, size_t len,
                        struct token_claims *out, struct token_error *err)
{
    char *p = (char *)check_dup_exact(tok, len);
    int r = token_verify(v, p, len, NOW_MS, out, err);

    free(p);
    return r;
}

/* --- the table ----------------------------------------------------------------------------- */

#define H(alg)  "{\"alg\":\"" alg "\",\"typ\":\"JWT\"}"
#define EXP     "\"exp\":1700000600"
#define P(rest) "{\"sub\":\"alice\"," EXP rest "}"

struct tcase {
    const char *name;
    enum vid v;
    const char *header;
    const char *payload;
    enum signer s;
    const char *want; /* "ok" or the refusal's key */
};

static const struct tcase cases[] = {
    /* good tokens, one per algorithm */
    {"HS256", V_HS, H("HS256"), P(""), S_SECRET, "ok"},
    {"HS384", V_HS, H("HS384"), P(""), S_SECRET, "ok"},
    {"HS512", V_HS, H("HS512"), P(""), S_SECRET, "ok"},
    {"RS256", V_RSA, H("RS256"), P(""), S_RSA, "ok"},
    {"RS384", V_RSA, H("RS384"), P(""), S_RSA, "ok"},
    {"RS512", V_RSA, H("RS512"), P(""), S_RSA, "ok"},
    {"PS256", V_RSA, H("PS256"), P(""), S_RSA, "ok"},
    {"ES256", V_P256, H("ES256"), P(""), S_P256, "ok"},
    {"ES384", V_P384, H("ES384"), P(""), S_P384, "ok"},
    {"typ absent", V_HS, "{\"alg\":\"HS256\"}", P(""), S_SECRET, "ok"},
    {"typ lower case", V_HS, "{\"alg\":\"HS256\",\"typ\":\"jwt\"}", P(""), S_SECRET, "ok"},
    {"kid ignored", V_HS, "{\"alg\":\"HS256\",\"kid\":\"k1\"}", P(""), S_SECRET, "ok"},
    /* the algorithm is the key's, never the token's */
    {"alg none", V_HS, H("none"), P(""), S_EMPTY, "alg"},
    {"alg none, signed", V_HS, H("none"), P(""), S_SECRET, "alg"},
    {"alg none, RSA key", V_RSA, H("none"), P(""), S_EMPTY, "alg"},
    {"HS256 keyed with the public PEM", V_RSA, H("HS256"), P(""), S_PEM_SECRET, "alg"},
    {"RS256 with a secret", V_HS, H("RS256"), P(""), S_RSA, "alg"},
    {"ES256 with an RSA key", V_RSA, H("ES256"), P(""), S_P256, "alg"},
    {"ES384 with a P-256 key", V_P256, H("ES384"), P(""), S_P384, "alg"},
    {"ES256 with a P-384 key", V_P384, H("ES256"), P(""), S_P256, "alg"},
    {"PS384 unknown", V_RSA, H("PS384"), P(""), S_RSA, "alg"},
    {"ES512 unknown", V_P256, H("ES512"), P(""), S_P256, "alg"},
    {"alg lower case", V_HS, H("hs256"), P(""), S_SECRET, "alg"},
    {"alg missing", V_HS, "{\"typ\":\"JWT\"}", P(""), S_SECRET, "alg"},
    {"alg not a string", V_HS, "{\"alg\":1}", P(""), S_SECRET, "alg"},
    /* signatures */
    {"HS256 wrong secret", V_HS, H("HS256"), P(""), S_OTHER_SECRET, "bad_signature"},
    {"RS256 wrong key", V_RSA, H("RS256"), P(""), S_RSA2, "bad_signature"},
    {"PS256 wrong key", V_RSA, H("PS256"), P(""), S_RSA2, "bad_signature"},
    {"ES256 wrong key", V_P256, H("ES256"), P(""), S_P256B, "bad_signature"},
    {"HS256 no signature", V_HS, H("HS256"), P(""), S_EMPTY, "bad_signature"},
    {"RS256 no signature", V_RSA, H("RS256"), P(""), S_EMPTY, "bad_signature"},
    /* header */
    {"crit", V_HS, "{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}", P(""), S_SECRET,
     "malformed"},
    {"typ at+jwt", V_HS, "{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}", P(""), S_SECRET, "malformed"},
    {"header an array", V_HS, "[\"HS256\"]", P(""), S_SECRET, "malformed"},
    {"header not JSON", V_HS, "{alg:HS256}", P(""), S_SECRET, "malformed"},
    {"header duplicate alg", V_HS, "{\"alg\":\"none\",\"alg\":\"HS256\"}", P(""), S_SECRET,
     "malformed"},
    /* payload */
    {"payload not JSON", V_HS, H("HS256"), "sub=alice", S_SECRET, "malformed"},
    {"payload a string", V_HS, H("HS256"), "\"alice\"", S_SECRET, "malformed"},
    {"payload duplicate sub", V_HS, H("HS256"), "{\"sub\":\"a\",\"sub\":\"b\"," EXP "}", S_SECRET,
     "malformed"},
    /* time */
    {"expired", V_HS, H("HS256"), "{\"sub\":\"a\",\"exp\":1699999000}", S_SECRET, "expired"},
    {"expired within leeway", V_HS, H("HS256"), "{\"sub\":\"a\",\"exp\":1699999996}", S_SECRET,
     "ok"},
    {"expired at leeway", V_HS, H("HS256"), "{\"sub\":\"a\",\"exp\":1699999995}", S_SECRET,
     "expired"},
    {"expired, no leeway", V_STRICT, H("HS256"), "{\"sub\":\"a\",\"exp\":1699999996}", S_SECRET,
     "expired"},
    {"exp now, no leeway", V_STRICT, H("HS256"), "{\"sub\":\"a\",\"exp\":1700000000}", S_SECRET,
     "expired"},
    {"exp fractional", V_HS, H("HS256"), "{\"sub\":\"a\",\"exp\":1700000600.5}", S_SECRET, "ok"},
    {"exp a string", V_HS, H("HS256"), "{\"sub\":\"a\",\"exp\":\"1700000600\"}", S_SECRET,
     "claims"},
    {"exp negative", V_HS, H("HS256"), "{\"sub\":\"a\",\"exp\":-1}", S_SECRET, "claims"},
    {"exp past 9999", V_HS, H("HS256"), "{\"sub\":\"a\",\"exp\":1e300}", S_SECRET, "claims"},
    {"exp null", V_HS, H("HS256"), "{\"sub\":\"a\",\"exp\":null}", S_SECRET, "claims"},
    {"no exp", V_HS, H("HS256"), "{\"sub\":\"a\"}", S_SECRET, "no_exp"},
    {"no exp allowed", V_NOEXP, H("HS256"), "{\"sub\":\"a\"}", S_SECRET, "ok"},
    {"no exp allowed, expired", V_NOEXP, H("HS256"), "{\"sub\":\"a\",\"exp\":1}", S_SECRET,
     "expired"},
    {"nbf future", V_HS, H("HS256"), P(",\"nbf\":1700000600"), S_SECRET, "not_yet_valid"},
    {"nbf within leeway", V_HS, H("HS256"), P(",\"nbf\":1700000005"), S_SECRET, "ok"},
    {"nbf past leeway", V_HS, H("HS256"), P(",\"nbf\":1700000006"), S_SECRET, "not_yet_valid"},
    {"nbf past", V_HS, H("HS256"), P(",\"nbf\":1600000000"), S_SECRET, "ok"},
    {"nbf a string", V_HS, H("HS256"), P(",\"nbf\":\"x\""), S_SECRET, "claims"},
    {"iat future", V_HS, H("HS256"), P(",\"iat\":1700000600"), S_SECRET, "not_yet_valid"},
    {"iat past", V_HS, H("HS256"), P(",\"iat\":1699999000"), S_SECRET, "ok"},
    /* issuer and audience */
    {"iss and aud", V_AUD, H("HS256"), P(",\"iss\":\"https://idp.example\",\"aud\":\"wsgate\""),
     S_SECRET, "ok"},
    {"aud array", V_AUD, H("HS256"),
     P(",\"iss\":\"https://idp.example\",\"aud\":[\"api\",\"wsgate\"]"), S_SECRET, "ok"},
    {"aud array without ours", V_AUD, H("HS256"),
     P(",\"iss\":\"https://idp.example\",\"aud\":[\"api\",\"web\"]"), S_SECRET, "audience"},
    {"aud wrong", V_AUD, H("HS256"), P(",\"iss\":\"https://idp.example\",\"aud\":\"api\""),
     S_SECRET, "audience"},
    {"aud missing", V_AUD, H("HS256"), P(",\"iss\":\"https://idp.example\""), S_SECRET, "audience"},
    {"aud a number", V_AUD, H("HS256"), P(",\"iss\":\"https://idp.example\",\"aud\":1"), S_SECRET,
     "claims"},
    {"aud array with a number", V_AUD, H("HS256"),
     P(",\"iss\":\"https://idp.example\",\"aud\":[\"wsgate\",1]"), S_SECRET, "claims"},
    {"aud not configured", V_HS, H("HS256"), P(",\"aud\":\"wsgate\""), S_SECRET, "audience"},
    {"iss wrong", V_AUD, H("HS256"), P(",\"iss\":\"https://evil.example\",\"aud\":\"wsgate\""),
     S_SECRET, "issuer"},
    {"iss missing", V_AUD, H("HS256"), P(",\"aud\":\"wsgate\""), S_SECRET, "issuer"},
    {"iss a number", V_AUD, H("HS256"), P(",\"iss\":7,\"aud\":\"wsgate\""), S_SECRET, "issuer"},
    {"iss not configured", V_HS, H("HS256"), P(",\"iss\":\"anyone\""), S_SECRET, "ok"},
    /* sub, groups, jti */
    {"sub missing", V_HS, H("HS256"), "{" EXP "}", S_SECRET, "claims"},
    {"sub a number", V_HS, H("HS256"), "{\"sub\":42," EXP "}", S_SECRET, "claims"},
    {"sub empty", V_HS, H("HS256"), "{\"sub\":\"\"," EXP "}", S_SECRET, "claims"},
    {"sub control char", V_HS, H("HS256"), "{\"sub\":\"a\\nb\"," EXP "}", S_SECRET, "claims"},
    {"sub unicode", V_HS, H("HS256"), "{\"sub\":\"\\u00e9l\\u00e8ve\"," EXP "}", S_SECRET, "ok"},
    {"sub lone surrogate", V_HS, H("HS256"), "{\"sub\":\"\\ud800\"," EXP "}", S_SECRET,
     "malformed"},
    {"sub NUL", V_HS, H("HS256"), "{\"sub\":\"a\\u0000b\"," EXP "}", S_SECRET, "malformed"},
    {"groups", V_HS, H("HS256"), P(",\"groups\":[\"room:1\",\"room:2\"]"), S_SECRET, "ok"},
    {"groups empty", V_HS, H("HS256"), P(",\"groups\":[]"), S_SECRET, "ok"},
    {"groups at the limit", V_HS, H("HS256"), P(",\"groups\":[\"a\",\"b\",\"c\"]"), S_SECRET, "ok"},
    {"groups repeated", V_HS, H("HS256"), P(",\"groups\":[\"a\",\"b\",\"a\",\"c\",\"b\"]"),
     S_SECRET, "ok"},
    {"groups too many", V_HS, H("HS256"), P(",\"groups\":[\"a\",\"b\",\"c\",\"d\"]"), S_SECRET,
     "claims"},
    {"groups a string", V_HS, H("HS256"), P(",\"groups\":\"a,b\""), S_SECRET, "claims"},
    {"groups null", V_HS, H("HS256"), P(",\"groups\":null"), S_SECRET, "claims"},
    {"groups with a number", V_HS, H("HS256"), P(",\"groups\":[\"a\",1]"), S_SECRET, "claims"},
    {"groups user:", V_HS, H("HS256"), P(",\"groups\":[\"user:bob\"]"), S_SECRET, "claims"},
    {"groups empty name", V_HS, H("HS256"), P(",\"groups\":[\"\"]"), S_SECRET, "claims"},
    {"groups control char", V_HS, H("HS256"), P(",\"groups\":[\"a\\u007f\"]"), S_SECRET, "claims"},
    {"jti", V_HS, H("HS256"), P(",\"jti\":\"t-1\""), S_SECRET, "ok"},
    {"jti a number", V_HS, H("HS256"), P(",\"jti\":1"), S_SECRET, "claims"},
    {"jti empty", V_HS, H("HS256"), P(",\"jti\":\"\""), S_SECRET, "claims"},
};

#define NCASES (sizeof(cases) / sizeof(cases[0]))

static void test_token_table(void)
{
    for (size_t i = 0; i < NCASES; i++) {
        const struct tcase *t = &cases[i];
        char *tok = make_token(t->header, t->payload, t->s);
        struct token_claims c;
        struct token_error err = {NULL, NULL};
        int r = verify_exact(verifiers[t->v], tok, strlen(tok), &c, &err);
        const char *got = r == 0 ? "ok" : err.key;

        CHECK(strcmp(got, t->want) == 0);
        if (strcmp(got, t->want) != 0)
            fprintf(stderr, "  case \"%s\": want %s, got %s (%s)\n", t->name, t->want, got,
                    r == 0 ? "" : err.why);
        CHECK(r == 0 ? c.sub != NULL && c.alg != NULL : err.why != NULL && c.sub == NULL);
        if (r < 0) { /* the key is the table's own pointer, for counters */
            bool known = false;
            for (size_t k = 0; k < TOKEN_NERROR_KEYS; k++)
                known = known || err.key == token_error_keys[k];
            CHECK(known);
        }
        token_claims_cleanup(&c);
        free(tok);
    }
}

/* An HS384 header over an HS256 MAC (make_token() signs with the header's alg, so this
 * one is built by hand): the MAC's length must be the one alg gives. */
static void test_token_mac_length_follows_alg(void)
{
    char *tok = make_token(H("HS384"), P(""), S_SECRET);
    char *dot = strrchr(tok, '.');
    uint8_t mac[64];
    unsigned int n = 0;
    struct token_claims c;
    struct token_error err;

    *dot = '\0';
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)tok, strlen(tok), mac,
         &n);
    *dot = '.';
    b64url(mac, n, dot + 1);
    CHECK(verify_exact(verifiers[V_HS], tok, strlen(tok), &c, &err) < 0);
    CHECK(strcmp(err.key, "bad_signature") == 0);
    free(tok);
}

static void check_claims(const char *payload, const char *sub, const char *groups, const char *jti,
                         int64_t exp_ms)
{
    char *tok = make_token(H("ES256"), payload, S_P256);
    struct token_claims c;
    struct token_error err;
    char joined[256] = "";

    CHECK(verify_exact(verifiers[V_P256], tok, strlen(tok), &c, &err) == 0);
    CHECK(c.sub != NULL && strcmp(c.sub, sub) == 0);
    for (size_t i = 0; i < c.ngroups; i++) {
        strcat(joined, i > 0 ? "," : "");
        strcat(joined, c.groups[i]);
    }
    CHECK(strcmp(joined, groups) == 0);
    CHECK(jti == NULL ? c.jti == NULL : c.jti != NULL && strcmp(c.jti, jti) == 0);
    CHECK(c.exp_ms == exp_ms);
    CHECK(c.alg != NULL && strcmp(c.alg, "ES256") == 0);
    token_claims_cleanup(&c);
    CHECK(c.sub == NULL && c.groups == NULL && c.ngroups == 0);
    token_claims_cleanup(&c); /* twice is harmless */
    free(tok);
}

static void test_token_claims_out(void)
{
    check_claims(P(""), "alice", "", NULL, 1700000600000LL);
    check_claims(P(",\"groups\":[\"b\",\"a\",\"b\"],\"jti\":\"j-9\""), "alice", "b,a", "j-9",
                 1700000600000LL);
    check_claims("{\"sub\":\"bob\",\"exp\":1700000600.25}", "bob", "", NULL, 1700000600250LL);
}

/* Name lengths at their bounds: sub 123 bytes (so "user:<sub>" is 128), groups 128. */
static void test_token_name_bounds(void)
{
    char name[200], payload[512];
    struct {
        const char *field;
        size_t len;
        bool ok;
    } t[] = {{"sub", 123, true},    {"sub", 124, false}, {"group", 128, true},
             {"group", 129, false}, {"jti", 128, true},  {"jti", 129, false}};

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct token_claims c;
        struct token_error err;
        char *tok;
        int r;

        memset(name, 'x', t[i].len);
        name[t[i].len] = '\0';
        if (strcmp(t[i].field, "sub") == 0)
            snprintf(payload, sizeof(payload), "{\"sub\":\"%s\"," EXP "}", name);
        else if (strcmp(t[i].field, "group") == 0)
            snprintf(payload, sizeof(payload), P(",\"groups\":[\"%s\"]"), name);
        else
            snprintf(payload, sizeof(payload), P(",\"jti\":\"%s\""), name);
        tok = make_token(H("HS256"), payload, S_SECRET);
        r = verify_exact(verifiers[V_HS], tok, strlen(tok), &c, &err);
        CHECK(t[i].ok ? r == 0 : r < 0 && strcmp(err.key, "claims") == 0);
        token_claims_cleanup(&c);
        free(tok);
    }
}

/* Tokens broken after signing, and shapes that are not a JWS at all. */
static void test_token_tampered_and_garbage(void)
{
    char *good = make_token(H("HS256"), P(""), S_SECRET);
    char *forged = make_token(H("HS256"), "{\"sub\":\"mallory\"," EXP "}", S_SECRET);
    char *good_rs = make_token(H("RS256"), P(""), S_RSA);
    char buf[16384];
    size_t len;
    struct token_claims c;
    struct token_error err;
    const char *d1 = strchr(good, '.'), *d2 = strrchr(good, '.');
    const char *f1 = strchr(forged, '.'), *f2 = strrchr(forged, '.');
    struct {
        const char *tok;
        const char *want;
    } t[] = {
        {"", "missing"},
        {"abc", "malformed"},
        {"a.b", "malformed"},
        {"a.b.c.d", "malformed"},
        {".eyJ9.c2ln", "malformed"},
        {"eyJhbGciOiJIUzI1NiJ9..c2ln", "malformed"},
        {"e30.e30.", "alg"},
        {"!!!.e30.c2ln", "malformed"},
        {"eyJhbGciOiJIUzI1NiJ9=.e30.c2ln", "malformed"},
        {"eyJhbGciOiJIUzI1NiJ9.e30.c2ln+", "malformed"},
        {"eyJhbGciOiJIUzI1NiJ9.e30.c2ln/", "malformed"},
        {"eyJhbGciOiJIUzI1NiJ9.e30.c", "malformed"},   /* 1 char mod 4 */
        {"eyJhbGciOiJIUzI1NiJ9.e30.c2l", "malformed"}, /* non-zero spare bits */
        {"eyJhbGciOiJIUzI1NiJ9.e30.c2ln", "bad_signature"},
        {"eyJhbGciOiJIUzI1NiJ9.e30 .c2ln", "malformed"},
    };

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        int r = verify_exact(verifiers[V_HS], t[i].tok, strlen(t[i].tok), &c, &err);
        CHECK(r < 0 && strcmp(err.key, t[i].want) == 0);
        if (r == 0 || strcmp(err.key, t[i].want) != 0)
            fprintf(stderr, "  \"%s\": want %s, got %s\n", t[i].tok, t[i].want,
                    r == 0 ? "ok" : err.key);
    }
    /* the payload of one signed token with the signature of another */
    len = (size_t)snprintf(buf, sizeof(buf), "%.*s.%.*s%s", (int)(d1 - good), good,
                           (int)(f2 - f1 - 1), f1 + 1, d2);
    CHECK(verify_exact(verifiers[V_HS], buf, len, &c, &err) < 0);
    CHECK(strcmp(err.key, "bad_signature") == 0);
    /* one signature character changed, for HMAC and for RSA (libjwt) */
    for (int k = 0; k < 2; k++) {
        const char *src = k == 0 ? good : good_rs;
        size_t at = (size_t)(strrchr(src, '.') - src) + 5;
        len = strlen(src);
        memcpy(buf, src, len);
        buf[at] = buf[at] == 'A' ? 'B' : 'A';
        CHECK(verify_exact(verifiers[k == 0 ? V_HS : V_RSA], buf, len, &c, &err) < 0);
        CHECK(strcmp(err.key, "bad_signature") == 0);
    }
    /* a trailing dot makes four segments */
    len = (size_t)snprintf(buf, sizeof(buf), "%s.", good);
    CHECK(verify_exact(verifiers[V_HS], buf, len, &c, &err) < 0);
    CHECK(strcmp(err.key, "malformed") == 0);
    /* the length bound comes before anything else */
    memset(buf, 'A', TOKEN_MAX_LEN + 1);
    CHECK(verify_exact(verifiers[V_HS], buf, TOKEN_MAX_LEN + 1, &c, &err) < 0);
    CHECK(strcmp(err.key, "malformed") == 0);
    /* a good token exactly at the bound passes the bound */
    {
        char payload[TOKEN_MAX_LEN];
        char *big;
        size_t pad = 6000;
        snprintf(payload, sizeof(payload), P(",\"x\":\"%*s\""), (int)pad, "");
        big = make_token(H("HS256"), payload, S_SECRET);
        CHECK(strlen(big) <= TOKEN_MAX_LEN);
        CHECK(verify_exact(verifiers[V_HS], big, strlen(big), &c, &err) == 0);
        token_claims_cleanup(&c);
        free(big);
    }
    free(good);
    free(forged);
    free(good_rs);
}

/* Tokens made by libjwt's own encoder verify here: the two agree on the format. */
static void test_token_libjwt_encoder_interop(void)
{
    struct {
        jwt_alg_t alg;
        int key; /* -1: the secret */
        enum vid v;
    } t[] = {{JWT_ALG_HS256, -1, V_HS},
             {JWT_ALG_HS512, -1, V_HS},
             {JWT_ALG_RS256, K_RSA, V_RSA},
             {JWT_ALG_ES256, K_P256, V_P256},
             {JWT_ALG_ES384, K_P384, V_P384}};

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        char *priv = t[i].key < 0 ? NULL : pem_private(keys[t[i].key]);
        const char *key = priv != NULL ? priv : secret;
        jwt_t *jwt = NULL;
        char *tok;
        struct token_claims c;
        struct token_error err;

        CHECK(jwt_new(&jwt) == 0);
        CHECK(jwt_set_alg(jwt, t[i].alg, (const unsigned char *)key, (int)strlen(key)) == 0);
        CHECK(jwt_add_grant(jwt, "sub", "carol") == 0);
        CHECK(jwt_add_grant_int(jwt, "exp", 1700000600) == 0);
        CHECK(jwt_add_grants_json(jwt, "{\"groups\":[\"g1\"]}") == 0);
        tok = jwt_encode_str(jwt);
        CHECK(tok != NULL);
        if (tok != NULL) {
            CHECK(verify_exact(verifiers[t[i].v], tok, strlen(tok), &c, &err) == 0);
            CHECK(c.sub != NULL && strcmp(c.sub, "carol") == 0 && c.ngroups == 1);
            token_claims_cleanup(&c);
        }
        free(tok);
        jwt_free(jwt);
        free(priv);
    }
}

/* --- the verifier's settings --------------------------------------------------------------- */

static bool verifier_refused(struct token_config *c, const char *needle)
{
    char err[256] = "";
    struct token_verifier *v = token_verifier_new(c, err, sizeof(err));

    if (v != NULL) {
        token_verifier_free(v);
        return false;
    }
    if (strstr(err, needle) == NULL) {
        fprintf(stderr, "  verifier error \"%s\" lacks \"%s\"\n", err, needle);
        return false;
    }
    return true;
}

static void test_token_verifier_settings(void)
{
    struct token_config c = {0};
    EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    EVP_PKEY *p521 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-521");
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    char *small_pem = pem_public(small), *p521_pem = pem_public(p521), *ed_pem = pem_public(ed);
    char *priv = pem_private(keys[K_P256]);
    char path[] = "/tmp/wsgate-token-XXXXXX";
    char mixed[8192];
    int fd;
    struct token_verifier *v;
    char err[256];

    c.max_groups = 4;
    CHECK(verifier_refused(&c, "exactly one"));
    c.secret = (const uint8_t *)secret;
    c.secret_len = strlen(secret);
    c.public_key_pem = pems[K_RSA];
    c.public_key_pem_len = strlen(pems[K_RSA]);
    CHECK(verifier_refused(&c, "exactly one"));
    c.public_key_pem = NULL;
    c.secret_len = 31;
    CHECK(verifier_refused(&c, "at least 32"));
    c.secret_len = 32;
    c.max_groups = 0;
    CHECK(verifier_refused(&c, "max groups"));
    c.max_groups = 4;
    v = token_verifier_new(&c, err, sizeof(err));
    CHECK(v != NULL);
    token_verifier_free(v);
    token_verifier_free(NULL);
    c.secret = NULL;
    struct {
        const char *pem;
        const char *needle;
    } bad[] = {
        {"not a key", "no PEM public key"}, {priv, "no PEM public key"}, /* a private key is not
                                                                            taken for a public one
                                                                          */
        {small_pem, "1024 bits"},           {p521_pem, "secp521r1"},     {ed_pem, "ED25519"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        c.public_key_pem = bad[i].pem;
        c.public_key_pem_len = strlen(bad[i].pem);
        CHECK(verifier_refused(&c, bad[i].needle));
    }
    /* a file, with other PEM blocks and text around the key */
    snprintf(mixed, sizeof(mixed), "issued by ops\n%s%s", priv, pems[K_P256]);
    fd = mkstemp(path);
    CHECK(fd >= 0 && write(fd, mixed, strlen(mixed)) == (ssize_t)strlen(mixed));
    close(fd);
    c.public_key_pem = NULL;
    c.public_key_path = path;
    v = token_verifier_new(&c, err, sizeof(err));
    CHECK(v != NULL);
    if (v != NULL) {
        char *tok = make_token(H("ES256"), P(""), S_P256);
        struct token_claims cl;
        struct token_error e;
        CHECK(verify_exact(v, tok, strlen(tok), &cl, &e) == 0);
        token_claims_cleanup(&cl);
        free(tok);
    }
    token_verifier_free(v);
    unlink(path);
    c.public_key_path = "/nonexistent/key.pem";
    CHECK(verifier_refused(&c, "No such file"));
    EVP_PKEY_free(small);
    EVP_PKEY_free(p521);
    EVP_PKEY_free(ed);
    free(small_pem);
    free(p521_pem);
    free(ed_pem);
    free(priv);
}

/* --- extraction ---------------------------------------------------------------------------- */

static void parse_request(struct ws_hs *h, const char *target, const char *headers)
{
    char req[4096];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s\r\n",
                     target, headers);

    ws_hs_init(h, 8192);
    if (ws_hs_feed(h, (const uint8_t *)req, (size_t)n) < 0 || h->status != 101)
        exit(1);
}

static void test_token_extract(void)
{
    struct {
        const char *target;
        const char *headers;
        const char *cookie;
        enum token_source src;
        const char *tok;
    } t[] = {
        {"/", "Authorization: Bearer abc.def.ghi\r\n", NULL, TOKEN_SRC_HEADER, "abc.def.ghi"},
        {"/", "authorization: bEaReR    abc\r\n", NULL, TOKEN_SRC_HEADER, "abc"},
        {"/", "Authorization: Bearer\r\n", NULL, TOKEN_SRC_HEADER, ""},
        {"/", "Authorization: Bearerabc\r\n", NULL, TOKEN_SRC_NONE, NULL},
        {"/", "Authorization: Basic dXNlcjpw\r\n", NULL, TOKEN_SRC_NONE, NULL},
        {"/?token=q", "Authorization: Basic dXNlcjpw\r\n", NULL, TOKEN_SRC_QUERY, "q"},
        {"/", "Authorization: Basic dXNlcjpw\r\nAuthorization: Bearer two\r\n", NULL,
         TOKEN_SRC_HEADER, "two"},
        {"/?token=q", "Authorization: Bearer h\r\nCookie: jwt=c\r\n", "jwt", TOKEN_SRC_HEADER, "h"},
        {"/?token=q&token=r", "Cookie: jwt=c\r\n", "jwt", TOKEN_SRC_QUERY, "q"},
        {"/?token=a%2Eb", "", NULL, TOKEN_SRC_QUERY, "a.b"},
        {"/?token=", "", NULL, TOKEN_SRC_QUERY, ""},
        {"/", "Cookie: a=1; jwt=tok; b=2\r\n", "jwt", TOKEN_SRC_COOKIE, "tok"},
        {"/", "Cookie: jwt=tok\r\n", NULL, TOKEN_SRC_NONE, NULL},
        {"/", "Cookie: jwt=tok\r\n", "", TOKEN_SRC_NONE, NULL},
        {"/", "Cookie: xjwt=1; jwtx=2; jwt =  \"tok\" \r\n", "jwt", TOKEN_SRC_COOKIE, "tok"},
        {"/", "Cookie: JWT=x\r\n", "jwt", TOKEN_SRC_NONE, NULL},
        {"/", "Cookie: jwt\r\n", "jwt", TOKEN_SRC_NONE, NULL},
        {"/", "Cookie: jwt=first; jwt=second\r\n", "jwt", TOKEN_SRC_COOKIE, "first"},
        {"/", "Cookie: a=1\r\nCookie: jwt=later\r\n", "jwt", TOKEN_SRC_COOKIE, "later"},
        {"/", "Cookie: jwt=\r\n", "jwt", TOKEN_SRC_COOKIE, ""},
        {"/", "Cookie: ;;; jwt=x;\r\n", "jwt", TOKEN_SRC_COOKIE, "x"},
        {"/", "Cookie: a=\"b;jwt=y\r\n", "jwt", TOKEN_SRC_COOKIE, "y"},
        {"/", "Cookie: jwt=\"\r\n", "jwt", TOKEN_SRC_COOKIE, "\""},
        {"/", "Cookie: jwt=a=b\r\n", "jwt", TOKEN_SRC_COOKIE, "a=b"},
        {"/", "", "jwt", TOKEN_SRC_NONE, NULL},
    };

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct ws_hs h;
        const char *tok;
        size_t len;
        enum token_source s;

        parse_request(&h, t[i].target, t[i].headers);
        s = token_extract(&h, t[i].cookie, &tok, &len);
        CHECK(s == t[i].src);
        if (t[i].tok == NULL)
            CHECK(tok == NULL && len == 0);
        else
            CHECK(tok != NULL && len == strlen(t[i].tok) && memcmp(tok, t[i].tok, len) == 0);
        if (s != t[i].src)
            fprintf(stderr, "  extract case %zu: source %s\n", i, token_source_name(s));
        ws_hs_cleanup(&h);
    }
    CHECK(strcmp(token_source_name(TOKEN_SRC_COOKIE), "cookie") == 0);
    CHECK(strcmp(token_source_name(TOKEN_SRC_NONE), "none") == 0);
}

static void test_token_response_401(void)
{
    char out[256];
    size_t n = token_response_401("invalid token", out, sizeof(out));
    static const char want[] = "HTTP/1.1 401 Unauthorized\r\n"
                               "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n"
                               "Content-Type: text/plain; charset=utf-8\r\n"
                               "Content-Length: 14\r\n"
                               "Connection: close\r\n"
                               "\r\n"
                               "invalid token\n";

    CHECK(n == sizeof(want) - 1 && memcmp(out, want, n) == 0);
    CHECK(token_response_401("invalid token", out, n) == 0); /* one byte short */
    CHECK(token_response_401("invalid token", out, n + 1) == n);
}

/* --- allocation failure -------------------------------------------------------------------- */

/*
 * Every allocation in token_verify fails in turn: ours, jansson's (libjwt's included)
 * and, where wsgate calls OpenSSL itself (HS*, PS256), OpenSSL's. Each run is refused or
 * succeeds with the same claims; LeakSanitizer checks that nothing is left behind. A
 * refusal reads "oom", or "malformed" when jansson reports the failure as a syntax
 * error, or "bad_signature" when it falls inside libjwt (EINVAL).
 *
 * OpenSSL's allocations are not failed under libjwt (RS*, ES*): libjwt 1.10.2 does not
 * survive it (jwt_verify_sha_pem mallocs i2d_ECDSA_SIG()'s -1 and leaks a BIGNUM when
 * the second BN_bin2bn() fails), and its own mallocs have no hook (no jwt_set_alloc()
 * before 1.12) and are never failed here.
 */
static void test_token_every_allocation_fails_cleanly(void)
{
    struct {
        enum vid v;
        const char *header;
        enum signer s;
        int crypto; /* OpenSSL's allocations fail too */
    } t[] = {{V_HS, H("HS256"), S_SECRET, 1},
             {V_RSA, H("PS256"), S_RSA, 1},
             {V_RSA, H("RS256"), S_RSA, 0},
             {V_P256, H("ES256"), S_P256, 0}};

    json_set_alloc_funcs(chaos_json_malloc, free);
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        char *tok = make_token(t[i].header, P(",\"groups\":[\"a\",\"b\"],\"jti\":\"j\""), t[i].s);
        unsigned long n, oom = 0;

        for (n = 1;; n++) {
            struct token_claims c;
            struct token_error err;
            unsigned long used;
            int r;

            chaos_crypto(t[i].crypto);
            chaos_fail_at(n);
            r = token_verify(verifiers[t[i].v], tok, strlen(tok), NOW_MS, &c, &err);
            used = chaos_allocations();
            chaos_fail_at(0);
            chaos_crypto(0);
            if (r < 0) {
                CHECK(strcmp(err.key, "oom") == 0 || strcmp(err.key, "malformed") == 0 ||
                      strcmp(err.key, "bad_signature") == 0);
                CHECK(c.sub == NULL && c.groups == NULL && c.jti == NULL);
                oom += strcmp(err.key, "oom") == 0;
            } else {
                CHECK(strcmp(c.sub, "alice") == 0 && c.ngroups == 2 && strcmp(c.jti, "j") == 0);
                token_claims_cleanup(&c);
            }
            if (n > used)
                break;
        }
        CHECK(oom > 0);
        free(tok);
    }
    json_set_alloc_funcs(malloc, free);
}

static void test_token_verifier_new_every_allocation_fails_cleanly(void)
{
    for (int k = 0; k < 2; k++) {
        struct token_config c = {0};
        unsigned long n, failures = 0;

        c.max_groups = 4;
        c.issuer = "iss";
        c.audience = "aud";
        if (k == 0) {
            c.secret = (const uint8_t *)secret;
            c.secret_len = strlen(secret);
        } else {
            c.public_key_pem = pems[K_P256];
            c.public_key_pem_len = strlen(pems[K_P256]);
        }
        for (n = 1;; n++) {
            char err[256];
            struct token_verifier *v;
            unsigned long used;

            chaos_crypto(1);
            chaos_fail_at(n);
            v = token_verifier_new(&c, err, sizeof(err));
            used = chaos_allocations();
            chaos_fail_at(0);
            chaos_crypto(0);
            if (v == NULL) {
                failures++;
                CHECK(strstr(err, "out of memory") != NULL);
            }
            token_verifier_free(v);
            if (n > used)
                break;
        }
        CHECK(failures > 0);
    }
}

void suite_token(void)
{
    setup();
    test_token_table();
    test_token_mac_length_follows_alg();
    test_token_claims_out();
    test_token_name_bounds();
    test_token_tampered_and_garbage();
    test_token_libjwt_encoder_interop();
    test_token_verifier_settings();
    test_token_extract();
    test_token_response_401();
    test_token_every_allocation_fails_cleanly();
    test_token_verifier_new_every_allocation_fails_cleanly();
    teardown();
}
