#include "common/ws_close.h"

#include "common/utf8.h"

/*
 * RFC 6455 §7.4: 1004 is reserved, 1005 and 1006 must never be on the wire, 1015
 * (TLS failure) is reported locally only, 1016-2999 are unassigned or reserved for
 * future RFCs, 3000-4999 belong to libraries and applications, the rest is invalid.
 */
bool ws_close_code_is_valid_received(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

/* As above, minus 1010: only a client asks for an extension the other side lacks. */
bool ws_close_code_is_sendable(unsigned code)
{
    return code != WS_CLOSE_MANDATORY_EXT && ws_close_code_is_valid_received(code);
}

size_t ws_close_reason_cut(const char *reason, size_t len)
{
    return utf8_cut((const uint8_t *)reason, len, WS_CLOSE_REASON_MAX);
}

int ws_close_parse(const uint8_t *payload, size_t len, unsigned *code, const uint8_t **reason,
                   size_t *reason_len)
{
    unsigned c;

    if (len == 0) { /* §5.5.1: the body is optional; §7.1.5: then the code is 1005 */
        *code = WS_CLOSE_NO_STATUS;
        *reason = payload;
        *reason_len = 0;
        return 0;
    }
    if (len == 1 || len > 125) /* a body starts with a 2-byte code; §5.5 caps it */
        return WS_CLOSE_PROTOCOL_ERROR;
    c = (unsigned)payload[0] << 8 | payload[1];
    if (!ws_close_code_is_valid_received(c))
        return WS_CLOSE_PROTOCOL_ERROR;
    if (!utf8_is_valid(payload + 2, len - 2)) /* §5.5.1: the reason is UTF-8 */
        return WS_CLOSE_INVALID_DATA;
    *code = c;
    *reason = payload + 2;
    *reason_len = len - 2;
    return 0;
}
