#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "common/proxy_proto.h"
#include "tests/unit/check.h"

enum verdict { INCOMPLETE, DONE, FAILED };

/* What a parse concluded, to compare across cuts and with the table. */
struct result {
    enum verdict verdict;
    size_t used;     /* bytes consumed in all */
    bool local;      /* DONE: keep the socket's address */
    char src[64];    /* DONE and !local: "addr port" */
    const char *why; /* FAILED */
};

static void describe(const struct proxy_proto *h, struct result *r)
{
    char text[INET6_ADDRSTRLEN] = "?";

    r->verdict = proxy_proto_is_done(h)           ? DONE
                 : h->state == PROXY_PROTO_FAILED ? FAILED
                                                  : INCOMPLETE;
    r->local = h->local;
    r->why = h->why;
    r->src[0] = '\0';
    if (r->verdict != DONE || h->local)
        return;
    if (h->src.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&h->src;
        inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
        snprintf(r->src, sizeof(r->src), "%s %u", text, ntohs(in->sin_port));
    } else if (h->src.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&h->src;
        inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
        snprintf(r->src, sizeof(r->src), "%s %u", text, ntohs(in6->sin6_port));
    } else {
        snprintf(r->src, sizeof(r->src), "family %d", h->src.ss_family);
    }
}

/*
 * Feeds in[0..n) in pieces: piece(i) gives the size of the i-th (0: all the rest),
 * each copied to an allocation of exactly its size, so ASan sees any over-read.
 * Stops at a verdict, as a connection would.
 */
static void run(const uint8_t *in, size_t n, size_t (*piece)(void *, size_t), void *arg,
                struct result *r)
{
    struct proxy_proto h;
    size_t off = 0;

    proxy_proto_init(&h);
    r->used = 0;
    while (off < n) {
        size_t k = piece(arg, n - off);
        uint8_t *p;
        ssize_t got;

        if (k == 0 || k > n - off)
            k = n - off;
        p = check_dup_exact(in + off, k);
        got = proxy_proto_feed(&h, p, k);
        free(p);
        if (got < 0)
            break;
        CHECK((size_t)got <= k);
        r->used += (size_t)got;
        off += k;
        if (proxy_proto_is_done(&h)) {
            uint8_t more = 'G';
            CHECK(proxy_proto_feed(&h, &more, 1) == 0); /* never past the header */
            break;
        }
        CHECK((size_t)got == k); /* short only at the header's end */
    }
    describe(&h, r);
    if (r->verdict == FAILED) {
        uint8_t more = 'x';
        CHECK(proxy_proto_feed(&h, &more, 1) == -1); /* sticky */
        CHECK(h.why != NULL);
    }
}

static size_t whole(void *arg, size_t left)
{
    (void)arg;
    return left;
}

static size_t one_byte(void *arg, size_t left)
{
    (void)arg;
    (void)left;
    return 1;
}

struct cut {
    size_t at;   /* first piece */
    bool second; /* the first piece was given */
};

static size_t at_cut(void *arg, size_t left)
{
    struct cut *c = arg;

    if (c->second)
        return left;
    c->second = true;
    return c->at;
}

static size_t random_piece(void *arg, size_t left)
{
    uint32_t *seed = arg;

    (void)left;
    *seed = *seed * 1103515245u + 12345u;
    return 1 + (*seed >> 16) % 23;
}

static bool same(const struct result *a, const struct result *b)
{
    /* after a failure, what earlier pieces consumed does not matter: the connection
     * is closed */
    return a->verdict == b->verdict && (a->verdict == FAILED || a->used == b->used) &&
           a->local == b->local && strcmp(a->src, b->src) == 0 &&
           (a->why == b->why || (a->why && b->why && strcmp(a->why, b->why) == 0));
}

/* Every way of cutting in[0..n) gives what feeding it whole gives. */
static void check_every_cut(const uint8_t *in, size_t n, const struct result *whole_r)
{
    struct result r;

    run(in, n, one_byte, NULL, &r);
    CHECK(same(&r, whole_r));
    for (size_t at = 0; at <= n; at++) {
        struct cut c = {at, false};
        run(in, n, at_cut, &c, &r);
        if (!same(&r, whole_r)) {
            fprintf(stderr, "  cut at %zu of %zu differs\n", at, n);
            CHECK(0);
            return;
        }
    }
    for (uint32_t s = 1; s <= 20; s++) {
        uint32_t seed = s;
        run(in, n, random_piece, &seed, &r);
        CHECK(same(&r, whole_r));
    }
}

struct pp_case {
    const char *name;
    const uint8_t *in;
    size_t len;
    enum verdict verdict;
    size_t used;     /* DONE: header length; else ignored */
    const char *src; /* DONE and not local: "addr port"; NULL: local */
};

static void check_case(const struct pp_case *c)
{
    struct result r;

    run(c->in, c->len, whole, NULL, &r);
    if (r.verdict != c->verdict || (c->verdict == DONE && r.used != c->used) ||
        (c->verdict == DONE && (c->src == NULL) != r.local) ||
        (c->src != NULL && strcmp(c->src, r.src) != 0)) {
        fprintf(stderr, "  %s: verdict %d used %zu local %d src '%s' why %s\n", c->name, r.verdict,
                r.used, r.local, r.src, r.why ? r.why : "-");
        CHECK(0);
        return;
    }
    CHECK(1);
    if (c->verdict == INCOMPLETE)
        CHECK(r.used == c->len);
    check_every_cut(c->in, c->len, &r);
}

#define TEXT(name, s, verdict, used, src)                             \
    {                                                                 \
        name, (const uint8_t *)(s), sizeof(s) - 1, verdict, used, src \
    }

static void test_proxy_proto_v1_table(void)
{
    static const char worst[] = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    static const char one_more[] = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                                   "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 655350\r\n";
    static const struct pp_case cases[] = {
        TEXT("tcp4", "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n", DONE,
             47, "192.168.0.1 56324"),
        TEXT("tcp4 bounds", "PROXY TCP4 255.255.255.255 0.0.0.0 65535 0\r\n", DONE, 44,
             "255.255.255.255 65535"),
        TEXT("tcp6", "PROXY TCP6 2001:db8::1 2001:DB8::2 1 65535\r\n\x81\x85", DONE, 44,
             "2001:db8::1 1"),
        TEXT("tcp6 long",
             "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
             "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
             DONE, 104, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535"),
        TEXT("tcp6 mapped", "PROXY TCP6 ::ffff:1.2.3.4 ::1 0 0\r\n", DONE, 35, "::ffff:1.2.3.4 0"),
        TEXT("unknown", "PROXY UNKNOWN\r\nGET", DONE, 15, NULL),
        TEXT("unknown with junk", "PROXY UNKNOWN what \x01 ever\r\n", DONE, 27, NULL),
        {"unknown, 107 bytes", (const uint8_t *)worst, sizeof(worst) - 1, DONE, 107, NULL},
        {"unknown, 108 bytes", (const uint8_t *)one_more, sizeof(one_more) - 1, FAILED, 0, NULL},
        TEXT("incomplete", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2", INCOMPLETE, 0, NULL),
        TEXT("incomplete at CR", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", INCOMPLETE, 0, NULL),
        TEXT("empty", "", INCOMPLETE, 0, NULL),
        TEXT("just P", "P", INCOMPLETE, 0, NULL),
        TEXT("http", "GET / HTTP/1.1\r\n", FAILED, 0, NULL),
        TEXT("lowercase", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", FAILED, 0, NULL),
        TEXT("no space", "PROXY\r\n", FAILED, 0, NULL),
        TEXT("tab", "PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n", FAILED, 0, NULL),
        TEXT("tcp5", "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", FAILED, 0, NULL),
        TEXT("unknownx", "PROXY UNKNOWNX\r\n", FAILED, 0, NULL),
        TEXT("bare LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\nGET", FAILED, 0, NULL),
        TEXT("bare CR", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rGET", FAILED, 0, NULL),
        TEXT("CR CR LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", FAILED, 0, NULL),
        TEXT("leading zero addr", "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", FAILED, 0, NULL),
        TEXT("short addr", "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", FAILED, 0, NULL),
        TEXT("bad dst", "PROXY TCP4 1.2.3.4 5.6.7.256 1 2\r\n", FAILED, 0, NULL),
        TEXT("leading zero port", "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", FAILED, 0, NULL),
        TEXT("port too big", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", FAILED, 0, NULL),
        TEXT("port sign", "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", FAILED, 0, NULL),
        TEXT("double space", "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", FAILED, 0, NULL),
        TEXT("trailing space", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", FAILED, 0, NULL),
        TEXT("five fields", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", FAILED, 0, NULL),
        TEXT("three fields", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", FAILED, 0, NULL),
        TEXT("v6 in tcp4", "PROXY TCP4 ::1 ::1 1 2\r\n", FAILED, 0, NULL),
        TEXT("v4 in tcp6", "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", FAILED, 0, NULL),
        TEXT("zone in tcp6", "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", FAILED, 0, NULL),
        TEXT("NUL in port", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\0\r\n", FAILED, 0, NULL),
        TEXT("NUL in addr", "PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n", FAILED, 0, NULL),
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_case(&cases[i]);
}

/* A line of 107 bytes without its CRLF fails at the 107th byte, not later. */
static void test_proxy_proto_v1_fails_at_its_limit(void)
{
    char line[200];
    struct proxy_proto h;

    memset(line, 'x', sizeof(line));
    memcpy(line, "PROXY UNKNOWN ", 14);
    proxy_proto_init(&h);
    CHECK(proxy_proto_feed(&h, (const uint8_t *)line, 106) == 106);
    CHECK(h.state == PROXY_PROTO_V1);
    CHECK(proxy_proto_feed(&h, (const uint8_t *)line + 106, 1) == -1);
    CHECK(h.why != NULL && strstr(h.why, "107") != NULL);
}

static const uint8_t sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

/* A v2 header: signature, ver_cmd, fam, length of body, body; then tail bytes. */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const void *body, size_t len,
                 const char *tail)
{
    memcpy(out, sig, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(len >> 8);
    out[15] = (uint8_t)len;
    if (len > 0)
        memcpy(out + 16, body, len);
    memcpy(out + 16 + len, tail, strlen(tail));
    return 16 + len + strlen(tail);
}

static void test_proxy_proto_v2_table(void)
{
    static const uint8_t ip4[12] = {10, 0, 0, 1, 192, 168, 1, 2, 0x04, 0xd2, 0x01, 0xbb};
    static const uint8_t ip4_tlvs[12 + 5 + 3 + 7] = {
        203,  0,    113,  7,   10,  0,   0,  1, 0xff, 0xff, 0x00, 0x50, /* address */
        0x01, 0x00, 0x02, 'h', '2',                                     /* ALPN "h2" */
        0x04, 0x00, 0x00,                                               /* empty NOOP */
        0xea, 0x00, 0x04, 'v', 'p', 'c', 'e'};                          /* a custom one (AWS) */
    static const uint8_t tlv_over[12 + 4] = {1, 2, 3, 4, 5,    6,    7,    8,
                                             0, 1, 0, 2, 0x04, 0x00, 0x02, 'x'};
    static const uint8_t tlv_cut[12 + 2] = {1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2, 0x04, 0x00};
    uint8_t ip6[36] = {0x20,        0x01,     0x0d,        0xb8,        [15] = 1, [16] = 0x20,
                       [17] = 0x01, [31] = 2, [32] = 0xc3, [33] = 0x50, [34] = 0, [35] = 80};
    uint8_t unix_addr[216] = {'/', 't', 'm', 'p'};
    uint8_t big[PROXY_PROTO_V2_MAX];
    static uint8_t bufs[32][PROXY_PROTO_V2_MAX + 16];
    size_t k = 0;
    struct pp_case cases[32];

    memset(big, 0, sizeof(big));
    memcpy(big, ip4, 12);
    big[12] = 0x04; /* one NOOP TLV fills the rest up to the limit */
    big[13] = (uint8_t)((PROXY_PROTO_V2_MAX - 16 - 12 - 3) >> 8);
    big[14] = (uint8_t)(PROXY_PROTO_V2_MAX - 16 - 12 - 3);

#define V2(name, vc, fam, body, blen, tail, verdict, src)                                \
    do {                                                                                 \
        size_t n_ = v2(bufs[k], vc, fam, body, blen, tail);                              \
        cases[k] = (struct pp_case){name, bufs[k], n_, verdict, n_ - strlen(tail), src}; \
        k++;                                                                             \
    } while (0)

    V2("tcp4", 0x21, 0x11, ip4, 12, "GET", DONE, "10.0.0.1 1234");
    V2("tcp6", 0x21, 0x21, ip6, 36, "\x81", DONE, "2001:db8::1 50000");
    V2("tcp4 with TLVs", 0x21, 0x11, ip4_tlvs, sizeof(ip4_tlvs), "GET", DONE, "203.0.113.7 65535");
    V2("tcp4 at the limit", 0x21, 0x11, big, PROXY_PROTO_V2_MAX - 16, "", DONE, "10.0.0.1 1234");
    V2("tcp4 over the limit", 0x21, 0x11, big, PROXY_PROTO_V2_MAX - 15, "", FAILED, NULL);
    V2("local", 0x20, 0x00, NULL, 0, "GET", DONE, NULL);
    V2("local with an address", 0x20, 0x11, ip4, 12, "GET", DONE, NULL);
    V2("local, any family", 0x20, 0xff, ip4, 3, "", DONE, NULL);
    V2("proxy unspec", 0x21, 0x00, NULL, 0, "", DONE, NULL);
    V2("proxy unspec with bytes", 0x21, 0x00, ip4, 5, "", DONE, NULL);
    V2("proxy inet, unspec transport", 0x21, 0x10, ip4, 12, "", DONE, NULL);
    V2("udp4", 0x21, 0x12, ip4_tlvs, sizeof(ip4_tlvs), "", DONE, NULL);
    V2("unix stream", 0x21, 0x31, unix_addr, 216, "x", DONE, NULL);
    V2("unix too short", 0x21, 0x31, unix_addr, 215, "", FAILED, NULL);
    V2("tcp4 too short", 0x21, 0x11, ip4, 11, "", FAILED, NULL);
    V2("tcp6 too short", 0x21, 0x21, ip6, 35, "", FAILED, NULL);
    V2("TLV overruns", 0x21, 0x11, tlv_over, sizeof(tlv_over), "", FAILED, NULL);
    V2("TLV cut by length", 0x21, 0x11, tlv_cut, sizeof(tlv_cut), "", FAILED, NULL);
    V2("version 1", 0x11, 0x11, ip4, 12, "", FAILED, NULL);
    V2("version 3", 0x31, 0x11, ip4, 12, "", FAILED, NULL);
    V2("command 2", 0x22, 0x11, ip4, 12, "", FAILED, NULL);
    V2("family 4", 0x21, 0x41, ip4, 12, "", FAILED, NULL);
    V2("transport 3", 0x21, 0x13, ip4, 12, "", FAILED, NULL);
    V2("incomplete address", 0x21, 0x11, ip4, 12, "", DONE, "10.0.0.1 1234");
    cases[k - 1].name = "incomplete address";
    cases[k - 1].len -= 5;
    cases[k - 1].verdict = INCOMPLETE;
    cases[k - 1].src = NULL;
    V2("bad signature", 0x21, 0x11, ip4, 12, "", FAILED, NULL);
    bufs[k - 1][11] = 0x0b;
    V2("signature cut", 0x21, 0x11, ip4, 12, "", INCOMPLETE, NULL);
    cases[k - 1].len = 7; /* with its NUL */
#undef V2

    for (size_t i = 0; i < k; i++)
        check_case(&cases[i]);
}

/* A v2 LOCAL header of 16 bytes ends the parse on its last byte, with no more input. */
static void test_proxy_proto_v2_done_on_last_byte(void)
{
    uint8_t hdr[16];
    struct proxy_proto h;

    v2(hdr, 0x20, 0x00, NULL, 0, "");
    proxy_proto_init(&h);
    CHECK(proxy_proto_feed(&h, hdr, 15) == 15 && !proxy_proto_is_done(&h));
    CHECK(proxy_proto_feed(&h, hdr + 15, 1) == 1 && proxy_proto_is_done(&h) && h.local);
    CHECK(h.version == 2);
}

void suite_proxy_proto(void)
{
    test_proxy_proto_v1_table();
    test_proxy_proto_v1_fails_at_its_limit();
    test_proxy_proto_v2_table();
    test_proxy_proto_v2_done_on_last_byte();
}
