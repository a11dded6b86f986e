#include <stdlib.h>
#include <string.h>

#include "common/order.h"
#include "tests/unit/check.h"

/* Each text is parsed from a buffer that ends exactly at its allocation, no NUL. */
static int parse(const char *text, size_t len, struct order *o, struct order_error *err)
{
    char *buf = malloc(len > 0 ? len : 1);
    int r;

    if (buf == NULL)
        return -2;
    memcpy(buf, text, len);
    r = order_parse(buf, len, o, err);
    free(buf);
    return r;
}

static bool order_is_empty(const struct order *o)
{
    return o->id == NULL && o->names == NULL && o->nnames == 0 && o->except == NULL &&
           o->nexcept == 0 && o->gateway == NULL && o->reply_to == NULL;
}

/* The error key of a refused order, or "accepted". */
static const char *refusal_n(const char *text, size_t len)
{
    struct order_error err = {0};
    struct order o;

    if (parse(text, len, &o, &err) == 0) {
        order_cleanup(&o);
        return "accepted";
    }
    CHECK(order_is_empty(&o));
    CHECK(err.key != NULL && err.text[0] != '\0');
    return err.key != NULL ? err.key : "(null)";
}

static const char *refusal(const char *text)
{
    return refusal_n(text, strlen(text));
}

static const struct {
    const char *text;
    const char *key;
} refusals[] = {
    {"{\"op\":\"send\",\"all\":true}", "payload"},
    {"{\"op\":\"send\",\"all\":true,\"text\":\"a\",\"binary\":\"YQ==\"}", "payload"},
    {"{\"op\":\"send\",\"all\":true,\"text\":5}", "type"},
    {"{\"op\":\"send\",\"all\":true,\"text\":null}", "type"},
    {"{\"op\":\"send\",\"all\":true,\"binary\":\"YQ\"}", "payload"},
    {"{\"op\":\"send\",\"all\":true,\"binary\":\"Y Q==\"}", "payload"},
    {"{\"op\":\"send\",\"all\":true,\"binary\":[]}", "type"},
    {"{\"op\":\"send\",\"text\":\"a\"}", "target"},
    {"{\"op\":\"send\",\"all\":true,\"text\":\"a\",\"code\":4000}", "op"},
    {"{\"op\":\"send\",\"all\":true,\"text\":\"a\",\"reason\":\"r\"}", "op"},
    {"{\"op\":\"send\",\"all\":true,\"text\":\"a\",\"spread_ms\":5}", "op"},
    {"{\"op\":\"send\",\"all\":true,\"text\":\"a\",\"groups\":[\"g\"]}", "op"},
    {"{\"all\":true,\"text\":\"a\"}", "op"},
    {"{\"all\":true,\"binary\":\"YQ==\"}", "op"},
    {"{\"all\":true,\"groups\":[\"g\"]}", "op"},
    {"{\"op\":\"join\",\"all\":true}", "groups"},
    {"{\"op\":\"join\",\"all\":true,\"groups\":[]}", "groups"},
    {"{\"op\":\"join\",\"all\":true,\"groups\":\"g\"}", "type"},
    {"{\"op\":\"join\",\"all\":true,\"groups\":[\"g\",1]}", "type"},
    {"{\"op\":\"join\",\"all\":true,\"groups\":[\"\"]}", "groups"},
    {"{\"op\":\"join\",\"all\":true,\"groups\":[\"a\\nb\"]}", "groups"},
    {"{\"op\":\"leave\",\"all\":true,\"groups\":[\"a\\u0000b\"]}", "groups"},
    {"{\"op\":\"leave\",\"groups\":[\"g\"]}", "target"},
    {"{\"op\":\"leave\",\"all\":true,\"groups\":[\"g\"],\"code\":4000}", "op"},
    {"{\"op\":\"kick\",\"all\":true}", "op"},
    {"{\"conn\":\"a\",\"ttl_ms\":1000}", "ttl"},
    {"{\"all\":true,\"ttl_ms\":1000}", "ttl"},
    {"{\"group\":\"g\",\"ttl_ms\":86400001}", "ttl"},
    {"{\"group\":\"g\",\"ttl_ms\":-1}", "ttl"},
    {"{\"group\":\"g\",\"ttl_ms\":1.5}", "type"},
    {"{\"group\":\"g\",\"ttl_ms\":null}", "type"},
    {"{\"op\":\"send\",\"group\":\"g\",\"text\":\"a\",\"ttl_ms\":5}", "op"},
    {"{\"op\":\"unban\",\"conn\":\"a\"}", "target"},
    {"{\"op\":\"unban\",\"all\":true}", "target"},
    {"{\"op\":\"unban\",\"group\":\"g\",\"ttl_ms\":5}", "op"},
    {"{\"op\":\"unban\",\"group\":\"g\",\"code\":4000}", "op"},
    {"{\"op\":\"unban\",\"group\":\"g\",\"dry_run\":true}", "op"},
    {"", "json"},
    {"{", "json"},
    {"{\"all\":true}x", "json"},
    {"{\"conn\":\"a\",\"conn\":\"b\"}", "json"},
    {"{\"all\":true,\"reason\":\"\xff\"}", "json"},
    {"{\"all\":true,\"reason\":\"\\ud800\"}", "json"},
    {"{\"all\":true,\"code\":99999999999999999999}", "json"},
    {"[]", "type"},
    {"\"close\"", "type"},
    {"null", "type"},
    {"{}", "target"},
    {"{\"id\":\"o1\"}", "target"},
    {"{\"conn\":\"a\",\"group\":\"g\"}", "target"},
    {"{\"conn\":\"a\",\"all\":true}", "target"},
    {"{\"group\":\"g\",\"all\":true}", "target"},
    {"{\"all\":false}", "target"},
    {"{\"all\":1}", "type"},
    {"{\"all\":\"true\"}", "type"},
    {"{\"all\":null}", "type"},
    {"{\"conn\":\"\"}", "target"},
    {"{\"conn\":[]}", "target"},
    {"{\"conn\":[\"a\",\"\"]}", "target"},
    {"{\"conn\":\"a\\u0000b\"}", "target"},
    {"{\"conn\":[\"a\",1]}", "type"},
    {"{\"conn\":[\"a\",[\"b\"]]}", "type"},
    {"{\"conn\":5}", "type"},
    {"{\"conn\":null}", "type"},
    {"{\"group\":{}}", "type"},
    {"{\"all\":true,\"except\":[]}", "target"},
    {"{\"all\":true,\"except\":\"\"}", "target"},
    {"{\"all\":true,\"except\":7}", "type"},
    {"{\"op\":\"kill\",\"all\":true}", "op"},
    {"{\"op\":\"Close\",\"all\":true}", "op"},
    {"{\"op\":1,\"all\":true}", "type"},
    {"{\"all\":true,\"code\":0}", "code"},
    {"{\"all\":true,\"code\":-1}", "code"},
    {"{\"all\":true,\"code\":999}", "code"},
    {"{\"all\":true,\"code\":1004}", "code"},
    {"{\"all\":true,\"code\":1005}", "code"},
    {"{\"all\":true,\"code\":1006}", "code"},
    {"{\"all\":true,\"code\":1010}", "code"},
    {"{\"all\":true,\"code\":1015}", "code"},
    {"{\"all\":true,\"code\":1016}", "code"},
    {"{\"all\":true,\"code\":2999}", "code"},
    {"{\"all\":true,\"code\":5000}", "code"},
    {"{\"all\":true,\"code\":4294968296}", "code"}, /* 1000 + 2^32 */
    {"{\"all\":true,\"code\":\"4000\"}", "type"},
    {"{\"all\":true,\"code\":4000.0}", "type"},
    {"{\"all\":true,\"code\":1e3}", "type"},
    {"{\"all\":true,\"reason\":5}", "type"},
    {"{\"all\":true,\"reason\":null}", "type"},
    {"{\"all\":true,\"reason\":\"a\\u0000b\"}", "reason"},
    {"{\"all\":true,\"reason\":\"\\u0000\"}", "reason"},
    {"{\"all\":true,\"spread_ms\":-1}", "spread"},
    {"{\"all\":true,\"spread_ms\":3600001}", "spread"},
    {"{\"all\":true,\"spread_ms\":\"5\"}", "type"},
    {"{\"all\":true,\"spread_ms\":1.5}", "type"},
    {"{\"all\":true,\"max_affected\":-1}", "max_affected"},
    {"{\"all\":true,\"max_affected\":true}", "type"},
    {"{\"all\":true,\"dry_run\":1}", "type"},
    {"{\"all\":true,\"dry_run\":\"yes\"}", "type"},
    {"{\"all\":true,\"id\":\"\"}", "id"},
    {"{\"all\":true,\"id\":5}", "type"},
    {"{\"all\":true,\"id\":\"a\\u0000\"}", "id"},
    {"{\"all\":true,\"gateway\":\"\"}", "gateway"},
    {"{\"all\":true,\"gateway\":[\"gw1\"]}", "type"},
    {"{\"all\":true,\"reply_to\":\"\"}", "reply_to"},
    {"{\"all\":true,\"reply_to\":[]}", "type"},
    {"{\"op\":\"drain\"}", "gateway"},
    {"{\"op\":\"drain\",\"reason\":\"bye\"}", "gateway"},
    {"{\"op\":\"drain\",\"gateway\":\"gw1\",\"all\":true}", "target"},
    {"{\"op\":\"drain\",\"gateway\":\"gw1\",\"conn\":\"a\"}", "target"},
    {"{\"op\":\"drain\",\"gateway\":\"gw1\",\"except\":\"a\"}", "target"},
    {"{\"op\":\"drain\",\"gateway\":\"gw1\",\"code\":4000}", "code"},
    {"{\"op\":\"drain\",\"gateway\":\"gw1\",\"dry_run\":true}", "op"},
    {"{\"op\":\"drain\",\"gateway\":\"gw1\",\"max_affected\":3}", "op"},
    {"{\"op\":\"drain\",\"gateway\":\"gw1\",\"spread_ms\":3600001}", "spread"},
};

static void test_order_refuses_table(void)
{
    for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
        const char *key = refusal(refusals[i].text);

        if (strcmp(key, refusals[i].key) != 0)
            fprintf(stderr, "  order %s: got %s, want %s\n", refusals[i].text, key,
                    refusals[i].key);
        CHECK(strcmp(key, refusals[i].key) == 0);
    }
}

static void test_order_accepts_sendable_codes(void)
{
    static const unsigned codes[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009,
                                     1011, 1012, 1013, 1014, 3000, 4000, 4999};
    char text[64];

    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        struct order_error err;
        struct order o;

        snprintf(text, sizeof(text), "{\"all\":true,\"code\":%u}", codes[i]);
        CHECK(parse(text, strlen(text), &o, &err) == 0);
        CHECK(o.code == codes[i]);
        order_cleanup(&o);
    }
}

static void test_order_close_defaults(void)
{
    const char *text = "{\"conn\":\"c1\"}";
    struct order_error err;
    struct order o;

    CHECK(parse(text, strlen(text), &o, &err) == 0);
    CHECK(o.op == ORDER_OP_CLOSE && o.target == ORDER_TARGET_CONN);
    CHECK(o.nnames == 1 && strcmp(o.names[0], "c1") == 0);
    CHECK(o.except == NULL && o.nexcept == 0);
    CHECK(o.id == NULL && o.gateway == NULL && o.reply_to == NULL);
    CHECK(o.code == 1000);
    CHECK(o.reason_len == 0 && o.reason[0] == '\0' && !o.reason_cut);
    CHECK(o.spread_ms == 0 && !o.dry_run && o.max_affected == -1);
    order_cleanup(&o);
    CHECK(order_is_empty(&o));
    order_cleanup(&o); /* twice is harmless */
}

static void test_order_conn_array_with_except(void)
{
    const char *text = "{\"op\":\"close\",\"conn\":[\"c1\",\"c2\"],\"except\":\"c3\"}";
    struct order_error err;
    struct order o;

    CHECK(parse(text, strlen(text), &o, &err) == 0);
    CHECK(o.target == ORDER_TARGET_CONN && o.nnames == 2);
    CHECK(strcmp(o.names[0], "c1") == 0 && strcmp(o.names[1], "c2") == 0);
    CHECK(o.nexcept == 1 && strcmp(o.except[0], "c3") == 0);
    order_cleanup(&o);
}

static void test_order_group_forms(void)
{
    const char *one = "{\"group\":\"room:7\"}";
    const char *many = "{\"group\":[\"g1\",\"g2\",\"g3\"],\"except\":[\"c1\",\"c2\"]}";
    struct order_error err;
    struct order o;

    CHECK(parse(one, strlen(one), &o, &err) == 0);
    CHECK(o.target == ORDER_TARGET_GROUP && o.nnames == 1);
    CHECK(strcmp(o.names[0], "room:7") == 0);
    order_cleanup(&o);
    CHECK(parse(many, strlen(many), &o, &err) == 0);
    CHECK(o.target == ORDER_TARGET_GROUP && o.nnames == 3 && o.nexcept == 2);
    CHECK(strcmp(o.names[2], "g3") == 0 && strcmp(o.except[1], "c2") == 0);
    order_cleanup(&o);
}

static void test_order_all_with_every_field(void)
{
    const char *text =
        "{\"id\":\"o1\",\"all\":true,\"gateway\":\"gw1\",\"code\":4000,"
        "\"reason\":\"bye\",\"spread_ms\":3600000,\"reply_to\":\"wsgate:orders:ack:o1\","
        "\"dry_run\":true,\"max_affected\":0}";
    struct order_error err;
    struct order o;

    CHECK(parse(text, strlen(text), &o, &err) == 0);
    CHECK(o.target == ORDER_TARGET_ALL && o.names == NULL && o.nnames == 0);
    CHECK(strcmp(o.id, "o1") == 0 && strcmp(o.gateway, "gw1") == 0);
    CHECK(strcmp(o.reply_to, "wsgate:orders:ack:o1") == 0);
    CHECK(o.code == 4000 && o.reason_len == 3 && strcmp(o.reason, "bye") == 0);
    CHECK(o.spread_ms == 3600000 && o.dry_run && o.max_affected == 0);
    order_cleanup(&o);
}

static void test_order_drain(void)
{
    const char *bare = "{\"op\":\"drain\",\"gateway\":\"gw1\"}";
    const char *full = "{\"op\":\"drain\",\"gateway\":\"gw1\",\"reason\":\"upgrade\","
                       "\"spread_ms\":30000,\"code\":1001,\"id\":\"d1\"}";
    struct order_error err;
    struct order o;

    CHECK(parse(bare, strlen(bare), &o, &err) == 0);
    CHECK(o.op == ORDER_OP_DRAIN && o.target == ORDER_TARGET_NONE);
    CHECK(o.code == 1001 && o.reason_len == 0 && o.spread_ms == 0);
    CHECK(strcmp(o.gateway, "gw1") == 0);
    order_cleanup(&o);
    CHECK(parse(full, strlen(full), &o, &err) == 0);
    CHECK(o.op == ORDER_OP_DRAIN && o.code == 1001 && o.spread_ms == 30000);
    CHECK(strcmp(o.reason, "upgrade") == 0 && strcmp(o.id, "d1") == 0);
    order_cleanup(&o);
}

static void test_order_ignores_unknown_fields(void)
{
    CHECK(strcmp(refusal("{\"all\":true,\"foo\":{\"bar\":[1,null]},\"x\":null,\"Code\":1}"),
                 "accepted") == 0);
    CHECK(strcmp(refusal("{\"op\":\"drain\",\"gateway\":\"g\",\"priority\":\"high\"}"),
                 "accepted") == 0);
}

static void test_order_name_and_string_lengths(void)
{
    char name[ORDER_NAME_MAX + 2];
    char id[ORDER_STRING_MAX + 2];
    char text[512];

    memset(name, 'n', sizeof(name) - 1);
    name[ORDER_NAME_MAX] = '\0';
    snprintf(text, sizeof(text), "{\"conn\":[\"a\",\"%s\"]}", name);
    CHECK(strcmp(refusal(text), "accepted") == 0);
    snprintf(text, sizeof(text), "{\"all\":true,\"except\":\"%s\"}", name);
    CHECK(strcmp(refusal(text), "accepted") == 0);
    name[ORDER_NAME_MAX] = 'n';
    name[ORDER_NAME_MAX + 1] = '\0';
    snprintf(text, sizeof(text), "{\"conn\":[\"a\",\"%s\"]}", name);
    CHECK(strcmp(refusal(text), "target") == 0);
    snprintf(text, sizeof(text), "{\"group\":\"%s\"}", name);
    CHECK(strcmp(refusal(text), "target") == 0);

    memset(id, 'i', sizeof(id) - 1);
    id[ORDER_STRING_MAX] = '\0';
    snprintf(text, sizeof(text), "{\"all\":true,\"id\":\"%s\"}", id);
    CHECK(strcmp(refusal(text), "accepted") == 0);
    id[ORDER_STRING_MAX] = 'i';
    id[ORDER_STRING_MAX + 1] = '\0';
    snprintf(text, sizeof(text), "{\"all\":true,\"id\":\"%s\"}", id);
    CHECK(strcmp(refusal(text), "id") == 0);
    snprintf(text, sizeof(text), "{\"all\":true,\"gateway\":\"%s\"}", id);
    CHECK(strcmp(refusal(text), "gateway") == 0);
    snprintf(text, sizeof(text), "{\"all\":true,\"reply_to\":\"%s\"}", id);
    CHECK(strcmp(refusal(text), "reply_to") == 0);
}

/* {"conn":["a",...] (nconn names),"except":["a",...] (nexcept)}: malloc'd text. */
static char *many_targets(size_t nconn, size_t nexcept)
{
    char *text = malloc(32 + 4 * (nconn + nexcept));
    char *p = text;

    if (text == NULL)
        return NULL;
    p += sprintf(p, "{\"conn\":[");
    for (size_t i = 0; i < nconn; i++)
        p += sprintf(p, "%s\"a\"", i > 0 ? "," : "");
    p += sprintf(p, "]");
    if (nexcept > 0) {
        p += sprintf(p, ",\"except\":[");
        for (size_t i = 0; i < nexcept; i++)
            p += sprintf(p, "%s\"b\"", i > 0 ? "," : "");
        p += sprintf(p, "]");
    }
    sprintf(p, "}");
    return text;
}

static void test_order_target_limit(void)
{
    static const size_t cases[][3] = {
        /* conn, except, accepted */
        {ORDER_MAX_TARGETS, 0, 1}, {ORDER_MAX_TARGETS + 1, 0, 0}, {5000, 5000, 1},
        {5000, 5001, 0},           {1, ORDER_MAX_TARGETS, 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *text = many_targets(cases[i][0], cases[i][1]);

        CHECK(text != NULL && strlen(text) <= ORDER_MAX_BYTES);
        if (text == NULL)
            continue;
        CHECK(strcmp(refusal(text), cases[i][2] ? "accepted" : "too_many") == 0);
        free(text);
    }
}

static void test_order_size_limit(void)
{
    const char *head = "{\"all\":true}";
    size_t len = ORDER_MAX_BYTES + 1;
    char *text = malloc(len);

    CHECK(text != NULL);
    if (text == NULL)
        return;
    memset(text, ' ', len); /* JSON allows trailing white space */
    memcpy(text, head, strlen(head));
    CHECK(strcmp(refusal_n(text, ORDER_MAX_BYTES), "accepted") == 0);
    CHECK(strcmp(refusal_n(text, ORDER_MAX_BYTES + 1), "too_big") == 0);
    free(text);
}

static void check_reason(const char *reason, size_t want_len, bool want_cut)
{
    char text[1024];
    struct order_error err;
    struct order o;

    snprintf(text, sizeof(text), "{\"all\":true,\"reason\":\"%s\"}", reason);
    CHECK(parse(text, strlen(text), &o, &err) == 0);
    CHECK(o.reason_len == want_len && o.reason_cut == want_cut);
    CHECK(strlen(o.reason) == want_len && memcmp(o.reason, reason, want_len) == 0);
    order_cleanup(&o);
}

static void test_order_reason_cut(void)
{
    static const char emoji[] = "\xf0\x9f\x98\x80"; /* U+1F600, 4 bytes */
    char reason[512];

    memset(reason, 'r', 300);
    reason[300] = '\0';
    check_reason(reason, 123, true);
    reason[123] = '\0';
    check_reason(reason, 123, false);
    reason[122] = '\0';
    check_reason(reason, 122, false);

    for (size_t i = 0; i < 150; i++)
        memcpy(reason + 2 * i, "\xc3\xa9", 2); /* é: 300 bytes, cut after 61 of them */
    reason[300] = '\0';
    check_reason(reason, 122, true);

    /* The emoji covers bytes 120..123, 121..124, 122..125: only whole code points stay. */
    for (size_t at = 119; at <= 122; at++) {
        memset(reason, 'a', at);
        memcpy(reason + at, emoji, 4);
        memcpy(reason + at + 4, "tail", 5);
        check_reason(reason, at == 119 ? 123 : at, true);
    }

    check_reason("服务端维护中,请稍后重连", strlen("服务端维护中,请稍后重连"), false);
}

static void test_order_set_reason(void)
{
    struct order_error err;
    struct order o;

    order_init(&o);
    CHECK(order_set_reason(&o, "maintenance", 11, &err) == 0);
    CHECK(o.reason_len == 11 && strcmp(o.reason, "maintenance") == 0 && !o.reason_cut);
    CHECK(order_set_reason(&o, "bad \xc0\xaf", 6, &err) == -1);
    CHECK(strcmp(err.key, "reason") == 0);
    CHECK(order_set_reason(&o, "a\0b", 3, &err) == -1);
    CHECK(strcmp(err.key, "reason") == 0);
    CHECK(order_set_reason(&o, "\xe4\xb8", 2, &err) == -1); /* ends mid-sequence */
    CHECK(o.reason_len == 11 && strcmp(o.reason, "maintenance") == 0);
}

static void check_same(const struct order *a, const struct order *b)
{
    CHECK(a->op == b->op && a->target == b->target && a->code == b->code);
    CHECK((a->id == NULL) == (b->id == NULL) && (a->id == NULL || !strcmp(a->id, b->id)));
    CHECK((a->gateway == NULL) == (b->gateway == NULL));
    CHECK(a->gateway == NULL || strcmp(a->gateway, b->gateway) == 0);
    CHECK((a->reply_to == NULL) == (b->reply_to == NULL));
    CHECK(a->reply_to == NULL || strcmp(a->reply_to, b->reply_to) == 0);
    CHECK(a->reason_len == b->reason_len && memcmp(a->reason, b->reason, a->reason_len) == 0);
    CHECK(a->spread_ms == b->spread_ms && a->dry_run == b->dry_run);
    CHECK(a->max_affected == b->max_affected);
    CHECK(a->nnames == b->nnames && a->nexcept == b->nexcept);
    for (size_t i = 0; i < a->nnames && i < b->nnames; i++)
        CHECK(strcmp(a->names[i], b->names[i]) == 0);
    for (size_t i = 0; i < a->nexcept && i < b->nexcept; i++)
        CHECK(strcmp(a->except[i], b->except[i]) == 0);
    CHECK(a->binary == b->binary && a->payload_len == b->payload_len);
    CHECK(a->payload_len == 0 || memcmp(a->payload, b->payload, a->payload_len) == 0);
    CHECK(a->ngroups == b->ngroups);
    CHECK(a->ttl_ms == b->ttl_ms);
    for (size_t i = 0; i < a->ngroups && i < b->ngroups; i++)
        CHECK(strcmp(a->groups[i], b->groups[i]) == 0);
}

static void test_order_round_trip(void)
{
    static const char *const texts[] = {
        "{\"op\":\"send\",\"group\":\"room:1\",\"text\":\"héllo \\u0000 \\\"x\\\"\"}",
        "{\"op\":\"send\",\"conn\":[\"c1\"],\"binary\":\"AAEC/w==\",\"reply_to\":\"r\","
        "\"dry_run\":true,\"max_affected\":3,\"except\":\"c2\"}",
        "{\"op\":\"send\",\"all\":true,\"text\":\"\"}",
        "{\"op\":\"send\",\"all\":true,\"binary\":\"\"}",
        "{\"op\":\"join\",\"conn\":\"c1\",\"groups\":[\"room:1\",\"user:alice\"]}",
        "{\"op\":\"leave\",\"group\":\"g\",\"groups\":[\"g\"],\"id\":\"l1\"}",
        "{\"conn\":\"c1\"}",
        "{\"conn\":[\"c1\",\"c2\"],\"except\":\"c3\",\"code\":4001,\"reason\":\"服务端维护中\"}",
        "{\"group\":[\"g1\",\"g2\"],\"except\":[\"c1\"],\"spread_ms\":500,\"max_affected\":7}",
        "{\"id\":\"o1\",\"all\":true,\"gateway\":\"gw1\",\"code\":3000,\"reason\":\"a\\\"b\\\\\","
        "\"spread_ms\":3600000,\"reply_to\":\"ch:ack:o1\",\"dry_run\":true,\"max_affected\":0}",
        "{\"op\":\"drain\",\"gateway\":\"gw2\",\"reason\":\"deploy\",\"spread_ms\":1000,"
        "\"id\":\"d\",\"reply_to\":\"r\"}",
        "{\"op\":\"drain\",\"gateway\":\"gw2\"}",
        "{\"group\":\"user:alice\",\"code\":4403,\"reason\":\"revoked\",\"ttl_ms\":86400000,"
        "\"ts\":1700000000000,\"id\":\"b1\"}",
        "{\"op\":\"unban\",\"group\":[\"user:alice\",\"room:1\"],\"id\":\"u1\"}",
    };

    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        struct order_error err;
        struct order a, b;
        char *json, *again;

        CHECK(parse(texts[i], strlen(texts[i]), &a, &err) == 0);
        json = order_to_json(&a);
        CHECK(json != NULL);
        if (json == NULL) {
            order_cleanup(&a);
            continue;
        }
        CHECK(parse(json, strlen(json), &b, &err) == 0);
        check_same(&a, &b);
        again = order_to_json(&b);
        CHECK(again != NULL && strcmp(json, again) == 0);
        free(again);
        free(json);
        order_cleanup(&a);
        order_cleanup(&b);
    }
}

static void test_order_round_trip_of_cut_reason(void)
{
    char text[512], reason[301];
    struct order_error err;
    struct order a, b;
    char *json;

    memset(reason, 'x', 300);
    reason[300] = '\0';
    snprintf(text, sizeof(text), "{\"all\":true,\"reason\":\"%s\"}", reason);
    CHECK(parse(text, strlen(text), &a, &err) == 0 && a.reason_cut);
    json = order_to_json(&a);
    CHECK(json != NULL && parse(json, strlen(json), &b, &err) == 0);
    CHECK(b.reason_len == 123 && !b.reason_cut);
    free(json);
    order_cleanup(&a);
    order_cleanup(&b);
}

static void test_order_to_json_of_built_order(void)
{
    char c1[] = "c1", c2[] = "c2";
    char *names[] = {c1, c2};
    struct order_error err;
    struct order o, back;
    char *json;

    order_init(&o);
    o.target = ORDER_TARGET_CONN;
    o.names = names;
    o.nnames = 2;
    o.code = 4000;
    CHECK(order_set_reason(&o, "bye", 3, &err) == 0);
    json = order_to_json(&o);
    CHECK(json != NULL && strcmp(json, "{\"op\":\"close\",\"conn\":[\"c1\",\"c2\"],\"code\":4000,"
                                       "\"reason\":\"bye\",\"spread_ms\":0}") == 0);
    CHECK(json != NULL && parse(json, strlen(json), &back, &err) == 0);
    check_same(&o, &back);
    order_cleanup(&back);
    free(json);

    o.code = 1005; /* the re-parse applies the rules a hand-built order skipped */
    json = order_to_json(&o);
    CHECK(json != NULL && parse(json, strlen(json), &back, &err) == -1);
    CHECK(strcmp(err.key, "code") == 0 && strstr(err.text, "1005") != NULL);
    free(json);

    /* One group is a string, which the group's own channel takes too. */
    o.code = 4000;
    o.target = ORDER_TARGET_GROUP;
    o.nnames = 1;
    json = order_to_json(&o);
    CHECK(json != NULL && strstr(json, "\"group\":\"c1\",") != NULL);
    {
        struct order_limits lim = {ORDER_SEND_MAX_DEFAULT, "c1"};
        CHECK(json != NULL && order_parse_with(json, strlen(json), &lim, &back, &err) == 0);
        check_same(&o, &back);
        CHECK(back.group_named);
        order_cleanup(&back);
    }
    free(json);
}

static void test_order_acks(void)
{
    char *s;

    s = order_ack_json("o1", "gw1", 2, 5, 3, false);
    CHECK(s != NULL && strcmp(s, "{\"id\":\"o1\",\"gateway\":\"gw1\",\"worker\":2,\"matched\":5,"
                                 "\"closed\":3}") == 0);
    free(s);
    s = order_ack_json("o1", "gw1", 1, 9, 9, true);
    CHECK(s != NULL && strstr(s, ",\"dry_run\":true}") != NULL);
    free(s);
    s = order_ack_json(NULL, "gw1", 1, 0, 0, false);
    CHECK(s != NULL && strncmp(s, "{\"id\":null,", 11) == 0);
    free(s);
    s = order_nack_json("o2", "gw2", 3, "code: 1005 may not be sent");
    CHECK(s != NULL && strcmp(s, "{\"id\":\"o2\",\"gateway\":\"gw2\",\"worker\":3,"
                                 "\"error\":\"code: 1005 may not be sent\"}") == 0);
    free(s);
}

static void test_order_peek_reads_routing_fields_of_refused_orders(void)
{
    static const struct {
        const char *text;
        const char *id;
        const char *reply_to;
        const char *gateway;
    } cases[] = {
        {"{\"id\":\"a\",\"reply_to\":\"acks\",\"reason\":\"x\\u0000y\"}", "a", "acks", NULL},
        {"{\"id\":\"b\",\"reply_to\":\"acks\",\"reason\":\"\xff\xfe\"}", "b", "acks", NULL},
        {"{\"id\":\"c\",\"reply_to\":\"r\",\"reason\":\"ok \xe6\x9c\"}", "c", "r", NULL},
        {"{\"id\":\"d\",\"reply_to\":\"r\",\"reason\":\"\\ud800x\"}", "d", "r", NULL},
        {"{\"id\":\"e\",\"gateway\":\"gw2\",\"reason\":\"\\udc00\"}", "e", NULL, "gw2"},
        {"{\"id\":\"f\",\"reason\":\"\\ud83d\\ude00\",\"code\":1005}", "f", NULL, NULL},
        {"not json", NULL, NULL, NULL},
        {"[1,2]", NULL, NULL, NULL},
        {"{\"id\":7,\"reply_to\":\"\"}", NULL, NULL, NULL},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = strlen(cases[i].text);
        char *buf = malloc(len); /* ends exactly at its allocation */
        struct order_peek p;

        memcpy(buf, cases[i].text, len);
        order_peek(buf, len, &p);
        CHECK(cases[i].id == NULL ? p.id == NULL : p.id != NULL && strcmp(p.id, cases[i].id) == 0);
        CHECK(cases[i].reply_to == NULL
                  ? p.reply_to == NULL
                  : p.reply_to != NULL && strcmp(p.reply_to, cases[i].reply_to) == 0);
        CHECK(cases[i].gateway == NULL
                  ? p.gateway == NULL
                  : p.gateway != NULL && strcmp(p.gateway, cases[i].gateway) == 0);
        order_peek_cleanup(&p);
        free(buf);
    }
}

static void test_order_send_payloads(void)
{
    static const char bin[] = "{\"op\":\"send\",\"all\":true,\"binary\":\"AAEC/w==\"}";
    static const char txt[] = "{\"op\":\"send\",\"conn\":\"c\",\"text\":\"a\\u0000\\u00e9\"}";
    struct order_error err;
    struct order o;

    CHECK(parse(bin, sizeof(bin) - 1, &o, &err) == 0);
    CHECK(o.op == ORDER_OP_SEND && o.binary && o.payload_len == 4);
    CHECK(o.payload != NULL && memcmp(o.payload, "\x00\x01\x02\xff", 4) == 0);
    order_cleanup(&o);
    CHECK(parse(txt, sizeof(txt) - 1, &o, &err) == 0);
    CHECK(!o.binary && o.payload_len == 4 && memcmp(o.payload, "a\0\xc3\xa9", 4) == 0);
    order_cleanup(&o);
}

/* --max-send counts decoded bytes; the text of a send may pass 64 KiB, others may not. */
static void test_order_send_size_limits(void)
{
    struct order_limits lim = {100, NULL};
    size_t n = 200000;
    char *text = malloc(n + 64), *b64 = malloc(n + 64);
    struct order_error err;
    struct order o;
    int len;

    CHECK(text != NULL && b64 != NULL);
    if (text == NULL || b64 == NULL)
        goto out;
    /* 100 bytes of text, each written as \u0001: 600 bytes of JSON, accepted */
    len = snprintf(text, n, "{\"op\":\"send\",\"all\":true,\"text\":\"");
    for (int i = 0; i < 100; i++)
        len += snprintf(text + len, n - (size_t)len, "\\u0001");
    len += snprintf(text + len, n - (size_t)len, "\"}");
    CHECK(order_parse_with(text, (size_t)len, &lim, &o, &err) == 0 && o.payload_len == 100);
    order_cleanup(&o);
    /* 101 bytes: refused as payload */
    len = snprintf(text, n, "{\"op\":\"send\",\"all\":true,\"text\":\"%0101d\"}", 0);
    CHECK(order_parse_with(text, (size_t)len, &lim, &o, &err) == -1);
    CHECK(strcmp(err.key, "payload") == 0);
    /* binary: 75 base64 bytes decode to... 100 accepted, 102 refused */
    memset(b64, 'A', 136);
    len = snprintf(text, n, "{\"op\":\"send\",\"all\":true,\"binary\":\"%.*s\"}", 136, b64);
    CHECK(order_parse_with(text, (size_t)len, &lim, &o, &err) == -1 &&
          strcmp(err.key, "payload") == 0);
    len = snprintf(text, n, "{\"op\":\"send\",\"all\":true,\"binary\":\"%.*sAA==\"}", 132,
                   b64);
    CHECK(order_parse_with(text, (size_t)len, &lim, &o, &err) == 0 && o.payload_len == 100);
    order_cleanup(&o);
    /* A 1 MiB text under the default limits: over 64 KiB of order, fine for a send. */
    lim.max_send = ORDER_SEND_MAX_DEFAULT;
    len = snprintf(text, n, "{\"op\":\"send\",\"all\":true,\"text\":\"");
    memset(text + len, 'x', 150000);
    len += 150000;
    len += snprintf(text + len, n + 64 - (size_t)len, "\"}");
    CHECK(order_parse_with(text, (size_t)len, &lim, &o, &err) == 0 && o.payload_len == 150000);
    order_cleanup(&o);
    /* ... but not for a close order of that size */
    len = snprintf(text, n, "{\"all\":true,\"id\":\"x\",\"pad\":\"");
    memset(text + len, 'x', 150000);
    len += 150000;
    len += snprintf(text + len, n + 64 - (size_t)len, "\"}");
    CHECK(order_parse_with(text, (size_t)len, &lim, &o, &err) == -1 &&
          strcmp(err.key, "too_big") == 0);
    CHECK(order_max_text(&lim) == ORDER_MAX_BYTES + 6 * ORDER_SEND_MAX_DEFAULT);
    CHECK(order_parse_with(text, order_max_text(&lim) + 1, &lim, &o, &err) == -1 &&
          strcmp(err.key, "too_big") == 0);
out:
    free(text);
    free(b64);
}

/* On <channel>:group:NAME an order targets NAME; it may omit group, not name another. */
static void test_order_on_a_group_channel(void)
{
    struct order_limits lim = {ORDER_SEND_MAX_DEFAULT, "room:1"};
    static const struct {
        const char *text;
        const char *key; /* NULL: accepted */
    } cases[] = {
        {"{\"op\":\"send\",\"text\":\"hi\"}", NULL},
        {"{\"op\":\"send\",\"group\":\"room:1\",\"text\":\"hi\"}", NULL},
        {"{\"code\":4000,\"except\":[\"c1\"]}", NULL},
        {"{\"op\":\"join\",\"groups\":[\"room:2\"]}", NULL},
        {"{\"op\":\"send\",\"group\":\"room:2\",\"text\":\"hi\"}", "target"},
        {"{\"op\":\"send\",\"group\":[\"room:1\"],\"text\":\"hi\"}", "target"},
        {"{\"op\":\"send\",\"all\":true,\"text\":\"hi\"}", "target"},
        {"{\"conn\":\"c1\"}", "target"},
        {"{\"op\":\"drain\",\"gateway\":\"gw1\"}", "target"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct order_error err;
        struct order o;
        int r = order_parse_with(cases[i].text, strlen(cases[i].text), &lim, &o, &err);

        if (cases[i].key == NULL) {
            CHECK(r == 0 && o.target == ORDER_TARGET_GROUP && o.nnames == 1 &&
                  strcmp(o.names[0], "room:1") == 0);
            /* A signature covers the text, not the channel: say whether the text named it. */
            CHECK(r != 0 || o.group_named == (strstr(cases[i].text, "\"group\"") != NULL));
            if (r == 0)
                order_cleanup(&o);
        } else {
            CHECK(r == -1 && strcmp(err.key, cases[i].key) == 0);
        }
    }
}

static void test_order_results(void)
{
    struct order o;
    char *s;

    order_init(&o);
    o.op = ORDER_OP_SEND;
    o.id = (char *)"s1";
    s = order_result_json(&o, "gw1", 2, 5, 4, 1);
    CHECK(s != NULL && strcmp(s, "{\"id\":\"s1\",\"gateway\":\"gw1\",\"worker\":2,"
                                 "\"matched\":5,\"sent\":4,\"dropped\":1}") == 0);
    free(s);
    o.op = ORDER_OP_JOIN;
    o.dry_run = true;
    s = order_result_json(&o, "gw1", 1, 3, 0, 0);
    CHECK(s != NULL && strcmp(s, "{\"id\":\"s1\",\"gateway\":\"gw1\",\"worker\":1,"
                                 "\"matched\":3,\"joined\":0,\"refused\":0,\"dry_run\":true}") == 0);
    free(s);
    o.op = ORDER_OP_LEAVE;
    o.dry_run = false;
    s = order_result_json(&o, "gw1", 1, 3, 2, 1);
    CHECK(s != NULL && strstr(s, "\"left\":2,\"refused\":1}") != NULL);
    free(s);
}

void suite_order(void)
{
    test_order_send_payloads();
    test_order_send_size_limits();
    test_order_on_a_group_channel();
    test_order_results();
    test_order_peek_reads_routing_fields_of_refused_orders();
    test_order_refuses_table();
    test_order_accepts_sendable_codes();
    test_order_close_defaults();
    test_order_conn_array_with_except();
    test_order_group_forms();
    test_order_all_with_every_field();
    test_order_drain();
    test_order_ignores_unknown_fields();
    test_order_name_and_string_lengths();
    test_order_target_limit();
    test_order_size_limit();
    test_order_reason_cut();
    test_order_set_reason();
    test_order_round_trip();
    test_order_round_trip_of_cut_reason();
    test_order_to_json_of_built_order();
    test_order_acks();
}
