#include "common/redis_url.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/text.h"

#define USAGE                                                                    \
    "expected redis://[user:password@]host[:port][/db], unix:///path[?db=N] or " \
    "cluster://[user:password@]host:port[,host:port...]"

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen, const char *fmt,
                                                      ...)
{
    va_list ap;

    if (errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void redis_url_cleanup(struct redis_url *u)
{
    free(u->host);
    free(u->path);
    free(u->user);
    free(u->password);
    for (size_t i = 0; i < u->nseeds; i++)
        free(u->seeds[i].host);
    free(u->seeds);
    memset(u, 0, sizeof(*u));
}

/* Decodes %XX escapes of s[0..len) into a new string; NULL with *bad set on a bad escape. */
static char *percent_decode(const char *s, size_t len, int *bad)
{
    char *out = malloc(len + 1);
    size_t n = 0;

    *bad = 0;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        int hi, lo;

        if (s[i] != '%') {
            out[n++] = s[i];
            continue;
        }
        hi = len - i >= 3 ? text_hex_value(s[i + 1]) : -1;
        lo = len - i >= 3 ? text_hex_value(s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) { /* %00 would cut the string */
            *bad = 1;
            break;
        }
        out[n++] = (char)(hi * 16 + lo);
        i += 2;
    }
    if (*bad) {
        free(out);
        return NULL;
    }
    out[n] = '\0';
    return out;
}

/* A decimal number s[0..len) in min..max, without sign or leading junk. */
static int parse_number(const char *s, size_t len, long min, long max, long *out)
{
    long v = 0;

    if (len == 0 || len > 10)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_db(const char *s, size_t len, struct redis_url *u, char *err, size_t errlen)
{
    long db;

    if (parse_number(s, len, 0, INT_MAX, &db) < 0)
        return fail(err, errlen, "redis URL: database must be a number 0 or more, got \"%.*s\"",
                    (int)len, s);
    u->db = (int)db;
    return 0;
}

static int parse_userinfo(const char *s, size_t len, struct redis_url *u, char *err, size_t errlen)
{
    const char *colon = memchr(s, ':', len);
    const char *pass = s;
    size_t ulen = 0, plen = len;
    int bad;

    if (colon != NULL) {
        ulen = (size_t)(colon - s);
        pass = colon + 1;
        plen = len - ulen - 1;
    }
    if (ulen > 0 && plen == 0)
        return fail(err, errlen, "redis URL: user given without a password");
    if (ulen > 0) {
        u->user = percent_decode(s, ulen, &bad);
        if (u->user == NULL)
            goto err_decode;
    }
    if (plen > 0) {
        u->password = percent_decode(pass, plen, &bad);
        if (u->password == NULL)
            goto err_decode;
    }
    return 0;
err_decode:
    if (bad)
        return fail(err, errlen, "redis URL: bad %%XX escape in user or password");
    return fail(err, errlen, "redis URL: out of memory");
}

static int is_host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
}

static int is_ipv6_char(char c)
{
    return text_hex_value(c) >= 0 || c == ':' || c == '.';
}

/* host[:port] or [ipv6][:port], s[0..len). */
static int parse_hostport(const char *s, size_t len, struct redis_url *u, char *err, size_t errlen)
{
    const char *end = s + len, *host = s, *p;
    size_t hlen;
    long port = 6379;

    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);

        if (close == NULL)
            return fail(err, errlen, "redis URL: IPv6 address without its closing ']'");
        host = s + 1;
        hlen = (size_t)(close - host);
        for (size_t i = 0; i < hlen; i++) {
            if (!is_ipv6_char(host[i]))
                return fail(err, errlen, "redis URL: bad IPv6 address \"%.*s\"", (int)hlen, host);
        }
        if (hlen < 2)
            return fail(err, errlen, "redis URL: bad IPv6 address \"%.*s\"", (int)hlen, host);
        p = close + 1;
        if (p < end && *p != ':')
            return fail(err, errlen, "redis URL: expected ':port' after ']'");
    } else {
        p = s;
        while (p < end && *p != ':')
            p++;
        hlen = (size_t)(p - s);
        if (p < end && memchr(p + 1, ':', (size_t)(end - p - 1)) != NULL)
            return fail(err, errlen,
                        "redis URL: an IPv6 address goes in brackets: "
                        "redis://[::1]:6379");
        if (hlen == 0)
            return fail(err, errlen, "redis URL: host is missing; " USAGE);
        for (size_t i = 0; i < hlen; i++) {
            if (!is_host_char(s[i]))
                return fail(err, errlen, "redis URL: bad host \"%.*s\"", (int)hlen, s);
        }
    }
    if (p < end) {
        p++; /* ':' */
        if (parse_number(p, (size_t)(end - p), 1, 65535, &port) < 0)
            return fail(err, errlen, "redis URL: port must be 1 to 65535, got \"%.*s\"",
                        (int)(end - p), p);
    }
    u->host = strndup(host, hlen);
    if (u->host == NULL)
        return fail(err, errlen, "redis URL: out of memory");
    u->port = (int)port;
    return 0;
}

static int parse_tcp(const char *rest, struct redis_url *u, char *err, size_t errlen)
{
    const char *at = strrchr(rest, '@');
    const char *hp = at != NULL ? at + 1 : rest;
    const char *slash = strchr(hp, '/');
    size_t hplen = slash != NULL ? (size_t)(slash - hp) : strlen(hp);

    if (strpbrk(hp, "?#") != NULL)
        return fail(err, errlen, "redis URL: no query or fragment allowed; " USAGE);
    if (at != NULL && parse_userinfo(rest, (size_t)(at - rest), u, err, errlen) < 0)
        return -1;
    if (parse_hostport(hp, hplen, u, err, errlen) < 0)
        return -1;
    if (slash != NULL && slash[1] != '\0' &&
        parse_db(slash + 1, strlen(slash + 1), u, err, errlen) < 0)
        return -1;
    return 0;
}

static int parse_unix(const char *rest, struct redis_url *u, char *err, size_t errlen)
{
    const char *q = strchr(rest, '?');
    size_t plen = q != NULL ? (size_t)(q - rest) : strlen(rest);

    if (rest[0] != '/')
        return fail(err, errlen,
                    "redis URL: a unix socket needs an absolute path: "
                    "unix:///path/to.sock");
    if (plen < 2)
        return fail(err, errlen, "redis URL: unix socket path is missing");
    if (q != NULL) {
        if (strncmp(q + 1, "db=", 3) != 0)
            return fail(err, errlen, "redis URL: the only unix socket option is ?db=N");
        if (parse_db(q + 4, strlen(q + 4), u, err, errlen) < 0)
            return -1;
    }
    u->path = strndup(rest, plen);
    if (u->path == NULL)
        return fail(err, errlen, "redis URL: out of memory");
    return 0;
}

#define MAX_SEEDS 64

/* cluster://[userinfo@]host[:port][,host[:port]...]: a database is refused (a cluster
 * has only db 0), every seed is kept; the first is also u->host and u->port. */
static int parse_cluster(const char *rest, struct redis_url *u, char *err, size_t errlen)
{
    const char *at = strrchr(rest, '@');
    const char *hp = at != NULL ? at + 1 : rest;
    const char *end = hp + strcspn(hp, "/?#");
    struct redis_url one;

    if (*end == '/' && end[1] != '\0' && strcmp(end + 1, "0") != 0)
        return fail(err, errlen, "redis URL: a cluster has no database but 0");
    if (*end == '?' || *end == '#')
        return fail(err, errlen, "redis URL: no query or fragment allowed");
    if (at != NULL && parse_userinfo(rest, (size_t)(at - rest), u, err, errlen) < 0)
        return -1;
    u->seeds = calloc(MAX_SEEDS, sizeof(*u->seeds));
    if (u->seeds == NULL)
        return fail(err, errlen, "redis URL: out of memory");
    while (hp < end) {
        const char *comma = memchr(hp, ',', (size_t)(end - hp));
        size_t len = comma != NULL ? (size_t)(comma - hp) : (size_t)(end - hp);

        if (u->nseeds == MAX_SEEDS)
            return fail(err, errlen, "redis URL: more than %d cluster nodes", MAX_SEEDS);
        memset(&one, 0, sizeof(one));
        if (parse_hostport(hp, len, &one, err, errlen) < 0)
            return -1;
        u->seeds[u->nseeds].host = one.host;
        u->seeds[u->nseeds].port = one.port;
        u->nseeds++;
        hp += len + (comma != NULL);
        if (comma != NULL && hp == end)
            return fail(err, errlen, "redis URL: empty node after ','");
    }
    if (u->nseeds == 0)
        return fail(err, errlen, "redis URL: host is missing; " USAGE);
    u->host = strdup(u->seeds[0].host);
    if (u->host == NULL)
        return fail(err, errlen, "redis URL: out of memory");
    u->port = u->seeds[0].port;
    return 0;
}

int redis_url_parse(const char *url, struct redis_url *u, char *err, size_t errlen)
{
    int r;

    memset(u, 0, sizeof(*u));
    if (strncasecmp(url, "redis://", 8) == 0)
        r = parse_tcp(url + 8, u, err, errlen);
    else if (strncasecmp(url, "cluster://", 10) == 0)
        r = parse_cluster(url + 10, u, err, errlen);
    else if (strncasecmp(url, "unix://", 7) == 0)
        r = parse_unix(url + 7, u, err, errlen);
    else if (strncasecmp(url, "rediss://", 9) == 0)
        r = fail(err, errlen, "redis URL: TLS (rediss://) is not supported");
    else
        r = fail(err, errlen, "redis URL: " USAGE);
    if (r < 0)
        redis_url_cleanup(u);
    return r;
}
