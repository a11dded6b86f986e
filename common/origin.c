#include "common/origin.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>

/*
 * A browser serialises the Origin it sends (RFC 6454 §6.2, the URL standard's origin
 * serialisation): lowercase scheme and host, IDNs as punycode, no default port, IPv6
 * in brackets. The allowed list goes through the same parser, so the two compare
 * as plain values. Anything the parser does not know is refused rather than guessed
 * at: a check that a crafted header could slip past ("https://good.com@evil.com",
 * "https://good.com.evil.com") is worse than one that is strict.
 */

static int fail(const char **why, const char *text)
{
    if (why != NULL)
        *why = text;
    return -1;
}

static bool is_host_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
}

/* What ended a host or port early, said for the person who wrote the flag. */
static const char *why_stop(unsigned char c, const char *otherwise)
{
    switch (c) {
    case '/':
        return "an origin has no path, not even \"/\" (scheme://host[:port])";
    case '?':
    case '#':
        return "an origin has no query or fragment";
    case '@':
        return "an origin has no user or password";
    case '*':
        return "'*' is allowed only as a whole first label (https://*.example.com)";
    default:
        return otherwise;
    }
}

/* The URL standard reads a host whose last label is a number (decimal or 0x) as an
 * IPv4 address, which browsers then send as a dotted quad. */
static bool ends_in_number(const char *host)
{
    const char *last = strrchr(host, '.');

    last = last != NULL ? last + 1 : host;
    if (last[0] == '0' && last[1] == 'x')
        return true;
    return last[0] != '\0' && strspn(last, "0123456789") == strlen(last);
}

/* host[0..len) is a DNS name or IPv4 address; copied lowercase into o->host. */
static int parse_name(struct origin *o, const char *host, size_t len, const char **why)
{
    size_t label = 0, labels = 1;
    unsigned char a4[4];
    char again[INET_ADDRSTRLEN];

    if (len == 0)
        return fail(why, "missing host");
    if (len > ORIGIN_HOST_MAX)
        return fail(why, "host longer than 253 bytes");
    for (size_t i = 0; i < len; i++) {
        char c = host[i];
        if (c == '.') {
            if (label == 0)
                return fail(why, "empty label in host");
            label = 0;
            labels++;
        } else if (++label > 63) {
            return fail(why, "host label longer than 63 bytes");
        }
        o->host[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    o->host[len] = '\0';
    if (label == 0)
        return fail(why, "empty label in host (no final dot)");
    if (ends_in_number(o->host)) {
        if (o->wildcard)
            return fail(why, "a wildcard needs a DNS name after \"*.\"");
        if (inet_pton(AF_INET, o->host, a4) != 1 ||
            inet_ntop(AF_INET, a4, again, sizeof(again)) == NULL || strcmp(again, o->host) != 0)
            return fail(why, "not a dotted-quad IPv4 address");
    }
    if (o->wildcard && labels < 2)
        return fail(why, "a wildcard needs two labels after \"*.\" at least");
    return 0;
}

/* "[" IPv6 "]" at p; sets *end past the "]". */
static int parse_ipv6(struct origin *o, const char *p, const char **end, const char **why)
{
    const char *close = strchr(p, ']');
    char text[INET6_ADDRSTRLEN];
    unsigned char a6[16];
    size_t n;

    if (o->wildcard)
        return fail(why, "a wildcard needs a DNS name after \"*.\"");
    if (close == NULL)
        return fail(why, "IPv6 address without ']'");
    n = (size_t)(close - p - 1);
    if (n >= sizeof(text))
        return fail(why, "not an IPv6 address");
    memcpy(text, p + 1, n);
    text[n] = '\0';
    if (inet_pton(AF_INET6, text, a6) != 1 || inet_ntop(AF_INET6, a6, text, sizeof(text)) == NULL)
        return fail(why, "not an IPv6 address");
    snprintf(o->host, sizeof(o->host), "[%s]", text);
    *end = close + 1;
    return 0;
}

/* ":" 1*5DIGIT, 1-65535, no leading zero; absent: the scheme's default. */
static int parse_port(struct origin *o, const char *p, const char **why)
{
    unsigned long port = 0;
    size_t n;

    o->port = o->https ? 443 : 80;
    if (*p == '\0')
        return 0;
    if (*p != ':')
        return fail(why, why_stop((unsigned char)*p, "bad character after host"));
    p++;
    n = strspn(p, "0123456789");
    if (p[n] != '\0')
        return fail(why, why_stop((unsigned char)p[n], "port must be 1-65535"));
    if (n == 0 || n > 5 || p[0] == '0')
        return fail(why, "port must be 1-65535");
    for (size_t i = 0; i < n; i++)
        port = port * 10 + (unsigned long)(p[i] - '0');
    if (port > 65535)
        return fail(why, "port must be 1-65535");
    o->port = (uint16_t)port;
    return 0;
}

static int parse(struct origin *o, const char *s, bool wildcard_ok, const char **why)
{
    const char *p = s, *end;

    memset(o, 0, sizeof(*o));
    if (strncasecmp(p, "https://", 8) == 0) {
        o->https = true;
        p += 8;
    } else if (strncasecmp(p, "http://", 7) == 0) {
        p += 7;
    } else {
        return fail(why, strcmp(s, "null") == 0
                             ? "\"null\" cannot be allowed: any site can send it from a "
                               "sandboxed frame"
                             : "expected http://host[:port] or https://host[:port]");
    }
    if (wildcard_ok && p[0] == '*' && p[1] == '.') {
        o->wildcard = true;
        p += 2;
    }
    if (*p == '[') {
        if (parse_ipv6(o, p, &end, why) < 0)
            return -1;
    } else {
        for (end = p; is_host_char((unsigned char)*end); end++)
            ;
        if (*end != '\0' && *end != ':')
            return fail(why, why_stop((unsigned char)*end, "bad character in host"));
        if (parse_name(o, p, (size_t)(end - p), why) < 0)
            return -1;
    }
    return parse_port(o, end, why);
}

static bool same(const struct origin *a, const struct origin *b)
{
    return a->https == b->https && a->wildcard == b->wildcard && a->port == b->port &&
           strcmp(a->host, b->host) == 0;
}

int origin_list_add(struct origin_list *l, const char *s, const char **why)
{
    struct origin o;

    if (parse(&o, s, true, why) < 0)
        return -1;
    for (size_t i = 0; i < l->n; i++)
        if (same(&l->o[i], &o))
            return 0;
    if (l->n == ORIGIN_LIST_MAX)
        return fail(why, "too many allowed origins (at most 32)");
    l->o[l->n++] = o;
    return 0;
}

/* host is one label followed by "." and suffix (both already lowercase). */
static bool one_label_over(const char *host, const char *suffix)
{
    size_t h = strlen(host), s = strlen(suffix);
    const char *dot;

    if (host[0] == '[' || h < s + 2)
        return false;
    dot = host + (h - s - 1);
    return *dot == '.' && strcmp(dot + 1, suffix) == 0 && memchr(host, '.', h - s - 1) == NULL;
}

bool origin_allowed(const struct origin_list *l, const char *origin_header)
{
    struct origin o;

    if (l->n == 0 || origin_header == NULL)
        return true;
    if (parse(&o, origin_header, false, NULL) < 0)
        return false; /* "null" and everything else that is not one origin */
    for (size_t i = 0; i < l->n; i++) {
        const struct origin *a = &l->o[i];
        if (a->https != o.https || a->port != o.port)
            continue;
        if (a->wildcard ? one_label_over(o.host, a->host) : strcmp(a->host, o.host) == 0)
            return true;
    }
    return false;
}

size_t origin_format(const struct origin *o, char *out, size_t cap)
{
    char port[8] = "";
    int n;

    if (o->port != (o->https ? 443 : 80))
        snprintf(port, sizeof(port), ":%u", (unsigned)o->port);
    n = snprintf(out, cap, "%s://%s%s%s", o->https ? "https" : "http", o->wildcard ? "*." : "",
                 o->host, port);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}
