#include "common/tomb.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/utf8.h"
#include "common/ws_close.h"

#define BUCKETS_MIN  64
#define NAME_MAX_LEN 128 /* ORDER_NAME_MAX */

struct tomb_table {
    struct tomb **buckets; /* owned: chains of owned entries */
    size_t nbuckets;       /* a power of two; grown to keep chains about one long */
    size_t n;
    size_t cap;
    uint64_t seed;
};

/* FNV-1a, 64 bits, started from the seed: names come from orders, lookups from
 * clients' group names, so chains stay short whatever a client asks for. */
static uint64_t hash_name(const struct tomb_table *t, const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull ^ t->seed;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

struct tomb_table *tomb_table_new(size_t cap, uint64_t seed)
{
    struct tomb_table *t;

    if (cap == 0 || cap > TOMB_CAP_MAX)
        return NULL;
    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->buckets = calloc(BUCKETS_MIN, sizeof(*t->buckets));
    if (t->buckets == NULL) {
        free(t);
        return NULL;
    }
    t->nbuckets = BUCKETS_MIN;
    t->cap = cap;
    t->seed = seed;
    return t;
}

static void entry_free(struct tomb *e)
{
    free(e->name);
    free(e->id);
    free(e);
}

void tomb_table_free(struct tomb_table *t)
{
    if (t == NULL)
        return;
    for (size_t b = 0; b < t->nbuckets; b++) {
        struct tomb *e = t->buckets[b];
        while (e != NULL) {
            struct tomb *next = e->next;
            entry_free(e);
            e = next;
        }
    }
    free(t->buckets);
    free(t);
}

/* The link that points at name's entry, or at the NULL that ends its chain. */
static struct tomb **find_link(struct tomb_table *t, const char *name, size_t len)
{
    struct tomb **link = &t->buckets[hash_name(t, name, len) & (t->nbuckets - 1)];

    while (*link != NULL &&
           !(strlen((*link)->name) == len && memcmp((*link)->name, name, len) == 0))
        link = &(*link)->next;
    return link;
}

static void unlink_at(struct tomb_table *t, struct tomb **link)
{
    struct tomb *e = *link;

    *link = e->next;
    entry_free(e);
    t->n--;
}

/* Doubles the buckets when entries outnumber them; a failed grow keeps the old ones. */
static void maybe_grow(struct tomb_table *t)
{
    size_t nb = t->nbuckets * 2;
    struct tomb **b;

    if (t->n < t->nbuckets)
        return;
    b = calloc(nb, sizeof(*b));
    if (b == NULL)
        return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct tomb *e = t->buckets[i];
        while (e != NULL) {
            struct tomb *next = e->next;
            size_t k = hash_name(t, e->name, strlen(e->name)) & (nb - 1);
            e->next = b[k];
            b[k] = e;
            e = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = nb;
}

static void set_reason(struct tomb *e, const char *reason)
{
    size_t len = reason != NULL ? strlen(reason) : 0;

    if (len > TOMB_REASON_MAX)
        len = ws_close_reason_cut(reason, len);
    if (len > 0)
        memcpy(e->reason, reason, len);
    e->reason[len] = '\0';
}

/* Turns e into the tombstone of an order. */
static void set_ban(struct tomb *e, int64_t until_ms, int64_t ts_ms, unsigned code,
                    const char *reason, char *idc)
{
    e->lifted = false;
    e->until_ms = until_ms;
    e->ts_ms = ts_ms;
    e->code = code;
    set_reason(e, reason);
    free(e->id);
    e->id = idc;
}

enum tomb_put_result tomb_put(struct tomb_table *t, const char *name, size_t len, int64_t until_ms,
                              int64_t ts_ms, unsigned code, const char *reason, const char *id,
                              int64_t now_ms)
{
    struct tomb **link = find_link(t, name, len);
    struct tomb *e = *link;
    char *idc = NULL;

    if (e != NULL && now_ms >= e->until_ms) {
        unlink_at(t, link); /* expired: as if it was not there */
        e = NULL;
    }
    if (e != NULL && e->lifted && ts_ms <= e->ts_ms)
        return TOMB_STALE;
    if (id != NULL && (idc = strdup(id)) == NULL)
        return TOMB_NOMEM;
    if (e != NULL && e->lifted) {
        set_ban(e, until_ms, ts_ms, code, reason, idc);
        return TOMB_ADDED;
    }
    if (e != NULL) {
        set_ban(e, until_ms > e->until_ms ? until_ms : e->until_ms,
                ts_ms > e->ts_ms ? ts_ms : e->ts_ms, code, reason, idc);
        return TOMB_UPDATED;
    }
    if (t->n >= t->cap && tomb_expire(t, now_ms) == 0) {
        free(idc);
        return TOMB_FULL;
    }
    e = calloc(1, sizeof(*e));
    if (e == NULL || (e->name = strndup(name, len)) == NULL) {
        free(e);
        free(idc);
        return TOMB_NOMEM;
    }
    set_ban(e, until_ms, ts_ms, code, reason, idc);
    maybe_grow(t); /* may rehash: the link found above is stale from here */
    link = &t->buckets[hash_name(t, name, len) & (t->nbuckets - 1)];
    e->next = *link;
    *link = e;
    t->n++;
    return TOMB_ADDED;
}

const struct tomb *tomb_find(struct tomb_table *t, const char *name, size_t len, int64_t now_ms)
{
    struct tomb **link = find_link(t, name, len);

    if (*link == NULL)
        return NULL;
    if (now_ms >= (*link)->until_ms) {
        unlink_at(t, link);
        return NULL;
    }
    return (*link)->lifted ? NULL : *link;
}

int tomb_lift(struct tomb_table *t, const char *name, size_t len, int64_t ts_ms,
              int64_t keep_until_ms, int64_t now_ms)
{
    struct tomb **link = find_link(t, name, len);
    struct tomb *e = *link;
    int lifted = 0;

    if (e != NULL && now_ms >= e->until_ms) {
        unlink_at(t, link);
        e = NULL;
    }
    if (e != NULL && e->ts_ms > ts_ms)
        return 0; /* banned again after this unban was made */
    if (e == NULL) {
        if (t->n >= t->cap && tomb_expire(t, now_ms) == 0)
            return -1;
        e = calloc(1, sizeof(*e));
        if (e == NULL || (e->name = strndup(name, len)) == NULL) {
            free(e);
            return -1;
        }
        maybe_grow(t);
        link = &t->buckets[hash_name(t, name, len) & (t->nbuckets - 1)];
        e->next = *link;
        *link = e;
        t->n++;
    } else {
        lifted = !e->lifted;
    }
    e->lifted = true;
    e->ts_ms = ts_ms;
    e->until_ms = keep_until_ms;
    e->reason[0] = '\0';
    free(e->id);
    e->id = NULL;
    return lifted;
}

bool tomb_del(struct tomb_table *t, const char *name, size_t len)
{
    struct tomb **link = find_link(t, name, len);

    if (*link == NULL)
        return false;
    unlink_at(t, link);
    return true;
}

size_t tomb_expire(struct tomb_table *t, int64_t now_ms)
{
    size_t dropped = 0;

    for (size_t b = 0; b < t->nbuckets; b++) {
        struct tomb **link = &t->buckets[b];
        while (*link != NULL) {
            if (now_ms >= (*link)->until_ms) {
                unlink_at(t, link);
                dropped++;
            } else {
                link = &(*link)->next;
            }
        }
    }
    return dropped;
}

size_t tomb_count(const struct tomb_table *t)
{
    return t->n;
}

const struct tomb *tomb_next(const struct tomb_table *t, size_t *cursor, const struct tomb *prev)
{
    if (prev != NULL && prev->next != NULL)
        return prev->next;
    while (*cursor < t->nbuckets) {
        const struct tomb *e = t->buckets[(*cursor)++];
        if (e != NULL)
            return e;
    }
    return NULL;
}

char *tomb_to_json(const struct tomb *tb)
{
    json_t *o = json_object();
    char *text = NULL;

    if (o == NULL)
        return NULL;
    if (json_object_set_new(o, "until", json_integer((json_int_t)tb->until_ms)) == 0 &&
        json_object_set_new(o, "code", json_integer((json_int_t)tb->code)) == 0 &&
        json_object_set_new(o, "reason", json_string(tb->reason)) == 0 &&
        json_object_set_new(o, "id", tb->id != NULL ? json_string(tb->id) : json_null()) == 0 &&
        json_object_set_new(o, "ts", json_integer((json_int_t)tb->ts_ms)) == 0)
        text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return text;
}

int tomb_parse(const char *field, size_t flen, const char *value, size_t vlen, struct tomb *tb,
               const char **why)
{
    size_t plen = strlen(TOMB_FIELD_PREFIX), nlen;
    json_t *root, *until, *code, *reason, *id, *ts;
    int rc = -1;

    memset(tb, 0, sizeof(*tb));
    if (flen <= plen || memcmp(field, TOMB_FIELD_PREFIX, plen) != 0) {
        *why = "field: expected group:NAME";
        return -1;
    }
    nlen = flen - plen;
    if (nlen > NAME_MAX_LEN || memchr(field + plen, '\0', nlen) != NULL) {
        *why = "field: the group name must be 1 to 128 bytes without NUL";
        return -1;
    }
    root = json_loadb(value, vlen, 0, NULL);
    until = json_object_get(root, "until");
    code = json_object_get(root, "code");
    reason = json_object_get(root, "reason");
    id = json_object_get(root, "id");
    ts = json_object_get(root, "ts");
    if (!json_is_object(root) || !json_is_integer(until) || !json_is_integer(code) ||
        (ts != NULL && !json_is_integer(ts)) || (reason != NULL && !json_is_string(reason)) ||
        (id != NULL && !json_is_string(id) && !json_is_null(id))) {
        *why = "value: expected {\"until\": ms, \"code\": N, \"reason\": text, \"id\": text}";
        goto out;
    }
    if (json_integer_value(code) < 0 || json_integer_value(code) > 4999 ||
        !ws_close_code_is_sendable((unsigned)json_integer_value(code))) {
        *why = "value: code is not a close code that may be sent";
        goto out;
    }
    if (reason != NULL &&
        !utf8_is_valid((const uint8_t *)json_string_value(reason), json_string_length(reason))) {
        *why = "value: reason is not UTF-8";
        goto out;
    }
    tb->name = strndup(field + plen, nlen);
    tb->id = json_is_string(id) ? strdup(json_string_value(id)) : NULL;
    if (tb->name == NULL || (json_is_string(id) && tb->id == NULL)) {
        tomb_cleanup(tb);
        *why = "out of memory";
        goto out;
    }
    tb->until_ms = (int64_t)json_integer_value(until);
    tb->ts_ms = ts != NULL ? (int64_t)json_integer_value(ts) : tb->until_ms;
    tb->code = (unsigned)json_integer_value(code);
    set_reason(tb, reason != NULL ? json_string_value(reason) : "");
    rc = 0;
out:
    json_decref(root);
    return rc;
}

void tomb_cleanup(struct tomb *tb)
{
    free(tb->name);
    free(tb->id);
    memset(tb, 0, sizeof(*tb));
}
