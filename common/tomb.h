#ifndef WSGATE_COMMON_TOMB_H
#define WSGATE_COMMON_TOMB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Tombstones: groups whose new connections are closed at once until a moment, with
 * the code and reason of the close order that set them (order "ttl_ms"). A user is
 * the group user:ID. This is the pure part: the table a worker checks each new
 * connection against, and the JSON a tombstone is kept as in Redis (worker/tombs.c
 * does the I/O):
 *
 *   hash <channel>:tombs, field "group:<name>",
 *   value {"until": Unix ms, "code": N, "reason": "...", "id": "order id" | null,
 *          "ts": Unix ms of the ban}
 *
 * Orders can come late (a worker's stream link catching up after its subscriber did):
 * an unban leaves a marker, for as long as such a late copy may come, so a ban set
 * before it (by its ts) and read after it is not held again; and an unban older than
 * the ban it meets lifts nothing. Each entry keeps the ts of the order that set it.
 *
 * The table is a hash table on the group name (chained, seeded FNV-1a), so a check
 * costs one lookup per group of the connection, whatever the number of tombstones. It
 * holds at most cap entries: a new one past that is refused (the caller counts it);
 * expired ones are dropped when met and, when the table is full, all at once first.
 * Pure: the caller passes the clock (Unix ms).
 */

#define TOMB_CAP_MAX      10000000u
#define TOMB_FIELD_PREFIX "group:"
#define TOMB_REASON_MAX   123

struct tomb {
    char *name;       /* owned: the group */
    char *id;         /* owned: the order's id, NULL when it had none */
    int64_t until_ms; /* Unix ms: the tombstone (or marker) holds while now < until_ms */
    int64_t ts_ms;    /* Unix ms of the order that set it: a ban's, or an unban's */
    bool lifted;      /* a marker left by an unban: matches no connection */
    unsigned code;
    char reason[TOMB_REASON_MAX + 1];
    struct tomb *next; /* in its bucket */
};

enum tomb_put_result {
    TOMB_ADDED,
    TOMB_UPDATED, /* held already: the later until, code and reason kept */
    TOMB_FULL,    /* cap unexpired entries held: not added */
    TOMB_NOMEM,
    TOMB_STALE, /* an unban after the ban's ts was seen: not held */
};

struct tomb_table;

/* An empty table for at most cap (1..TOMB_CAP_MAX) entries; seed keys the hash.
 * NULL when out of memory or cap is out of range. Release with tomb_table_free(). */
struct tomb_table *tomb_table_new(size_t cap, uint64_t seed);
void tomb_table_free(struct tomb_table *t);

/* Adds or refreshes the tombstone of group name[0..len), set by an order of ts_ms.
 * reason is NUL-terminated (cut to TOMB_REASON_MAX bytes by the caller's rules), id may
 * be NULL. A refresh keeps the later until_ms, and takes code, reason and id from the
 * later one. A marker of an unban at or after ts_ms refuses it (TOMB_STALE); an older
 * marker is replaced. */
enum tomb_put_result tomb_put(struct tomb_table *t, const char *name, size_t len, int64_t until_ms,
                              int64_t ts_ms, unsigned code, const char *reason, const char *id,
                              int64_t now_ms);

/* An unban of ts_ms for group name[0..len): a tombstone set at or before ts_ms becomes
 * a marker kept until keep_until_ms; a later one is left alone. Returns 1 when a
 * tombstone in force was lifted, 0 when none was, -1 when the marker could not be kept
 * (full or out of memory: the tombstone is dropped all the same). */
int tomb_lift(struct tomb_table *t, const char *name, size_t len, int64_t ts_ms,
              int64_t keep_until_ms, int64_t now_ms);

/* The tombstone of group name[0..len) holding at now_ms, or NULL (an expired one is
 * dropped; a marker is not a tombstone). Borrowed: valid until the next call that
 * changes t. */
const struct tomb *tomb_find(struct tomb_table *t, const char *name, size_t len, int64_t now_ms);

/* Drops the tombstone of group name[0..len). Returns true when there was one. */
bool tomb_del(struct tomb_table *t, const char *name, size_t len);

/* Drops every expired entry. Returns how many. */
size_t tomb_expire(struct tomb_table *t, int64_t now_ms);

/* Entries held, markers and expired ones not dropped yet included. */
size_t tomb_count(const struct tomb_table *t);

/* Walks the entries, markers included: *cursor starts at 0; returns the next entry or
 * NULL at the end. The table must not change during the walk. */
const struct tomb *tomb_next(const struct tomb_table *t, size_t *cursor, const struct tomb *prev);

/* The JSON value of a tombstone as kept in Redis; malloc'd, or NULL when out of memory. */
char *tomb_to_json(const struct tomb *tb);

/*
 * Reads a tombstone from its Redis field and value: field "group:<name>" (name 1 to
 * 128 bytes), value as tomb_to_json() writes (unknown fields ignored; ts may be absent:
 * then until). Fills *tb with
 * name and id malloc'd (release with tomb_cleanup()). Returns 0, or -1 with *why set
 * (static text): nothing to release.
 */
int tomb_parse(const char *field, size_t flen, const char *value, size_t vlen, struct tomb *tb,
               const char **why);

void tomb_cleanup(struct tomb *tb);

#endif /* WSGATE_COMMON_TOMB_H */
