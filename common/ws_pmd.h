#ifndef WSGATE_COMMON_WS_PMD_H
#define WSGATE_COMMON_WS_PMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * permessage-deflate negotiation, RFC 7692 §5 and §7.1, on the client's
 * Sec-WebSocket-Extensions header lines (RFC 6455 §9.1 grammar). Pure: no zlib here.
 *
 * The offers are tried in the client's order; the first one wsgate can honour wins.
 * The answer always carries server_no_context_takeover (a message is compressed once
 * for all its recipients, so no recipient can share a window with earlier messages)
 * and client_no_context_takeover (RFC 7692 §7.1.1.2 lets a server ask for it in any
 * answer and a client must then honour it: no inflate state outlives a message).
 *
 * An offer is declined (the next is tried; none left: the answer has no extension,
 * never a broken one) when it has an unknown parameter, a parameter twice, a value
 * where none belongs or a missing or bad one (window bits are 8-15 in decimal without
 * leading zeros, a quoted-string is unquoted first), or server_max_window_bits=8:
 * zlib's raw deflate cannot keep its window under 512 bytes.
 */

#define WS_PMD_WBITS_MAX 15
#define WS_PMD_ANSWER_MAX 160 /* the longest line ws_pmd_answer() writes, with NUL */

struct ws_pmd {
    bool on;               /* an offer was accepted */
    uint8_t server_wbits;  /* window we compress with: 9..15 */
    uint8_t client_wbits;  /* window the client compresses with: 8..15 */
    bool say_server_wbits; /* the answer names server_max_window_bits */
    bool say_client_wbits; /* the answer names client_max_window_bits */
    bool malformed;        /* a header line broke the grammar: no offer of it is taken */
};

/*
 * Reads the n header lines values[0..n) (each NUL-terminated, as sent) and fills out.
 * A line that breaks the grammar is ignored whole (out->malformed is set). Returns
 * true when an offer was accepted (out->on).
 */
bool ws_pmd_negotiate(const char *const *values, size_t n, struct ws_pmd *out);

/*
 * Writes the answer line for an accepted p, "Sec-WebSocket-Extensions: ...\r\n", into
 * out (cap bytes, NUL-terminated). Returns its length, or 0 when p is off or it does
 * not fit.
 */
size_t ws_pmd_answer(const struct ws_pmd *p, char *out, size_t cap);

#endif /* WSGATE_COMMON_WS_PMD_H */
