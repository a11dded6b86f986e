#include "worker/apply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/random.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/order.h"
#include "common/order_sig.h"
#include "common/seen.h"
#include "common/ws_dec.h"
#include "common/ws_enc.h"
#include "worker/conn.h"
#include "worker/deflate.h"
#include "worker/outq.h"
#include "worker/redis.h"
#include "worker/tombs.h"
#include "worker/worker.h"

const char *const apply_refuse_keys[] = {
    "too_big",     "json",     "type",         "op",        "target",  "too_many", "code",
    "reason",      "spread",   "max_affected", "id",        "gateway", "reply_to", "oom",
    "unsigned",    "envelope", "kid",          "signature", "ts",      "stale",    "replay",
    "replay_full", "payload",  "groups",       "ttl",       "jobs",    "other",    NULL,
};

/* One order being carried out: the matched connections by counter (a connection
 * may be gone by the time its turn comes), in order of their due moments. */
struct job {
    struct worker *w;
    struct job *prev; /* in w->jobs: every job, for the sweep */
    struct job *next_job;
    struct job *fifo_next; /* in w->jobs' FIFO */
    struct event *ev;      /* the head's next batch, or a spread job's next due moment */
    struct order o;        /* owned: targets, id, reply_to, code and reason, payload */
    char by[ORDER_STRING_MAX + 8];
    bool in_fifo; /* waiting for its turn, or the FIFO's head running it */
    bool started; /* matched: seqs hold its connections */
    size_t matched;
    size_t n;   /* entries in seqs and due */
    size_t cap; /* entries allocated */
    size_t next;
    size_t done;              /* connections closed (close), or frames sent (send) */
    size_t dropped;           /* send: recipients closed as slow consumers */
    uint64_t mark;            /* connections closed (close events) when it was last compacted */
    uint64_t *seqs;           /* owned */
    uint32_t *due;            /* owned: ms offsets from start, ascending; NULL when not spread */
    uint32_t start;           /* worker_now() when it started */
    uint64_t t0_us;           /* when the order arrived (mono_us), for the delivery histogram */
    struct outq_frame *frame; /* send: the message as it goes on the wire, one reference */
    struct outq_frame *zframe[8]; /* send: its compressed twins by window bits - 8, one
                                     reference each, made for the first recipient of
                                     that window (permessage-deflate, deflate.h) */
    uint8_t zplain;               /* windows (bit wbits - 8) that get the plain frame instead */
    struct job **owner;           /* cleared when the job ends */
};

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    if (rng_state == 0 &&
        (getrandom(&rng_state, sizeof(rng_state), 0) != sizeof(rng_state) || rng_state == 0))
        rng_state = 0x9e3779b97f4a7c15ull;
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void count_refusal(struct worker *w, const char *key)
{
    size_t i;

    for (i = 0; apply_refuse_keys[i] != NULL; i++)
        if (strcmp(apply_refuse_keys[i], key) == 0)
            break;
    if (apply_refuse_keys[i] == NULL)
        i = APPLY_REFUSE_KEYS - 2; /* "other" */
    w->slot->orders.refused++;
    w->slot->orders.refused_by[i]++;
}

static void publish_owned(struct worker *w, const char *channel, char *msg)
{
    if (msg == NULL) {
        log_limited(LOG_WARN, NULL, "out of memory for an acknowledgement");
        return;
    }
    wredis_publish(w, channel, msg, strlen(msg));
    free(msg);
}

/* A refused order still gets its error back when it named a reply channel, and it
 * is not ours to answer when it names another gateway. */
static void refuse(struct worker *w, const char *text, size_t len, const struct order_error *err)
{
    struct order_peek p;

    order_peek(text, len, &p);
    if (p.gateway != NULL && strcmp(p.gateway, w->cfg->id) != 0) {
        w->slot->orders.ignored++;
        order_peek_cleanup(&p);
        return;
    }
    count_refusal(w, err->key);
    log_limited(LOG_WARN, NULL, "order refused id=%s key=%s: %s", p.id != NULL ? p.id : "-",
                err->key, err->text);
    if (p.reply_to != NULL)
        publish_owned(w, p.reply_to, order_nack_json(p.id, w->cfg->id, w->num, err->text));
    order_peek_cleanup(&p);
}

/* A checked order refused after all (out of memory, max_affected, too many jobs):
 * counted under key (NULL: counted by the caller), logged, answered on reply_to. */
static void refuse_order(struct worker *w, const struct order *o, const char *key, const char *why)
{
    if (key != NULL)
        count_refusal(w, key);
    log_limited(LOG_WARN, NULL, "order refused id=%s: %s", o->id != NULL ? o->id : "-", why);
    if (o->reply_to != NULL)
        publish_owned(w, o->reply_to, order_nack_json(o->id, w->cfg->id, w->num, why));
}

/* Opened connections that have left the open state so far: each has one close event.
 * Only its changes matter (the slot outlives the worker). */
static uint64_t conns_closed(const struct worker *w)
{
    uint64_t n = 0;

    for (int b = 0; b < CLOSE_BY_COUNT; b++)
        n += w->slot->st.closes_by[b];
    return n;
}

static void job_link(struct job *j)
{
    struct apply_jobs *js = &j->w->jobs;

    j->prev = NULL;
    j->next_job = js->head;
    if (js->head != NULL)
        js->head->prev = j;
    js->head = j;
    js->n++;
    j->w->slot->orders.jobs = js->n;
}

static void job_unlink(struct job *j)
{
    struct apply_jobs *js = &j->w->jobs;

    if (js->cursor == j)
        js->cursor = j->next_job;
    if (j->prev != NULL)
        j->prev->next_job = j->next_job;
    else
        js->head = j->next_job;
    if (j->next_job != NULL)
        j->next_job->prev = j->prev;
    js->n--;
    j->w->slot->orders.jobs = js->n;
}

static void fifo_push(struct job *j)
{
    struct apply_jobs *js = &j->w->jobs;

    j->fifo_next = NULL;
    j->in_fifo = true;
    if (js->fifo_tail != NULL)
        js->fifo_tail->fifo_next = j;
    else
        js->fifo = j;
    js->fifo_tail = j;
}

/* Takes j out of the FIFO; only its head ever leaves before its turn ends, so the walk
 * is for safety, not for speed. The next head's first batch is due at once. */
static void fifo_remove(struct job *j)
{
    struct apply_jobs *js = &j->w->jobs;
    struct job **link = &js->fifo, *prev = NULL;
    struct timeval now = {0, 0};

    while (*link != NULL && *link != j) {
        prev = *link;
        link = &(*link)->fifo_next;
    }
    if (*link == NULL)
        return;
    *link = j->fifo_next;
    if (js->fifo_tail == j)
        js->fifo_tail = prev;
    j->in_fifo = false;
    j->fifo_next = NULL;
    if (js->fifo != NULL && prev == NULL)
        evtimer_add(js->fifo->ev, &now);
}

static void job_free(struct job *j)
{
    if (j->in_fifo)
        fifo_remove(j);
    job_unlink(j);
    if (j->owner != NULL) {
        *j->owner = NULL;
        worker_conn_gone(j->w); /* a drain may be waiting for its job */
    }
    if (j->ev != NULL)
        event_free(j->ev);
    for (size_t i = 0; i < sizeof(j->zframe) / sizeof(j->zframe[0]); i++)
        outq_frame_unref(j->zframe[i]);
    outq_frame_unref(j->frame); /* after its twins: they hold references to it */
    order_cleanup(&j->o);
    free(j->seqs);
    free(j->due);
    free(j);
}

/* The last copy of a pushed message has left the output queues (outq_frame done). */
static void push_delivered(struct outq_frame *f)
{
    static const uint64_t bounds[] = SHM_PUSH_BOUNDS_US;
    struct push_stats *ps = &((struct worker *)f->arg)->slot->push;
    uint64_t us = mono_us() - f->stamp;
    size_t b = 0;

    while (b < sizeof(bounds) / sizeof(bounds[0]) && us > bounds[b])
        b++;
    ps->latency[b]++;
    ps->latency_sum_us += us;
}

static void job_done(struct job *j)
{
    struct worker *w = j->w;
    const char *id = j->o.id != NULL ? j->o.id : "-";
    char *ack;

    if (j->o.op == ORDER_OP_SEND) {
        w->slot->push.messages += j->done;
        w->slot->push.bytes += (uint64_t)j->done * j->o.payload_len;
        w->slot->push.dropped += j->dropped;
        if (j->frame != NULL && j->done == 0)
            j->frame->done = NULL; /* nobody got it: no delivery to time */
        log_msg(LOG_INFO, NULL, "order done id=%s op=send matched=%zu sent=%zu dropped=%zu ms=%u",
                id, j->matched, j->done, j->dropped, worker_now(w) - j->start);
        if (j->o.reply_to != NULL) {
            ack = order_result_json(&j->o, w->cfg->id, w->num, j->matched, j->done, j->dropped);
            publish_owned(w, j->o.reply_to, ack);
        }
    } else {
        w->slot->orders.closed += j->done;
        log_msg(LOG_INFO, NULL, "order done id=%s matched=%zu closed=%zu ms=%u", id, j->matched,
                j->done, worker_now(w) - j->start);
        if (j->o.reply_to != NULL) {
            ack = order_ack_json(j->o.id, w->cfg->id, w->num, j->matched, j->done, false);
            publish_owned(w, j->o.reply_to, ack);
        }
    }
    job_free(j); /* the frame's last reference may go here: then it was all written */
}

/*
 * The frame for c: the plain one, or for a client that negotiated permessage-deflate
 * the compressed twin for its window, made once per job and window (the first such
 * recipient pays for the compression, the others share it).
 */
static struct outq_frame *job_frame(struct job *j, struct conn *c)
{
    unsigned wbits = ws_dec_deflate(&c->dec);

    if (wbits == 0 || (j->zplain & (1u << (wbits - 8))))
        return j->frame;
    if (j->zframe[wbits - 8] == NULL) {
        j->zframe[wbits - 8] =
            deflate_frame(j->w, wbits, j->frame, j->frame->len - j->o.payload_len,
                          j->o.binary ? WS_OP_BINARY : WS_OP_TEXT);
        if (j->zframe[wbits - 8] == NULL) { /* small, incompressible, or no memory */
            j->zplain |= (uint8_t)(1u << (wbits - 8));
            return j->frame;
        }
    }
    return j->zframe[wbits - 8];
}

/*
 * Applies j to its due connections from j->next on, at most limit of them (a gone
 * connection counts too), and returns how many it took: each open one is closed, or
 * gets the frame. A spread job stops at the first connection not due yet.
 */
static size_t job_batch(struct job *j, size_t limit)
{
    struct worker *w = j->w;
    uint32_t elapsed = worker_now(w) - j->start;
    size_t batch = 0;
    struct outq_frame *f;

    while (j->next < j->n && batch < limit) {
        struct conn *c = registry_find_seq(&w->reg, j->seqs[j->next]);
        if (c != NULL && j->due != NULL && j->due[j->next] > elapsed)
            break; /* not due yet; a gone connection is skipped at once */
        j->next++;
        batch++;
        if (c == NULL || c->state != CONN_OPEN)
            continue;
        if (j->o.op == ORDER_OP_CLOSE) {
            if (conn_close(c, j->o.code, j->o.reason, j->by) == 0)
                j->done++;
            continue;
        }
        f = job_frame(j, c);
        switch (conn_send_shared(c, f)) {
        case CONN_PUSH_SENT:
            j->done++;
            if (f != j->frame)
                w->slot->deflate.sent++;
            break;
        case CONN_PUSH_SLOW:
            j->dropped++;
            break;
        default:
            break;
        }
    }
    return batch;
}

/* A spread job, out of the FIFO: closes what is due, then sleeps until the next due
 * moment (at most APPLY_BATCH a loop turn). */
static void job_run_spread(struct job *j)
{
    struct timeval tv = {0, 0};
    uint32_t elapsed;

    job_batch(j, APPLY_BATCH);
    if (j->next == j->n) {
        job_done(j);
        return;
    }
    elapsed = worker_now(j->w) - j->start;
    if (j->due != NULL && j->due[j->next] > elapsed) {
        uint32_t wait = j->due[j->next] - elapsed;
        tv.tv_sec = wait / 1000;
        tv.tv_usec = (wait % 1000) * 1000;
    }
    evtimer_add(j->ev, &tv);
}

struct matches {
    struct conn **v;
    size_t n;
    size_t cap;
};

static int match_add(struct matches *m, struct conn *c)
{
    if (c->state != CONN_OPEN || (c->flags & (CONN_F_SPARED | CONN_F_MATCHED)))
        return 0;
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        struct conn **v = realloc(m->v, cap * sizeof(*v));
        if (v == NULL)
            return -1;
        m->v = v;
        m->cap = cap;
    }
    c->flags |= CONN_F_MATCHED;
    m->v[m->n++] = c;
    return 0;
}

/* Cost: the named ids and the members of the named groups; only "all" visits every
 * open connection. */
static int match(struct worker *w, const struct order *o, struct matches *m)
{
    int r = 0;

    for (size_t i = 0; i < o->nexcept; i++) {
        struct conn *c = registry_find(&w->reg, w, o->except[i]);
        if (c != NULL)
            c->flags |= CONN_F_SPARED;
    }
    switch (o->target) {
    case ORDER_TARGET_CONN:
        for (size_t i = 0; i < o->nnames && r == 0; i++) {
            struct conn *c = registry_find(&w->reg, w, o->names[i]);
            if (c != NULL)
                r = match_add(m, c);
        }
        break;
    case ORDER_TARGET_GROUP:
        for (size_t i = 0; i < o->nnames && r == 0; i++) {
            struct group *g = registry_group(&w->reg, o->names[i]);
            for (struct member *mb = g != NULL ? g->head : NULL; mb != NULL && r == 0;
                 mb = mb->next)
                r = match_add(m, mb->conn);
        }
        break;
    case ORDER_TARGET_ALL:
        for (int l = TL_ACTIVE; l <= TL_PAUSED && r == 0; l++)
            for (struct conn *c = w->tl[l].head; c != NULL && r == 0; c = c->tnext)
                r = match_add(m, c);
        break;
    default:
        break;
    }
    for (size_t i = 0; i < m->n; i++)
        m->v[i]->flags &= (uint16_t)~CONN_F_MATCHED;
    for (size_t i = 0; i < o->nexcept; i++) {
        struct conn *c = registry_find(&w->reg, w, o->except[i]);
        if (c != NULL)
            c->flags &= (uint16_t)~CONN_F_SPARED;
    }
    return r;
}

/* The message of a send order as it goes on the wire, header and payload, once for
 * every recipient; its last reference times the delivery. NULL when memory runs out. */
static struct outq_frame *send_frame(struct job *j)
{
    uint8_t hdr[WS_FRAME_HDR_MAX];
    size_t hlen =
        ws_enc_header(hdr, j->o.binary ? WS_OP_BINARY : WS_OP_TEXT, true, j->o.payload_len);
    struct outq_frame *f = outq_frame_new(hlen + j->o.payload_len);

    if (f == NULL)
        return NULL;
    memcpy(f->data, hdr, hlen);
    if (j->o.payload_len > 0)
        memcpy(f->data + hlen, j->o.payload, j->o.payload_len);
    f->done = push_delivered;
    f->arg = j->w;
    f->stamp = j->t0_us;
    return f;
}

/*
 * The job's turn: matches its order against the connections open now. Returns 0 when
 * it has connections to work on, or -1 when it is over (answered: nothing matched, a
 * dry run, max_affected exceeded, out of memory) and freed.
 */
static int job_start(struct job *j)
{
    struct worker *w = j->w;
    struct order *o = &j->o;
    struct matches m = {NULL, 0, 0};
    const char *id = o->id != NULL ? o->id : "-";
    bool send = o->op == ORDER_OP_SEND;
    char why[128];

    j->started = true;
    j->start = worker_now(w);
    if (match(w, o, &m) < 0) {
        refuse_order(w, o, "oom", "out of memory while matching");
        goto out_end;
    }
    w->slot->orders.matched += m.n;
    if (o->max_affected >= 0 && (long long)m.n > o->max_affected) {
        snprintf(why, sizeof(why), "max_affected exceeded: %zu matched, limit %lld", m.n,
                 o->max_affected);
        w->slot->orders.rejected_max_affected++;
        refuse_order(w, o, NULL, why);
        goto out_end;
    }
    if (o->ttl_ms > 0 && !o->dry_run)
        tombs_add(w, o); /* before the matches close: their reconnects meet it */
    w->slot->orders.applied++;
    if (!send && o->reason_cut) {
        w->slot->orders.reasons_cut++;
        log_msg(LOG_NOTICE, NULL, "order id=%s: reason cut to %zu bytes", id, o->reason_len);
    }
    if (send)
        log_msg(LOG_INFO, NULL, "order id=%s op=send matched=%zu bytes=%zu%s%s", id, m.n,
                o->payload_len, o->binary ? " binary" : "", o->dry_run ? " dry_run" : "");
    else
        log_msg(m.n > 0 ? LOG_NOTICE : LOG_INFO, NULL,
                "order id=%s op=close matched=%zu code=%u spread_ms=%u%s", id, m.n, o->code,
                o->spread_ms, o->dry_run ? " dry_run" : "");
    j->matched = m.n;
    if (o->dry_run || m.n == 0) {
        char *ack = send ? order_result_json(o, w->cfg->id, w->num, m.n, 0, 0)
                         : order_ack_json(o->id, w->cfg->id, w->num, m.n, 0, o->dry_run);
        if (o->reply_to != NULL)
            publish_owned(w, o->reply_to, ack);
        else
            free(ack);
        goto out_end;
    }
    j->n = j->cap = m.n;
    j->mark = conns_closed(w);
    j->seqs = malloc(m.n * sizeof(*j->seqs));
    if (j->seqs == NULL || (send && (j->frame = send_frame(j)) == NULL))
        goto out_oom;
    for (size_t i = 0; i < m.n; i++)
        j->seqs[i] = m.v[i]->seq;
    if (send) { /* the frame holds the message now; payload_len stays for the counters */
        free(o->payload);
        o->payload = NULL;
    }
    if (!send && o->spread_ms > 0) {
        /* One random moment in each of n equal slices of the window: spread evenly,
         * with jitter, so the reconnects are as flat as the window allows. Who gets
         * which slice is shuffled, since matches arrive in index order. */
        j->due = malloc(m.n * sizeof(*j->due));
        if (j->due == NULL)
            goto out_oom;
        for (size_t i = 0; i < m.n; i++)
            j->due[i] = (uint32_t)(((uint64_t)i * o->spread_ms + rng_next() % o->spread_ms) / m.n);
        for (size_t i = m.n - 1; i > 0; i--) {
            size_t k = (size_t)(rng_next() % (i + 1));
            uint64_t t = j->seqs[i];
            j->seqs[i] = j->seqs[k];
            j->seqs[k] = t;
        }
    }
    free(m.v);
    return 0;
out_oom:
    refuse_order(w, o, "oom", "out of memory");
out_end:
    free(m.v);
    job_free(j);
    return -1;
}

/*
 * Runs the FIFO for one loop turn: the head starts (matches) when it has not, and takes
 * a batch of at most APPLY_BATCH connections; jobs that end within the budget let the
 * next one go on in the same turn. A spread close leaves the FIFO once started. While
 * jobs remain, the head's timer brings the next turn.
 */
_Static_assert(APPLY_BATCH <= CONN_BATCH_MAX, "a batch of jobs corks every connection it sends to");

static void fifo_run(struct worker *w)
{
    size_t budget = APPLY_BATCH;
    struct job *j;
    struct timeval now = {0, 0};
    /* One job matches each connection once; several may match one several times. */
    bool batch = w->jobs.fifo != NULL && w->jobs.fifo->fifo_next != NULL;

    if (batch)
        conn_batch_begin(w);
    while ((j = w->jobs.fifo) != NULL && budget > 0) {
        if (!j->started) {
            budget--;
            if (job_start(j) < 0)
                continue;
            if (j->due != NULL) {
                fifo_remove(j);
                job_run_spread(j);
                continue;
            }
        }
        budget -= job_batch(j, budget);
        if (j->next < j->n)
            break;
        job_done(j);
    }
    if (batch)
        conn_batch_end(w);
    if (w->jobs.fifo != NULL)
        evtimer_add(w->jobs.fifo->ev, &now);
}

/* The head's next batch, or a spread job's next due moment. Job timers run at a
 * higher priority than connection I/O: close frames and messages go out before
 * replies to earlier ones are read. */
static void job_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct job *j = arg;

    (void)fd;
    (void)what;
    if (j->in_fifo)
        fifo_run(j->w);
    else
        job_run_spread(j);
}

static char *dup_or_null(const char *s, bool *failed)
{
    char *d = s != NULL ? strdup(s) : NULL;

    if (s != NULL && d == NULL)
        *failed = true;
    return d;
}

static char **dup_names(char *const *names, size_t n, bool *failed)
{
    char **d;

    if (names == NULL || n == 0)
        return NULL;
    d = calloc(n, sizeof(*d));
    if (d == NULL) {
        *failed = true;
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        d[i] = dup_or_null(names[i], failed);
    return d;
}

/* A copy of src in dst for a job (what matching, closing, sending and answering need).
 * Returns 0, or -1 when memory runs out (dst is then ready for order_cleanup()). */
static int order_copy(struct order *dst, const struct order *src)
{
    bool failed = false;

    *dst = *src;
    dst->id = dup_or_null(src->id, &failed);
    dst->gateway = NULL;
    dst->reply_to = dup_or_null(src->reply_to, &failed);
    dst->names = dup_names(src->names, src->nnames, &failed);
    dst->nnames = dst->names != NULL ? src->nnames : 0;
    dst->except = dup_names(src->except, src->nexcept, &failed);
    dst->nexcept = dst->except != NULL ? src->nexcept : 0;
    dst->payload = NULL;
    dst->payload_len = 0;
    if (src->payload_len > 0 && (dst->payload = malloc(src->payload_len)) == NULL)
        failed = true;
    if (dst->payload != NULL) {
        memcpy(dst->payload, src->payload, src->payload_len);
        dst->payload_len = src->payload_len;
    }
    dst->groups = NULL;
    dst->ngroups = 0;
    return failed ? -1 : 0;
}

/*
 * Queues o (a close or send order) as a job in the FIFO, taking it over (steal: o is
 * left empty) or copying it, and runs the FIFO at once when the job is its head: an
 * order that finds nothing ahead of it and fits in one batch is done before this
 * returns. t0 is when the order arrived (mono_us).
 */
static void apply_order(struct worker *w, struct order *o, bool steal, const char *by,
                        struct job **owner, uint64_t t0)
{
    struct job *j = calloc(1, sizeof(*j));

    if (j == NULL)
        goto err_oom;
    j->w = w;
    job_link(j);
    if (steal) {
        j->o = *o;
        order_init(o);
    } else if (order_copy(&j->o, o) < 0) {
        goto err_free_job;
    }
    if (by != NULL)
        snprintf(j->by, sizeof(j->by), "%s", by);
    else
        snprintf(j->by, sizeof(j->by), j->o.id != NULL ? "order:%s" : "order", j->o.id);
    j->t0_us = t0;
    j->ev = evtimer_new(w->base, job_on_timer, j);
    if (j->ev == NULL)
        goto err_free_job;
    event_priority_set(j->ev, WORKER_PRIO_JOBS);
    if (owner != NULL) {
        j->owner = owner;
        *owner = j;
    }
    fifo_push(j);
    if (w->jobs.fifo == j) {
        /* Not at once: the orders that came with this one (one read of the subscriber)
         * are queued behind it first, and one fifo_run() applies them together. */
        struct timeval now = {0, 0};
        evtimer_add(j->ev, &now);
    }
    return;
err_free_job:
    if (steal)
        *o = j->o; /* the caller keeps what it had */
    else
        order_cleanup(&j->o);
    order_init(&j->o);
    job_free(j);
err_oom:
    refuse_order(w, o, "oom", "out of memory");
}

void apply_close_order(struct worker *w, const struct order *o, const char *by, struct job **owner)
{
    apply_order(w, (struct order *)(uintptr_t)o, false, by, owner, mono_us());
}

/* Drops the entries of connections no longer open, and shrinks the arrays when that
 * freed half of them; a job left with none is done. */
static void job_compact(struct job *j, uint64_t closed)
{
    struct worker *w = j->w;
    size_t k = 0;

    j->mark = closed;
    for (size_t i = j->next; i < j->n; i++) {
        struct conn *c = registry_find_seq(&w->reg, j->seqs[i]);
        if (c == NULL || c->state != CONN_OPEN)
            continue;
        j->seqs[k] = j->seqs[i];
        if (j->due != NULL)
            j->due[k] = j->due[i];
        k++;
    }
    j->n = k;
    j->next = 0;
    if (k == 0) {
        job_done(j);
        return;
    }
    if (k <= j->cap / 2) { /* a shrink that fails keeps the larger array */
        uint64_t *seqs = realloc(j->seqs, k * sizeof(*seqs));
        uint32_t *due = j->due != NULL ? realloc(j->due, k * sizeof(*due)) : NULL;
        if (seqs != NULL)
            j->seqs = seqs;
        if (due != NULL)
            j->due = due;
        j->cap = k;
    }
}

void apply_tick(struct worker *w)
{
    struct apply_jobs *js = &w->jobs;
    uint64_t closed = conns_closed(w);
    size_t budget = APPLY_SWEEP;

    w->slot->orders.jobs = js->n;
    if (js->cursor == NULL) {
        if (js->head == NULL || closed == js->swept)
            return;
        js->swept = closed;
        js->cursor = js->head;
    }
    while (js->cursor != NULL && budget > 0) {
        struct job *j = js->cursor;
        size_t live = j->n - j->next;

        js->cursor = j->next_job;
        /* Only when enough connections closed since its last look that half of its
         * own may be gone: each entry is checked a bounded number of times. A job
         * waiting for its turn holds no connections yet. */
        if (!j->started || (closed - j->mark) * 2 < live)
            continue;
        budget -= live < budget ? live : budget;
        job_compact(j, closed);
    }
}

void apply_job_hurry(struct job *j)
{
    struct timeval now = {0, 0};

    j->o.spread_ms = 0; /* still waiting: it will not spread */
    free(j->due);
    j->due = NULL;
    if (j->started && !j->in_fifo)
        evtimer_add(j->ev, &now);
}

/* Join and leave orders ---------------------------------------------------------- */

/* A join or leave of more than APPLY_BATCH connections: carried out APPLY_BATCH a loop
 * turn, at the priority of close jobs, and counted with them against --max-jobs (it
 * holds its matches until it ends). Connections closed meanwhile are skipped. */
struct member_job {
    struct worker *w;
    struct event *ev;
    enum order_op op;
    char **groups; /* owned: distinct names, each owned */
    size_t ngroups;
    char *id;       /* owned, NULL when the order had none */
    char *reply_to; /* owned or NULL */
    size_t matched;
    size_t count;   /* joined or left */
    size_t refused; /* joins refused: at --max-groups */
    size_t n;       /* entries in seqs */
    size_t next;
    uint64_t *seqs; /* owned */
    uint32_t start;
};

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The distinct names of groups[0..n) in *out (borrowed strings, sorted), or -1 when
 * memory runs out. Returns how many. */
static long distinct_groups(char *const *groups, size_t n, char ***out)
{
    char **v = malloc(n * sizeof(*v));
    size_t k = 0;

    if (v == NULL)
        return -1;
    memcpy(v, groups, n * sizeof(*v));
    qsort(v, n, sizeof(*v), name_cmp);
    for (size_t i = 0; i < n; i++)
        if (k == 0 || strcmp(v[k - 1], v[i]) != 0)
            v[k++] = v[i];
    *out = v;
    return (long)k;
}

/* Joins c to groups or takes it out of them, counting it in *count or *refused. */
static void member_apply(struct worker *w, struct conn *c, enum order_op op, char *const *groups,
                         size_t n, size_t *count, size_t *refused)
{
    int r;

    if (op == ORDER_OP_LEAVE) {
        *count += registry_leave(&w->reg, c, groups, n) > 0;
        return;
    }
    r = registry_join(&w->reg, c, groups, n, (size_t)w->cfg->max_groups);
    if (r > 0) {
        (*count)++;
    } else if (r < 0) {
        (*refused)++;
        if (r != REGISTRY_FULL)
            log_limited(LOG_WARN, NULL, "out of memory joining a connection to its groups");
    }
}

static void member_done(struct worker *w, const struct order *o, size_t matched, size_t count,
                        size_t refused, uint32_t start)
{
    bool join = o->op == ORDER_OP_JOIN;

    w->slot->members.orders++;
    if (join)
        w->slot->members.joined += count;
    else
        w->slot->members.left += count;
    w->slot->members.refused += refused;
    log_msg(count > 0 ? LOG_NOTICE : LOG_INFO, NULL,
            "order done id=%s op=%s matched=%zu %s=%zu refused=%zu ms=%u%s", o->id ? o->id : "-",
            join ? "join" : "leave", matched, join ? "joined" : "left", count, refused,
            worker_now(w) - start, o->dry_run ? " dry_run" : "");
    if (o->reply_to != NULL)
        publish_owned(w, o->reply_to,
                      order_result_json(o, w->cfg->id, w->num, matched, count, refused));
}

static void member_job_free(struct member_job *j)
{
    struct worker *w = j->w;

    w->jobs.n--;
    w->slot->orders.jobs = w->jobs.n;
    if (j->ev != NULL)
        event_free(j->ev);
    for (size_t i = 0; i < j->ngroups; i++)
        free(j->groups[i]);
    free(j->groups);
    free(j->id);
    free(j->reply_to);
    free(j->seqs);
    free(j);
}

static void member_job_run(evutil_socket_t fd, short what, void *arg)
{
    struct member_job *j = arg;
    struct worker *w = j->w;
    struct timeval now = {0, 0};

    (void)fd;
    (void)what;
    for (size_t batch = 0; j->next < j->n && batch < APPLY_BATCH; batch++) {
        struct conn *c = registry_find_seq(&w->reg, j->seqs[j->next++]);
        if (c != NULL && c->state == CONN_OPEN)
            member_apply(w, c, j->op, j->groups, j->ngroups, &j->count, &j->refused);
    }
    if (j->next < j->n) {
        evtimer_add(j->ev, &now);
        return;
    }
    {
        struct order o;
        order_init(&o);
        o.op = j->op;
        o.id = j->id;
        o.reply_to = j->reply_to;
        member_done(w, &o, j->matched, j->count, j->refused, j->start);
    }
    member_job_free(j);
}

/* Takes m->v's connections (by counter) and copies of groups into a job. Returns 0, or
 * -1 when memory runs out (nothing applied). */
static int member_job_start(struct worker *w, const struct order *o, const struct matches *m,
                            char *const *groups, size_t n)
{
    struct member_job *j = calloc(1, sizeof(*j));
    struct timeval now = {0, 0};

    if (j == NULL)
        return -1;
    j->w = w;
    w->jobs.n++; /* counted from here: member_job_free() gives it back */
    w->slot->orders.jobs = w->jobs.n;
    j->op = o->op;
    j->matched = j->n = m->n;
    j->start = worker_now(w);
    {
        bool failed = false; /* checked below, with the others */
        j->id = dup_or_null(o->id, &failed);
        j->reply_to = dup_or_null(o->reply_to, &failed);
    }
    j->seqs = malloc(m->n * sizeof(*j->seqs));
    j->groups = calloc(n, sizeof(*j->groups));
    j->ev = evtimer_new(w->base, member_job_run, j);
    if ((o->id != NULL && j->id == NULL) || (o->reply_to != NULL && j->reply_to == NULL) ||
        j->seqs == NULL || j->groups == NULL || j->ev == NULL)
        goto err_free;
    for (; j->ngroups < n; j->ngroups++)
        if ((j->groups[j->ngroups] = strdup(groups[j->ngroups])) == NULL)
            goto err_free;
    for (size_t i = 0; i < m->n; i++)
        j->seqs[i] = m->v[i]->seq;
    event_priority_set(j->ev, WORKER_PRIO_JOBS);
    evtimer_add(j->ev, &now);
    return 0;
err_free:
    member_job_free(j);
    return -1;
}

/* An order answered with an error, matching nothing. */
static void member_refuse(struct worker *w, const struct order *o, const char *key,
                          const char *text)
{
    if (key != NULL)
        count_refusal(w, key);
    log_limited(LOG_WARN, NULL, "order refused id=%s: %s", o->id ? o->id : "-", text);
    if (o->reply_to != NULL)
        publish_owned(w, o->reply_to, order_nack_json(o->id, w->cfg->id, w->num, text));
}

/*
 * A join or leave order: matched like a close order (targets, except, max_affected),
 * then each match joins or leaves the order's groups: at once for up to APPLY_BATCH
 * matches, in a job beyond. A join is all or nothing per connection: one that would
 * pass --max-groups joins none of them and is counted as refused.
 */
static void apply_member_order(struct worker *w, const struct order *o)
{
    struct matches m = {NULL, 0, 0};
    char **groups = NULL;
    long n = distinct_groups(o->groups, o->ngroups, &groups);
    size_t count = 0, refused = 0;
    char text[128];

    if (n < 0 || match(w, o, &m) < 0) {
        member_refuse(w, o, "oom", "out of memory while matching");
        goto out;
    }
    w->slot->orders.matched += m.n;
    if (o->max_affected >= 0 && (long long)m.n > o->max_affected) {
        snprintf(text, sizeof(text), "max_affected exceeded: %zu matched, limit %lld", m.n,
                 o->max_affected);
        w->slot->orders.rejected_max_affected++;
        member_refuse(w, o, NULL, text);
        goto out;
    }
    if (!o->dry_run && m.n > APPLY_BATCH) {
        if (w->jobs.n >= w->cfg->max_jobs) {
            snprintf(text, sizeof(text), "too many jobs: %zu running, limit %u (--max-jobs)",
                     w->jobs.n, w->cfg->max_jobs);
            member_refuse(w, o, "jobs", text);
        } else if (member_job_start(w, o, &m, groups, (size_t)n) < 0) {
            member_refuse(w, o, "oom", "out of memory for the job");
        } else {
            w->slot->orders.applied++;
        }
        goto out;
    }
    w->slot->orders.applied++;
    for (size_t i = 0; i < m.n && !o->dry_run; i++)
        member_apply(w, m.v[i], o->op, groups, (size_t)n, &count, &refused);
    member_done(w, o, m.n, count, refused, worker_now(w));
out:
    free(groups);
    free(m.v);
}

/* A signed order on a group channel names its group in the signed text: else one
 * published for room:1 could be published again on room:2's channel, to workers that
 * never saw its id. Returns 0, or -1 with err filled. */
static int check_channel_group(const struct order *o, const char *group, struct order_error *err)
{
    if (group == NULL || o->group_named)
        return 0;
    err->key = "target";
    snprintf(err->text, sizeof(err->text),
             "a signed order on a group channel must name its group (group: \"%.64s\")", group);
    return -1;
}

/* A signed order whose envelope did not verify: nothing in it is trusted, reply_to and
 * gateway included, so it is counted and logged, and never answered. */
static void refuse_unverified(struct worker *w, const struct order_error *err)
{
    count_refusal(w, err->key);
    log_limited(LOG_WARN, NULL, "order refused unverified key=%s: %s", err->key, err->text);
}

/*
 * What a verified signed order must also be: fresh, with ts and id, and the first with
 * its id. The id is spent here, whatever comes of the order after, and remembered
 * until its ts is too old to pass again (ts + max age), so an envelope published twice
 * is refused the second time. The memory is this worker's: a restarted worker starts
 * empty. Returns 0, or -1 with err filled.
 */
static int check_signed(struct worker *w, const struct order *o, struct order_error *err)
{
    long long now = unix_ms();
    uint32_t max_age = w->cfg->order_max_age_ms;
    enum seen_result r = SEEN_NOMEM;

    if (order_check_signed(o, now, max_age, err) < 0)
        return -1;
    if (w->seen == NULL)
        w->seen = seen_new(w->cfg->order_replay_max);
    if (w->seen != NULL)
        r = seen_check_and_add(w->seen, o->id, strlen(o->id), now, o->ts + max_age + 1);
    err->key = r == SEEN_REPLAY ? "replay" : r == SEEN_FULL ? "replay_full" : "oom";
    if (r == SEEN_REPLAY)
        snprintf(err->text, sizeof(err->text), "replay: this order id was used already");
    else if (r == SEEN_FULL)
        snprintf(err->text, sizeof(err->text),
                 "replay_full: %u order ids remembered, none old enough to forget",
                 w->cfg->order_replay_max);
    else
        snprintf(err->text, sizeof(err->text), "out of memory for the order id");
    return r == SEEN_NEW ? 0 : -1;
}

/* What this worker's orders may be: send payloads up to --max-send; on a group
 * channel, orders for that group. */
static struct order_limits limits(const struct worker *w, const char *group)
{
    struct order_limits lim = {(size_t)w->cfg->max_send, group};

    return lim;
}

/*
 * With --orders-stream, each order id is applied once, whichever way it came (stream,
 * channel, or both) and however often: ids are remembered for --orders-max-age, at
 * most --orders-dedup-max of them. Returns true when o is a duplicate (counted, not
 * answered: the first copy was). When the memory is full or out of memory the order
 * is applied unchecked, counted: a close applied twice finds nothing the second time,
 * a close not applied leaves a revoked client connected.
 */
static bool is_duplicate(struct worker *w, const struct order *o)
{
    long long now = unix_ms();
    enum seen_result r = SEEN_NOMEM;

    if (w->cfg->orders_stream[0] == '\0' || o->id == NULL)
        return false;
    if (w->order_ids == NULL)
        w->order_ids = seen_new(w->cfg->orders_dedup_max);
    if (w->order_ids != NULL)
        r = seen_check_and_add(w->order_ids, o->id, strlen(o->id), now,
                               now + (long long)w->cfg->orders_max_age_ms);
    if (r == SEEN_REPLAY) {
        w->slot->ostream.duplicates++;
        log_msg(LOG_DEBUG, NULL, "order id=%s: a duplicate, not applied again", o->id);
        return true;
    }
    if (r != SEEN_NEW) {
        w->slot->ostream.dedup_full++;
        log_limited(LOG_WARN, NULL, "order id=%s applied without the duplicate check: %s", o->id,
                    r == SEEN_FULL ? "--orders-dedup-max ids held" : "out of memory");
    }
    return false;
}

static void apply_text(struct worker *w, const char *text, size_t len, bool verified,
                       const char *group, uint64_t t0, bool from_stream)
{
    struct order_limits lim = limits(w, group);
    struct order o;
    struct order_error err;

    if (order_parse_with(text, len, &lim, &o, &err) < 0) {
        refuse(w, text, len, &err);
        return;
    }
    if (o.gateway != NULL && strcmp(o.gateway, w->cfg->id) != 0) {
        w->slot->orders.ignored++;
        order_cleanup(&o);
        return;
    }
    if (from_stream && o.id == NULL) {
        /* Without an id, a copy on a channel could not be told from it. */
        err.key = "id";
        snprintf(err.text, sizeof(err.text), "id: an order on --orders-stream must carry an id");
        refuse(w, text, len, &err);
        order_cleanup(&o);
        return;
    }
    if (is_duplicate(w, &o)) {
        order_cleanup(&o);
        return;
    }
    if (verified && (check_signed(w, &o, &err) < 0 || check_channel_group(&o, group, &err) < 0)) {
        refuse(w, text, len, &err);
        order_cleanup(&o);
        return;
    }
    if (o.op == ORDER_OP_DRAIN) {
        worker_drain(w, true, o.reason_len > 0 ? o.reason : NULL, o.spread_ms, o.id, o.reply_to);
        order_cleanup(&o);
        return;
    }
    if (o.op == ORDER_OP_JOIN || o.op == ORDER_OP_LEAVE) {
        apply_member_order(w, &o);
        order_cleanup(&o);
        return;
    }
    if (o.op == ORDER_OP_UNBAN) {
        tombs_unban(w, &o);
        order_cleanup(&o);
        return;
    }
    if (o.op != ORDER_OP_CLOSE && o.op != ORDER_OP_SEND) {
        refuse_order(w, &o, "op", "op: not supported by this gateway");
        order_cleanup(&o);
        return;
    }
    if (!o.dry_run && w->jobs.n >= w->cfg->max_jobs) {
        /* Each job holds its order while it waits and its matches until it ends:
         * bounded, refused past it. */
        char why[128];
        snprintf(why, sizeof(why), "too many jobs: %zu running, limit %u (--max-jobs)", w->jobs.n,
                 w->cfg->max_jobs);
        refuse_order(w, &o, "jobs", why);
        order_cleanup(&o);
        return;
    }
    apply_order(w, &o, true, NULL, NULL, t0);
    order_cleanup(&o); /* nothing left when the job took it over */
}

static void apply_channel_text(struct worker *w, const char *group, const char *text, size_t len,
                               bool from_stream)
{
    struct order_limits lim = limits(w, group);
    uint64_t t0 = mono_us(); /* the order's arrival: deliveries are timed from here */
    struct order_error err;
    char *body;
    size_t body_len;

    w->slot->orders.received++;
    worker_now(w);
    if (w->cfg->order_keys.n == 0) {
        apply_text(w, text, len, false, group, t0, from_stream);
        return;
    }
    if (order_sig_open_with(&w->cfg->order_keys, text, len, order_max_text(&lim), &body, &body_len,
                            &err) < 0) {
        refuse_unverified(w, &err);
        return;
    }
    apply_text(w, body, body_len, true, group, t0, from_stream);
    free(body);
}

void apply_order_text(struct worker *w, const char *text, size_t len)
{
    apply_channel_text(w, NULL, text, len, false);
}

void apply_group_order_text(struct worker *w, const char *group, const char *text, size_t len)
{
    apply_channel_text(w, group, text, len, false);
}

void apply_stream_order_text(struct worker *w, const char *text, size_t len)
{
    apply_channel_text(w, NULL, text, len, true);
}
