#include "common/seen.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define RING_MIN 64

struct entry {
    char *id; /* owned */
    size_t len;
    int64_t expires;
    uint64_t hash;
};

struct seen {
    struct entry *ring; /* owned: ring_cap slots; n of them from head on, oldest first */
    size_t ring_cap;
    size_t head;
    size_t n;
    size_t cap;       /* the hard limit on n */
    uint32_t *table;  /* owned: ring slot + 1 per bucket, 0 empty; linear probing */
    size_t table_cap; /* a power of two, at least twice ring_cap */
};

/* FNV-1a, 64 bits. */
static uint64_t hash_id(const char *id, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)id[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static size_t table_size_for(size_t ring_cap)
{
    size_t t = 1;

    while (t < 2 * ring_cap)
        t <<= 1;
    return t;
}

static void table_put(uint32_t *table, size_t table_cap, const struct entry *ring, size_t slot)
{
    size_t mask = table_cap - 1, i = (size_t)ring[slot].hash & mask;

    while (table[i] != 0)
        i = (i + 1) & mask;
    table[i] = (uint32_t)(slot + 1);
}

/* The bucket that holds id, or the empty bucket where its probe ends (table[i] == 0). */
static size_t table_find(const struct seen *s, const char *id, size_t len, uint64_t h)
{
    size_t mask = s->table_cap - 1, i = (size_t)h & mask;

    while (s->table[i] != 0) {
        const struct entry *e = &s->ring[s->table[i] - 1];
        if (e->hash == h && e->len == len && memcmp(e->id, id, len) == 0)
            break;
        i = (i + 1) & mask;
    }
    return i;
}

/* Empties bucket i and shifts the rest of its probe run back (no tombstones). */
static void table_remove_at(struct seen *s, size_t i)
{
    size_t mask = s->table_cap - 1, j = i;

    s->table[i] = 0;
    for (;;) {
        size_t home;

        j = (j + 1) & mask;
        if (s->table[j] == 0)
            return;
        home = (size_t)s->ring[s->table[j] - 1].hash & mask;
        /* The entry at j may move to i unless its home lies cyclically in (i, j]. */
        if (i <= j ? (home <= i || home > j) : (home <= i && home > j)) {
            s->table[i] = s->table[j];
            s->table[j] = 0;
            i = j;
        }
    }
}

static void forget_oldest(struct seen *s)
{
    struct entry *e = &s->ring[s->head];
    size_t mask = s->table_cap - 1, i = (size_t)e->hash & mask;

    while (s->table[i] != (uint32_t)(s->head + 1))
        i = (i + 1) & mask;
    table_remove_at(s, i);
    free(e->id);
    e->id = NULL;
    s->head = (s->head + 1) % s->ring_cap;
    s->n--;
}

/* Doubles the ring (up to cap) and rebuilds the table. Returns 0, or -1 with s as it was. */
static int grow(struct seen *s)
{
    size_t ring_cap = s->ring_cap * 2 > s->cap ? s->cap : s->ring_cap * 2;
    size_t table_cap = table_size_for(ring_cap);
    struct entry *ring = calloc(ring_cap, sizeof(*ring));
    uint32_t *table = calloc(table_cap, sizeof(*table));

    if (ring == NULL || table == NULL) {
        free(ring);
        free(table);
        return -1;
    }
    for (size_t k = 0; k < s->n; k++) {
        ring[k] = s->ring[(s->head + k) % s->ring_cap];
        table_put(table, table_cap, ring, k);
    }
    free(s->ring);
    free(s->table);
    s->ring = ring;
    s->ring_cap = ring_cap;
    s->table = table;
    s->table_cap = table_cap;
    s->head = 0;
    return 0;
}

struct seen *seen_new(size_t cap)
{
    struct seen *s;

    if (cap == 0 || cap > SEEN_CAP_MAX)
        return NULL;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->cap = cap;
    s->ring_cap = cap < RING_MIN ? cap : RING_MIN;
    s->table_cap = table_size_for(s->ring_cap);
    s->ring = calloc(s->ring_cap, sizeof(*s->ring));
    s->table = calloc(s->table_cap, sizeof(*s->table));
    if (s->ring == NULL || s->table == NULL) {
        seen_free(s);
        return NULL;
    }
    return s;
}

void seen_free(struct seen *s)
{
    if (s == NULL)
        return;
    for (size_t k = 0; k < s->n && s->ring != NULL; k++)
        free(s->ring[(s->head + k) % s->ring_cap].id);
    free(s->ring);
    free(s->table);
    free(s);
}

enum seen_result seen_check_and_add(struct seen *s, const char *id, size_t len, int64_t now_ms,
                                    int64_t expires_ms)
{
    uint64_t h = hash_id(id, len);
    struct entry *e;
    size_t i, slot;
    char *copy;

    while (s->n > 0 && s->ring[s->head].expires <= now_ms)
        forget_oldest(s);
    i = table_find(s, id, len, h);
    if (s->table[i] != 0) {
        e = &s->ring[s->table[i] - 1];
        if (e->expires > now_ms)
            return SEEN_REPLAY;
        /* Expired behind an older entry that has not: remembered again in its place. */
        e->expires = expires_ms;
        return SEEN_NEW;
    }
    if (s->n == s->cap)
        return SEEN_FULL;
    if (s->n == s->ring_cap && grow(s) < 0)
        return SEEN_NOMEM;
    copy = malloc(len > 0 ? len : 1);
    if (copy == NULL)
        return SEEN_NOMEM;
    if (len > 0)
        memcpy(copy, id, len);
    slot = (s->head + s->n) % s->ring_cap;
    e = &s->ring[slot];
    e->id = copy;
    e->len = len;
    e->expires = expires_ms;
    e->hash = h;
    table_put(s->table, s->table_cap, s->ring, slot);
    s->n++;
    return SEEN_NEW;
}

size_t seen_count(const struct seen *s)
{
    return s->n;
}
