#include <string.h>

#include "common/origin.h"
#include "tests/unit/check.h"

/* An allowed origin as written → as kept (origin_format). */
static void test_origin_normalises_allowed_origins(void)
{
    static const char *const cases[][2] = {
        {"https://example.com", "https://example.com"},
        {"HTTPS://Example.COM", "https://example.com"},
        {"https://example.com:443", "https://example.com"},
        {"http://example.com:80", "http://example.com"},
        {"http://example.com:443", "http://example.com:443"},
        {"https://example.com:80", "https://example.com:80"},
        {"https://example.com:8443", "https://example.com:8443"},
        {"https://*.Example.com", "https://*.example.com"},
        {"https://*.example.com:8443", "https://*.example.com:8443"},
        {"http://localhost:8080", "http://localhost:8080"},
        {"http://127.0.0.1:3000", "http://127.0.0.1:3000"},
        {"http://[::1]:8080", "http://[::1]:8080"},
        {"http://[0:0::1]", "http://[::1]"},
        {"https://[2001:DB8:0:0:0:0:0:1]", "https://[2001:db8::1]"},
        {"http://[::ffff:1.2.3.4]", "http://[::ffff:1.2.3.4]"},
        {"https://xn--bcher-kva.example", "https://xn--bcher-kva.example"},
        {"https://a_b-c.example.com", "https://a_b-c.example.com"},
        {"https://example.com:65535", "https://example.com:65535"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct origin_list l = {0};
        const char *why = NULL;
        char out[300];

        CHECK(origin_list_add(&l, cases[i][0], &why) == 0 && l.n == 1);
        CHECK(origin_format(&l.o[0], out, sizeof(out)) == strlen(cases[i][1]));
        if (strcmp(out, cases[i][1]) != 0) {
            fprintf(stderr, "  %s -> %s, want %s\n", cases[i][0], out, cases[i][1]);
            CHECK(0);
        }
    }
}

static void test_origin_refuses_what_is_not_an_origin(void)
{
    static const char *const bad[] = {
        "",
        "null",
        "*",
        "example.com",
        "ws://example.com",
        "ftp://example.com",
        "https:/example.com",
        "https://",
        "https://:443",
        "https://example.com/",
        "https://example.com/app",
        "https://example.com?x=1",
        "https://example.com#top",
        "https://user@example.com",
        "https://user:pw@example.com",
        "https://example.com:",
        "https://example.com:0",
        "https://example.com:0443",
        "https://example.com:65536",
        "https://example.com:123456",
        "https://example.com:8a",
        "https://example.com:443/",
        "https://example.com:443:1",
        "https://exa mple.com",
        "https://exa\tmple.com",
        "https://ex\x01"
        "ample.com",
        "https://b\xc3\xbc"
        "cher.example",
        "https://example..com",
        "https://.example.com",
        "https://example.com.",
        "https://*",
        "https://*.",
        "https://*.com",
        "https://**.example.com",
        "https://*a.example.com",
        "https://a.*.example.com",
        "https://example.*",
        "https://*.*.example.com",
        "https://*.1.2.3",
        "https://*.[::1]",
        "http://010.0.0.1",
        "http://1.2.3",
        "http://1.2.3.256",
        "http://0x7f.0.0.1",
        "http://example.0x1",
        "https://[::1",
        "https://[zz::1]",
        "https://[fe80::1%25eth0]",
        "https://[::1]x",
        "https://[1:2:3:4:5:6:7:8:9]",
        "https://a.com%2f@evil.com",
        "https://example.com\\@evil.com",
    };
    char label64[100], long_host[300];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct origin_list l = {0};
        const char *why = NULL;

        if (origin_list_add(&l, bad[i], &why) != -1 || why == NULL || l.n != 0) {
            fprintf(stderr, "  accepted: '%s'\n", bad[i]);
            CHECK(0);
        } else {
            CHECK(1);
        }
    }

    {
        struct origin_list l = {0};
        const char *why = NULL;
        /* a 63-byte label is the most a DNS label can be, 64 is one too many */
        snprintf(label64, sizeof(label64), "https://%.63s.com",
                 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        CHECK(origin_list_add(&l, label64, &why) == 0);
        snprintf(label64, sizeof(label64), "https://%.64s.com",
                 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        CHECK(origin_list_add(&l, label64, &why) == -1);
        /* 253 bytes of host is the most, 254 too many: three labels of 63, one of 61 */
        strcpy(long_host, "https://");
        for (int k = 0; k < 3; k++)
            strcat(long_host, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.");
        strcat(long_host, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
        CHECK(strlen(long_host) == 8 + 253);
        CHECK(origin_list_add(&l, long_host, &why) == 0);
        strcat(long_host, "b");
        CHECK(origin_list_add(&l, long_host, &why) == -1 && l.n == 2);
    }
}

static void test_origin_null_is_refused_with_a_reason(void)
{
    struct origin_list l = {0};
    const char *why = NULL;

    CHECK(origin_list_add(&l, "null", &why) == -1);
    CHECK(why != NULL && strstr(why, "sandboxed") != NULL);
}

static void test_origin_list_is_bounded_and_without_duplicates(void)
{
    struct origin_list l = {0};
    const char *why = NULL;
    char s[64];

    CHECK(origin_list_add(&l, "https://example.com", &why) == 0);
    CHECK(origin_list_add(&l, "HTTPS://EXAMPLE.COM:443", &why) == 0 && l.n == 1);
    for (int i = 1; i < ORIGIN_LIST_MAX; i++) {
        snprintf(s, sizeof(s), "https://h%d.example.com", i);
        CHECK(origin_list_add(&l, s, &why) == 0);
    }
    CHECK(l.n == ORIGIN_LIST_MAX);
    CHECK(origin_list_add(&l, "https://h1.example.com", &why) == 0); /* already there */
    why = NULL;
    CHECK(origin_list_add(&l, "https://one-too-many.example.com", &why) == -1);
    CHECK(why != NULL && l.n == ORIGIN_LIST_MAX);
}

static void test_origin_allowed_table(void)
{
    static const char *const allow[] = {
        "https://example.com", "https://*.example.org", "http://localhost:8080",
        "http://[::1]:3000",   "http://127.0.0.1",
    };
    static const struct {
        const char *header; /* NULL: no Origin header */
        bool want;
    } cases[] = {
        {NULL, true}, /* not a browser */
        {"https://example.com", true},
        {"https://EXAMPLE.COM", true},
        {"HTTPS://example.com", true},
        {"https://example.com:443", true},
        {"http://example.com", false},
        {"https://example.com:8443", false},
        {"https://example.com/", false},
        {"https://example.com.", false},
        {"https://a.example.com", false},
        {"https://evil.com", false},
        {"https://example.com.evil.com", false},
        {"https://evilexample.com", false},
        {"https://example.com@evil.com", false},
        {"https://evil.com#https://example.com", false},
        {"https://example.com https://evil.com", false},
        {"https://example.com,https://evil.com", false},
        {"https://a.example.org", true},
        {"https://A.Example.Org", true},
        {"https://a.example.org:443", true},
        {"https://xn--bcher-kva.example.org", true},
        {"https://example.org", false},
        {"https://.example.org", false},
        {"https://a.b.example.org", false},
        {"https://aexample.org", false},
        {"https://a.example.org.evil.com", false},
        {"http://a.example.org", false},
        {"https://a.example.org:8443", false},
        {"https://*.example.org", false},
        {"http://localhost:8080", true},
        {"http://localhost", false},
        {"http://localhost:80", false},
        {"http://[::1]:3000", true},
        {"http://[0:0:0:0:0:0:0:1]:3000", true},
        {"http://[::2]:3000", false},
        {"http://[::1]", false},
        {"http://127.0.0.1", true},
        {"http://127.0.0.1:80", true},
        {"http://127.0.0.01", false},
        {"http://2130706433", false},
        {"null", false},
        {"", false},
        {"file://", false},
        {"chrome-extension://abcdefghijklmnop", false},
    };
    struct origin_list l = {0};
    const char *why;

    for (size_t i = 0; i < sizeof(allow) / sizeof(allow[0]); i++)
        CHECK(origin_list_add(&l, allow[i], &why) == 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool got = origin_allowed(&l, cases[i].header);
        if (got != cases[i].want) {
            fprintf(stderr, "  Origin: %s -> %d, want %d\n",
                    cases[i].header ? cases[i].header : "(none)", got, cases[i].want);
            CHECK(0);
        } else {
            CHECK(1);
        }
    }
}

/* Without --allow-origin nothing changes: every request passes, "null" too. */
static void test_origin_empty_list_allows_everything(void)
{
    struct origin_list l = {0};

    CHECK(origin_allowed(&l, NULL));
    CHECK(origin_allowed(&l, "https://anything.example"));
    CHECK(origin_allowed(&l, "null"));
    CHECK(origin_allowed(&l, "not an origin"));
}

static void test_origin_format_bounds(void)
{
    struct origin_list l = {0};
    const char *why;
    char out[32];

    CHECK(origin_list_add(&l, "http://[::1]:8080", &why) == 0);
    CHECK(origin_format(&l.o[0], out, 18) == 17 && strcmp(out, "http://[::1]:8080") == 0);
    CHECK(origin_format(&l.o[0], out, 17) == 0);
}

void suite_origin(void)
{
    test_origin_normalises_allowed_origins();
    test_origin_refuses_what_is_not_an_origin();
    test_origin_null_is_refused_with_a_reason();
    test_origin_list_is_bounded_and_without_duplicates();
    test_origin_allowed_table();
    test_origin_empty_list_allows_everything();
    test_origin_format_bounds();
}
