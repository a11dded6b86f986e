#ifndef WSGATE_WORKER_REGISTRY_H
#define WSGATE_WORKER_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct conn;
struct worker;
struct ws_hs;

/*
 * The worker's indexes of its open connections: by connection id (a hash on the
 * id's counter) and by group (a hash of group names, each with the list of its
 * members). Both are kept current on open and close, so an order costs what it
 * matches, never what the worker holds. One registry per worker, created at start.
 */

struct group;

/*
 * A connection's membership of one group: a node in the group's member list. A
 * connection's nodes sit in one array (conn->groups, conn->gcap allocated): connections
 * that never join at runtime cost what they cost before (one allocation of exactly
 * their groups). A join that outgrows the array moves the nodes to a larger one
 * (doubling, capped at --max-groups) and relinks their neighbours; a leave moves the
 * last node into the hole. So nodes move, but only inside registry_join() and
 * registry_leave() and only the nodes of the connection named: nothing may hold a
 * struct member pointer across those calls (jobs hold connection counters, not nodes).
 */
struct member {
    struct conn *conn;   /* borrowed */
    struct group *group; /* borrowed from the registry */
    struct member *prev;
    struct member *next;
};

struct group {
    struct group *hnext; /* hash chain */
    struct member *head;
    size_t count;
    uint64_t hash;
    uint64_t mark; /* the registry's epoch of the last join or leave that looked at it */
    char name[];   /* NUL-terminated */
};

/* Called with a group's name when it gets its first member and when its last one
 * leaves (then the group is freed right after): group channel subscriptions (subs.h). */
typedef void registry_group_fn(void *arg, const char *name);

struct registry {
    struct conn **ids; /* owned buckets, chained through conn->hnext */
    size_t ids_cap;    /* power of two */
    size_t ids_count;
    struct group **groups; /* owned buckets */
    size_t groups_cap;
    size_t groups_count;
    uint64_t seed;               /* per-process hash seed: group names come from clients */
    uint64_t epoch;              /* marks groups in a join or leave (group.mark) */
    registry_group_fn *on_first; /* NULL or called as said above */
    registry_group_fn *on_last;
    void *hook_arg;
};

int registry_init(struct registry *r);

/* Indexes c by id and joins the groups named in names[0..n). Returns 0 or -1 (out
 * of memory: nothing was indexed). */
int registry_add(struct registry *r, struct conn *c, char **names, size_t n);

/* Removes c from both indexes; safe for a connection that was never added. */
void registry_remove(struct registry *r, struct conn *c);

/* registry_join() when the join would take c past max groups. */
#define REGISTRY_FULL (-2)

/*
 * Joins c to the groups named in names[0..n) (distinct names, checked by the caller
 * like a client's) that it is not in yet: all of them or none. Returns how many it
 * joined (0: it was in all of them), REGISTRY_FULL when that would give c more than
 * max groups, or -1 when memory ran out; in both failures nothing changed. Cost: c's
 * groups plus n lookups; with growth, c's groups again (amortised by doubling).
 */
int registry_join(struct registry *r, struct conn *c, char *const *names, size_t n, size_t max);

/* Takes c out of the groups named in names[0..n) it is in. Returns how many it left.
 * Cost: c's groups plus n lookups. */
size_t registry_leave(struct registry *r, struct conn *c, char *const *names, size_t n);

/* The open connection whose id is id, or NULL (ids of other workers are NULL). */
struct conn *registry_find(struct registry *r, const struct worker *w, const char *id);

/* The open connection with counter seq, or NULL. */
struct conn *registry_find_seq(struct registry *r, uint64_t seq);

/* The group named name, or NULL. */
struct group *registry_group(struct registry *r, const char *name);

/*
 * The groups a client asks for, from the request (?group=, ?user=, the trusted
 * headers, per cfg). On success returns 0 and a malloc'd array of malloc'd names
 * (deduplicated) in *names; on a bad request returns 400 with *why set.
 */
int registry_groups_from_request(const struct worker *w, const struct ws_hs *hs, char ***names,
                                 size_t *n, const char **why);

void registry_free_names(char **names, size_t n);

#endif /* WSGATE_WORKER_REGISTRY_H */
