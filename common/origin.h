#ifndef WSGATE_COMMON_ORIGIN_H
#define WSGATE_COMMON_ORIGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The Origin check of the opening handshake (RFC 6455 §4.2.1 item 8, §10.2): the
 * origins allowed by --allow-origin, and whether a request's Origin header is one.
 *
 * An origin is scheme "://" host [":" port] (RFC 6454 §6.2), nothing more:
 *   scheme  http or https, any case
 *   host    a DNS name (labels of letters, digits, '-' and '_', 1-63 bytes each, 253
 *           in all), lowercased; a dotted-quad IPv4 address; or an IPv6 literal in
 *           brackets, kept in its canonical text form ("[0:0::1]" is "[::1]")
 *   port    1-65535; the scheme's default (80, 443) is the same as no port
 * In the allowed list only, the host may start with "*." to match exactly one more
 * label: https + "*.example.com" matches "https://a.example.com", not
 * "https://example.com" nor "https://a.b.example.com". What follows "*." must have
 * two labels at least and not be an IPv4 address ("*.com" would allow every .com site).
 * Refused in the list: paths (even "/"), queries, fragments, userinfo, "*" anywhere
 * else, other schemes, and "null" (see origin_allowed).
 *
 * Both structs are plain values: no allocation, embedded where they are used (the
 * list lives in struct config and is inherited by the workers across fork()).
 */

#define ORIGIN_HOST_MAX 253 /* RFC 1035 §2.3.4, as text without the final dot */
#define ORIGIN_LIST_MAX 32

struct origin {
    bool https;
    bool wildcard; /* host is what follows "*.": one more label must precede it */
    uint16_t port; /* as given, or the scheme's default */
    char host[ORIGIN_HOST_MAX + 1];
};

struct origin_list {
    size_t n; /* 0: no --allow-origin, every origin is allowed */
    struct origin o[ORIGIN_LIST_MAX];
};

/*
 * Parses s as an allowed origin (wildcard allowed) and appends it to l; an origin
 * already in l is not added twice. Returns 0, or -1 with a static one-line reason
 * in *why when s is not an origin or l is full (l is then unchanged).
 */
int origin_list_add(struct origin_list *l, const char *s, const char **why);

/*
 * Whether a handshake whose Origin header is origin_header (NULL when it has none)
 * may proceed:
 *   - l is empty (no --allow-origin): always true, as before the flag existed;
 *   - no Origin header: true. Browsers send Origin with every WebSocket handshake
 *     (RFC 6455 §4.1 item 8, Fetch), so its absence means a client that is not a
 *     browser, which could send any Origin it liked anyway: the check protects
 *     browser users from other sites' pages, it does not authenticate programs;
 *   - "null" (sandboxed frames, file: pages, data: URLs): false. Any site can make
 *     its page send "null" from a sandboxed iframe, so allowing it would allow
 *     every site; origin_list_add refuses it for that reason;
 *   - otherwise true only when the header parses as an origin (case-insensitive,
 *     default port or none alike) equal to an entry, or matching a wildcard entry.
 *     A list of origins, a path or anything else that is not one origin is false.
 */
bool origin_allowed(const struct origin_list *l, const char *origin_header);

/*
 * Writes o as text into out (cap bytes, NUL-terminated), as origin_list_add would
 * read it back: "https://example.com", "http://[::1]:8080", a wildcard with its
 * "*." in front of the host; the default port is left out. Returns the length, or 0 when
 * it does not fit.
 */
size_t origin_format(const struct origin *o, char *out, size_t cap);

#endif /* WSGATE_COMMON_ORIGIN_H */
