#ifndef WSGATE_COMMON_WS_DEC_H
#define WSGATE_COMMON_WS_DEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Incremental decoder of client frames, RFC 6455 §5. It holds no buffer: payload is
 * unmasked in place and handed back as chunks that point into the caller's buffer,
 * so an idle connection costs only this struct. The result never depends on how the
 * stream was cut (1-byte reads included).
 *
 * Checked here, each failure sticky with a close code and a static why:
 *   1002  unmasked frame; RSV2 or RSV3 set; RSV1 set without permessage-deflate, or
 *         with it on anything but the first frame of a data message (RFC 7692 §6.1);
 *         reserved opcode (3-7, 0xB-0xF); control frame longer than 125 bytes or not
 *         FIN; continuation with no message started; a text/binary frame inside a
 *         fragmented message; 64-bit length with the top bit set
 *   1007  text message that is not UTF-8: at the first invalid byte, or at the end
 *         of a message that stops inside a code point
 *   1009  data message longer than max_message, decided from the frame header,
 *         before any of its payload is read
 * A compressed message (RSV1 on its first frame) is handed out as it was sent: its
 * UTF-8 and max_message are checked on the inflated bytes by the caller (ws_zip.h);
 * here its compressed size may pass max_message by WS_DEC_ZSLACK() at most.
 * Close frame payloads are not checked here: see ws_close_parse().
 */

enum ws_op {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

/* Embedded in each connection; the caller creates it with ws_dec_init(). */
struct ws_dec {
    uint64_t max_message; /* data message limit in bytes */
    uint64_t remaining;   /* payload bytes left in the current frame */
    uint64_t msg_len;     /* payload bytes of the current data message so far */
    const char *why;      /* static text for the log once failed */
    uint32_t utf8;        /* UTF-8 DFA state of the current text message */
    uint16_t close_code;  /* 1002, 1007 or 1009 once failed, else 0 */
    uint8_t state;        /* private */
    uint8_t opcode;       /* opcode of the current frame */
    uint8_t msg_opcode;   /* WS_OP_TEXT/BINARY while a data message is open, else 0 */
    uint8_t bits;         /* WS_DEC_B_* of the current frame and message, and the
                             permessage-deflate window in the high nibble (0: off) */
    uint8_t mask[4];      /* masking key of the current frame */
    uint8_t mask_pos;     /* payload bytes unmasked so far, mod 4 */
    uint8_t have;         /* bytes gathered in field */
    uint8_t field[8];     /* header bytes gathered across calls */
};

#define WS_DEC_B_FIN  0x01 /* the current frame has FIN */
#define WS_DEC_B_RSV1 0x02 /* the current frame has RSV1 */
#define WS_DEC_B_ZMSG 0x04 /* the current data message is compressed */

/* How far a compressed message may pass max_message on the wire: deflate may grow
 * incompressible data a little (stored blocks, or fixed Huffman codes). */
#define WS_DEC_ZSLACK(max) ((max) / 8 + 64)

/* One decoded piece of payload, filled by ws_dec_feed(). */
struct ws_dec_out {
    bool ready;          /* an event is reported; the fields below are set */
    uint8_t opcode;      /* WS_OP_TEXT/BINARY (also for continuations), or a control opcode */
    bool control;        /* opcode is close, ping or pong */
    const uint8_t *data; /* unmasked payload chunk inside the fed buffer (may be len 0) */
    size_t len;
    bool frame_end; /* last chunk of this frame */
    bool msg_end;   /* last chunk of the message (control frames: of the frame) */
    bool compressed; /* a data message sent compressed (RSV1 on its first frame) */
};

void ws_dec_init(struct ws_dec *d, uint64_t max_message);

/*
 * permessage-deflate was negotiated with server window bits wbits (9..15): RSV1 is
 * allowed on the first frame of a data message from now on. The decoder keeps wbits
 * for the caller (ws_dec_deflate); 0 turns it off.
 */
void ws_dec_set_deflate(struct ws_dec *d, unsigned wbits);

/* The window bits given to ws_dec_set_deflate(), 0 when permessage-deflate is off. */
static inline unsigned ws_dec_deflate(const struct ws_dec *d)
{
    return d->bits >> 4 ? 8u + (d->bits >> 4) : 0u;
}

/*
 * Feeds buf[0..len) (unmasked in place). Returns the bytes consumed, at most one
 * event per call: out->ready says whether one is reported. A frame's header is
 * consumed before its payload; an empty frame is reported as one event with len 0.
 * Call again with the rest while bytes remain. Returns -1 on a protocol violation:
 * then d->close_code and d->why are set, and every later call returns -1.
 */
ssize_t ws_dec_feed(struct ws_dec *d, uint8_t *buf, size_t len, struct ws_dec_out *out);

/* True when the decoder sits between frames with no data message open. */
bool ws_dec_is_idle(const struct ws_dec *d);

#endif /* WSGATE_COMMON_WS_DEC_H */
