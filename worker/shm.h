#ifndef WSGATE_WORKER_SHM_H
#define WSGATE_WORKER_SHM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "worker/apply.h"
#include "worker/auth.h"
#include "worker/deflate.h"
#include "worker/inbound.h"
#include "worker/ostream.h"
#include "worker/redis.h"
#include "worker/subs.h"
#include "worker/tombs.h"

/*
 * Counters and states every process of one gateway can read: a MAP_SHARED region the
 * master maps before forking. Each worker writes only its own slot; the master writes
 * restarts and the gateway's drain flag; any worker's admin endpoint sums the slots.
 * A slot outlives its worker, so counters stay monotonic across restarts.
 */

#define SHM_CLOSE_CODES 5000 /* close frames sent, by code (codes above 4999 are never sent) */

enum close_by {
    CLOSE_BY_ORDER,
    CLOSE_BY_CLIENT,
    CLOSE_BY_DRAIN,
    CLOSE_BY_TIMEOUT,
    CLOSE_BY_ERROR,
    CLOSE_BY_SLOW, /* a slow consumer: output over --max-outbound, or stuck at the keepalive */
    CLOSE_BY_BUSY,    /* the worker's --max-pending budget was full */
    CLOSE_BY_EXPIRED, /* its token expired (JWT) */
    CLOSE_BY_TOMBSTONE, /* a tombstone matched it (tombs.h) */
    CLOSE_BY_COUNT
};

/* Counters of one worker. */
struct worker_stats {
    uint64_t accepted;
    uint64_t accept_errors;
    uint64_t refused_full;  /* 503: at the file limit */
    uint64_t admin_refused; /* 503: too many admin requests at once */
    uint64_t ip_refused_conns; /* 429: --max-conns-per-ip */
    uint64_t ip_refused_rate;  /* 429: --max-handshakes-per-ip */
    uint64_t ip_untracked;     /* admitted unlimited: the address table was full */
    uint64_t proxy_errors;     /* connections closed for a bad PROXY protocol header */
    uint64_t handshakes_ok;
    uint64_t handshakes_failed; /* answered with an HTTP error */
    uint64_t handshake_timeouts;
    uint64_t msgs_in;
    uint64_t bytes_in;
    uint64_t msgs_out;
    uint64_t bytes_out;
    uint64_t protocol_errors; /* connections failed with 1002/1007/1009 */
    uint64_t ping_timeouts;
    uint64_t close_timeouts;
    uint64_t closes_by_client;
    uint64_t closes_by_server;
    uint64_t events_published;
    uint64_t slow_closes;    /* closed with 1013 as slow consumers */
    uint64_t pending_closes; /* closed with 1013: --max-pending budget full */
    uint64_t tls_handshakes_ok;
    uint64_t tls_handshakes_failed;  /* refused or broken: version, cipher, not TLS, EOF */
    uint64_t tls_handshake_timeouts; /* still in TLS at --handshake-timeout */
    uint64_t tls_reloads_ok;         /* SIGHUP: new connections get the new certificate */
    uint64_t tls_reloads_failed;     /* SIGHUP: the files did not load; the old ones stay */
    uint64_t closes_by[CLOSE_BY_COUNT];
    uint64_t close_codes[SHM_CLOSE_CODES];
};

/* Join and leave orders (apply.c): connections, as in their acknowledgements. */
struct member_stats {
    uint64_t orders;  /* join and leave orders applied (dry runs included) */
    uint64_t joined;  /* connections that joined at least one group */
    uint64_t left;    /* connections that left at least one group */
    uint64_t refused; /* connections a join left out: at --max-groups, or out of memory */
};

/*
 * Send orders (apply.c). The delivery histogram counts one sample per send order that
 * reached at least one connection of this worker: the time from the order's arrival at
 * the worker until the last copy of its message left the output queues (written to a
 * socket, or dropped with its connection). Buckets hold their own counts (not
 * cumulative); their upper bounds are SHM_PUSH_BOUNDS_US, the last bucket is +Inf.
 */
#define SHM_PUSH_BUCKETS 17
#define SHM_PUSH_BOUNDS_US                                                                     \
    {                                                                                          \
        100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, \
            2500000, 5000000, 10000000                                                         \
    }

struct push_stats {
    uint64_t messages; /* frames written or queued by send orders, one per recipient */
    uint64_t bytes;    /* their payload bytes */
    uint64_t dropped;  /* recipients closed as slow consumers (1013) by a send */
    uint64_t latency[SHM_PUSH_BUCKETS];
    uint64_t latency_sum_us;
};

struct shm_worker {
    pid_t pid;                       /* 0 while not running */
    uint64_t restarts;               /* written by the master */
    uint64_t stall_kills;            /* written by the master: killed for not ticking */
    volatile long long last_tick_ms; /* CLOCK_MONOTONIC ms of the loop's last tick */
    uint64_t conns;                  /* open connections (gauge) */
    uint64_t groups;                 /* groups with members here (gauge) */
    bool listening;
    bool subscribed;
    bool draining;
    bool at_capacity; /* as many clients as its file limit allows: new ones get 503 */
    uint64_t out_bytes;     /* gauge: memory held by output queues */
    uint64_t pending_bytes; /* gauge: memory held by partly received messages */
    struct worker_stats st;
    struct apply_stats orders;
    struct push_stats push;
    struct auth_stats auth;
    struct wredis_stats redis;
    struct inbound_stats inbound;
    struct member_stats members;
    struct subs_stats subs;
    struct ostream_stats ostream;
    struct tombs_stats tombs;
    struct deflate_stats deflate;
};

struct shm {
    int nworkers;
    volatile int draining;      /* the gateway is draining: readiness fails */
    volatile int drain_ordered; /* a worker took a drain order: the gateway ends */
    struct iplimit *ipl;        /* per-address limits in their own shared mapping, or NULL */
    struct shm_worker w[];
};

/* Maps a zeroed region for n workers; NULL on failure. Inherited across fork(). */
struct shm *shm_create(int n);

#endif /* WSGATE_WORKER_SHM_H */
