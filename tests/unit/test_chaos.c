/* Every allocation that common/ makes fails once, in turn: each call then fails cleanly
 * (an error it reports, nothing leaked, which ASan checks at exit) or succeeds with
 * the same result as without failures. */

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/order.h"
#include "common/redis_url.h"
#include "common/ws_hs.h"
#include "tests/unit/check.h"

static const char request[] = "GET /chat/room?group=a&group=b%20c&user=u+1&flag HTTP/1.1\r\n"
                              "Host: example.com\r\nUpgrade: websocket\r\n"
                              "Connection: keep-alive, Upgrade\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "Sec-WebSocket-Version: 13\r\n\r\n";

static void test_chaos_ws_hs_every_allocation_fails_cleanly(void)
{
    size_t len = sizeof(request) - 1;
    unsigned long n, failures = 0;

    for (n = 1;; n++) {
        uint8_t *buf = check_dup_exact(request, len);
        struct ws_hs h;
        ssize_t r;
        unsigned long used;

        ws_hs_init(&h, 8192);
        chaos_fail_at(n);
        for (size_t off = 0; off < len; off += 16) { /* bytes arrive in pieces */
            r = ws_hs_feed(&h, buf + off, len - off < 16 ? len - off : 16);
            if (r < 0 || h.status != 0)
                break;
        }
        used = chaos_allocations();
        chaos_fail_at(0);
        if (r < 0) {
            failures++;
            CHECK(h.status == 500);
        } else {
            CHECK(h.status == 101 && h.nparams == 4 && strcmp(h.path, "/chat/room") == 0);
        }
        ws_hs_cleanup(&h);
        free(buf);
        if (n > used)
            break; /* this run had no failure left to inject */
    }
    CHECK(failures > 0);
}

static const char order_text[] =
    "{\"id\":\"o1\",\"group\":[\"room:1\",\"room:2\"],\"except\":[\"gw-1-ab-3\",\"gw-2-ab-4\"],"
    "\"code\":4001,\"reason\":\"\\u670d\\u52a1 maintenance\",\"spread_ms\":100,"
    "\"reply_to\":\"acks\",\"gateway\":\"gw\",\"max_affected\":10,\"x\":[1,{\"y\":2}]}";

static void test_chaos_order_every_allocation_fails_cleanly(void)
{
    unsigned long n, failures = 0;

    json_set_alloc_funcs(chaos_json_malloc, free);
    for (n = 1;; n++) {
        struct order o;
        struct order_error err;
        struct order_peek peek;
        char *json = NULL, *ack = NULL;
        unsigned long used;
        int r;

        chaos_fail_at(n);
        r = order_parse(order_text, sizeof(order_text) - 1, &o, &err);
        if (r == 0) {
            json = order_to_json(&o);
            ack = order_ack_json(o.id, "gw", 1, 3, 3, false);
        }
        order_peek(order_text, sizeof(order_text) - 1, &peek);
        used = chaos_allocations();
        chaos_fail_at(0);
        if (r < 0) {
            failures++;
            CHECK(strcmp(err.key, "oom") == 0 || strcmp(err.key, "json") == 0);
        } else {
            CHECK(o.nnames == 2 && o.nexcept == 2 && o.code == 4001);
            CHECK(o.max_affected == 10 && strcmp(o.reply_to, "acks") == 0);
            order_cleanup(&o);
        }
        order_peek_cleanup(&peek);
        free(json);
        free(ack);
        if (n > used)
            break;
    }
    json_set_alloc_funcs(malloc, free);
    CHECK(failures > 0);
}

static const char send_text[] =
    "{\"op\":\"send\",\"id\":\"s1\",\"conn\":[\"c1\",\"c2\"],\"binary\":\"AAEC/w==\","
    "\"reply_to\":\"acks\"}";
static const char join_text[] =
    "{\"op\":\"join\",\"group\":\"room:1\",\"groups\":[\"a\",\"b\"],\"reply_to\":\"acks\"}";

/* Send and join orders own a payload and group names: every failure path frees them. */
static void test_chaos_send_and_join_every_allocation_fails_cleanly(void)
{
    const char *const texts[] = {send_text, join_text};

    json_set_alloc_funcs(chaos_json_malloc, free);
    for (size_t t = 0; t < 2; t++) {
        unsigned long n, failures = 0;
        for (n = 1;; n++) {
            struct order o;
            struct order_error err;
            char *json = NULL, *res = NULL;
            unsigned long used;
            int r;

            chaos_fail_at(n);
            r = order_parse(texts[t], strlen(texts[t]), &o, &err);
            if (r == 0) {
                json = order_to_json(&o);
                res = order_result_json(&o, "gw", 1, 2, 2, 0);
            }
            used = chaos_allocations();
            chaos_fail_at(0);
            if (r < 0) {
                failures++;
                CHECK(strcmp(err.key, "oom") == 0 || strcmp(err.key, "json") == 0);
            } else {
                CHECK(t == 0 ? o.payload_len == 4 && o.binary : o.ngroups == 2);
                order_cleanup(&o);
            }
            free(json);
            free(res);
            if (n > used)
                break;
        }
        CHECK(failures > 0);
    }
    json_set_alloc_funcs(malloc, free);
}

static void test_chaos_redis_url_every_allocation_fails_cleanly(void)
{
    unsigned long n, failures = 0;

    for (n = 1;; n++) {
        struct redis_url u;
        char err[128];
        unsigned long used;
        int r;

        chaos_fail_at(n);
        r = redis_url_parse("redis://user:p%40ss@[::1]:6380/2", &u, err, sizeof(err));
        used = chaos_allocations();
        chaos_fail_at(0);
        if (r < 0) {
            failures++;
            CHECK(err[0] != '\0');
        } else {
            CHECK(u.port == 6380 && u.db == 2 && strcmp(u.password, "p@ss") == 0);
            redis_url_cleanup(&u);
        }
        if (n > used)
            break;
    }
    CHECK(failures > 0);
}

static void test_chaos_sentinel_url_every_allocation_fails_cleanly(void)
{
    unsigned long n, failures = 0;

    for (n = 1;; n++) {
        struct redis_url u;
        char err[128];
        unsigned long used;
        int r;

        chaos_fail_at(n);
        r = redis_url_parse("sentinel://u:p@a,b:2,[::1]/mm/1?sentinel_user=x&sentinel_password=y",
                            &u, err, sizeof(err));
        used = chaos_allocations();
        chaos_fail_at(0);
        if (r < 0) {
            failures++;
            CHECK(err[0] != '\0' && u.sentinels == NULL && u.master == NULL);
        } else {
            CHECK(u.nsentinels == 3 && u.db == 1 && strcmp(u.sentinel_password, "y") == 0);
            redis_url_cleanup(&u);
        }
        if (n > used)
            break;
    }
    CHECK(failures > 0);
}

void suite_chaos(void)
{
    test_chaos_ws_hs_every_allocation_fails_cleanly();
    test_chaos_order_every_allocation_fails_cleanly();
    test_chaos_send_and_join_every_allocation_fails_cleanly();
    test_chaos_redis_url_every_allocation_fails_cleanly();
    test_chaos_sentinel_url_every_allocation_fails_cleanly();
}
