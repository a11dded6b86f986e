#include "common/order.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/base64.h"
#include "common/text.h"
#include "common/utf8.h"
#include "common/ws_close.h"

/* The fields a close order may carry besides its target; a drain refuses them. */
#define TARGET_FIELDS 3
static const char *const target_fields[TARGET_FIELDS] = {"conn", "group", "all"};

static const char *const op_names[] = {"close", "drain", "send", "join", "leave", "unban"};

#define OP_COUNT (sizeof(op_names) / sizeof(op_names[0]))

/* JSON spends at most 6 bytes on one byte of text ("\u0001"), base64 4 on 3. */
#define SEND_TEXT_FACTOR 6

static const struct order_limits default_limits = {ORDER_SEND_MAX_DEFAULT, NULL};

static bool is_member_op(enum order_op op)
{
    return op == ORDER_OP_JOIN || op == ORDER_OP_LEAVE;
}

int order_refuse(struct order_error *err, const char *key, const char *fmt, ...)
{
    va_list ap;

    err->key = key;
    va_start(ap, fmt);
    vsnprintf(err->text, sizeof(err->text), fmt, ap);
    va_end(ap);
    return -1;
}

static int refuse_type(struct order_error *err, const char *field, const char *want)
{
    return order_refuse(err, "type", "%s: must be %s", field, want);
}

void order_init(struct order *o)
{
    memset(o, 0, sizeof(*o));
    o->op = ORDER_OP_CLOSE;
    o->target = ORDER_TARGET_NONE;
    o->code = WS_CLOSE_NORMAL;
    o->max_affected = -1;
    o->ts = -1;
}

static void free_names(char **names, size_t n)
{
    if (names == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

void order_cleanup(struct order *o)
{
    free(o->id);
    free_names(o->names, o->nnames);
    free_names(o->except, o->nexcept);
    free(o->gateway);
    free(o->reply_to);
    free(o->payload);
    free_names(o->groups, o->ngroups);
    order_init(o);
}

int order_set_reason(struct order *o, const char *text, size_t len, struct order_error *err)
{
    size_t keep = len;

    /* A NUL would end the reason early in every C string that carries it later. */
    if (memchr(text, '\0', len) != NULL)
        return order_refuse(err, "reason", "reason: must not contain NUL");
    if (!utf8_is_valid((const uint8_t *)text, len))
        return order_refuse(err, "reason", "reason: must be valid UTF-8");
    if (len > ORDER_REASON_MAX)
        keep = ws_close_reason_cut(text, len);
    memcpy(o->reason, text, keep);
    o->reason[keep] = '\0';
    o->reason_len = keep;
    o->reason_cut = keep < len;
    return 0;
}

/* id, gateway, reply_to: a non-empty string of at most ORDER_STRING_MAX bytes. */
static int get_string(json_t *root, const char *field, char **out, struct order_error *err)
{
    json_t *v = json_object_get(root, field);
    size_t len;

    if (v == NULL)
        return 0;
    if (!json_is_string(v))
        return refuse_type(err, field, "a string");
    len = json_string_length(v);
    if (len == 0 || len > ORDER_STRING_MAX)
        return order_refuse(err, field, "%s: must be 1 to %d bytes", field, ORDER_STRING_MAX);
    if (memchr(json_string_value(v), '\0', len) != NULL)
        return order_refuse(err, field, "%s: must not contain NUL", field);
    *out = strndup(json_string_value(v), len);
    if (*out == NULL)
        return order_refuse(err, "oom", "out of memory");
    return 0;
}

/* "x" or ["x", ...]: how many names v holds, or 0 when v is absent. */
static size_t count_names(json_t *v)
{
    if (v == NULL)
        return 0;
    return json_is_array(v) ? json_array_size(v) : 1;
}

static int check_name(const char *field, json_t *v, struct order_error *err)
{
    size_t len;

    if (!json_is_string(v))
        return refuse_type(err, field, "a string or an array of strings");
    len = json_string_length(v);
    if (len == 0 || len > ORDER_NAME_MAX)
        return order_refuse(err, "target", "%s: names must be 1 to %d bytes", field,
                            ORDER_NAME_MAX);
    if (memchr(json_string_value(v), '\0', len) != NULL)
        return order_refuse(err, "target", "%s: names must not contain NUL", field);
    return 0;
}

/* Copies the names of v ("x" or a non-empty array of strings) to *out, *n. */
static int get_names(const char *field, json_t *v, char ***out, size_t *n, struct order_error *err)
{
    size_t count = count_names(v);
    char **names;

    if (json_is_array(v) && count == 0)
        return order_refuse(err, "target", "%s: must not be an empty array", field);
    if (!json_is_array(v) && check_name(field, v, err) < 0)
        return -1;
    for (size_t i = 0; json_is_array(v) && i < count; i++) {
        if (check_name(field, json_array_get(v, i), err) < 0)
            return -1;
    }
    names = calloc(count, sizeof(*names));
    if (names == NULL)
        return order_refuse(err, "oom", "out of memory");
    *out = names;
    for (size_t i = 0; i < count; i++) {
        json_t *s = json_is_array(v) ? json_array_get(v, i) : v;

        names[i] = strndup(json_string_value(s), json_string_length(s));
        if (names[i] == NULL)
            return order_refuse(err, "oom", "out of memory");
        *n = i + 1; /* order_cleanup() frees what was copied so far */
    }
    return 0;
}

static int get_op(json_t *root, struct order *o, struct order_error *err)
{
    json_t *v = json_object_get(root, "op");

    if (v == NULL)
        return 0;
    if (!json_is_string(v))
        return refuse_type(err, "op", "a string");
    for (size_t i = 0; i < OP_COUNT; i++) {
        if (strcmp(json_string_value(v), op_names[i]) == 0) {
            o->op = (enum order_op)i;
            return 0;
        }
    }
    return order_refuse(err, "op",
                        "op: must be \"close\", \"drain\", \"send\", \"join\", \"leave\" or "
                        "\"unban\"");
}

/*
 * Targets of a close order. Counted before anything is copied: an order of 64 KiB
 * holds up to ~16 000 one-byte names, and each costs an allocation per worker.
 */
static int get_targets(json_t *root, const struct order_limits *lim, struct order *o,
                       struct order_error *err)
{
    json_t *v[TARGET_FIELDS];
    json_t *except = json_object_get(root, "except");
    int present = 0, which = 0;

    for (int i = 0; i < TARGET_FIELDS; i++) {
        v[i] = json_object_get(root, target_fields[i]);
        if (v[i] != NULL) {
            present++;
            which = i;
        }
    }
    if (o->op == ORDER_OP_DRAIN) {
        if (present > 0 || except != NULL)
            return order_refuse(err, "target",
                                "drain: conn, group, all and except are not allowed");
        if (lim->group != NULL)
            return order_refuse(err, "target", "drain: not on a group channel");
        return 0;
    }
    if (lim->group != NULL) {
        /* The channel names the group: "group" may be left out, and may not name
         * another one (a subscriber of one group must not act on others). */
        json_t *g = v[1];
        if (present > (g != NULL ? 1 : 0))
            return order_refuse(err, "target", "on a group channel only that group is a target");
        if (g != NULL && !(json_is_string(g) && strcmp(json_string_value(g), lim->group) == 0 &&
                           json_string_length(g) == strlen(lim->group)))
            return order_refuse(err, "target", "group: must be the channel's group or left out");
        if (count_names(except) + 1 > ORDER_MAX_TARGETS)
            return order_refuse(err, "too_many", "more than %d targets (names plus except)",
                                ORDER_MAX_TARGETS);
        o->target = ORDER_TARGET_GROUP;
        o->group_named = g != NULL;
        o->names = calloc(1, sizeof(*o->names));
        if (o->names == NULL || (o->names[0] = strdup(lim->group)) == NULL)
            return order_refuse(err, "oom", "out of memory");
        o->nnames = 1;
        if (except != NULL && get_names("except", except, &o->except, &o->nexcept, err) < 0)
            return -1;
        return 0;
    }
    if (present != 1)
        return order_refuse(err, "target", "exactly one of conn, group, all is required");
    if (which == 2) {
        if (!json_is_boolean(v[2]))
            return refuse_type(err, "all", "true");
        if (!json_is_true(v[2]))
            return order_refuse(err, "target", "all: must be true");
        o->target = ORDER_TARGET_ALL;
    } else {
        o->target = which == 0 ? ORDER_TARGET_CONN : ORDER_TARGET_GROUP;
    }
    if (count_names(v[which]) + count_names(except) > ORDER_MAX_TARGETS)
        return order_refuse(err, "too_many", "more than %d targets (names plus except)",
                            ORDER_MAX_TARGETS);
    if (o->target != ORDER_TARGET_ALL &&
        get_names(target_fields[which], v[which], &o->names, &o->nnames, err) < 0)
        return -1;
    if (except != NULL && get_names("except", except, &o->except, &o->nexcept, err) < 0)
        return -1;
    return 0;
}

static int get_code(json_t *root, struct order *o, struct order_error *err)
{
    json_t *v = json_object_get(root, "code");
    json_int_t code;

    if (o->op == ORDER_OP_DRAIN)
        o->code = WS_CLOSE_GOING_AWAY;
    if (v == NULL)
        return 0;
    if (o->op != ORDER_OP_CLOSE && o->op != ORDER_OP_DRAIN)
        return order_refuse(err, "op", "%s: code is not allowed", op_names[o->op]);
    if (!json_is_integer(v))
        return refuse_type(err, "code", "an integer");
    code = json_integer_value(v);
    if (o->op == ORDER_OP_DRAIN && code != WS_CLOSE_GOING_AWAY)
        return order_refuse(err, "code", "code: a drain always closes with 1001");
    if (code < 0 || code > 4999 || !ws_close_code_is_sendable((unsigned)code))
        return order_refuse(err, "code",
                            "code: %lld may not be sent (1000-1003, 1007-1009, "
                            "1011-1014, 3000-4999)",
                            (long long)code);
    o->code = (unsigned)code;
    return 0;
}

static int get_reason(json_t *root, struct order *o, struct order_error *err)
{
    json_t *v = json_object_get(root, "reason");

    if (v == NULL)
        return 0;
    if (o->op != ORDER_OP_CLOSE && o->op != ORDER_OP_DRAIN)
        return order_refuse(err, "op", "%s: reason is not allowed", op_names[o->op]);
    if (!json_is_string(v))
        return refuse_type(err, "reason", "a string");
    return order_set_reason(o, json_string_value(v), json_string_length(v), err);
}

static int get_numbers(json_t *root, struct order *o, struct order_error *err)
{
    json_t *spread = json_object_get(root, "spread_ms");
    json_t *max = json_object_get(root, "max_affected");
    json_t *dry = json_object_get(root, "dry_run");

    if (spread != NULL) {
        if (o->op != ORDER_OP_CLOSE && o->op != ORDER_OP_DRAIN)
            return order_refuse(err, "op", "%s: spread_ms is not allowed", op_names[o->op]);
        if (!json_is_integer(spread))
            return refuse_type(err, "spread_ms", "an integer");
        if (json_integer_value(spread) < 0 || json_integer_value(spread) > ORDER_SPREAD_MAX)
            return order_refuse(err, "spread", "spread_ms: must be 0 to %u", ORDER_SPREAD_MAX);
        o->spread_ms = (uint32_t)json_integer_value(spread);
    }
    if (dry != NULL) {
        if (!json_is_boolean(dry))
            return refuse_type(err, "dry_run", "a boolean");
        o->dry_run = json_is_true(dry);
    }
    if (max != NULL) {
        if (!json_is_integer(max))
            return refuse_type(err, "max_affected", "an integer");
        if (json_integer_value(max) < 0)
            return order_refuse(err, "max_affected", "max_affected: must be 0 or more");
        o->max_affected = (long long)json_integer_value(max);
    }
    /* A drain that did nothing, or stopped halfway, would still take the gateway out. */
    if (o->op == ORDER_OP_DRAIN && (o->dry_run || max != NULL))
        return order_refuse(err, "op", "drain: dry_run and max_affected are not allowed");
    return 0;
}

/* A send's message: exactly one of "text" (UTF-8) and "binary" (base64), at most
 * lim->max_send bytes once decoded. Other ops refuse both fields. */
static int get_payload(json_t *root, const struct order_limits *lim, struct order *o,
                       struct order_error *err)
{
    json_t *text = json_object_get(root, "text");
    json_t *bin = json_object_get(root, "binary");
    json_t *v = text != NULL ? text : bin;
    const char *field = text != NULL ? "text" : "binary";
    size_t len;
    long n;

    if (o->op != ORDER_OP_SEND) {
        if (v != NULL)
            return order_refuse(err, "op", "%s: %s is not allowed", op_names[o->op], field);
        return 0;
    }
    if ((text == NULL) == (bin == NULL))
        return order_refuse(err, "payload", "send: exactly one of text and binary is required");
    if (!json_is_string(v))
        return refuse_type(err, field, "a string");
    len = json_string_length(v);
    if (text != NULL) {
        /* jansson hands out UTF-8 only; checked again, as every text frame is. */
        if (len > lim->max_send)
            return order_refuse(err, "payload", "text: %zu bytes, more than --max-send %zu", len,
                                lim->max_send);
        if (!utf8_is_valid((const uint8_t *)json_string_value(v), len))
            return order_refuse(err, "payload", "text: must be valid UTF-8");
        if (len > 0 && (o->payload = malloc(len)) == NULL)
            return order_refuse(err, "oom", "out of memory");
        if (len > 0)
            memcpy(o->payload, json_string_value(v), len);
        o->payload_len = len;
        return 0;
    }
    if (BASE64_DECODED_MAX(len) > lim->max_send + 2)
        return order_refuse(err, "payload", "binary: more than --max-send %zu bytes",
                            lim->max_send);
    if (len > 0 && (o->payload = malloc(BASE64_DECODED_MAX(len))) == NULL)
        return order_refuse(err, "oom", "out of memory");
    n = base64_decode(json_string_value(v), len, o->payload);
    if (n < 0)
        return order_refuse(err, "payload", "binary: must be base64 (RFC 4648, padded)");
    if ((size_t)n > lim->max_send)
        return order_refuse(err, "payload", "binary: %ld bytes, more than --max-send %zu", n,
                            lim->max_send);
    o->payload_len = (size_t)n;
    o->binary = true;
    return 0;
}

/* Group names a join or leave names: the rules of client groups (1-128 bytes of UTF-8,
 * no control characters). */
static int check_group(json_t *v, struct order_error *err)
{
    const char *s;
    size_t len;

    if (!json_is_string(v))
        return refuse_type(err, "groups", "an array of strings");
    s = json_string_value(v);
    len = json_string_length(v);
    if (len == 0 || len > ORDER_NAME_MAX)
        return order_refuse(err, "groups", "groups: names must be 1 to %d bytes", ORDER_NAME_MAX);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return order_refuse(err, "groups", "groups: names must not contain control characters");
    return 0;
}

static int get_groups(json_t *root, struct order *o, struct order_error *err)
{
    json_t *v = json_object_get(root, "groups");
    size_t n;

    if (!is_member_op(o->op)) {
        if (v != NULL)
            return order_refuse(err, "op", "%s: groups is not allowed", op_names[o->op]);
        return 0;
    }
    if (v == NULL)
        return order_refuse(err, "groups", "%s: groups is required", op_names[o->op]);
    if (!json_is_array(v))
        return refuse_type(err, "groups", "an array of strings");
    n = json_array_size(v);
    if (n == 0)
        return order_refuse(err, "groups", "groups: must not be an empty array");
    if (n + o->nnames + o->nexcept > ORDER_MAX_TARGETS)
        return order_refuse(err, "too_many", "more than %d names (targets, except and groups)",
                            ORDER_MAX_TARGETS);
    for (size_t i = 0; i < n; i++)
        if (check_group(json_array_get(v, i), err) < 0)
            return -1;
    return get_names("groups", v, &o->groups, &o->ngroups, err);
}

size_t order_max_text(const struct order_limits *lim)
{
    size_t extra = lim->max_send > (SIZE_MAX - ORDER_MAX_BYTES) / SEND_TEXT_FACTOR
                       ? SIZE_MAX - ORDER_MAX_BYTES
                       : lim->max_send * SEND_TEXT_FACTOR;

    return ORDER_MAX_BYTES + extra;
}

/* ttl_ms: close orders of groups only. Connection ids are never given out twice
 * (there is no resume), so a tombstone of one could never match; one for "all" would
 * lock every client out. Unban orders name groups too. */
static int get_ttl(json_t *root, struct order *o, struct order_error *err)
{
    json_t *v = json_object_get(root, "ttl_ms");

    if (o->op == ORDER_OP_UNBAN) {
        if (v != NULL)
            return order_refuse(err, "op", "unban: ttl_ms is not allowed");
        if (o->target != ORDER_TARGET_GROUP)
            return order_refuse(err, "target", "unban: group is required");
        if (o->dry_run || o->max_affected >= 0 || o->nexcept > 0)
            return order_refuse(err, "op", "unban: dry_run, max_affected and except are not "
                                           "allowed");
        return 0;
    }
    if (v == NULL)
        return 0;
    if (o->op != ORDER_OP_CLOSE)
        return order_refuse(err, "op", "%s: ttl_ms is not allowed", op_names[o->op]);
    if (!json_is_integer(v))
        return refuse_type(err, "ttl_ms", "an integer");
    if (json_integer_value(v) < 0 || json_integer_value(v) > ORDER_TTL_MAX)
        return order_refuse(err, "ttl", "ttl_ms: must be 0 to %u (one day)", ORDER_TTL_MAX);
    if (json_integer_value(v) > 0 && o->target != ORDER_TARGET_GROUP)
        return order_refuse(err, "ttl",
                            "ttl_ms: needs a group target (user:ID for a user); connection "
                            "ids are never reused");
    o->ttl_ms = (uint32_t)json_integer_value(v);
    return 0;
}

static int get_ts(json_t *root, struct order *o, struct order_error *err)
{
    json_t *v = json_object_get(root, "ts");

    if (v == NULL)
        return 0;
    if (!json_is_integer(v))
        return refuse_type(err, "ts", "an integer (Unix ms)");
    if (json_integer_value(v) < 0 || json_integer_value(v) > ORDER_TS_MAX)
        return order_refuse(err, "ts", "ts: must be Unix ms from 0 to %lld", ORDER_TS_MAX);
    o->ts = (long long)json_integer_value(v);
    return 0;
}

int order_parse(const char *buf, size_t len, struct order *o, struct order_error *err)
{
    return order_parse_with(buf, len, &default_limits, o, err);
}

int order_parse_with(const char *buf, size_t len, const struct order_limits *lim, struct order *o,
                     struct order_error *err)
{
    json_error_t jerr;
    json_t *root;
    int rc = -1;

    order_init(o);
    if (len > order_max_text(lim))
        return order_refuse(err, "too_big", "order is %zu bytes, more than %zu", len,
                            order_max_text(lim));
    /* NUL is let through the parser so the field that holds it can be named. */
    root = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY, &jerr);
    if (root == NULL)
        return order_refuse(err, "json", "not JSON: %s (line %d column %d)", jerr.text, jerr.line,
                            jerr.column);
    if (!json_is_object(root)) {
        order_refuse(err, "type", "order: must be a JSON object");
        goto err_decref;
    }
    if (get_op(root, o, err) < 0)
        goto err_decref;
    if (o->op != ORDER_OP_SEND && len > ORDER_MAX_BYTES) {
        order_refuse(err, "too_big", "order is %zu bytes, more than %d", len, ORDER_MAX_BYTES);
        goto err_decref;
    }
    if (get_targets(root, lim, o, err) < 0 || get_code(root, o, err) < 0 ||
        get_reason(root, o, err) < 0 || get_numbers(root, o, err) < 0 ||
        get_payload(root, lim, o, err) < 0 || get_groups(root, o, err) < 0 ||
        get_string(root, "id", &o->id, err) < 0 || get_ts(root, o, err) < 0 ||
        get_string(root, "gateway", &o->gateway, err) < 0 ||
        get_string(root, "reply_to", &o->reply_to, err) < 0 || get_ttl(root, o, err) < 0)
        goto err_decref;
    if (o->op == ORDER_OP_DRAIN && o->gateway == NULL) {
        order_refuse(err, "gateway", "drain: gateway is required");
        goto err_decref;
    }
    rc = 0;
err_decref:
    json_decref(root);
    if (rc < 0)
        order_cleanup(o);
    return rc;
}

int order_check_signed(const struct order *o, long long now_ms, uint32_t max_age_ms,
                       struct order_error *err)
{
    if (o->ts < 0)
        return order_refuse(err, "ts", "ts: a signed order must carry ts (Unix ms)");
    if (o->id == NULL)
        return order_refuse(err, "id", "id: a signed order must carry an id");
    /* Both ways: an order from a clock far ahead would otherwise stay valid, and its id
     * would have to be remembered, for longer than the window. */
    if (now_ms - o->ts > (long long)max_age_ms)
        return order_refuse(err, "stale", "stale: ts is %lld ms old, more than %u", now_ms - o->ts,
                            max_age_ms);
    if (o->ts - now_ms > (long long)max_age_ms)
        return order_refuse(err, "stale", "stale: ts is %lld ms in the future, more than %u",
                            o->ts - now_ms, max_age_ms);
    return 0;
}

/* set_new: steals value, fails on NULL (out of memory) as well. */
static int set_new(json_t *obj, const char *key, json_t *value)
{
    return value == NULL ? -1 : json_object_set_new(obj, key, value);
}

static json_t *names_json(char *const *names, size_t n)
{
    json_t *a = json_array();

    for (size_t i = 0; a != NULL && i < n; i++) {
        if (json_array_append_new(a, json_string(names[i])) < 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static json_t *string_or_null(const char *s)
{
    return s == NULL ? json_null() : json_string(s);
}

static char *dump(json_t *obj, int failed)
{
    char *text = NULL;

    if (obj != NULL && failed == 0)
        text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    return text;
}

char *order_to_json(const struct order *o)
{
    json_t *obj = json_object();
    int r = obj == NULL ? -1 : 0;

    if (o->id != NULL)
        r |= set_new(obj, "id", json_string(o->id));
    if (o->ts >= 0)
        r |= set_new(obj, "ts", json_integer(o->ts));
    r |= set_new(obj, "op", json_string(op_names[o->op]));
    /* One group as a plain string: the form a group channel's order may carry. */
    if (o->target == ORDER_TARGET_CONN)
        r |= set_new(obj, "conn", names_json(o->names, o->nnames));
    else if (o->target == ORDER_TARGET_GROUP && o->nnames == 1)
        r |= set_new(obj, "group", json_string(o->names[0]));
    else if (o->target == ORDER_TARGET_GROUP)
        r |= set_new(obj, "group", names_json(o->names, o->nnames));
    else if (o->target == ORDER_TARGET_ALL)
        r |= set_new(obj, "all", json_true());
    if (o->nexcept > 0)
        r |= set_new(obj, "except", names_json(o->except, o->nexcept));
    if (o->gateway != NULL)
        r |= set_new(obj, "gateway", json_string(o->gateway));
    if (o->op == ORDER_OP_CLOSE)
        r |= set_new(obj, "code", json_integer(o->code));
    if (o->op == ORDER_OP_CLOSE || o->op == ORDER_OP_DRAIN) {
        r |= set_new(obj, "reason", json_stringn(o->reason, o->reason_len));
        r |= set_new(obj, "spread_ms", json_integer(o->spread_ms));
    }
    if (o->op == ORDER_OP_SEND && !o->binary)
        r |= set_new(
            obj, "text",
            json_stringn(o->payload != NULL ? (const char *)o->payload : "", o->payload_len));
    if (o->op == ORDER_OP_SEND && o->binary) {
        char *b64 = malloc(BASE64_ENCODED_LEN(o->payload_len) + 1);
        if (b64 != NULL)
            base64_encode(o->payload, o->payload_len, b64);
        r |= set_new(obj, "binary", b64 != NULL ? json_string(b64) : NULL);
        free(b64);
    }
    if (is_member_op(o->op))
        r |= set_new(obj, "groups", names_json(o->groups, o->ngroups));
    if (o->reply_to != NULL)
        r |= set_new(obj, "reply_to", json_string(o->reply_to));
    if (o->dry_run)
        r |= set_new(obj, "dry_run", json_true());
    if (o->max_affected >= 0)
        r |= set_new(obj, "max_affected", json_integer(o->max_affected));
    if (o->ttl_ms > 0)
        r |= set_new(obj, "ttl_ms", json_integer(o->ttl_ms));
    return dump(obj, r);
}

static json_t *ack_head(const char *id, const char *gateway, int worker)
{
    json_t *obj = json_object();

    if (obj == NULL)
        return NULL;
    if (set_new(obj, "id", string_or_null(id)) < 0 ||
        set_new(obj, "gateway", string_or_null(gateway)) < 0 ||
        set_new(obj, "worker", json_integer(worker)) < 0) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

char *order_ack_json(const char *id, const char *gateway, int worker, size_t matched, size_t closed,
                     bool dry_run)
{
    json_t *obj = ack_head(id, gateway, worker);
    int r = obj == NULL ? -1 : 0;

    if (r == 0) {
        r |= set_new(obj, "matched", json_integer((json_int_t)matched));
        r |= set_new(obj, "closed", json_integer((json_int_t)closed));
        if (dry_run)
            r |= set_new(obj, "dry_run", json_true());
    }
    return dump(obj, r);
}

char *order_result_json(const struct order *o, const char *gateway, int worker, size_t matched,
                        size_t count, size_t other)
{
    json_t *obj = ack_head(o->id, gateway, worker);
    int r = obj == NULL ? -1 : 0;
    bool send = o->op == ORDER_OP_SEND;

    if (r == 0) {
        r |= set_new(obj, "matched", json_integer((json_int_t)matched));
        r |= set_new(obj,
                     send                     ? "sent"
                     : o->op == ORDER_OP_JOIN ? "joined"
                                              : "left",
                     json_integer((json_int_t)count));
        r |= set_new(obj, send ? "dropped" : "refused", json_integer((json_int_t)other));
        if (o->dry_run)
            r |= set_new(obj, "dry_run", json_true());
    }
    return dump(obj, r);
}

char *order_nack_json(const char *id, const char *gateway, int worker, const char *error)
{
    json_t *obj = ack_head(id, gateway, worker);
    int r = obj == NULL ? -1 : 0;

    if (r == 0)
        r = set_new(obj, "error", json_string(error));
    return dump(obj, r);
}

/*
 * A refused order's text made parseable again for order_peek(): bytes that are not
 * UTF-8 become '?', and \u escapes JSON parsers refuse (NUL, lone surrogates) become
 * \u003f. Lengths do not change. Returns a malloc'd NUL-terminated copy, or NULL.
 */
static char *peek_sanitize(const char *buf, size_t len)
{
    char *s = malloc(len + 1);
    size_t i = 0;
    bool in_string = false;

    if (s == NULL)
        return NULL;
    memcpy(s, buf, len);
    s[len] = '\0';
    while (i < len) {
        uint8_t ch = (uint8_t)s[i];
        if (ch >= 0x80) {
            size_t n = 1, bad_at = 0;
            uint32_t st = UTF8_ACCEPT;
            /* The longest valid sequence from here, or one bad byte. */
            while (i + n <= len) {
                st = utf8_feed(st, (const uint8_t *)s + i + n - 1, 1, &bad_at);
                if (st == UTF8_ACCEPT || st == UTF8_REJECT || n == 4)
                    break;
                n++;
            }
            if (st != UTF8_ACCEPT) {
                s[i++] = '?';
                continue;
            }
            i += n;
            continue;
        }
        if (ch == '"') {
            in_string = !in_string;
        } else if (in_string && ch == '\\' && i + 1 < len) {
            if (s[i + 1] == 'u' && i + 6 <= len) {
                unsigned v = 0;
                bool hex = true;
                for (size_t k = i + 2; k < i + 6; k++) {
                    int d = text_hex_value((unsigned char)s[k]);
                    hex = hex && d >= 0;
                    v = v * 16 + (unsigned)(d >= 0 ? d : 0);
                }
                bool high = v >= 0xd800 && v <= 0xdbff, low = v >= 0xdc00 && v <= 0xdfff;
                bool paired = high && i + 12 <= len && s[i + 6] == '\\' && s[i + 7] == 'u' &&
                              (s[i + 8] == 'd' || s[i + 8] == 'D') &&
                              strchr("cdefCDEF", s[i + 9]) != NULL;
                if (hex && (v == 0 || low || (high && !paired)))
                    memcpy(s + i + 2, "003f", 4);
                i += hex && high && paired ? 12 : 6;
                continue;
            }
            i += 2;
            continue;
        }
        i++;
    }
    return s;
}

static char *peek_string(json_t *root, const char *field)
{
    const char *v = json_string_value(json_object_get(root, field));

    return v != NULL && v[0] != '\0' && strlen(v) <= ORDER_STRING_MAX ? strdup(v) : NULL;
}

void order_peek(const char *buf, size_t len, struct order_peek *p)
{
    char *text;
    json_t *root;

    memset(p, 0, sizeof(*p));
    if (len > ORDER_PEEK_MAX_BYTES)
        return;
    text = peek_sanitize(buf, len);
    if (text == NULL)
        return;
    root = json_loadb(text, len, JSON_ALLOW_NUL, NULL);
    free(text);
    if (json_is_object(root)) {
        p->id = peek_string(root, "id");
        p->reply_to = peek_string(root, "reply_to");
        p->gateway = peek_string(root, "gateway");
    }
    json_decref(root);
}

void order_peek_cleanup(struct order_peek *p)
{
    free(p->id);
    free(p->reply_to);
    free(p->gateway);
    memset(p, 0, sizeof(*p));
}
