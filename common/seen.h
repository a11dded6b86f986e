#ifndef WSGATE_COMMON_SEEN_H
#define WSGATE_COMMON_SEEN_H

#include <stddef.h>
#include <stdint.h>

/*
 * A bounded replay memory: ids, each remembered until its own expiry moment. Used for
 * the ids of signed orders (an envelope published twice must not be applied twice
 * while its ts still passes the age check), and meant for any later dedupe by id.
 *
 * Entries sit in a ring in arrival order beside a hash table on the id. Every call
 * first forgets expired entries from the oldest end, so each entry costs O(1) amortised
 * to add and to forget; an entry that expired behind an older one that has not is
 * forgotten when that one goes, and meanwhile does not count as seen. The memory holds
 * at most cap entries: when it is full of unexpired ids, a new id is refused rather
 * than an old one forgotten (a forgotten id could be replayed). The ring and table grow
 * by doubling up to cap, so memory follows the ids held: about 50 bytes per entry plus
 * a copy of its id.
 *
 * Pure: the caller passes the clock. Ids come from verified publishers, so the hash is
 * not keyed against flooding.
 */

#define SEEN_CAP_MAX (1u << 26) /* entries; ring positions fit the table's uint32_t */

enum seen_result {
    SEEN_NEW,    /* not remembered before (or only expired): remembered now */
    SEEN_REPLAY, /* remembered, not expired: nothing changed */
    SEEN_FULL,   /* cap unexpired entries held: not remembered */
    SEEN_NOMEM,  /* out of memory: not remembered, the rest unchanged */
};

struct seen;

/* An empty memory for at most cap entries (1..SEEN_CAP_MAX). Returns NULL when out of
 * memory or cap is out of range. Release with seen_free(). */
struct seen *seen_new(size_t cap);

/* Frees s and every id it holds; seen_free(NULL) does nothing. */
void seen_free(struct seen *s);

/*
 * Forgets what expired by now_ms, then looks up id[0..len) (any bytes). An id is
 * remembered while now_ms < its expires_ms. Adds it with expires_ms (a copy of id is
 * kept) when it is not remembered. Times are in one caller's unit and clock, e.g. Unix
 * ms. SEEN_REPLAY is the one answer that says "already seen within its window".
 */
enum seen_result seen_check_and_add(struct seen *s, const char *id, size_t len, int64_t now_ms,
                                    int64_t expires_ms);

/* Entries held, expired ones not yet forgotten included. */
size_t seen_count(const struct seen *s);

#endif /* WSGATE_COMMON_SEEN_H */
