#ifndef WSGATE_COMMON_TLS_H
#define WSGATE_COMMON_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

/*
 * The server side of TLS for the client listener (wss://): one SSL_CTX made from a
 * certificate chain and its key. The master makes one and frees it before forking,
 * to check the files; each worker makes its own, and a new one on SIGHUP. Pure:
 * OpenSSL only, no event loop; I/O on connections is worker/io.c's.
 *
 * What every context gets:
 * - TLS 1.2 and 1.3 (or 1.3 only); SSLv3, TLS 1.0 and 1.1 are refused.
 * - TLS 1.3: OpenSSL's default suites. TLS 1.2: ECDHE with AEAD only (AES-GCM,
 *   ChaCha20-Poly1305), the server's order.
 * - ALPN: http/1.1 when the client offers it (no ALPN answer otherwise).
 * - Resumption by stateless tickets only, one per handshake, under a key the caller
 *   gives: the gateway draws it once before forking, so a ticket issued by one
 *   worker resumes on any other and after a reload. No server-side session cache
 *   (each worker would hold its own, missed whenever the kernel hands a client to
 *   another worker). The key lives in memory for the gateway's life, as nginx's
 *   does when no ssl_session_ticket_key is given.
 * - No renegotiation; EOF without close_notify reads as EOF (a WebSocket closes in
 *   frames, so a cut stream is already detected there).
 * - SSL_MODE_RELEASE_BUFFERS: an idle connection holds no record buffers;
 *   SSL_MODE_ENABLE_PARTIAL_WRITE and SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER: a write
 *   returns after each record, and a retried write may come from another address
 *   (with the same bytes); read-ahead on, so a record costs one read() and not two.
 * - An encrypted key is refused at once rather than asking for a passphrase.
 */

#define TLS_TICKET_KEY_LEN 80 /* key name 16, HMAC key 32, AES key 32 */

/* Protocol floor, for tls_ctx_new(). */
#define TLS_MIN_1_2 TLS1_2_VERSION
#define TLS_MIN_1_3 TLS1_3_VERSION

/*
 * Makes a context from the PEM files cert (the server certificate first, then its
 * chain) and key, which must match. min_version is TLS_MIN_1_2 or TLS_MIN_1_3.
 * ticket_key (TLS_TICKET_KEY_LEN bytes, copied) encrypts session tickets; NULL
 * turns tickets off. Returns the context (one reference, the caller's; free with
 * SSL_CTX_free), or NULL with a one-line message in err that names the file at
 * fault.
 */
SSL_CTX *tls_ctx_new(const char *cert, const char *key, int min_version, const uint8_t *ticket_key,
                     char *err, size_t errlen);

/*
 * Writes a line about ctx's certificate for the log into buf:
 * "subject=\"CN=example.com\" serial=0x1A2B not_after=2027-01-31T12:00:00Z". Returns
 * buf.
 */
const char *tls_ctx_describe(SSL_CTX *ctx, char *buf, size_t cap);

/* True when ctx's certificate is past its notAfter (it still loads: a warning). */
bool tls_ctx_expired(SSL_CTX *ctx);

/* The reason of the newest error in OpenSSL's error queue ("wrong version number"),
 * a static string; "unknown" when the queue is empty. The queue is left as it is. */
const char *tls_error_reason(void);

#endif /* WSGATE_COMMON_TLS_H */
