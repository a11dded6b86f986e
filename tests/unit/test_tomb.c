#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/tomb.h"
#include "tests/unit/check.h"

static enum tomb_put_result put(struct tomb_table *t, const char *name, int64_t until, int64_t now)
{
    return tomb_put(t, name, strlen(name), until, now, 4001, "banned", "o1", now);
}

static const struct tomb *find(struct tomb_table *t, const char *name, int64_t now)
{
    return tomb_find(t, name, strlen(name), now);
}

static void test_tomb_new_refuses_bad_caps(void)
{
    CHECK(tomb_table_new(0, 1) == NULL);
    CHECK(tomb_table_new(TOMB_CAP_MAX + 1, 1) == NULL);
    tomb_table_free(NULL);
}

static void test_tomb_holds_until_its_moment(void)
{
    struct tomb_table *t = tomb_table_new(10, 7);
    const struct tomb *tb;

    CHECK(put(t, "user:alice", 1000, 0) == TOMB_ADDED);
    tb = find(t, "user:alice", 999);
    CHECK(tb != NULL && tb->code == 4001 && strcmp(tb->reason, "banned") == 0);
    CHECK(tb != NULL && tb->id != NULL && strcmp(tb->id, "o1") == 0);
    CHECK(find(t, "user:alic", 0) == NULL);
    CHECK(find(t, "user:alice", 1000) == NULL); /* expired: dropped when met */
    CHECK(tomb_count(t) == 0);
    tomb_table_free(t);
}

static void test_tomb_refresh_keeps_the_later_moment(void)
{
    struct tomb_table *t = tomb_table_new(10, 7);
    const struct tomb *tb;

    CHECK(put(t, "g", 5000, 0) == TOMB_ADDED);
    CHECK(tomb_put(t, "g", 1, 3000, 0, 4003, "later reason", NULL, 0) == TOMB_UPDATED);
    tb = find(t, "g", 4000);
    CHECK(tb != NULL && tb->code == 4003 && tb->id == NULL &&
          strcmp(tb->reason, "later reason") == 0);
    CHECK(tomb_put(t, "g", 1, 9000, 0, 4003, "x", NULL, 0) == TOMB_UPDATED);
    CHECK(find(t, "g", 8000) != NULL);
    CHECK(tomb_count(t) == 1);
    CHECK(tomb_del(t, "g", 1) && !tomb_del(t, "g", 1));
    CHECK(find(t, "g", 0) == NULL);
    tomb_table_free(t);
}

/* An unban leaves a marker: a ban made before it and met after it (a late copy) is
 * not held; a ban made after it is; an unban older than the ban it meets lifts
 * nothing. Markers match no connection and end at their own moment. */
static void test_tomb_unban_marker_stops_late_bans(void)
{
    struct tomb_table *t = tomb_table_new(10, 3);

    CHECK(tomb_put(t, "u", 1, 100000, 1000, 4001, "r", "ban1", 1500) == TOMB_ADDED);
    CHECK(find(t, "u", 1500) != NULL);
    CHECK(tomb_lift(t, "u", 1, 2000, 60000, 2100) == 1);
    CHECK(find(t, "u", 2100) == NULL && tomb_count(t) == 1);
    /* The same ban, late (ts 1000 < unban 2000): not held. */
    CHECK(tomb_put(t, "u", 1, 100000, 1000, 4001, "r", "ban1", 2200) == TOMB_STALE);
    CHECK(find(t, "u", 2200) == NULL);
    /* A new ban after the unban: held. */
    CHECK(tomb_put(t, "u", 1, 100000, 3000, 4002, "again", "ban2", 3100) == TOMB_ADDED);
    CHECK(find(t, "u", 3100) != NULL && find(t, "u", 3100)->code == 4002);
    /* An unban older than that ban lifts nothing. */
    CHECK(tomb_lift(t, "u", 1, 2500, 60000, 3200) == 0);
    CHECK(find(t, "u", 3200) != NULL);
    /* An unban with nothing to lift leaves a marker all the same. */
    CHECK(tomb_lift(t, "v", 1, 5000, 9000, 5000) == 0 && tomb_count(t) == 2);
    CHECK(tomb_put(t, "v", 1, 100000, 4000, 4001, "", NULL, 5100) == TOMB_STALE);
    /* The marker ends: the late ban is a ban again. */
    CHECK(tomb_put(t, "v", 1, 100000, 4000, 4001, "", NULL, 9000) == TOMB_ADDED);
    CHECK(find(t, "v", 9000) != NULL);
    tomb_table_free(t);
}

static void test_tomb_cap_refuses_then_makes_room_from_expired(void)
{
    struct tomb_table *t = tomb_table_new(3, 7);

    CHECK(put(t, "a", 100, 0) == TOMB_ADDED);
    CHECK(put(t, "b", 200, 0) == TOMB_ADDED);
    CHECK(put(t, "c", 300, 0) == TOMB_ADDED);
    CHECK(put(t, "d", 300, 50) == TOMB_FULL);
    CHECK(put(t, "a", 400, 50) == TOMB_UPDATED); /* held ones still refresh */
    CHECK(put(t, "d", 300, 250) == TOMB_ADDED);  /* b expired: dropped to make room */
    CHECK(tomb_count(t) == 3 && find(t, "b", 0) == NULL && find(t, "d", 250) != NULL);
    CHECK(tomb_expire(t, 1000) == 3 && tomb_count(t) == 0);
    tomb_table_free(t);
}

static void test_tomb_many_grow_and_walk(void)
{
    struct tomb_table *t = tomb_table_new(5000, 99);
    size_t cursor = 0, seen = 0;
    const struct tomb *e = NULL;
    char name[32];
    int ok = 1;

    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "room:%d", i);
        ok &= put(t, name, 10 + i, 0) == TOMB_ADDED;
    }
    CHECK(ok && tomb_count(t) == 5000);
    while ((e = tomb_next(t, &cursor, e)) != NULL)
        seen++;
    CHECK(seen == 5000);
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "room:%d", i);
        ok &= find(t, name, 0) != NULL;
    }
    CHECK(ok);
    CHECK(tomb_expire(t, 2510) == 2501 && tomb_count(t) == 2499);
    tomb_table_free(t);
}

static void test_tomb_json_round_trip(void)
{
    struct tomb src = {0}, got;
    const char *why = NULL;
    char name[] = "user:bob", id[] = "ban-1";
    char *json;

    src.name = name;
    src.id = id;
    src.until_ms = 1700000000123;
    src.ts_ms = 1699999990000;
    src.code = 4403;
    strcpy(src.reason, "revoked \xc3\xa9");
    json = tomb_to_json(&src);
    CHECK(json != NULL);
    CHECK(tomb_parse("group:user:bob", 14, json, strlen(json), &got, &why) == 0);
    CHECK(strcmp(got.name, "user:bob") == 0 && strcmp(got.id, "ban-1") == 0);
    CHECK(got.until_ms == src.until_ms && got.ts_ms == src.ts_ms && got.code == 4403 &&
          strcmp(got.reason, src.reason) == 0);
    tomb_cleanup(&got);
    free(json);
}

static void test_tomb_parse_refuses(void)
{
    static const struct {
        const char *field;
        const char *value;
    } bad[] = {
        {"user:x", "{\"until\":1,\"code\":4000}"},
        {"group:", "{\"until\":1,\"code\":4000}"},
        {"group:x", "not json"},
        {"group:x", "[]"},
        {"group:x", "{\"code\":4000}"},
        {"group:x", "{\"until\":1}"},
        {"group:x", "{\"until\":1,\"code\":1005}"},
        {"group:x", "{\"until\":1,\"code\":6000}"},
        {"group:x", "{\"until\":1,\"code\":4000,\"reason\":5}"},
        {"group:x", "{\"until\":1,\"code\":4000,\"id\":5}"},
        {"group:x", "{\"until\":\"1\",\"code\":4000}"},
        {"group:x", "{\"until\":1,\"code\":4000,\"ts\":\"1\"}"},
    };
    struct tomb tb;
    const char *why;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why = NULL;
        CHECK(tomb_parse(bad[i].field, strlen(bad[i].field), bad[i].value, strlen(bad[i].value),
                         &tb, &why) == -1 &&
              why != NULL);
    }
    CHECK(tomb_parse("group:x", 7, "{\"until\":5,\"code\":4000,\"extra\":1}", 33, &tb, &why) == 0);
    CHECK(tb.id == NULL && tb.reason[0] == '\0');
    tomb_cleanup(&tb);
}

/* Whichever allocation fails, the table answers NOMEM (or grows later) and holds
 * exactly what it said it added. */
static void test_tomb_every_allocation_fails_cleanly(void)
{
    int failures = 0, consistent = 1;

    for (unsigned long n = 1; n < 300; n++) {
        struct tomb_table *t;
        size_t added = 0;
        chaos_fail_at(n);
        t = tomb_table_new(100, 1);
        if (t != NULL) {
            for (int i = 0; i < 80; i++) {
                char name[16];
                enum tomb_put_result r;
                snprintf(name, sizeof(name), "g%d", i);
                r = put(t, name, 100, 0);
                added += r == TOMB_ADDED;
                failures += r == TOMB_NOMEM;
            }
            consistent &= tomb_count(t) == added;
            tomb_table_free(t);
        } else {
            failures++;
        }
        chaos_fail_at(0);
    }
    CHECK(consistent);
    CHECK(failures > 3);
}

void suite_tomb(void)
{
    test_tomb_new_refuses_bad_caps();
    test_tomb_holds_until_its_moment();
    test_tomb_refresh_keeps_the_later_moment();
    test_tomb_unban_marker_stops_late_bans();
    test_tomb_cap_refuses_then_makes_room_from_expired();
    test_tomb_many_grow_and_walk();
    test_tomb_json_round_trip();
    test_tomb_parse_refuses();
    test_tomb_every_allocation_fails_cleanly();
}
