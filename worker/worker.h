#ifndef WSGATE_WORKER_WORKER_H
#define WSGATE_WORKER_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "common/config.h"
#include "common/ws_hs.h"
#include "worker/apply.h"
#include "worker/registry.h"
#include "worker/shm.h"

struct conn;
struct ssl_ctx_st;
struct wredis;
struct job;
struct seen;
struct inbound;
struct ostream;
struct tombs;
struct deflate;

/*
 * Timer lists. Every connection sits on exactly one list whose timeout is the same
 * for all its members, so each list is in deadline order when appended at the tail
 * and one tick only looks at list heads: cost follows expiring connections, not
 * connections held.
 */
enum tlist {
    TL_NONE,
    TL_HANDSHAKE, /* waiting for the upgrade request: --handshake-timeout */
    TL_ACTIVE,    /* open, heard from at stamp: ping after --ping-interval */
    TL_PINGED,    /* open, pinged at stamp: dropped after another --ping-interval */
    TL_PAUSED,    /* open, not read for inbound backpressure (inbound.h): no timeout */
    TL_CLOSING,   /* close frame or HTTP error sent at stamp: --close-timeout */
    TL_COUNT
};

struct tlist_head {
    struct conn *head;
    struct conn *tail;
    size_t n; /* connections on the list */
    uint32_t timeout_ms;
};

/* One per worker process; lives for the whole process (globals only in entry files). */
struct worker {
    struct event_base *base;
    const struct config *cfg;
    int num;            /* 1..workers */
    char id_prefix[96]; /* "<gateway>-<worker>-<nonce>-": a connection id is this + seq */
    size_t id_prefix_len;
    uint64_t next_seq;
    int listen_fd; /* -1 once closed */
    struct event *listen_ev;
    struct event *accept_retry; /* re-arms accept after EMFILE */
    struct event *tick;
    struct event *reaper; /* frees dead connections outside their call chains */
    struct event *sig_term;
    struct event *sig_int;
    struct event *sig_hup;  /* reloads the TLS certificate */
    struct ssl_ctx_st *tls; /* owned: new TLS connections' context, NULL when TLS is off */
    uint8_t *tls_wbuf;      /* owned: a record's plaintext gathered (io.c), with TLS */
    struct event *exit_timer;
    struct tlist_head tl[TL_COUNT];
    struct conn *dead; /* released, waiting for the reaper */
    uint8_t *rbuf;     /* owned: per-worker read scratch */
    size_t rbuf_cap;
    struct ws_hs hs; /* parses the upgrade requests that arrive whole (conn.c) */
    size_t nconns;
    size_t max_conns;          /* from RLIMIT_NOFILE, minus a reserve */
    struct event *admin_ev;    /* on the master's admin listener, or NULL */
    size_t nadmin;             /* admin connections among nconns */
    bool draining;             /* a drain began: readiness fails, no new clients soon */
    bool hurry;                /* skip the rest of the drain's spread */
    struct event *drain_timer; /* --drain-delay */
    struct event *drain_check; /* exits once no client is left */
    char drain_reason[124];
    uint32_t drain_spread_ms;
    char *drain_id;          /* owned: the drain order's id, or NULL */
    char *drain_reply_to;    /* owned */
    struct job *drain_job;   /* the drain's closes while they run (apply.c clears it) */
    int exit_status;         /* WORKER_EXIT_DRAINED after a drain order */
    uint32_t now_ms;         /* loop time in ms since start, wraps every 49 days */
    struct shm *shm;         /* borrowed: the gateway's shared counters */
    struct shm_worker *slot; /* this worker's slot in shm */
    struct registry reg;
    struct wredis *redis;    /* owned */
    struct auth *auth;       /* owned: the JWT verifier and expiries (auth.c), NULL when off */
    struct seen *seen;       /* owned: ids of signed orders, made on the first one */
    struct inbound *inbound; /* owned: --inbound publish or stream (inbound.c), else NULL */
    struct ostream *ostream; /* owned: the --orders-stream reader (ostream.c), else NULL */
    struct tombs *tombs;     /* owned: tombstones (tombs.c), NULL with --max-tombstones 0 */
    struct seen *order_ids;  /* owned: ids of applied orders with --orders-stream (apply.c) */
    struct deflate *deflate; /* owned: compressors and buffers (deflate.c), made on first use */

    /* What bounded memory holds now: --max-outbound, --max-pending, --max-jobs. */
    size_t out_bytes;       /* the connections' output queues */
    size_t pending_bytes;   /* partly received messages and control frames */
    struct apply_jobs jobs; /* close jobs running (apply.c) */

    /* Connections corked while order jobs run one after the other (conn_batch_begin):
     * what several orders queue for one connection in a loop turn leaves in one writev. */
    uint64_t *batch_seqs; /* owned: CONN_BATCH_MAX of them, made on first use */
    uint32_t batch_n;
    bool batch_on;
};

/* Checks that cfg->listen can be bound (before any process starts). Returns 0 or -1
 * with a message in err. */
int worker_check_listen(const struct config *cfg, char *err, size_t errlen);

/* Event priorities: order jobs first, then everything else. */
#define WORKER_PRIO_JOBS    0
#define WORKER_PRIO_DEFAULT 1
#define WORKER_PRIOS        2

/* A worker that drained on an order exits so: the master does not restart it. */
#define WORKER_EXIT_DRAINED 3

/*
 * Stops taking clients and closes every connection with 1001 and reason (default
 * --drain-reason), at moments spread across spread_ms; exits when none is left or at
 * the deadline. ordered is true for a drain order (with or without id): the master is
 * told at once (shm drain_ordered and SIGUSR1) and the whole gateway ends, as on
 * SIGTERM. id and reply_to come from the order (NULL for a signal); the
 * acknowledgement goes to reply_to when the closes are sent.
 */
void worker_drain(struct worker *w, bool ordered, const char *reason, uint32_t spread_ms,
                  const char *id, const char *reply_to);

/* Runs one worker process until it is told to stop. Returns the exit status. */
int worker_main(const struct config *cfg, struct shm *shm, int admin_fd, int num);

/* Opens the admin listener (--admin) in the master, shared by the workers. Returns
 * the socket, -1 when disabled, or -2 with a message in err. */
int worker_admin_listen(const struct config *cfg, char *err, size_t errlen);

/* Milliseconds since the worker started, refreshed from the loop's cached time. */
uint32_t worker_now(struct worker *w);

/* Appends c to list l (removing it from its current list). */
void worker_tlist_move(struct worker *w, struct conn *c, enum tlist l);
void worker_tlist_remove(struct worker *w, struct conn *c);

/*
 * The per-address limits (--max-conns-per-ip, --max-handshakes-per-ip) for a client at
 * sa, counted across the gateway's workers (common/iplimit.h). Returns 0 (with the
 * ticket to give back when the connection ends, 0 when none), or -1 for a refusal:
 * 429 with Retry-After retry_after_s and why; counted and logged here.
 */
int worker_admit_address(struct worker *w, const struct sockaddr *sa, uint32_t *ticket,
                         uint32_t *retry_after_s, const char **why);

/* Makes the reaper run after this loop turn. */
void worker_schedule_reap(struct worker *w);

/* Called when a connection is gone, so a stopping worker can exit when none is left. */
void worker_conn_gone(struct worker *w);

#endif /* WSGATE_WORKER_WORKER_H */
