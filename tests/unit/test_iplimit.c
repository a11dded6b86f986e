#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "common/iplimit.h"
#include "tests/unit/check.h"

static struct sockaddr_storage addr(const char *text)
{
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof(ss));
    if (strchr(text, ':') != NULL) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(40000);
        if (inet_pton(AF_INET6, text, &in6->sin6_addr) != 1)
            abort();
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        in->sin_port = htons(40000);
        if (inet_pton(AF_INET, text, &in->sin_addr) != 1)
            abort();
    }
    return ss;
}

#define SA(ss) ((const struct sockaddr *)&(ss))

/* A table in a MAP_SHARED mapping, as the master makes it; *len for unmap(). */
static struct iplimit *table(const struct iplimit_conf *c, size_t *len)
{
    void *mem;

    *len = iplimit_size(c);
    if (*len == 0)
        return NULL;
    mem = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return NULL;
    return iplimit_init(mem, *len, c);
}

static void unmap(struct iplimit *t, size_t len)
{
    if (t != NULL)
        munmap(t, len);
}

static void test_iplimit_size_and_bounds(void)
{
    static const struct iplimit_conf bad[] = {
        {0, 2, 10, 0, 0, {1, 2}},
        {7, 2, 10, 0, 0, {1, 2}},
        {(1u << 24) + 1, 2, 10, 0, 0, {1, 2}},
        {64, 0, 10, 0, 0, {1, 2}},
        {64, IPLIMIT_MAX_WORKERS + 1, 10, 0, 0, {1, 2}},
        {64, 2, IPLIMIT_MAX_CONNS + 1, 0, 0, {1, 2}},
        {64, 2, 10, 20, 0, {1, 2}},         /* a rate needs a period */
        {64, 2, 10, 1000001, 1000, {1, 2}}, /* more than one per microsecond */
    };
    struct iplimit_conf ok = {16384, 2, 10, 20, 1000, {1, 2}};
    static _Alignas(64) uint8_t small[4096];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(iplimit_size(&bad[i]) == 0);
    CHECK(iplimit_size(&ok) == 64 + 2048 * 192); /* 384 KiB */
    ok.nworkers = 16;
    CHECK(iplimit_size(&ok) == 64 + 2048 * 448);
    ok.slots = 9; /* two buckets */
    ok.nworkers = 1;
    CHECK(iplimit_size(&ok) == 64 + 2 * 192);
    CHECK(iplimit_init(small, 64 + 2 * 192 - 1, &ok) == NULL);
    CHECK(iplimit_init(small + 8, 64 + 2 * 192, &ok) == NULL); /* not 64-byte aligned */
    CHECK(iplimit_init(small, sizeof(small), &ok) == (struct iplimit *)small);
    CHECK(iplimit_slots_used((struct iplimit *)small) == 0);
}

static void test_iplimit_connections_per_address(void)
{
    struct iplimit_conf c = {64, 2, 3, 0, 0, {11, 22}};
    struct sockaddr_storage a = addr("192.0.2.1"), b = addr("192.0.2.2");
    uint32_t tk[4], retry, other;
    size_t len;
    struct iplimit *t = table(&c, &len);

    CHECK(t != NULL);
    if (t == NULL)
        return;
    CHECK(iplimit_acquire(t, 0, SA(a), 1000, &tk[0], &retry) == IPLIMIT_OK && tk[0] != 0);
    CHECK(iplimit_acquire(t, 1, SA(a), 1000, &tk[1], &retry) == IPLIMIT_OK);
    CHECK(iplimit_acquire(t, 1, SA(a), 1000, &tk[2], &retry) == IPLIMIT_OK);
    CHECK(tk[0] == tk[1] && tk[1] == tk[2]); /* one slot, two columns */
    CHECK(iplimit_conns(t, SA(a)) == 3);
    CHECK(iplimit_acquire(t, 0, SA(a), 1000, &tk[3], &retry) == IPLIMIT_TOO_MANY_CONNS);
    CHECK(tk[3] == 0 && retry == IPLIMIT_CONNS_RETRY_S);
    CHECK(iplimit_conns(t, SA(a)) == 3); /* a refusal leaves no count */
    CHECK(iplimit_acquire(t, 0, SA(b), 1000, &other, &retry) == IPLIMIT_OK);
    iplimit_release(t, 1, tk[1]);
    CHECK(iplimit_conns(t, SA(a)) == 2);
    CHECK(iplimit_acquire(t, 0, SA(a), 1000, &tk[3], &retry) == IPLIMIT_OK);
    iplimit_release(t, 0, tk[0]);
    iplimit_release(t, 1, tk[2]);
    iplimit_release(t, 0, tk[3]);
    iplimit_release(t, 0, other);
    iplimit_release(t, 0, 0);     /* nothing */
    iplimit_release(t, 0, tk[0]); /* once too often: nothing below zero */
    CHECK(iplimit_conns(t, SA(a)) == 0 && iplimit_total_conns(t) == 0);
    unmap(t, len);
}

/* IPv6 counts per /64; IPv4-mapped IPv6 is the IPv4 address; other families pass. */
static void test_iplimit_address_keys(void)
{
    struct iplimit_conf c = {64, 1, 2, 0, 0, {3, 4}};
    struct sockaddr_storage a1 = addr("2001:db8:1:2::1"), a2 = addr("2001:db8:1:2:ffff:ffff:0:9"),
                            a3 = addr("2001:db8:1:3::1"), v4 = addr("198.51.100.7"),
                            mapped = addr("::ffff:198.51.100.7"), v6z = addr("::1"),
                            v4z = addr("0.0.0.1");
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    uint32_t tk[8], retry;
    size_t len;
    struct iplimit *t = table(&c, &len);

    if (t == NULL) {
        CHECK(0);
        return;
    }
    CHECK(iplimit_acquire(t, 0, SA(a1), 1, &tk[0], &retry) == IPLIMIT_OK);
    CHECK(iplimit_acquire(t, 0, SA(a2), 1, &tk[1], &retry) == IPLIMIT_OK);
    CHECK(iplimit_acquire(t, 0, SA(a1), 1, &tk[2], &retry) == IPLIMIT_TOO_MANY_CONNS);
    CHECK(iplimit_acquire(t, 0, SA(a3), 1, &tk[2], &retry) == IPLIMIT_OK);
    CHECK(iplimit_conns(t, SA(a2)) == 2 && iplimit_conns(t, SA(a3)) == 1);
    CHECK(iplimit_acquire(t, 0, SA(v4), 1, &tk[3], &retry) == IPLIMIT_OK);
    CHECK(iplimit_acquire(t, 0, SA(mapped), 1, &tk[4], &retry) == IPLIMIT_OK);
    CHECK(iplimit_acquire(t, 0, SA(v4), 1, &tk[5], &retry) == IPLIMIT_TOO_MANY_CONNS);
    CHECK(tk[3] == tk[4]);
    /* ::1 (key 0) and 0.0.0.1 do not meet: IPv4 keys live in a reserved /32 */
    CHECK(iplimit_acquire(t, 0, SA(v6z), 1, &tk[5], &retry) == IPLIMIT_OK);
    CHECK(iplimit_acquire(t, 0, SA(v4z), 1, &tk[6], &retry) == IPLIMIT_OK);
    CHECK(tk[5] != tk[6]);
    CHECK(iplimit_acquire(t, 0, (const struct sockaddr *)&un, 1, &tk[7], &retry) == IPLIMIT_OK);
    CHECK(tk[7] == 0 && iplimit_conns(t, (const struct sockaddr *)&un) == 0);
    CHECK(iplimit_acquire(t, 0, NULL, 1, &tk[7], &retry) == IPLIMIT_OK && tk[7] == 0);
    CHECK(iplimit_acquire(t, 1, SA(a3), 1, &tk[7], &retry) == IPLIMIT_UNTRACKED); /* no worker 1 */
    for (int i = 0; i < 7; i++)
        iplimit_release(t, 0, tk[i]);
    CHECK(iplimit_total_conns(t) == 0);
    unmap(t, len);
}

/* "3/s": a burst of 3, then one every 333.333 ms; refusals take no token. */
static void test_iplimit_handshake_rate(void)
{
    struct iplimit_conf c = {64, 2, 0, 3, 1000, {5, 6}};
    struct sockaddr_storage a = addr("203.0.113.9"), b = addr("203.0.113.10");
    uint32_t tk, retry;
    size_t len;
    struct iplimit *t = table(&c, &len);
    uint64_t t0 = 5000000;

    if (t == NULL) {
        CHECK(0);
        return;
    }
    for (int i = 0; i < 3; i++)
        CHECK(iplimit_acquire(t, (uint32_t)i % 2, SA(a), t0, &tk, &retry) == IPLIMIT_OK && tk == 0);
    CHECK(iplimit_acquire(t, 0, SA(a), t0, &tk, &retry) == IPLIMIT_TOO_FAST && retry == 1);
    CHECK(iplimit_acquire(t, 1, SA(a), t0 + 333, &tk, &retry) == IPLIMIT_TOO_FAST);
    CHECK(iplimit_acquire(t, 0, SA(b), t0, &tk, &retry) == IPLIMIT_OK); /* its own bucket */
    CHECK(iplimit_acquire(t, 1, SA(a), t0 + 334, &tk, &retry) == IPLIMIT_OK);
    CHECK(iplimit_acquire(t, 1, SA(a), t0 + 334, &tk, &retry) == IPLIMIT_TOO_FAST);
    CHECK(iplimit_acquire(t, 0, SA(a), t0 + 2000, &tk, &retry) == IPLIMIT_OK);
    CHECK(iplimit_acquire(t, 0, SA(a), t0 + 2000, &tk, &retry) == IPLIMIT_OK);
    CHECK(iplimit_acquire(t, 0, SA(a), t0 + 2000, &tk, &retry) == IPLIMIT_OK);
    CHECK(iplimit_acquire(t, 0, SA(a), t0 + 2000, &tk, &retry) == IPLIMIT_TOO_FAST);
    CHECK(iplimit_total_conns(t) == 0); /* no connection limit: nothing counted */
    unmap(t, len);

    /* "1/h": the wait is told in whole seconds */
    c.rate = 1;
    c.period_ms = 3600000;
    t = table(&c, &len);
    if (t == NULL) {
        CHECK(0);
        return;
    }
    CHECK(iplimit_acquire(t, 0, SA(a), t0, &tk, &retry) == IPLIMIT_OK);
    CHECK(iplimit_acquire(t, 0, SA(a), t0 + 1, &tk, &retry) == IPLIMIT_TOO_FAST);
    CHECK(retry == 3600);
    CHECK(iplimit_acquire(t, 0, SA(a), t0 + 3599001, &tk, &retry) == IPLIMIT_TOO_FAST);
    CHECK(retry == 1);
    CHECK(iplimit_acquire(t, 0, SA(a), t0 + 3600000, &tk, &retry) == IPLIMIT_OK);
    unmap(t, len);
}

/* Every attempt counts against the rate, those refused for connections too. */
static void test_iplimit_rate_counts_refused_connections(void)
{
    struct iplimit_conf c = {64, 1, 1, 2, 1000, {7, 8}};
    struct sockaddr_storage a = addr("203.0.113.77");
    uint32_t tk, tk2, retry;
    size_t len;
    struct iplimit *t = table(&c, &len);

    if (t == NULL) {
        CHECK(0);
        return;
    }
    CHECK(iplimit_acquire(t, 0, SA(a), 1000, &tk, &retry) == IPLIMIT_OK && tk != 0);
    CHECK(iplimit_acquire(t, 0, SA(a), 1000, &tk2, &retry) == IPLIMIT_TOO_MANY_CONNS);
    CHECK(iplimit_acquire(t, 0, SA(a), 1000, &tk2, &retry) == IPLIMIT_TOO_FAST);
    iplimit_release(t, 0, tk);
    CHECK(iplimit_acquire(t, 0, SA(a), 1000, &tk2, &retry) == IPLIMIT_TOO_FAST);
    CHECK(iplimit_acquire(t, 0, SA(a), 1500, &tk2, &retry) == IPLIMIT_OK);
    iplimit_release(t, 0, tk2);
    unmap(t, len);
}

/* One bucket of 8 slots: a 9th busy address is admitted untracked (fail open), and
 * takes a slot as soon as one is idle. */
static void test_iplimit_full_table_fails_open(void)
{
    struct iplimit_conf c = {8, 1, 1, 0, 0, {9, 10}};
    uint32_t tk[9], retry, again;
    char text[32];
    struct sockaddr_storage a[9];
    size_t len;
    struct iplimit *t = table(&c, &len);

    if (t == NULL) {
        CHECK(0);
        return;
    }
    for (int i = 0; i < 9; i++) {
        snprintf(text, sizeof(text), "10.1.0.%d", i + 1);
        a[i] = addr(text);
    }
    for (int i = 0; i < 8; i++)
        CHECK(iplimit_acquire(t, 0, SA(a[i]), 1, &tk[i], &retry) == IPLIMIT_OK && tk[i] != 0);
    CHECK(iplimit_slots_used(t) == 8);
    CHECK(iplimit_acquire(t, 0, SA(a[8]), 1, &tk[8], &retry) == IPLIMIT_UNTRACKED && tk[8] == 0);
    CHECK(iplimit_acquire(t, 0, SA(a[8]), 1, &again, &retry) == IPLIMIT_UNTRACKED); /* no limit */
    iplimit_release(t, 0, tk[3]);
    CHECK(iplimit_acquire(t, 0, SA(a[8]), 1, &tk[8], &retry) == IPLIMIT_OK && tk[8] == tk[3]);
    CHECK(iplimit_acquire(t, 0, SA(a[8]), 1, &again, &retry) == IPLIMIT_TOO_MANY_CONNS);
    CHECK(iplimit_acquire(t, 0, SA(a[3]), 1, &again, &retry) == IPLIMIT_UNTRACKED);
    CHECK(iplimit_conns(t, SA(a[3])) == 0);
    for (int i = 0; i < 9; i++)
        iplimit_release(t, 0, i == 3 ? 0 : tk[i]);
    CHECK(iplimit_total_conns(t) == 0 && iplimit_slots_used(t) == 8);
    unmap(t, len);
}

/* A slot whose rate bucket is not full yet is not idle: its state is kept. */
static void test_iplimit_rate_state_is_kept_until_idle(void)
{
    struct iplimit_conf c = {8, 1, 0, 1, 1000, {12, 13}};
    uint32_t tk, retry;
    char text[32];
    size_t len;
    struct iplimit *t = table(&c, &len);
    struct sockaddr_storage ninth = addr("10.2.0.9");

    if (t == NULL) {
        CHECK(0);
        return;
    }
    for (int i = 0; i < 8; i++) {
        struct sockaddr_storage a;
        snprintf(text, sizeof(text), "10.2.0.%d", i + 1);
        a = addr(text);
        CHECK(iplimit_acquire(t, 0, SA(a), 10000, &tk, &retry) == IPLIMIT_OK);
    }
    CHECK(iplimit_acquire(t, 0, SA(ninth), 10500, &tk, &retry) == IPLIMIT_UNTRACKED);
    CHECK(iplimit_acquire(t, 0, SA(ninth), 11000, &tk, &retry) == IPLIMIT_OK);
    CHECK(iplimit_acquire(t, 0, SA(ninth), 11000, &tk, &retry) == IPLIMIT_TOO_FAST);
    unmap(t, len);
}

static void test_iplimit_forget_worker(void)
{
    struct iplimit_conf c = {64, 3, 10, 0, 0, {14, 15}};
    struct sockaddr_storage a = addr("192.0.2.50");
    uint32_t tk[8], retry;
    size_t len;
    struct iplimit *t = table(&c, &len);

    if (t == NULL) {
        CHECK(0);
        return;
    }
    for (int i = 0; i < 5; i++)
        CHECK(iplimit_acquire(t, 0, SA(a), 1, &tk[i], &retry) == IPLIMIT_OK);
    CHECK(iplimit_acquire(t, 2, SA(a), 1, &tk[5], &retry) == IPLIMIT_OK);
    CHECK(iplimit_acquire(t, 2, SA(a), 1, &tk[6], &retry) == IPLIMIT_OK);
    CHECK(iplimit_conns(t, SA(a)) == 7);
    CHECK(iplimit_forget_worker(t, 0) == 0); /* it died holding no lock */
    CHECK(iplimit_conns(t, SA(a)) == 2);
    CHECK(iplimit_forget_worker(t, 3) == 0); /* no such worker */
    iplimit_release(t, 2, tk[5]);
    iplimit_release(t, 2, tk[6]);
    CHECK(iplimit_total_conns(t) == 0);
    unmap(t, len);
}

/* --- many processes --------------------------------------------------------------- */

#define NADDR 24
#define NKIDS 4

/* What the children share besides the table: per address and worker, connections
 * admitted and not yet released, to check the limit is never passed. */
struct shared {
    _Atomic int held[NADDR][NKIDS];
    _Atomic int over;       /* admissions beyond the limit seen */
    _Atomic int untracked;  /* fail-open admissions */
    _Atomic int stop;       /* the kill test's children end and release */
    _Atomic uint32_t ready; /* children that have started */
};

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A worker: acquires and releases at random, holding up to 16 connections, for
 * rounds rounds or until sh->stop; releases everything before it returns. */
static void hammer(struct iplimit *t, struct shared *sh, uint32_t w, uint32_t max, int rounds,
                   uint32_t seed)
{
    struct {
        int a;
        uint32_t ticket;
    } open[16];
    int nopen = 0;
    char text[32];
    struct sockaddr_storage a[NADDR];

    for (int i = 0; i < NADDR; i++) {
        snprintf(text, sizeof(text), i % 2 ? "10.9.0.%d" : "2001:db8:%d::1", i);
        a[i] = addr(text);
    }
    atomic_fetch_add(&sh->ready, 1);
    for (int r = 0; rounds == 0 || r < rounds; r++) {
        if (rounds == 0 && atomic_load(&sh->stop))
            break;
        seed = seed * 1103515245u + 12345u;
        if (nopen == 16 || (nopen > 0 && (seed >> 16) % 3 == 0)) {
            int k = (int)((seed >> 8) % (uint32_t)nopen);
            atomic_fetch_sub(&sh->held[open[k].a][w], 1);
            iplimit_release(t, w, open[k].ticket);
            open[k] = open[--nopen];
        } else {
            int i = (int)((seed >> 16) % NADDR);
            uint32_t ticket, retry;
            enum iplimit_verdict v = iplimit_acquire(t, w, SA(a[i]), mono_ms(), &ticket, &retry);
            if (v == IPLIMIT_UNTRACKED)
                atomic_fetch_add(&sh->untracked, 1);
            if (v != IPLIMIT_OK || ticket == 0)
                continue;
            int now = atomic_fetch_add(&sh->held[i][w], 1) + 1;
            for (uint32_t o = 0; o < NKIDS; o++)
                now += o == w ? 0 : atomic_load(&sh->held[i][o]);
            if (now > (int)max)
                atomic_fetch_add(&sh->over, 1);
            open[nopen].a = i;
            open[nopen].ticket = ticket;
            nopen++;
        }
    }
    while (nopen > 0) {
        nopen--;
        atomic_fetch_sub(&sh->held[open[nopen].a][w], 1);
        iplimit_release(t, w, open[nopen].ticket);
    }
}

static pid_t spawn(struct iplimit *t, struct shared *sh, uint32_t w, uint32_t max, int rounds,
                   uint32_t seed)
{
    pid_t pid = fork();

    if (pid == 0) {
        hammer(t, sh, w, max, rounds, seed);
        _exit(0); /* no atexit handlers: the parent's state is not ours to check */
    }
    return pid;
}

/* NKIDS processes hammer 24 addresses on a table smaller than the addresses (so
 * slots change hands all the time): the limit is never passed, and at the end every
 * count is back to 0. */
static void test_iplimit_many_processes(void)
{
    struct iplimit_conf c = {16, NKIDS, 3, 0, 0, {16, 17}};
    size_t len;
    struct iplimit *t = table(&c, &len);
    struct shared *sh =
        mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t kids[NKIDS];
    int ok = 0, st;

    if (t == NULL || sh == MAP_FAILED) {
        CHECK(0);
        return;
    }
    memset(sh, 0, sizeof(*sh));
    for (uint32_t w = 0; w < NKIDS; w++)
        kids[w] = spawn(t, sh, w, c.max_conns, 20000, 100 + w);
    for (int i = 0; i < NKIDS; i++)
        if (kids[i] > 0 && waitpid(kids[i], &st, 0) == kids[i] && WIFEXITED(st) &&
            WEXITSTATUS(st) == 0)
            ok++;
    CHECK(ok == NKIDS);
    CHECK(atomic_load(&sh->over) == 0);
    CHECK(iplimit_total_conns(t) == 0);
    for (int i = 0; i < NADDR; i++)
        for (int w = 0; w < NKIDS; w++)
            CHECK(atomic_load(&sh->held[i][w]) == 0);
    fprintf(stderr, "  iplimit: %d processes x 20000 operations, %d untracked admissions\n", NKIDS,
            atomic_load(&sh->untracked));
    munmap(sh, sizeof(*sh));
    unmap(t, len);
}

/*
 * Workers are killed with SIGKILL while they hammer, at random moments, and replaced
 * after the master's part (waitpid, iplimit_forget_worker): at the end every count
 * is 0 and every bucket takes new addresses, so no lock was left held.
 */
static void test_iplimit_killed_workers_are_forgotten(void)
{
    struct iplimit_conf c = {8, NKIDS, 2, 0, 0, {18, 19}};
    size_t len;
    struct iplimit *t = table(&c, &len);
    struct shared *sh =
        mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t kids[NKIDS];
    uint32_t freed = 0, seed = 7, tk, retry;
    int kills = 0;
    uint64_t until = mono_ms() + 1500;

    if (t == NULL || sh == MAP_FAILED) {
        CHECK(0);
        return;
    }
    memset(sh, 0, sizeof(*sh));
    for (uint32_t w = 0; w < NKIDS; w++)
        kids[w] = spawn(t, sh, w, c.max_conns, 0, 200 + w);
    while (mono_ms() < until && kills < 400) {
        uint32_t w = (uint32_t)kills % NKIDS;
        struct timespec pause = {0, 0};
        uint64_t started = mono_ms() + 1000;
        while (atomic_load(&sh->ready) < NKIDS && mono_ms() < started)
            sched_yield(); /* kill it mid-hammer, not before it began */
        seed = seed * 1103515245u + 12345u;
        pause.tv_nsec = (long)((seed >> 16) % 400) * 1000;
        nanosleep(&pause, NULL);
        kill(kids[w], SIGKILL);
        waitpid(kids[w], NULL, 0);
        freed += iplimit_forget_worker(t, w);
        for (int i = 0; i < NADDR; i++)
            atomic_store(&sh->held[i][w], 0);
        atomic_fetch_sub(&sh->ready, 1);
        kids[w] = spawn(t, sh, w, c.max_conns, 0, seed);
        kills++;
    }
    atomic_store(&sh->stop, 1);
    for (int i = 0; i < NKIDS; i++)
        waitpid(kids[i], NULL, 0);
    CHECK(kills > 0);
    CHECK(iplimit_total_conns(t) == 0);
    for (int i = 0; i < 8; i++) { /* the bucket is not left locked */
        char text[32];
        struct sockaddr_storage a;
        snprintf(text, sizeof(text), "172.16.0.%d", i + 1);
        a = addr(text);
        CHECK(iplimit_acquire(t, 0, SA(a), mono_ms(), &tk, &retry) == IPLIMIT_OK && tk != 0);
    }
    fprintf(stderr, "  iplimit: %d workers killed mid-hammer, %u held a lock\n", kills, freed);
    munmap(sh, sizeof(*sh));
    unmap(t, len);
}

void suite_iplimit(void)
{
    test_iplimit_size_and_bounds();
    test_iplimit_connections_per_address();
    test_iplimit_address_keys();
    test_iplimit_handshake_rate();
    test_iplimit_rate_counts_refused_connections();
    test_iplimit_full_table_fails_open();
    test_iplimit_rate_state_is_kept_until_idle();
    test_iplimit_forget_worker();
    test_iplimit_many_processes();
    test_iplimit_killed_workers_are_forgotten();
}
