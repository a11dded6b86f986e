#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/ws_hs.h"
#include "tests/unit/check.h"

#define RL   "GET /chat HTTP/1.1\r\n"
#define HOST "Host: server.example.com\r\n"
#define UPG  "Upgrade: websocket\r\n"
#define CONN "Connection: Upgrade\r\n"
#define KEY  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
#define VER  "Sec-WebSocket-Version: 13\r\n"
#define REST HOST UPG CONN KEY VER "\r\n"

#define SAMPLE_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

/* RFC 6455 §1.3's request, with a query that exercises the decoder */
static const char valid_req[] = "GET /chat%20room/x?group=a&group=b%20c&user=u+1&flag HTTP/1.1\r\n"
                                "Host: server.example.com\r\n"
                                "Upgrade: websocket\r\n"
                                "Connection: Upgrade\r\n"
                                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                "Origin: http://example.com\r\n"
                                "Sec-WebSocket-Version: 13\r\n"
                                "\r\n";

/* Feeds s[0..n) from an allocation of exactly n bytes, so ASan sees any over-read. */
static ssize_t feed_exact(struct ws_hs *h, const char *s, size_t n)
{
    uint8_t *p = malloc(n > 0 ? n : 1);
    ssize_t r;

    if (p == NULL)
        return -1;
    memcpy(p, s, n);
    r = ws_hs_feed(h, p, n);
    free(p);
    return r;
}

/* Feeds s[0..n) in pieces of step bytes until a verdict; returns bytes consumed. */
static size_t feed_steps(struct ws_hs *h, const char *s, size_t n, size_t step)
{
    size_t off = 0, k;
    ssize_t r;

    while (off < n && h->status == 0) {
        k = n - off < step ? n - off : step;
        r = feed_exact(h, s + off, k);
        if (r < 0)
            return SIZE_MAX;
        off += (size_t)r;
        if ((size_t)r < k)
            break;
    }
    return off;
}

/* Everything the parser concluded, as one string to compare across cuts. */
static void summary(const struct ws_hs *h, char *out, size_t cap)
{
    size_t i;
    int n;

    n = snprintf(out, cap, "%d|%s|%d|%s|%s|%s|%s|%zu|", h->status, h->why ? h->why : "-",
                 h->upgrade, h->method, h->path ? h->path : "-", h->query ? h->query : "-",
                 h->accept, h->nheaders);
    for (i = 0; i < h->nparams && n > 0 && (size_t)n < cap; i++)
        n += snprintf(out + n, cap - (size_t)n, "[%s=%s]", h->params[i].key, h->params[i].value);
}

static int status_of(const char *req, size_t n, size_t max, size_t step)
{
    struct ws_hs h;
    int st;

    ws_hs_init(&h, max);
    feed_steps(&h, req, n, step);
    st = h.status;
    CHECK(st == 0 || h.why != NULL);
    ws_hs_cleanup(&h);
    return st;
}

static void test_ws_hs_rfc_sample_accept(void)
{
    char out[WS_HS_ACCEPT_LEN + 1];

    ws_hs_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, out);
    CHECK(strcmp(out, SAMPLE_ACCEPT) == 0);
}

/* A key's 22nd character carries 2 data bits and 4 zero bits: only A, Q, g and w
 * end a key that has one spelling (RFC 4648 §3.5). */
static void test_ws_hs_key_unused_bits(void)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char req[512];
    int good = 0;

    for (size_t i = 0; i < 64; i++) {
        int n = snprintf(
            req, sizeof(req),
            RL HOST UPG CONN "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZ%c==\r\n" VER "\r\n", b64[i]);
        int st = status_of(req, (size_t)n, 8192, (size_t)n);
        CHECK(st == ((i & 15) == 0 ? 101 : 400));
        good += st == 101;
    }
    CHECK(good == 4);
}

static void test_ws_hs_valid_request(void)
{
    struct ws_hs h;
    size_t n = sizeof(valid_req) - 1;

    ws_hs_init(&h, 8192);
    CHECK(feed_exact(&h, valid_req, n) == (ssize_t)n);
    CHECK(h.status == 101 && h.upgrade);
    CHECK(strcmp(h.accept, SAMPLE_ACCEPT) == 0);
    CHECK(strcmp(h.method, "GET") == 0);
    CHECK(h.path != NULL && strcmp(h.path, "/chat room/x") == 0);
    CHECK(h.query != NULL && strcmp(h.query, "group=a&group=b%20c&user=u+1&flag") == 0);
    CHECK(h.nparams == 4);
    if (h.nparams == 4) {
        CHECK(strcmp(h.params[0].key, "group") == 0 && strcmp(h.params[0].value, "a") == 0);
        CHECK(strcmp(h.params[1].key, "group") == 0 && strcmp(h.params[1].value, "b c") == 0);
        CHECK(strcmp(h.params[2].key, "user") == 0 && strcmp(h.params[2].value, "u 1") == 0);
        CHECK(strcmp(h.params[3].key, "flag") == 0 && strcmp(h.params[3].value, "") == 0);
    }
    CHECK(strcmp(ws_hs_param(&h, "group", 0), "a") == 0);
    CHECK(strcmp(ws_hs_param(&h, "group", 1), "b c") == 0);
    CHECK(ws_hs_param(&h, "group", 2) == NULL);
    CHECK(ws_hs_param(&h, "nope", 0) == NULL);
    CHECK(h.nheaders == 6);
    CHECK(strcmp(ws_hs_header(&h, "origin"), "http://example.com") == 0);
    CHECK(strcmp(ws_hs_header(&h, "HOST"), "server.example.com") == 0);
    CHECK(ws_hs_header(&h, "Cookie") == NULL);
    {
        const char *v[2];
        CHECK(ws_hs_header_all(&h, "host", v, 2) == 1 && strcmp(v[0], "server.example.com") == 0);
        CHECK(ws_hs_header_all(&h, "Cookie", v, 2) == 0);
    }
    /* a verdict is final */
    CHECK(feed_exact(&h, "x", 1) == 0);
    CHECK(h.status == 101);
    ws_hs_cleanup(&h);
    CHECK(h.buf == NULL && h.path == NULL && h.params == NULL && h.status == 0);
}

/* Repeated list headers: every line, in order (Sec-WebSocket-Extensions). */
static void test_ws_hs_header_all(void)
{
    static const char req[] = RL HOST UPG CONN "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" VER
        "Sec-WebSocket-Extensions: a\r\nX: y\r\nsec-websocket-extensions: b; c=1\r\n"
        "Sec-WebSocket-Extensions: d\r\n\r\n";
    struct ws_hs h;
    const char *v[2];

    ws_hs_init(&h, 8192);
    CHECK(feed_exact(&h, req, sizeof(req) - 1) == (ssize_t)(sizeof(req) - 1) && h.status == 101);
    CHECK(ws_hs_header_all(&h, "Sec-WebSocket-Extensions", v, 2) == 3);
    CHECK(strcmp(v[0], "a") == 0 && strcmp(v[1], "b; c=1") == 0);
    ws_hs_cleanup(&h);
}

static void test_ws_hs_same_verdict_however_cut(void)
{
    size_t n = sizeof(valid_req) - 1, cut, step;
    char want[2048], got[2048];
    struct ws_hs h;
    uint32_t seed = 12345;

    ws_hs_init(&h, 8192);
    feed_exact(&h, valid_req, n);
    summary(&h, want, sizeof(want));
    ws_hs_cleanup(&h);
    CHECK(strncmp(want, "101|", 4) == 0);

    for (cut = 0; cut <= n; cut++) {
        ws_hs_init(&h, 8192);
        ssize_t a = feed_exact(&h, valid_req, cut);
        ssize_t b = feed_exact(&h, valid_req + cut, n - cut);
        CHECK(a == (ssize_t)cut && b == (ssize_t)(n - cut));
        summary(&h, got, sizeof(got));
        CHECK(strcmp(want, got) == 0);
        ws_hs_cleanup(&h);
    }
    for (step = 1; step <= 7; step++) {
        ws_hs_init(&h, 8192);
        CHECK(feed_steps(&h, valid_req, n, step) == n);
        summary(&h, got, sizeof(got));
        CHECK(strcmp(want, got) == 0);
        ws_hs_cleanup(&h);
    }
    /* seeded random splits */
    for (int round = 0; round < 200; round++) {
        size_t off = 0;

        ws_hs_init(&h, 8192);
        while (off < n) {
            seed = seed * 1103515245u + 12345u;
            size_t k = 1 + (seed >> 16) % 40;
            if (k > n - off)
                k = n - off;
            CHECK(feed_exact(&h, valid_req + off, k) == (ssize_t)k);
            off += k;
        }
        summary(&h, got, sizeof(got));
        CHECK(strcmp(want, got) == 0);
        ws_hs_cleanup(&h);
    }
}

static void test_ws_hs_leaves_frame_bytes(void)
{
    static const char req[] = RL REST "\x81\x85";
    size_t n = sizeof(req) - 1;
    struct ws_hs h;

    ws_hs_init(&h, 4096);
    CHECK(feed_exact(&h, req, n) == (ssize_t)(n - 2));
    CHECK(h.status == 101);
    ws_hs_cleanup(&h);
    /* byte by byte: the frame bytes are refused one at a time */
    ws_hs_init(&h, 4096);
    CHECK(feed_steps(&h, req, n, 1) == n - 2);
    CHECK(h.status == 101);
    CHECK(feed_exact(&h, req + n - 2, 2) == 0);
    ws_hs_cleanup(&h);
}

static void test_ws_hs_lists_and_case(void)
{
    static const char *const ok[] = {
        RL HOST UPG "Connection: keep-alive, Upgrade\r\n" KEY VER "\r\n",
        RL HOST UPG "Connection: keep-alive\r\nConnection: upgrade\r\n" KEY VER "\r\n",
        RL HOST "Upgrade: h2c, WebSocket\r\n" CONN KEY VER "\r\n",
        RL HOST "Upgrade: ,websocket,\r\n"
                "Connection: ,, Upgrade ,\r\n" KEY VER "\r\n",
        RL "host: x\r\nUPGRADE: websocket\r\nconnection: UPGRADE\r\n"
           "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nSEC-WEBSOCKET-VERSION: 13\r\n\r\n",
        RL "Host:x\r\nUpgrade:\twebsocket \t\r\n" CONN KEY VER "\r\n",
        RL HOST UPG CONN KEY VER "Content-Length: 0\r\n\r\n",
        "GET /a#frag HTTP/1.1\r\n" REST,
        "GET / HTTP/1.1\r\n" REST,
    };

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        int st = status_of(ok[i], strlen(ok[i]), 4096, SIZE_MAX);
        CHECK(st == 101);
        if (st != 101)
            fprintf(stderr, "  case %zu: %d\n", i, st);
    }
}

static void test_ws_hs_bad_requests(void)
{
    static const struct {
        const char *req;
        int status;
    } cases[] = {
        /* method */
        {"POST /chat HTTP/1.1\r\n" REST, 405},
        {"get /chat HTTP/1.1\r\n" REST, 405},
        {"OPTIONS * HTTP/1.1\r\n" REST, 405},
        {"POST /chat HTTP/1.1\r\n" HOST " folded\r\n\r\n", 405},
        /* request line */
        {"GET /chat HTTP/1.0\r\n" REST, 400},
        {"GET /chat HTTP/2.0\r\n" REST, 400},
        {"GET /chat http/1.1\r\n" REST, 400},
        {"GET /chat HTTP/1.1 \r\n" REST, 400},
        {"GET  /chat HTTP/1.1\r\n" REST, 400},
        {"GET /chat  HTTP/1.1\r\n" REST, 400},
        {"GET /chat\r\n" REST, 400},
        {" GET /chat HTTP/1.1\r\n" REST, 400},
        {"G(T /chat HTTP/1.1\r\n" REST, 400},
        {"\r\n" RL REST, 400},
        {"\r\n\r\n", 400},
        /* target */
        {"GET chat HTTP/1.1\r\n" REST, 400},
        {"GET * HTTP/1.1\r\n" REST, 400},
        {"GET http://server.example.com/chat HTTP/1.1\r\n" REST, 400},
        {"GET /a<b> HTTP/1.1\r\n" REST, 400},
        {"GET /a\"b HTTP/1.1\r\n" REST, 400},
        {"GET /caf\xc3\xa9 HTTP/1.1\r\n" REST, 400},
        {"GET /a%00b HTTP/1.1\r\n" REST, 400},
        {"GET /a%zz HTTP/1.1\r\n" REST, 400},
        {"GET /a%2 HTTP/1.1\r\n" REST, 400},
        {"GET /a% HTTP/1.1\r\n" REST, 400},
        {"GET /?a=%zz HTTP/1.1\r\n" REST, 400},
        {"GET /?a=%00 HTTP/1.1\r\n" REST, 400},
        {"GET /?%4=1 HTTP/1.1\r\n" REST, 400},
        /* header syntax */
        {RL "Host : x\r\n" UPG CONN KEY VER "\r\n", 400},
        {RL HOST " folded\r\n" UPG CONN KEY VER "\r\n", 400},
        {RL HOST "\tfolded\r\n" UPG CONN KEY VER "\r\n", 400},
        {RL ": empty name\r\n" REST, 400},
        {RL "no colon\r\n" REST, 400},
        {RL "NoColon\r\n" REST, 400},
        {RL "X(y): z\r\n" REST, 400},
        {RL "X-A: a\x01z\r\n" REST, 400},
        {RL "X-A: a\x7fz\r\n" REST, 400},
        {"GET /chat HTTP/1.1\nHost: x\n\n", 400},
        {RL "Host: x\n" UPG CONN KEY VER "\r\n", 400},
        {RL "Host: x\r\r\n" UPG CONN KEY VER "\r\n", 400},
        {RL "Host: a\rb\r\n" UPG CONN KEY VER "\r\n", 400},
        /* Host */
        {RL UPG CONN KEY VER "\r\n", 400},
        {RL HOST HOST UPG CONN KEY VER "\r\n", 400},
        {RL "\r\n", 400},
        /* Upgrade */
        {RL HOST CONN KEY VER "\r\n", 400},
        {RL HOST "Upgrade: h2c\r\n" CONN KEY VER "\r\n", 400},
        {RL HOST "Upgrade: websockets\r\n" CONN KEY VER "\r\n", 400},
        {RL HOST "Upgrade: websocket; x\r\n" CONN KEY VER "\r\n", 400},
        /* Connection */
        {RL HOST UPG KEY VER "\r\n", 400},
        {RL HOST UPG "Connection: keep-alive\r\n" KEY VER "\r\n", 400},
        {RL HOST UPG "Connection: upgrades\r\n" KEY VER "\r\n", 400},
        {RL HOST UPG "Connection: keep alive, upgrade\r\n" KEY VER "\r\n", 400},
        /* Sec-WebSocket-Key */
        {RL HOST UPG CONN VER "\r\n", 400},
        {RL HOST UPG CONN KEY KEY VER "\r\n", 400},
        {RL HOST UPG CONN "Sec-WebSocket-Key: \r\n" VER "\r\n", 400},
        {RL HOST UPG CONN "Sec-WebSocket-Key: dGhlIHNhbXBsZQ==\r\n" VER "\r\n", 400},
        {RL HOST UPG CONN "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ\r\n" VER "\r\n", 400},
        {RL HOST UPG CONN "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZT0=\r\n" VER "\r\n", 400},
        {RL HOST UPG CONN "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZ!==\r\n" VER "\r\n", 400},
        {RL HOST UPG CONN "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==\r\n" VER "\r\n", 400},
        {RL HOST UPG CONN "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ===\r\n" VER "\r\n", 400},
        {RL HOST UPG CONN "Sec-WebSocket-Key: dGhlIHNhbXBs ZSBub25jZQ=\r\n" VER "\r\n", 400},
        /* a body */
        {RL HOST UPG CONN KEY VER "Transfer-Encoding: chunked\r\n\r\n", 400},
        {RL HOST UPG CONN KEY VER "Content-Length: 5\r\n\r\n", 400},
        /* Sec-WebSocket-Version */
        {RL HOST UPG CONN KEY "\r\n", 426},
        {RL HOST UPG CONN KEY "Sec-WebSocket-Version: 8\r\n\r\n", 426},
        {RL HOST UPG CONN KEY "Sec-WebSocket-Version: 13, 8\r\n\r\n", 426},
        {RL HOST UPG CONN KEY "Sec-WebSocket-Version: 013\r\n\r\n", 426},
        {RL HOST UPG CONN KEY VER VER "\r\n", 426},
        /* no upgrade asked for */
        {RL HOST "\r\n", 426},
        {RL HOST CONN VER "\r\n", 426},
        {RL HOST "Upgrade: h2c\r\n" CONN "\r\n", 426},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = strlen(cases[i].req);
        int whole = status_of(cases[i].req, n, 4096, SIZE_MAX);
        int bytes = status_of(cases[i].req, n, 4096, 1);
        CHECK(whole == cases[i].status && bytes == whole);
        if (whole != cases[i].status || bytes != whole)
            fprintf(stderr, "  case %zu: want %d, got %d / %d\n", i, cases[i].status, whole, bytes);
    }
}

static void test_ws_hs_plain_get_is_426(void)
{
    static const char req[] = "GET /status?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
    struct ws_hs h;

    ws_hs_init(&h, 4096);
    CHECK(feed_exact(&h, req, sizeof(req) - 1) == (ssize_t)(sizeof(req) - 1));
    CHECK(h.status == 426 && !h.upgrade);
    CHECK(strcmp(h.why, "upgrade required") == 0);
    CHECK(h.path != NULL && strcmp(h.path, "/status") == 0);
    CHECK(strcmp(ws_hs_param(&h, "x", 0), "1") == 0);
    ws_hs_cleanup(&h);

    ws_hs_init(&h, 4096);
    feed_exact(&h, RL REST, strlen(RL REST) - 2 - strlen(VER));
    feed_exact(&h, "\r\n", 2);
    CHECK(h.status == 426 && h.upgrade);
    CHECK(strcmp(h.why, "unsupported Sec-WebSocket-Version") == 0);
    ws_hs_cleanup(&h);
}

static void test_ws_hs_nul_and_early_errors(void)
{
    static const char nul[] = "GET /chat HTTP/1.1\r\nHost: a\0b\r\n\r\n";
    static const char lf[] = "GET /chat HTTP/1.1\nHost: a";
    struct ws_hs h;

    CHECK(status_of(nul, sizeof(nul) - 1, 4096, SIZE_MAX) == 400);
    CHECK(status_of(nul, sizeof(nul) - 1, 4096, 1) == 400);
    /* a bare LF fails at once, without waiting for a blank line */
    ws_hs_init(&h, 4096);
    CHECK(feed_exact(&h, lf, sizeof(lf) - 1) == 19);
    CHECK(h.status == 400);
    ws_hs_cleanup(&h);
}

static void test_ws_hs_too_many_headers(void)
{
    char req[8192];
    size_t n, i;

    n = (size_t)snprintf(req, sizeof(req), "%s%s%s%s%s", RL, HOST, UPG, CONN, KEY);
    for (i = 4; i < WS_HS_MAX_HEADERS - 1; i++)
        n += (size_t)snprintf(req + n, sizeof(req) - n, "X-%zu: y\r\n", i);
    n += (size_t)snprintf(req + n, sizeof(req) - n, "%s\r\n", VER);
    CHECK(status_of(req, n, sizeof(req), SIZE_MAX) == 101); /* exactly the maximum */
    n -= 2;
    n += (size_t)snprintf(req + n, sizeof(req) - n, "X-last: y\r\n\r\n");
    CHECK(status_of(req, n, sizeof(req), SIZE_MAX) == 431);
    CHECK(status_of(req, n, sizeof(req), 1) == 431);
    /* each line is checked before it is counted: a malformed 101st line is a 400 */
    n -= strlen("X-last: y\r\n\r\n");
    n += (size_t)snprintf(req + n, sizeof(req) - n, "no colon\r\nX-more: y\r\n\r\n");
    CHECK(status_of(req, n, sizeof(req), SIZE_MAX) == 400);
}

static void test_ws_hs_too_many_params(void)
{
    char req[8192];
    size_t n, i;

    n = (size_t)snprintf(req, sizeof(req), "GET /?");
    for (i = 0; i < 256; i++)
        n += (size_t)snprintf(req + n, sizeof(req) - n, "p%zu=%zu&", i, i);
    n += (size_t)snprintf(req + n, sizeof(req) - n, " HTTP/1.1\r\n%s", REST);
    CHECK(status_of(req, n, sizeof(req), SIZE_MAX) == 101);

    n = (size_t)snprintf(req, sizeof(req), "GET /?");
    for (i = 0; i < 257; i++)
        n += (size_t)snprintf(req + n, sizeof(req) - n, "p&");
    n += (size_t)snprintf(req + n, sizeof(req) - n, " HTTP/1.1\r\n%s", REST);
    CHECK(status_of(req, n, sizeof(req), SIZE_MAX) == 400);

    /* empty pieces are not parameters */
    static const char empty[] = "GET /?&&a&&=&b=1=2& HTTP/1.1\r\n" REST;
    struct ws_hs h;

    ws_hs_init(&h, 4096);
    feed_exact(&h, empty, sizeof(empty) - 1);
    CHECK(h.status == 101 && h.nparams == 3);
    CHECK(strcmp(ws_hs_param(&h, "a", 0), "") == 0);
    CHECK(strcmp(ws_hs_param(&h, "", 0), "") == 0);
    CHECK(strcmp(ws_hs_param(&h, "b", 0), "1=2") == 0);
    ws_hs_cleanup(&h);

    ws_hs_init(&h, 4096);
    feed_exact(&h, "GET /p? HTTP/1.1\r\n" REST, strlen("GET /p? HTTP/1.1\r\n" REST));
    CHECK(h.status == 101 && h.query != NULL && h.query[0] == '\0' && h.nparams == 0);
    ws_hs_cleanup(&h);
}

static void test_ws_hs_max_header_boundary(void)
{
    size_t n = sizeof(valid_req) - 1;

    CHECK(status_of(valid_req, n, n, SIZE_MAX) == 101);
    CHECK(status_of(valid_req, n, n, 1) == 101);
    CHECK(status_of(valid_req, n, n - 1, SIZE_MAX) == 431);
    CHECK(status_of(valid_req, n, n - 1, 1) == 431);
    CHECK(status_of(valid_req, n, n - 1, 5) == 431);
    CHECK(status_of(valid_req, n, 10, SIZE_MAX) == 431);

    /* frame bytes beyond the limit do not count against it */
    struct ws_hs h;
    char more[sizeof(valid_req) + 3];

    memcpy(more, valid_req, n);
    memcpy(more + n, "\x81\x80\x00", 3);
    ws_hs_init(&h, n);
    CHECK(feed_exact(&h, more, n + 3) == (ssize_t)n);
    CHECK(h.status == 101);
    CHECK(h.cap <= n + 1);
    ws_hs_cleanup(&h);
}

static void test_ws_hs_response_101(void)
{
    static const char want[] = "HTTP/1.1 101 Switching Protocols\r\n"
                               "Upgrade: websocket\r\n"
                               "Connection: Upgrade\r\n"
                               "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                               "X-Id: 7\r\n"
                               "\r\n";
    struct ws_hs h;
    char out[512];

    ws_hs_init(&h, 4096);
    feed_exact(&h, valid_req, sizeof(valid_req) - 1);
    CHECK(ws_hs_response_101(&h, "X-Id: 7\r\n", out, sizeof(out)) == sizeof(want) - 1);
    CHECK(strcmp(out, want) == 0);
    CHECK(ws_hs_response_101(&h, NULL, out, sizeof(out)) == sizeof(want) - 1 - 9);
    CHECK(strncmp(out, want, sizeof(want) - 1 - 11) == 0 &&
          strcmp(out + sizeof(want) - 1 - 11, "\r\n") == 0);
    CHECK(ws_hs_response_101(&h, "X-Id: 7\r\n", out, sizeof(want) - 1) == 0);
    CHECK(ws_hs_response_101(&h, "X-Id: 7\r\n", out, sizeof(want)) == sizeof(want) - 1);
    ws_hs_cleanup(&h);
    ws_hs_init(&h, 4096); /* no verdict: nothing to answer with */
    CHECK(ws_hs_response_101(&h, NULL, out, sizeof(out)) == 0);
    ws_hs_cleanup(&h);
}

static void test_ws_hs_response_error(void)
{
    static const char want426[] = "HTTP/1.1 426 Upgrade Required\r\n"
                                  "Content-Type: text/plain; charset=utf-8\r\n"
                                  "Content-Length: 17\r\n"
                                  "Sec-WebSocket-Version: 13\r\n"
                                  "Upgrade: websocket\r\n"
                                  "Connection: close\r\n"
                                  "\r\n"
                                  "upgrade required\n";
    static const char want405[] = "HTTP/1.1 405 Method Not Allowed\r\n"
                                  "Content-Type: text/plain; charset=utf-8\r\n"
                                  "Content-Length: 19\r\n"
                                  "Allow: GET\r\n"
                                  "Connection: close\r\n"
                                  "\r\n"
                                  "method not allowed\n";
    static const char want431[] = "HTTP/1.1 431 Request Header Fields Too Large\r\n"
                                  "Content-Type: text/plain; charset=utf-8\r\n"
                                  "Content-Length: 25\r\n"
                                  "Connection: close\r\n"
                                  "\r\n"
                                  "request header too large\n";
    char out[512];

    CHECK(ws_hs_response_error(426, "upgrade required", out, sizeof(out)) == sizeof(want426) - 1);
    CHECK(strcmp(out, want426) == 0);
    CHECK(ws_hs_response_error(405, "method not allowed", out, sizeof(out)) == sizeof(want405) - 1);
    CHECK(strcmp(out, want405) == 0);
    CHECK(ws_hs_response_error(431, "request header too large", out, sizeof(out)) ==
          sizeof(want431) - 1);
    CHECK(strcmp(out, want431) == 0);
    CHECK(ws_hs_response_error(431, "request header too large", out, sizeof(want431) - 1) == 0);
    CHECK(ws_hs_response_error(400, "x", out, sizeof(out)) > 0);
    CHECK(strncmp(out, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
    CHECK(ws_hs_response_error(503, "x", out, sizeof(out)) > 0);
    CHECK(strncmp(out, "HTTP/1.1 503 Service Unavailable\r\n", 34) == 0);
    CHECK(ws_hs_response_error(418, "x", out, sizeof(out)) == 0);
    CHECK(ws_hs_response_error(408, "x", out, sizeof(out)) > 0);
    CHECK(strncmp(out, "HTTP/1.1 408 Request Timeout\r\n", 30) == 0);
}

static void test_ws_hs_response_retry(void)
{
    static const char want429[] = "HTTP/1.1 429 Too Many Requests\r\n"
                                  "Content-Type: text/plain; charset=utf-8\r\n"
                                  "Content-Length: 20\r\n"
                                  "Retry-After: 7\r\n"
                                  "Connection: close\r\n"
                                  "\r\n"
                                  "too many handshakes\n";
    char out[512];
    size_t n = sizeof(want429) - 1;

    CHECK(ws_hs_response_retry(429, 7, "too many handshakes", out, sizeof(out)) == n);
    CHECK(strcmp(out, want429) == 0);
    CHECK(ws_hs_response_retry(429, 7, "too many handshakes", out, n) == 0); /* no room for NUL */
    CHECK(ws_hs_response_retry(503, 4294967295u, "full", out, sizeof(out)) > 0);
    CHECK(strstr(out, "\r\nRetry-After: 4294967295\r\n") != NULL);
    CHECK(ws_hs_response_retry(418, 1, "x", out, sizeof(out)) == 0);
}

/*
 * The request line counts as arrived once the first CRLF has, at every cut: a head
 * cut short after it gets 408 at the timeout, one cut before it is just closed.
 */
static void test_ws_hs_has_request_line(void)
{
    static const struct {
        const char *head;
        size_t line_end; /* bytes up to and including the first CRLF; 0: none */
    } cases[] = {
        {RL REST, sizeof(RL) - 1},
        {"GET / HTTP/1.1\r\nHost: x\r\n", 16},
        {"\r\nGET / HTTP/1.1\r\n", 2}, /* an empty first line is a first line */
        {"GET / HTTP/1.1\r", 0},
        {"GET / HTTP/1.1\n\r\n", 0}, /* bare LF: 400 before any CRLF */
        {"\x16\x03\x01\x02\x00", 0}, /* TLS hello on the plain port */
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = strlen(cases[i].head);
        for (size_t cut = 0; cut <= n; cut++) {
            struct ws_hs h;
            bool want = cases[i].line_end > 0 && cut >= cases[i].line_end;

            ws_hs_init(&h, 4096);
            CHECK(!ws_hs_has_request_line(&h));
            feed_steps(&h, cases[i].head, cut, 1);
            CHECK(ws_hs_has_request_line(&h) == want);
            feed_steps(&h, cases[i].head + cut, n - cut, n + 1);
            CHECK(ws_hs_has_request_line(&h) == (cases[i].line_end > 0));
            ws_hs_cleanup(&h);
        }
    }
}

/* Found by tests/fuzz/fuzz_ws_hs.c: a refused path must not be left half decoded. */
static void test_ws_hs_bad_path_escape_leaves_no_path(void)
{
    static const char req[] = "GET /a%00b HTTP/1.1\r\nHost: x\r\n\r\n";
    uint8_t *buf = malloc(sizeof(req) - 1);
    struct ws_hs h;

    memcpy(buf, req, sizeof(req) - 1);
    ws_hs_init(&h, 8192);
    CHECK(ws_hs_feed(&h, buf, sizeof(req) - 1) == (ssize_t)(sizeof(req) - 1));
    CHECK(h.status == 400);
    CHECK(h.path == NULL);
    ws_hs_cleanup(&h);
    free(buf);
}

void suite_ws_hs(void)
{
    test_ws_hs_bad_path_escape_leaves_no_path();
    test_ws_hs_rfc_sample_accept();
    test_ws_hs_key_unused_bits();
    test_ws_hs_valid_request();
    test_ws_hs_header_all();
    test_ws_hs_same_verdict_however_cut();
    test_ws_hs_leaves_frame_bytes();
    test_ws_hs_lists_and_case();
    test_ws_hs_bad_requests();
    test_ws_hs_plain_get_is_426();
    test_ws_hs_nul_and_early_errors();
    test_ws_hs_too_many_headers();
    test_ws_hs_too_many_params();
    test_ws_hs_max_header_boundary();
    test_ws_hs_response_101();
    test_ws_hs_response_error();
    test_ws_hs_response_retry();
    test_ws_hs_has_request_line();
}
