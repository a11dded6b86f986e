#include "common/tls.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/x509.h>

/* TLS 1.2: forward secrecy and AEAD only (what Mozilla's "intermediate" profile keeps,
 * without finite-field DHE). TLS 1.3 suites are OpenSSL's defaults. */
#define TLS12_CIPHERS                                            \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* Tickets sent after a TLS 1.3 handshake: one is what a browser keeps. */
#define TLS_TICKETS 1

static const unsigned char alpn_http11[] = "\x08http/1.1";

const char *tls_error_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;

    return r != NULL ? r : "unknown";
}

/* Fails at once instead of reading a passphrase from the terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *arg)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)arg;
    return -1;
}

/* ALPN (RFC 7301): http/1.1, the protocol a WebSocket upgrade runs over (RFC 6455
 * §4.1). A client that offers only others gets no ALPN answer, and the upgrade
 * decides. */
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    unsigned char *sel;

    (void)ssl;
    (void)arg;
    if (SSL_select_next_proto(&sel, outlen, alpn_http11, sizeof(alpn_http11) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

SSL_CTX *tls_ctx_new(const char *cert, const char *key, int min_version, const uint8_t *ticket_key,
                     char *err, size_t errlen)
{
    SSL_CTX *ctx;
    uint8_t tk[TLS_TICKET_KEY_LEN];

    ERR_clear_error();
    if (access(cert, R_OK) != 0) {
        int e = errno;
        snprintf(err, errlen, "--tls-cert %s: %s", cert, strerror(e));
        return NULL;
    }
    if (access(key, R_OK) != 0) {
        int e = errno;
        snprintf(err, errlen, "--tls-key %s: %s", key, strerror(e));
        return NULL;
    }
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "cannot make a TLS context: %s", tls_error_reason());
        goto err;
    }
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    if (SSL_CTX_set_min_proto_version(ctx, min_version) != 1 ||
        SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1) {
        snprintf(err, errlen, "cannot set TLS versions and ciphers: %s", tls_error_reason());
        goto err_free_ctx;
    }
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (ticket_key != NULL) {
        memcpy(tk, ticket_key, sizeof(tk)); /* OpenSSL takes a non-const pointer */
        if (SSL_CTX_set_tlsext_ticket_keys(ctx, tk, sizeof(tk)) != 1 ||
            SSL_CTX_set_num_tickets(ctx, TLS_TICKETS) != 1) {
            OPENSSL_cleanse(tk, sizeof(tk));
            snprintf(err, errlen, "cannot set the session ticket key: %s", tls_error_reason());
            goto err_free_ctx;
        }
        OPENSSL_cleanse(tk, sizeof(tk));
    } else {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, 0);
    }
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        snprintf(err, errlen, "--tls-cert %s: not a PEM certificate chain (%s)", cert,
                 tls_error_reason());
        goto err_free_ctx;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH)
            snprintf(err, errlen, "--tls-key %s does not match --tls-cert %s (%s)", key, cert,
                     tls_error_reason());
        else
            snprintf(err, errlen,
                     "--tls-key %s: not an unencrypted PEM private key for --tls-cert %s (%s)", key,
                     cert, tls_error_reason());
        goto err_free_ctx;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "--tls-key %s does not match --tls-cert %s (%s)", key, cert,
                 tls_error_reason());
        goto err_free_ctx;
    }
    ERR_clear_error();
    return ctx;
err_free_ctx:
    SSL_CTX_free(ctx);
err:
    ERR_clear_error();
    return NULL;
}

bool tls_ctx_expired(SSL_CTX *ctx)
{
    X509 *x = SSL_CTX_get0_certificate(ctx);

    return x != NULL && X509_cmp_current_time(X509_get0_notAfter(x)) < 0;
}

const char *tls_ctx_describe(SSL_CTX *ctx, char *buf, size_t cap)
{
    X509 *x = SSL_CTX_get0_certificate(ctx);
    char subject[256] = "?", serial[80] = "?", after[32] = "?";
    BIGNUM *bn = NULL;
    BIO *mem;
    struct tm tm;

    if (x == NULL) {
        snprintf(buf, cap, "no certificate");
        return buf;
    }
    mem = BIO_new(BIO_s_mem());
    if (mem != NULL) {
        if (X509_NAME_print_ex(mem, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) >= 0) {
            int n = BIO_read(mem, subject, (int)sizeof(subject) - 1);
            subject[n > 0 ? n : 0] = '\0';
        }
        BIO_free(mem);
    }
    bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    if (bn != NULL) {
        char *hex = BN_bn2hex(bn);
        if (hex != NULL)
            snprintf(serial, sizeof(serial), "0x%s", hex);
        OPENSSL_free(hex);
        BN_free(bn);
    }
    if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
        strftime(after, sizeof(after), "%Y-%m-%dT%H:%M:%SZ", &tm);
    ERR_clear_error();
    snprintf(buf, cap, "subject=\"%s\" serial=%s not_after=%s", subject, serial, after);
    return buf;
}
