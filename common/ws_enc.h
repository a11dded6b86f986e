#ifndef WSGATE_COMMON_WS_ENC_H
#define WSGATE_COMMON_WS_ENC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Frame encoder, RFC 6455 §5.2. Server frames are never masked. */

#define WS_FRAME_HDR_MAX   10  /* 2 + 8-byte extended length */
#define WS_CLOSE_FRAME_MAX 127 /* 2-byte header + 125-byte payload */

/* Or'ed into a data opcode: the frame carries RSV1, a compressed message's first
 * frame (permessage-deflate, RFC 7692 §6). */
#define WS_ENC_RSV1 0x40u

/*
 * Writes the header of a frame with opcode (WS_OP_*, with WS_ENC_RSV1 or not), the
 * FIN bit and a payload of len bytes into out. Returns the header length (2, 4 or 10).
 */
size_t ws_enc_header(uint8_t out[WS_FRAME_HDR_MAX], unsigned opcode, bool fin, uint64_t len);

/*
 * Writes a whole control frame (ping, pong or close) with payload[0..len) into out,
 * which must hold 2 + len bytes. Returns the frame length, or 0 when len > 125 or
 * opcode is not a control opcode.
 */
size_t ws_enc_control(uint8_t *out, unsigned opcode, const uint8_t *payload, size_t len);

/*
 * Writes a whole close frame into out: the 2-byte code in network order, then the
 * reason cut at the last whole code point within 123 bytes. code 0 writes a close
 * frame with an empty payload (the answer to a close that carried no code).
 * Returns the frame length, or 0 when code may not be sent (ws_close_code_is_sendable)
 * or the reason is not valid UTF-8: a frame that would be invalid is never built.
 * When cut is not NULL, *cut tells whether the reason was shortened.
 */
size_t ws_enc_close(uint8_t out[WS_CLOSE_FRAME_MAX], unsigned code, const char *reason,
                    size_t reason_len, bool *cut);

#endif /* WSGATE_COMMON_WS_ENC_H */
