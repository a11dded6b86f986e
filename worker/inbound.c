#include "worker/inbound.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "common/base64.h"
#include "common/log.h"
#include "common/ws_dec.h"
#include "worker/auth.h"
#include "worker/conn.h"
#include "worker/redis.h"
#include "worker/registry.h"
#include "worker/worker.h"

#define USER_GROUP "user:"

const char *const inbound_drop_keys[] = {"mode", "full", "lost", "refused", "memory", NULL};

/* One envelope, from the client's message until Redis answers it. */
struct imsg {
    struct wredis_cb cb; /* first: the reply callback's pointer is the message's */
    struct inbound *ib;  /* borrowed */
    struct imsg *next;   /* in the queue while waiting */
    size_t payload;      /* the client's bytes, for the byte counter */
    size_t len;
    char data[]; /* the envelope, JSON */
};

struct inbound {
    struct worker *w;  /* borrowed */
    struct imsg *head; /* owned: waiting for the publisher, in the order received */
    struct imsg *tail;
    struct imsg *retried; /* the last lost stream entry put back at the head, or NULL */
    size_t held;          /* envelope bytes waiting or in flight: --inbound-max-pending */
    uint64_t seq;         /* envelopes made by this worker */
};

static void imsg_done(struct wredis_cb *cb, enum wredis_status st);

int inbound_start(struct worker *w)
{
    struct inbound *ib;

    if (w->cfg->inbound != CONFIG_INBOUND_PUBLISH && w->cfg->inbound != CONFIG_INBOUND_STREAM)
        return 0;
    ib = calloc(1, sizeof(*ib));
    if (ib == NULL)
        return -1;
    ib->w = w;
    w->inbound = ib;
    return 0;
}

/* The connection's user: the token's sub with JWT, else its user:<id> group's id. */
static const char *conn_user(const struct conn *c)
{
    const char *u = auth_user(c);

    if (u != NULL)
        return u;
    for (size_t i = 0; i < c->ngroups; i++) {
        const char *g = c->groups[i].group->name;
        if (strncmp(g, USER_GROUP, sizeof(USER_GROUP) - 1) == 0)
            return g + sizeof(USER_GROUP) - 1;
    }
    return NULL;
}

/* The message's envelope as one JSON object. Returns it (free()), or NULL when memory
 * runs out. */
static char *envelope(struct conn *c, uint64_t seq, unsigned op, const uint8_t *p, size_t len)
{
    struct worker *w = c->w;
    char id[CONN_ID_MAX], *text = NULL, *b64 = NULL;
    json_t *env = json_object(), *groups = json_array(), *body;
    struct timespec ts;
    const char *user = conn_user(c), *jti = auth_jti(c);

    if (env == NULL || groups == NULL)
        goto out;
    for (size_t i = 0; i < c->ngroups; i++)
        if (json_array_append_new(groups, json_string(c->groups[i].group->name)) < 0)
            goto out;
    if (op == WS_OP_TEXT) {
        body = json_stringn((const char *)p, len); /* the decoder checked the UTF-8 */
    } else {
        b64 = malloc(BASE64_ENCODED_LEN(len) + 1);
        if (b64 == NULL)
            goto out;
        body = json_stringn(b64, base64_encode(p, len, b64));
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    if (json_object_set_new(env, "conn", json_string(conn_id(c, id, sizeof(id)))) < 0 ||
        json_object_set_new(env, "gateway", json_string(w->cfg->id)) < 0 ||
        json_object_set_new(env, "worker", json_integer(w->num)) < 0 ||
        (user != NULL && json_object_set_new(env, "user", json_string(user)) < 0) ||
        (jti != NULL && json_object_set_new(env, "jti", json_string(jti)) < 0) ||
        json_object_set(env, "groups", groups) < 0 ||
        json_object_set_new(env, "seq", json_integer((json_int_t)seq)) < 0 ||
        json_object_set_new(
            env, "ts", json_integer((json_int_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000)) < 0 ||
        json_object_set_new(env, op == WS_OP_TEXT ? "text" : "binary", body) < 0)
        goto out;
    text = json_dumps(env, JSON_COMPACT);
out:
    free(b64);
    json_decref(groups);
    json_decref(env);
    return text;
}

static void drop(struct worker *w, enum inbound_drop why)
{
    w->slot->inbound.dropped[why]++;
}

/* Over half the budget, or no publisher: reading waits. */
static bool is_blocked(const struct inbound *ib)
{
    return !wredis_pub_is_up(ib->w) || ib->held > ib->w->cfg->inbound_max_pending / 2;
}

bool inbound_blocked(const struct worker *w)
{
    return w->inbound != NULL && is_blocked(w->inbound);
}

/* Down to a quarter with the publisher up and nothing waiting: every paused client is
 * read again. Only paused connections are visited, and only on this transition. */
static void maybe_resume(struct inbound *ib)
{
    struct worker *w = ib->w;
    struct conn *c;

    if (w->tl[TL_PAUSED].head == NULL || ib->head != NULL || !wredis_pub_is_up(w) ||
        ib->held > w->cfg->inbound_max_pending / 4)
        return;
    while ((c = w->tl[TL_PAUSED].head) != NULL)
        conn_resume_inbound(c);
}

static int imsg_send(struct inbound *ib, struct imsg *m)
{
    const struct config *cfg = ib->w->cfg;

    if (cfg->inbound == CONFIG_INBOUND_STREAM)
        return wredis_xadd(ib->w, cfg->inbound_stream, cfg->inbound_maxlen, "msg", m->data, m->len,
                           &m->cb);
    return wredis_publish_tracked(ib->w, cfg->inbound_channel, m->data, m->len, &m->cb);
}

static void imsg_free(struct inbound *ib, struct imsg *m)
{
    ib->held -= m->len;
    free(m);
}

static void imsg_done(struct wredis_cb *cb, enum wredis_status st)
{
    struct imsg *m = (struct imsg *)cb;
    struct inbound *ib = m->ib;
    struct worker *w = ib->w;

    switch (st) {
    case WREDIS_OK:
        if (w->cfg->inbound == CONFIG_INBOUND_STREAM)
            w->slot->inbound.streamed++;
        else
            w->slot->inbound.published++;
        w->slot->inbound.bytes += m->payload;
        break;
    case WREDIS_REFUSED:
        drop(w, INBOUND_DROP_REFUSED);
        break;
    case WREDIS_LOST:
        if (w->cfg->inbound == CONFIG_INBOUND_STREAM) {
            /* Back at the head, behind the ones lost before it: sent again first,
             * in order, when the link is back (at least once). */
            w->slot->inbound.retried++;
            if (ib->retried == NULL) {
                m->next = ib->head;
                ib->head = m;
            } else {
                m->next = ib->retried->next;
                ib->retried->next = m;
            }
            if (m->next == NULL)
                ib->tail = m;
            ib->retried = m;
            return;
        }
        drop(w, INBOUND_DROP_LOST);
        break;
    }
    imsg_free(ib, m);
    maybe_resume(ib);
}

/* Sends what waits, in order, while the publisher takes it. */
static void flush(struct inbound *ib)
{
    ib->retried = NULL;
    while (ib->head != NULL && wredis_pub_is_up(ib->w)) {
        struct imsg *m = ib->head;
        if (imsg_send(ib, m) < 0)
            break;
        ib->head = m->next;
        if (ib->head == NULL)
            ib->tail = NULL;
    }
}

void inbound_on_up(struct worker *w)
{
    if (w->inbound == NULL)
        return;
    flush(w->inbound);
    maybe_resume(w->inbound);
}

void inbound_message(struct conn *c, unsigned op, const uint8_t *p, size_t len)
{
    struct worker *w = c->w;
    struct inbound *ib = w->inbound;
    char *env, id[CONN_ID_MAX];
    size_t elen;
    struct imsg *m;

    env = envelope(c, ib->seq + 1, op, p, len);
    if (env == NULL) {
        drop(w, INBOUND_DROP_MEMORY);
        log_limited(LOG_WARN, conn_id(c, id, sizeof(id)), "inbound: out of memory");
        return;
    }
    elen = strlen(env);
    if (elen > w->cfg->inbound_max_pending - ib->held) {
        free(env);
        drop(w, INBOUND_DROP_FULL);
        log_limited(LOG_WARN, conn_id(c, id, sizeof(id)),
                    "inbound: dropped a message, --inbound-max-pending full held=%zu len=%zu",
                    ib->held, elen);
        if (is_blocked(ib))
            conn_pause_inbound(c);
        return;
    }
    m = malloc(sizeof(*m) + elen);
    if (m == NULL) {
        free(env);
        drop(w, INBOUND_DROP_MEMORY);
        log_limited(LOG_WARN, conn_id(c, id, sizeof(id)), "inbound: out of memory");
        return;
    }
    ib->seq++;
    m->cb.done = imsg_done;
    m->ib = ib;
    m->next = NULL;
    m->payload = len;
    m->len = elen;
    memcpy(m->data, env, elen);
    free(env);
    ib->held += elen;
    if (ib->head != NULL || imsg_send(ib, m) < 0) {
        if (ib->tail != NULL)
            ib->tail->next = m;
        else
            ib->head = m;
        ib->tail = m;
    }
    if (is_blocked(ib))
        conn_pause_inbound(c);
}

void inbound_tick(struct worker *w)
{
    struct inbound *ib = w->inbound;

    w->slot->inbound.paused = w->tl[TL_PAUSED].n;
    if (ib == NULL)
        return;
    w->slot->inbound.held = ib->held;
    if (ib->head != NULL && wredis_pub_is_up(w))
        flush(ib); /* what hiredis refused once */
    maybe_resume(ib);
}
