#ifndef WSGATE_WORKER_HOOKS_H
#define WSGATE_WORKER_HOOKS_H

#include <stdbool.h>

struct conn;

/*
 * What the rest of the worker learns from a connection's life: conn.c calls these
 * at each step, and they keep the indexes and events current.
 */

/* The upgrade request is valid. Returns 0 to accept, or an HTTP status (with *why)
 * to refuse it. */
int hooks_conn_upgrading(struct conn *c, const char **why);

/* The 101 answer is sent. */
void hooks_conn_opened(struct conn *c);

/* A close starts: code and reason we send or received, and who started it. */
void hooks_conn_closing(struct conn *c, unsigned code, const char *reason, const char *by);

/* TCP is closed; c is freed after this returns. */
void hooks_conn_closed(struct conn *c, const char *why);

/* A plain GET that asks for no upgrade. Returns true when it was answered. */
bool hooks_conn_plain_http(struct conn *c);

/* Refuses the handshake of c with an HTTP status; conn.c owns the answer. */
void conn_refuse(struct conn *c, int status, const char *why);

#endif /* WSGATE_WORKER_HOOKS_H */
