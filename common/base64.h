#ifndef WSGATE_COMMON_BASE64_H
#define WSGATE_COMMON_BASE64_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Standard base64 (RFC 4648 §4, with padding) for binary payloads in orders and
 * inbound envelopes. Strict: no whitespace, no URL alphabet, padding required and
 * the unused bits of the last character zero, so every byte string has exactly one
 * accepted text.
 */

/* The 6-bit value of character c in the standard alphabet (RFC 4648 §4), or in the URL
 * alphabet (§5: '-' and '_' for '+' and '/') when url is true; -1 for any other. */
int base64_value(unsigned char c, bool url);

/* Bytes base64_encode() writes for n input bytes, without the NUL. */
#define BASE64_ENCODED_LEN(n) ((((n) + 2) / 3) * 4)

/* Bytes base64_decode() writes at most for a text of n characters. */
#define BASE64_DECODED_MAX(n) ((n) / 4 * 3)

/* Writes the text of src[0..n) and a NUL into out (BASE64_ENCODED_LEN(n) + 1 bytes).
 * Returns the text's length. */
size_t base64_encode(const uint8_t *src, size_t n, char *out);

/* Decodes text[0..n) into out (BASE64_DECODED_MAX(n) bytes). Returns the bytes
 * written, or -1 when text is not strict base64. */
long base64_decode(const char *text, size_t n, uint8_t *out);

#endif /* WSGATE_COMMON_BASE64_H */
