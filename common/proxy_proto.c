#include "common/proxy_proto.h"

#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>

/*
 * One byte at a time through the fixed parts, in bulk through what is skipped: every
 * decision is taken at a byte position, or from fields already read, so a header
 * cut anywhere gives the same verdict, the same address and the same count of bytes
 * consumed. Section numbers are those of haproxy's doc/proxy-protocol.txt.
 *
 * What the limits stop: a v1 line is at most 107 bytes (§2.1) and fails at its 107th
 * byte without a CRLF, not at a timeout; a bare CR or LF fails at once (§2.1: "must
 * not tolerate a single CR or LF"). A v2 header announces its length in its 15th
 * and 16th bytes; more than PROXY_PROTO_V2_MAX fails there, before anything is
 * skipped, so even a trusted balancer gone wrong cannot hold a connection in this
 * state with 64 KiB of TLVs.
 */

static const uint8_t v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                   0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

#define V2_HEAD_LEN 16
#define TLV_HEAD    3

static ssize_t fail(struct proxy_proto *h, const char *why)
{
    h->state = PROXY_PROTO_FAILED;
    h->why = why;
    return -1;
}

static void finish(struct proxy_proto *h, bool local)
{
    h->state = PROXY_PROTO_DONE;
    h->local = local;
    if (local)
        memset(&h->src, 0, sizeof(h->src));
}

void proxy_proto_init(struct proxy_proto *h)
{
    memset(h, 0, sizeof(*h));
}

bool proxy_proto_is_done(const struct proxy_proto *h)
{
    return h->state == PROXY_PROTO_DONE;
}

/* --- version 1 ------------------------------------------------------------------ */

/* "0", or 1-5 digits without a leading zero, at most 65535 (§2.1). */
static int v1_port(const char *s, size_t n, uint16_t *port)
{
    unsigned long v = 0;

    if (n == 0 || n > 5 || (s[0] == '0' && n > 1))
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

/*
 * An address in its canonical text (§2.1): IPv4 as 4 decimals without leading zeros
 * (we print it back and compare, so no libc leniency slips through), IPv6 as hex
 * groups with at most one "::" (inet_pton; the dotted tail of "::ffff:1.2.3.4",
 * which haproxy itself prints for mapped addresses, is accepted too).
 */
static int v1_addr(int af, const char *s, size_t n, void *out)
{
    char text[INET6_ADDRSTRLEN], again[INET6_ADDRSTRLEN];
    const char *ok = af == AF_INET ? "0123456789." : "0123456789abcdefABCDEF:.";

    if (n == 0 || n >= sizeof(text))
        return -1;
    memcpy(text, s, n);
    text[n] = '\0';
    if (strspn(text, ok) != n || inet_pton(af, text, out) != 1)
        return -1;
    if (af == AF_INET &&
        (inet_ntop(AF_INET, out, again, sizeof(again)) == NULL || strcmp(again, text) != 0))
        return -1;
    return 0;
}

/* The line in h->buf (CRLF included) is whole: judge it. */
static ssize_t v1_judge(struct proxy_proto *h)
{
    const char *s = (const char *)h->buf + 6; /* after "PROXY " */
    size_t n = h->have - 8, start[4], len[4], k = 0, i;
    int af;
    uint16_t sport, dport;
    unsigned char dst[16];

    if (n >= 7 && memcmp(s, "UNKNOWN", 7) == 0 && (n == 7 || s[7] == ' ')) {
        finish(h, true); /* the rest of the line is ignored (§2.1) */
        return 0;
    }
    if (n >= 5 && memcmp(s, "TCP4 ", 5) == 0)
        af = AF_INET;
    else if (n >= 5 && memcmp(s, "TCP6 ", 5) == 0)
        af = AF_INET6;
    else
        return fail(h, "PROXY v1: protocol is not TCP4, TCP6 or UNKNOWN");
    /* exactly four fields, each followed by one space but the last */
    start[0] = 5;
    for (i = 5; i < n; i++) {
        if (s[i] != ' ')
            continue;
        len[k] = i - start[k];
        if (++k == 4)
            break;
        start[k] = i + 1;
    }
    if (k != 3)
        return fail(h, "PROXY v1: expected source, destination and two ports");
    len[3] = n - start[3];
    for (k = 0; k < 4; k++)
        if (len[k] == 0)
            return fail(h, "PROXY v1: expected source, destination and two ports");
    if (v1_port(s + start[2], len[2], &sport) < 0 || v1_port(s + start[3], len[3], &dport) < 0)
        return fail(h, "PROXY v1: bad port");
    memset(&h->src, 0, sizeof(h->src));
    if (af == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&h->src;
        in->sin_family = AF_INET;
        in->sin_port = htons(sport);
        if (v1_addr(AF_INET, s + start[0], len[0], &in->sin_addr) < 0 ||
            v1_addr(AF_INET, s + start[1], len[1], dst) < 0)
            return fail(h, "PROXY v1: bad IPv4 address");
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&h->src;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(sport);
        if (v1_addr(AF_INET6, s + start[0], len[0], &in6->sin6_addr) < 0 ||
            v1_addr(AF_INET6, s + start[1], len[1], dst) < 0)
            return fail(h, "PROXY v1: bad IPv6 address");
    }
    finish(h, false);
    return 0;
}

static ssize_t v1_byte(struct proxy_proto *h, uint8_t c)
{
    size_t k = h->have;

    if (k < 6) {
        if (c != (uint8_t) "PROXY "[k])
            return fail(h, "not a PROXY protocol header");
    } else if (c == '\n') {
        if (h->buf[k - 1] != '\r')
            return fail(h, "PROXY v1: bare LF");
        h->buf[h->have++] = c;
        return v1_judge(h);
    } else if (h->buf[k - 1] == '\r') {
        return fail(h, "PROXY v1: bare CR");
    } else if (k >= PROXY_PROTO_V1_MAX - 1) {
        return fail(h, "PROXY v1: no CRLF in the first 107 bytes");
    }
    h->buf[h->have++] = c;
    return 0;
}

/* --- version 2 ------------------------------------------------------------------ */

/* What was skipped is behind us: the header ends here, or a TLV begins. */
static ssize_t v2_next(struct proxy_proto *h)
{
    if (h->left == 0) {
        finish(h, h->local);
        return 0;
    }
    if (h->left < TLV_HEAD) /* only after an address block: LOCAL skips it all */
        return fail(h, "PROXY v2: TLV cut short by the header length");
    h->state = PROXY_PROTO_V2_TLV;
    h->have = 0;
    h->want = TLV_HEAD;
    return 0;
}

/* The 16 fixed bytes are in: check the command and family, plan what follows. */
static ssize_t v2_head(struct proxy_proto *h)
{
    uint8_t cmd = h->buf[12] & 0x0f, fam = h->buf[13] >> 4, proto = h->buf[13] & 0x0f;
    size_t len = (size_t)h->buf[14] << 8 | h->buf[15], addr;

    if (V2_HEAD_LEN + len > PROXY_PROTO_V2_MAX)
        return fail(h, "PROXY v2: header longer than we accept");
    h->left = len;
    h->local = true;
    if (cmd == 0x0 || fam == 0x0 || proto == 0x0) {
        /* LOCAL: "discard the protocol block including the family"; an unspecified
         * family or transport: "the receiver should ignore address information" */
        h->state = PROXY_PROTO_V2_SKIP;
        h->skip = len;
        return len == 0 ? v2_next(h) : 0;
    }
    addr = fam == 0x1 ? 12 : fam == 0x2 ? 36 : 216;
    if (len < addr)
        return fail(h, "PROXY v2: address block shorter than its family needs");
    if (proto == 0x1 && fam != 0x3) { /* TCP over IPv4 or IPv6: the client's address */
        h->state = PROXY_PROTO_V2_ADDR;
        h->want = V2_HEAD_LEN + addr;
        return 0;
    }
    h->state = PROXY_PROTO_V2_SKIP; /* UDP, AF_UNIX: valid, but the socket's address stays */
    h->skip = addr;
    return 0;
}

/* A TCP address block is in h->buf[16..want): source address, destination, ports. */
static void v2_address(struct proxy_proto *h)
{
    const uint8_t *a = h->buf + V2_HEAD_LEN;

    memset(&h->src, 0, sizeof(h->src));
    if (h->want == V2_HEAD_LEN + 12) {
        struct sockaddr_in *in = (struct sockaddr_in *)&h->src;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, a, 4);
        memcpy(&in->sin_port, a + 8, 2); /* both in network order already */
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&h->src;
        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, a, 16);
        memcpy(&in6->sin6_port, a + 32, 2);
    }
    h->local = false;
}

static ssize_t v2_head_byte(struct proxy_proto *h, uint8_t c)
{
    size_t k = h->have;

    if (k < sizeof(v2_sig) && c != v2_sig[k])
        return fail(h, "not a PROXY protocol header");
    if (k == 12 && (c >> 4) != 0x2)
        return fail(h, "PROXY v2: version other than 2");
    if (k == 12 && (c & 0x0f) > 0x1)
        return fail(h, "PROXY v2: command other than LOCAL or PROXY");
    /* §2.2: family 0-3 and transport 0-2, else "must be rejected as invalid"; a
     * LOCAL header's family is ignored altogether */
    if (k == 13 && (h->buf[12] & 0x0f) == 0x1 && ((c >> 4) > 0x3 || (c & 0x0f) > 0x2))
        return fail(h, "PROXY v2: unknown address family or transport");
    h->buf[h->have++] = c;
    return h->have == V2_HEAD_LEN ? v2_head(h) : 0;
}

/* --- both ----------------------------------------------------------------------- */

ssize_t proxy_proto_feed(struct proxy_proto *h, const uint8_t *buf, size_t len)
{
    size_t i = 0, n;

    while (i < len) {
        switch (h->state) {
        case PROXY_PROTO_DONE:
            return (ssize_t)i;
        case PROXY_PROTO_FAILED:
            return -1;
        case PROXY_PROTO_START:
            /* §2.2: the v2 signature starts with CR, v1 with "PROXY"; nothing else */
            if (buf[i] == 'P') {
                h->version = 1;
                h->state = PROXY_PROTO_V1;
            } else if (buf[i] == '\r') {
                h->version = 2;
                h->state = PROXY_PROTO_V2_HEAD;
            } else {
                return fail(h, "not a PROXY protocol header");
            }
            break;
        case PROXY_PROTO_V1:
            if (v1_byte(h, buf[i++]) < 0)
                return -1;
            break;
        case PROXY_PROTO_V2_HEAD:
            if (v2_head_byte(h, buf[i++]) < 0)
                return -1;
            break;
        case PROXY_PROTO_V2_ADDR:
        case PROXY_PROTO_V2_TLV:
            n = h->want - h->have < len - i ? h->want - h->have : len - i;
            memcpy(h->buf + h->have, buf + i, n);
            h->have += n;
            h->left -= n;
            i += n;
            if (h->have < h->want)
                break;
            if (h->state == PROXY_PROTO_V2_ADDR) {
                v2_address(h);
                h->state = PROXY_PROTO_V2_SKIP;
                h->skip = 0;
            } else {
                h->skip = (size_t)h->buf[1] << 8 | h->buf[2];
                if (h->skip > h->left)
                    return fail(h, "PROXY v2: TLV longer than the header");
                h->state = PROXY_PROTO_V2_SKIP;
            }
            if (h->skip == 0 && v2_next(h) < 0)
                return -1;
            break;
        case PROXY_PROTO_V2_SKIP:
            n = h->skip < len - i ? h->skip : len - i;
            h->skip -= n;
            h->left -= n;
            i += n;
            if (h->skip == 0 && v2_next(h) < 0)
                return -1;
            break;
        }
    }
    return h->state == PROXY_PROTO_FAILED ? -1 : (ssize_t)i;
}
