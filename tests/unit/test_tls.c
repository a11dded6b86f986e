/* common/tls: contexts from files (good pairs, every kind of bad file), and real
 * handshakes against them in memory, through BIO pairs: the versions, ciphers and
 * ALPN a context allows, and tickets that resume across contexts that share a key
 * (another worker, or after a reload). Every allocation failing once, too. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "common/tls.h"
#include "tests/unit/check.h"

int check_make_cert(const char *cn, long serial, int days, const char *cert_path,
                    const char *key_path)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *name;
    FILE *f;
    int ok = 0;

    if (k == NULL || x == NULL)
        goto out;
    name = X509_get_subject_name(x);
    if (X509_set_version(x, 2) != 1 || ASN1_INTEGER_set(X509_get_serialNumber(x), serial) != 1 ||
        X509_gmtime_adj(X509_getm_notBefore(x), days < 0 ? 2L * days * 86400 : -60) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(x), (long)days * 86400) == NULL ||
        X509_set_pubkey(x, k) != 1 ||
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
                                   0) != 1 ||
        X509_set_issuer_name(x, name) != 1 || X509_sign(x, k, EVP_sha256()) == 0)
        goto out;
    f = fopen(cert_path, "w");
    if (f == NULL)
        goto out;
    ok = PEM_write_X509(f, x) == 1;
    fclose(f);
    if (!ok || key_path == NULL)
        goto out;
    f = fopen(key_path, "w");
    if (f == NULL) {
        ok = 0;
        goto out;
    }
    ok = PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) == 1;
    fclose(f);
out:
    X509_free(x);
    EVP_PKEY_free(k);
    ERR_clear_error();
    return ok ? 0 : -1;
}

/* A certificate and key in fresh temp files (paths in cert and key, 32 bytes each). */
static void make_pair(const char *cn, long serial, int days, char *cert, char *key)
{
    int fd;

    strcpy(cert, "/tmp/wsgate-crt-XXXXXX");
    strcpy(key, "/tmp/wsgate-key-XXXXXX");
    fd = mkstemp(cert);
    if (fd < 0)
        exit(1);
    close(fd);
    fd = mkstemp(key);
    if (fd < 0)
        exit(1);
    close(fd);
    if (check_make_cert(cn, serial, days, cert, key) < 0)
        exit(1);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0)
        exit(1);
}

static const uint8_t key_a[TLS_TICKET_KEY_LEN] = {1, 2, 3};
static const uint8_t key_b[TLS_TICKET_KEY_LEN] = {4, 5, 6};

static void test_tls_ctx_loads_a_pair_and_describes_it(void)
{
    char cert[32], key[32], err[512] = "", desc[512];
    SSL_CTX *ctx;

    make_pair("wss.example.test", 0x1a2b, 30, cert, key);
    ctx = tls_ctx_new(cert, key, TLS_MIN_1_2, key_a, err, sizeof(err));
    CHECK(ctx != NULL && err[0] == '\0');
    if (ctx != NULL) {
        tls_ctx_describe(ctx, desc, sizeof(desc));
        CHECK(strstr(desc, "subject=\"CN=wss.example.test\"") != NULL);
        CHECK(strstr(desc, "serial=0x1A2B") != NULL && strstr(desc, "not_after=20") != NULL);
        CHECK(!tls_ctx_expired(ctx));
        CHECK(SSL_CTX_get_min_proto_version(ctx) == TLS1_2_VERSION);
        CHECK(SSL_CTX_get_mode(ctx) & SSL_MODE_RELEASE_BUFFERS);
        CHECK(SSL_CTX_get_session_cache_mode(ctx) == SSL_SESS_CACHE_OFF);
        CHECK(ERR_peek_error() == 0); /* the queue is left clean for the worker's I/O */
    }
    SSL_CTX_free(ctx);
    unlink(cert);
    unlink(key);

    make_pair("old.example.test", 7, -1, cert, key);
    ctx = tls_ctx_new(cert, key, TLS_MIN_1_3, NULL, err, sizeof(err));
    CHECK(ctx != NULL && tls_ctx_expired(ctx)); /* loads: the log warns */
    SSL_CTX_free(ctx);
    unlink(cert);
    unlink(key);
}

static void test_tls_ctx_refuses_bad_files(void)
{
    char cert[32], key[32], cert2[32], key2[32], enc[] = "/tmp/wsgate-enc-XXXXXX";
    char err[512];
    int fd = mkstemp(enc);
    EVP_PKEY *k = EVP_EC_gen("P-256");
    FILE *f;
    struct {
        const char *cert;
        const char *key;
        const char *needle;
    } t[] = {
        {cert, key2, "does not match"},
        {cert, "/nonexistent/key.pem", "No such file"},
        {"/nonexistent/cert.pem", key, "No such file"},
        {key, key, "not a PEM certificate"},
        {cert, cert, "not an unencrypted PEM private key"},
        {cert, enc, "not an unencrypted PEM private key"}, /* no prompt on the terminal */
    };

    make_pair("a", 1, 30, cert, key);
    make_pair("b", 2, 30, cert2, key2);
    f = fdopen(fd, "w");
    if (f == NULL || k == NULL ||
        PEM_write_PrivateKey(f, k, EVP_aes_128_cbc(), NULL, 0, NULL, (void *)"secret") != 1)
        exit(1);
    fclose(f);
    EVP_PKEY_free(k);
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        SSL_CTX *ctx;
        err[0] = '\0';
        ctx = tls_ctx_new(t[i].cert, t[i].key, TLS_MIN_1_2, NULL, err, sizeof(err));
        CHECK(ctx == NULL && strstr(err, t[i].needle) != NULL);
        if (ctx != NULL || strstr(err, t[i].needle) == NULL)
            fprintf(stderr, "  case %zu: %s\n", i, err);
        CHECK(ERR_peek_error() == 0);
        SSL_CTX_free(ctx);
    }
    write_file(cert2, "not PEM at all\n");
    CHECK(tls_ctx_new(cert2, key, TLS_MIN_1_2, NULL, err, sizeof(err)) == NULL &&
          strstr(err, cert2) != NULL);
    unlink(cert);
    unlink(key);
    unlink(cert2);
    unlink(key2);
    unlink(enc);
}

/* A client and a server joined by a BIO pair, stepped until both are done or one
 * fails. Returns 1 when the handshake completed on both sides, 0 when it failed. */
static int handshake(SSL *cli, SSL *srv)
{
    for (int i = 0; i < 100; i++) {
        int c = SSL_do_handshake(cli), s = SSL_do_handshake(srv);
        int ce = c == 1 ? 0 : SSL_get_error(cli, c), se = s == 1 ? 0 : SSL_get_error(srv, s);

        if (c == 1 && s == 1)
            return 1;
        if ((ce != 0 && ce != SSL_ERROR_WANT_READ && ce != SSL_ERROR_WANT_WRITE) ||
            (se != 0 && se != SSL_ERROR_WANT_READ && se != SSL_ERROR_WANT_WRITE))
            return 0;
    }
    return 0;
}

struct pair {
    SSL *cli;
    SSL *srv;
    SSL_CTX *cctx;
};

/* A client limited to [lo, hi] (and ciphers, when given), against srv_ctx. */
static struct pair connect_pair(SSL_CTX *srv_ctx, int lo, int hi, const char *ciphers, bool alpn,
                                SSL_SESSION *resume)
{
    struct pair p;
    BIO *a, *b;

    p.cctx = SSL_CTX_new(TLS_client_method());
    if (p.cctx == NULL || BIO_new_bio_pair(&a, 0, &b, 0) != 1)
        exit(1);
    SSL_CTX_set_min_proto_version(p.cctx, lo);
    SSL_CTX_set_max_proto_version(p.cctx, hi);
    if (ciphers != NULL)
        SSL_CTX_set_cipher_list(p.cctx, ciphers);
    if (alpn)
        SSL_CTX_set_alpn_protos(p.cctx, (const unsigned char *)"\x02h2\x08http/1.1", 12);
    p.cli = SSL_new(p.cctx);
    p.srv = SSL_new(srv_ctx);
    if (p.cli == NULL || p.srv == NULL)
        exit(1);
    if (resume != NULL)
        SSL_set_session(p.cli, resume);
    SSL_set_bio(p.cli, a, a);
    SSL_set_bio(p.srv, b, b);
    SSL_set_connect_state(p.cli);
    SSL_set_accept_state(p.srv);
    return p;
}

static void pair_free(struct pair *p)
{
    /* Closed as if close_notify went both ways: OpenSSL spoils the session of a
     * client freed without it. */
    SSL_set_shutdown(p->cli, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(p->cli);
    SSL_free(p->srv);
    SSL_CTX_free(p->cctx);
    ERR_clear_error();
}

static void test_tls_versions_ciphers_and_alpn(void)
{
    char cert[32], key[32], err[512];
    SSL_CTX *ctx, *ctx13;
    static const struct {
        int lo, hi;
        const char *ciphers;
        int min; /* the server's floor */
        int ok;
    } t[] = {
        {TLS1_3_VERSION, TLS1_3_VERSION, NULL, TLS1_2_VERSION, 1},
        {TLS1_2_VERSION, TLS1_2_VERSION, NULL, TLS1_2_VERSION, 1},
        {TLS1_2_VERSION, TLS1_2_VERSION, "ECDHE-ECDSA-CHACHA20-POLY1305", TLS1_2_VERSION, 1},
        {TLS1_2_VERSION, TLS1_2_VERSION, "ECDHE-ECDSA-AES128-SHA", TLS1_2_VERSION, 0}, /* CBC */
        {TLS1_2_VERSION, TLS1_2_VERSION, "AES128-GCM-SHA256", TLS1_2_VERSION, 0}, /* no ECDHE */
        {TLS1_1_VERSION, TLS1_1_VERSION, "DEFAULT@SECLEVEL=0", TLS1_2_VERSION, 0},
        {TLS1_VERSION, TLS1_VERSION, "DEFAULT@SECLEVEL=0", TLS1_2_VERSION, 0},
        {TLS1_2_VERSION, TLS1_2_VERSION, NULL, TLS1_3_VERSION, 0},
        {TLS1_2_VERSION, TLS1_3_VERSION, NULL, TLS1_3_VERSION, 1},
    };

    make_pair("localhost", 3, 30, cert, key);
    ctx = tls_ctx_new(cert, key, TLS_MIN_1_2, key_a, err, sizeof(err));
    ctx13 = tls_ctx_new(cert, key, TLS_MIN_1_3, key_a, err, sizeof(err));
    CHECK(ctx != NULL && ctx13 != NULL);
    for (size_t i = 0; ctx != NULL && ctx13 != NULL && i < sizeof(t) / sizeof(t[0]); i++) {
        struct pair p = connect_pair(t[i].min == TLS1_3_VERSION ? ctx13 : ctx, t[i].lo, t[i].hi,
                                     t[i].ciphers, true, NULL);
        int ok = handshake(p.cli, p.srv);
        CHECK(ok == t[i].ok);
        if (ok != t[i].ok)
            fprintf(stderr, "  case %zu: handshake %d\n", i, ok);
        if (ok) {
            const unsigned char *alpn;
            unsigned alen;
            SSL_get0_alpn_selected(p.srv, &alpn, &alen);
            CHECK(alen == 8 && memcmp(alpn, "http/1.1", 8) == 0); /* not h2 */
        }
        pair_free(&p);
    }
    SSL_CTX_free(ctx);
    SSL_CTX_free(ctx13);
    unlink(cert);
    unlink(key);
}

/* Data both ways, so the TLS 1.3 ticket arrives; returns the client's session. */
static SSL_SESSION *exchange(struct pair *p)
{
    char buf[16];

    if (SSL_write(p->srv, "hi", 2) != 2 || SSL_read(p->cli, buf, sizeof(buf)) != 2 ||
        SSL_write(p->cli, "ok", 2) != 2 || SSL_read(p->srv, buf, sizeof(buf)) != 2)
        return NULL;
    return SSL_get1_session(p->cli);
}

static void test_tls_tickets_resume_across_contexts_with_one_key(void)
{
    char cert[32], key[32], err[512];
    SSL_CTX *w1, *w2, *other, *none;
    static const int versions[] = {TLS1_2_VERSION, TLS1_3_VERSION};

    make_pair("localhost", 4, 30, cert, key);
    w1 = tls_ctx_new(cert, key, TLS_MIN_1_2, key_a, err, sizeof(err));
    w2 = tls_ctx_new(cert, key, TLS_MIN_1_2, key_a, err, sizeof(err)); /* another worker */
    other = tls_ctx_new(cert, key, TLS_MIN_1_2, key_b, err, sizeof(err));
    none = tls_ctx_new(cert, key, TLS_MIN_1_2, NULL, err, sizeof(err));
    CHECK(w1 != NULL && w2 != NULL && other != NULL && none != NULL);
    for (size_t v = 0; w1 && w2 && other && none && v < 2; v++) {
        struct pair p = connect_pair(w1, versions[v], versions[v], NULL, false, NULL);
        SSL_SESSION *s = NULL;

        CHECK(handshake(p.cli, p.srv) == 1 && (s = exchange(&p)) != NULL);
        CHECK(s != NULL && SSL_SESSION_is_resumable(s));
        pair_free(&p);
        if (s == NULL)
            continue;
        p = connect_pair(w2, versions[v], versions[v], NULL, false, s);
        CHECK(handshake(p.cli, p.srv) == 1 && SSL_session_reused(p.srv) == 1);
        pair_free(&p);
        p = connect_pair(other, versions[v], versions[v], NULL, false, s);
        CHECK(handshake(p.cli, p.srv) == 1 && SSL_session_reused(p.srv) == 0); /* full */
        pair_free(&p);
        SSL_SESSION_free(s);
        p = connect_pair(none, versions[v], versions[v], NULL, false, NULL);
        CHECK(handshake(p.cli, p.srv) == 1 && (s = exchange(&p)) != NULL);
        CHECK(s == NULL || !SSL_SESSION_is_resumable(s)); /* no ticket without a key */
        SSL_SESSION_free(s);
        pair_free(&p);
    }
    SSL_CTX_free(w1);
    SSL_CTX_free(w2);
    SSL_CTX_free(other);
    SSL_CTX_free(none);
    unlink(cert);
    unlink(key);
}

/* Heap bytes one server connection holds once idle: handshake done, an upgrade request
 * read (to WANT_READ, as the worker does) and a 101 written, over a socketpair as in the
 * worker; the client's share is freed before counting. */
static size_t idle_server_bytes(SSL_CTX *ctx)
{
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL *cli, *srv;
    char buf[256];
    size_t base, held;
    int sv[2];

    if (cctx == NULL || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0)
        exit(1);
    base = chaos_crypto_live();
    cli = SSL_new(cctx);
    if (cli == NULL)
        exit(1);
    SSL_set_fd(cli, sv[1]);
    SSL_set_connect_state(cli);
    srv = SSL_new(ctx);
    if (srv == NULL)
        exit(1);
    SSL_set_fd(srv, sv[0]);
    SSL_set_accept_state(srv);
    CHECK(handshake(cli, srv) == 1);
    CHECK(SSL_write(cli, "GET / HTTP/1.1\r\n\r\n", 18) == 18);
    CHECK(SSL_read(srv, buf, sizeof(buf)) == 18);
    CHECK(SSL_read(srv, buf, sizeof(buf)) < 0 && SSL_get_error(srv, -1) == SSL_ERROR_WANT_READ);
    CHECK(SSL_write(srv, "HTTP/1.1 101 \r\n\r\n", 18) == 18);
    CHECK(SSL_read(cli, buf, sizeof(buf)) > 0);
    SSL_set_shutdown(cli, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(cli);
    held = chaos_crypto_live() - base;
    SSL_CTX_free(cctx);
    SSL_free(srv);
    close(sv[0]);
    close(sv[1]);
    ERR_clear_error();
    return held;
}

/* SSL_MODE_RELEASE_BUFFERS in effect: an idle connection holds no record buffers (16 KB
 * and more each way); what it holds is OpenSSL's state (the SSL itself, 7.6 KB in 3.0,
 * the session, the record ciphers). */
static void test_tls_idle_connection_holds_no_record_buffers(void)
{
    char cert[32], key[32], err[512];
    SSL_CTX *ctx;
    size_t released, kept;

    make_pair("localhost", 6, 30, cert, key);
    ctx = tls_ctx_new(cert, key, TLS_MIN_1_2, key_a, err, sizeof(err));
    CHECK(ctx != NULL);
    if (ctx == NULL)
        return;
    (void)idle_server_bytes(ctx); /* OpenSSL's lazy, process-wide setup */
    released = idle_server_bytes(ctx);
    SSL_CTX_clear_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    kept = idle_server_bytes(ctx);
    fprintf(stderr, "  tls: an idle server connection holds %zu bytes (%zu with its buffers)\n",
            released, kept);
    CHECK(released < 20 * 1024);
    CHECK(kept > released + 16 * 1024);
    SSL_CTX_free(ctx);
    unlink(cert);
    unlink(key);
}

static void test_tls_ctx_every_allocation_failing(void)
{
    char cert[32], key[32], err[512];
    SSL_CTX *ctx = NULL;
    unsigned long n;

    make_pair("localhost", 5, 30, cert, key);
    ctx = tls_ctx_new(cert, key, TLS_MIN_1_2, key_a, err, sizeof(err)); /* OpenSSL's lazy init */
    SSL_CTX_free(ctx);
    /* Each failure either makes it fail with a message or is one OpenSSL gets over;
     * nothing leaks either way (ASan). Done when the n-th allocation never came. */
    for (n = 1; n < 100000; n++) {
        unsigned long made;
        chaos_crypto(1);
        chaos_fail_at(n);
        err[0] = '\0';
        ctx = tls_ctx_new(cert, key, TLS_MIN_1_2, key_a, err, sizeof(err));
        made = chaos_allocations();
        chaos_fail_at(0);
        chaos_crypto(0);
        CHECK(ctx != NULL || err[0] != '\0');
        SSL_CTX_free(ctx);
        ERR_clear_error();
        if (made < n)
            break;
    }
    CHECK(n > 10 && n < 100000);
    unlink(cert);
    unlink(key);
}

void suite_tls(void)
{
    test_tls_ctx_loads_a_pair_and_describes_it();
    test_tls_ctx_refuses_bad_files();
    test_tls_versions_ciphers_and_alpn();
    test_tls_tickets_resume_across_contexts_with_one_key();
    test_tls_idle_connection_holds_no_record_buffers();
    test_tls_ctx_every_allocation_failing();
}
