#include "common/ws_dec.h"

#include <string.h>

#include "common/utf8.h"

#define FALLTHROUGH __attribute__((fallthrough))

/* Values of d->state. */
enum {
    WS_DEC_HEAD,    /* gathering the 2 fixed header bytes */
    WS_DEC_EXTLEN,  /* gathering a 16- or 64-bit length (d->remaining holds 126 or 127) */
    WS_DEC_MASK,    /* gathering the 4-byte masking key */
    WS_DEC_PAYLOAD, /* d->remaining payload bytes to hand out */
    WS_DEC_FAILED,  /* sticky: d->close_code and d->why say why */
};

static ssize_t fail(struct ws_dec *d, uint16_t code, const char *why)
{
    d->state = WS_DEC_FAILED;
    d->close_code = code;
    d->why = why;
    return -1;
}

/* Gathers d->field[0..n) across calls; true once all n bytes are there. */
static bool collect(struct ws_dec *d, uint8_t n, const uint8_t **p, const uint8_t *end)
{
    while (d->have < n && *p < end)
        d->field[d->have++] = *(*p)++;
    if (d->have < n)
        return false;
    d->have = 0;
    return true;
}

static uint64_t be_uint(const uint8_t *b, uint8_t n)
{
    uint64_t v = 0;

    for (uint8_t i = 0; i < n; i++)
        v = v << 8 | b[i];
    return v;
}

static bool is_control(uint8_t opcode)
{
    return (opcode & 0x08) != 0;
}

/* Checks the 2 fixed bytes in d->field, RFC 6455 §5.2 and §5.4-5.5. */
static ssize_t check_head(struct ws_dec *d)
{
    uint8_t b0 = d->field[0], b1 = d->field[1];

    d->bits = (uint8_t)((d->bits & ~(WS_DEC_B_FIN | WS_DEC_B_RSV1)) | (b0 >> 7) |
                        (b0 & 0x40 ? WS_DEC_B_RSV1 : 0));
    d->opcode = b0 & 0x0f;
    d->remaining = b1 & 0x7f;
    if (b0 & 0x30) /* RSV2 and RSV3: no extension that uses them is negotiated */
        return fail(d, 1002, "RSV2 or RSV3 set");
    if (b0 & 0x40) { /* RSV1: permessage-deflate's "compressed" bit, RFC 7692 §6 */
        if (ws_dec_deflate(d) == 0)
            return fail(d, 1002, "RSV1 set without permessage-deflate");
        if (d->opcode == WS_OP_CONT)
            return fail(d, 1002, "RSV1 set on a continuation frame");
        if (is_control(d->opcode))
            return fail(d, 1002, "RSV1 set on a control frame");
    }
    switch (d->opcode) {
    case WS_OP_CONT:
        if (d->msg_opcode == 0)
            return fail(d, 1002, "continuation frame with no message started");
        break;
    case WS_OP_TEXT:
    case WS_OP_BINARY:
        if (d->msg_opcode != 0)
            return fail(d, 1002, "new data frame inside a fragmented message");
        break;
    case WS_OP_CLOSE:
    case WS_OP_PING:
    case WS_OP_PONG:
        /* §5.5: control frames are never fragmented and carry at most 125 bytes */
        if (!(d->bits & WS_DEC_B_FIN))
            return fail(d, 1002, "fragmented control frame");
        if (d->remaining > 125)
            return fail(d, 1002, "control frame longer than 125 bytes");
        break;
    default:
        return fail(d, 1002, "reserved opcode");
    }
    if (!(b1 & 0x80)) /* §5.1: a client masks every frame */
        return fail(d, 1002, "unmasked client frame");
    return 0;
}

/*
 * A data frame's length is known: refuse it now if the message would grow past
 * max_message, so a peer cannot make us read (or a caller buffer) gigabytes first.
 */
static ssize_t start_frame(struct ws_dec *d)
{
    if (is_control(d->opcode))
        return 0;
    uint64_t max = d->max_message;

    if (d->opcode != WS_OP_CONT) {
        d->msg_opcode = d->opcode;
        d->msg_len = 0;
        d->utf8 = UTF8_ACCEPT;
        d->bits =
            (uint8_t)((d->bits & ~WS_DEC_B_ZMSG) | (d->bits & WS_DEC_B_RSV1 ? WS_DEC_B_ZMSG : 0));
    }
    if (d->bits & WS_DEC_B_ZMSG) /* its inflated size is the caller's to check */
        max = max > UINT64_MAX / 2 ? UINT64_MAX : max + WS_DEC_ZSLACK(max);
    if (d->remaining > max - d->msg_len)
        return fail(d, 1009, "message too big");
    return 0;
}

void ws_dec_init(struct ws_dec *d, uint64_t max_message)
{
    memset(d, 0, sizeof(*d));
    d->max_message = max_message;
    d->state = WS_DEC_HEAD;
    d->utf8 = UTF8_ACCEPT;
}

/* XORs buf[0..n) with the 4-byte key, starting at key byte pos: eight bytes at a time
 * (the key repeated, rotated to pos), then the tail byte by byte. */
static void unmask(uint8_t *buf, size_t n, const uint8_t key[4], unsigned pos)
{
    uint8_t k8[8];
    uint64_t k, v;
    size_t i = 0;

    for (unsigned j = 0; j < 8; j++)
        k8[j] = key[(pos + j) & 3];
    memcpy(&k, k8, 8);
    for (; i + 8 <= n; i += 8) {
        memcpy(&v, buf + i, 8);
        v ^= k;
        memcpy(buf + i, &v, 8);
    }
    for (; i < n; i++)
        buf[i] ^= key[(pos + i) & 3];
}

/*
 * Unmasks and reports up to d->remaining bytes of buf[0..len), or the whole empty
 * frame. Text is checked as it comes (§8.1): a chunk holding an invalid byte is
 * never reported, and a text message must end on a code point boundary.
 */
static ssize_t payload(struct ws_dec *d, uint8_t *buf, size_t len, struct ws_dec_out *out)
{
    size_t n = d->remaining < len ? (size_t)d->remaining : len;
    bool control = is_control(d->opcode);

    if (n == 0 && d->remaining > 0)
        return 0;
    unmask(buf, n, d->mask, d->mask_pos);
    d->mask_pos = (uint8_t)((d->mask_pos + n) & 3);
    d->remaining -= n;
    out->ready = true;
    out->control = control;
    out->data = buf;
    out->len = n;
    out->frame_end = d->remaining == 0;
    if (control) {
        out->opcode = d->opcode;
        out->msg_end = out->frame_end;
    } else {
        out->opcode = d->msg_opcode;
        out->msg_end = out->frame_end && (d->bits & WS_DEC_B_FIN);
        out->compressed = (d->bits & WS_DEC_B_ZMSG) != 0;
        d->msg_len += n;
        if (d->msg_opcode == WS_OP_TEXT && !out->compressed) {
            d->utf8 = utf8_feed(d->utf8, buf, n, NULL);
            if (d->utf8 == UTF8_REJECT)
                return fail(d, 1007, "invalid UTF-8 in text message");
            if (out->msg_end && d->utf8 != UTF8_ACCEPT)
                return fail(d, 1007, "text message ends inside a code point");
        }
    }
    if (out->frame_end) {
        d->state = WS_DEC_HEAD;
        if (out->msg_end && !control) {
            d->msg_opcode = 0;
            d->msg_len = 0; /* d->utf8 is ACCEPT here, or we failed above */
            d->bits &= (uint8_t)~WS_DEC_B_ZMSG;
        }
    }
    return (ssize_t)n;
}

ssize_t ws_dec_feed(struct ws_dec *d, uint8_t *buf, size_t len, struct ws_dec_out *out)
{
    const uint8_t *p = buf, *end = buf + len;
    ssize_t n;

    memset(out, 0, sizeof(*out));
    switch (d->state) {
    case WS_DEC_FAILED:
        return -1;
    case WS_DEC_HEAD:
        if (!collect(d, 2, &p, end))
            break;
        if (check_head(d) < 0)
            return -1;
        d->state = WS_DEC_EXTLEN;
        FALLTHROUGH;
    case WS_DEC_EXTLEN:
        if (d->remaining >= 126) {
            if (!collect(d, d->remaining == 126 ? 2 : 8, &p, end))
                break;
            d->remaining = be_uint(d->field, d->remaining == 126 ? 2 : 8);
            if (d->remaining >> 63) /* §5.2: the most significant bit must be 0 */
                return fail(d, 1002, "64-bit length with the top bit set");
        }
        if (start_frame(d) < 0)
            return -1;
        d->state = WS_DEC_MASK;
        FALLTHROUGH;
    case WS_DEC_MASK:
        if (!collect(d, 4, &p, end))
            break;
        memcpy(d->mask, d->field, 4);
        d->mask_pos = 0;
        d->state = WS_DEC_PAYLOAD;
        FALLTHROUGH;
    case WS_DEC_PAYLOAD:
        n = payload(d, buf + (p - buf), (size_t)(end - p), out);
        if (n < 0) {
            memset(out, 0, sizeof(*out)); /* the bad chunk is never reported */
            return -1;
        }
        p += n;
        break;
    default:
        return fail(d, 1002, "corrupt decoder state");
    }
    return p - buf;
}

void ws_dec_set_deflate(struct ws_dec *d, unsigned wbits)
{
    unsigned v = wbits >= 9 && wbits <= 15 ? wbits - 8 : 0;

    d->bits = (uint8_t)((d->bits & 0x0f) | v << 4);
}

bool ws_dec_is_idle(const struct ws_dec *d)
{
    return d->state == WS_DEC_HEAD && d->have == 0 && d->msg_opcode == 0;
}
