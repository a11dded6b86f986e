#ifndef WSGATE_WORKER_AUTH_H
#define WSGATE_WORKER_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "common/token.h"

struct conn;
struct worker;

/*
 * Who may connect, decided at the upgrade: the Origin of browser requests
 * (--allow-origin) and, with JWT on, the token (common/token.c). An accepted token
 * gives the connection its user, its groups and its expiry: at exp plus --jwt-leeway
 * (a token is valid exactly as long as it would be accepted) the connection is closed
 * with --jwt-expiry-code and reason "token expired". Expiries sit in one min-heap per worker keyed
 * by time, so a tick costs what expires; closed connections leave their entries behind until they
 * come up or the heap is compacted (it never holds more than twice the live entries plus a
 * constant).
 */

/* Counters of one worker, in its shm slot. */
struct auth_stats {
    uint64_t accepted;                   /* tokens verified */
    uint64_t refused[TOKEN_NERROR_KEYS]; /* by token_error_keys */
    uint64_t origin_refused;             /* 403: Origin not allowed */
};

/* Creates the worker's verifier and expiry heap when JWT is on. Returns 0, or -1
 * with a log line (a key that loaded in the master failed here). */
int auth_init(struct worker *w);

/* Frees what auth_init() made. */
void auth_cleanup(struct worker *w);

/*
 * Admission of c's upgrade request (c->hs holds it). Checks Origin, then, with JWT
 * on, the token. Returns 0 with the groups to join (a malloc'd array of malloc'd
 * names, for registry_add(), freed with registry_free_names()), or an HTTP status
 * with *why: 403 (Origin), 401 (token), 503 (out of memory). With JWT off, the groups
 * come from the request (registry_groups_from_request()).
 */
int auth_upgrade(struct conn *c, char ***names, size_t *n, const char **why);

/* c is gone (its TCP closed): its expiry entry is now dead weight. */
void auth_closed(struct conn *c);

/* The user ("sub") and token id ("jti") of c, or NULL. */
const char *auth_user(const struct conn *c);
const char *auth_jti(const struct conn *c);

/* Closes the connections whose token expired by now (called by the worker's tick). */
void auth_tick(struct worker *w);

#endif /* WSGATE_WORKER_AUTH_H */
