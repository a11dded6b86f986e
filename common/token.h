#ifndef WSGATE_COMMON_TOKEN_H
#define WSGATE_COMMON_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/ws_hs.h"

/*
 * Connect authentication with JSON Web Tokens (RFC 7519, JWS compact form, RFC 7515).
 *
 * The key decides the algorithms, never the token: a secret allows HS256, HS384 and
 * HS512; an RSA public key (2048 bits or more) RS256, RS384, RS512 and PS256; an EC
 * P-256 key ES256; an EC P-384 key ES384. "none" and any other "alg" are refused
 * before a signature is looked at. RS* and ES* signatures are checked by libjwt's
 * jwt_decode() with the key; HS* here with OpenSSL's HMAC() and CRYPTO_memcmp()
 * (constant time whatever libjwt build is installed); PS256, which libjwt 1.10 does
 * not know, with OpenSSL's EVP_DigestVerify() (RFC 7518 §3.5: MGF1 with SHA-256, a
 * 32-byte salt). The header and claims are read here with jansson.
 *
 * A token is accepted when, in this order: it is at most TOKEN_MAX_LEN bytes of
 * three base64url segments; its header is a JSON object with an allowed "alg", no
 * "crit", and "typ" absent or "JWT"; its payload is a JSON object (duplicate names
 * refused); the signature verifies; "exp" is present (unless allow_no_exp) and now
 * is before exp + leeway; "nbf" and "iat" are not after now + leeway; "iss" equals
 * the configured issuer when one is set; "aud" (a string or an array of strings)
 * holds the configured audience when one is set, and is absent when none is
 * (RFC 7519 §4.1.3); "sub" is a string that makes a valid group name after "user:";
 * "groups", when present, is an array of group names; "jti", when present, a string.
 */

#define TOKEN_MAX_LEN        8192 /* longer tokens are refused before decoding */
#define TOKEN_NAME_MAX       128  /* bytes in a group name, "user:<sub>" included */
#define TOKEN_USER_PREFIX    "user:"
#define TOKEN_SUB_MAX        (TOKEN_NAME_MAX - 5) /* so "user:<sub>" fits */
#define TOKEN_SECRET_MIN     32              /* RFC 7518 §3.2: a key as long as the HS256 output */
#define TOKEN_RSA_BITS_MIN   2048            /* RFC 7518 §3.3 */
#define TOKEN_EXPIRED_REASON "token expired" /* close reason when exp passes */

/* How a verifier is made. Every pointer is borrowed for the call only. */
struct token_config {
    const uint8_t *secret;      /* HS256/384/512 key, or NULL */
    size_t secret_len;          /* at least TOKEN_SECRET_MIN */
    const char *public_key_pem; /* a PEM public key in memory, or NULL ... */
    size_t public_key_pem_len;
    const char *public_key_path; /* ... or in this file, or NULL */
    const char *issuer;          /* "iss" must equal this; NULL or "": not checked */
    const char *audience;        /* "aud" must hold this; NULL or "": "aud" refused */
    uint32_t leeway_ms;          /* clock skew allowed for exp, nbf and iat */
    bool allow_no_exp;           /* a token without "exp" is accepted */
    int max_groups;              /* groups a connection joins, "user:<sub>" included */
};

/* Opaque: made once from the flags, read-only afterwards (may be shared across fork). */
struct token_verifier;

/*
 * Makes a verifier from exactly one of secret, public_key_pem and public_key_path.
 * Returns NULL with a one-line message in err on a bad setting (no key or more than
 * one, a short secret, an unreadable file, not a PEM public key, an RSA key under
 * 2048 bits, an EC curve other than P-256/P-384, another key type) or when memory
 * runs out. The verifier keeps its own copies; free it with token_verifier_free().
 */
struct token_verifier *token_verifier_new(const struct token_config *cfg, char *err, size_t errlen);

/* Frees v and wipes its secret; token_verifier_free(NULL) does nothing. */
void token_verifier_free(struct token_verifier *v);

/* What an accepted token says; filled by token_verify(), freed by token_claims_cleanup(). */
struct token_claims {
    char *sub;       /* owned: the user; the connection joins "user:<sub>" */
    char **groups;   /* owned array of owned names from "groups", repeats dropped; NULL if none */
    size_t ngroups;  /* at most max_groups - 1 */
    char *jti;       /* owned: "jti", or NULL */
    int64_t exp_ms;  /* "exp" in ms since the epoch; 0 when the token has none */
    const char *alg; /* static: the algorithm that verified it, e.g. "RS256" */
};

/* Frees what c owns and zeroes it; safe on a zeroed or already cleaned struct. */
void token_claims_cleanup(struct token_claims *c);

/*
 * Why a token was refused. key is one of these static strings, for counters:
 *   "missing"        no token (len 0)
 *   "malformed"      too long, not three base64url segments, header or payload not a
 *                    JSON object, "crit" present, "typ" other than JWT
 *   "alg"            "alg" missing, "none", or not allowed for the configured key
 *   "bad_signature"  the signature does not verify with the key
 *   "expired"        now >= exp + leeway
 *   "not_yet_valid"  nbf or iat later than now + leeway
 *   "no_exp"         no "exp" and allow_no_exp is off
 *   "issuer"         "iss" missing or different
 *   "audience"       "aud" missing or without ours, or present when none is set
 *   "claims"         a claim of the wrong type or range: sub, groups, jti, exp, nbf, iat
 *   "oom"            memory ran out; a failed allocation inside jansson may read as
 *                    "malformed" (jansson 2.14 reports some as syntax errors) and one
 *                    inside libjwt (RS*, ES*) as "bad_signature": the token is refused
 * why is a short static text for the log; neither is ever NULL after a refusal.
 */
struct token_error {
    const char *key; /* one of token_error_keys[] (the same pointer) */
    const char *why;
};

#define TOKEN_NERROR_KEYS 11

/* Every refusal key above, in that order: counters can be made (at zero) up front. */
extern const char *const token_error_keys[TOKEN_NERROR_KEYS];

/*
 * Checks token[0..len) (need not be NUL-terminated) at wall-clock time now_ms
 * (ms since the epoch). Returns 0 and fills out (the caller then owns it and calls
 * token_claims_cleanup()), or -1 with err set and out zeroed.
 */
int token_verify(const struct token_verifier *v, const char *token, size_t len, int64_t now_ms,
                 struct token_claims *out, struct token_error *err);

/* Where token_extract() found the token. */
enum token_source {
    TOKEN_SRC_NONE,   /* nowhere */
    TOKEN_SRC_HEADER, /* Authorization: Bearer <token> */
    TOKEN_SRC_QUERY,  /* ?token=<token> (percent-decoded) */
    TOKEN_SRC_COOKIE, /* the cookie named cookie_name */
};

/*
 * Finds the token in a parsed upgrade request, first of: an Authorization header
 * with the Bearer scheme (case-insensitive, one or more spaces; another scheme is
 * passed over), the first ?token= parameter, the first cookie named exactly
 * cookie_name in the Cookie headers (RFC 6265 §4.2.1 "a=b; c=d", a quoted value
 * loses its quotes; skipped when cookie_name is NULL or ""). On a find sets *tok and
 * *len to bytes borrowed from h (valid until ws_hs_cleanup(h); *len may be 0, which
 * token_verify() refuses as "missing") and returns the source; else returns
 * TOKEN_SRC_NONE with *tok NULL and *len 0.
 */
enum token_source token_extract(const struct ws_hs *h, const char *cookie_name, const char **tok,
                                size_t *len);

/* "header", "query", "cookie" or "none", for logs and counters. */
const char *token_source_name(enum token_source s);

/*
 * Writes the refusal of an upgrade whose token was refused (RFC 6750 §3): status 401,
 * "WWW-Authenticate: Bearer error="invalid_token"", a text/plain body of body + "\n"
 * and "Connection: close". Returns its length, or 0 if it does not fit in cap.
 */
size_t token_response_401(const char *body, char *out, size_t cap);

#endif /* WSGATE_COMMON_TOKEN_H */
