#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/order.h"
#include "common/order_sig.h"
#include "tests/unit/check.h"

#define SECRET1 "s3cret-key-one-0123456789"
#define SECRET2 "s3cret-key-two-0123456789"
#define SECRET3 "s3cret-key-three-01234567"

static const char order_body[] =
    "{\"id\":\"o1\",\"ts\":1700000000000,\"group\":\"room:1\",\"code\":4001,\"reason\":\"bye\"}";

static void ring_of(struct order_sig_ring *ring, const char *keys)
{
    char err[200];

    memset(ring, 0, sizeof(*ring));
    CHECK(order_sig_ring_add(ring, keys, err, sizeof(err)) == 0);
}

/* order_sig_open on a copy of text that ends exactly at its allocation. */
static int open_text(const struct order_sig_ring *ring, const char *text, size_t len, char **body,
                     size_t *body_len, struct order_error *err)
{
    uint8_t *buf = check_dup_exact(text, len);
    int r = order_sig_open(ring, (const char *)buf, len, body, body_len, err);

    free(buf);
    return r;
}

/* An envelope with the three fields as given, each raw JSON text. */
static char *envelope(const char *kid, const char *sig, const char *body)
{
    char *s = NULL;

    if (asprintf(&s, "{\"kid\":%s,\"sig\":%s,\"body\":%s}", kid, sig, body) < 0)
        return NULL;
    return s;
}

/* The lower-case hex sig that order_sig_seal() writes for body with key. */
static void sig_of(const struct order_sig_key *key, const char *body, size_t len, char hex[65])
{
    char *env = order_sig_seal(key, body, len);
    json_t *root = env != NULL ? json_loads(env, 0, NULL) : NULL;
    const char *s = json_string_value(json_object_get(root, "sig"));

    CHECK(s != NULL && strlen(s) == 64);
    snprintf(hex, 65, "%s", s != NULL ? s : "");
    json_decref(root);
    free(env);
}

static void test_order_sig_ring_accepts_keys_and_lists(void)
{
    struct order_sig_ring ring = {0};
    char err[200];

    CHECK(order_sig_ring_add(&ring, "k1:" SECRET1, err, sizeof(err)) == 0 && ring.n == 1);
    CHECK(strcmp(ring.keys[0].kid, "k1") == 0 && ring.keys[0].secret_len == strlen(SECRET1));
    CHECK(memcmp(ring.keys[0].secret, SECRET1, strlen(SECRET1)) == 0);
    CHECK(order_sig_ring_add(&ring, " k.2_x-Y:" SECRET2 ", k3:" SECRET3 "\t", err, sizeof(err)) ==
          0);
    CHECK(ring.n == 3 && strcmp(ring.keys[1].kid, "k.2_x-Y") == 0);
    CHECK(order_sig_ring_find(&ring, "k3", 2) == &ring.keys[2]);
    CHECK(order_sig_ring_find(&ring, "k", 1) == NULL);
    /* The secret is everything after the first colon, colons included. */
    CHECK(order_sig_ring_add(&ring, "k4:a:b:c:d:e:f:g:h:i", err, sizeof(err)) == 0);
    CHECK(ring.keys[3].secret_len == 17 &&
          memcmp(ring.keys[3].secret, "a:b:c:d:e:f:g:h:i", 17) == 0);
    order_sig_ring_clear(&ring);
    CHECK(ring.n == 0 && ring.keys[0].secret[0] == 0 && ring.keys[0].secret_len == 0);
}

static void test_order_sig_ring_refuses_bad_keys_without_echoing_secrets(void)
{
    static const char *const bad[] = {
        "",
        " , ",
        "nocolon0123456789abcdef",
        ":" SECRET1,
        "k/1:" SECRET1,
        "k 1:" SECRET1,
        "kid\xc3\xa9:" SECRET1,
        "0123456789012345678901234567890123456789012345678901234567890123X:" SECRET1,
        "k1:short-secret-",
        "k1:s3cret\x01key-one-0123456789",
        "k1:s3cret\x7fkey-one-0123456789",
        "k1:s3cret-key-\xc3\xa9-0123456789",
        "k1:" SECRET1 ",k1:" SECRET2,
        "k1:" SECRET1 ",k2:" SECRET2 ",k3:" SECRET3 ",k4:" SECRET1 ",k5:" SECRET1 ",k6:" SECRET1
        ",k7:" SECRET1 ",k8:" SECRET1 ",k9:" SECRET1,
        "k1:" SECRET1 ",junk",
    };
    char longer[300];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct order_sig_ring ring = {0};
        char err[200] = "";

        CHECK(order_sig_ring_add(&ring, bad[i], err, sizeof(err)) == -1);
        CHECK(ring.n == 0 && err[0] != '\0');
        CHECK(strstr(err, "s3cret") == NULL && strstr(err, "0123456789abcdef") == NULL);
    }
    /* A secret of 256 bytes is the longest. */
    memset(longer, 'x', sizeof(longer));
    memcpy(longer, "k1:", 3);
    longer[3 + 256] = '\0';
    {
        struct order_sig_ring ring = {0};
        char err[200];

        CHECK(order_sig_ring_add(&ring, longer, err, sizeof(err)) == 0 && ring.n == 1);
        longer[3 + 256] = 'x';
        longer[3 + 257] = '\0';
        CHECK(order_sig_ring_add(&ring, "k2:" SECRET2, err, sizeof(err)) == 0);
        CHECK(order_sig_ring_add(&ring, longer, err, sizeof(err)) == -1);
        CHECK(ring.n == 2); /* a refused list leaves the ring as it was */
        CHECK(order_sig_ring_add(&ring, "k9:" SECRET1 " k2:" SECRET3, err, sizeof(err)) == -1);
        CHECK(ring.n == 2 && order_sig_ring_find(&ring, "k9", 2) == NULL);
    }
}

/* RFC 4231 test case 2: HMAC-SHA-256 of "what do ya want for nothing?" keyed "Jefe". */
static void test_order_sig_seal_matches_rfc4231(void)
{
    struct order_sig_key key = {.kid = "jefe", .secret = "Jefe", .secret_len = 4};
    static const char data[] = "what do ya want for nothing?";
    char *env = order_sig_seal(&key, data, sizeof(data) - 1);

    CHECK(env != NULL &&
          strcmp(env, "{\"kid\":\"jefe\",\"sig\":\"5bdcc146bf60754e6a042426089575c75a003f089d2739"
                      "839dec58b964ec3843\",\"body\":\"what do ya want for nothing?\"}") == 0);
    free(env);
    CHECK(order_sig_seal(&key, "\xff", 1) == NULL); /* a body must be UTF-8 */
}

static void test_order_sig_open_table(void)
{
    struct order_sig_ring ring;
    const struct order_sig_key *k1, *k2;
    struct order_sig_key k3 = {.kid = "k3", .secret = SECRET3, .secret_len = sizeof(SECRET3) - 1};
    char good[65], upper[65], other[65], bad1[65], *body_json;
    static const char other_body[] = "{\"id\":\"o2\",\"ts\":1700000000000,\"all\":true}";
    struct {
        char *text;
        const char *key; /* NULL: opens to want */
        const char *want;
    } cases[32];
    size_t n = 0;

    ring_of(&ring, "k1:" SECRET1 ",k2:" SECRET2);
    k1 = order_sig_ring_find(&ring, "k1", 2);
    k2 = order_sig_ring_find(&ring, "k2", 2);
    sig_of(k1, order_body, sizeof(order_body) - 1, good);
    sig_of(k1, other_body, sizeof(other_body) - 1, other);
    for (size_t i = 0; i < 65; i++)
        upper[i] = (char)(good[i] >= 'a' && good[i] <= 'f' ? good[i] - 32 : good[i]);
    memcpy(bad1, good, 65);
    bad1[10] = bad1[10] == '0' ? '1' : '0';
    {
        json_t *js = json_string(order_body);
        body_json = json_dumps(js, JSON_ENCODE_ANY);
        json_decref(js);
    }

#define ADD(t, k, w) (cases[n].text = (t), cases[n].key = (k), cases[n].want = (w), n++)
    ADD(order_sig_seal(k1, order_body, sizeof(order_body) - 1), NULL, order_body);
    ADD(order_sig_seal(k2, order_body, sizeof(order_body) - 1), NULL, order_body); /* rotation */
    ADD(order_sig_seal(&k3, order_body, sizeof(order_body) - 1), "kid", NULL);
    ADD(envelope("\"k1\"", "\"x\"", body_json), "signature", NULL);
    {
        char q[80];
        snprintf(q, sizeof(q), "\"%s\"", upper);
        ADD(envelope("\"k1\"", q, body_json), NULL, order_body);
        snprintf(q, sizeof(q), "\"%s\"", bad1);
        ADD(envelope("\"k1\"", q, body_json), "signature", NULL);
        snprintf(q, sizeof(q), "\"%s\"", other); /* a signature over another body */
        ADD(envelope("\"k1\"", q, body_json), "signature", NULL);
        snprintf(q, sizeof(q), "\"%.63s\"", good); /* 63 digits */
        ADD(envelope("\"k1\"", q, body_json), "signature", NULL);
        snprintf(q, sizeof(q), "\"%.63sg\"", good);
        ADD(envelope("\"k1\"", q, body_json), "signature", NULL);
        snprintf(q, sizeof(q), "\"%s0\"", good); /* 65 digits */
        ADD(envelope("\"k1\"", q, body_json), "signature", NULL);
        snprintf(q, sizeof(q), "\"%s\"", good); /* signed by k1, named k2 */
        ADD(envelope("\"k2\"", q, body_json), "signature", NULL);
        ADD(envelope("\"nope\"", q, body_json), "kid", NULL);
        ADD(envelope("\"bad kid\\n\"", q, body_json), "kid", NULL);
        ADD(envelope("\"\"", q, body_json), "kid", NULL);
        ADD(envelope("1", q, body_json), "envelope", NULL);
        ADD(envelope("\"k1\"", "null", body_json), "envelope", NULL);
        ADD(envelope("\"k1\"", q, order_body), "envelope", NULL); /* body not a string */
        ADD(envelope("\"k1\"", q, "[\"x\"]"), "envelope", NULL);
        {
            char *t = NULL;
            CHECK(asprintf(&t, "{\"kid\":\"k1\",\"sig\":\"%s\",\"body\":%s,\"x\":1}", good,
                           body_json) > 0);
            ADD(t, "envelope", NULL); /* an extra field */
            CHECK(asprintf(&t, "{\"kid\":\"k1\",\"sig\":\"%s\"}", good) > 0);
            ADD(t, "envelope", NULL); /* no body */
            CHECK(asprintf(&t, "{\"kid\":\"k1\",\"kid\":\"k1\",\"sig\":\"%s\",\"body\":%s}", good,
                           body_json) > 0);
            ADD(t, "envelope", NULL); /* a field twice */
        }
    }
    ADD(strdup(order_body), "unsigned", NULL);
    ADD(strdup("{}"), "unsigned", NULL);
    ADD(strdup("[]"), "envelope", NULL);
    ADD(strdup("\"x\""), "envelope", NULL);
    ADD(strdup("{\"kid\":"), "envelope", NULL);
    ADD(strdup(""), "envelope", NULL);
#undef ADD
    CHECK(n <= sizeof(cases) / sizeof(cases[0]));

    for (size_t i = 0; i < n; i++) {
        struct order_error err = {0};
        char *body = (char *)"untouched";
        size_t blen = 99;
        int r;

        CHECK(cases[i].text != NULL);
        if (cases[i].text == NULL)
            continue;
        r = open_text(&ring, cases[i].text, strlen(cases[i].text), &body, &blen, &err);
        if (cases[i].key == NULL) {
            CHECK(r == 0 && blen == strlen(cases[i].want) &&
                  memcmp(body, cases[i].want, blen) == 0);
            CHECK(r == 0 && body[blen] == '\0');
            if (r != 0)
                fprintf(stderr, "  case %zu: %s: %s\n", i, err.key, err.text);
            if (r == 0)
                free(body);
        } else {
            CHECK(r == -1 && body == NULL && blen == 0);
            CHECK(err.key != NULL && strcmp(err.key, cases[i].key) == 0 && err.text[0] != '\0');
            if (err.key == NULL || strcmp(err.key, cases[i].key) != 0)
                fprintf(stderr, "  case %zu: got %s (%s), want %s\n", i, err.key, err.text,
                        cases[i].key);
            CHECK(strstr(err.text, "\n") == NULL); /* the kid is echoed only when plain */
        }
        free(cases[i].text);
    }
    free(body_json);
}

/* What is signed is the body string after unescaping: however the envelope escapes it. */
static void test_order_sig_signs_the_unescaped_utf8_bytes(void)
{
    struct order_sig_ring ring;
    static const char body[] = "{\"id\":\"\xc3\xa9\\\"\",\"reason\":\"\xf0\x9f\x98\x80\\n\"}";
    static const char escaped[] =
        "\"{\\\"id\\\":\\\"\\u00e9\\\\\\\"\\\",\\\"reason\\\":\\\"\\ud83d\\ude00\\\\n\\\"}\"";
    char sig[65], q[80], *t, *got;
    size_t glen;
    struct order_error err;

    ring_of(&ring, "k1:" SECRET1);
    sig_of(&ring.keys[0], body, sizeof(body) - 1, sig);
    snprintf(q, sizeof(q), "\"%s\"", sig);
    t = envelope("\"k1\"", q, escaped);
    CHECK(open_text(&ring, t, strlen(t), &got, &glen, &err) == 0);
    CHECK(glen == sizeof(body) - 1 && memcmp(got, body, glen) == 0);
    free(got);
    free(t);
    /* A NUL in the body is part of what is signed; order_parse() judges it later. */
    {
        static const char nul_body[] = "{\"id\":\"a\0b\"}";
        char *env = order_sig_seal(&ring.keys[0], nul_body, sizeof(nul_body) - 1);

        CHECK(env != NULL && strstr(env, "\\u0000") != NULL);
        CHECK(env != NULL && open_text(&ring, env, strlen(env), &got, &glen, &err) == 0);
        CHECK(glen == sizeof(nul_body) - 1 && memcmp(got, nul_body, glen) == 0);
        free(got);
        free(env);
    }
}

static void test_order_sig_size_limits(void)
{
    struct order_sig_ring ring;
    struct order_error err;
    char *big, *env, *got;
    size_t glen;

    ring_of(&ring, "k1:" SECRET1);
    big = malloc(ORDER_SIG_MAX_BYTES + 1);
    memset(big, ' ', ORDER_SIG_MAX_BYTES + 1);
    CHECK(open_text(&ring, big, ORDER_SIG_MAX_BYTES + 1, &got, &glen, &err) == -1);
    CHECK(strcmp(err.key, "too_big") == 0);
    /* The biggest body passes; one byte more does not, signed or not. */
    memset(big, 'a', ORDER_MAX_BYTES + 1);
    env = order_sig_seal(&ring.keys[0], big, ORDER_MAX_BYTES);
    CHECK(env != NULL && open_text(&ring, env, strlen(env), &got, &glen, &err) == 0);
    CHECK(glen == ORDER_MAX_BYTES);
    free(got);
    free(env);
    env = order_sig_seal(&ring.keys[0], big, ORDER_MAX_BYTES + 1);
    CHECK(env != NULL && open_text(&ring, env, strlen(env), &got, &glen, &err) == -1);
    CHECK(strcmp(err.key, "too_big") == 0);
    free(env);
    free(big);
}

/* A signed send order may be as large as its payload needs: order_sig_open_with() takes
 * the body limit of the worker's order_max_text(), and a send of 200 KiB of text then
 * opens and parses; order_sig_open() keeps the 64 KiB limit. */
static void test_order_sig_open_with_a_send_body(void)
{
    struct order_limits lim = {256 * 1024, NULL};
    struct order_sig_ring ring;
    struct order_error err;
    struct order o;
    size_t n = 200 * 1024, blen, glen;
    char *body = malloc(n + 64), *env, *got = NULL;
    uint8_t *buf;

    ring_of(&ring, "k1:" SECRET1);
    CHECK(body != NULL);
    if (body == NULL)
        return;
    blen =
        (size_t)sprintf(body, "{\"id\":\"s1\",\"ts\":1,\"op\":\"send\",\"all\":true,\"text\":\"");
    memset(body + blen, 'x', n);
    blen += n;
    blen += (size_t)sprintf(body + blen, "\"}");
    env = order_sig_seal(&ring.keys[0], body, blen);
    CHECK(env != NULL);
    buf = check_dup_exact(env, strlen(env));
    CHECK(order_sig_open(&ring, (const char *)buf, strlen(env), &got, &glen, &err) == -1);
    CHECK(strcmp(err.key, "too_big") == 0);
    CHECK(order_sig_open_with(&ring, (const char *)buf, strlen(env), order_max_text(&lim), &got,
                              &glen, &err) == 0);
    CHECK(glen == blen && got != NULL && memcmp(got, body, blen) == 0);
    CHECK(got != NULL && order_parse_with(got, glen, &lim, &o, &err) == 0);
    CHECK(o.op == ORDER_OP_SEND && o.payload_len == n && !o.binary);
    order_cleanup(&o);
    /* Over the body limit: refused before the signature is checked. */
    free(got);
    CHECK(order_sig_open_with(&ring, (const char *)buf, strlen(env), blen - 1, &got, &glen, &err) ==
          -1);
    CHECK(strcmp(err.key, "too_big") == 0 && got == NULL);
    CHECK(order_sig_max_text(SIZE_MAX) == SIZE_MAX && order_sig_max_text(0) == 1024);
    free(buf);
    free(env);
    free(body);
}

/* The rules of a verified order: ts and id, not older nor further ahead than max age. */
static void test_order_check_signed_table(void)
{
    static const long long now = 1700000060000LL;
    static const struct {
        const char *text;
        const char *key; /* NULL: accepted */
    } cases[] = {
        {"{\"id\":\"a\",\"ts\":1700000060000,\"all\":true}", NULL},
        {"{\"id\":\"a\",\"ts\":1700000000000,\"all\":true}", NULL},    /* exactly 60 s old */
        {"{\"id\":\"a\",\"ts\":1700000120000,\"all\":true}", NULL},    /* 60 s ahead */
        {"{\"id\":\"a\",\"ts\":1699999999999,\"all\":true}", "stale"}, /* 1 ms too old */
        {"{\"id\":\"a\",\"ts\":1700000120001,\"all\":true}", "stale"}, /* 1 ms too far ahead */
        {"{\"id\":\"a\",\"ts\":0,\"all\":true}", "stale"},
        {"{\"id\":\"a\",\"all\":true}", "ts"},
        {"{\"ts\":1700000060000,\"all\":true}", "id"},
        {"{\"all\":true}", "ts"},
        {"{\"op\":\"drain\",\"gateway\":\"g\",\"id\":\"d\",\"ts\":1700000060000}", NULL},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct order o;
        struct order_error err = {0};

        CHECK(order_parse(cases[i].text, strlen(cases[i].text), &o, &err) == 0);
        if (cases[i].key == NULL) {
            CHECK(order_check_signed(&o, now, 60000, &err) == 0);
        } else {
            CHECK(order_check_signed(&o, now, 60000, &err) == -1);
            CHECK(err.key != NULL && strcmp(err.key, cases[i].key) == 0 && err.text[0] != '\0');
        }
        order_cleanup(&o);
    }
}

static void test_order_ts_is_parsed_and_written(void)
{
    static const struct {
        const char *text;
        const char *key; /* NULL: accepted */
        long long ts;
    } cases[] = {
        {"{\"all\":true}", NULL, -1},
        {"{\"all\":true,\"ts\":0}", NULL, 0},
        {"{\"all\":true,\"ts\":1700000000123}", NULL, 1700000000123LL},
        {"{\"all\":true,\"ts\":253402300799999}", NULL, 253402300799999LL},
        {"{\"all\":true,\"ts\":253402300800000}", "ts", 0},
        {"{\"all\":true,\"ts\":-1}", "ts", 0},
        {"{\"all\":true,\"ts\":1.5}", "type", 0},
        {"{\"all\":true,\"ts\":\"1700000000000\"}", "type", 0},
        {"{\"all\":true,\"ts\":null}", "type", 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct order o, back;
        struct order_error err = {0};
        int r = order_parse(cases[i].text, strlen(cases[i].text), &o, &err);
        char *json;

        if (cases[i].key != NULL) {
            CHECK(r == -1 && strcmp(err.key, cases[i].key) == 0);
            continue;
        }
        CHECK(r == 0 && o.ts == cases[i].ts);
        json = order_to_json(&o);
        CHECK(json != NULL && (o.ts >= 0) == (strstr(json, "\"ts\":") != NULL));
        CHECK(json != NULL && order_parse(json, strlen(json), &back, &err) == 0 && back.ts == o.ts);
        order_cleanup(&back);
        order_cleanup(&o);
        free(json);
    }
}

/*
 * Every allocation of seal and open fails once in turn: a refusal, nothing leaked, or
 * the same body as without failures. jansson 2.14 reports some of its allocation
 * failures as syntax errors, and its lexer drops bytes when its buffer cannot grow, so
 * the refusal may be "envelope", "kid" or "signature" rather than "oom": a damaged
 * envelope never verifies, so it fails closed.
 */
static void test_order_sig_every_allocation_fails_cleanly(void)
{
    struct order_sig_ring ring;
    unsigned long n, failures = 0;

    ring_of(&ring, "k1:" SECRET1);
    json_set_alloc_funcs(chaos_json_malloc, free);
    for (n = 1;; n++) {
        struct order_error err = {0};
        char *env, *body = NULL;
        size_t blen = 0;
        unsigned long used;
        int r = -1;

        chaos_fail_at(n);
        env = order_sig_seal(&ring.keys[0], order_body, sizeof(order_body) - 1);
        if (env != NULL)
            r = order_sig_open(&ring, env, strlen(env), &body, &blen, &err);
        used = chaos_allocations();
        chaos_fail_at(0);
        if (env == NULL || r < 0) {
            failures++;
            CHECK(env == NULL || (err.key != NULL && err.text[0] != '\0'));
            CHECK(body == NULL);
        } else {
            CHECK(blen == sizeof(order_body) - 1 && strcmp(body, order_body) == 0);
        }
        free(body);
        free(env);
        if (n > used)
            break;
    }
    json_set_alloc_funcs(malloc, free);
    CHECK(failures > 0);
}

void suite_order_sig(void)
{
    test_order_sig_ring_accepts_keys_and_lists();
    test_order_sig_ring_refuses_bad_keys_without_echoing_secrets();
    test_order_sig_seal_matches_rfc4231();
    test_order_sig_open_table();
    test_order_sig_signs_the_unescaped_utf8_bytes();
    test_order_sig_size_limits();
    test_order_sig_open_with_a_send_body();
    test_order_check_signed_table();
    test_order_ts_is_parsed_and_written();
    test_order_sig_every_allocation_fails_cleanly();
}
