#include "common/token.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <jwt.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/obj_mac.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "common/base64.h"
#include "common/utf8.h"

#define KEY_FILE_MAX (64 * 1024)    /* a PEM public key is a few KiB at most */
#define DATE_MAX     253402300799LL /* 9999-12-31T23:59:59Z: later NumericDates are refused */

enum key_kind {
    KEY_SECRET,
    KEY_RSA,
    KEY_EC_P256,
    KEY_EC_P384,
};

/* The algorithms each kind of key allows (RFC 7518 §3.1). */
struct alg {
    const char *name;
    enum key_kind kind;
    jwt_alg_t jwt; /* RS*, ES*: what jwt_get_alg() must say; PS256: JWT_ALG_INVAL (not in 1.10) */
    const EVP_MD *(*md)(void);
};

static const struct alg algs[] = {
    {"HS256", KEY_SECRET, JWT_ALG_HS256, EVP_sha256},
    {"HS384", KEY_SECRET, JWT_ALG_HS384, EVP_sha384},
    {"HS512", KEY_SECRET, JWT_ALG_HS512, EVP_sha512},
    {"RS256", KEY_RSA, JWT_ALG_RS256, EVP_sha256},
    {"RS384", KEY_RSA, JWT_ALG_RS384, EVP_sha384},
    {"RS512", KEY_RSA, JWT_ALG_RS512, EVP_sha512},
    {"PS256", KEY_RSA, JWT_ALG_INVAL, EVP_sha256},
    {"ES256", KEY_EC_P256, JWT_ALG_ES256, EVP_sha256},
    {"ES384", KEY_EC_P384, JWT_ALG_ES384, EVP_sha384},
};

#define NALGS (sizeof(algs) / sizeof(algs[0]))

struct token_verifier {
    enum key_kind kind;
    unsigned char *key; /* owned: the secret, or the PEM text handed to libjwt */
    size_t key_len;
    EVP_PKEY *pkey; /* owned: the public key (PS256), NULL for a secret */
    char *issuer;   /* owned, NULL when not checked */
    char *audience; /* owned, NULL when none is ours */
    int64_t leeway_ms;
    bool allow_no_exp;
    size_t max_groups;
};

/* --- the verifier -------------------------------------------------------------------------- */

static int read_file(const char *path, char **out, size_t *out_len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    size_t n;

    if (f == NULL) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -1;
    }
    buf = malloc(KEY_FILE_MAX + 1);
    if (buf == NULL) {
        fclose(f);
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    n = fread(buf, 1, KEY_FILE_MAX + 1, f);
    if (ferror(f) || n > KEY_FILE_MAX) {
        snprintf(err, errlen, "%s: %s", path, ferror(f) ? "read error" : "larger than 64 KiB");
        fclose(f);
        free(buf);
        return -1;
    }
    fclose(f);
    *out = buf;
    *out_len = n;
    return 0;
}

/* Reads the public key, decides its kind, and keeps it re-encoded as PEM for libjwt,
 * so libjwt parses exactly the key checked here and nothing else in the file. */
static int load_public_key(struct token_verifier *v, const char *pem, size_t len, const char *what,
                           char *err, size_t errlen)
{
    BIO *in = NULL, *out = NULL;
    char group[64];
    char *data;
    long n;
    int rc = -1;

    if (len > KEY_FILE_MAX || (in = BIO_new_mem_buf(pem, (int)len)) == NULL) {
        snprintf(err, errlen, "%s: %s", what, len > KEY_FILE_MAX ? "too large" : "out of memory");
        goto done;
    }
    v->pkey = PEM_read_bio_PUBKEY(in, NULL, NULL, NULL);
    if (v->pkey == NULL) {
        snprintf(err, errlen, "%s: no PEM public key (-----BEGIN PUBLIC KEY-----) in it", what);
        goto done;
    }
    switch (EVP_PKEY_get_base_id(v->pkey)) {
    case EVP_PKEY_RSA:
        if (EVP_PKEY_get_bits(v->pkey) < TOKEN_RSA_BITS_MIN) {
            snprintf(err, errlen, "%s: an RSA key of %d bits, at least %d are needed", what,
                     EVP_PKEY_get_bits(v->pkey), TOKEN_RSA_BITS_MIN);
            goto done;
        }
        v->kind = KEY_RSA;
        break;
    case EVP_PKEY_EC:
        if (EVP_PKEY_get_group_name(v->pkey, group, sizeof(group), NULL) != 1) {
            /* explicit parameters of no named curve, or OpenSSL out of memory */
            snprintf(err, errlen, "%s: an EC key without a named curve (or out of memory)", what);
            goto done;
        }
        if (OBJ_sn2nid(group) == NID_X9_62_prime256v1) {
            v->kind = KEY_EC_P256;
        } else if (OBJ_sn2nid(group) == NID_secp384r1) {
            v->kind = KEY_EC_P384;
        } else {
            snprintf(err, errlen, "%s: EC curve %s; P-256 (ES256) or P-384 (ES384) needed", what,
                     group);
            goto done;
        }
        break;
    default:
        snprintf(err, errlen, "%s: a %s key; RSA, EC P-256 or EC P-384 needed", what,
                 OBJ_nid2sn(EVP_PKEY_get_base_id(v->pkey)));
        goto done;
    }
    out = BIO_new(BIO_s_mem());
    if (out == NULL || PEM_write_bio_PUBKEY(out, v->pkey) != 1 ||
        (n = BIO_get_mem_data(out, &data)) <= 0 || (v->key = malloc((size_t)n)) == NULL) {
        snprintf(err, errlen, "%s: out of memory", what);
        goto done;
    }
    memcpy(v->key, data, (size_t)n);
    v->key_len = (size_t)n;
    rc = 0;
done:
    BIO_free(out);
    BIO_free(in);
    ERR_clear_error();
    return rc;
}

static int copy_opt(const char *s, char **out)
{
    *out = NULL;
    if (s == NULL || s[0] == '\0')
        return 0;
    *out = strdup(s);
    return *out == NULL ? -1 : 0;
}

struct token_verifier *token_verifier_new(const struct token_config *cfg, char *err, size_t errlen)
{
    struct token_verifier *v;
    int nkeys =
        (cfg->secret != NULL) + (cfg->public_key_pem != NULL) + (cfg->public_key_path != NULL);
    char *file = NULL;
    size_t file_len = 0;

    if (nkeys != 1) {
        snprintf(err, errlen, "JWT: give exactly one of a secret, a secret file or a public key");
        return NULL;
    }
    if (cfg->secret != NULL && cfg->secret_len < TOKEN_SECRET_MIN) {
        snprintf(err, errlen, "JWT secret: %zu bytes, at least %d are needed (RFC 7518 §3.2)",
                 cfg->secret_len, TOKEN_SECRET_MIN);
        return NULL;
    }
    if (cfg->max_groups < 1) {
        snprintf(err, errlen, "JWT: max groups must be at least 1 (the user's own group)");
        return NULL;
    }
    v = calloc(1, sizeof(*v));
    if (v == NULL)
        goto err_oom;
    v->leeway_ms = cfg->leeway_ms;
    v->allow_no_exp = cfg->allow_no_exp;
    v->max_groups = (size_t)cfg->max_groups;
    if (copy_opt(cfg->issuer, &v->issuer) < 0 || copy_opt(cfg->audience, &v->audience) < 0)
        goto err_oom;
    if (cfg->secret != NULL) {
        v->kind = KEY_SECRET;
        v->key = malloc(cfg->secret_len);
        if (v->key == NULL)
            goto err_oom;
        memcpy(v->key, cfg->secret, cfg->secret_len);
        v->key_len = cfg->secret_len;
    } else if (cfg->public_key_pem != NULL) {
        if (load_public_key(v, cfg->public_key_pem, cfg->public_key_pem_len, "JWT public key", err,
                            errlen) < 0)
            goto err_free;
    } else {
        if (read_file(cfg->public_key_path, &file, &file_len, err, errlen) < 0 ||
            load_public_key(v, file, file_len, cfg->public_key_path, err, errlen) < 0)
            goto err_free;
        free(file);
    }
    return v;
err_oom:
    snprintf(err, errlen, "JWT: out of memory");
err_free:
    free(file);
    token_verifier_free(v);
    return NULL;
}

void token_verifier_free(struct token_verifier *v)
{
    if (v == NULL)
        return;
    if (v->key != NULL) {
        OPENSSL_cleanse(v->key, v->key_len);
        free(v->key);
    }
    EVP_PKEY_free(v->pkey);
    free(v->issuer);
    free(v->audience);
    free(v);
}

void token_claims_cleanup(struct token_claims *c)
{
    for (size_t i = 0; i < c->ngroups; i++)
        free(c->groups[i]);
    free(c->groups);
    free(c->sub);
    free(c->jti);
    memset(c, 0, sizeof(*c));
}

/* --- decoding ------------------------------------------------------------------------------ */

const char *const token_error_keys[TOKEN_NERROR_KEYS] = {
    "missing", "malformed", "alg",      "bad_signature", "expired", "not_yet_valid",
    "no_exp",  "issuer",    "audience", "claims",        "oom",
};

/* Indexes into token_error_keys[]. */
enum refusal {
    R_MISSING,
    R_MALFORMED,
    R_ALG,
    R_BAD_SIGNATURE,
    R_EXPIRED,
    R_NOT_YET_VALID,
    R_NO_EXP,
    R_ISSUER,
    R_AUDIENCE,
    R_CLAIMS,
    R_OOM,
};

_Static_assert(R_OOM + 1 == TOKEN_NERROR_KEYS, "enum refusal follows token_error_keys[]");

static int refuse(struct token_error *err, enum refusal r, const char *why)
{
    err->key = token_error_keys[r];
    err->why = why;
    return -1;
}

/*
 * Strict base64url without padding (RFC 7515 §2): only the URL alphabet, no '=',
 * and the unused low bits of the last character zero, so each byte string has one
 * encoding and a signature cannot be varied without changing what it says.
 * out needs len * 3 / 4 bytes. Returns the decoded length, or -1.
 */
static ssize_t b64url_decode(const char *s, size_t len, uint8_t *out)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t n = 0;

    if (len % 4 == 1)
        return -1;
    for (size_t i = 0; i < len; i++) {
        int d = base64_value((unsigned char)s[i], true);
        if (d < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0)
        return -1; /* non-zero leftover bits: not the canonical encoding */
    return (ssize_t)n;
}

/* A JSON object from a base64url segment; NULL with err set. */
static json_t *decode_object(const char *s, size_t len, uint8_t *scratch, const char *bad,
                             struct token_error *err)
{
    json_error_t jerr;
    ssize_t n = b64url_decode(s, len, scratch);
    json_t *js;

    if (n < 0) {
        refuse(err, R_MALFORMED, "a segment is not base64url");
        return NULL;
    }
    /* Duplicate names are refused: two "sub"s would mean what the parser picks. */
    js = json_loadb((const char *)scratch, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (js == NULL) {
        if (json_error_code(&jerr) == json_error_out_of_memory)
            refuse(err, R_OOM, "out of memory");
        else
            refuse(err, R_MALFORMED, bad);
        return NULL;
    }
    if (!json_is_object(js)) {
        json_decref(js);
        refuse(err, R_MALFORMED, bad);
        return NULL;
    }
    return js;
}

/* The header (RFC 7515 §4.1): the algorithm must be one the key allows. */
static const struct alg *check_header(const struct token_verifier *v, const json_t *head,
                                      struct token_error *err)
{
    const json_t *alg = json_object_get(head, "alg");
    const json_t *typ = json_object_get(head, "typ");
    const char *name;

    if (!json_is_string(alg)) {
        refuse(err, R_ALG, "header has no alg");
        return NULL;
    }
    name = json_string_value(alg);
    if (strcmp(name, "none") == 0) {
        refuse(err, R_ALG, "alg none is never accepted");
        return NULL;
    }
    if (json_object_get(head, "crit") != NULL) {
        /* §4.1.11: extensions we do not implement must make the token invalid. */
        refuse(err, R_MALFORMED, "header has crit");
        return NULL;
    }
    if (typ != NULL && (!json_is_string(typ) || strcasecmp(json_string_value(typ), "JWT") != 0)) {
        refuse(err, R_MALFORMED, "header typ is not JWT");
        return NULL;
    }
    for (size_t i = 0; i < NALGS; i++) {
        if (strcmp(algs[i].name, name) != 0)
            continue;
        if (algs[i].kind != v->kind)
            break;
        return &algs[i];
    }
    refuse(err, R_ALG,
           v->kind == KEY_SECRET    ? "alg not allowed with a secret (HS256, HS384, HS512)"
           : v->kind == KEY_RSA     ? "alg not allowed with an RSA key (RS256, RS384, RS512, PS256)"
           : v->kind == KEY_EC_P256 ? "alg not allowed with a P-256 key (ES256)"
                                    : "alg not allowed with a P-384 key (ES384)");
    return NULL;
}

/* --- signatures ---------------------------------------------------------------------------- */

/*
 * HS*: HMAC over the signing input, compared in constant time over the raw MAC.
 * libjwt 1.10.2 is not asked: upstream it compares the base64 text with strcmp()
 * (CVE-2024-25189; Debian's 1.10.2-1+deb12u1 swaps in a loop over every byte), and
 * it ignores HMAC()'s result, so a failed HMAC leaves the MAC's length unset.
 */
static int verify_hmac(const struct token_verifier *v, const struct alg *a, const char *input,
                       size_t input_len, const uint8_t *sig, size_t sig_len,
                       struct token_error *err)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;

    if (HMAC(a->md(), v->key, (int)v->key_len, (const unsigned char *)input, input_len, mac,
             &mac_len) == NULL) {
        ERR_clear_error();
        return refuse(err, R_OOM, "HMAC failed");
    }
    /* The MAC's length is public (it follows from alg); its bytes are not. */
    if (sig_len != mac_len || CRYPTO_memcmp(mac, sig, mac_len) != 0) {
        OPENSSL_cleanse(mac, sizeof(mac));
        return refuse(err, R_BAD_SIGNATURE, "signature does not verify");
    }
    OPENSSL_cleanse(mac, sizeof(mac));
    return 0;
}

/* PS256 (RFC 7518 §3.5): RSASSA-PSS, MGF1 with the same hash, salt as long as the hash. */
static int verify_pss(const struct token_verifier *v, const struct alg *a, const char *input,
                      size_t input_len, const uint8_t *sig, size_t sig_len, struct token_error *err)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int ok;

    if (ctx == NULL)
        return refuse(err, R_OOM, "out of memory");
    ok = EVP_DigestVerifyInit(ctx, &pctx, a->md(), NULL, v->pkey) == 1 &&
         EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0 &&
         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) > 0 &&
         EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, a->md()) > 0;
    if (!ok) {
        EVP_MD_CTX_free(ctx);
        ERR_clear_error();
        return refuse(err, R_OOM, "RSA-PSS setup failed");
    }
    ok = EVP_DigestVerify(ctx, sig, sig_len, (const unsigned char *)input, input_len) == 1;
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    return ok ? 0 : refuse(err, R_BAD_SIGNATURE, "signature does not verify");
}

/*
 * RS* and ES*: libjwt's jwt_decode() with the configured key (never without one:
 * libjwt 1.10 accepts any signature when it is given no key). It parses the token
 * again itself, so afterwards its idea of the algorithm must be the one checked in
 * the header. Cost: libjwt 1.10 decodes the PEM key on every call, which OpenSSL 3.0
 * does slowly: 0.3-0.9 ms per RS256 token on a project machine, against 0.02-0.11 ms
 * for EVP_DigestVerify() with the key decoded once.
 */
static int verify_libjwt(const struct token_verifier *v, const struct alg *a, const char *token,
                         size_t len, struct token_error *err)
{
    char *copy = malloc(len + 1);
    jwt_t *jwt = NULL;
    int r;

    if (copy == NULL)
        return refuse(err, R_OOM, "out of memory");
    memcpy(copy, token, len);
    copy[len] = '\0';
    r = jwt_decode(&jwt, copy, v->key, (int)v->key_len);
    free(copy);
    ERR_clear_error();
    if (r != 0) {
        jwt_free(jwt);
        return refuse(err, r == ENOMEM ? R_OOM : R_BAD_SIGNATURE,
                      r == ENOMEM ? "out of memory" : "signature does not verify");
    }
    r = jwt_get_alg(jwt) == a->jwt ? 0 : refuse(err, R_ALG, "libjwt read another alg");
    jwt_free(jwt);
    return r;
}

/* --- claims -------------------------------------------------------------------------------- */

/* Group names and ids end up in logs, Redis keys and JSON events (as in the registry). */
static bool name_ok(const char *s, size_t len, size_t max)
{
    if (len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return utf8_is_valid((const uint8_t *)s, len);
}

/* A NumericDate (RFC 7519 §2) in ms; 0 absent, 1 read, -1 refused. */
static int get_date(const json_t *claims, const char *name, int64_t *ms)
{
    const json_t *js = json_object_get(claims, name);
    double d;

    if (js == NULL)
        return 0;
    if (json_is_integer(js)) {
        json_int_t n = json_integer_value(js);
        if (n < 0 || n > DATE_MAX)
            return -1;
        *ms = (int64_t)n * 1000;
        return 1;
    }
    if (!json_is_real(js))
        return -1;
    d = json_real_value(js);
    if (!(d >= 0 && d <= (double)DATE_MAX))
        return -1;
    *ms = (int64_t)(d * 1000.0);
    return 1;
}

static int check_times(const struct token_verifier *v, const json_t *claims, int64_t now_ms,
                       struct token_claims *out, struct token_error *err)
{
    int64_t exp_ms = 0, nbf_ms = 0, iat_ms = 0;
    int r;

    r = get_date(claims, "exp", &exp_ms);
    if (r < 0)
        return refuse(err, R_CLAIMS, "exp is not a NumericDate");
    if (r == 0 && !v->allow_no_exp)
        return refuse(err, R_NO_EXP, "token has no exp");
    /* RFC 7519 §4.1.4: the current time must be before exp (give or take the leeway). */
    if (r == 1 && now_ms >= exp_ms && now_ms - exp_ms >= v->leeway_ms)
        return refuse(err, R_EXPIRED, "token expired");
    out->exp_ms = r == 1 ? exp_ms : 0;
    r = get_date(claims, "nbf", &nbf_ms);
    if (r < 0)
        return refuse(err, R_CLAIMS, "nbf is not a NumericDate");
    if (r == 1 && nbf_ms > now_ms && nbf_ms - now_ms > v->leeway_ms)
        return refuse(err, R_NOT_YET_VALID, "token not valid yet (nbf)");
    r = get_date(claims, "iat", &iat_ms);
    if (r < 0)
        return refuse(err, R_CLAIMS, "iat is not a NumericDate");
    if (r == 1 && iat_ms > now_ms && iat_ms - now_ms > v->leeway_ms)
        return refuse(err, R_NOT_YET_VALID, "token issued in the future (iat)");
    return 0;
}

static int check_iss_aud(const struct token_verifier *v, const json_t *claims,
                         struct token_error *err)
{
    const json_t *iss = json_object_get(claims, "iss");
    const json_t *aud = json_object_get(claims, "aud");
    size_t i;
    const json_t *el;
    bool found = false;

    if (v->issuer != NULL && (!json_is_string(iss) || strcmp(json_string_value(iss), v->issuer)))
        return refuse(err, R_ISSUER, iss == NULL ? "token has no iss" : "iss is not ours");
    if (aud == NULL)
        return v->audience != NULL ? refuse(err, R_AUDIENCE, "token has no aud") : 0;
    if (v->audience == NULL)
        return refuse(err, R_AUDIENCE, "token has an aud and no audience is configured");
    if (json_is_string(aud))
        found = strcmp(json_string_value(aud), v->audience) == 0;
    else if (!json_is_array(aud))
        return refuse(err, R_CLAIMS, "aud is neither a string nor an array");
    json_array_foreach(aud, i, el)
    {
        if (!json_is_string(el))
            return refuse(err, R_CLAIMS, "aud holds a non-string");
        if (strcmp(json_string_value(el), v->audience) == 0)
            found = true;
    }
    return found ? 0 : refuse(err, R_AUDIENCE, "aud is not ours");
}

static int get_groups(const struct token_verifier *v, const json_t *claims,
                      struct token_claims *out, struct token_error *err)
{
    const json_t *groups = json_object_get(claims, "groups");
    size_t max = v->max_groups - 1; /* the user's own group is one of max_groups */
    size_t i, plen = strlen(TOKEN_USER_PREFIX);
    const json_t *el;

    if (groups == NULL)
        return 0;
    if (!json_is_array(groups))
        return refuse(err, R_CLAIMS, "groups is not an array");
    json_array_foreach(groups, i, el)
    {
        const char *s;
        size_t len;
        bool seen = false;

        if (!json_is_string(el))
            return refuse(err, R_CLAIMS, "groups holds a non-string");
        s = json_string_value(el);
        len = json_string_length(el);
        if (!name_ok(s, len, TOKEN_NAME_MAX))
            return refuse(err, R_CLAIMS, "bad group name (1-128 bytes of UTF-8 text)");
        if (len >= plen && memcmp(s, TOKEN_USER_PREFIX, plen) == 0)
            return refuse(err, R_CLAIMS, "the group prefix user: is reserved for sub");
        for (size_t j = 0; j < out->ngroups && !seen; j++)
            seen = strcmp(out->groups[j], s) == 0;
        if (seen)
            continue; /* the same group twice is one membership */
        if (out->ngroups >= max)
            return refuse(err, R_CLAIMS, "too many groups");
        if (out->groups == NULL && (out->groups = calloc(max, sizeof(*out->groups))) == NULL)
            return refuse(err, R_OOM, "out of memory");
        if ((out->groups[out->ngroups] = strdup(s)) == NULL)
            return refuse(err, R_OOM, "out of memory");
        out->ngroups++;
    }
    return 0;
}

static int get_claims(const struct token_verifier *v, const json_t *claims, int64_t now_ms,
                      struct token_claims *out, struct token_error *err)
{
    const json_t *sub = json_object_get(claims, "sub");
    const json_t *jti = json_object_get(claims, "jti");

    if (check_times(v, claims, now_ms, out, err) < 0 || check_iss_aud(v, claims, err) < 0)
        return -1;
    if (sub == NULL)
        return refuse(err, R_CLAIMS, "token has no sub");
    if (!json_is_string(sub) ||
        !name_ok(json_string_value(sub), json_string_length(sub), TOKEN_SUB_MAX))
        return refuse(err, R_CLAIMS, "sub is not 1-123 bytes of UTF-8 text");
    if (jti != NULL && (!json_is_string(jti) ||
                        !name_ok(json_string_value(jti), json_string_length(jti), TOKEN_NAME_MAX)))
        return refuse(err, R_CLAIMS, "jti is not 1-128 bytes of UTF-8 text");
    if (get_groups(v, claims, out, err) < 0)
        return -1;
    out->sub = strdup(json_string_value(sub));
    if (out->sub == NULL)
        return refuse(err, R_OOM, "out of memory");
    if (jti != NULL && (out->jti = strdup(json_string_value(jti))) == NULL)
        return refuse(err, R_OOM, "out of memory");
    return 0;
}

/* --- verify -------------------------------------------------------------------------------- */

int token_verify(const struct token_verifier *v, const char *token, size_t len, int64_t now_ms,
                 struct token_claims *out, struct token_error *err)
{
    const char *dot1, *dot2, *payload, *sig;
    size_t head_len, payload_len, sig_len;
    json_t *head = NULL, *claims = NULL;
    const struct alg *a;
    uint8_t *scratch = NULL, *raw_sig;
    ssize_t raw_len;
    int r, rc = -1;

    memset(out, 0, sizeof(*out));
    if (len == 0)
        return refuse(err, R_MISSING, "no token");
    if (len > TOKEN_MAX_LEN)
        return refuse(err, R_MALFORMED, "token longer than 8192 bytes");
    if (now_ms < 0)
        now_ms = 0;
    /* JWS compact form (RFC 7515 §7.1): header.payload.signature, nothing more. */
    dot1 = memchr(token, '.', len);
    dot2 = dot1 != NULL ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL)
        return refuse(err, R_MALFORMED, "not three dot-separated segments");
    head_len = (size_t)(dot1 - token);
    payload = dot1 + 1;
    payload_len = (size_t)(dot2 - payload);
    sig = dot2 + 1;
    sig_len = len - (size_t)(sig - token);
    if (head_len == 0 || payload_len == 0)
        return refuse(err, R_MALFORMED, "an empty header or payload");
    scratch = malloc(len); /* decoded segments are shorter than their text */
    if (scratch == NULL)
        return refuse(err, R_OOM, "out of memory");
    head = decode_object(token, head_len, scratch, "header is not a JSON object", err);
    if (head == NULL)
        goto done;
    a = check_header(v, head, err);
    if (a == NULL)
        goto done;
    claims = decode_object(payload, payload_len, scratch, "payload is not a JSON object", err);
    if (claims == NULL)
        goto done;
    raw_sig = scratch;
    raw_len = b64url_decode(sig, sig_len, raw_sig);
    if (raw_len <= 0) {
        refuse(err, raw_len < 0 ? R_MALFORMED : R_BAD_SIGNATURE,
               raw_len < 0 ? "signature is not base64url" : "empty signature");
        goto done;
    }
    /* The signing input is the header and payload as sent, dot included (§5.2). */
    if (a->kind == KEY_SECRET)
        r = verify_hmac(v, a, token, (size_t)(dot2 - token), raw_sig, (size_t)raw_len, err);
    else if (a->jwt == JWT_ALG_INVAL)
        r = verify_pss(v, a, token, (size_t)(dot2 - token), raw_sig, (size_t)raw_len, err);
    else
        r = verify_libjwt(v, a, token, len, err);
    if (r < 0)
        goto done;
    out->alg = a->name;
    if (get_claims(v, claims, now_ms, out, err) < 0)
        goto done;
    rc = 0;
done:
    if (rc < 0)
        token_claims_cleanup(out);
    json_decref(claims);
    json_decref(head);
    free(scratch);
    return rc;
}

/* --- extraction ---------------------------------------------------------------------------- */

/* "Bearer" 1*SP token68 (RFC 6750 §2.1); the scheme is case-insensitive (RFC 9110 §11.1). */
static bool find_bearer(const char *v, const char **tok, size_t *len)
{
    if (strncasecmp(v, "Bearer", 6) != 0 || (v[6] != ' ' && v[6] != '\0'))
        return false;
    v += 6;
    while (*v == ' ')
        v++;
    *tok = v;
    *len = strlen(v);
    return true;
}

/* cookie-string = cookie-pair *( ";" SP cookie-pair ) (RFC 6265 §4.2.1), read leniently
 * as browsers write it: pairs without '=' are skipped, spaces and tabs trimmed. */
static bool find_cookie(const char *s, const char *name, const char **val, size_t *vlen)
{
    size_t nlen = strlen(name);
    const char *p = s;

    while (*p != '\0') {
        const char *pair, *end, *eq, *ne, *vs, *ve;

        while (*p == ' ' || *p == '\t' || *p == ';')
            p++;
        pair = p;
        end = strchr(p, ';');
        if (end == NULL)
            end = p + strlen(p);
        p = end;
        eq = memchr(pair, '=', (size_t)(end - pair));
        if (eq == NULL)
            continue;
        ne = eq;
        while (ne > pair && (ne[-1] == ' ' || ne[-1] == '\t'))
            ne--;
        if ((size_t)(ne - pair) != nlen || memcmp(pair, name, nlen) != 0)
            continue;
        vs = eq + 1;
        ve = end;
        while (vs < ve && (*vs == ' ' || *vs == '\t'))
            vs++;
        while (ve > vs && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        if (ve - vs >= 2 && vs[0] == '"' && ve[-1] == '"') {
            vs++;
            ve--;
        }
        *val = vs;
        *vlen = (size_t)(ve - vs);
        return true;
    }
    return false;
}

enum token_source token_extract(const struct ws_hs *h, const char *cookie_name, const char **tok,
                                size_t *len)
{
    const char *v;

    *tok = NULL;
    *len = 0;
    for (size_t i = 0; i < h->nheaders; i++)
        if (strcasecmp(h->headers[i].name, "Authorization") == 0 &&
            find_bearer(h->headers[i].value, tok, len))
            return TOKEN_SRC_HEADER;
    if ((v = ws_hs_param(h, "token", 0)) != NULL) {
        *tok = v;
        *len = strlen(v);
        return TOKEN_SRC_QUERY;
    }
    if (cookie_name == NULL || cookie_name[0] == '\0')
        return TOKEN_SRC_NONE;
    for (size_t i = 0; i < h->nheaders; i++)
        if (strcasecmp(h->headers[i].name, "Cookie") == 0 &&
            find_cookie(h->headers[i].value, cookie_name, tok, len))
            return TOKEN_SRC_COOKIE;
    return TOKEN_SRC_NONE;
}

const char *token_source_name(enum token_source s)
{
    switch (s) {
    case TOKEN_SRC_HEADER:
        return "header";
    case TOKEN_SRC_QUERY:
        return "query";
    case TOKEN_SRC_COOKIE:
        return "cookie";
    default:
        return "none";
    }
}

size_t token_response_401(const char *body, char *out, size_t cap)
{
    int n = snprintf(out, cap,
                     "HTTP/1.1 401 Unauthorized\r\n"
                     "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %zu\r\n"
                     "Connection: close\r\n"
                     "\r\n"
                     "%s\n",
                     strlen(body) + 1, body);

    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}
