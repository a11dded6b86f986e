#include <string.h>

#include "common/config.h"
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
    CHECK(config_query_groups(&c) && c.max_groups == 16 && !c.echo && !c.redis_given);
    CHECK(c.stall_timeout_ms == 2000 && c.stall_kill_ms == 10000 && c.max_admin_conns == 8);
    CHECK(c.allow_origin.n == 0 && c.max_conns_per_ip == 0 && c.max_handshakes_per_ip == 0);
    CHECK(!c.proxy_protocol);
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
                    NULL};
    char *envp[] = {A("WSGATE_WORKERS=5"), A("WSGATE_PING_INTERVAL=2m"),
                    A("WSGATE_REDIS=redis://h:1/2"), A("WSGATE_ECHO=0"), NULL};

    CHECK(parse(&c, argv, envp) == 0);
    CHECK(strcmp(c.listen_host, "127.0.0.1") == 0 && c.listen_port == 9001);
    CHECK(c.workers == 3); /* the flag wins over its twin */
    CHECK(c.echo);
    CHECK(c.max_header == 16384 && c.close_timeout_ms == 500);
    CHECK(c.ping_interval_ms == 120000);
    CHECK(c.redis_given && strcmp(c.redis, "redis://h:1/2") == 0);
    CHECK(!config_query_groups(&c));
    CHECK(strcmp(c.id, "gw-a.1") == 0);
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
        {"--channel", "", NULL},
        {"--groups-header", "Bad Header", NULL},
        {"--max-groups", "-1", NULL},
        {"--max-groups", "1025", NULL},
        {"--stall-timeout", "0", NULL},
        {"--stall-timeout", "50ms", NULL},
        {"--stall-kill", "500ms", NULL},
        {"--stall-kill", "2h", NULL},
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

void suite_config(void)
{
    test_config_defaults();
    test_config_flags_and_env();
    test_config_trusted_headers_turn_query_groups_off();
    test_config_limits_at_their_bounds();
    test_config_ipv6_listen();
    test_config_rejects_bad_values();
    test_config_rejects_bad_env();
    test_config_order_keys_and_their_twin();
    test_config_refuses_bad_order_keys_quietly();
    test_config_help();
    test_config_units();
    test_config_allow_origin();
    test_config_limits_per_address();
    test_config_rates();
}
