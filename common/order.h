#ifndef WSGATE_COMMON_ORDER_H
#define WSGATE_COMMON_ORDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Orders: the JSON a backend PUBLISHes to the orders channels, parsed and checked in
 * one place so the gateway and wsgatectl apply exactly the same rules.
 *
 *   {"id": "optional string", "ts": Unix ms (optional),
 *    "op": "close" | "drain" | "send" | "join" | "leave",
 *    "conn": "ID" | ["ID", ...]  |  "group": "NAME" | ["NAME", ...]  |  "all": true,
 *    "except": "ID" | ["ID", ...], "gateway": "only this gateway applies it",
 *    "code": 4000, "reason": "UTF-8 text", "spread_ms": 0, "reply_to": "channel",
 *    "dry_run": false, "max_affected": N, "ttl_ms": N}
 *
 * A drain order is {"op": "drain", "gateway": "ID", "reason": "...", "spread_ms": N}:
 * the gateway is required, targets are not allowed and the code is 1001.
 * A send order carries exactly one of "text" (UTF-8) or "binary" (base64) instead of
 * code, reason and spread_ms; join and leave carry "groups": ["NAME", ...].
 * A close order of a group may carry "ttl_ms" (1..ORDER_TTL_MAX): a tombstone, so
 * that new connections of the group are closed at once for that long (worker/tombs.c).
 * An unban order {"op": "unban", "group": "NAME" | ["NAME", ...]} lifts tombstones early.
 * Unknown fields are ignored; a known field of the wrong JSON type (null included), or
 * one the op does not take, refuses the order.
 */

#define ORDER_MAX_BYTES   (64 * 1024)       /* longer order text is refused (send orders: below) */
#define ORDER_MAX_TARGETS 10000             /* names in conn/group plus except */
#define ORDER_NAME_MAX    128               /* bytes in one conn id or group name */
#define ORDER_STRING_MAX  256               /* bytes in id, gateway, reply_to */
#define ORDER_SPREAD_MAX  3600000u          /* spread_ms: one hour */
#define ORDER_REASON_MAX  123               /* WS_CLOSE_REASON_MAX */
#define ORDER_TS_MAX      253402300799999LL /* ts: 9999-12-31T23:59:59.999Z */
#define ORDER_TTL_MAX     86400000u         /* ttl_ms: one day */

enum order_op {
    ORDER_OP_CLOSE,
    ORDER_OP_DRAIN,
    ORDER_OP_SEND,
    ORDER_OP_JOIN,
    ORDER_OP_LEAVE,
    ORDER_OP_UNBAN,
};

#define ORDER_SEND_MAX_DEFAULT (1024 * 1024) /* --max-send: payload bytes, after base64 */

/*
 * What order_parse_with() needs besides the text:
 *   max_send  the largest send payload (bytes after base64 decoding); a send order's
 *             text may be as long as that payload needs (JSON escapes take up to 6
 *             bytes a byte, base64 4 per 3), every other order stays under
 *             ORDER_MAX_BYTES
 *   group     the group named by the channel the order came on (<channel>:group:NAME),
 *             or NULL: then the order targets that group, and may omit "group"
 */
struct order_limits {
    size_t max_send;
    const char *group;
};

/* The longest order text order_parse_with() reads for these limits. */
size_t order_max_text(const struct order_limits *lim);

enum order_target {
    ORDER_TARGET_NONE, /* drain orders */
    ORDER_TARGET_CONN,
    ORDER_TARGET_GROUP,
    ORDER_TARGET_ALL,
};

/*
 * A checked order. Filled by order_parse(), released by order_cleanup(); a caller
 * that builds one by hand starts with order_init() and may point the string fields
 * at memory it keeps (then it must not call order_cleanup() on it).
 */
struct order {
    char *id;     /* owned, NULL when absent */
    long long ts; /* Unix ms when the order was made, 0..ORDER_TS_MAX; -1 when absent */
    enum order_op op;
    enum order_target target;
    char **names; /* owned: conn ids or group names, NULL for all and drain */
    size_t nnames;
    bool group_named; /* on a group channel: the text named the group itself */
    char **except;    /* owned: conn ids spared, NULL when none */
    size_t nexcept;
    char *gateway;                     /* owned, NULL = every gateway */
    unsigned code;                     /* sendable close code; 1001 for drain */
    char reason[ORDER_REASON_MAX + 1]; /* valid UTF-8, NUL-terminated */
    size_t reason_len;                 /* bytes in reason, without the NUL */
    bool reason_cut;                   /* the order's reason was longer and got cut */
    uint32_t spread_ms;                /* 0..ORDER_SPREAD_MAX */
    char *reply_to;                    /* owned, NULL = no acknowledgement */
    bool dry_run;                      /* count only, close nothing */
    long long max_affected;            /* -1 = no limit */
    uint8_t *payload;                  /* owned: send: the message, NULL when empty */
    size_t payload_len;
    bool binary;   /* send: from "binary" (a binary frame), else a text frame */
    char **groups; /* owned: join/leave: the groups, checked like client groups */
    size_t ngroups;
    uint32_t ttl_ms; /* close of groups: tombstone lifetime, 0 = none */
};

/*
 * Why an order was refused. key is a short static string that never changes, for
 * counters: "too_big", "json", "type", "op", "target", "too_many", "code", "reason",
 * "spread", "max_affected", "id", "ts", "gateway", "reply_to", "ttl" or "oom" (and "stale"
 * from order_check_signed(); common/order_sig.h adds its own). text names the field,
 * for the log and the {"error": ...} acknowledgement.
 */
struct order_error {
    const char *key;
    char text[160];
};

/* Fills err with key and a printf-formatted text; returns -1, for "return
 * order_refuse(...)" (common/order_sig.c shares it). */
int order_refuse(struct order_error *err, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sets o to an empty close order with the defaults: code 1000, no limit. */
void order_init(struct order *o);

/*
 * Parses and checks the order text buf[0..len) (need not be NUL-terminated).
 * Returns 0 with o filled (release it with order_cleanup()), or -1 with err filled
 * and o left empty: nothing to release. Text over order_max_text(lim) is refused
 * before parsing; refusal keys add "payload" (send) and "groups" (join, leave).
 */
int order_parse_with(const char *buf, size_t len, const struct order_limits *lim, struct order *o,
                     struct order_error *err);

/* order_parse_with() with the default limits and no channel group. */
int order_parse(const char *buf, size_t len, struct order *o, struct order_error *err);

/*
 * Sets o->reason from text[0..len) under the order rules: valid UTF-8 without NUL,
 * cut on a code point boundary to ORDER_REASON_MAX bytes (then o->reason_cut is
 * set). Returns 0, or -1 with err filled ("reason") and o->reason unchanged.
 */
int order_set_reason(struct order *o, const char *text, size_t len, struct order_error *err);

/*
 * The rules a signed order adds once its signature is verified (common/order_sig.h):
 * ts and id are required, and ts is at most max_age_ms away from now_ms (Unix ms), in
 * the past or, for clock skew, in the future. Returns 0, or -1 with err->key "ts",
 * "id" or "stale".
 */
int order_check_signed(const struct order *o, long long now_ms, uint32_t max_age_ms,
                       struct order_error *err);

/* Frees what o owns and leaves it as order_init() does. Safe to call twice. */
void order_cleanup(struct order *o);

/*
 * Compact JSON text of o that order_parse() reads back to the same order (with
 * reason_cut false); a single group is written as a string, as the group's channel
 * takes it. Returns malloc'd text, or NULL when out of memory.
 */
char *order_to_json(const struct order *o);

/*
 * Acknowledgements a worker publishes to reply_to, malloc'd JSON text or NULL when
 * out of memory. id and gateway may be NULL (written as null).
 *   {"id","gateway","worker","matched","closed"} plus "dry_run": true when so
 *   {"id","gateway","worker","error"}
 */
char *order_ack_json(const char *id, const char *gateway, int worker, size_t matched, size_t closed,
                     bool dry_run);

/*
 * The acknowledgement of a send, join or leave order:
 *   send        {"id","gateway","worker","matched","sent","dropped"}
 *   join/leave  {"id","gateway","worker","matched","joined"|"left","refused"}
 * count is sent or joined/left; other is dropped (slow consumers) or refused (a
 * connection at --max-groups); "dry_run": true when so.
 */
char *order_result_json(const struct order *o, const char *gateway, int worker, size_t matched,
                        size_t count, size_t other);
char *order_nack_json(const char *id, const char *gateway, int worker, const char *error);

/*
 * The routing fields of an order that order_parse() refused, so the refusal can still
 * be answered on reply_to and left alone when it names another gateway. Best effort:
 * bytes that are not UTF-8 and escapes JSON refuses (NUL, lone surrogates) are read
 * as '?'. Text over ORDER_PEEK_MAX_BYTES is not read: that refusal goes unanswered.
 * Fields are malloc'd or NULL; release with order_peek_cleanup().
 */
#define ORDER_PEEK_MAX_BYTES (16 * 1024 * 1024)
struct order_peek {
    char *id;
    char *reply_to;
    char *gateway;
};

void order_peek(const char *buf, size_t len, struct order_peek *p);
void order_peek_cleanup(struct order_peek *p);

#endif /* WSGATE_COMMON_ORDER_H */
