#include <stdlib.h>
#include <string.h>

#include "common/slot.h"
#include "tests/unit/check.h"

/* Every value was given by `redis-cli CLUSTER KEYSLOT key` on Redis 7.0.15. */
static const struct {
    const char *key;
    unsigned slot;
} slots[] = {
    {"", 0},
    {"a", 15495},
    {"123456789", 12739},
    {"wsgate:orders", 4595},
    {"wsgate:orders:gw1", 10028},
    {"wsgate:orders:group:red", 8587},
    {"wsgate:orders:group:blue", 16112},
    {"wsgate:orders:group:g0", 14106},
    {"wsgate:orders:group:g2", 5976},
    {"wsgate:orders:group:g3", 1913},
    {"{}", 15257}, /* an empty tag: the whole key */
    {"{}x", 10595},
    {"a{b}c", 3300},   /* the tag b */
    {"a{}{b}", 15033}, /* the first '{' with an empty tag: the whole key */
    {"{a}{b}", 15495}, /* the first tag only: same as "a" */
    {"foo{", 7673},    /* no closing brace */
    {"foo}{bar", 7624},
    {"{user1000}.following", 3443},
    {"\xc3\xa9", 10180}, /* bytes, not characters */
};

static const char nodes_ok[] =
    "6fd06ab2c196b459c991d8c9e71720f597548d40 127.0.0.1:31001@41001 master - 0 1796426419068 "
    "2 connected 5461-10922\n"
    "4a2e1f87376cfb2a6f02eb652163aa523270d124 127.0.0.1:31003@41003 slave "
    "79d3e37092a9850c76454ccf701363c59aeae120 0 1796426418867 1 connected\n"
    "dbc3b31a31e2f29f0fe3eceb9fac2746604bfa17 127.0.0.1:31002@41002 master - 0 1796426419068 "
    "3 connected 10923-16383\n"
    "c689edd3abddbc7c4e2804ba32cf40f3e9d77d1e 127.0.0.1:31005@41005 slave "
    "dbc3b31a31e2f29f0fe3eceb9fac2746604bfa17 0 1796426418867 3 connected\n"
    "79d3e37092a9850c76454ccf701363c59aeae120 127.0.0.1:31000@41000 myself,master - 0 "
    "1796426418000 1 connected 0-5460\n";

/* After a failover: the old master failed and lost its slots to its replica, one slot
 * is migrating, one master is still in handshake, one node has no address. */
static const char nodes_after[] =
    "aaaa 127.0.0.1:31001@41001 master,fail - 1796426419068 1796426419000 2 disconnected\n"
    "bbbb 127.0.0.1:31004@41004,redis-4.example myself,master - 0 0 7 connected 5461-10921 "
    "10922 [10922->-dddd]\r\n"
    "cccc 127.0.0.1:31002@41002 master - 0 0 3 connected 10923-16383 [0-<-eeee]\n"
    "dddd 127.0.0.1:31000@41000 master - 0 0 1 connected 0-5460\n"
    "eeee 127.0.0.1:31009@41009 master,handshake - 0 0 0 connected\n"
    "ffff :0@0 master,noaddr - 0 0 0 disconnected 1-2\n"
    "\n";

static void test_slots(void)
{
    for (size_t i = 0; i < sizeof(slots) / sizeof(slots[0]); i++)
        CHECK(slot_of(slots[i].key, strlen(slots[i].key)) == slots[i].slot);
    CHECK(slot_crc16("123456789", 9) == 0x31c3); /* the XMODEM check value */
}

static void test_nodes(void)
{
    struct slot_map *m = malloc(sizeof(*m));
    const char *why = NULL;
    int i;

    CHECK(m != NULL);
    if (m == NULL)
        return;
    CHECK(slot_map_parse_nodes(m, nodes_ok, strlen(nodes_ok), &why) == SLOT_COUNT);
    CHECK(m->nnodes == 3);
    i = slot_map_owner(m, 0);
    CHECK(i >= 0 && strcmp(m->nodes[i].host, "127.0.0.1") == 0 && m->nodes[i].port == 31000);
    i = slot_map_owner(m, 8587);
    CHECK(i >= 0 && m->nodes[i].port == 31001);
    i = slot_map_owner(m, 16383);
    CHECK(i >= 0 && m->nodes[i].port == 31002);
    CHECK(slot_map_owner(m, SLOT_COUNT) == -1);

    CHECK(slot_map_parse_nodes(m, nodes_after, strlen(nodes_after), &why) == SLOT_COUNT);
    CHECK(m->nnodes == 3); /* the failed, handshaking and address-less ones are out */
    i = slot_map_owner(m, 10922);
    CHECK(i >= 0 && m->nodes[i].port == 31004 && strcmp(m->nodes[i].host, "127.0.0.1") == 0);
    i = slot_map_owner(m, 0);
    CHECK(i >= 0 && m->nodes[i].port == 31000);
    i = slot_map_owner(m, 1);
    CHECK(i >= 0 && m->nodes[i].port == 31000);

    CHECK(slot_map_parse_nodes(m, "x 1:2@3 master - 0 0 1 connected 0-100\n", 39, &why) == 101);
    CHECK(slot_map_parse_nodes(m, "", 0, &why) == 0);
    CHECK(slot_map_owner(m, 5) == -1);

    static const char *bads[] = {
        "x 1.2.3.4:7000@1 master - 0 0 1\n",                   /* 7 fields */
        "x 1.2.3.4@1 master - 0 0 1 connected 0-1\n",          /* no port */
        "x 1.2.3.4:99999@1 master - 0 0 1 connected 0-1\n",    /* port out of range */
        "x 1.2.3.4:7000@1 master - 0 0 1 connected 5-2\n",     /* backwards */
        "x 1.2.3.4:7000@1 master - 0 0 1 connected 0-16384\n", /* past the last slot */
        "x 1.2.3.4:7000@1 master - 0 0 1 connected 12a\n",
        "x 1.2.3.4:7000@1 master - 0 0 1 connected -\n",
        "x 1.2.3.4\x01:7000@1 master - 0 0 1 connected 0\n", /* not a host */
        "x a/b:7000@1 master - 0 0 1 connected 0\n",
    };
    for (size_t b = 0; b < sizeof(bads) / sizeof(bads[0]); b++) {
        why = NULL;
        CHECK(slot_map_parse_nodes(m, bads[b], strlen(bads[b]), &why) == -1 && why != NULL);
    }
    free(m);
}

static void test_many_nodes(void)
{
    struct slot_map *m = malloc(sizeof(*m));
    char *text = malloc(SLOT_MAX_NODES * 64 + 128);
    const char *why = NULL;
    size_t n = 0;

    CHECK(m != NULL && text != NULL);
    if (m == NULL || text == NULL) {
        free(m);
        free(text);
        return;
    }
    for (int i = 0; i <= SLOT_MAX_NODES; i++)
        n += (size_t)sprintf(text + n, "i 10.0.%d.%d:7000@17000 master - 0 0 1 connected %d\n",
                             i / 256, i % 256, i);
    CHECK(slot_map_parse_nodes(m, text, n, &why) == -1 && why != NULL);
    free(text);
    free(m);
}

static void test_redirect(void)
{
    char host[SLOT_HOST_MAX];
    unsigned slot = 0;
    int port = 0;
    const char *e;

    e = "MOVED 3999 127.0.0.1:6381";
    CHECK(slot_parse_redirect(e, strlen(e), &slot, host, sizeof(host), &port) == SLOT_MOVED);
    CHECK(slot == 3999 && port == 6381 && strcmp(host, "127.0.0.1") == 0);
    e = "ASK 16383 ::1:7000";
    CHECK(slot_parse_redirect(e, strlen(e), &slot, host, sizeof(host), &port) == SLOT_ASK);
    CHECK(slot == 16383 && port == 7000 && strcmp(host, "::1") == 0);
    static const char *nots[] = {
        "ERR unknown command", "MOVED",          "MOVED 3999",      "MOVED 16384 h:1",
        "MOVED x h:1",         "MOVED 1 h",      "MOVED 1 :7000",   "MOVED 1 h:0",
        "moved 1 h:1",         "CROSSSLOT Keys", "MOVED 1 h\xff:1", "ASK 1 h$x:1",
    };
    for (size_t i = 0; i < sizeof(nots) / sizeof(nots[0]); i++)
        CHECK(slot_parse_redirect(nots[i], strlen(nots[i]), &slot, host, sizeof(host), &port) ==
              SLOT_NONE);
    e = "MOVED 1 averyveryveryveryveryveryveryveryveryveryveryveryveryverylonghostname:1";
    CHECK(slot_parse_redirect(e, strlen(e), &slot, host, 16, &port) == SLOT_NONE);
}

void suite_slot(void)
{
    test_slots();
    test_nodes();
    test_many_nodes();
    test_redirect();
}
