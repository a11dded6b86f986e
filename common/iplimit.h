#ifndef WSGATE_COMMON_IPLIMIT_H
#define WSGATE_COMMON_IPLIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/*
 * Limits per client address, shared by every worker of one gateway: open connections
 * (--max-conns-per-ip) and the handshake rate (--max-handshakes-per-ip). The table
 * lives in memory the caller provides: the master maps it MAP_SHARED before forking,
 * the workers inherit it. Its size is fixed at start, whatever clients do.
 *
 * Addresses. IPv4 is one key per address. IPv6 is one key per /64: a subscriber
 * line, a cloud instance or a phone is given a whole /64 (RFC 7421, SLAAC), and
 * picks addresses inside it freely, so a limit per /128 limits nothing and lets one
 * client fill the table. IPv4-mapped IPv6 (::ffff:a.b.c.d, as a dual-stack listener
 * sees IPv4 clients) is the IPv4 address. Other families are not limited.
 *
 * Concurrency: lock-free atomics on the hot path, no lock a dead process can keep.
 *  - Each worker counts its own connections in its own column of every slot, so a
 *    slot's count is the sum of the columns, and a worker that dies (SIGKILL, crash)
 *    leaves counts the master wipes with iplimit_forget_worker: nothing to guess.
 *    A worker increments its column first and checks the sum after, so racing
 *    workers may both refuse but never both pass the limit.
 *  - The handshake rate is GCRA (a token bucket kept as one "theoretical arrival
 *    time"), one 64-bit compare-and-swap per handshake: a burst of RATE handshakes,
 *    then one every period/RATE.
 *  - Only a change of the address held by a slot (taking a free or idle slot) takes
 *    a small lock per bucket of 8 slots. Its word holds the holder's worker number,
 *    so iplimit_forget_worker frees a lock its dead holder left; meanwhile the others
 *    give up after a bounded number of tries and admit the client untracked.
 *
 * Full table: addresses hash (SipHash, keyed by a random seed the attacker does not
 * know) to a bucket of 8 slots; a slot whose address has no open connection and a
 * full bucket can be taken by another address. When a bucket has no such slot, a
 * new address is admitted untracked (IPLIMIT_UNTRACKED, "fail open"): an attacker
 * with many addresses can fill the table, but must not lock everyone else out by
 * doing so; per-address limits stop few addresses with many connections, and a
 * client with many addresses is the global limits' business (capacity, file limit).
 */

#define IPLIMIT_BUCKET_SLOTS  8
#define IPLIMIT_MAX_WORKERS   256
#define IPLIMIT_MAX_CONNS     65000 /* a column is 16 bits */
#define IPLIMIT_CONNS_RETRY_S 5     /* Retry-After when over the connection limit */

struct iplimit_conf {
    uint32_t slots;     /* addresses tracked at once, 8 to 2^24; rounded up to a multiple of 8 */
    uint32_t nworkers;  /* 1 to IPLIMIT_MAX_WORKERS; workers are numbered from 0 */
    uint32_t max_conns; /* per address, 0 to IPLIMIT_MAX_CONNS; 0: not limited */
    uint32_t rate;      /* handshakes per period; 0: not limited */
    uint32_t period_ms; /* with rate: 1000 for "20/s", 60000 for "600/m" */
    uint64_t seed[2];   /* the hash key: random at every start */
};

enum iplimit_verdict {
    IPLIMIT_OK,             /* admitted; release the ticket when the connection ends */
    IPLIMIT_UNTRACKED,      /* admitted without counting: no room for this address */
    IPLIMIT_TOO_MANY_CONNS, /* refuse: 429, Retry-After IPLIMIT_CONNS_RETRY_S */
    IPLIMIT_TOO_FAST,       /* refuse: 429, Retry-After as told */
};

struct iplimit; /* opaque; lives in the caller's memory */

/*
 * Bytes the table needs for c (a multiple of 64: 64 + 8 slots' worth of
 * 136 + 16 * nworkers bytes, rounded up per bucket), or 0 when c is out of range.
 * 16384 slots take 384 KiB with 2 workers, 896 KiB with 16.
 */
size_t iplimit_size(const struct iplimit_conf *c);

/*
 * Lays the table out in mem[0..len) (64-byte aligned, as mmap gives), every count
 * zero. Call once, in the master, before forking; mem must be MAP_SHARED for the
 * workers to share it. Returns the table (at mem), or NULL when len is smaller than
 * iplimit_size(c) or c is out of range.
 */
struct iplimit *iplimit_init(void *mem, size_t len, const struct iplimit_conf *c);

/*
 * A handshake from sa (the client's address: the socket's peer, or the PROXY
 * header's source) in worker `worker`, at now_ms on CLOCK_MONOTONIC (the same clock
 * in every process). Checks the rate first (every attempt counts, refused ones too,
 * so a client at its connection limit that keeps retrying is also slowed down), then
 * the connections. *ticket is what to give iplimit_release when the connection ends:
 * non-zero only with IPLIMIT_OK and a connection limit set (0: nothing to release).
 * *retry_after_s is set for the two refusals (1 at least).
 */
enum iplimit_verdict iplimit_acquire(struct iplimit *t, uint32_t worker, const struct sockaddr *sa,
                                     uint64_t now_ms, uint32_t *ticket, uint32_t *retry_after_s);

/* The connection of ticket (from iplimit_acquire in this worker) has ended. A ticket
 * of 0 does nothing. */
void iplimit_release(struct iplimit *t, uint32_t worker, uint32_t ticket);

/*
 * Worker `worker` is gone: wipes its counts and frees a bucket lock it held. The
 * master calls it after waitpid() reaped the worker and before its replacement
 * starts (no process may be using that number meanwhile). Returns the number of
 * locks freed (a worker killed inside the few instructions that hold one).
 */
uint32_t iplimit_forget_worker(struct iplimit *t, uint32_t worker);

/* Open connections counted for sa's key, all workers: for tests and logs. */
uint32_t iplimit_conns(const struct iplimit *t, const struct sockaddr *sa);

/* Open connections counted in the whole table, and slots holding an address: for
 * /metrics and tests (reads every slot). */
uint64_t iplimit_total_conns(const struct iplimit *t);
uint32_t iplimit_slots_used(const struct iplimit *t);

#endif /* WSGATE_COMMON_IPLIMIT_H */
