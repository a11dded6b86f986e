#include "worker/deflate.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/ws_dec.h"
#include "common/ws_enc.h"
#include "common/ws_hs.h"
#include "common/ws_pmd.h"
#include "common/ws_zip.h"
#include "worker/conn.h"
#include "worker/outq.h"
#include "worker/worker.h"

/* zlib's level for pushed messages: compressed once for many recipients, so the ratio
 * is worth more than the time. */
#define ZIP_LEVEL 6
/* The scratch buffer is given back after a message that needed more than this. */
#define SCRATCH_KEEP (256 * 1024)
#define OFFERS_MAX   8 /* Sec-WebSocket-Extensions lines read */

const char *const deflate_plain_keys[] = {"small", "incompressible", "oom", NULL};

struct deflate {
    struct ws_zip *zip[8]; /* by window bits - 8; [0] unused: zlib has no raw 8 */
    uint8_t *buf;          /* compressed output */
    size_t cap;
    uint8_t *piece; /* inflated pieces, DEFLATE_PIECE bytes */
};

static struct deflate *ctx(struct worker *w)
{
    if (w->deflate == NULL)
        w->deflate = calloc(1, sizeof(*w->deflate));
    return w->deflate;
}

size_t deflate_negotiate(struct worker *w, struct conn *c, const struct ws_hs *hs, char *out,
                         size_t cap)
{
    const char *v[OFFERS_MAX];
    size_t n = ws_hs_header_all(hs, "Sec-WebSocket-Extensions", v, OFFERS_MAX), len;
    struct ws_pmd p;
    char id[CONN_ID_MAX];

    if (n == 0)
        return 0;
    if (n > OFFERS_MAX)
        n = OFFERS_MAX;
    ws_pmd_negotiate(v, n, &p);
    if (p.malformed) {
        w->slot->deflate.malformed++;
        log_limited(LOG_INFO, conn_id(c, id, sizeof(id)),
                    "Sec-WebSocket-Extensions out of grammar: line ignored");
    }
    len = ws_pmd_answer(&p, out, cap);
    if (len == 0) {
        for (size_t i = 0; i < n; i++) /* counted only when permessage-deflate was offered */
            if (strcasestr(v[i], "permessage-deflate") != NULL) {
                w->slot->deflate.declined++;
                log_limited(LOG_INFO, conn_id(c, id, sizeof(id)),
                            "permessage-deflate offer declined: \"%.200s\"", v[i]);
                break;
            }
        return 0;
    }
    ws_dec_set_deflate(&c->dec, p.server_wbits);
    w->slot->deflate.negotiated++;
    return len;
}

static void plain(struct worker *w, unsigned why)
{
    w->slot->deflate.plain[why]++;
}

/* After a big message, the scratch buffer goes back. */
static void scratch_trim(struct deflate *d)
{
    if (d->cap > SCRATCH_KEEP) {
        free(d->buf);
        d->buf = NULL;
        d->cap = 0;
    }
}

/* Compresses into the scratch buffer; -1 when it goes plain (counted). */
static ssize_t compress(struct worker *w, unsigned wbits, const uint8_t *p, size_t len)
{
    struct deflate *d;
    ssize_t n;

    if (len < w->cfg->deflate_min_size) {
        plain(w, DEFLATE_PLAIN_SMALL);
        return -1;
    }
    d = ctx(w);
    if (d == NULL || wbits < 9 || wbits > 15)
        goto oom;
    scratch_trim(d); /* what the last call left there is no longer needed */
    if (d->zip[wbits - 8] == NULL) {
        d->zip[wbits - 8] = ws_zip_new(wbits, ZIP_LEVEL);
        if (d->zip[wbits - 8] == NULL)
            goto oom;
        w->slot->deflate.zip_bytes += ws_zip_cost(wbits);
        log_msg(LOG_INFO, NULL, "deflate compressor made window_bits=%u", wbits);
    }
    n = ws_zip_message(d->zip[wbits - 8], p, len, &d->buf, &d->cap);
    if (n < 0)
        goto oom;
    if ((size_t)n >= len) {
        plain(w, DEFLATE_PLAIN_WORSE);
        return -1;
    }
    w->slot->deflate.compressed++;
    w->slot->deflate.bytes_before += len;
    w->slot->deflate.bytes_after += (uint64_t)n;
    return n;
oom:
    log_limited(LOG_WARN, NULL, "out of memory for deflate: message sent uncompressed");
    plain(w, DEFLATE_PLAIN_OOM);
    return -1;
}

ssize_t deflate_body(struct worker *w, unsigned wbits, const uint8_t *p, size_t len,
                     const uint8_t **body)
{
    ssize_t n = compress(w, wbits, p, len);

    if (n >= 0)
        *body = w->deflate->buf; /* the caller copies or writes it before the next call */
    return n;
}

struct outq_frame *deflate_frame(struct worker *w, unsigned wbits, struct outq_frame *f,
                                 size_t hlen, unsigned opcode)
{
    uint8_t hdr[WS_FRAME_HDR_MAX];
    ssize_t n = compress(w, wbits, f->data + hlen, f->len - hlen);
    struct outq_frame *z;
    size_t zh;

    if (n < 0)
        return NULL;
    zh = ws_enc_header(hdr, opcode | WS_ENC_RSV1, true, (uint64_t)n);
    z = outq_frame_new(zh + (size_t)n);
    if (z == NULL) {
        log_limited(LOG_WARN, NULL, "out of memory for deflate: message sent uncompressed");
        plain(w, DEFLATE_PLAIN_OOM);
        return NULL;
    }
    memcpy(z->data, hdr, zh);
    memcpy(z->data + zh, w->deflate->buf, (size_t)n);
    z->base = outq_frame_ref(f);
    return z;
}

uint8_t *deflate_piece(struct worker *w)
{
    struct deflate *d = ctx(w);

    if (d == NULL)
        return NULL;
    if (d->piece == NULL)
        d->piece = malloc(DEFLATE_PIECE);
    return d->piece;
}
