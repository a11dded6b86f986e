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
    CHECK(c.query_groups && c.max_groups == 16 && !c.echo && !c.redis_given);
    CHECK(c.max_outbound == 1048576 && c.max_jobs == 1000);
    CHECK(c.max_pending >= 1048576 && c.max_pending <= CONFIG_MAX_PENDING_CAP);
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
    CHECK(!c.query_groups);
    CHECK(strcmp(c.id, "gw-a.1") == 0);
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
        {"--max-outbound", "100", NULL},
        {"--max-outbound", "2g", NULL},
        {"--max-pending", "0", NULL},
        {"--max-pending", "lots", NULL},
        {"--max-jobs", "0", NULL},
        {"--max-jobs", "1000001", NULL},
        {"--nope", NULL, NULL},
        {"--echo=1", NULL, NULL},
        {"positional", NULL, NULL},
        {"--listen", NULL, NULL},
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

    CHECK(parse(&c, argv, env1) == -1);
    CHECK(parse(&c, argv, env2) == -1);
}

static void test_config_help(void)
{
    struct config c;
    char *argv[] = {A("wsgate"), A("--workers"), A("bad"), A("--help"), NULL};

    CHECK(parse(&c, argv, NULL) == 1);
    CHECK(strstr(config_usage(), "--close-timeout") != NULL);
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

void suite_config(void)
{
    test_config_defaults();
    test_config_flags_and_env();
    test_config_ipv6_listen();
    test_config_memory_bounds();
    test_config_rejects_bad_values();
    test_config_rejects_bad_env();
    test_config_help();
    test_config_units();
}
