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
    "sentinel://[user:password@]host[:port][,host[:port]...]/MASTER[/db] or "        \
    "cluster://[user:password@]host:port[,host:port...]"
#define SENTINEL_PORT 26379

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
    for (size_t i = 0; i < u->nsentinels; i++)
        free(u->sentinels[i].host);
    free(u->sentinels);
    free(u->master);
    free(u->sentinel_user);
    free(u->sentinel_password);
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

static bool is_host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
}

static bool is_ipv6_char(char c)
{
    return text_hex_value(c) >= 0 || c == ':' || c == '.';
}

/* host[:port] or [ipv6][:port], s[0..len), into *host_out (new) and *port_out. */
static int parse_hostport(const char *s, size_t len, long port, char **host_out, int *port_out,
                          char *err, size_t errlen)
{
    const char *end = s + len, *host = s, *p;
    size_t hlen;

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
    *host_out = strndup(host, hlen);
    if (*host_out == NULL)
        return fail(err, errlen, "redis URL: out of memory");
    *port_out = (int)port;
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
    if (parse_hostport(hp, hplen, 6379, &u->host, &u->port, err, errlen) < 0)
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

static bool is_master_char(char c)
{
    return is_host_char(c) || c == ':';
}

/* One query parameter of a sentinel URL, s[0..len): sentinel_user=U or sentinel_password=P. */
static int parse_sentinel_param(const char *s, size_t len, struct redis_url *u, char *err,
                                size_t errlen)
{
    static const char user[] = "sentinel_user=", pass[] = "sentinel_password=";
    char **to;
    size_t skip;
    int bad;

    if (len >= sizeof(user) - 1 && memcmp(s, user, sizeof(user) - 1) == 0) {
        to = &u->sentinel_user;
        skip = sizeof(user) - 1;
    } else if (len >= sizeof(pass) - 1 && memcmp(s, pass, sizeof(pass) - 1) == 0) {
        to = &u->sentinel_password;
        skip = sizeof(pass) - 1;
    } else {
        return fail(err, errlen,
                    "redis URL: a sentinel URL takes only ?sentinel_user=U&sentinel_password=P");
    }
    if (*to != NULL)
        return fail(err, errlen, "redis URL: %.*s given twice", (int)skip - 1, s);
    if (len == skip)
        return fail(err, errlen, "redis URL: %.*s is empty", (int)skip - 1, s);
    *to = percent_decode(s + skip, len - skip, &bad);
    if (*to == NULL && bad)
        return fail(err, errlen, "redis URL: bad %%XX escape in %.*s", (int)skip - 1, s);
    if (*to == NULL)
        return fail(err, errlen, "redis URL: out of memory");
    return 0;
}

/* host[:port],host[:port]... s[0..len), each port 26379 by default. */
static int parse_sentinels(const char *s, size_t len, struct redis_url *u, char *err, size_t errlen)
{
    const char *end = s + len, *p = s;
    size_t n = 1;

    for (size_t i = 0; i < len; i++)
        n += s[i] == ',';
    u->sentinels = calloc(n, sizeof(*u->sentinels));
    if (u->sentinels == NULL)
        return fail(err, errlen, "redis URL: out of memory");
    while (u->nsentinels < n) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma != NULL ? comma : end;
        struct redis_url_node *node = &u->sentinels[u->nsentinels];

        if (stop == p)
            return fail(err, errlen, "redis URL: empty sentinel address in the list");
        if (parse_hostport(p, (size_t)(stop - p), SENTINEL_PORT, &node->host, &node->port, err,
                           errlen) < 0)
            return -1;
        u->nsentinels++;
        p = stop + 1;
    }
    return 0;
}

/* After "sentinel://": [userinfo@]hosts/MASTER[/db][?params]. Raw '@' only in userinfo. */
static int parse_sentinel(const char *rest, struct redis_url *u, char *err, size_t errlen)
{
    const char *at = strrchr(rest, '@');
    const char *hp = at != NULL ? at + 1 : rest;
    const char *q = strchr(hp, '?');
    const char *end = q != NULL ? q : hp + strlen(hp);
    const char *slash = memchr(hp, '/', (size_t)(end - hp));
    const char *name, *name_end;

    if (memchr(hp, '#', strlen(hp)) != NULL)
        return fail(err, errlen, "redis URL: no fragment allowed; " USAGE);
    if (at != NULL && parse_userinfo(rest, (size_t)(at - rest), u, err, errlen) < 0)
        return -1;
    if (slash == NULL || slash == hp)
        return fail(err, errlen,
                    slash == hp ? "redis URL: no sentinel address; " USAGE
                                : "redis URL: the master name is missing; " USAGE);
    if (parse_sentinels(hp, (size_t)(slash - hp), u, err, errlen) < 0)
        return -1;
    name = slash + 1;
    name_end = memchr(name, '/', (size_t)(end - name));
    if (name_end == NULL)
        name_end = end;
    if (name_end == name)
        return fail(err, errlen, "redis URL: the master name is missing; " USAGE);
    if (name_end - name > REDIS_URL_MASTER_MAX)
        return fail(err, errlen, "redis URL: master name over %d bytes", REDIS_URL_MASTER_MAX);
    for (const char *c = name; c < name_end; c++) {
        if (!is_master_char(*c))
            return fail(err, errlen,
                        "redis URL: bad master name \"%.*s\" (letters, digits, '.', '-', '_', ':')",
                        (int)(name_end - name), name);
    }
    u->master = strndup(name, (size_t)(name_end - name));
    if (u->master == NULL)
        return fail(err, errlen, "redis URL: out of memory");
    if (name_end < end && name_end + 1 < end &&
        parse_db(name_end + 1, (size_t)(end - name_end - 1), u, err, errlen) < 0)
        return -1;
    while (q != NULL) {
        const char *p = q + 1, *amp = strchr(p, '&');
        size_t plen = amp != NULL ? (size_t)(amp - p) : strlen(p);

        if (parse_sentinel_param(p, plen, u, err, errlen) < 0)
            return -1;
        q = amp;
    }
    if (u->sentinel_user != NULL && u->sentinel_password == NULL)
        return fail(err, errlen, "redis URL: sentinel_user given without sentinel_password");
    return 0;
}

int redis_url_check_addr(const char *host, size_t hlen, const char *port, size_t plen, int *out)
{
    long v;

    if (hlen == 0 || hlen > 255)
        return -1;
    for (size_t i = 0; i < hlen; i++) {
        if (!is_host_char(host[i]) && host[i] != ':')
            return -1;
    }
    if (parse_number(port, plen, 1, 65535, &v) < 0)
        return -1;
    *out = (int)v;
    return 0;
}

int redis_url_switch_master(const char *msg, size_t len, const char *master, char *host,
                            size_t hostcap, int *port)
{
    const char *f[5], *p = msg, *end = msg + len;
    size_t n[5], k = 0;
    bool more = true; /* fields left after the last one taken */

    while (k < 5 && more) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));

        f[k] = p;
        n[k] = sp != NULL ? (size_t)(sp - p) : (size_t)(end - p);
        k++;
        more = sp != NULL;
        p = sp != NULL ? sp + 1 : end;
    }
    if (n[0] != strlen(master) || memcmp(f[0], master, n[0]) != 0)
        return 0;
    if (k != 5 || more || n[3] >= hostcap || redis_url_check_addr(f[3], n[3], f[4], n[4], port) < 0)
        return -1;
    memcpy(host, f[3], n[3]);
    host[n[3]] = '\0';
    return 1;
}

#define MAX_SEEDS 64

/* cluster://[userinfo@]host[:port][,host[:port]...]: a database is refused (a cluster
 * has only db 0), every seed is kept; the first is also u->host and u->port. */
static int parse_cluster(const char *rest, struct redis_url *u, char *err, size_t errlen)
{
    const char *at = strrchr(rest, '@');
    const char *hp = at != NULL ? at + 1 : rest;
    const char *end = hp + strcspn(hp, "/?#");

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
        if (parse_hostport(hp, len, 6379, &u->seeds[u->nseeds].host, &u->seeds[u->nseeds].port,
                           err, errlen) < 0)
            return -1;
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
    else if (strncasecmp(url, "sentinel://", 11) == 0)
        r = parse_sentinel(url + 11, u, err, errlen);
    else if (strncasecmp(url, "rediss://", 9) == 0)
        r = fail(err, errlen, "redis URL: TLS (rediss://) is not supported");
    else
        r = fail(err, errlen, "redis URL: " USAGE);
    if (r < 0)
        redis_url_cleanup(u);
    return r;
}
