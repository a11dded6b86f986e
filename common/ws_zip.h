#ifndef WSGATE_COMMON_WS_ZIP_H
#define WSGATE_COMMON_WS_ZIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * permessage-deflate's compression, RFC 7692 §7.2, on zlib's raw deflate. Pure: no
 * I/O, no clock, no logging.
 *
 * Compression (server to client): with server_no_context_takeover, each message is a
 * stream of its own, so one compressor per window size serves a whole worker and one
 * compressed message serves every recipient that negotiated that window.
 *
 * Inflation (client to server): with client_no_context_takeover, an inflater lives for
 * one message only. Its output is bounded: it is handed out in pieces of the caller's
 * size, counted against max_message as it comes (1009 as soon as the total passes it,
 * so a small bomb never costs more than max_message plus one piece), and a text
 * message's UTF-8 is checked on the inflated bytes (1007). Bad deflate data is 1007.
 */

struct ws_zip; /* a compressor, opaque */

/* A compressor for messages with a window of 2^wbits bytes (9..15) at zlib level 1..9;
 * NULL when memory runs out or the parameters are bad. */
struct ws_zip *ws_zip_new(unsigned wbits, int level);

/* Frees z; NULL does nothing. */
void ws_zip_free(struct ws_zip *z);

/* zlib's memory for a compressor of wbits at its defaults (memLevel 8), in bytes. */
size_t ws_zip_cost(unsigned wbits);

/*
 * Compresses in[0..len) as one message (the compressor starts afresh: no context
 * takeover) into *buf (capacity *cap, grown with realloc as needed and kept by the
 * caller), without the final 00 00 ff ff (RFC 7692 §7.2.1). Returns the compressed
 * length, or -1 when memory runs out or zlib fails.
 */
ssize_t ws_zip_message(struct ws_zip *z, const uint8_t *in, size_t len, uint8_t **buf,
                       size_t *cap);

/* Inflation of one message. */
struct ws_unzip;

/* Memory an inflater holds at most (its state and a 32 KiB window), in bytes. */
#define WS_UNZIP_COST (48 * 1024)

/* An inflater for one message of a peer's window of up to 2^15 bytes (any smaller
 * window inflates with it too); text says the message is text (UTF-8 is checked).
 * NULL when memory runs out. */
struct ws_unzip *ws_unzip_new(uint64_t max_message, bool text);

/* Frees u; NULL does nothing. */
void ws_unzip_free(struct ws_unzip *u);

/*
 * Hands in[0..len) (borrowed until ws_unzip_output() returns 0) to u; last says it is
 * the end of the message (the 00 00 ff ff of §7.2.2 is added after it).
 */
void ws_unzip_input(struct ws_unzip *u, const uint8_t *in, size_t len, bool last);

/*
 * Inflates into out[0..cap). Returns the bytes written; 0 when the input handed over
 * is used up (call ws_unzip_input() again, or the message is complete and checked
 * when last was given); -1 on failure, sticky: then ws_unzip_error() says why.
 */
ssize_t ws_unzip_output(struct ws_unzip *u, uint8_t *out, size_t cap);

/* After -1: the close code (1007 bad data or UTF-8, 1009 too big, 1011 out of memory)
 * and a static text for the log. */
unsigned ws_unzip_error(const struct ws_unzip *u, const char **why);

/* Inflated bytes so far. */
uint64_t ws_unzip_total(const struct ws_unzip *u);

#endif /* WSGATE_COMMON_WS_ZIP_H */
