#ifndef WSGATE_WORKER_DEFLATE_H
#define WSGATE_WORKER_DEFLATE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * permessage-deflate in a worker (--deflate), on common/ws_pmd (negotiation) and
 * common/ws_zip (zlib). What a connection keeps is its negotiated window, 3 bits in
 * its frame decoder (ws_dec_set_deflate): an idle connection costs nothing more.
 *
 * Server to client: the worker holds one compressor per window size a client asked
 * for (made on first use, kept; 9..15 bits, about 256 KiB for the default 15), and a
 * scratch buffer. A send order's message is compressed once per window and the
 * compressed frame is shared by every recipient with that window, as the plain frame
 * is by the others (apply.c). Messages under --deflate-min-size, and those deflate
 * does not shrink, go uncompressed (RSV1 clear, RFC 7692 §6).
 *
 * Client to server: conn.c inflates a compressed message with an inflater of its own
 * (common/ws_zip.h) that lives from its first frame to its last, counted in the
 * worker's --max-pending, through the output pieces lent here.
 */

struct worker;
struct conn;
struct ws_hs;
struct outq_frame;

/* Why a message for a deflate client went uncompressed (deflate_stats.plain). */
#define DEFLATE_PLAIN_SMALL 0 /* under --deflate-min-size */
#define DEFLATE_PLAIN_WORSE 1 /* deflate did not make it smaller */
#define DEFLATE_PLAIN_OOM   2 /* the compressor or its buffer could not be allocated */
#define DEFLATE_PLAIN_KEYS  3

/* Counters of one worker (struct shm_worker). */
struct deflate_stats {
    uint64_t negotiated;     /* upgrades that negotiated permessage-deflate */
    uint64_t declined;       /* upgrades that offered it, no offer could be honoured */
    uint64_t malformed;      /* upgrades with a Sec-WebSocket-Extensions line out of grammar */
    uint64_t compressed;     /* messages compressed: once per send order and window, or per echo */
    uint64_t bytes_before;   /* their size before */
    uint64_t bytes_after;    /* and after */
    uint64_t sent;           /* compressed frames written or queued, one per recipient */
    uint64_t plain[DEFLATE_PLAIN_KEYS]; /* messages for deflate clients sent uncompressed */
    uint64_t inflated;       /* compressed client messages inflated whole */
    uint64_t inflated_in;    /* compressed bytes received */
    uint64_t inflated_out;   /* bytes they inflated to */
    uint64_t inflate_errors; /* closed with 1007: bad deflate data, or not UTF-8 once inflated */
    uint64_t bombs;          /* closed with 1009: the inflated size passed --max-message */
    uint64_t zip_bytes;      /* gauge: memory of the worker's compressors */
};

extern const char *const deflate_plain_keys[];

/* Inflated bytes are handed out in pieces of this size. */
#define DEFLATE_PIECE (16 * 1024)

/*
 * At the upgrade, with --deflate: takes the first offer of the client's
 * Sec-WebSocket-Extensions lines in hs that can be honoured, gives c's decoder its
 * window, and writes the answer's header line into out (cap bytes). Returns the line's
 * length, 0 when the answer has no extension (counted when something was offered).
 */
size_t deflate_negotiate(struct worker *w, struct conn *c, const struct ws_hs *hs, char *out,
                         size_t cap);

/*
 * The compressed body of a message p[0..len) of one connection (an echo) for window
 * wbits, in the worker's scratch buffer (*body, valid until the next call). Returns its
 * length, or -1 when the message goes uncompressed (counted).
 */
ssize_t deflate_body(struct worker *w, unsigned wbits, const uint8_t *p, size_t len,
                     const uint8_t **body);

/*
 * The compressed twin of shared frame f, a whole data message of opcode whose payload
 * starts at byte hlen of f, for window wbits: a new frame with one reference that
 * holds a reference to f (f's last reference, which times the delivery, goes after
 * the twin's). NULL when the message goes uncompressed (counted).
 */
struct outq_frame *deflate_frame(struct worker *w, unsigned wbits, struct outq_frame *f,
                                 size_t hlen, unsigned opcode);

/* The worker's buffer for inflated pieces, DEFLATE_PIECE bytes; NULL when memory runs
 * out. */
uint8_t *deflate_piece(struct worker *w);

#endif /* WSGATE_WORKER_DEFLATE_H */
