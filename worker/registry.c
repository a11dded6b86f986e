#include "worker/registry.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/utf8.h"
#include "common/ws_hs.h"
#include "worker/conn.h"
#include "worker/worker.h"

#define GROUP_NAME_MAX 128
#define USER_PREFIX    "user:"

/* FNV-1a over a seeded state: group names come from clients, and a per-process
 * seed keeps them from choosing names that collide. */
static uint64_t hash_str(uint64_t seed, const char *s)
{
    uint64_t h = 14695981039346656037ull ^ seed;

    for (; *s != '\0'; s++) {
        h ^= (uint8_t)*s;
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static uint64_t hash_seq(uint64_t seq)
{
    seq ^= seq >> 33;
    seq *= 0xff51afd7ed558ccdull;
    seq ^= seq >> 33;
    return seq;
}

int registry_init(struct registry *r)
{
    memset(r, 0, sizeof(*r));
    if (getrandom(&r->seed, sizeof(r->seed), 0) != sizeof(r->seed))
        r->seed = (uint64_t)(uintptr_t)r;
    r->ids_cap = 1024;
    r->groups_cap = 256;
    r->ids = calloc(r->ids_cap, sizeof(*r->ids));
    r->groups = calloc(r->groups_cap, sizeof(*r->groups));
    if (r->ids == NULL || r->groups == NULL) {
        free(r->ids);
        free(r->groups);
        return -1;
    }
    return 0;
}

/* Doubles the id table when it is fuller than one entry per bucket. A failed
 * resize only makes chains longer. */
static void ids_grow(struct registry *r)
{
    size_t cap = r->ids_cap * 2;
    struct conn **t = calloc(cap, sizeof(*t));

    if (t == NULL)
        return;
    for (size_t i = 0; i < r->ids_cap; i++) {
        struct conn *c = r->ids[i];
        while (c != NULL) {
            struct conn *next = c->hnext;
            size_t b = hash_seq(c->seq) & (cap - 1);
            c->hnext = t[b];
            t[b] = c;
            c = next;
        }
    }
    free(r->ids);
    r->ids = t;
    r->ids_cap = cap;
}

static void groups_grow(struct registry *r)
{
    size_t cap = r->groups_cap * 2;
    struct group **t = calloc(cap, sizeof(*t));

    if (t == NULL)
        return;
    for (size_t i = 0; i < r->groups_cap; i++) {
        struct group *g = r->groups[i];
        while (g != NULL) {
            struct group *next = g->hnext;
            size_t b = g->hash & (cap - 1);
            g->hnext = t[b];
            t[b] = g;
            g = next;
        }
    }
    free(r->groups);
    r->groups = t;
    r->groups_cap = cap;
}

struct group *registry_group(struct registry *r, const char *name)
{
    uint64_t h = hash_str(r->seed, name);

    for (struct group *g = r->groups[h & (r->groups_cap - 1)]; g != NULL; g = g->hnext)
        if (g->hash == h && strcmp(g->name, name) == 0)
            return g;
    return NULL;
}

static struct group *group_get(struct registry *r, const char *name)
{
    struct group *g = registry_group(r, name);
    size_t len;

    if (g != NULL)
        return g;
    len = strlen(name);
    g = malloc(sizeof(*g) + len + 1);
    if (g == NULL)
        return NULL;
    g->head = NULL;
    g->count = 0;
    g->hash = hash_str(r->seed, name);
    g->mark = 0;
    memcpy(g->name, name, len + 1);
    g->hnext = r->groups[g->hash & (r->groups_cap - 1)];
    r->groups[g->hash & (r->groups_cap - 1)] = g;
    if (++r->groups_count > r->groups_cap)
        groups_grow(r);
    if (r->on_first != NULL)
        r->on_first(r->hook_arg, g->name);
    return g;
}

static void member_link(struct member *m, struct conn *c, struct group *g)
{
    m->conn = c;
    m->group = g;
    m->prev = NULL;
    m->next = g->head;
    if (g->head != NULL)
        g->head->prev = m;
    g->head = m;
    g->count++;
}

/* m was copied to where it is now: its neighbours, which are other connections' nodes
 * (a connection is in a group once), and its group's head still point at the old copy. */
static void member_relink(struct member *m)
{
    if (m->prev != NULL)
        m->prev->next = m;
    else
        m->group->head = m;
    if (m->next != NULL)
        m->next->prev = m;
}

/* Moves c's nodes to an array of cap (>= c->ngroups) nodes. Returns 0 or -1 (out of
 * memory: nothing moved). */
static int members_move(struct conn *c, size_t cap)
{
    struct member *v = malloc(cap * sizeof(*v));

    if (v == NULL)
        return -1;
    if (c->ngroups > 0)
        memcpy(v, c->groups, c->ngroups * sizeof(*v));
    for (size_t i = 0; i < c->ngroups; i++)
        member_relink(&v[i]);
    free(c->groups);
    c->groups = v;
    c->gcap = (uint16_t)cap;
    return 0;
}

/* An empty group is freed at once: groups held cost only while they have members. */
static void group_leave(struct registry *r, struct member *m)
{
    struct group *g = m->group;

    if (m->prev != NULL)
        m->prev->next = m->next;
    else
        g->head = m->next;
    if (m->next != NULL)
        m->next->prev = m->prev;
    if (--g->count > 0)
        return;
    if (r->on_last != NULL)
        r->on_last(r->hook_arg, g->name);
    for (struct group **pp = &r->groups[g->hash & (r->groups_cap - 1)]; *pp != NULL;
         pp = &(*pp)->hnext) {
        if (*pp == g) {
            *pp = g->hnext;
            break;
        }
    }
    r->groups_count--;
    free(g);
}

int registry_add(struct registry *r, struct conn *c, char **names, size_t n)
{
    size_t b;

    if (n > 0) {
        c->groups = calloc(n, sizeof(*c->groups));
        if (c->groups == NULL)
            return -1;
        for (size_t i = 0; i < n; i++) {
            struct member *m = &c->groups[i];
            struct group *g = group_get(r, names[i]);
            if (g == NULL) {
                for (size_t j = 0; j < i; j++)
                    group_leave(r, &c->groups[j]);
                free(c->groups);
                c->groups = NULL;
                return -1;
            }
            member_link(m, c, g);
        }
        c->ngroups = (uint16_t)n;
        c->gcap = (uint16_t)n; /* exactly: most connections never join at runtime */
    }
    b = hash_seq(c->seq) & (r->ids_cap - 1);
    c->hnext = r->ids[b];
    r->ids[b] = c;
    c->flags |= CONN_F_INDEXED;
    if (++r->ids_count > r->ids_cap)
        ids_grow(r);
    return 0;
}

void registry_remove(struct registry *r, struct conn *c)
{
    if (!(c->flags & CONN_F_INDEXED))
        return;
    c->flags &= (uint16_t)~CONN_F_INDEXED;
    for (struct conn **pp = &r->ids[hash_seq(c->seq) & (r->ids_cap - 1)]; *pp != NULL;
         pp = &(*pp)->hnext) {
        if (*pp == c) {
            *pp = c->hnext;
            break;
        }
    }
    r->ids_count--;
    for (size_t i = 0; i < c->ngroups; i++)
        group_leave(r, &c->groups[i]);
    free(c->groups);
    c->groups = NULL;
    c->ngroups = 0;
    c->gcap = 0;
}

int registry_join(struct registry *r, struct conn *c, char *const *names, size_t n, size_t max)
{
    uint64_t epoch = ++r->epoch;
    size_t add = 0, old = c->ngroups;

    /* Marked, c's groups answer "already a member?" in one comparison each. */
    for (size_t i = 0; i < old; i++)
        c->groups[i].group->mark = epoch;
    for (size_t i = 0; i < n; i++) {
        struct group *g = registry_group(r, names[i]);
        add += g == NULL || g->mark != epoch;
    }
    if (add == 0)
        return 0;
    if (old + add > max || old + add > UINT16_MAX)
        return REGISTRY_FULL;
    if (old + add > c->gcap) {
        size_t cap = c->gcap < 2 ? 4 : (size_t)c->gcap * 2;
        if (cap < old + add)
            cap = old + add;
        if (cap > max)
            cap = max;
        if (members_move(c, cap) < 0)
            return -1;
    }
    for (size_t i = 0; i < n; i++) {
        struct group *g = registry_group(r, names[i]);
        if (g != NULL && g->mark == epoch)
            continue;
        g = group_get(r, names[i]);
        if (g == NULL) {
            while (c->ngroups > old) /* the last ones are the ones just joined */
                group_leave(r, &c->groups[--c->ngroups]);
            return -1;
        }
        g->mark = epoch;
        member_link(&c->groups[c->ngroups++], c, g);
    }
    return (int)(c->ngroups - old);
}

size_t registry_leave(struct registry *r, struct conn *c, char *const *names, size_t n)
{
    uint64_t epoch = ++r->epoch;
    size_t left = 0;
    bool any = false;

    for (size_t i = 0; i < n; i++) {
        struct group *g = registry_group(r, names[i]);
        if (g != NULL) {
            g->mark = epoch;
            any = true;
        }
    }
    if (!any)
        return 0;
    /* From the end: the node moved into a hole was looked at already. */
    for (size_t i = c->ngroups; i-- > 0;) {
        if (c->groups[i].group->mark != epoch)
            continue;
        group_leave(r, &c->groups[i]); /* may free that group, and only that one */
        left++;
        if (i != --c->ngroups) {
            c->groups[i] = c->groups[c->ngroups];
            member_relink(&c->groups[i]);
        }
    }
    if (c->ngroups == 0) {
        free(c->groups);
        c->groups = NULL;
        c->gcap = 0;
    } else if (c->ngroups <= c->gcap / 4) {
        members_move(c, (size_t)c->ngroups * 2); /* a shrink that fails keeps the array */
    }
    return left;
}

struct conn *registry_find(struct registry *r, const struct worker *w, const char *id)
{
    const char *p;
    uint64_t seq = 0;

    if (strncmp(id, w->id_prefix, w->id_prefix_len) != 0)
        return NULL;
    p = id + w->id_prefix_len;
    if (*p == '\0' || *p == '0' || strlen(p) > 19)
        return NULL;
    for (; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return NULL;
        seq = seq * 10 + (uint64_t)(*p - '0');
    }
    return registry_find_seq(r, seq);
}

struct conn *registry_find_seq(struct registry *r, uint64_t seq)
{
    for (struct conn *c = r->ids[hash_seq(seq) & (r->ids_cap - 1)]; c != NULL; c = c->hnext)
        if (c->seq == seq)
            return c;
    return NULL;
}

void registry_free_names(char **names, size_t n)
{
    if (names == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* Group names end up in logs and JSON events: UTF-8, no control characters. */
static bool name_ok(const char *s, size_t len)
{
    if (len == 0 || len > GROUP_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return utf8_is_valid((const uint8_t *)s, len);
}

struct names {
    char **v;
    size_t n;
    size_t max;
    const char *why;
};

static int names_add(struct names *ns, const char *prefix, const char *s, size_t len)
{
    size_t plen = strlen(prefix);
    char *name;

    if (!name_ok(s, len) || plen + len > GROUP_NAME_MAX) {
        ns->why = "bad group name (1-128 bytes of UTF-8 text)";
        return -1;
    }
    if (plen == 0 && len >= strlen(USER_PREFIX) && memcmp(s, USER_PREFIX, strlen(USER_PREFIX)) == 0) {
        /* user:<id> is the user's own group, joined only from the user's identity:
         * ?group=user:carol must not put a stranger in carol's group. */
        ns->why = "the group prefix user: is reserved for the user id";
        return -1;
    }
    for (size_t i = 0; i < ns->n; i++)
        if (strncmp(ns->v[i], prefix, plen) == 0 && strlen(ns->v[i]) == plen + len &&
            memcmp(ns->v[i] + plen, s, len) == 0)
            return 0; /* the same group twice is one membership */
    if (ns->n >= ns->max) {
        ns->why = "too many groups";
        return -1;
    }
    name = malloc(plen + len + 1);
    if (name == NULL) {
        ns->why = "out of memory";
        return -1;
    }
    memcpy(name, prefix, plen);
    memcpy(name + plen, s, len);
    name[plen + len] = '\0';
    ns->v[ns->n++] = name;
    return 0;
}

static int names_add_list(struct names *ns, const char *list)
{
    const char *p = list;

    while (*p != '\0') {
        const char *start, *end;
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '\0')
            break;
        start = p;
        while (*p != '\0' && *p != ',')
            p++;
        end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (names_add(ns, "", start, (size_t)(end - start)) < 0)
            return -1;
    }
    return 0;
}

int registry_groups_from_request(const struct worker *w, const struct ws_hs *hs, char ***out,
                                 size_t *n, const char **why)
{
    const struct config *cfg = w->cfg;
    struct names ns = {NULL, 0, (size_t)cfg->max_groups, NULL};
    const char *user = NULL, *v;

    *out = NULL;
    *n = 0;
    ns.v = calloc(ns.max + 1, sizeof(*ns.v));
    if (ns.v == NULL) {
        *why = "out of memory";
        return 503;
    }
    if (config_query_groups(cfg)) {
        for (size_t i = 0; (v = ws_hs_param(hs, "group", i)) != NULL; i++)
            if (names_add(&ns, "", v, strlen(v)) < 0)
                goto bad;
        user = ws_hs_param(hs, "user", 0);
        if (user != NULL && ws_hs_param(hs, "user", 1) != NULL) {
            ns.why = "more than one user";
            goto bad;
        }
    }
    if (cfg->groups_header[0] != '\0' && (v = ws_hs_header(hs, cfg->groups_header)) != NULL)
        if (names_add_list(&ns, v) < 0)
            goto bad;
    if (cfg->user_header[0] != '\0' && (v = ws_hs_header(hs, cfg->user_header)) != NULL)
        user = v; /* the trusted proxy's word wins over the query */
    if (user != NULL && names_add(&ns, USER_PREFIX, user, strlen(user)) < 0)
        goto bad;
    *out = ns.v;
    *n = ns.n;
    return 0;
bad:
    registry_free_names(ns.v, ns.n);
    *why = ns.why;
    return strcmp(ns.why, "out of memory") == 0 ? 503 : 400;
}
