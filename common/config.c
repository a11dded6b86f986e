#include "common/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "common/iplimit.h"
#include "common/log.h"
#include "common/origin.h"
#include "common/redis_url.h"
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "common/log.h"
#include "common/tls.h"
#include "common/token.h"
#include "common/utf8.h"
#include "common/ws_close.h"

/* F_LIST: repeatable; each value (and the environment twin) may hold several items
 * separated by commas or spaces; the first on the command line replaces the twin's
 * (set with NULL forgets the items given so far). */
enum flag_kind { F_BOOL, F_NOBOOL, F_VALUE, F_LIST };

struct flag {
    const char *name; /* without the leading "--" */
    enum flag_kind kind;
    int (*set)(struct config *c, const char *v, char *err, size_t errlen);
};

static int bad(char *err, size_t errlen, const char *flag, const char *v, const char *what)
{
    snprintf(err, errlen, "--%s %s: %s", flag, v, what);
    return -1;
}

static int set_duration(const char *flag, const char *v, uint32_t lo, uint32_t *out, char *err,
                        size_t errlen);

static int parse_hostport(const char *flag, const char *v, char *out_host, size_t host_cap,
                          uint16_t *out_port, char *err, size_t errlen)
{
    const char *colon = strrchr(v, ':');
    char host[256];
    unsigned char addr[16];
    char *end;
    size_t hlen;
    long port;

    if (colon == NULL)
        return bad(err, errlen, flag, v, "expected HOST:PORT");
    hlen = (size_t)(colon - v);
    if (hlen >= sizeof(host) || hlen >= host_cap)
        return bad(err, errlen, flag, v, "host too long");
    memcpy(host, v, hlen);
    host[hlen] = '\0';
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = '\0';
        if (inet_pton(AF_INET6, host, addr) != 1)
            return bad(err, errlen, flag, v, "not an IPv6 address");
    } else if (hlen > 0 && inet_pton(AF_INET, host, addr) != 1) {
        if (strcmp(host, "localhost") == 0)
            strcpy(host, "127.0.0.1");
        else
            return bad(err, errlen, flag, v, "host must be a numeric IPv4 or [IPv6] address");
    }
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno != 0 || port < 1 || port > 65535)
        return bad(err, errlen, flag, v, "port must be 1-65535");
    snprintf(out_host, host_cap, "%s", host);
    *out_port = (uint16_t)port;
    return 0;
}

static int set_listen(struct config *c, const char *v, char *err, size_t errlen)
{
    return parse_hostport("listen", v, c->listen_host, sizeof(c->listen_host), &c->listen_port, err,
                          errlen);
}

static int set_admin(struct config *c, const char *v, char *err, size_t errlen)
{
    if (v[0] == '\0') {
        c->admin_port = 0;
        return 0;
    }
    return parse_hostport("admin", v, c->admin_host, sizeof(c->admin_host), &c->admin_port, err,
                          errlen);
}

static int set_drain_delay(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_duration("drain-delay", v, 0, &c->drain_delay_ms, err, errlen);
}

static int set_drain_spread(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_duration("drain-spread", v, 0, &c->drain_spread_ms, err, errlen);
}

static int set_drain_timeout(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_duration("drain-timeout", v, 1, &c->drain_timeout_ms, err, errlen);
}

static int set_drain_reason(struct config *c, const char *v, char *err, size_t errlen)
{
    size_t len = strlen(v);

    if (len > 123 || !utf8_is_valid((const uint8_t *)v, len))
        return bad(err, errlen, "drain-reason", v, "expected UTF-8 text of at most 123 bytes");
    memcpy(c->drain_reason, v, len + 1);
    return 0;
}

static int parse_int(const char *v, long lo, long hi, long *out);

static int set_max_admin_conns(struct config *c, const char *v, char *err, size_t errlen)
{
    long n;

    if (parse_int(v, 1, 64, &n) < 0)
        return bad(err, errlen, "max-admin-conns", v, "expected a number 1-64");
    c->max_admin_conns = (int)n;
    return 0;
}

static int set_stall_timeout(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_duration("stall-timeout", v, 100, &c->stall_timeout_ms, err, errlen);
}

static int set_stall_kill(struct config *c, const char *v, char *err, size_t errlen)
{
    uint32_t ms;

    if (config_parse_duration(v, &ms) < 0 || (ms != 0 && ms < 1000) || ms > 3600u * 1000)
        return bad(err, errlen, "stall-kill", v, "expected 0 (never) or a duration from 1s to 1h");
    c->stall_kill_ms = ms;
    return 0;
}

/* Never echoes the value: it holds secrets. */
static int set_order_key(struct config *c, const char *v, char *err, size_t errlen)
{
    char why[200];

    if (v == NULL) {
        order_sig_ring_clear(&c->order_keys);
        return 0;
    }
    if (order_sig_ring_add(&c->order_keys, v, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "--order-key: %s", why);
        return -1;
    }
    return 0;
}

static int set_order_max_age(struct config *c, const char *v, char *err, size_t errlen)
{
    uint32_t ms;

    if (config_parse_duration(v, &ms) < 0 || ms < 1000 || ms > 24u * 3600 * 1000)
        return bad(err, errlen, "order-max-age", v, "expected a duration from 1s to 24h");
    c->order_max_age_ms = ms;
    return 0;
}

static int set_order_replay_max(struct config *c, const char *v, char *err, size_t errlen)
{
    long n;

    if (parse_int(v, 1, 10000000, &n) < 0)
        return bad(err, errlen, "order-replay-max", v, "expected a number 1-10000000");
    c->order_replay_max = (uint32_t)n;
    return 0;
}

static int parse_int(const char *v, long lo, long hi, long *out)
{
    char *end;
    long n;

    errno = 0;
    n = strtol(v, &end, 10);
    if (*v == '\0' || *end != '\0' || errno != 0 || n < lo || n > hi)
        return -1;
    *out = n;
    return 0;
}

static int set_workers(struct config *c, const char *v, char *err, size_t errlen)
{
    long n;

    if (parse_int(v, 1, 256, &n) < 0)
        return bad(err, errlen, "workers", v, "expected a number 1-256");
    c->workers = (int)n;
    return 0;
}

/* Gateway ids end up in connection ids, Redis keys and channel names. */
static bool is_id_char(int ch)
{
    return isalnum(ch) || ch == '-' || ch == '_' || ch == '.';
}

static int set_id(struct config *c, const char *v, char *err, size_t errlen)
{
    size_t len = strlen(v);

    if (len == 0 || len > CONFIG_ID_MAX)
        return bad(err, errlen, "id", v, "expected 1-64 characters");
    for (size_t i = 0; i < len; i++)
        if (!is_id_char((unsigned char)v[i]))
            return bad(err, errlen, "id", v, "allowed characters: A-Z a-z 0-9 - _ .");
    memcpy(c->id, v, len + 1);
    return 0;
}

static const char *const inbound_names[] = {"drop", "echo", "publish", "stream"};

const char *config_inbound_name(int mode)
{
    return mode >= 0 && mode <= CONFIG_INBOUND_STREAM ? inbound_names[mode] : "?";
}

/* --echo is --inbound echo; WSGATE_ECHO=0 turns only echo off. */
static int set_echo(struct config *c, const char *v, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    if (v != NULL)
        c->inbound = CONFIG_INBOUND_ECHO;
    else if (c->inbound == CONFIG_INBOUND_ECHO)
        c->inbound = CONFIG_INBOUND_DROP;
    return 0;
}

static int set_inbound(struct config *c, const char *v, char *err, size_t errlen)
{
    for (int i = 0; i <= CONFIG_INBOUND_STREAM; i++) {
        if (strcmp(v, inbound_names[i]) == 0) {
            c->inbound = i;
            return 0;
        }
    }
    return bad(err, errlen, "inbound", v, "expected drop, echo, publish or stream");
}

static int set_query_groups(struct config *c, const char *v, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    c->query_groups = v != NULL ? 1 : 0;
    return 0;
}

static int set_max_header(struct config *c, const char *v, char *err, size_t errlen)
{
    uint64_t n;

    if (config_parse_size(v, &n) < 0 || n < 256 || n > 1024 * 1024)
        return bad(err, errlen, "max-header", v, "expected a size from 256 to 1m");
    c->max_header = (size_t)n;
    return 0;
}

static int set_max_message(struct config *c, const char *v, char *err, size_t errlen)
{
    uint64_t n;

    if (config_parse_size(v, &n) < 0 || n < 1 || n > 1024ull * 1024 * 1024)
        return bad(err, errlen, "max-message", v, "expected a size from 1 to 1g");
    c->max_message = n;
    return 0;
}

static int set_duration(const char *flag, const char *v, uint32_t lo, uint32_t *out, char *err,
                        size_t errlen)
{
    uint32_t ms;

    if (config_parse_duration(v, &ms) < 0 || ms < lo || ms > 24u * 3600 * 1000)
        return bad(err, errlen, flag, v,
                   lo > 0 ? "expected a duration such as 500ms, 5s, 2m (not zero, at most 24h)"
                          : "expected a duration such as 500ms, 5s, 2m (at most 24h)");
    *out = ms;
    return 0;
}

static int set_close_timeout(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_duration("close-timeout", v, 1, &c->close_timeout_ms, err, errlen);
}

static int set_ping_interval(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_duration("ping-interval", v, 0, &c->ping_interval_ms, err, errlen);
}

static int set_handshake_timeout(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_duration("handshake-timeout", v, 1, &c->handshake_timeout_ms, err, errlen);
}

static int set_log_level(struct config *c, const char *v, char *err, size_t errlen)
{
    int l = log_level_parse(v);

    if (l < 0)
        return bad(err, errlen, "log-level", v, "expected debug, info, notice, warn or error");
    c->log_level = l;
    return 0;
}

static int set_redis(struct config *c, const char *v, char *err, size_t errlen)
{
    struct redis_url u;
    char why[256];

    if (strncmp(v, "redis://", 8) != 0 && strncmp(v, "unix://", 7) != 0 &&
        strncmp(v, "sentinel://", 11) != 0 && strncmp(v, "cluster://", 10) != 0)
        return bad(err, errlen, "redis", v,
                   "expected redis://[user:password@]host:port[/db], unix:///path, "
                   "sentinel://host:port[,host:port...]/MASTER[/db] "
                   "or cluster://host:port[,host:port...]");
    if (strlen(v) >= sizeof(c->redis))
        return bad(err, errlen, "redis", v, "too long");
    /* Checked whole before any worker starts; the message never repeats a password. */
    if (redis_url_parse(v, &u, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "--redis: %s", why);
        return -1;
    }
    redis_url_cleanup(&u);
    snprintf(c->redis, sizeof(c->redis), "%s", v);
    c->redis_given = true;
    return 0;
}

/* A deadline for a Redis answer: under 100 ms a busy Redis looks dead; over 5 minutes
 * a dead one looks alive for too long to matter. */
static int set_redis_timeout(struct config *c, const char *v, char *err, size_t errlen)
{
    uint32_t ms;

    if (config_parse_duration(v, &ms) < 0 || ms < 100 || ms > 300000)
        return bad(err, errlen, "redis-timeout", v, "expected a duration from 100ms to 5m");
    c->redis_timeout_ms = ms;
    return 0;
}

/* Channel names: printable ASCII without spaces, so logs and keys stay readable. */
static int set_name(const char *flag, const char *v, bool may_be_empty, char *out, size_t cap,
                    char *err, size_t errlen)
{
    size_t len = strlen(v);

    if ((len == 0 && !may_be_empty) || len >= cap)
        return bad(err, errlen, flag, v, may_be_empty ? "too long" : "expected a non-empty name");
    for (size_t i = 0; i < len; i++)
        if (v[i] <= ' ' || v[i] >= 0x7f)
            return bad(err, errlen, flag, v, "expected printable ASCII without spaces");
    memcpy(out, v, len + 1);
    return 0;
}

static int set_channel(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_name("channel", v, false, c->channel, sizeof(c->channel), err, errlen);
}

static int set_events_channel(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_name("events-channel", v, true, c->events_channel, sizeof(c->events_channel), err,
                    errlen);
}

/* HTTP header names are tokens (RFC 9110 §5.6.2). */
static int set_header_name(const char *flag, const char *v, char *out, size_t cap, char *err,
                           size_t errlen)
{
    size_t len = strlen(v);

    if (len == 0 || len >= cap)
        return bad(err, errlen, flag, v, "expected a header name");
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)v[i]) && strchr("!#$%&'*+-.^_`|~", v[i]) == NULL)
            return bad(err, errlen, flag, v, "not a valid header name");
    memcpy(out, v, len + 1);
    return 0;
}

static int set_groups_header(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_header_name("groups-header", v, c->groups_header, sizeof(c->groups_header), err,
                           errlen);
}

static int set_user_header(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_header_name("user-header", v, c->user_header, sizeof(c->user_header), err, errlen);
}

static int set_max_groups(struct config *c, const char *v, char *err, size_t errlen)
{
    long n;

    if (parse_int(v, 0, 1024, &n) < 0)
        return bad(err, errlen, "max-groups", v, "expected a number 0-1024");
    c->max_groups = (int)n;
    return 0;
}

/* One or more origins, separated by commas or spaces (no origin holds either). */
static int set_allow_origin(struct config *c, const char *v, char *err, size_t errlen)
{
    const char *p = v, *why;
    char one[ORIGIN_HOST_MAX + 32];
    size_t n, items = 0;

    if (v == NULL) {
        c->allow_origin.n = 0;
        return 0;
    }
    for (;;) {
        p += strspn(p, ", \t");
        n = strcspn(p, ", \t");
        if (n == 0)
            break;
        if (n >= sizeof(one))
            return bad(err, errlen, "allow-origin", v, "origin too long");
        memcpy(one, p, n);
        one[n] = '\0';
        if (origin_list_add(&c->allow_origin, one, &why) < 0) {
            snprintf(err, errlen, "--allow-origin %s: %s", one, why);
            return -1;
        }
        items++;
        p += n;
    }
    if (items == 0)
        return bad(err, errlen, "allow-origin", v, "expected scheme://host[:port]");
    return 0;
}

static int set_max_conns_per_ip(struct config *c, const char *v, char *err, size_t errlen)
{
    long n;

    if (parse_int(v, 0, IPLIMIT_MAX_CONNS, &n) < 0)
        return bad(err, errlen, "max-conns-per-ip", v, "expected a number 0-65000 (0: no limit)");
    c->max_conns_per_ip = (uint32_t)n;
    return 0;
}

static int set_max_handshakes_per_ip(struct config *c, const char *v, char *err, size_t errlen)
{
    if (config_parse_rate(v, &c->max_handshakes_per_ip, &c->handshakes_period_ms) < 0)
        return bad(err, errlen, "max-handshakes-per-ip", v,
                   "expected a rate such as 20/s, 600/m or 100/h, or 0 for no limit");
    return 0;
}

static int set_proxy_protocol(struct config *c, const char *v, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    c->proxy_protocol = v != NULL;
    return 0;
}

/* --- JWT ------------------------------------------------------------------------------------ */

/* c->jwt_flags: which --jwt-* flags were given, so conflicts and orphans can be named. */
#define JWT_F_SECRET      0x01u
#define JWT_F_SECRET_FILE 0x02u
#define JWT_F_PUBLIC_KEY  0x04u
#define JWT_F_KEYS        (JWT_F_SECRET | JWT_F_SECRET_FILE | JWT_F_PUBLIC_KEY)
#define JWT_F_OPTION      0x08u /* issuer, audience, leeway, allow-no-exp, cookie, expiry code */

static int set_jwt_secret(struct config *c, const char *v, char *err, size_t errlen)
{
    size_t len = strlen(v);

    if (len < TOKEN_SECRET_MIN || len > CONFIG_JWT_SECRET_MAX)
        return bad(err, errlen, "jwt-secret", "...",
                   "expected 32 to 1024 bytes (RFC 7518 §3.2: at least the HS256 output)");
    memcpy(c->jwt_secret, v, len);
    c->jwt_secret_len = len;
    c->jwt_flags |= JWT_F_SECRET;
    return 0;
}

/* The file's bytes, less one trailing newline (what `echo secret > file` adds). */
static int set_jwt_secret_file(struct config *c, const char *v, char *err, size_t errlen)
{
    uint8_t buf[CONFIG_JWT_SECRET_MAX + 2];
    FILE *f = fopen(v, "rb");
    size_t n;
    int e;

    if (f == NULL) {
        e = errno;
        return bad(err, errlen, "jwt-secret-file", v, strerror(e));
    }
    n = fread(buf, 1, sizeof(buf), f);
    e = ferror(f);
    fclose(f);
    if (e)
        return bad(err, errlen, "jwt-secret-file", v, "read error");
    if (n > 0 && buf[n - 1] == '\n') {
        n--;
        if (n > 0 && buf[n - 1] == '\r')
            n--;
    }
    if (n < TOKEN_SECRET_MIN || n > CONFIG_JWT_SECRET_MAX) {
        OPENSSL_cleanse(buf, sizeof(buf));
        return bad(err, errlen, "jwt-secret-file", v,
                   n == 0 ? "the file is empty"
                          : "expected 32 to 1024 bytes (RFC 7518 §3.2: at least the HS256 output)");
    }
    memcpy(c->jwt_secret, buf, n);
    c->jwt_secret_len = n;
    OPENSSL_cleanse(buf, sizeof(buf));
    c->jwt_flags |= JWT_F_SECRET_FILE;
    return 0;
}

static int set_jwt_public_key(struct config *c, const char *v, char *err, size_t errlen)
{
    size_t len = strlen(v);

    if (len == 0 || len >= sizeof(c->jwt_public_key))
        return bad(err, errlen, "jwt-public-key", v, "expected the path of a PEM public key");
    if (access(v, R_OK) != 0) {
        int e = errno;
        return bad(err, errlen, "jwt-public-key", v, strerror(e));
    }
    memcpy(c->jwt_public_key, v, len + 1);
    c->jwt_flags |= JWT_F_PUBLIC_KEY;
    return 0;
}

/* iss and aud values: text that goes into logs, compared byte for byte. */
static int set_jwt_text(const char *flag, const char *v, char *out, size_t cap, char *err,
                        size_t errlen)
{
    size_t len = strlen(v);

    if (len >= cap || !utf8_is_valid((const uint8_t *)v, len))
        return bad(err, errlen, flag, v, "expected UTF-8 text of at most 255 bytes");
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
            return bad(err, errlen, flag, v, "control characters are not allowed");
    memcpy(out, v, len + 1);
    return 0;
}

static int set_jwt_issuer(struct config *c, const char *v, char *err, size_t errlen)
{
    c->jwt_flags |= JWT_F_OPTION;
    return set_jwt_text("jwt-issuer", v, c->jwt_issuer, sizeof(c->jwt_issuer), err, errlen);
}

static int set_jwt_audience(struct config *c, const char *v, char *err, size_t errlen)
{
    c->jwt_flags |= JWT_F_OPTION;
    return set_jwt_text("jwt-audience", v, c->jwt_audience, sizeof(c->jwt_audience), err, errlen);
}

static int set_jwt_leeway(struct config *c, const char *v, char *err, size_t errlen)
{
    uint32_t ms;

    if (config_parse_duration(v, &ms) < 0 || ms > 3600u * 1000)
        return bad(err, errlen, "jwt-leeway", v, "expected a duration from 0s to 1h");
    c->jwt_leeway_ms = ms;
    c->jwt_flags |= JWT_F_OPTION;
    return 0;
}

static int set_jwt_allow_no_exp(struct config *c, const char *v, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    c->jwt_allow_no_exp = v != NULL;
    c->jwt_flags |= JWT_F_OPTION;
    return 0;
}

/* cookie-name is an HTTP token (RFC 6265 §4.1.1). */
static int set_jwt_cookie(struct config *c, const char *v, char *err, size_t errlen)
{
    c->jwt_flags |= JWT_F_OPTION;
    if (v[0] == '\0') {
        c->jwt_cookie[0] = '\0';
        return 0;
    }
    return set_header_name("jwt-cookie", v, c->jwt_cookie, sizeof(c->jwt_cookie), err, errlen);
}

static int set_jwt_expiry_code(struct config *c, const char *v, char *err, size_t errlen)
{
    long n;

    if (parse_int(v, 1000, 4999, &n) < 0 || !ws_close_code_is_sendable((unsigned)n))
        return bad(err, errlen, "jwt-expiry-code", v,
                   "expected a close code a server may send: 4000-4999 (default 4001), "
                   "3000-3999, 1000-1003, 1007-1009, 1011-1014");
    c->jwt_expiry_code = (unsigned)n;
    c->jwt_flags |= JWT_F_OPTION;
    return 0;
}

bool config_jwt_enabled(const struct config *c)
{
    return c->jwt_secret_len > 0 || c->jwt_public_key[0] != '\0';
}

void config_token_config(const struct config *c, struct token_config *t)
{
    memset(t, 0, sizeof(*t));
    if (c->jwt_secret_len > 0) {
        t->secret = c->jwt_secret;
        t->secret_len = c->jwt_secret_len;
    }
    if (c->jwt_public_key[0] != '\0')
        t->public_key_path = c->jwt_public_key;
    t->issuer = c->jwt_issuer;
    t->audience = c->jwt_audience;
    t->leeway_ms = c->jwt_leeway_ms;
    t->allow_no_exp = c->jwt_allow_no_exp;
    t->max_groups = c->max_groups;
}

/* Settings that only make sense together, checked once every flag is read. A JWT
 * option without a key would leave the gateway open while its operator thinks it
 * is not, so it is an error rather than ignored. */
static int check_jwt(const struct config *c, char *err, size_t errlen)
{
    unsigned keys = c->jwt_flags & JWT_F_KEYS;
    struct token_config t;
    struct token_verifier *v;
    char why[256];

    if (keys == 0) {
        if (c->jwt_flags & JWT_F_OPTION) {
            snprintf(err, errlen,
                     "--jwt-* options need --jwt-secret, --jwt-secret-file or "
                     "--jwt-public-key");
            return -1;
        }
        return 0;
    }
    if ((keys & (keys - 1)) != 0) {
        snprintf(err, errlen,
                 "give only one of --jwt-secret, --jwt-secret-file and "
                 "--jwt-public-key (flags or WSGATE_* twins)");
        return -1;
    }
    if (c->query_groups == 1) {
        snprintf(err, errlen,
                 "--query-groups: with JWT on, groups and the user come from the "
                 "token only");
        return -1;
    }
    if (c->user_header[0] != '\0') {
        snprintf(err, errlen, "--user-header: with JWT on, the user comes from the token's sub");
        return -1;
    }
    if (c->max_groups < 1) {
        snprintf(err, errlen, "--max-groups 0: with JWT on, at least 1 (the user's own group)");
        return -1;
    }
    /* The whole key is checked here, before any process starts: file, PEM, type, size. */
    config_token_config(c, &t);
    v = token_verifier_new(&t, why, sizeof(why));
    if (v == NULL) {
        if (keys == JWT_F_PUBLIC_KEY)
            snprintf(err, errlen, "--jwt-public-key %s", why); /* why starts with the path */
        else
            snprintf(err, errlen, "%s", why);
        return -1;
    }
    token_verifier_free(v);
    return 0;
}

static int set_max_outbound(struct config *c, const char *v, char *err, size_t errlen)
{
    uint64_t n;

    if (config_parse_size(v, &n) < 0 || n < 1024 || n > 1024ull * 1024 * 1024)
        return bad(err, errlen, "max-outbound", v, "expected a size from 1k to 1g");
    c->max_outbound = n;
    return 0;
}

static int set_max_pending(struct config *c, const char *v, char *err, size_t errlen)
{
    uint64_t n;

    if (config_parse_size(v, &n) < 0 || n < 1024 || n > 1024ull * 1024 * 1024 * 1024)
        return bad(err, errlen, "max-pending", v, "expected a size from 1k to 1024g");
    c->max_pending = n;
    return 0;
}

static int set_inbound_channel(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_name("inbound-channel", v, false, c->inbound_channel, sizeof(c->inbound_channel),
                    err, errlen);
}

static int set_inbound_stream(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_name("inbound-stream", v, false, c->inbound_stream, sizeof(c->inbound_stream), err,
                    errlen);
}

static int set_orders_stream(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_name("orders-stream", v, true, c->orders_stream, sizeof(c->orders_stream), err,
                    errlen);
}

static int set_orders_max_age(struct config *c, const char *v, char *err, size_t errlen)
{
    uint32_t ms;

    if (config_parse_duration(v, &ms) < 0 || ms < 1000 || ms > 24u * 3600 * 1000)
        return bad(err, errlen, "orders-max-age", v, "expected a duration from 1s to 24h");
    c->orders_max_age_ms = ms;
    return 0;
}

static int set_orders_dedup_max(struct config *c, const char *v, char *err, size_t errlen)
{
    long n;

    if (parse_int(v, 1, 10000000, &n) < 0)
        return bad(err, errlen, "orders-dedup-max", v, "expected a number 1-10000000");
    c->orders_dedup_max = (uint32_t)n;
    return 0;
}

static int set_max_tombstones(struct config *c, const char *v, char *err, size_t errlen)
{
    long n;

    if (parse_int(v, 0, 10000000, &n) < 0)
        return bad(err, errlen, "max-tombstones", v, "expected a number 0-10000000");
    c->max_tombstones = (uint32_t)n;
    return 0;
}

static int set_inbound_maxlen(struct config *c, const char *v, char *err, size_t errlen)
{
    long n;

    if (parse_int(v, 1, 1000000000, &n) < 0)
        return bad(err, errlen, "inbound-maxlen", v, "expected a number 1-1000000000");
    c->inbound_maxlen = (uint64_t)n;
    return 0;
}

/* Under 64k a few large messages would stall every client of the worker; over 1g
 * the bound no longer protects the host. */
static int set_inbound_max_pending(struct config *c, const char *v, char *err, size_t errlen)
{
    uint64_t n;

    if (config_parse_size(v, &n) < 0 || n < 64 * 1024 || n > 1024ull * 1024 * 1024)
        return bad(err, errlen, "inbound-max-pending", v, "expected a size from 64k to 1g");
    c->inbound_max_pending = n;
    return 0;
}

static int set_max_jobs(struct config *c, const char *v, char *err, size_t errlen)
{
    long n;

    if (parse_int(v, 1, 1000000, &n) < 0)
        return bad(err, errlen, "max-jobs", v, "expected a number 1-1000000");
    c->max_jobs = (uint32_t)n;
    return 0;
}

/* --- TLS ------------------------------------------------------------------------------------ */

_Static_assert(CONFIG_TLS_TICKET_KEY == TLS_TICKET_KEY_LEN, "ticket key size");

/* A PEM file the workers read again on SIGHUP; "" turns TLS off. */
static int set_tls_path(const char *flag, const char *v, char *out, size_t cap, char *err,
                        size_t errlen)
{
    size_t len = strlen(v);

    if (len >= cap)
        return bad(err, errlen, flag, v, "path too long");
    if (len > 0 && access(v, R_OK) != 0) {
        int e = errno;
        return bad(err, errlen, flag, v, strerror(e));
    }
    memcpy(out, v, len + 1);
    return 0;
}

static int set_tls_cert(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_tls_path("tls-cert", v, c->tls_cert, sizeof(c->tls_cert), err, errlen);
}

static int set_tls_key(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_tls_path("tls-key", v, c->tls_key, sizeof(c->tls_key), err, errlen);
}

static int set_tls_min_version(struct config *c, const char *v, char *err, size_t errlen)
{
    if (strcmp(v, "1.2") == 0)
        c->tls_min_version = TLS_MIN_1_2;
    else if (strcmp(v, "1.3") == 0)
        c->tls_min_version = TLS_MIN_1_3;
    else
        return bad(err, errlen, "tls-min-version", v, "expected 1.2 or 1.3");
    c->tls_min_given = true;
    return 0;
}

bool config_tls_enabled(const struct config *c)
{
    return c->tls_cert[0] != '\0';
}

/* Both files or neither; the pair is loaded here into a context of the same make as
 * the workers' (and freed), so a bad file, a key that does not match or a passphrase
 * stops the gateway before any process starts. */
static int check_tls(struct config *c, char *err, size_t errlen)
{
    SSL_CTX *ctx;

    if ((c->tls_cert[0] != '\0') != (c->tls_key[0] != '\0')) {
        snprintf(err, errlen, "--tls-cert and --tls-key go together: give both or neither");
        return -1;
    }
    if (c->tls_cert[0] == '\0') {
        if (c->tls_min_given) {
            snprintf(err, errlen, "--tls-min-version needs --tls-cert and --tls-key");
            return -1;
        }
        return 0;
    }
    ctx = tls_ctx_new(c->tls_cert, c->tls_key, c->tls_min_version, NULL, err, errlen);
    if (ctx == NULL)
        return -1;
    SSL_CTX_free(ctx);
    if (RAND_bytes(c->tls_ticket_key, sizeof(c->tls_ticket_key)) != 1) {
        snprintf(err, errlen, "cannot draw a session ticket key: %s", tls_error_reason());
        return -1;
    }
    return 0;
}

/* Up to 16m: a worker's Redis subscriber must take the whole order in one message, and
 * Redis cuts a subscriber whose output passes its pubsub buffer limit (32mb by default). */
static int set_max_send(struct config *c, const char *v, char *err, size_t errlen)
{
    uint64_t n;

    if (config_parse_size(v, &n) < 0 || n < 1 || n > 16ull * 1024 * 1024)
        return bad(err, errlen, "max-send", v, "expected a size from 1 to 16m");
    c->max_send = n;
    return 0;
}

static int set_deflate(struct config *c, const char *v, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    c->deflate = v != NULL;
    return 0;
}

/* 0 compresses everything; a message under the size goes uncompressed (RSV1 clear),
 * which RFC 7692 §6 allows: deflate costs more than it saves on a few bytes. */
static int set_deflate_min_size(struct config *c, const char *v, char *err, size_t errlen)
{
    uint64_t n;

    if (config_parse_size(v, &n) < 0 || n > 16ull * 1024 * 1024)
        return bad(err, errlen, "deflate-min-size", v, "expected a size from 0 to 16m");
    c->deflate_min_size = n;
    return 0;
}

static const struct flag flags[] = {
    {"listen", F_VALUE, set_listen},
    {"workers", F_VALUE, set_workers},
    {"id", F_VALUE, set_id},
    {"echo", F_BOOL, set_echo},
    {"max-header", F_VALUE, set_max_header},
    {"max-message", F_VALUE, set_max_message},
    {"close-timeout", F_VALUE, set_close_timeout},
    {"ping-interval", F_VALUE, set_ping_interval},
    {"handshake-timeout", F_VALUE, set_handshake_timeout},
    {"log-level", F_VALUE, set_log_level},
    {"redis", F_VALUE, set_redis},
    {"redis-timeout", F_VALUE, set_redis_timeout},
    {"channel", F_VALUE, set_channel},
    {"events-channel", F_VALUE, set_events_channel},
    {"query-groups", F_BOOL, set_query_groups},
    {"no-query-groups", F_NOBOOL, set_query_groups},
    {"groups-header", F_VALUE, set_groups_header},
    {"user-header", F_VALUE, set_user_header},
    {"max-groups", F_VALUE, set_max_groups},
    {"admin", F_VALUE, set_admin},
    {"drain-delay", F_VALUE, set_drain_delay},
    {"drain-spread", F_VALUE, set_drain_spread},
    {"drain-timeout", F_VALUE, set_drain_timeout},
    {"drain-reason", F_VALUE, set_drain_reason},
    {"max-admin-conns", F_VALUE, set_max_admin_conns},
    {"stall-timeout", F_VALUE, set_stall_timeout},
    {"stall-kill", F_VALUE, set_stall_kill},
    {"order-key", F_LIST, set_order_key},
    {"order-max-age", F_VALUE, set_order_max_age},
    {"order-replay-max", F_VALUE, set_order_replay_max},
    {"allow-origin", F_LIST, set_allow_origin},
    {"max-conns-per-ip", F_VALUE, set_max_conns_per_ip},
    {"max-handshakes-per-ip", F_VALUE, set_max_handshakes_per_ip},
    {"proxy-protocol", F_BOOL, set_proxy_protocol},
    {"jwt-secret", F_VALUE, set_jwt_secret},
    {"jwt-secret-file", F_VALUE, set_jwt_secret_file},
    {"jwt-public-key", F_VALUE, set_jwt_public_key},
    {"jwt-issuer", F_VALUE, set_jwt_issuer},
    {"jwt-audience", F_VALUE, set_jwt_audience},
    {"jwt-leeway", F_VALUE, set_jwt_leeway},
    {"jwt-allow-no-exp", F_BOOL, set_jwt_allow_no_exp},
    {"jwt-cookie", F_VALUE, set_jwt_cookie},
    {"jwt-expiry-code", F_VALUE, set_jwt_expiry_code},
    {"max-outbound", F_VALUE, set_max_outbound},
    {"max-pending", F_VALUE, set_max_pending},
    {"max-jobs", F_VALUE, set_max_jobs},
    {"inbound", F_VALUE, set_inbound},
    {"inbound-channel", F_VALUE, set_inbound_channel},
    {"inbound-stream", F_VALUE, set_inbound_stream},
    {"inbound-maxlen", F_VALUE, set_inbound_maxlen},
    {"inbound-max-pending", F_VALUE, set_inbound_max_pending},
    {"tls-cert", F_VALUE, set_tls_cert},
    {"tls-key", F_VALUE, set_tls_key},
    {"tls-min-version", F_VALUE, set_tls_min_version},
    {"max-send", F_VALUE, set_max_send},
    {"orders-stream", F_VALUE, set_orders_stream},
    {"orders-max-age", F_VALUE, set_orders_max_age},
    {"orders-dedup-max", F_VALUE, set_orders_dedup_max},
    {"max-tombstones", F_VALUE, set_max_tombstones},
    {"deflate", F_BOOL, set_deflate},
    {"deflate-min-size", F_VALUE, set_deflate_min_size},
};

#define NFLAGS (sizeof(flags) / sizeof(flags[0]))

static const char usage[] =
    "usage: wsgate [flags]\n"
    "\n"
    "A WebSocket gateway: holds client connections and closes them on orders published\n"
    "on Redis. Every flag has an environment twin: --max-header is WSGATE_MAX_HEADER.\n"
    "\n"
    "  --listen HOST:PORT       address to accept clients on (default 0.0.0.0:8080)\n"
    "  --workers N              worker processes, 1-256 (default: number of CPUs)\n"
    "  --id NAME                gateway id in connection ids, logs, orders (default: host name)\n"
    "  --echo                   the same as --inbound echo\n"
    "  --max-header SIZE        largest upgrade request head (default 8k)\n"
    "  --max-message SIZE       largest client message; larger closes with 1009 (default 1m)\n"
    "  --close-timeout DUR      wait this long for the client's close reply (default 5s)\n"
    "  --ping-interval DUR      ping a connection silent this long, drop it after twice\n"
    "                           that; 0 disables (default 30s)\n"
    "  --handshake-timeout DUR  drop a client that has not finished its upgrade request\n"
    "                           by then (default 10s)\n"
    "  --log-level LEVEL        debug, info, notice, warn or error (default notice)\n"
    "  --redis URL              redis://[user:password@]host:port[/db], unix:///path, or\n"
    "                           sentinel://[user:password@]host:port[,host:port...]/MASTER[/db]\n"
    "                           [?sentinel_user=U&sentinel_password=P]: the master named\n"
    "                           MASTER, asked of the sentinels; or\n"
    "                           cluster://[user:password@]host:port[,host:port...] for a\n"
    "                           Redis Cluster with sharded pub/sub (default\n"
    "                           redis://127.0.0.1:6379)\n"
    "  --redis-timeout DUR      a Redis link that does not answer (connect, AUTH, SUBSCRIBE,\n"
    "                           replies, heartbeats) within this is dropped, /readyz fails,\n"
    "                           and it reconnects; 100ms to 5m (default 3s)\n"
    "  --channel NAME           order channel; each worker also subscribes to\n"
    "                           NAME:<gateway id> (default wsgate:orders)\n"
    "  --events-channel NAME    open/close events are published here; empty disables\n"
    "                           (default wsgate:events)\n"
    "  --no-query-groups        ignore ?group= and ?user= in the request target (the\n"
    "                           default when --groups-header or --user-header is set)\n"
    "  --query-groups           read them even with a trusted header flag set\n"
    "  --groups-header NAME     comma-separated groups from a trusted proxy's header\n"
    "  --user-header NAME       user id from a trusted proxy's header (joins user:ID)\n"
    "  --max-groups N           groups per connection, more is refused with 400 (default 16)\n"
    "  --admin HOST:PORT        /healthz, /readyz and /metrics; empty disables\n"
    "                           (default 127.0.0.1:9090)\n"
    "  --drain-delay DUR        on drain, readiness fails at once; listeners close after\n"
    "                           this (default 0s)\n"
    "  --drain-spread DUR       closes with 1001 spread across this window (default 10s)\n"
    "  --drain-timeout DUR      connections still open this long after the drain began\n"
    "                           are cut (default 30s)\n"
    "  --drain-reason TEXT      close reason sent on drain (default \"server restarting\")\n"
    "  --max-admin-conns N      admin requests served at once per worker, from descriptors\n"
    "                           kept apart from clients (default 8)\n"
    "  --stall-timeout DUR      /readyz fails while a worker's loop has not run for this\n"
    "                           long (default 2s)\n"
    "  --stall-kill DUR         the master kills and restarts a worker stalled this long;\n"
    "                           0 never (default 10s)\n"
    "  --order-key KEYID:SECRET\n"
    "                           every order must be signed with one of these keys\n"
    "                           (HMAC-SHA256, see README); repeatable, or several\n"
    "                           separated by commas; WSGATE_ORDER_KEY keeps the secret\n"
    "                           out of ps (default: orders are not signed)\n"
    "  --order-max-age DUR      a signed order's ts may be this far in the past or the\n"
    "                           future, and its id is remembered that long (default 60s)\n"
    "  --order-replay-max N     ids of signed orders remembered per worker; when full,\n"
    "                           new orders are refused (default 100000)\n"
    "  --allow-origin ORIGIN    a browser page from another origin gets 403; repeatable,\n"
    "                           or several separated by commas; https://*.example.com\n"
    "                           matches one more label (default: any site may connect)\n"
    "  --max-conns-per-ip N     open connections per client address (IPv6: per /64),\n"
    "                           more get 429; 0 disables (default 0)\n"
    "  --max-handshakes-per-ip RATE\n"
    "                           handshakes per client address, such as 20/s or 600/m:\n"
    "                           a burst of 20, then one every 1/20 s; faster gets 429\n"
    "                           with Retry-After; 0 disables (default 0)\n"
    "  --proxy-protocol         every connection starts with a PROXY protocol header, v1\n"
    "                           or v2 (HAProxy send-proxy, nginx proxy_protocol), and the\n"
    "                           client address is taken from it; only for a listener\n"
    "                           that nothing but the balancer can reach\n"
    "  --jwt-secret SECRET      connections must bring a JWT signed with this HMAC secret\n"
    "                           (HS256, HS384, HS512; 32 bytes or more); prefer the file\n"
    "  --jwt-secret-file PATH   the same, read from a file (one trailing newline dropped)\n"
    "  --jwt-public-key PATH    connections must bring a JWT signed for this PEM public\n"
    "                           key: RSA (RS256, RS384, RS512, PS256) or EC P-256 (ES256)\n"
    "                           or P-384 (ES384). The key decides the algorithm.\n"
    "  --jwt-issuer ISS         the token's iss must be ISS (default: not checked)\n"
    "  --jwt-audience AUD       the token's aud must hold AUD (default: a token with an aud\n"
    "                           is refused)\n"
    "  --jwt-leeway DUR         clock skew allowed for exp, nbf and iat (default 5s)\n"
    "  --jwt-allow-no-exp       accept tokens without exp (default: exp is required)\n"
    "  --jwt-cookie NAME        also look for the token in this cookie (after the\n"
    "                           Authorization: Bearer header and ?token=)\n"
    "  --jwt-expiry-code N      close code sent at the token's exp, reason \"token\n"
    "                           expired\" (default 4001)\n"
    "  --max-outbound SIZE      output queued for one client; past it the client is closed\n"
    "                           with 1013 \"slow consumer\" (default 1m)\n"
    "  --max-pending SIZE       per worker: bytes held in partly received messages; a\n"
    "                           message that would pass it closes with 1013 (default: a\n"
    "                           quarter of RAM shared by the workers, at most 256m)\n"
    "  --max-jobs N             close orders running at once per worker; more are refused\n"
    "                           (default 1000)\n"
    "  --inbound MODE           what client messages become: drop (counted), echo (sent\n"
    "                           back: tests, demos), publish (PUBLISHed on\n"
    "                           --inbound-channel) or stream (XADDed to --inbound-stream),\n"
    "                           as a JSON envelope (see README) (default drop)\n"
    "  --inbound-channel NAME   channel of --inbound publish (default wsgate:in)\n"
    "  --inbound-stream NAME    stream of --inbound stream (default wsgate:in)\n"
    "  --inbound-maxlen N       the stream is trimmed to about N entries (MAXLEN ~)\n"
    "                           (default 100000)\n"
    "  --inbound-max-pending SIZE\n"
    "                           per worker: inbound bytes Redis has not answered yet;\n"
    "                           over half of it, or while Redis is down, the worker stops\n"
    "                           reading from clients until it drains (default 4m)\n"
    "  --tls-cert PATH          clients connect with TLS (wss://): the server certificate,\n"
    "                           then its chain, in PEM; needs --tls-key. SIGHUP reloads\n"
    "                           both files without dropping connections (default: off)\n"
    "  --tls-key PATH           the certificate's private key, PEM, not encrypted\n"
    "  --tls-min-version V      1.2 or 1.3: the oldest TLS version accepted (default 1.2)\n"
    "  --max-send SIZE          largest message a send order may push, counted after\n"
    "                           base64 decoding; larger is refused (default 1m, at most 16m)\n"
    "  --orders-stream NAME     also read orders from this Redis stream (XREAD), resuming\n"
    "                           after every reconnect; wsgate:orders:log is a good name\n"
    "                           (default: off)\n"
    "  --orders-max-age DUR     stream entries older than this are skipped, and order ids\n"
    "                           are remembered this long to apply each once (default 60s)\n"
    "  --orders-dedup-max N     order ids remembered per worker with --orders-stream; when\n"
    "                           full, orders are applied without the check (default 100000)\n"
    "  --max-tombstones N       tombstones (close orders with ttl_ms) a worker holds; more\n"
    "                           are not held (counted); 0 turns tombstones off\n"
    "                           (default 100000)\n"
    "  --deflate                permessage-deflate (RFC 7692) for clients that offer it:\n"
    "                           a pushed message is compressed once for all of them\n"
    "                           (default: off)\n"
    "  --deflate-min-size SIZE  messages under this go uncompressed (default 256)\n"
    "  --help                   this text\n"
    "  --version                the version and the git revision it was built from\n"
    "\n"
    "DUR: 500ms, 5s, 2m, 1h or a number of seconds. SIZE: bytes, or with k, m, g.\n";

const char *config_usage(void)
{
    return usage;
}

void config_defaults(struct config *c)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

    memset(c, 0, sizeof(*c));
    c->listen_port = 8080;
    c->workers = ncpu > 0 ? (ncpu > 256 ? 256 : (int)ncpu) : 1;
    if (gethostname(c->id, sizeof(c->id)) != 0 || c->id[0] == '\0')
        strcpy(c->id, "wsgate");
    c->id[CONFIG_ID_MAX] = '\0';
    for (char *p = c->id; *p != '\0'; p++)
        if (!is_id_char((unsigned char)*p))
            *p = '_';
    c->max_header = 8 * 1024;
    c->max_message = 1024 * 1024;
    c->close_timeout_ms = 5000;
    c->ping_interval_ms = 30000;
    c->handshake_timeout_ms = 10000;
    c->log_level = LOG_NOTICE;
    strcpy(c->redis, "redis://127.0.0.1:6379");
    c->redis_timeout_ms = 3000;
    strcpy(c->channel, "wsgate:orders");
    strcpy(c->events_channel, "wsgate:events");
    c->query_groups = -1;
    c->max_groups = 16;
    strcpy(c->admin_host, "127.0.0.1");
    c->admin_port = 9090;
    c->drain_delay_ms = 0;
    c->drain_spread_ms = 10000;
    c->drain_timeout_ms = 30000;
    strcpy(c->drain_reason, "server restarting");
    c->max_admin_conns = 8;
    c->stall_timeout_ms = 2000;
    c->stall_kill_ms = 10000;
    c->order_max_age_ms = 60000;
    c->order_replay_max = 100000;
    c->jwt_leeway_ms = 5000;
    c->jwt_expiry_code = 4001;
    c->max_outbound = 1024 * 1024;
    c->max_pending = 0; /* resolved by config_parse() once --workers is known */
    c->max_jobs = 1000;
    c->inbound = CONFIG_INBOUND_DROP;
    strcpy(c->inbound_channel, "wsgate:in");
    strcpy(c->inbound_stream, "wsgate:in");
    c->inbound_maxlen = 100000;
    c->inbound_max_pending = 4 * 1024 * 1024;
    c->tls_min_version = TLS_MIN_1_2;
    c->max_send = 1024 * 1024;
    c->orders_max_age_ms = 60000;
    c->orders_dedup_max = 100000;
    c->max_tombstones = 100000;
    c->deflate = false;
    c->deflate_min_size = 256;
}

bool config_query_groups(const struct config *c)
{
    if (config_jwt_enabled(c))
        return false;
    if (c->query_groups >= 0)
        return c->query_groups == 1;
    return c->groups_header[0] == '\0' && c->user_header[0] == '\0';
}

static uint64_t default_max_pending(int workers)
{
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    uint64_t share;

    if (pages <= 0 || size <= 0)
        return CONFIG_MAX_PENDING_CAP;
    share = (uint64_t)pages * (uint64_t)size / 4 / (uint64_t)(workers > 0 ? workers : 1);
    if (share < 1024 * 1024)
        share = 1024 * 1024;
    return share < CONFIG_MAX_PENDING_CAP ? share : CONFIG_MAX_PENDING_CAP;
}

int config_parse_duration(const char *s, uint32_t *ms)
{
    char *end;
    double v, mult;

    if (*s == '\0' || isspace((unsigned char)*s) || *s == '-' || *s == '+')
        return -1;
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s)
        return -1;
    if (strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "s") == 0 || *end == '\0')
        mult = 1000;
    else if (strcmp(end, "m") == 0)
        mult = 60000;
    else if (strcmp(end, "h") == 0)
        mult = 3600000;
    else
        return -1;
    v *= mult;
    if (!(v >= 0) || v > (double)UINT32_MAX)
        return -1;
    *ms = (uint32_t)v;
    return 0;
}

int config_parse_size(const char *s, uint64_t *bytes)
{
    char *end;
    unsigned long long v;
    uint64_t mult = 1;

    if (!isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0)
        return -1;
    if (*end == 'k' || *end == 'K')
        mult = 1024;
    else if (*end == 'm' || *end == 'M')
        mult = 1024 * 1024;
    else if (*end == 'g' || *end == 'G')
        mult = 1024 * 1024 * 1024;
    else if (*end != '\0')
        return -1;
    if (mult > 1 && end[1] != '\0')
        return -1;
    if (v > UINT64_MAX / mult)
        return -1;
    *bytes = v * mult;
    return 0;
}

int config_parse_rate(const char *s, uint32_t *count, uint32_t *period_ms)
{
    static const struct {
        char unit;
        uint32_t ms;
    } units[] = {{'s', 1000}, {'m', 60000}, {'h', 3600000}};
    char *end;
    unsigned long n;

    if (strcmp(s, "0") == 0 || strcmp(s, "off") == 0) {
        *count = 0;
        *period_ms = 0;
        return 0;
    }
    if (!isdigit((unsigned char)*s) || *s == '0')
        return -1;
    errno = 0;
    n = strtoul(s, &end, 10);
    if (errno != 0 || n < 1 || n > 1000000 || end[0] != '/' || end[1] == '\0' || end[2] != '\0')
        return -1;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (end[1] == units[i].unit) {
            *count = (uint32_t)n;
            *period_ms = units[i].ms;
            return 0;
        }
    }
    return -1;
}

static const struct flag *find_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < NFLAGS; i++)
        if (strlen(flags[i].name) == len && strncmp(flags[i].name, name, len) == 0)
            return &flags[i];
    return NULL;
}

/* WSGATE_MAX_HEADER → "max-header" */
static void env_name(const char *flag, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "WSGATE_");
    for (; *flag != '\0' && n + 1 < cap; flag++)
        out[n++] = *flag == '-' ? '_' : (char)toupper((unsigned char)*flag);
    out[n] = '\0';
}

static int bool_value(const char *v)
{
    if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 ||
        strcmp(v, "on") == 0)
        return 1;
    if (strcmp(v, "0") == 0 || strcmp(v, "false") == 0 || strcmp(v, "no") == 0 ||
        strcmp(v, "off") == 0 || strcmp(v, "") == 0)
        return 0;
    return -1;
}

static int apply_env(struct config *c, char **envp, char *err, size_t errlen)
{
    char name[64];

    if (envp == NULL)
        return 0;
    for (size_t i = 0; i < NFLAGS; i++) {
        const struct flag *f = &flags[i];
        size_t nlen;

        env_name(f->name, name, sizeof(name));
        nlen = strlen(name);
        for (char **e = envp; *e != NULL; e++) {
            const char *v;
            int b;

            if (strncmp(*e, name, nlen) != 0 || (*e)[nlen] != '=')
                continue;
            v = *e + nlen + 1;
            if (f->kind == F_VALUE || f->kind == F_LIST) {
                if (f->set(c, v, err, errlen) < 0) {
                    size_t used = strlen(err);
                    snprintf(err + used, errlen - used, " (from %s)", name);
                    return -1;
                }
                continue;
            }
            b = bool_value(v);
            if (b < 0) {
                snprintf(err, errlen, "%s=%s: expected 1/0, true/false, yes/no", name, v);
                return -1;
            }
            /* F_NOBOOL flags ("--no-query-groups") turn a default off when set. */
            f->set(c, (b == 1) == (f->kind == F_BOOL) ? "" : NULL, err, errlen);
        }
    }
    return 0;
}

int config_parse(struct config *c, int argc, char **argv, char **envp, char *err, size_t errlen)
{
    bool listed[NFLAGS] = {false}; /* F_LIST flags met on the command line */

    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
    if (apply_env(c, envp, err, errlen) < 0)
        return -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *eq, *v = NULL;
        const struct flag *f;

        if (strncmp(a, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%s' (flags start with --)", a);
            return -1;
        }
        a += 2;
        eq = strchr(a, '=');
        f = find_flag(a, eq != NULL ? (size_t)(eq - a) : strlen(a));
        if (f == NULL) {
            snprintf(err, errlen, "unknown flag '%s' (see --help)", argv[i]);
            return -1;
        }
        if (f->kind == F_BOOL || f->kind == F_NOBOOL) {
            if (eq != NULL) {
                snprintf(err, errlen, "--%s takes no value", f->name);
                return -1;
            }
            f->set(c, f->kind == F_BOOL ? "" : NULL, err, errlen);
            continue;
        }
        if (f->kind == F_LIST && !listed[f - flags]) {
            listed[f - flags] = true;
            f->set(c, NULL, err, errlen); /* the command line wins over the twin */
        }
        if (eq != NULL) {
            v = eq + 1;
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            snprintf(err, errlen, "--%s needs a value", f->name);
            return -1;
        }
        if (f->set(c, v, err, errlen) < 0)
            return -1;
    }
    if (c->max_pending == 0)
        c->max_pending = default_max_pending(c->workers);
    if (check_tls(c, err, errlen) < 0)
        return -1;
    return check_jwt(c, err, errlen);
}
