#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "common/config.h"
#include "common/token.h"
#include "tests/unit/check.h"

/* argv and envp hold mutable strings; the literals here are never written. */
#define A(s) ((char *)(s))

static int parse(struct config *c, char **argv, char **envp)
{
    char err[256];
    int argc = 0;

    while (argv[argc] != NULL)
        argc++;
    config_defaults(c);
    return config_parse(c, argc, argv, envp, err, sizeof(err));
}

static int parse_err(struct config *c, char **argv, char **envp, char *err, size_t errlen)
{
    int argc = 0;

    while (argv[argc] != NULL)
        argc++;
    err[0] = '\0';
    config_defaults(c);
    return config_parse(c, argc, argv, envp, err, errlen);
}

static void test_config_defaults(void)
{
    struct config c;
    char *argv[] = {A("wsgate"), NULL};

    CHECK(parse(&c, argv, NULL) == 0);
    CHECK(c.listen_port == 8080 && strcmp(c.listen_host, "0.0.0.0") != 0);
    CHECK(c.workers >= 1);
    CHECK(c.max_header == 8192 && c.max_message == 1048576);
    CHECK(c.close_timeout_ms == 5000 && c.ping_interval_ms == 30000);
    CHECK(strcmp(c.channel, "wsgate:orders") == 0);
    CHECK(strcmp(c.events_channel, "wsgate:events") == 0);
    CHECK(config_query_groups(&c) && c.max_groups == 16 && c.inbound == CONFIG_INBOUND_DROP && !c.redis_given);
    CHECK(c.stall_timeout_ms == 2000 && c.stall_kill_ms == 10000 && c.max_admin_conns == 8);
    CHECK(c.allow_origin.n == 0 && c.max_conns_per_ip == 0 && c.max_handshakes_per_ip == 0);
    CHECK(!c.proxy_protocol);
    CHECK(!config_jwt_enabled(&c) && c.jwt_leeway_ms == 5000 && c.jwt_expiry_code == 4001);
    CHECK(!c.jwt_allow_no_exp && c.jwt_cookie[0] == '\0' && c.jwt_issuer[0] == '\0');
    CHECK(c.redis_timeout_ms == 3000);
    CHECK(c.max_outbound == 1048576 && c.max_jobs == 1000 && c.max_send == 1048576);
    CHECK(c.max_pending >= 1048576 && c.max_pending <= CONFIG_MAX_PENDING_CAP);
    CHECK(strcmp(c.inbound_channel, "wsgate:in") == 0 && strcmp(c.inbound_stream, "wsgate:in") == 0);
    CHECK(c.inbound_maxlen == 100000 && c.inbound_max_pending == 4194304);
}

/* --inbound and its settings, their twins, and --echo as the alias of echo mode. */
static void test_config_inbound(void)
{
    struct config c;
    char *pub[] = {A("wsgate"), A("--inbound"), A("publish"), A("--inbound-channel=in:x"), NULL};
    char *echo[] = {A("wsgate"), A("--echo"), NULL};
    char *last[] = {A("wsgate"), A("--echo"), A("--inbound=stream"), NULL};
    char *none[] = {A("wsgate"), NULL};
    char *envp[] = {A("WSGATE_INBOUND=stream"), A("WSGATE_INBOUND_STREAM=s:1"),
                    A("WSGATE_INBOUND_MAXLEN=500"), A("WSGATE_INBOUND_MAX_PENDING=1m"), NULL};
    char *noecho[] = {A("WSGATE_INBOUND=publish"), A("WSGATE_ECHO=0"), NULL};

    CHECK(parse(&c, pub, NULL) == 0 && c.inbound == CONFIG_INBOUND_PUBLISH);
    CHECK(strcmp(c.inbound_channel, "in:x") == 0);
    CHECK(parse(&c, echo, NULL) == 0 && c.inbound == CONFIG_INBOUND_ECHO);
    CHECK(parse(&c, last, NULL) == 0 && c.inbound == CONFIG_INBOUND_STREAM);
    CHECK(parse(&c, none, envp) == 0 && c.inbound == CONFIG_INBOUND_STREAM);
    CHECK(strcmp(c.inbound_stream, "s:1") == 0 && c.inbound_maxlen == 500);
    CHECK(c.inbound_max_pending == 1048576);
    CHECK(parse(&c, pub, envp) == 0 && c.inbound == CONFIG_INBOUND_PUBLISH); /* flag wins */
    CHECK(parse(&c, none, noecho) == 0 && c.inbound == CONFIG_INBOUND_PUBLISH);
    CHECK(strcmp(config_inbound_name(CONFIG_INBOUND_STREAM), "stream") == 0);
    CHECK(strstr(config_usage(), "--inbound-max-pending") != NULL);
}

/* --allow-origin repeats, takes lists, and replaces its twin's list when given. */
static void test_config_allow_origin(void)
{
    struct config c;
    char *argv[] = {A("wsgate"),
                    A("--allow-origin"),
                    A("https://app.example.com"),
                    A("--allow-origin=https://*.example.org, http://localhost:8080"),
                    A("--allow-origin"),
                    A("HTTPS://APP.EXAMPLE.COM:443"),
                    NULL};
    char *none[] = {A("wsgate"), NULL};
    char *env[] = {A("WSGATE_ALLOW_ORIGIN=https://a.example.net,https://b.example.net"), NULL};
    char text[300];

    CHECK(parse(&c, argv, NULL) == 0);
    CHECK(c.allow_origin.n == 3); /* the last one was the first again */
    CHECK(origin_format(&c.allow_origin.o[1], text, sizeof(text)) > 0);
    CHECK(strcmp(text, "https://*.example.org") == 0);
    CHECK(origin_allowed(&c.allow_origin, "http://localhost:8080"));
    CHECK(!origin_allowed(&c.allow_origin, "https://a.example.net"));
    CHECK(parse(&c, argv, env) == 0 && c.allow_origin.n == 3); /* the flag wins */
    CHECK(parse(&c, none, env) == 0 && c.allow_origin.n == 2);
    CHECK(origin_allowed(&c.allow_origin, "https://b.example.net"));
}

static void test_config_limits_per_address(void)
{
    struct config c;
    char *argv[] = {A("wsgate"), A("--max-conns-per-ip"), A("100"), A("--max-handshakes-per-ip"),
                    A("600/m"),  A("--proxy-protocol"),   NULL};
    char *env[] = {A("WSGATE_MAX_HANDSHAKES_PER_IP=20/s"), A("WSGATE_PROXY_PROTOCOL=yes"),
                   A("WSGATE_MAX_CONNS_PER_IP=0"), NULL};
    char *none[] = {A("wsgate"), NULL};
    char *off[] = {A("wsgate"), A("--max-handshakes-per-ip"), A("off"), NULL};

    CHECK(parse(&c, argv, NULL) == 0);
    CHECK(c.max_conns_per_ip == 100 && c.proxy_protocol);
    CHECK(c.max_handshakes_per_ip == 600 && c.handshakes_period_ms == 60000);
    CHECK(parse(&c, none, env) == 0);
    CHECK(c.max_conns_per_ip == 0 && c.proxy_protocol);
    CHECK(c.max_handshakes_per_ip == 20 && c.handshakes_period_ms == 1000);
    CHECK(parse(&c, off, env) == 0 && c.max_handshakes_per_ip == 0);
}

/* The memory bounds: flags, twins, and --max-pending's default shared by the workers. */
static void test_config_memory_bounds(void)
{
    struct config c, one, many;
    char *argv[] = {A("wsgate"), A("--max-outbound"), A("64k"), A("--max-jobs=20"), NULL};
    char *envp[] = {A("WSGATE_MAX_PENDING=4m"), A("WSGATE_MAX_JOBS=7"), NULL};
    char *argv1[] = {A("wsgate"), A("--workers"), A("1"), NULL};
    char *argv256[] = {A("wsgate"), A("--workers"), A("256"), NULL};

    CHECK(parse(&c, argv, envp) == 0);
    CHECK(c.max_outbound == 65536 && c.max_pending == 4194304 && c.max_jobs == 20);
    CHECK(parse(&one, argv1, NULL) == 0 && parse(&many, argv256, NULL) == 0);
    CHECK(many.max_pending <= one.max_pending && many.max_pending >= 1048576);
}

/* --max-send bounds a send order's payload (after base64); its twin is WSGATE_MAX_SEND. */
static void test_config_max_send(void)
{
    struct config c;
    char *argv[] = {A("wsgate"), A("--max-send"), A("64k"), NULL};
    char *one[] = {A("wsgate"), A("--max-send=1"), NULL};
    char *none[] = {A("wsgate"), NULL};
    char *envp[] = {A("WSGATE_MAX_SEND=16m"), NULL};

    CHECK(parse(&c, argv, envp) == 0 && c.max_send == 65536); /* the flag wins */
    CHECK(parse(&c, none, envp) == 0 && c.max_send == 16777216);
    CHECK(parse(&c, one, NULL) == 0 && c.max_send == 1);
    CHECK(strstr(config_usage(), "--max-send") != NULL);
}

/* --deflate is off unless given; --deflate-min-size defaults to 256, 0 compresses all. */
static void test_config_deflate(void)
{
    struct config c;
    char *argv[] = {A("wsgate"), A("--deflate"), A("--deflate-min-size"), A("1k"), NULL};
    char *zero[] = {A("wsgate"), A("--deflate-min-size=0"), NULL};
    char *bad[] = {A("wsgate"), A("--deflate-min-size=17m"), NULL};
    char *none[] = {A("wsgate"), NULL};
    char *envp[] = {A("WSGATE_DEFLATE=1"), A("WSGATE_DEFLATE_MIN_SIZE=64"), NULL};

    CHECK(parse(&c, none, NULL) == 0 && !c.deflate && c.deflate_min_size == 256);
    CHECK(parse(&c, argv, NULL) == 0 && c.deflate && c.deflate_min_size == 1024);
    CHECK(parse(&c, none, envp) == 0 && c.deflate && c.deflate_min_size == 64);
    CHECK(parse(&c, zero, NULL) == 0 && !c.deflate && c.deflate_min_size == 0);
    CHECK(parse(&c, bad, NULL) == -1);
    CHECK(strstr(config_usage(), "--deflate-min-size") != NULL);
}

static void test_config_flags_and_env(void)
{
    struct config c;
    char *argv[] = {A("wsgate"),
                    A("--listen"),
                    A("127.0.0.1:9001"),
                    A("--workers=3"),
                    A("--echo"),
                    A("--max-header"),
                    A("16k"),
                    A("--close-timeout"),
                    A("500ms"),
                    A("--no-query-groups"),
                    A("--id"),
                    A("gw-a.1"),
                    A("--redis-timeout=1500ms"),
                    NULL};
    char *envp[] = {A("WSGATE_WORKERS=5"),           A("WSGATE_PING_INTERVAL=2m"),
                    A("WSGATE_REDIS=redis://h:1/2"), A("WSGATE_ECHO=0"),
                    A("WSGATE_REDIS_TIMEOUT=9s"),    NULL};

    CHECK(parse(&c, argv, envp) == 0);
    CHECK(strcmp(c.listen_host, "127.0.0.1") == 0 && c.listen_port == 9001);
    CHECK(c.workers == 3); /* the flag wins over its twin */
    CHECK(c.inbound == CONFIG_INBOUND_ECHO);
    CHECK(c.max_header == 16384 && c.close_timeout_ms == 500);
    CHECK(c.ping_interval_ms == 120000);
    CHECK(c.redis_given && strcmp(c.redis, "redis://h:1/2") == 0);
    CHECK(!config_query_groups(&c));
    CHECK(strcmp(c.id, "gw-a.1") == 0);
    CHECK(c.redis_timeout_ms == 1500); /* the flag wins over WSGATE_REDIS_TIMEOUT */
}

static void test_config_redis_timeout_from_env(void)
{
    struct config c;
    char *argv[] = {A("wsgate"), NULL};
    char *envp[] = {A("WSGATE_REDIS_TIMEOUT=9s"), NULL};

    CHECK(parse(&c, argv, envp) == 0);
    CHECK(c.redis_timeout_ms == 9000);
}

/* A trusted header flag turns the query's identity off unless it is asked for. */
static void test_config_trusted_headers_turn_query_groups_off(void)
{
    struct config c;
    char *user[] = {A("wsgate"), A("--user-header"), A("X-User"), NULL};
    char *groups[] = {A("wsgate"), A("--groups-header"), A("X-Groups"), NULL};
    char *both[] = {A("wsgate"), A("--user-header"), A("X-User"), A("--query-groups"), NULL};
    char *env[] = {A("WSGATE_QUERY_GROUPS=1"), NULL};

    CHECK(parse(&c, user, NULL) == 0 && !config_query_groups(&c));
    CHECK(parse(&c, groups, NULL) == 0 && !config_query_groups(&c));
    CHECK(parse(&c, both, NULL) == 0 && config_query_groups(&c));
    CHECK(parse(&c, user, env) == 0 && config_query_groups(&c));
}

static void test_config_limits_at_their_bounds(void)
{
    struct config c;
    char *argv[] = {A("wsgate"), A("--max-groups"), A("1024"), A("--stall-timeout"),
                    A("500ms"),  A("--stall-kill"), A("0"),    NULL};

    CHECK(parse(&c, argv, NULL) == 0);
    CHECK(c.max_groups == 1024 && c.stall_timeout_ms == 500 && c.stall_kill_ms == 0);
}

static void test_config_ipv6_listen(void)
{
    struct config c;
    char *argv[] = {A("wsgate"), A("--listen"), A("[::1]:80"), NULL};

    CHECK(parse(&c, argv, NULL) == 0);
    CHECK(strcmp(c.listen_host, "::1") == 0 && c.listen_port == 80);
}

static void test_config_rejects_bad_values(void)
{
    static const char *const bad[][3] = {
        {"--listen", "127.0.0.1", NULL},
        {"--listen", "127.0.0.1:0", NULL},
        {"--listen", "127.0.0.1:65536", NULL},
        {"--listen", "nohost:80", NULL},
        {"--listen", "[zz]:80", NULL},
        {"--workers", "0", NULL},
        {"--workers", "x", NULL},
        {"--workers", "257", NULL},
        {"--id", "", NULL},
        {"--id", "has space", NULL},
        {"--max-header", "10", NULL},
        {"--max-header", "8q", NULL},
        {"--max-message", "0", NULL},
        {"--close-timeout", "0", NULL},
        {"--close-timeout", "-1s", NULL},
        {"--close-timeout", "5 s", NULL},
        {"--ping-interval", "abc", NULL},
        {"--log-level", "loud", NULL},
        {"--redis", "http://x", NULL},
        {"--redis-timeout", "0", NULL},
        {"--redis-timeout", "99ms", NULL},
        {"--redis-timeout", "6m", NULL},
        {"--redis-timeout", "soon", NULL},
        {"--channel", "", NULL},
        {"--groups-header", "Bad Header", NULL},
        {"--max-groups", "-1", NULL},
        {"--max-groups", "1025", NULL},
        {"--stall-timeout", "0", NULL},
        {"--stall-timeout", "50ms", NULL},
        {"--stall-kill", "500ms", NULL},
        {"--stall-kill", "2h", NULL},
        {"--max-outbound", "100", NULL},
        {"--max-outbound", "2g", NULL},
        {"--max-pending", "0", NULL},
        {"--max-pending", "lots", NULL},
        {"--max-jobs", "0", NULL},
        {"--inbound", "kafka", NULL},
        {"--inbound", "", NULL},
        {"--inbound-channel", "", NULL},
        {"--inbound-stream", "a b", NULL},
        {"--inbound-maxlen", "0", NULL},
        {"--inbound-max-pending", "1k", NULL},
        {"--inbound-max-pending", "2g", NULL},
        {"--max-jobs", "1000001", NULL},
        {"--max-send", "0", NULL},
        {"--max-send", "17m", NULL},
        {"--max-send", "big", NULL},
        {"--orders-stream", "a b", NULL},
        {"--orders-max-age", "999ms", NULL},
        {"--orders-max-age", "25h", NULL},
        {"--orders-dedup-max", "0", NULL},
        {"--orders-dedup-max", "10000001", NULL},
        {"--max-tombstones", "-1", NULL},
        {"--max-tombstones", "10000001", NULL},
        {"--nope", NULL, NULL},
        {"--echo=1", NULL, NULL},
        {"positional", NULL, NULL},
        {"--listen", NULL, NULL},
        {"--allow-origin", "null", NULL},
        {"--allow-origin", "", NULL},
        {"--allow-origin", " , ", NULL},
        {"--allow-origin", "https://example.com/", NULL},
        {"--allow-origin", "https://ok.example.com,https://*.com", NULL},
        {"--allow-origin", "*", NULL},
        {"--allow-origin", NULL, NULL},
        {"--max-conns-per-ip", "-1", NULL},
        {"--max-conns-per-ip", "65001", NULL},
        {"--max-conns-per-ip", "lots", NULL},
        {"--max-handshakes-per-ip", "20", NULL},
        {"--max-handshakes-per-ip", "20/d", NULL},
        {"--proxy-protocol=1", NULL, NULL},
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct config c;
        char *argv[4] = {A("wsgate"), (char *)bad[i][0], (char *)bad[i][1], NULL};
        CHECK(parse(&c, argv, NULL) == -1);
    }
}

static void test_config_rejects_bad_env(void)
{
    struct config c;
    char *argv[] = {A("wsgate"), NULL};
    char *env1[] = {A("WSGATE_WORKERS=many"), NULL};
    char *env2[] = {A("WSGATE_ECHO=maybe"), NULL};
    char *env3[] = {A("WSGATE_ALLOW_ORIGIN="), NULL};
    char *env4[] = {A("WSGATE_ALLOW_ORIGIN=https://a.example.com null"), NULL};
    char *env5[] = {A("WSGATE_PROXY_PROTOCOL=maybe"), NULL};

    CHECK(parse(&c, argv, env1) == -1);
    CHECK(parse(&c, argv, env2) == -1);
    CHECK(parse(&c, argv, env3) == -1);
    CHECK(parse(&c, argv, env4) == -1);
    CHECK(parse(&c, argv, env5) == -1);
}

#define K1 "k1:s3cret-key-one-0123456789"
#define K2 "k2:s3cret-key-two-0123456789"
#define K3 "k3:s3cret-key-three-01234567"

static void test_config_order_keys_and_their_twin(void)
{
    struct config c;
    char *none[] = {A("wsgate"), NULL};
    char *two[] = {A("wsgate"), A("--order-key"), A(K1), A("--order-key=" K2), NULL};
    char *list[] = {A("wsgate"), A("--order-key"), A(K1 ", " K2), NULL};
    char *ages[] = {A("wsgate"), A("--order-max-age"), A("5m"), A("--order-replay-max"), A("10"),
                    NULL};
    char *env[] = {A("WSGATE_ORDER_KEY=" K3 "," K2 " " K1), A("WSGATE_ORDER_MAX_AGE=90s"), NULL};

    CHECK(parse(&c, none, NULL) == 0 && c.order_keys.n == 0);
    CHECK(c.order_max_age_ms == 60000 && c.order_replay_max == 100000);
    CHECK(parse(&c, two, NULL) == 0 && c.order_keys.n == 2);
    CHECK(strcmp(c.order_keys.keys[0].kid, "k1") == 0 &&
          strcmp(c.order_keys.keys[1].kid, "k2") == 0);
    CHECK(parse(&c, list, NULL) == 0 && c.order_keys.n == 2);
    CHECK(parse(&c, none, env) == 0 && c.order_keys.n == 3 && c.order_max_age_ms == 90000);
    CHECK(strcmp(c.order_keys.keys[0].kid, "k3") == 0);
    /* Keys on the command line replace the twin's, they do not add to them. */
    CHECK(parse(&c, two, env) == 0 && c.order_keys.n == 2);
    CHECK(strcmp(c.order_keys.keys[0].kid, "k1") == 0);
    CHECK(parse(&c, ages, NULL) == 0 && c.order_max_age_ms == 300000 && c.order_replay_max == 10);
}

static void test_config_orders_stream_and_tombstones(void)
{
    struct config c;
    char *none[] = {A("wsgate"), NULL};
    char *all[] = {A("wsgate"),           A("--orders-stream"),    A("wsgate:orders:log"),
                   A("--orders-max-age"), A("2m"),                 A("--orders-dedup-max"),
                   A("50"),               A("--max-tombstones"),   A("0"),
                   NULL};
    char *env[] = {A("WSGATE_ORDERS_STREAM=s1"), A("WSGATE_MAX_TOMBSTONES=7"), NULL};

    CHECK(parse(&c, none, NULL) == 0 && c.orders_stream[0] == '\0');
    CHECK(c.orders_max_age_ms == 60000 && c.orders_dedup_max == 100000 &&
          c.max_tombstones == 100000);
    CHECK(parse(&c, all, NULL) == 0 && strcmp(c.orders_stream, "wsgate:orders:log") == 0);
    CHECK(c.orders_max_age_ms == 120000 && c.orders_dedup_max == 50 && c.max_tombstones == 0);
    CHECK(parse(&c, none, env) == 0 && strcmp(c.orders_stream, "s1") == 0 &&
          c.max_tombstones == 7);
}

/* Bad keys are refused before start, and the message never shows a secret. */
static void test_config_refuses_bad_order_keys_quietly(void)
{
    static const char *const bad[][2] = {
        {"--order-key", ""},
        {"--order-key", "k1"},
        {"--order-key", "k1:short-s3cret"},
        {"--order-key", "k 1:s3cret-key-one-0123456789"},
        {"--order-key", K1 "," K1},
        {"--order-max-age", "0"},
        {"--order-max-age", "999ms"},
        {"--order-max-age", "25h"},
        {"--order-replay-max", "0"},
        {"--order-replay-max", "10000001"},
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct config c;
        char err[256] = "";
        char *argv[] = {A("wsgate"), (char *)bad[i][0], (char *)bad[i][1], NULL};

        config_defaults(&c);
        CHECK(config_parse(&c, 3, argv, NULL, err, sizeof(err)) == -1);
        CHECK(err[0] != '\0' && strstr(err, "s3cret") == NULL);
    }
    {
        struct config c;
        char err[256] = "";
        char *argv[] = {A("wsgate"), NULL};
        char *env[] = {A("WSGATE_ORDER_KEY=k1:s3cret"), NULL};
        char *empty[] = {A("WSGATE_ORDER_KEY="), NULL};

        config_defaults(&c);
        CHECK(config_parse(&c, 1, argv, env, err, sizeof(err)) == -1);
        CHECK(strstr(err, "WSGATE_ORDER_KEY") != NULL && strstr(err, "s3cret") == NULL);
        config_defaults(&c);
        CHECK(config_parse(&c, 1, argv, empty, err, sizeof(err)) == -1);
    }
}

static void test_config_help(void)
{
    struct config c;
    char *argv[] = {A("wsgate"), A("--workers"), A("bad"), A("--help"), NULL};
    static const char *const flags[] = {"--close-timeout", "--allow-origin", "--max-conns-per-ip",
                                        "--max-handshakes-per-ip", "--proxy-protocol"};

    CHECK(parse(&c, argv, NULL) == 1);
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
        CHECK(strstr(config_usage(), flags[i]) != NULL);
    CHECK(strstr(config_usage(), "--close-timeout") != NULL);
    CHECK(strstr(config_usage(), "--jwt-public-key") != NULL);
    CHECK(strstr(config_usage(), "--redis-timeout") != NULL);
    CHECK(strstr(config_usage(), "--max-outbound") != NULL);
    CHECK(strstr(config_usage(), "--max-pending") != NULL);
    CHECK(strstr(config_usage(), "--max-jobs") != NULL);
}

static void test_config_units(void)
{
    uint32_t ms;
    uint64_t b;

    CHECK(config_parse_duration("250ms", &ms) == 0 && ms == 250);
    CHECK(config_parse_duration("1.5s", &ms) == 0 && ms == 1500);
    CHECK(config_parse_duration("3", &ms) == 0 && ms == 3000);
    CHECK(config_parse_duration("1h", &ms) == 0 && ms == 3600000);
    CHECK(config_parse_duration("5d", &ms) == -1);
    CHECK(config_parse_size("8k", &b) == 0 && b == 8192);
    CHECK(config_parse_size("1m", &b) == 0 && b == 1048576);
    CHECK(config_parse_size("1g", &b) == 0 && b == 1073741824);
    CHECK(config_parse_size("1kb", &b) == -1);
    CHECK(config_parse_size("-1", &b) == -1);
}

static void test_config_rates(void)
{
    static const struct {
        const char *text;
        int ret;
        uint32_t count, period_ms;
    } cases[] = {
        {"20/s", 0, 20, 1000},
        {"600/m", 0, 600, 60000},
        {"5/h", 0, 5, 3600000},
        {"1000000/s", 0, 1000000, 1000},
        {"0", 0, 0, 0},
        {"off", 0, 0, 0},
        {"20", -1, 0, 0},
        {"20/", -1, 0, 0},
        {"/s", -1, 0, 0},
        {"20/d", -1, 0, 0},
        {"20/S", -1, 0, 0},
        {"20/sec", -1, 0, 0},
        {"0/s", -1, 0, 0},
        {"020/s", -1, 0, 0},
        {"-1/s", -1, 0, 0},
        {"+1/s", -1, 0, 0},
        {" 20/s", -1, 0, 0},
        {"20 /s", -1, 0, 0},
        {"2.5/s", -1, 0, 0},
        {"1000001/s", -1, 0, 0},
        {"99999999999999999999/s", -1, 0, 0},
        {"", -1, 0, 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint32_t count = 7, period = 7;
        int r = config_parse_rate(cases[i].text, &count, &period);
        CHECK(r == cases[i].ret);
        if (r == 0)
            CHECK(count == cases[i].count && period == cases[i].period_ms);
        else
            CHECK(count == 7 && period == 7); /* untouched */
    }
}

/* A temporary file holding data; the caller unlinks path. */
static void write_temp(char *path, const void *data, size_t len)
{
    int fd = mkstemp(path);

    if (fd < 0 || write(fd, data, len) != (ssize_t)len)
        exit(1);
    close(fd);
}

#define SECRET32 "0123456789abcdef0123456789abcdef"

static void test_config_jwt_secret(void)
{
    struct config c;
    struct token_config t;
    char err[256];
    char *argv[] = {A("wsgate"),
                    A("--jwt-secret"),
                    A(SECRET32 "x"),
                    A("--jwt-issuer"),
                    A("https://idp"),
                    A("--jwt-audience"),
                    A("wsgate"),
                    A("--jwt-leeway"),
                    A("2s"),
                    A("--jwt-cookie"),
                    A("session"),
                    A("--jwt-allow-no-exp"),
                    A("--jwt-expiry-code"),
                    A("4401"),
                    NULL};
    char *plain[] = {A("wsgate"), NULL};
    char *env[] = {A("WSGATE_JWT_SECRET=" SECRET32), A("WSGATE_JWT_ALLOW_NO_EXP=1"), NULL};
    char *short_secret[] = {A("wsgate"), A("--jwt-secret"), A("short-secret"), NULL};

    CHECK(parse(&c, argv, NULL) == 0);
    CHECK(config_jwt_enabled(&c) && c.jwt_secret_len == 33);
    CHECK(memcmp(c.jwt_secret, SECRET32 "x", 33) == 0);
    CHECK(strcmp(c.jwt_issuer, "https://idp") == 0 && strcmp(c.jwt_audience, "wsgate") == 0);
    CHECK(c.jwt_leeway_ms == 2000 && c.jwt_allow_no_exp && c.jwt_expiry_code == 4401);
    CHECK(strcmp(c.jwt_cookie, "session") == 0);
    CHECK(!config_query_groups(&c)); /* the token is the only identity */
    config_token_config(&c, &t);
    CHECK(t.secret == c.jwt_secret && t.secret_len == 33 && t.public_key_path == NULL);
    CHECK(strcmp(t.issuer, "https://idp") == 0 && t.leeway_ms == 2000 && t.allow_no_exp);
    CHECK(t.max_groups == 16);
    CHECK(parse(&c, plain, env) == 0);
    CHECK(config_jwt_enabled(&c) && c.jwt_secret_len == 32 && c.jwt_allow_no_exp);
    /* the secret never shows in the message */
    CHECK(parse_err(&c, short_secret, NULL, err, sizeof(err)) == -1);
    CHECK(strstr(err, "short-secret") == NULL && strstr(err, "--jwt-secret") != NULL);
}

static void test_config_jwt_secret_file(void)
{
    struct {
        const char *content;
        size_t len;
        int ok;
        size_t want_len;
    } t[] = {
        {SECRET32 "\n", 33, 1, 32},
        {SECRET32 "\r\n", 34, 1, 32},
        {SECRET32, 32, 1, 32},
        {SECRET32 "\n\n", 34, 1, 33}, /* one newline only is dropped */
        {SECRET32 "\r", 33, 1, 33},
        {"\0\1\2\3\4\5\6\7\0\1\2\3\4\5\6\7\0\1\2\3\4\5\6\7\0\1\2\3\4\5\6\7", 32, 1, 32},
        {"", 0, 0, 0},
        {"\n", 1, 0, 0},
        {"short\n", 6, 0, 0},
    };

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct config c;
        char path[] = "/tmp/wsgate-secret-XXXXXX";
        char *argv[] = {A("wsgate"), A("--jwt-secret-file"), path, NULL};
        int r;

        write_temp(path, t[i].content, t[i].len);
        r = parse(&c, argv, NULL);
        CHECK(t[i].ok ? r == 0 && c.jwt_secret_len == t[i].want_len &&
                            memcmp(c.jwt_secret, t[i].content, t[i].want_len) == 0
                      : r == -1);
        unlink(path);
    }
    {
        struct config c;
        char err[256];
        char *argv[] = {A("wsgate"), A("--jwt-secret-file"), A("/nonexistent/secret"), NULL};
        CHECK(parse_err(&c, argv, NULL, err, sizeof(err)) == -1);
        CHECK(strstr(err, "No such file") != NULL);
    }
}

static char *public_pem(const char *type, const char *param, size_t bits)
{
    EVP_PKEY *k = param != NULL ? EVP_PKEY_Q_keygen(NULL, NULL, type, param)
                                : EVP_PKEY_Q_keygen(NULL, NULL, type, bits);
    BIO *b = BIO_new(BIO_s_mem());
    char *data, *out;
    long n;

    if (k == NULL || b == NULL || PEM_write_bio_PUBKEY(b, k) != 1 ||
        (n = BIO_get_mem_data(b, &data)) <= 0 || (out = strndup(data, (size_t)n)) == NULL)
        exit(1);
    BIO_free(b);
    EVP_PKEY_free(k);
    return out;
}

static void test_config_jwt_public_key(void)
{
    char *p256 = public_pem("EC", "P-256", 0);
    char *rsa1024 = public_pem("RSA", NULL, 1024);
    struct {
        const char *content;
        const char *needle; /* NULL: accepted */
    } t[] = {
        {p256, NULL},
        {rsa1024, "1024 bits"},
        {"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "no PEM public key"},
        {"", "no PEM public key"},
    };

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct config c;
        struct token_config tc;
        char path[] = "/tmp/wsgate-key-XXXXXX";
        char err[256];
        char *argv[] = {A("wsgate"), A("--jwt-public-key"), path, NULL};
        int r;

        write_temp(path, t[i].content, strlen(t[i].content));
        r = parse_err(&c, argv, NULL, err, sizeof(err));
        if (t[i].needle == NULL) {
            CHECK(r == 0 && config_jwt_enabled(&c) && c.jwt_secret_len == 0);
            config_token_config(&c, &tc);
            CHECK(tc.secret == NULL && tc.public_key_path != NULL &&
                  strcmp(tc.public_key_path, path) == 0);
        } else {
            CHECK(r == -1 && strstr(err, t[i].needle) != NULL && strstr(err, path) != NULL);
        }
        unlink(path);
    }
    free(p256);
    free(rsa1024);
}

/* Settings that only make sense together; a JWT option without a key is refused so a
 * gateway is never left open by a forgotten key flag. */
static void test_config_jwt_conflicts(void)
{
    char path[] = "/tmp/wsgate-key-XXXXXX";
    char *pem = public_pem("EC", "P-256", 0);
    static const char *const bad[][5] = {
        /* flags and values ("@key": a good key file), NULL-ended; then the message */
        {"--jwt-secret", SECRET32, "--jwt-public-key", "@key", "only one of"},
        {"--jwt-issuer", "https://idp", NULL, NULL, "need --jwt-secret"},
        {"--jwt-allow-no-exp", NULL, NULL, NULL, "need --jwt-secret"},
        {"--jwt-cookie", "session", NULL, NULL, "need --jwt-secret"},
        {"--jwt-secret", SECRET32, "--query-groups", NULL, "--query-groups"},
        {"--jwt-secret", SECRET32, "--user-header", "X-User", "--user-header"},
        {"--jwt-secret", SECRET32, "--max-groups", "0", "--max-groups"},
    };

    write_temp(path, pem, strlen(pem));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct config c;
        char err[256];
        char *argv[6] = {A("wsgate")};
        int n = 1;

        for (int k = 0; k < 4 && bad[i][k] != NULL; k++)
            argv[n++] = strcmp(bad[i][k], "@key") == 0 ? path : (char *)bad[i][k];
        argv[n] = NULL;
        CHECK(parse_err(&c, argv, NULL, err, sizeof(err)) == -1);
        CHECK(strstr(err, bad[i][4]) != NULL);
        if (strstr(err, bad[i][4]) == NULL)
            fprintf(stderr, "  conflict %zu: %s\n", i, err);
    }
    {
        /* a secret from the environment and a key on the command line are two keys */
        struct config c;
        char err[256];
        char *argv[] = {A("wsgate"), A("--jwt-public-key"), path, NULL};
        char *env[] = {A("WSGATE_JWT_SECRET=" SECRET32), NULL};
        char *ok[] = {A("wsgate"),          A("--jwt-public-key"), path,
                      A("--groups-header"), A("X-Groups"),         NULL};
        char *twin[] = {A("wsgate"), A("--jwt-secret"), A(SECRET32 "-flag"), NULL};

        CHECK(parse_err(&c, argv, env, err, sizeof(err)) == -1 && strstr(err, "only one of"));
        CHECK(parse(&c, ok, NULL) == 0 && config_jwt_enabled(&c));
        CHECK(parse(&c, twin, env) == 0 && c.jwt_secret_len == 37); /* the flag wins */
    }
    unlink(path);
    free(pem);
}

static void test_config_jwt_rejects_bad_values(void)
{
    static const char *const bad[][2] = {
        {"--jwt-secret", "31-bytes-31-bytes-31-bytes-31-b"},
        {"--jwt-secret", ""},
        {"--jwt-public-key", ""},
        {"--jwt-public-key", "/nonexistent/key.pem"},
        {"--jwt-leeway", "2h"},
        {"--jwt-leeway", "-1s"},
        {"--jwt-expiry-code", "1005"},
        {"--jwt-expiry-code", "1010"},
        {"--jwt-expiry-code", "5000"},
        {"--jwt-expiry-code", "999"},
        {"--jwt-expiry-code", "x"},
        {"--jwt-cookie", "bad name"},
        {"--jwt-cookie", "a;b"},
        {"--jwt-issuer", "a\tb"},
        {"--jwt-audience", "\xff"},
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct config c;
        char *argv[] = {A("wsgate"),       A("--jwt-secret"), A(SECRET32),
                        (char *)bad[i][0], (char *)bad[i][1], NULL};
        CHECK(parse(&c, argv, NULL) == -1);
    }
    {
        struct config c;
        char *argv[] = {A("wsgate"), A("--jwt-secret"), A(SECRET32), A("--jwt-expiry-code"),
                        A("1000"),   A("--jwt-leeway"), A("0"),      NULL};
        CHECK(parse(&c, argv, NULL) == 0 && c.jwt_expiry_code == 1000 && c.jwt_leeway_ms == 0);
    }
}

/* --tls-cert and --tls-key: both or neither, loaded and matched before any process
 * starts; their twins; --tls-min-version only with them; a ticket key drawn. */
static void test_config_tls(void)
{
    char cert[] = "/tmp/wsgate-crt-XXXXXX", key[] = "/tmp/wsgate-key-XXXXXX";
    char cert2[] = "/tmp/wsgate-crt-XXXXXX", key2[] = "/tmp/wsgate-key-XXXXXX";
    char err[512], env_cert[64], env_key[64];
    static const uint8_t zero[CONFIG_TLS_TICKET_KEY];
    struct config c;

    write_temp(cert, "", 0);
    write_temp(key, "", 0);
    write_temp(cert2, "", 0);
    write_temp(key2, "", 0);
    if (check_make_cert("localhost", 1, 30, cert, key) < 0 ||
        check_make_cert("other", 2, 30, cert2, key2) < 0)
        exit(1);
    {
        char *argv[] = {A("wsgate"), A("--tls-cert"), cert, A("--tls-key"), key, NULL};
        CHECK(parse(&c, argv, NULL) == 0 && config_tls_enabled(&c));
        CHECK(c.tls_min_version == 0x0303 && strcmp(c.tls_key, key) == 0);
        CHECK(memcmp(c.tls_ticket_key, zero, sizeof(zero)) != 0);
    }
    {
        char *argv[] = {A("wsgate"), NULL};
        CHECK(parse(&c, argv, NULL) == 0 && !config_tls_enabled(&c));
        CHECK(memcmp(c.tls_ticket_key, zero, sizeof(zero)) == 0);
    }
    {
        char *argv[] = {A("wsgate"), A("--tls-min-version"), A("1.3"), NULL};
        char *env[] = {env_cert, env_key, NULL};
        snprintf(env_cert, sizeof(env_cert), "WSGATE_TLS_CERT=%s", cert);
        snprintf(env_key, sizeof(env_key), "WSGATE_TLS_KEY=%s", key);
        CHECK(parse(&c, argv, env) == 0 && config_tls_enabled(&c) && c.tls_min_version == 0x0304);
    }
    {
        char *argv[] = {A("wsgate"), A("--tls-key"), A(""), NULL}; /* "" turns it off */
        char *env[] = {env_cert, env_key, NULL};
        CHECK(parse_err(&c, argv, env, err, sizeof(err)) == -1 &&
              strstr(err, "give both or neither") != NULL);
    }
    {
        static const struct {
            const char *flag1, *v1, *flag2, *v2, *needle;
        } t[] = {
            {"--tls-cert", "@cert", NULL, NULL, "give both or neither"},
            {"--tls-key", "@key", NULL, NULL, "give both or neither"},
            {"--tls-min-version", "1.2", NULL, NULL, "needs --tls-cert"},
            {"--tls-cert", "@cert", "--tls-key", "@key2", "does not match"},
            {"--tls-cert", "@cert", "--tls-key", "/nonexistent/k.pem", "No such file"},
            {"--tls-cert", "/nonexistent/c.pem", "--tls-key", "@key", "No such file"},
            {"--tls-cert", "@key", "--tls-key", "@key", "not a PEM certificate"},
            {"--tls-min-version", "1.1", NULL, NULL, "expected 1.2 or 1.3"},
            {"--tls-min-version", "1.0", NULL, NULL, "expected 1.2 or 1.3"},
        };
        for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
            const char *v1 = t[i].v1, *v2 = t[i].v2;
            char *argv[6] = {A("wsgate")};
            int n = 1;
            v1 = strcmp(v1, "@cert") == 0 ? cert : strcmp(v1, "@key") == 0 ? key : v1;
            if (v2 != NULL)
                v2 = strcmp(v2, "@key") == 0 ? key : strcmp(v2, "@key2") == 0 ? key2 : v2;
            argv[n++] = A(t[i].flag1);
            argv[n++] = A(v1);
            if (t[i].flag2 != NULL) {
                argv[n++] = A(t[i].flag2);
                argv[n++] = A(v2);
            }
            argv[n] = NULL;
            CHECK(parse_err(&c, argv, NULL, err, sizeof(err)) == -1 &&
                  strstr(err, t[i].needle) != NULL);
            if (strstr(err, t[i].needle) == NULL)
                fprintf(stderr, "  case %zu: %s\n", i, err);
        }
    }
    unlink(cert);
    unlink(key);
    unlink(cert2);
    unlink(key2);
}

void suite_config(void)
{
    test_config_defaults();
    test_config_flags_and_env();
    test_config_trusted_headers_turn_query_groups_off();
    test_config_limits_at_their_bounds();
    test_config_redis_timeout_from_env();
    test_config_ipv6_listen();
    test_config_memory_bounds();
    test_config_inbound();
    test_config_max_send();
    test_config_deflate();
    test_config_rejects_bad_values();
    test_config_rejects_bad_env();
    test_config_order_keys_and_their_twin();
    test_config_orders_stream_and_tombstones();
    test_config_refuses_bad_order_keys_quietly();
    test_config_help();
    test_config_units();
    test_config_allow_origin();
    test_config_limits_per_address();
    test_config_rates();
    test_config_jwt_secret();
    test_config_jwt_secret_file();
    test_config_jwt_public_key();
    test_config_jwt_conflicts();
    test_config_jwt_rejects_bad_values();
    test_config_tls();
}
