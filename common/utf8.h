#ifndef WSGATE_COMMON_UTF8_H
#define WSGATE_COMMON_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Incremental UTF-8 validation (RFC 3629): a DFA whose state crosses calls, so a
 * code point may be split across reads and WebSocket fragments. Overlong forms,
 * surrogates (U+D800..U+DFFF) and code points above U+10FFFF are rejected at the
 * first byte that makes the sequence impossible (fail fast, as Autobahn 6.x wants).
 */

#define UTF8_ACCEPT 0u  /* between code points: a text may end here */
#define UTF8_REJECT 12u /* sticky: the text is not UTF-8 */

/*
 * Feeds len bytes to the DFA starting from state. Returns the new state. When it
 * returns UTF8_REJECT and bad_at is not NULL, *bad_at is the index of the first
 * offending byte; once REJECT, later calls return REJECT at once.
 */
uint32_t utf8_feed(uint32_t state, const uint8_t *s, size_t len, size_t *bad_at);

/* True when s[0..len) is complete, valid UTF-8. */
bool utf8_is_valid(const uint8_t *s, size_t len);

/*
 * Length of the longest prefix of the valid UTF-8 text s[0..len) that is at most
 * max bytes and ends on a code point boundary. Returns len when len <= max.
 */
size_t utf8_cut(const uint8_t *s, size_t len, size_t max);

#endif /* WSGATE_COMMON_UTF8_H */
