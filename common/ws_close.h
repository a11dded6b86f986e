#ifndef WSGATE_COMMON_WS_CLOSE_H
#define WSGATE_COMMON_WS_CLOSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Close status codes, RFC 6455 §7.4.1 and the IANA registry. */
#define WS_CLOSE_NORMAL          1000
#define WS_CLOSE_GOING_AWAY      1001
#define WS_CLOSE_PROTOCOL_ERROR  1002
#define WS_CLOSE_UNSUPPORTED     1003
#define WS_CLOSE_NO_STATUS       1005 /* never on the wire: "the peer sent no code" */
#define WS_CLOSE_ABNORMAL        1006 /* never on the wire: "no close frame at all" */
#define WS_CLOSE_INVALID_DATA    1007
#define WS_CLOSE_POLICY          1008
#define WS_CLOSE_TOO_BIG         1009
#define WS_CLOSE_MANDATORY_EXT   1010 /* client only */
#define WS_CLOSE_INTERNAL_ERROR  1011
#define WS_CLOSE_SERVICE_RESTART 1012
#define WS_CLOSE_TRY_AGAIN_LATER 1013
#define WS_CLOSE_BAD_GATEWAY     1014

#define WS_CLOSE_REASON_MAX 123 /* 125-byte control payload minus the 2-byte code */

/*
 * True when a client may put code on the wire: 1000-1003, 1007-1014, 3000-4999.
 * A close frame from a client with any other code is a protocol error (1002).
 */
bool ws_close_code_is_valid_received(unsigned code);

/*
 * True when this server may send code: 1000-1003, 1007-1009, 1011-1014, 3000-4999.
 * The same rule decides which codes a close order may carry.
 */
bool ws_close_code_is_sendable(unsigned code);

/*
 * Length to keep of the valid UTF-8 reason[0..len): at most WS_CLOSE_REASON_MAX
 * bytes, cut after the last whole code point that fits.
 */
size_t ws_close_reason_cut(const char *reason, size_t len);

/*
 * Parses a received close frame's payload (already unmasked). On success returns 0,
 * sets *code (WS_CLOSE_NO_STATUS for an empty payload) and points *reason and *reason_len
 * into payload. On failure returns the close code to answer with: 1002 for a 1-byte
 * payload or a code that may not be sent, 1007 for a reason that is not UTF-8.
 */
int ws_close_parse(const uint8_t *payload, size_t len, unsigned *code, const uint8_t **reason,
                   size_t *reason_len);

#endif /* WSGATE_COMMON_WS_CLOSE_H */
