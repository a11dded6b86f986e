/* SHA-1 comes from OpenSSL's low-level functions, deprecated in 3.0 but kept: the EVP
 * path loads OpenSSL 3's provider tables on first use, 2.3 MB of resident memory in
 * every worker that a plain gateway would pay for one digest a handshake. */
#define OPENSSL_SUPPRESS_DEPRECATED

#include "common/ws_hs.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "common/base64.h"
#include "common/text.h"

#define WS_HS_GUID       "258EAFA5-E914-47DA-95CA-C5AB0DC85B11" /* RFC 6455 §1.3 */
#define WS_HS_KEY_LEN    24  /* base64 of 16 bytes with "==", RFC 6455 §4.1 */
#define WS_HS_MAX_PARAMS 256 /* bounds the allocations one request can cause */

/*
 * The head is gathered whole, then judged once: the verdict depends on the bytes
 * only, never on how they were cut. While gathering, a NUL, a bare LF or a bare CR
 * fails at once (RFC 7230 §3.5 allows neither here; we do not guess where a line
 * ends, the trick request smuggling relies on), so a client that ends its lines
 * with LF alone gets 400 instead of waiting for a blank line that never comes.
 *
 * Judging parses the head in place: each CRLF becomes NULs, header names and values
 * point into h->buf. Order of checks: request line (400), method (405), header
 * syntax (400/431), target (400), Host (400), then the upgrade itself.
 * The target must be in origin-form ("/path?query"); absolute-form is refused (400).
 */

static int verdict(struct ws_hs *h, int status, const char *why)
{
    h->status = status;
    h->why = why;
    return 0;
}

/* Sticky like any verdict: the caller closes the connection after -1. */
static ssize_t out_of_memory(struct ws_hs *h)
{
    verdict(h, 500, "out of memory");
    return -1;
}

/* tchar, RFC 7230 §3.2.6 */
static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* pchar, "/", "?" and "%" of RFC 3986 §3.3-3.4, plus "#" (its fragment is cut off) */
static bool is_target_char(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != '\0' && strchr("-._~!$&'()*+,;=:@/?%#", c) != NULL;
}

/*
 * Percent-decodes in[0..n) into out (n + 1 bytes suffice), NUL-terminated. '+' is a
 * space when plus is set (query strings). False on a bad escape or on "%00", which
 * would cut the NUL-terminated result short.
 */
static bool pct_decode(char *out, const char *in, size_t n, bool plus)
{
    size_t i;
    int hi, lo;

    for (i = 0; i < n; i++) {
        if (in[i] == '%') {
            if (n - i < 3)
                return false;
            hi = text_hex_value((unsigned char)in[i + 1]);
            lo = text_hex_value((unsigned char)in[i + 2]);
            if (hi < 0 || lo < 0 || (hi | lo) == 0)
                return false;
            *out++ = (char)(hi << 4 | lo);
            i += 2;
        } else if (plus && in[i] == '+') {
            *out++ = ' ';
        } else {
            *out++ = in[i];
        }
    }
    *out = '\0';
    return true;
}

/* Grows h->buf geometrically to hold need bytes, never beyond max_header + 1. */
static int reserve(struct ws_hs *h, size_t need)
{
    size_t lim = h->max_header + 1, cap = h->cap > 0 ? h->cap : 256;
    char *p;

    if (need <= h->cap)
        return 0;
    while (cap < need)
        cap = cap > lim / 2 ? lim : cap * 2;
    if (cap > lim)
        cap = lim;
    p = realloc(h->buf, cap);
    if (p == NULL)
        return -1;
    h->buf = p;
    h->cap = cap;
    return 0;
}

/* Headers named name: how many, and the value of the first. */
static size_t header_count(const struct ws_hs *h, const char *name, const char **first)
{
    size_t i, n = 0;

    for (i = 0; i < h->nheaders; i++) {
        if (strcasecmp(h->headers[i].name, name) != 0)
            continue;
        if (n++ == 0 && first != NULL)
            *first = h->headers[i].value;
    }
    return n;
}

/*
 * Whether the comma lists of every header named name (RFC 7230 §7: repeated lines
 * combine, empty elements are allowed) hold want, case-insensitive. Each element must
 * be a token, or token "/" token when slash is set (Upgrade's protocol/version);
 * *bad is set otherwise.
 */
static bool list_has(const struct ws_hs *h, const char *name, const char *want, bool slash,
                     bool *bad)
{
    size_t i, len, want_len = strlen(want), slashes;
    const char *p, *e;
    bool found = false;

    for (i = 0; i < h->nheaders; i++) {
        if (strcasecmp(h->headers[i].name, name) != 0)
            continue;
        for (p = h->headers[i].value; *p != '\0'; p = *e == ',' ? e + 1 : e) {
            while (*p == ' ' || *p == '\t')
                p++;
            for (e = p, slashes = 0; *e != '\0' && *e != ','; e++) {
                if (*e == '/')
                    slashes++;
            }
            len = (size_t)(e - p);
            while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
                len--;
            if (len == 0)
                continue;
            if (slashes > (slash ? 1u : 0u) || p[0] == '/' || p[len - 1] == '/')
                *bad = true;
            for (size_t k = 0; k < len; k++) {
                if (!is_tchar((unsigned char)p[k]) && p[k] != '/')
                    *bad = true;
            }
            if (len == want_len && strncasecmp(p, want, len) == 0)
                found = true;
        }
    }
    return found;
}

/*
 * Strict base64 of exactly 16 bytes, RFC 6455 §4.1: 22 alphabet characters, "==",
 * and zero unused bits (RFC 4648 §3.5: the 22nd character carries 2 data bits and
 * 4 pad bits), so that every key has exactly one spelling.
 */
static bool key_is_valid(const char *key)
{
    size_t i;

    if (strlen(key) != WS_HS_KEY_LEN || key[22] != '=' || key[23] != '=')
        return false;
    for (i = 0; i < 22; i++) {
        if (base64_value((unsigned char)key[i], false) < 0)
            return false;
    }
    return (base64_value((unsigned char)key[21], false) & 0x0f) == 0;
}

/* Splits q on '&' into h->params; empty pieces ("a&&b", a trailing '&') are skipped. */
static int parse_query(struct ws_hs *h, const char *q)
{
    const char *s, *e, *eq;
    size_t n = 0, klen, vlen;
    char *block;

    for (s = q; *s != '\0'; s = *e == '&' ? e + 1 : e) {
        e = strchrnul(s, '&');
        if (e > s)
            n++;
    }
    if (n > WS_HS_MAX_PARAMS)
        return verdict(h, 400, "too many query parameters");
    if (n == 0)
        return 0;
    h->params = malloc(n * sizeof(*h->params));
    if (h->params == NULL)
        return -1;
    for (s = q; *s != '\0'; s = *e == '&' ? e + 1 : e) {
        e = strchrnul(s, '&');
        if (e == s)
            continue;
        eq = memchr(s, '=', (size_t)(e - s));
        klen = (size_t)((eq != NULL ? eq : e) - s);
        vlen = eq != NULL ? (size_t)(e - eq - 1) : 0;
        /* key and value share one block, owned through key (see ws_hs_cleanup) */
        block = malloc(klen + vlen + 2);
        if (block == NULL)
            return -1;
        if (!pct_decode(block, s, klen, true) ||
            !pct_decode(block + klen + 1, eq != NULL ? eq + 1 : e, vlen, true)) {
            free(block);
            return verdict(h, 400, "bad escape in query");
        }
        h->params[h->nparams].key = block;
        h->params[h->nparams].value = block + klen + 1;
        h->nparams++;
    }
    return 0;
}

/* origin-form, RFC 7230 §5.3.1: absolute-path [ "?" query ] */
static int parse_target(struct ws_hs *h, char *t)
{
    char *p, *q;
    size_t len;

    if (t[0] != '/')
        return verdict(h, 400, "request target is not a path");
    for (p = t; *p != '\0'; p++) {
        if (!is_target_char((unsigned char)*p))
            return verdict(h, 400, "bad character in request target");
    }
    p = strchr(t, '#');
    if (p != NULL)
        *p = '\0';
    q = strchr(t, '?');
    if (q != NULL) {
        *q++ = '\0';
        h->query = q;
    }
    len = strlen(t);
    h->path = malloc(len + 1);
    if (h->path == NULL)
        return -1;
    if (!pct_decode(h->path, t, len, false)) {
        free(h->path); /* half decoded: no path rather than a wrong one */
        h->path = NULL;
        return verdict(h, 400, "bad escape in path");
    }
    return q != NULL ? parse_query(h, q) : 0;
}

/*
 * "Name: value" lines up to the blank line, RFC 7230 §3.2; p is NUL-terminated.
 * The index is sized from the line count, so a head gathered across many reads
 * holds no index while it waits. -1: out of memory.
 */
static int parse_headers(struct ws_hs *h, char *p)
{
    char *eol, *q, *v, *e;
    size_t lines = 0;

    for (q = p; (q = strchr(q, '\n')) != NULL; q++)
        lines++;
    lines--; /* the blank line; every line ends in CRLF: feed checked */
    if (lines > WS_HS_MAX_HEADERS)
        lines = WS_HS_MAX_HEADERS; /* the loop below says 431 at the next line */
    if (lines > 0) {
        h->headers = malloc(lines * sizeof(*h->headers));
        if (h->headers == NULL)
            return -1;
    }
    while (p[0] != '\r') {
        eol = strstr(p, "\r\n"); /* every CR is followed by LF: feed checked */
        *eol = '\0';
        if (*p == ' ' || *p == '\t')
            return verdict(h, 400, "obsolete header line folding");
        for (q = p; is_tchar((unsigned char)*q); q++)
            ;
        if (q == p || *q != ':')
            return verdict(h, 400, "malformed header line");
        *q++ = '\0';
        while (*q == ' ' || *q == '\t')
            q++;
        for (v = q; *q != '\0'; q++) {
            unsigned char c = (unsigned char)*q;
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                return verdict(h, 400, "control character in header value");
        }
        for (e = q; e > v && (e[-1] == ' ' || e[-1] == '\t'); e--)
            ;
        *e = '\0';
        if (h->nheaders == WS_HS_MAX_HEADERS)
            return verdict(h, 431, "too many header lines");
        h->headers[h->nheaders].name = p;
        h->headers[h->nheaders].value = v;
        h->nheaders++;
        p = eol + 2;
    }
    return 0;
}

/* RFC 6455 §4.2.1 on a head that ends with "\r\n\r\n" and a NUL. -1: out of memory. */
static int judge(struct ws_hs *h)
{
    char *p = h->buf, *eol, *q, *target;
    const char *key = NULL, *ver = NULL, *cl = NULL;
    bool ws, bad_upgrade = false, conn, bad_conn = false;
    size_t n;

    /* request-line = method SP request-target SP HTTP-version, RFC 7230 §3.1.1 */
    eol = strstr(p, "\r\n");
    *eol = '\0';
    for (q = p; is_tchar((unsigned char)*q); q++)
        ;
    if (q == p || *q != ' ')
        return verdict(h, 400, "malformed request line");
    n = (size_t)(q - p);
    memcpy(h->method, p, n < sizeof(h->method) ? n : sizeof(h->method) - 1);
    target = ++q;
    while ((unsigned char)*q > ' ' && (unsigned char)*q < 0x7f)
        q++;
    if (q == target || *q != ' ')
        return verdict(h, 400, "malformed request line");
    *q++ = '\0';
    if (strcmp(q, "HTTP/1.1") != 0) /* 1.0 cannot upgrade; 2 and 3 do not come this way */
        return verdict(
            h, 400, strncmp(q, "HTTP/", 5) == 0 ? "HTTP/1.1 required" : "malformed request line");
    if (strcmp(h->method, "GET") != 0) /* method is case-sensitive, RFC 7230 §3.1.1 */
        return verdict(h, 405, "method not allowed");

    if (parse_headers(h, eol + 2) < 0)
        return -1;
    if (h->status != 0)
        return 0;
    if (parse_target(h, target) < 0)
        return -1;
    if (h->status != 0)
        return 0;

    ws = list_has(h, "Upgrade", "websocket", true, &bad_upgrade);
    n = header_count(h, "Sec-WebSocket-Key", &key);
    h->upgrade = ws || n > 0;
    switch (header_count(h, "Host", NULL)) { /* RFC 7230 §5.4: every request */
    case 0:
        return verdict(h, 400, "missing Host header");
    case 1:
        break;
    default:
        return verdict(h, 400, "duplicate Host header");
    }
    if (!h->upgrade)
        return verdict(h, 426, "upgrade required");
    if (!ws || bad_upgrade)
        return verdict(h, 400, "Upgrade header without websocket");
    conn = list_has(h, "Connection", "upgrade", false, &bad_conn);
    if (!conn || bad_conn)
        return verdict(h, 400, "Connection header without upgrade");
    if (n != 1)
        return verdict(h, 400,
                       n == 0 ? "missing Sec-WebSocket-Key" : "duplicate Sec-WebSocket-Key");
    if (!key_is_valid(key))
        return verdict(h, 400, "bad Sec-WebSocket-Key");
    /* A body would be read as frames by us and as a body by a proxy in front. */
    if (header_count(h, "Transfer-Encoding", NULL) > 0 ||
        header_count(h, "Content-Length", &cl) > 1 || (cl != NULL && strcmp(cl, "0") != 0))
        return verdict(h, 400, "request body not allowed");
    if (header_count(h, "Sec-WebSocket-Version", &ver) != 1 || strcmp(ver, "13") != 0)
        return verdict(h, 426, "unsupported Sec-WebSocket-Version");
    ws_hs_accept_key(key, WS_HS_KEY_LEN, h->accept);
    return verdict(h, 101, "switching protocols");
}

void ws_hs_init(struct ws_hs *h, size_t max_header)
{
    memset(h, 0, sizeof(*h));
    /* so that max_header + 1 and the doubling in reserve() cannot wrap */
    h->max_header = max_header < SIZE_MAX / 4 ? max_header : SIZE_MAX / 4;
}

void ws_hs_cleanup(struct ws_hs *h)
{
    size_t i;

    for (i = 0; i < h->nparams; i++)
        free(h->params[i].key); /* value lives in the same block */
    free(h->params);
    free(h->headers);
    free(h->path);
    free(h->buf);
    ws_hs_init(h, h->max_header);
}

ssize_t ws_hs_feed(struct ws_hs *h, const uint8_t *buf, size_t len)
{
    size_t old = h->len, n, i;
    char c, prev;

    if (h->status != 0)
        return 0;
    n = h->max_header - h->len;
    if (n > len)
        n = len;
    if (n > 0) {
        if (reserve(h, h->len + n + 1) < 0)
            return out_of_memory(h);
        memcpy(h->buf + h->len, buf, n);
        h->len += n;
    }
    /* Only new bytes are searched; looking 3 back finds a CRLFCRLF cut anywhere. */
    for (i = h->scanned; i < h->len; i++) {
        c = h->buf[i];
        prev = i > 0 ? h->buf[i - 1] : '\0';
        if (c == '\n' && prev == '\r')
            h->request_line = true;
        if (c == '\0' || (c == '\n' && prev != '\r') || (prev == '\r' && c != '\n')) {
            h->len = i + 1;
            h->scanned = h->len;
            verdict(h, 400, c == '\0' ? "NUL in request head" : "bare CR or LF in request head");
            return (ssize_t)(h->len - old);
        }
        if (c == '\n' && i >= 3 && memcmp(h->buf + i - 3, "\r\n\r\n", 4) == 0) {
            h->len = i + 1;
            h->scanned = h->len;
            h->buf[h->len] = '\0';
            if (judge(h) < 0)
                return out_of_memory(h);
            return (ssize_t)(h->len - old);
        }
    }
    h->scanned = h->len;
    if (h->len >= h->max_header) /* full, and no blank line in it */
        verdict(h, 431, "request header too large");
    return (ssize_t)n;
}

bool ws_hs_has_request_line(const struct ws_hs *h)
{
    return h->request_line;
}

const char *ws_hs_header(const struct ws_hs *h, const char *name)
{
    const char *v = NULL;

    header_count(h, name, &v);
    return v;
}

size_t ws_hs_header_all(const struct ws_hs *h, const char *name, const char **v, size_t max)
{
    size_t i, n = 0;

    for (i = 0; i < h->nheaders; i++) {
        if (strcasecmp(h->headers[i].name, name) != 0)
            continue;
        if (n < max)
            v[n] = h->headers[i].value;
        n++;
    }
    return n;
}

const char *ws_hs_param(const struct ws_hs *h, const char *key, size_t idx)
{
    size_t i;

    for (i = 0; i < h->nparams; i++) {
        if (strcmp(h->params[i].key, key) == 0 && idx-- == 0)
            return h->params[i].value;
    }
    return NULL;
}

void ws_hs_accept_key(const char *key, size_t key_len, char out[WS_HS_ACCEPT_LEN + 1])
{
    unsigned char md[SHA_DIGEST_LENGTH];
    SHA_CTX s;

    SHA1_Init(&s);
    SHA1_Update(&s, key, key_len);
    SHA1_Update(&s, WS_HS_GUID, sizeof(WS_HS_GUID) - 1);
    SHA1_Final(md, &s);
    /* base64, RFC 4648 §4: 20 bytes are 27 characters and one '=' */
    EVP_EncodeBlock((unsigned char *)out, md, SHA_DIGEST_LENGTH);
}

/* snprintf's answer as a length, 0 when it (with its NUL) does not fit. */
static size_t fitted(int n, size_t cap)
{
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

size_t ws_hs_response_101(const struct ws_hs *h, const char *extra, char *out, size_t cap)
{
    int n;

    if (h->status != 101)
        return 0;
    /* RFC 6455 §4.2.2; no Sec-WebSocket-Protocol or -Extensions: we negotiate none */
    n = snprintf(out, cap,
                 "HTTP/1.1 101 Switching Protocols\r\n"
                 "Upgrade: websocket\r\n"
                 "Connection: Upgrade\r\n"
                 "Sec-WebSocket-Accept: %s\r\n"
                 "%s\r\n",
                 h->accept, extra != NULL ? extra : "");
    return fitted(n, cap);
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests"; /* RFC 6585 §4 */
    case 431:
        return "Request Header Fields Too Large"; /* RFC 6585 §5 */
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return NULL;
    }
}

/* An error answer with extra header lines (each ending in CRLF) before Connection. */
static size_t error_answer(int status, const char *why, const char *extra, char *out, size_t cap)
{
    const char *phrase = reason_phrase(status), *more = "";
    int n;

    if (phrase == NULL)
        return 0;
    if (why == NULL)
        why = phrase;
    if (status == 426) /* RFC 6455 §4.2.2 item 4, RFC 7231 §6.5.15 */
        more = "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n";
    else if (status == 405) /* RFC 7231 §6.5.5 */
        more = "Allow: GET\r\n";
    else if (status == 401) /* RFC 6750 §3: a bearer token was missing or refused */
        more = "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n";
    n = snprintf(out, cap,
                 "HTTP/1.1 %d %s\r\n"
                 "Content-Type: text/plain; charset=utf-8\r\n"
                 "Content-Length: %zu\r\n"
                 "%s%s"
                 "Connection: close\r\n"
                 "\r\n"
                 "%s\n",
                 status, phrase, strlen(why) + 1, more, extra, why);
    return fitted(n, cap);
}

size_t ws_hs_response_error(int status, const char *why, char *out, size_t cap)
{
    return error_answer(status, why, "", out, cap);
}

size_t ws_hs_response_retry(int status, uint32_t retry_after_s, const char *why, char *out,
                            size_t cap)
{
    char extra[40];

    snprintf(extra, sizeof(extra), "Retry-After: %u\r\n", (unsigned)retry_after_s);
    return error_answer(status, why, extra, out, cap);
}
