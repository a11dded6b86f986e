#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/seen.h"
#include "tests/unit/check.h"

/* seen_check_and_add with an id that ends exactly at its allocation. */
static enum seen_result add(struct seen *s, const char *id, int64_t now, int64_t expires)
{
    size_t len = strlen(id);
    uint8_t *buf = check_dup_exact(id, len);
    enum seen_result r = seen_check_and_add(s, (const char *)buf, len, now, expires);

    free(buf);
    return r;
}

static void test_seen_new_refuses_bad_caps(void)
{
    struct seen *s;

    CHECK(seen_new(0) == NULL);
    CHECK(seen_new((size_t)SEEN_CAP_MAX + 1) == NULL);
    s = seen_new(1);
    CHECK(s != NULL && seen_count(s) == 0);
    seen_free(s);
    seen_free(NULL);
}

/* One scripted sequence: each step is (id, now, expires) → the expected answer. */
static void test_seen_table(void)
{
    static const struct {
        const char *id;
        int64_t now;
        int64_t expires;
        enum seen_result want;
        size_t count; /* entries held after the step */
    } steps[] = {
        {"a", 0, 100, SEEN_NEW, 1},
        {"a", 10, 200, SEEN_REPLAY, 1}, /* a replay changes nothing: expiry stays 100 */
        {"b", 20, 120, SEEN_NEW, 2},
        {"ab", 20, 120, SEEN_NEW, 3},
        {"", 30, 130, SEEN_NEW, 4}, /* the empty id is an id like any other */
        {"", 31, 130, SEEN_REPLAY, 4},
        {"a", 99, 300, SEEN_REPLAY, 4},
        {"a", 100, 300, SEEN_NEW, 4}, /* a expired at 100: forgotten, then added anew */
        {"b", 110, 300, SEEN_REPLAY, 4},
        {"c", 500, 600, SEEN_NEW, 1}, /* everything else expired and was forgotten */
        {"a", 500, 600, SEEN_NEW, 2},
    };
    struct seen *s = seen_new(10);

    for (size_t i = 0; s != NULL && i < sizeof(steps) / sizeof(steps[0]); i++) {
        enum seen_result r = add(s, steps[i].id, steps[i].now, steps[i].expires);

        CHECK(r == steps[i].want);
        CHECK(seen_count(s) == steps[i].count);
        if (r != steps[i].want || seen_count(s) != steps[i].count)
            fprintf(stderr, "  step %zu: got %d count %zu\n", i, (int)r, seen_count(s));
    }
    seen_free(s);
}

static void test_seen_ids_are_bytes(void)
{
    struct seen *s = seen_new(8);

    CHECK(seen_check_and_add(s, "a\0b", 3, 0, 10) == SEEN_NEW);
    CHECK(seen_check_and_add(s, "a\0c", 3, 0, 10) == SEEN_NEW);
    CHECK(seen_check_and_add(s, "a", 1, 0, 10) == SEEN_NEW);
    CHECK(seen_check_and_add(s, "a\0b", 3, 0, 10) == SEEN_REPLAY);
    CHECK(seen_check_and_add(s, NULL, 0, 0, 10) == SEEN_NEW);
    CHECK(seen_check_and_add(s, "x", 0, 0, 10) == SEEN_REPLAY);
    seen_free(s);
}

/* Full of unexpired ids: new ones are refused, old ones still answer replay; room comes
 * back only as entries expire. */
static void test_seen_cap_refuses_rather_than_forgets(void)
{
    struct seen *s = seen_new(3);

    CHECK(add(s, "a", 0, 100) == SEEN_NEW);
    CHECK(add(s, "b", 0, 200) == SEEN_NEW);
    CHECK(add(s, "c", 0, 300) == SEEN_NEW);
    CHECK(add(s, "d", 50, 400) == SEEN_FULL);
    CHECK(seen_count(s) == 3);
    CHECK(add(s, "a", 50, 400) == SEEN_REPLAY);
    CHECK(add(s, "d", 50, 400) == SEEN_FULL); /* refused ids are not remembered */
    CHECK(add(s, "d", 100, 400) == SEEN_NEW); /* a expired */
    CHECK(add(s, "e", 150, 400) == SEEN_FULL);
    CHECK(add(s, "a", 150, 400) == SEEN_FULL);
    CHECK(add(s, "a", 200, 400) == SEEN_NEW); /* b expired */
    seen_free(s);
}

/* An entry that expired behind an older one that has not is no longer seen, though it
 * is held until the older one goes. */
static void test_seen_expired_behind_an_older_entry(void)
{
    struct seen *s = seen_new(4);

    CHECK(add(s, "long", 0, 1000) == SEEN_NEW);
    CHECK(add(s, "short", 0, 10) == SEEN_NEW);
    CHECK(add(s, "short", 20, 500) == SEEN_NEW); /* expired: remembered anew, in place */
    CHECK(seen_count(s) == 2);
    CHECK(add(s, "short", 30, 500) == SEEN_REPLAY);
    CHECK(add(s, "x", 999, 1100) == SEEN_NEW);
    CHECK(seen_count(s) == 3);
    CHECK(add(s, "y", 1000, 1100) == SEEN_NEW); /* long and short go at once */
    CHECK(seen_count(s) == 2);
    seen_free(s);
}

/* Many ids with mixed expiries, checked against a plain list that follows the same
 * rules: growth, wrap-around, backward-shift deletes and the cap all agree with it. */
static void test_seen_agrees_with_a_simple_model(void)
{
    enum { CAP = 300, POOL = 500, STEPS = 40000 };
    static char ids[POOL][12];
    static int fifo[CAP];         /* pool indexes, oldest first */
    static int64_t expires[POOL]; /* of ids in the model */
    static int in_model[POOL];
    size_t head = 0, n = 0;
    uint64_t rng = 0x2545f4914f6cdd1dull;
    int64_t now = 0;
    struct seen *s = seen_new(CAP);
    size_t mismatches = 0, replays = 0, fulls = 0;

    for (int i = 0; i < POOL; i++)
        snprintf(ids[i], sizeof(ids[i]), "id-%d", i * 7919);
    for (int step = 0; s != NULL && step < STEPS; step++) {
        int k;
        int64_t exp;
        enum seen_result want, got;

        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        k = (int)(rng % POOL);
        now += (int64_t)(rng >> 40) % 3;
        exp = now + 1 + (int64_t)((rng >> 20) % 400);
        while (n > 0 && expires[fifo[head]] <= now) {
            in_model[fifo[head]] = 0;
            head = (head + 1) % CAP;
            n--;
        }
        if (in_model[k] && expires[k] > now) {
            want = SEEN_REPLAY;
            replays++;
        } else if (in_model[k]) {
            want = SEEN_NEW;
            expires[k] = exp;
        } else if (n == CAP) {
            want = SEEN_FULL;
            fulls++;
        } else {
            want = SEEN_NEW;
            in_model[k] = 1;
            expires[k] = exp;
            fifo[(head + n) % CAP] = k;
            n++;
        }
        got = add(s, ids[k], now, exp);
        mismatches += got != want || seen_count(s) != n;
    }
    CHECK(s != NULL && mismatches == 0);
    CHECK(replays > 1000 && fulls > 0); /* the script reached both */
    seen_free(s);
}

/* Memory follows use: 100 000 ids, then all expire, then one more. */
static void test_seen_large_cap(void)
{
    struct seen *s = seen_new(100000);
    size_t news = 0;
    char id[32];

    for (int i = 0; s != NULL && i < 100000; i++) {
        snprintf(id, sizeof(id), "ctl-%08x", (unsigned)i * 2654435761u);
        news += add(s, id, i / 100, 60000 + i / 100) == SEEN_NEW;
    }
    CHECK(news == 100000 && seen_count(s) == 100000);
    CHECK(add(s, "one more", 1000, 61000) == SEEN_FULL);
    snprintf(id, sizeof(id), "ctl-%08x", 5u * 2654435761u);
    CHECK(add(s, id, 1000, 61000) == SEEN_REPLAY);
    CHECK(add(s, "one more", 70000, 130000) == SEEN_NEW);
    CHECK(seen_count(s) == 1);
    seen_free(s);
}

/* Every allocation fails once in turn: seen_new returns NULL, or an add answers
 * SEEN_NOMEM and leaves the memory as it was (nothing leaked, LeakSanitizer checks). */
static void test_seen_every_allocation_fails_cleanly(void)
{
    unsigned long n, failures = 0;

    for (n = 1;; n++) {
        struct seen *s;
        enum seen_result r[200];
        unsigned long used;
        char id[16];

        chaos_fail_at(n);
        s = seen_new(150);
        for (int i = 0; s != NULL && i < 200; i++) {
            snprintf(id, sizeof(id), "o%d", i); /* add() would allocate: not here */
            r[i] = seen_check_and_add(s, id, strlen(id), 0, 100);
        }
        used = chaos_allocations();
        chaos_fail_at(0);
        if (s == NULL) {
            failures++;
        } else {
            size_t nomem = 0, news = 0;
            /* Full at the end (150 of 200 remembered): a refused id answers FULL, never
             * REPLAY, so it was not remembered. */
            for (int i = 0; i < 200; i++) {
                snprintf(id, sizeof(id), "o%d", i);
                nomem += r[i] == SEEN_NOMEM;
                news += r[i] == SEEN_NEW;
                CHECK(add(s, id, 0, 100) == (r[i] == SEEN_NEW ? SEEN_REPLAY : SEEN_FULL));
            }
            CHECK(nomem <= 1 && news == 150);
            failures += nomem;
            seen_free(s);
        }
        if (n > used)
            break;
    }
    CHECK(failures > 3);
}

void suite_seen(void)
{
    test_seen_new_refuses_bad_caps();
    test_seen_table();
    test_seen_ids_are_bytes();
    test_seen_cap_refuses_rather_than_forgets();
    test_seen_expired_behind_an_older_entry();
    test_seen_agrees_with_a_simple_model();
    test_seen_large_cap();
    test_seen_every_allocation_fails_cleanly();
}
