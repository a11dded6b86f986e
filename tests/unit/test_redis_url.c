#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/redis_url.h"
#include "tests/unit/check.h"

static bool same(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static const struct {
    const char *url;
    const char *host;
    int port;
    const char *path;
    const char *user;
    const char *password;
    int db;
} goods[] = {
    {"redis://127.0.0.1:6379", "127.0.0.1", 6379, NULL, NULL, NULL, 0},
    {"redis://localhost", "localhost", 6379, NULL, NULL, NULL, 0},
    {"REDIS://redis-1.internal_x:7000/3", "redis-1.internal_x", 7000, NULL, NULL, NULL, 3},
    {"redis://h/", "h", 6379, NULL, NULL, NULL, 0},
    {"redis://h:1/15", "h", 1, NULL, NULL, NULL, 15},
    {"redis://h:65535", "h", 65535, NULL, NULL, NULL, 0},
    {"redis://secret@h", "h", 6379, NULL, NULL, "secret", 0},
    {"redis://:secret@h:6380", "h", 6380, NULL, NULL, "secret", 0},
    {"redis://alice:s3cr%40t%3a@h:1/2", "h", 1, NULL, "alice", "s3cr@t:", 2},
    {"redis://alice:p@ss:w/rd@h", "h", 6379, NULL, "alice", "p@ss:w/rd", 0},
    {"redis://@h", "h", 6379, NULL, NULL, NULL, 0},
    {"redis://[::1]:6379", "::1", 6379, NULL, NULL, NULL, 0},
    {"redis://[::1]", "::1", 6379, NULL, NULL, NULL, 0},
    {"redis://pw@[2001:db8::7]:7001/4", "2001:db8::7", 7001, NULL, NULL, "pw", 4},
    {"unix:///tmp/redis.sock", NULL, 0, "/tmp/redis.sock", NULL, NULL, 0},
    {"unix:///run/redis/redis-server.sock?db=5", NULL, 0, "/run/redis/redis-server.sock", NULL,
     NULL, 5},
};

static void test_redis_url_accepts(void)
{
    for (size_t i = 0; i < sizeof(goods) / sizeof(goods[0]); i++) {
        struct redis_url u;
        char err[256] = "";
        bool ok = redis_url_parse(goods[i].url, &u, err, sizeof(err)) == 0;

        if (!ok)
            fprintf(stderr, "  %s: %s\n", goods[i].url, err);
        CHECK(ok);
        if (!ok)
            continue;
        CHECK(same(u.host, goods[i].host) && u.port == goods[i].port);
        CHECK(same(u.path, goods[i].path) && u.db == goods[i].db);
        CHECK(same(u.user, goods[i].user) && same(u.password, goods[i].password));
        redis_url_cleanup(&u);
        CHECK(u.host == NULL && u.path == NULL && u.user == NULL && u.password == NULL);
        redis_url_cleanup(&u);
    }
}

static void test_redis_url_cluster(void)
{
    struct redis_url u;
    char err[256] = "";

    CHECK(redis_url_parse("cluster://alice:pw@10.0.0.1:7000,[::1]:7001,redis-3", &u, err,
                          sizeof(err)) == 0);
    CHECK(u.nseeds == 3 && same(u.host, "10.0.0.1") && u.port == 7000);
    CHECK(u.nseeds == 3 && same(u.seeds[1].host, "::1") && u.seeds[1].port == 7001);
    CHECK(u.nseeds == 3 && same(u.seeds[2].host, "redis-3") && u.seeds[2].port == 6379);
    CHECK(same(u.user, "alice") && same(u.password, "pw") && u.db == 0);
    redis_url_cleanup(&u);
    CHECK(u.seeds == NULL && u.nseeds == 0);
    CHECK(redis_url_parse("CLUSTER://h:1/0", &u, err, sizeof(err)) == 0);
    CHECK(u.nseeds == 1 && same(u.host, "h") && u.port == 1);
    redis_url_cleanup(&u);
    CHECK(redis_url_parse("redis://h:1", &u, err, sizeof(err)) == 0);
    CHECK(u.nseeds == 0 && u.seeds == NULL);
    redis_url_cleanup(&u);
}

static const struct {
    const char *url;
    const char *says; /* a piece of the message */
} bads[] = {
    {"", "expected redis://"},
    {"localhost:6379", "expected redis://"},
    {"http://h", "expected redis://"},
    {"rediss://h", "TLS"},
    {"redis://", "host is missing"},
    {"redis://:6379", "host is missing"},
    {"redis://pw@", "host is missing"},
    {"redis://h:", "port"},
    {"redis://h:0", "port"},
    {"redis://h:65536", "port"},
    {"redis://h:12ab", "port"},
    {"redis://h:-1", "port"},
    {"redis://h:6379 ", "port"},
    {"redis://a b", "bad host"},
    {"redis://h/x", "database"},
    {"redis://h/1/2", "database"},
    {"redis://h/-1", "database"},
    {"redis://h/99999999999", "database"},
    {"redis://h?db=1", "query"},
    {"redis://h#x", "query"},
    {"redis://::1:6379", "brackets"},
    {"redis://[::1", "closing"},
    {"redis://[::1]6379", "':port'"},
    {"redis://[]:1", "IPv6"},
    {"redis://[::g]:1", "IPv6"},
    {"redis://[::1]:0", "port"},
    {"redis://u:@h", "without a password"},
    {"redis://a%zz@h", "escape"},
    {"redis://a%2@h", "escape"},
    {"redis://a%00@h", "escape"},
    {"unix://", "absolute path"},
    {"unix://relative.sock", "absolute path"},
    {"unix://host/tmp/r.sock", "absolute path"},
    {"unix:///", "path is missing"},
    {"unix:///p?db=", "database"},
    {"unix:///p?db=x", "database"},
    {"unix:///p?foo=1", "?db=N"},
    {"unix:///p?db=1&x=2", "database"},
    {"sentinel://h", "master name is missing"},
    {"sentinel://h/", "master name is missing"},
    {"sentinel:///m", "no sentinel address"},
    {"sentinel://h,/m", "empty sentinel address"},
    {"sentinel://,h/m", "empty sentinel address"},
    {"sentinel://h:0/m", "port"},
    {"sentinel://h:1,a b/m", "bad host"},
    {"sentinel://h/m y", "bad master name"},
    {"sentinel://h/m/x", "database"},
    {"sentinel://h/m/1/2", "database"},
    {"sentinel://h/m#f", "fragment"},
    {"sentinel://h/m?db=1", "only ?sentinel_user"},
    {"sentinel://h/m?sentinel_password=", "is empty"},
    {"sentinel://h/m?sentinel_password=a&sentinel_password=b", "twice"},
    {"sentinel://h/m?sentinel_user=u", "without sentinel_password"},
    {"sentinel://h/m?sentinel_password=%zz", "escape"},
    {"sentinel://u:@h/m", "without a password"},
    {"sentinel://h/0123456789012345678901234567890123456789012345678901234567890123456789012345678"
     "901234567890123456789012345678901234567890123456789",
     "over 128"},
    {"cluster://", "host is missing"},
    {"cluster://h:1,", "empty node"},
    {"cluster://h:1,,h:2", "host is missing"},
    {"cluster://h:1/2", "no database"},
    {"cluster://h:1?x", "query"},
    {"cluster://h:0", "port"},
    {"cluster://u:@h:1", "without a password"},
};

static void test_redis_url_refuses(void)
{
    for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
        struct redis_url u;
        char err[256] = "";
        int r = redis_url_parse(bads[i].url, &u, err, sizeof(err));

        if (r == 0 || strstr(err, bads[i].says) == NULL)
            fprintf(stderr, "  %s: r=%d \"%s\", want \"%s\"\n", bads[i].url, r, err, bads[i].says);
        CHECK(r == -1 && strstr(err, bads[i].says) != NULL);
        CHECK(u.host == NULL && u.path == NULL && u.user == NULL && u.password == NULL);
    }
}

static void test_redis_url_error_hides_password(void)
{
    static const char *const urls[] = {
        "redis://u:hunter2@h:port",
        "redis://hunter2@h/db",
        "redis://hunter2@a b",
        "redis://u:hunter2%zz@h",
        "sentinel://u:hunter2@h/m/x",
        "sentinel://hunter2@h:0/m",
        "sentinel://h/m?sentinel_password=hunter2&x=1",
    };

    for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
        struct redis_url u;
        char err[256] = "";

        CHECK(redis_url_parse(urls[i], &u, err, sizeof(err)) == -1);
        CHECK(err[0] != '\0' && strstr(err, "hunter2") == NULL);
    }
}

static void test_redis_url_small_error_buffer(void)
{
    struct redis_url u;
    char err[8];

    CHECK(redis_url_parse("nope", &u, err, sizeof(err)) == -1);
    CHECK(strlen(err) == sizeof(err) - 1);
    CHECK(redis_url_parse("nope", &u, NULL, 0) == -1);
}

static void test_redis_url_sentinel(void)
{
    struct redis_url u;
    char err[256] = "";

    CHECK(redis_url_parse("sentinel://alice:p%40ss@10.0.0.1,[::1]:26380,s3.local:7/my-master.1/4"
                          "?sentinel_user=sen&sentinel_password=x%26y",
                          &u, err, sizeof(err)) == 0);
    CHECK(redis_url_is_sentinel(&u) && u.nsentinels == 3);
    CHECK(u.host == NULL && u.port == 0 && u.path == NULL && u.db == 4);
    CHECK(same(u.user, "alice") && same(u.password, "p@ss"));
    CHECK(same(u.sentinels[0].host, "10.0.0.1") && u.sentinels[0].port == 26379);
    CHECK(same(u.sentinels[1].host, "::1") && u.sentinels[1].port == 26380);
    CHECK(same(u.sentinels[2].host, "s3.local") && u.sentinels[2].port == 7);
    CHECK(same(u.master, "my-master.1"));
    CHECK(same(u.sentinel_user, "sen") && same(u.sentinel_password, "x&y"));
    redis_url_cleanup(&u);
    CHECK(u.sentinels == NULL && u.nsentinels == 0 && u.master == NULL);

    CHECK(redis_url_parse("SENTINEL://h/m/", &u, err, sizeof(err)) == 0);
    CHECK(u.nsentinels == 1 && same(u.sentinels[0].host, "h") && u.sentinels[0].port == 26379);
    CHECK(same(u.master, "m") && u.db == 0 && u.user == NULL && u.password == NULL);
    CHECK(u.sentinel_user == NULL && u.sentinel_password == NULL);
    redis_url_cleanup(&u);

    CHECK(redis_url_parse("sentinel://pw@h/m?sentinel_password=sp", &u, err, sizeof(err)) == 0);
    CHECK(same(u.password, "pw") && same(u.sentinel_password, "sp") && u.sentinel_user == NULL);
    redis_url_cleanup(&u);

    CHECK(redis_url_parse("redis://h", &u, err, sizeof(err)) == 0);
    CHECK(!redis_url_is_sentinel(&u));
    redis_url_cleanup(&u);
}

static void test_redis_url_check_addr(void)
{
    static const struct {
        const char *host;
        const char *port;
        int ok;
        int want;
    } cases[] = {
        {"127.0.0.1", "6379", 1, 6379},
        {"::1", "1", 1, 1},
        {"redis-2.svc", "65535", 1, 65535},
        {"", "6379", 0, 0},
        {"h", "0", 0, 0},
        {"h", "65536", 0, 0},
        {"h", "", 0, 0},
        {"h", "63a", 0, 0},
        {"a b", "1", 0, 0},
        {"h\r\n", "1", 0, 0},
        {"h/x", "1", 0, 0},
    };
    char big[300];
    int port = 0;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int r = redis_url_check_addr(cases[i].host, strlen(cases[i].host), cases[i].port,
                                     strlen(cases[i].port), &port);

        CHECK(cases[i].ok ? r == 0 && port == cases[i].want : r == -1);
    }
    memset(big, 'a', sizeof(big));
    CHECK(redis_url_check_addr(big, 255, "1", 1, &port) == 0);
    CHECK(redis_url_check_addr(big, 256, "1", 1, &port) == -1);
    CHECK(redis_url_check_addr("h\0x", 3, "1", 1, &port) == -1);
}

static void test_redis_url_switch_master(void)
{
    static const struct {
        const char *msg;
        int want;
        const char *host;
        int port;
    } cases[] = {
        {"mymaster 127.0.0.1 6379 127.0.0.1 6380", 1, "127.0.0.1", 6380},
        {"mymaster ::1 6379 2001:db8::7 7001", 1, "2001:db8::7", 7001},
        {"other 127.0.0.1 6379 127.0.0.1 6380", 0, NULL, 0},
        {"mymaster2 127.0.0.1 6379 127.0.0.1 6380", 0, NULL, 0},
        {"mymaste 127.0.0.1 6379 127.0.0.1 6380", 0, NULL, 0},
        {"", 0, NULL, 0},
        {"mymaster", -1, NULL, 0},
        {"mymaster 127.0.0.1 6379 127.0.0.1", -1, NULL, 0},
        {"mymaster 127.0.0.1 6379 127.0.0.1 6380 x", -1, NULL, 0},
        {"mymaster 127.0.0.1 6379 127.0.0.1 6380 ", -1, NULL, 0},
        {"mymaster 127.0.0.1 6379 127.0.0.1 0", -1, NULL, 0},
        {"mymaster 127.0.0.1 6379  6380", -1, NULL, 0},
        {"mymaster 127.0.0.1 6379 a/b 6380", -1, NULL, 0},
    };
    char host[64];
    int port;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int r = redis_url_switch_master(cases[i].msg, strlen(cases[i].msg), "mymaster", host,
                                        sizeof(host), &port);

        if (r != cases[i].want)
            fprintf(stderr, "  \"%s\": %d, want %d\n", cases[i].msg, r, cases[i].want);
        CHECK(r == cases[i].want);
        if (r == 1)
            CHECK(strcmp(host, cases[i].host) == 0 && port == cases[i].port);
    }
    /* a host that does not fit is refused, not cut */
    CHECK(redis_url_switch_master("m a 1 abcdefgh 2", 16, "m", host, 8, &port) == -1);
    CHECK(redis_url_switch_master("m a 1 abcdefg 2", 15, "m", host, 8, &port) == 1);
}

void suite_redis_url(void)
{
    test_redis_url_switch_master();
    test_redis_url_sentinel();
    test_redis_url_check_addr();
    test_redis_url_accepts();
    test_redis_url_refuses();
    test_redis_url_error_hides_password();
    test_redis_url_small_error_buffer();
    test_redis_url_cluster();
}
