#include "common/ws_enc.h"

#include <string.h>

#include "common/utf8.h"
#include "common/ws_close.h"
#include "common/ws_dec.h"

/* RFC 6455 §5.2: 7-bit length, or 126 + 16 bits, or 127 + 64 bits; no mask bit. */
size_t ws_enc_header(uint8_t out[WS_FRAME_HDR_MAX], unsigned opcode, bool fin, uint64_t len)
{
    out[0] = (uint8_t)((fin ? 0x80u : 0u) | (opcode & (WS_ENC_RSV1 | 0x0fu)));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

size_t ws_enc_control(uint8_t *out, unsigned opcode, const uint8_t *payload, size_t len)
{
    if (len > 125) /* §5.5: control payloads fit the 7-bit length */
        return 0;
    if (opcode != WS_OP_CLOSE && opcode != WS_OP_PING && opcode != WS_OP_PONG)
        return 0;
    out[0] = (uint8_t)(0x80u | opcode);
    out[1] = (uint8_t)len;
    if (len > 0)
        memcpy(out + 2, payload, len);
    return 2 + len;
}

size_t ws_enc_close(uint8_t out[WS_CLOSE_FRAME_MAX], unsigned code, const char *reason,
                    size_t reason_len, bool *cut)
{
    uint8_t payload[2 + WS_CLOSE_REASON_MAX];
    size_t n;

    if (cut != NULL)
        *cut = false;
    if (code == 0) /* echo of a close without a code: §5.5.1 allows an empty body */
        return ws_enc_control(out, WS_OP_CLOSE, NULL, 0);
    if (!ws_close_code_is_sendable(code))
        return 0;
    if (reason_len > 0 && !utf8_is_valid((const uint8_t *)reason, reason_len))
        return 0; /* the peer would fail us with 1007 */
    n = ws_close_reason_cut(reason, reason_len);
    if (cut != NULL)
        *cut = n < reason_len;
    payload[0] = (uint8_t)(code >> 8);
    payload[1] = (uint8_t)code;
    if (n > 0)
        memcpy(payload + 2, reason, n);
    return ws_enc_control(out, WS_OP_CLOSE, payload, 2 + n);
}
