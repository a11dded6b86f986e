#include "worker/auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/origin.h"
#include "common/ws_hs.h"
#include "worker/apply.h"
#include "worker/conn.h"
#include "worker/registry.h"
#include "worker/worker.h"

#define USER_PREFIX "user:"

/* A connection's expiry: a min-heap entry by wall-clock time. */
struct expiry {
    int64_t at_ms;
    uint64_t seq;
};

struct auth {
    struct token_verifier *verifier; /* owned */
    struct expiry *heap;             /* owned */
    size_t n;
    size_t cap;
    size_t live; /* open connections with an entry in the heap */
};

static int64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int auth_init(struct worker *w)
{
    struct token_config tc;
    char err[256];

    if (!config_jwt_enabled(w->cfg))
        return 0;
    w->auth = calloc(1, sizeof(*w->auth));
    if (w->auth == NULL) {
        log_msg(LOG_ERROR, NULL, "out of memory for the JWT verifier");
        return -1;
    }
    config_token_config(w->cfg, &tc);
    w->auth->verifier = token_verifier_new(&tc, err, sizeof(err));
    if (w->auth->verifier == NULL) {
        log_msg(LOG_ERROR, NULL, "JWT: %s", err);
        free(w->auth);
        w->auth = NULL;
        return -1;
    }
    return 0;
}

void auth_cleanup(struct worker *w)
{
    if (w->auth == NULL)
        return;
    token_verifier_free(w->auth->verifier);
    free(w->auth->heap);
    free(w->auth);
    w->auth = NULL;
}

/* Heap ----------------------------------------------------------------------------- */

static void heap_swap(struct expiry *h, size_t a, size_t b)
{
    struct expiry t = h[a];

    h[a] = h[b];
    h[b] = t;
}

static void heap_up(struct expiry *h, size_t i)
{
    while (i > 0 && h[(i - 1) / 2].at_ms > h[i].at_ms) {
        heap_swap(h, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(struct expiry *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && h[l].at_ms < h[m].at_ms)
            m = l;
        if (r < n && h[r].at_ms < h[m].at_ms)
            m = r;
        if (m == i)
            return;
        heap_swap(h, i, m);
        i = m;
    }
}

/* Drops the entries of connections that are gone and rebuilds the heap: O(n), done
 * when dead entries outnumber live ones, so O(1) amortised per connection. */
static void heap_compact(struct worker *w)
{
    struct auth *a = w->auth;
    size_t k = 0;

    for (size_t i = 0; i < a->n; i++)
        if (registry_find_seq(&w->reg, a->heap[i].seq) != NULL)
            a->heap[k++] = a->heap[i];
    a->n = k;
    for (size_t i = k / 2; i-- > 0;)
        heap_down(a->heap, a->n, i);
}

static int heap_push(struct worker *w, int64_t at_ms, uint64_t seq)
{
    struct auth *a = w->auth;

    if (a->n > 2 * a->live + 64)
        heap_compact(w);
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 256;
        struct expiry *h = realloc(a->heap, cap * sizeof(*h));
        if (h == NULL)
            return -1;
        a->heap = h;
        a->cap = cap;
    }
    a->heap[a->n].at_ms = at_ms;
    a->heap[a->n].seq = seq;
    heap_up(a->heap, a->n++);
    return 0;
}

/* Admission ------------------------------------------------------------------------ */

/* user:<sub> and the token's groups, as registry_add() takes them. */
static int claims_names(const struct token_claims *cl, char ***out, size_t *n)
{
    size_t len = strlen(cl->sub);
    char **names = calloc(cl->ngroups + 1, sizeof(*names));

    if (names == NULL)
        return -1;
    names[0] = malloc(sizeof(USER_PREFIX) + len);
    if (names[0] == NULL)
        goto err;
    memcpy(names[0], USER_PREFIX, sizeof(USER_PREFIX) - 1);
    memcpy(names[0] + sizeof(USER_PREFIX) - 1, cl->sub, len + 1);
    *n = 1;
    for (size_t i = 0; i < cl->ngroups; i++) {
        names[i + 1] = strdup(cl->groups[i]);
        if (names[i + 1] == NULL)
            goto err;
        *n = i + 2;
    }
    *out = names;
    return 0;
err:
    registry_free_names(names, *n);
    *n = 0;
    return -1;
}

/* c->sec with "sub\0jti\0" (jti empty when the token has none): what events and
 * envelopes carry. Keeps the address ticket taken at accept. */
static int ident_set(struct conn *c, const struct token_claims *cl)
{
    size_t ls = strlen(cl->sub), lj = cl->jti != NULL ? strlen(cl->jti) : 0;
    struct conn_sec *sec = realloc(c->sec, sizeof(*sec) + ls + lj + 2);

    if (sec == NULL)
        return -1;
    if (c->sec == NULL) { /* new: nothing else of it is in use */
        sec->proxy = NULL;
        sec->ip_ticket = 0;
    }
    c->sec = sec;
    memcpy(sec->ident, cl->sub, ls + 1);
    if (lj > 0)
        memcpy(sec->ident + ls + 1, cl->jti, lj);
    sec->ident[ls + 1 + lj] = '\0';
    return 0;
}

static int check_token(struct conn *c, char ***names, size_t *n, const char **why)
{
    struct worker *w = c->w;
    struct auth *a = w->auth;
    struct token_claims cl;
    struct token_error err;
    const char *tok;
    size_t len;
    char id[CONN_ID_MAX];
    int64_t now = wall_ms();
    enum token_source src = token_extract(c->hs, w->cfg->jwt_cookie, &tok, &len);

    if (token_verify(a->verifier, tok, len, now, &cl, &err) < 0) {
        for (int k = 0; k < TOKEN_NERROR_KEYS; k++)
            if (token_error_keys[k] == err.key)
                w->slot->auth.refused[k]++;
        log_limited(LOG_INFO, conn_id(c, id, sizeof(id)), "token refused reason=%s from=%s: %s",
                    err.key, token_source_name(src), err.why);
        *why = "invalid token";
        return 401;
    }
    if (claims_names(&cl, names, n) < 0 || ident_set(c, &cl) < 0 ||
        (cl.exp_ms > 0 && heap_push(w, cl.exp_ms + (int64_t)w->cfg->jwt_leeway_ms, c->seq) < 0)) {
        registry_free_names(*names, *n);
        *names = NULL;
        *n = 0;
        token_claims_cleanup(&cl);
        *why = "out of memory";
        return 503;
    }
    if (cl.exp_ms > 0) {
        a->live++;
        c->flags |= CONN_F_EXPIRES;
    }
    w->slot->auth.accepted++;
    log_msg(LOG_DEBUG, conn_id(c, id, sizeof(id)), "token ok user=%s alg=%s from=%s", cl.sub,
            cl.alg, token_source_name(src));
    token_claims_cleanup(&cl);
    return 0;
}

int auth_upgrade(struct conn *c, char ***names, size_t *n, const char **why)
{
    struct worker *w = c->w;

    *names = NULL;
    *n = 0;
    if (w->cfg->allow_origin.n > 0 &&
        !origin_allowed(&w->cfg->allow_origin, ws_hs_header(c->hs, "Origin"))) {
        char id[CONN_ID_MAX];
        const char *o = ws_hs_header(c->hs, "Origin");
        w->slot->auth.origin_refused++;
        log_limited(LOG_INFO, conn_id(c, id, sizeof(id)), "origin refused origin=\"%.100s\"",
                    o != NULL ? o : "");
        *why = "origin not allowed";
        return 403;
    }
    if (w->auth != NULL)
        return check_token(c, names, n, why);
    return registry_groups_from_request(w, c->hs, names, n, why);
}

void auth_closed(struct conn *c)
{
    struct auth *a = c->w->auth;

    if (a != NULL && (c->flags & CONN_F_EXPIRES) && a->live > 0)
        a->live--;
}

const char *auth_user(const struct conn *c)
{
    return c->sec != NULL && c->sec->ident[0] != '\0' ? c->sec->ident : NULL;
}

const char *auth_jti(const struct conn *c)
{
    const char *j;

    if (c->sec == NULL)
        return NULL;
    j = c->sec->ident + strlen(c->sec->ident) + 1;
    return *j != '\0' ? j : NULL;
}

void auth_tick(struct worker *w)
{
    struct auth *a = w->auth;
    int64_t now;
    size_t closed = 0;

    if (a == NULL || a->n == 0)
        return;
    now = wall_ms();
    /* At most a batch a tick: a wave of tokens expiring together is spread over
     * ticks instead of stalling the worker. */
    while (a->n > 0 && a->heap[0].at_ms <= now && closed < APPLY_BATCH) {
        struct conn *c = registry_find_seq(&w->reg, a->heap[0].seq);
        a->heap[0] = a->heap[--a->n];
        heap_down(a->heap, a->n, 0);
        if (c == NULL || c->state != CONN_OPEN)
            continue;
        conn_close(c, w->cfg->jwt_expiry_code, TOKEN_EXPIRED_REASON, "expired");
        closed++;
    }
}
