#ifndef WSGATE_WORKER_ADMIN_H
#define WSGATE_WORKER_ADMIN_H

#include <stdbool.h>

struct conn;

/*
 * The admin endpoints, on the --admin listener: GET /healthz (200 while the process
 * lives), /readyz (200 only while listening, not draining and subscribed to Redis;
 * 503 and a one-line reason otherwise) and /metrics (Prometheus text format, summed
 * over the gateway's workers from shared memory). Returns false when the path is not
 * one of them (the caller answers 404).
 */
bool admin_answer(struct conn *c);

#endif /* WSGATE_WORKER_ADMIN_H */
