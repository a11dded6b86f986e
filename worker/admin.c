#include "worker/admin.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/ws_hs.h"
#include "worker/auth.h"
#include "worker/conn.h"
#include "worker/worker.h"

/* /healthz fails when a worker stalls this much longer than the master's kill limit. */
#define HEALTH_GRACE_MS 5000

/* A growing text buffer; on allocation failure it stops growing and says so. */
struct text {
    char *p;
    size_t len;
    size_t cap;
    bool failed;
};

static void text_printf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void text_printf(struct text *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (t->failed)
        return;
    for (;;) {
        size_t room = t->cap - t->len;
        va_start(ap, fmt);
        n = vsnprintf(t->p != NULL ? t->p + t->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = true;
            return;
        }
        if ((size_t)n < room) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap ? t->cap * 2 : 8192;
        while (cap - t->len <= (size_t)n)
            cap *= 2;
        char *np = realloc(t->p, cap);
        if (np == NULL) {
            t->failed = true;
            return;
        }
        t->p = np;
        t->cap = cap;
    }
}

/* How long worker i's loop has not ticked, in ms; 0 when it is not running. */
static long long stalled_ms(const struct shm *s, int i, long long now)
{
    long long idle = now - s->w[i].last_tick_ms;

    return s->w[i].pid != 0 && idle > 0 ? idle : 0;
}

static void metric_head(struct text *t, const char *name, const char *type, const char *help)
{
    text_printf(t, "# HELP wsgate_%s %s\n# TYPE wsgate_%s %s\n", name, help, name, type);
}

/* Sums one uint64_t field at byte offset off of every worker's slot. */
static uint64_t sum_at(const struct shm *s, size_t off)
{
    uint64_t v = 0;

    for (int i = 0; i < s->nworkers; i++)
        v += *(const uint64_t *)(const void *)((const char *)&s->w[i] + off);
    return v;
}

#define SUM(field) sum_at(s, offsetof(struct shm_worker, field))

/*
 * One sample per key of a per-worker counter array at byte offset off (keys[k] names
 * element k): name{label="key"}, summed over the workers. Stops at n or a NULL key.
 */
static void keyed(struct text *t, const struct shm *s, const char *name, const char *label,
                  const char *const *keys, size_t n, size_t off)
{
    for (size_t k = 0; k < n && keys[k] != NULL; k++)
        text_printf(t, "wsgate_%s{%s=\"%s\"} %llu\n", name, label, keys[k],
                    (unsigned long long)sum_at(s, off + k * sizeof(uint64_t)));
}

#define KEYED(name, label, keys, n, field) \
    keyed(t, s, name, label, keys, n, offsetof(struct shm_worker, field))

/* The same for a gauge: a dead worker's slot keeps its last value, so running ones only. */
static uint64_t live_sum(const struct shm *s, size_t off)
{
    uint64_t v = 0;

    for (int i = 0; i < s->nworkers; i++)
        if (s->w[i].pid != 0)
            v += *(const uint64_t *)(const void *)((const char *)&s->w[i] + off);
    return v;
}

static void counter(struct text *t, const char *name, const char *help, uint64_t v)
{
    metric_head(t, name, "counter", help);
    text_printf(t, "wsgate_%s %llu\n", name, (unsigned long long)v);
}

static void gauge(struct text *t, const char *name, const char *help, uint64_t v)
{
    metric_head(t, name, "gauge", help);
    text_printf(t, "wsgate_%s %llu\n", name, (unsigned long long)v);
}

/* permessage-deflate (--deflate, worker/deflate.h). */
static void deflate_metrics(const struct shm *s, struct text *t)
{
    counter(t, "deflate_negotiated_total", "Upgrades that negotiated permessage-deflate.",
            SUM(deflate.negotiated));
    counter(t, "deflate_declined_total",
            "Upgrades that offered permessage-deflate with parameters that cannot be honoured: "
            "answered without the extension.",
            SUM(deflate.declined));
    counter(t, "deflate_malformed_total",
            "Upgrades with a Sec-WebSocket-Extensions line out of grammar (the line is ignored).",
            SUM(deflate.malformed));
    counter(t, "deflate_compressed_messages_total",
            "Messages compressed: once per send order and window size per worker, or per echo.",
            SUM(deflate.compressed));
    counter(t, "deflate_compressed_bytes_in_total", "Bytes of those messages before compression.",
            SUM(deflate.bytes_before));
    counter(t, "deflate_compressed_bytes_out_total", "Bytes of those messages after compression.",
            SUM(deflate.bytes_after));
    counter(t, "deflate_sent_total",
            "Compressed frames written or queued to clients, one per recipient.",
            SUM(deflate.sent));
    metric_head(t, "deflate_uncompressed_total", "counter",
                "Messages for clients that negotiated permessage-deflate sent uncompressed: "
                "under --deflate-min-size, not made smaller, or no memory for compression.");
    KEYED("deflate_uncompressed_total", "reason", deflate_plain_keys, DEFLATE_PLAIN_KEYS,
          deflate.plain);
    counter(t, "deflate_inflated_messages_total", "Compressed client messages inflated whole.",
            SUM(deflate.inflated));
    counter(t, "deflate_inflated_bytes_in_total", "Compressed bytes received from clients.",
            SUM(deflate.inflated_in));
    counter(t, "deflate_inflated_bytes_out_total", "Bytes the whole messages inflated to.",
            SUM(deflate.inflated_out));
    counter(t, "deflate_inflate_errors_total",
            "Connections closed with 1007: bad deflate data, or not UTF-8 once inflated.",
            SUM(deflate.inflate_errors));
    counter(t, "deflate_bombs_refused_total",
            "Connections closed with 1009: a compressed message inflated past --max-message.",
            SUM(deflate.bombs));
    gauge(t, "deflate_compressor_bytes", "Memory of the workers' compressors (workers running).",
          live_sum(s, offsetof(struct shm_worker, deflate.zip_bytes)));
}

/* A counter with one sample per Redis link. */
static void link_counter(struct text *t, const char *name, const char *help, uint64_t sub,
                         uint64_t pub)
{
    metric_head(t, name, "counter", help);
    text_printf(t, "wsgate_%s{link=\"subscriber\"} %llu\n", name, (unsigned long long)sub);
    text_printf(t, "wsgate_%s{link=\"publisher\"} %llu\n", name, (unsigned long long)pub);
}

/* The delivery histogram of send orders, summed over the workers: cumulative buckets
 * in seconds, then _sum and _count, as Prometheus wants them. */
static void push_histogram(const struct shm *s, struct text *t)
{
    static const uint64_t bounds[] = SHM_PUSH_BOUNDS_US;
    uint64_t count = 0, sum_us = 0;

    metric_head(t, "push_delivery_seconds", "histogram",
                "Send orders: time from the order's arrival at a worker until the last copy of "
                "its message was written to a socket (or dropped with its connection), one "
                "sample per order and worker that sent it.");
    for (size_t b = 0; b < SHM_PUSH_BUCKETS; b++) {
        for (int i = 0; i < s->nworkers; i++)
            count += s->w[i].push.latency[b];
        if (b < sizeof(bounds) / sizeof(bounds[0]))
            text_printf(t, "wsgate_push_delivery_seconds_bucket{le=\"%g\"} %llu\n",
                        (double)bounds[b] / 1e6, (unsigned long long)count);
        else
            text_printf(t, "wsgate_push_delivery_seconds_bucket{le=\"+Inf\"} %llu\n",
                        (unsigned long long)count);
    }
    for (int i = 0; i < s->nworkers; i++)
        sum_us += s->w[i].push.latency_sum_us;
    text_printf(t, "wsgate_push_delivery_seconds_sum %.6f\n", (double)sum_us / 1e6);
    text_printf(t, "wsgate_push_delivery_seconds_count %llu\n", (unsigned long long)count);
}

static const char *const close_by_names[CLOSE_BY_COUNT] = {"order", "client", "drain", "timeout",
                                                           "error", "slow",   "busy",  "expired",
                                                           "tombstone"};

/* --inbound: client messages handed to Redis, dropped, and the backpressure. */
static void inbound_metrics(const struct shm *s, struct text *t)
{
    metric_head(t, "inbound_messages_total", "counter",
                "Client messages answered by Redis, by mode (publish: PUBLISH, stream: XADD).");
    text_printf(t, "wsgate_inbound_messages_total{mode=\"publish\"} %llu\n",
                (unsigned long long)SUM(inbound.published));
    text_printf(t, "wsgate_inbound_messages_total{mode=\"stream\"} %llu\n",
                (unsigned long long)SUM(inbound.streamed));
    counter(t, "inbound_bytes_total", "Payload bytes of the client messages answered by Redis.",
            SUM(inbound.bytes));
    metric_head(t, "inbound_dropped_total", "counter",
                "Client messages not handed to Redis, by reason: mode (--inbound drop), full "
                "(--inbound-max-pending), lost (a publish whose link failed before the answer), "
                "refused (an error reply), memory.");
    KEYED("inbound_dropped_total", "reason", inbound_drop_keys, SIZE_MAX, inbound.dropped);
    counter(t, "inbound_retried_total",
            "Stream entries sent again after their Redis link failed before the answer.",
            SUM(inbound.retried));
    counter(t, "inbound_pauses_total",
            "Times a connection stopped being read for inbound backpressure.", SUM(inbound.pauses));
    gauge(t, "inbound_paused_connections",
          "Connections not read while their messages wait for Redis (workers running).",
          live_sum(s, offsetof(struct shm_worker, inbound.paused)));
    gauge(t, "inbound_pending_bytes",
          "Inbound envelope bytes queued or awaiting Redis's answer (workers running).",
          live_sum(s, offsetof(struct shm_worker, inbound.held)));
}

/* --orders-stream and tombstones. */
static void durable_metrics(const struct shm *s, struct text *t)
{
    counter(t, "stream_entries_total", "Entries read from --orders-stream (per worker).",
            SUM(ostream.entries));
    counter(t, "stream_orders_total", "Orders read from --orders-stream and handed on (per worker).",
            SUM(ostream.orders));
    counter(t, "stream_skipped_stale_total",
            "Stream entries skipped: older than --orders-max-age (per worker).", SUM(ostream.stale));
    counter(t, "stream_skipped_bad_total",
            "Stream entries skipped: no \"order\" field, or malformed (per worker).",
            SUM(ostream.bad));
    counter(t, "stream_duplicates_total",
            "Orders not applied again: their id was applied already (stream and channel, or a "
            "replay; per worker).",
            SUM(ostream.duplicates));
    counter(t, "stream_dedup_full_total",
            "Orders applied without the duplicate check: --orders-dedup-max ids held.",
            SUM(ostream.dedup_full));
    gauge(t, "stream_readers", "Workers reading --orders-stream now.",
          live_sum(s, offsetof(struct shm_worker, ostream.up)));
    counter(t, "stream_reconnects_total", "Reconnections of the --orders-stream links.",
            SUM(ostream.link.reconnects));
    counter(t, "stream_timeouts_total",
            "--orders-stream links dropped for missing --redis-timeout.",
            SUM(ostream.link.timeouts));
    gauge(t, "tombstones",
          "Tombstones and unban markers held, counted once per worker (workers running).",
          live_sum(s, offsetof(struct shm_worker, tombs.held)));
    counter(t, "tombstones_added_total", "Tombstones set by close orders with ttl_ms (per worker).",
            SUM(tombs.added));
    counter(t, "tombstones_lifted_total", "Tombstones lifted by unban orders (per worker).",
            SUM(tombs.lifted));
    counter(t, "tombstone_refused_total",
            "New connections closed at once by a tombstone.", SUM(tombs.refused));
    counter(t, "tombstone_enforced_total",
            "Open connections closed when a tombstone loaded from Redis matched them.",
            SUM(tombs.enforced));
    counter(t, "tombstones_full_total",
            "Tombstones not held by a worker: --max-tombstones reached (or out of memory).",
            SUM(tombs.full));
    counter(t, "tombstones_bad_total", "Fields of the Redis tombstone hash that did not parse.",
            SUM(tombs.bad));
    counter(t, "tombstone_loads_total", "Loads of the Redis tombstone hash (per worker).",
            SUM(tombs.loads));
}

static void metrics(const struct worker *w, struct text *t)
{
    const struct shm *s = w->shm;
    uint64_t alive = 0, subscribed = 0;

    for (int i = 0; i < s->nworkers; i++) {
        alive += s->w[i].pid != 0;
        subscribed += s->w[i].pid != 0 && s->w[i].subscribed;
    }
    gauge(t, "workers", "Worker processes running.", alive);
    counter(t, "worker_restarts_total", "Workers restarted by the master after dying.",
            SUM(restarts));
    counter(t, "worker_stall_kills_total",
            "Workers killed by the master for not ticking for --stall-kill.", SUM(stall_kills));
    {
        long long now = mono_ms();
        uint64_t stalled = 0, full = 0;
        for (int i = 0; i < s->nworkers; i++) {
            stalled += stalled_ms(s, i, now) >= (long long)w->cfg->stall_timeout_ms;
            full += s->w[i].pid != 0 && s->w[i].at_capacity;
        }
        gauge(t, "workers_stalled", "Workers whose loop has not ticked for --stall-timeout.",
              stalled);
        gauge(t, "workers_at_capacity", "Workers at their file limit (new clients get 503).", full);
    }
    gauge(t, "connections_open", "Open WebSocket connections.", SUM(conns));
    counter(t, "connections_accepted_total", "TCP connections accepted.", SUM(st.accepted));

    metric_head(t, "handshakes_total", "counter", "Opening handshakes by result.");
    text_printf(t, "wsgate_handshakes_total{result=\"ok\"} %llu\n",
                (unsigned long long)SUM(st.handshakes_ok));
    text_printf(t, "wsgate_handshakes_total{result=\"refused\"} %llu\n",
                (unsigned long long)SUM(st.handshakes_failed));
    text_printf(t, "wsgate_handshakes_total{result=\"timeout\"} %llu\n",
                (unsigned long long)SUM(st.handshake_timeouts));
    text_printf(t, "wsgate_handshakes_total{result=\"full\"} %llu\n",
                (unsigned long long)SUM(st.refused_full));
    counter(t, "admin_refused_total", "Admin requests refused: too many at once.",
            SUM(st.admin_refused));
    metric_head(t, "tls_handshakes_total", "counter",
                "TLS handshakes on the client listener (--tls-cert), by result.");
    text_printf(t, "wsgate_tls_handshakes_total{result=\"ok\"} %llu\n",
                (unsigned long long)SUM(st.tls_handshakes_ok));
    text_printf(t, "wsgate_tls_handshakes_total{result=\"failed\"} %llu\n",
                (unsigned long long)SUM(st.tls_handshakes_failed));
    text_printf(t, "wsgate_tls_handshakes_total{result=\"timeout\"} %llu\n",
                (unsigned long long)SUM(st.tls_handshake_timeouts));
    metric_head(t, "tls_reloads_total", "counter",
                "Certificate reloads on SIGHUP (per worker), by result.");
    text_printf(t, "wsgate_tls_reloads_total{result=\"ok\"} %llu\n",
                (unsigned long long)SUM(st.tls_reloads_ok));
    text_printf(t, "wsgate_tls_reloads_total{result=\"failed\"} %llu\n",
                (unsigned long long)SUM(st.tls_reloads_failed));

    counter(t, "messages_received_total", "Data messages received from clients.", SUM(st.msgs_in));
    counter(t, "messages_sent_total", "Frames sent to clients.", SUM(st.msgs_out));
    counter(t, "bytes_received_total", "Payload bytes received from clients.", SUM(st.bytes_in));
    counter(t, "bytes_sent_total", "Bytes written to clients.", SUM(st.bytes_out));
    counter(t, "protocol_errors_total", "Connections failed for a protocol violation.",
            SUM(st.protocol_errors));

    metric_head(t, "close_frames_sent_total", "counter", "Close frames sent, by code.");
    for (unsigned code = 1000; code < SHM_CLOSE_CODES; code++) {
        uint64_t v = 0;
        for (int i = 0; i < s->nworkers; i++)
            v += s->w[i].st.close_codes[code];
        if (v > 0)
            text_printf(t, "wsgate_close_frames_sent_total{code=\"%u\"} %llu\n", code,
                        (unsigned long long)v);
    }
    metric_head(t, "closes_total", "counter", "Connections closed, by who started the close.");
    KEYED("closes_total", "initiator", close_by_names, CLOSE_BY_COUNT, st.closes_by);

    counter(t, "auth_accepted_total", "Upgrades whose JWT was verified.", SUM(auth.accepted));
    metric_head(t, "auth_refused_total", "counter", "Upgrades refused with 401, by token problem.");
    KEYED("auth_refused_total", "reason", token_error_keys, TOKEN_NERROR_KEYS, auth.refused);
    metric_head(t, "ip_refused_total", "counter",
                "Clients refused with 429 by the per-address limits, by limit.");
    text_printf(t, "wsgate_ip_refused_total{limit=\"conns\"} %llu\n",
                (unsigned long long)SUM(st.ip_refused_conns));
    text_printf(t, "wsgate_ip_refused_total{limit=\"rate\"} %llu\n",
                (unsigned long long)SUM(st.ip_refused_rate));
    counter(t, "ip_untracked_total",
            "Clients admitted without per-address limits: the address table was full.",
            SUM(st.ip_untracked));
    counter(t, "proxy_protocol_errors_total",
            "Connections closed for a missing or bad PROXY protocol header.", SUM(st.proxy_errors));
    counter(t, "origin_refused_total", "Upgrades refused with 403: Origin not allowed.",
            SUM(auth.origin_refused));

    counter(t, "orders_received_total", "Orders received from Redis (per worker).",
            SUM(orders.received));
    counter(t, "orders_applied_total", "Orders applied (per worker).", SUM(orders.applied));
    counter(t, "orders_ignored_total", "Orders meant for another gateway.", SUM(orders.ignored));
    metric_head(t, "orders_refused_total", "counter", "Orders refused, by reason.");
    KEYED("orders_refused_total", "reason", apply_refuse_keys, SIZE_MAX, orders.refused_by);
    text_printf(t, "wsgate_orders_refused_total{reason=\"max_affected_exceeded\"} %llu\n",
                (unsigned long long)SUM(orders.rejected_max_affected));
    counter(t, "order_connections_closed_total", "Connections closed by orders.",
            SUM(orders.closed));
    counter(t, "pushed_messages_total",
            "Messages of send orders written or queued to clients, one per recipient.",
            SUM(push.messages));
    counter(t, "pushed_bytes_total", "Payload bytes of those messages.", SUM(push.bytes));
    counter(t, "push_dropped_total",
            "Recipients of send orders closed with 1013 as slow consumers: the message would "
            "have taken their output past --max-outbound.",
            SUM(push.dropped));
    push_histogram(s, t);
    deflate_metrics(s, t);
    counter(t, "slow_consumer_closes_total",
            "Connections closed with 1013: output over --max-outbound, or still queued at the "
            "keepalive timeout.",
            SUM(st.slow_closes));
    counter(t, "pending_budget_closes_total",
            "Connections closed with 1013: a message did not fit the worker's --max-pending.",
            SUM(st.pending_closes));
    gauge(t, "outbound_bytes", "Memory held by output queues (workers running).",
          live_sum(s, offsetof(struct shm_worker, out_bytes)));
    gauge(t, "pending_bytes", "Memory held by partly received messages (workers running).",
          live_sum(s, offsetof(struct shm_worker, pending_bytes)));
    gauge(t, "order_jobs", "Close and send orders running or waiting their turn (workers running).",
          live_sum(s, offsetof(struct shm_worker, orders.jobs)));

    counter(t, "order_member_orders_total", "Join and leave orders applied (per worker).",
            SUM(members.orders));
    counter(t, "order_joined_total", "Connections that joined groups by join orders.",
            SUM(members.joined));
    counter(t, "order_left_total", "Connections that left groups by leave orders.",
            SUM(members.left));
    counter(t, "order_join_refused_total",
            "Connections a join order left out: at --max-groups (or out of memory).",
            SUM(members.refused));
    gauge(t, "groups", "Groups with members, counted once per worker that holds members.",
          live_sum(s, offsetof(struct shm_worker, groups)));
    gauge(t, "group_channels",
          "Group channels (<channel>:group:NAME) the workers' subscribers hold, as confirmed by "
          "Redis.",
          live_sum(s, offsetof(struct shm_worker, subs.channels)));
    counter(t, "group_subscribe_commands_total",
            "SUBSCRIBE commands sent for group channels (up to 1024 channels each).",
            SUM(subs.subscribes));
    counter(t, "group_unsubscribe_commands_total",
            "UNSUBSCRIBE commands sent for group channels (up to 1024 channels each).",
            SUM(subs.unsubscribes));
    counter(t, "group_channel_orders_total", "Orders received on group channels (per worker).",
            SUM(subs.orders));
    counter(t, "group_channel_oom_total",
            "Groups whose channel could not be tracked: out of memory.", SUM(subs.oom));

    gauge(t, "redis_connected",
          "1 when every running worker's Redis links are up and answering within "
          "--redis-timeout.",
          alive > 0 && subscribed == alive);
    gauge(t, "redis_subscribed_workers",
          "Workers subscribed to the order channels with heartbeats coming back and their "
          "publisher answering.",
          subscribed);
    counter(t, "redis_reconnects_total", "Redis reconnections after a loss.",
            SUM(redis.sub.reconnects) + SUM(redis.pub.reconnects));
    link_counter(t, "redis_connect_attempts_total", "Redis connection attempts, by link.",
                 SUM(redis.sub.connects), SUM(redis.pub.connects));
    link_counter(t, "redis_timeouts_total",
                 "Redis links dropped for missing --redis-timeout (connect, setup, replies or "
                 "heartbeats), by link.",
                 SUM(redis.sub.timeouts), SUM(redis.pub.timeouts));
    link_counter(t, "redis_refused_total",
                 "Redis connections whose AUTH, SELECT, PING or SUBSCRIBE got an error (a wrong "
                 "password), by link.",
                 SUM(redis.sub.refused), SUM(redis.pub.refused));
    counter(t, "redis_worker_channel_refused_total",
            "SUBSCRIBEs of a worker's own channel (<channel>:worker:<prefix>) that Redis "
            "refused, e.g. an ACL without it: orders for its connections then come through "
            "<channel> only.",
            SUM(redis.worker_channel_refused));
    counter(t, "redis_publish_dropped_total",
            "Events and acks dropped: Redis down and the publish queue full.",
            SUM(redis.publish_dropped));
    counter(t, "redis_failovers_total",
            "Times a worker followed the master to a new address (sentinel:// only).",
            SUM(redis.sentinel.failovers));
    counter(t, "redis_not_master_total",
            "Redis connections dropped because ROLE did not say master (sentinel:// only).",
            SUM(redis.sentinel.not_master));
    counter(t, "redis_sentinel_queries_total",
            "SENTINEL get-master-addr-by-name questions asked (sentinel:// only).",
            SUM(redis.sentinel.queries));
    counter(t, "redis_sentinel_errors_total",
            "Sentinel answers naming no usable master: an unknown master name, an error reply, "
            "a malformed answer or +switch-master message (sentinel:// only).",
            SUM(redis.sentinel.errors));
    counter(t, "redis_sentinel_connect_attempts_total",
            "Connection attempts to sentinels (sentinel:// only).",
            SUM(redis.sentinel.links.connects));
    counter(t, "redis_sentinel_failures_total",
            "Sentinel connections refused (AUTH, an unknown master) or dropped for missing "
            "--redis-timeout (sentinel:// only).",
            SUM(redis.sentinel.links.refused) + SUM(redis.sentinel.links.timeouts));
    gauge(t, "redis_shards_connected",
          "Redis Cluster: shard subscriber connections up, one per worker and master it needs "
          "(0 without --redis cluster://).",
          live_sum(s, offsetof(struct shm_worker, redis.cluster.shards)));
    gauge(t, "redis_cluster_channels",
          "Redis Cluster: sharded channels (order, gateway and group channels) confirmed by "
          "SSUBSCRIBE on their slot's master (workers running).",
          live_sum(s, offsetof(struct shm_worker, redis.cluster.channels)));
    counter(t, "redis_cluster_maps_total", "Redis Cluster: slot maps learned (CLUSTER NODES).",
            SUM(redis.cluster.maps));
    counter(t, "redis_cluster_moved_total",
            "Redis Cluster: MOVED and ASK redirections followed (commands and SSUBSCRIBEs).",
            SUM(redis.cluster.moved));
    counter(t, "redis_cluster_sunsubscribed_total",
            "Redis Cluster: channels Redis unsubscribed by itself (their slot moved away); "
            "each is subscribed again on its new master.",
            SUM(redis.cluster.sunsubscribed));
    counter(t, "redis_cluster_redirects_lost_total",
            "Redis Cluster: commands given up after 5 redirections.",
            SUM(redis.cluster.redirects_lost));
    gauge(t, "draining", "1 while the gateway drains.", s->draining != 0);
    inbound_metrics(s, t);
    durable_metrics(s, t);
}

/* Why the gateway is not ready, or NULL when it is. */
static const char *not_ready(const struct worker *w, char *buf, size_t cap)
{
    const struct shm *s = w->shm;
    long long now = mono_ms();

    if (s->draining)
        return "draining";
    for (int i = 0; i < s->nworkers; i++) {
        long long idle = stalled_ms(s, i, now);
        if (s->w[i].pid == 0) {
            snprintf(buf, cap, "worker %d not running", i + 1);
            return buf;
        }
        if (idle >= (long long)w->cfg->stall_timeout_ms) {
            snprintf(buf, cap, "worker %d stalled for %lldms", i + 1, idle);
            return buf;
        }
        if (!s->w[i].listening) {
            snprintf(buf, cap, "worker %d not listening", i + 1);
            return buf;
        }
        if (!s->w[i].subscribed) {
            snprintf(buf, cap, "worker %d: a Redis link is down or not answering", i + 1);
            return buf;
        }
        if (s->w[i].at_capacity) {
            /* Its share of new clients would get 503: send them elsewhere. */
            snprintf(buf, cap, "worker %d at capacity", i + 1);
            return buf;
        }
    }
    return NULL;
}

/* Why the process is not sound, or NULL: a worker stalled past the point where the
 * master should have replaced it (its watchdog is off, or the master is stuck too). */
static const char *not_healthy(const struct worker *w, char *buf, size_t cap)
{
    const struct shm *s = w->shm;
    long long now = mono_ms(), limit;

    limit =
        (long long)(w->cfg->stall_kill_ms != 0 ? w->cfg->stall_kill_ms : w->cfg->stall_timeout_ms) +
        HEALTH_GRACE_MS;
    for (int i = 0; i < s->nworkers; i++) {
        long long idle = stalled_ms(s, i, now);
        if (idle >= limit) {
            snprintf(buf, cap, "worker %d stalled for %lldms", i + 1, idle);
            return buf;
        }
    }
    return NULL;
}

static void respond(struct conn *c, int status, const char *ctype, const char *body, size_t len)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-cache\r\nConnection: close\r\n\r\n",
                     status, status == 200 ? "OK" : "Service Unavailable", ctype, len);

    conn_http_respond(c, head, (size_t)n, body, len);
}

bool admin_answer(struct conn *c)
{
    const struct ws_hs *hs = c->hs;
    const char *path = hs->path != NULL ? hs->path : "";
    char buf[128], why[96];

    if (strcmp(path, "/healthz") == 0) {
        const char *r = not_healthy(c->w, why, sizeof(why));
        int n = snprintf(buf, sizeof(buf), "%s\n", r != NULL ? r : "ok");
        respond(c, r != NULL ? 503 : 200, "text/plain; charset=utf-8", buf, (size_t)n);
        return true;
    }
    if (strcmp(path, "/readyz") == 0) {
        const char *r = not_ready(c->w, why, sizeof(why));
        int n = snprintf(buf, sizeof(buf), "%s\n", r != NULL ? r : "ready");
        respond(c, r != NULL ? 503 : 200, "text/plain; charset=utf-8", buf, (size_t)n);
        return true;
    }
    if (strcmp(path, "/metrics") == 0) {
        struct text t = {NULL, 0, 0, false};
        metrics(c->w, &t);
        if (t.failed) {
            free(t.p);
            return false;
        }
        respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", t.p, t.len);
        free(t.p);
        return true;
    }
    return false;
}
