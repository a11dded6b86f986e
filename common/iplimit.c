#include "common/iplimit.h"

#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <netinet/in.h>

/*
 * Layout: a 64-byte header written once by iplimit_init, then nbuckets buckets of
 * bucket_size bytes (a multiple of 64), each:
 *   lock        0, or the number + 1 of the worker changing a key in this bucket
 *   key[8]      the address key a slot holds, or EMPTY
 *   tat[8]      GCRA's theoretical arrival time, in microseconds of CLOCK_MONOTONIC
 *   cols[8][W]  open connections per slot and worker
 *
 * The protocol, with every atomic operation sequentially consistent (C11's default):
 *   counting   a worker adds 1 to its column of the slot holding its key, then checks
 *              that the bucket is unlocked and the slot still holds its key; if not,
 *              it takes the 1 back and looks again. Once the check passed, its 1 pins
 *              the slot: no one changes the key of a slot with a count.
 *   re-keying  under the bucket's lock, a worker reads the columns and the time of a
 *              slot and, when the slot is idle (no count, a full rate bucket), stores
 *              the new key.
 * The two meet like Dekker's: "add, then read the lock" against "take the lock, then
 * read the columns". In the single order of all such operations, either the counter
 * sees the lock (and backs off) or the re-keyer sees the count (and leaves the slot
 * alone); a key is never changed under a count.
 *
 * The limit is exact: of N workers whose additions all happened, the last to add
 * reads every other addition in its sum, so no more than max_conns pass. A racing
 * pair may both refuse (each sees the other's transient 1): safe, and rare.
 */

#define EMPTY     UINT64_MAX /* ff..ff/64 is multicast: never a client's source */
#define TRIES     32         /* bounded waits on a busy bucket, then fail open */
#define SLOTS_MAX (1u << 24)

struct iplimit {
    uint64_t interval_us;  /* GCRA's emission interval: period / rate; 0: no rate limit */
    uint64_t tolerance_us; /* GCRA's burst tolerance: interval * (rate - 1) */
    uint64_t k0, k1;       /* SipHash key */
    uint64_t bucket_size;
    uint32_t nbuckets;
    uint32_t nworkers;
    uint32_t max_conns;
    uint32_t pad[3]; /* to 64 bytes: the buckets start on a cache line */
};

_Static_assert(sizeof(struct iplimit) == 64, "the header is one cache line");
_Static_assert(ATOMIC_SHORT_LOCK_FREE == 2 && ATOMIC_INT_LOCK_FREE == 2 &&
                   ATOMIC_LLONG_LOCK_FREE == 2,
               "shared between processes: the atomics must be lock-free");

struct bucket {
    _Atomic uint32_t lock;
    uint32_t pad[3]; /* to 64 bytes: the buckets start on a cache line */
    _Atomic uint64_t key[IPLIMIT_BUCKET_SLOTS];
    _Atomic uint64_t tat[IPLIMIT_BUCKET_SLOTS];
    _Atomic uint16_t cols[]; /* [slot * nworkers + worker] */
};

static size_t bucket_size(uint32_t nworkers)
{
    size_t n = sizeof(struct bucket) + IPLIMIT_BUCKET_SLOTS * nworkers * sizeof(uint16_t);

    return (n + 63) & ~(size_t)63;
}

static struct bucket *bucket_at(const struct iplimit *t, uint32_t i)
{
    return (struct bucket *)((char *)(uintptr_t)t + sizeof(*t) + (size_t)i * t->bucket_size);
}

static _Atomic uint16_t *col(const struct iplimit *t, struct bucket *b, uint32_t slot,
                             uint32_t worker)
{
    return &b->cols[slot * t->nworkers + worker];
}

static bool conf_ok(const struct iplimit_conf *c)
{
    if (c->slots < IPLIMIT_BUCKET_SLOTS || c->slots > SLOTS_MAX || c->nworkers == 0 ||
        c->nworkers > IPLIMIT_MAX_WORKERS || c->max_conns > IPLIMIT_MAX_CONNS)
        return false;
    /* one handshake per microsecond at most: the interval must not round to 0 */
    return c->rate == 0 || (c->period_ms > 0 && (uint64_t)c->period_ms * 1000 >= c->rate);
}

size_t iplimit_size(const struct iplimit_conf *c)
{
    uint32_t nbuckets;

    if (!conf_ok(c))
        return 0;
    nbuckets = (c->slots + IPLIMIT_BUCKET_SLOTS - 1) / IPLIMIT_BUCKET_SLOTS;
    return sizeof(struct iplimit) + (size_t)nbuckets * bucket_size(c->nworkers);
}

struct iplimit *iplimit_init(void *mem, size_t len, const struct iplimit_conf *c)
{
    size_t need = iplimit_size(c);
    struct iplimit *t = mem;

    if (need == 0 || len < need || ((uintptr_t)mem & 63) != 0)
        return NULL;
    memset(mem, 0, need);
    t->nbuckets = (c->slots + IPLIMIT_BUCKET_SLOTS - 1) / IPLIMIT_BUCKET_SLOTS;
    t->nworkers = c->nworkers;
    t->max_conns = c->max_conns;
    if (c->rate > 0) {
        t->interval_us = (uint64_t)c->period_ms * 1000 / c->rate;
        t->tolerance_us = t->interval_us * (c->rate - 1);
    }
    t->k0 = c->seed[0];
    t->k1 = c->seed[1];
    t->bucket_size = bucket_size(c->nworkers);
    for (uint32_t i = 0; i < t->nbuckets; i++)
        for (uint32_t s = 0; s < IPLIMIT_BUCKET_SLOTS; s++)
            atomic_init(&bucket_at(t, i)->key[s], EMPTY);
    return t;
}

/* --- keys and hashing ------------------------------------------------------------ */

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/*
 * IPv4 a.b.c.d → 0000:0001:abcd::/64's prefix, IPv6 → its /64 prefix. 0000::/8 is
 * reserved (RFC 4291 §2.4), so no real IPv6 client shares a key with an IPv4 one.
 */
static bool key_of(const struct sockaddr *sa, uint64_t *key)
{
    if (sa == NULL)
        return false;
    if (sa->sa_family == AF_INET) {
        const uint8_t *a =
            (const uint8_t *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
        *key =
            1ull << 32 | (uint64_t)a[0] << 24 | (uint64_t)a[1] << 16 | (uint64_t)a[2] << 8 | a[3];
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *in6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        const uint8_t *a = in6->s6_addr;
        if (IN6_IS_ADDR_V4MAPPED(in6)) {
            *key = 1ull << 32 | (uint64_t)a[12] << 24 | (uint64_t)a[13] << 16 |
                   (uint64_t)a[14] << 8 | a[15];
            return true;
        }
        *key = be64(a);
        if (*key == EMPTY)
            *key = EMPTY - 1; /* both multicast: never a client */
        return true;
    }
    return false;
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND           \
    do {                   \
        v0 += v1;          \
        v1 = ROTL(v1, 13); \
        v1 ^= v0;          \
        v0 = ROTL(v0, 32); \
        v2 += v3;          \
        v3 = ROTL(v3, 16); \
        v3 ^= v2;          \
        v0 += v3;          \
        v3 = ROTL(v3, 21); \
        v3 ^= v0;          \
        v2 += v1;          \
        v1 = ROTL(v1, 17); \
        v1 ^= v2;          \
        v2 = ROTL(v2, 32); \
    } while (0)

/* SipHash-1-3 of one 64-bit word: keyed, so which bucket an address falls in cannot be
 * known, nor many addresses aimed at one bucket to push a victim out of the table. */
static uint64_t siphash_u64(uint64_t k0, uint64_t k1, uint64_t m)
{
    uint64_t v0 = 0x736f6d6570736575ull ^ k0, v1 = 0x646f72616e646f6dull ^ k1;
    uint64_t v2 = 0x6c7967656e657261ull ^ k0, v3 = 0x7465646279746573ull ^ k1;
    uint64_t last = 8ull << 56; /* the message length, in the final block */

    v3 ^= m;
    SIPROUND;
    v0 ^= m;
    v3 ^= last;
    SIPROUND;
    v0 ^= last;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static uint32_t bucket_of(const struct iplimit *t, uint64_t key)
{
    uint64_t h = siphash_u64(t->k0, t->k1, key);

    return (uint32_t)(((h >> 32) * t->nbuckets) >> 32);
}

/* --- slots ----------------------------------------------------------------------- */

static int find(struct bucket *b, uint64_t key)
{
    for (int s = 0; s < IPLIMIT_BUCKET_SLOTS; s++)
        if (atomic_load(&b->key[s]) == key)
            return s;
    return -1;
}

static uint32_t sum(const struct iplimit *t, struct bucket *b, uint32_t slot)
{
    uint32_t n = 0;

    for (uint32_t w = 0; w < t->nworkers; w++)
        n += atomic_load(col(t, b, slot, w));
    return n;
}

static bool take_lock(struct bucket *b, uint32_t worker)
{
    for (int i = 0; i < TRIES; i++) {
        uint32_t free_ = 0;
        if (atomic_compare_exchange_strong(&b->lock, &free_, worker + 1))
            return true;
        sched_yield(); /* the holder is a few instructions from done, or dead */
    }
    return false;
}

/*
 * Gives key a slot in b: the one already holding it, a free one, or the idle one
 * that has been idle longest. Returns the slot, -1 when every slot is busy, -2 when
 * the lock could not be had.
 */
static int claim(const struct iplimit *t, struct bucket *b, uint64_t key, uint32_t worker,
                 uint64_t now_us)
{
    int s, empty = -1, idle = -1;
    uint64_t oldest = UINT64_MAX;

    if (!take_lock(b, worker))
        return -2;
    for (s = 0; s < IPLIMIT_BUCKET_SLOTS; s++) {
        uint64_t k = atomic_load(&b->key[s]), tat;
        if (k == key)
            goto out; /* taken meanwhile by another worker */
        if (k == EMPTY) {
            if (empty < 0)
                empty = s;
            continue;
        }
        tat = atomic_load(&b->tat[s]);
        if (empty < 0 && tat <= now_us && tat < oldest && sum(t, b, (uint32_t)s) == 0) {
            idle = s;
            oldest = tat;
        }
    }
    s = empty >= 0 ? empty : idle;
    if (s >= 0)
        atomic_store(&b->key[s], key); /* an idle slot's tat <= now: a full rate bucket */
out:
    atomic_store(&b->lock, 0);
    return s;
}

/* GCRA: true when a handshake now conforms (and is counted), else the wait. */
static bool conforms(const struct iplimit *t, struct bucket *b, uint32_t slot, uint64_t now_us,
                     uint64_t *wait_us)
{
    uint64_t old = atomic_load(&b->tat[slot]), tat;

    do {
        tat = old > now_us ? old : now_us;
        if (tat - now_us > t->tolerance_us) {
            *wait_us = tat - now_us - t->tolerance_us;
            return false;
        }
    } while (!atomic_compare_exchange_weak(&b->tat[slot], &old, tat + t->interval_us));
    return true;
}

enum iplimit_verdict iplimit_acquire(struct iplimit *t, uint32_t worker, const struct sockaddr *sa,
                                     uint64_t now_ms, uint32_t *ticket, uint32_t *retry_after_s)
{
    uint64_t key, now_us = now_ms * 1000, wait_us;
    struct bucket *b;
    _Atomic uint16_t *mine = NULL;
    uint32_t bi;
    int s = -1;

    *ticket = 0;
    *retry_after_s = 0;
    if ((t->max_conns == 0 && t->interval_us == 0) || !key_of(sa, &key))
        return IPLIMIT_OK;
    if (worker >= t->nworkers)
        return IPLIMIT_UNTRACKED;
    bi = bucket_of(t, key);
    b = bucket_at(t, bi);
    for (int i = 0; i < TRIES && mine == NULL; i++) {
        s = find(b, key);
        if (s < 0)
            s = claim(t, b, key, worker, now_us);
        if (s == -1)
            return IPLIMIT_UNTRACKED; /* a full bucket: fail open */
        if (s == -2)
            break;
        mine = col(t, b, (uint32_t)s, worker);
        atomic_fetch_add(mine, 1);
        if (atomic_load(&b->lock) == 0 && atomic_load(&b->key[s]) == key)
            break; /* pinned */
        atomic_fetch_sub(mine, 1);
        mine = NULL;
        sched_yield();
    }
    if (mine == NULL)
        return IPLIMIT_UNTRACKED; /* a bucket busy for too long: fail open */
    if (t->interval_us > 0 && !conforms(t, b, (uint32_t)s, now_us, &wait_us)) {
        atomic_fetch_sub(mine, 1);
        *retry_after_s = (uint32_t)((wait_us + 999999) / 1000000);
        return IPLIMIT_TOO_FAST;
    }
    if (t->max_conns == 0) {
        atomic_fetch_sub(mine, 1); /* not counted: the pin only kept the slot ours */
        return IPLIMIT_OK;
    }
    if (sum(t, b, (uint32_t)s) > t->max_conns) {
        atomic_fetch_sub(mine, 1);
        *retry_after_s = IPLIMIT_CONNS_RETRY_S;
        return IPLIMIT_TOO_MANY_CONNS;
    }
    *ticket = bi * IPLIMIT_BUCKET_SLOTS + (uint32_t)s + 1;
    return IPLIMIT_OK;
}

void iplimit_release(struct iplimit *t, uint32_t worker, uint32_t ticket)
{
    uint32_t slot = ticket - 1;
    _Atomic uint16_t *c;

    if (ticket == 0 || worker >= t->nworkers || slot / IPLIMIT_BUCKET_SLOTS >= t->nbuckets)
        return;
    c = col(t, bucket_at(t, slot / IPLIMIT_BUCKET_SLOTS), slot % IPLIMIT_BUCKET_SLOTS, worker);
    if (atomic_load(c) > 0) /* only this worker writes its column */
        atomic_fetch_sub(c, 1);
}

uint32_t iplimit_forget_worker(struct iplimit *t, uint32_t worker)
{
    uint32_t freed = 0;

    if (worker >= t->nworkers)
        return 0;
    for (uint32_t i = 0; i < t->nbuckets; i++) {
        struct bucket *b = bucket_at(t, i);
        uint32_t held = worker + 1;
        for (uint32_t s = 0; s < IPLIMIT_BUCKET_SLOTS; s++)
            atomic_store(col(t, b, s, worker), 0);
        /* a key store is one instruction: the bucket is consistent as it was left */
        if (atomic_compare_exchange_strong(&b->lock, &held, 0))
            freed++;
    }
    return freed;
}

uint32_t iplimit_conns(const struct iplimit *t, const struct sockaddr *sa)
{
    uint64_t key;
    struct bucket *b;
    int s;

    if (!key_of(sa, &key))
        return 0;
    b = bucket_at(t, bucket_of(t, key));
    s = find(b, key);
    return s < 0 ? 0 : sum(t, b, (uint32_t)s);
}

uint64_t iplimit_total_conns(const struct iplimit *t)
{
    uint64_t n = 0;

    for (uint32_t i = 0; i < t->nbuckets; i++)
        for (uint32_t s = 0; s < IPLIMIT_BUCKET_SLOTS; s++)
            n += sum(t, bucket_at(t, i), s);
    return n;
}

uint32_t iplimit_slots_used(const struct iplimit *t)
{
    uint32_t n = 0;

    for (uint32_t i = 0; i < t->nbuckets; i++)
        for (uint32_t s = 0; s < IPLIMIT_BUCKET_SLOTS; s++)
            n += atomic_load(&bucket_at(t, i)->key[s]) != EMPTY;
    return n;
}
