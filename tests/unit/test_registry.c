/* worker/registry: membership at runtime. Joins and leaves move member nodes (a join
 * that outgrows a connection's array, a leave that fills its hole), so every group list
 * is walked after each step and compared with a plain model: links both ways, counts,
 * each node inside its connection's array, and the first/last-member hooks balanced
 * with the groups that exist. Then every allocation of a join fails once. */

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/check.h"
#include "worker/conn.h"
#include "worker/registry.h"

#define NCONN  48
#define NGROUP 40
#define MAXG   12

struct model {
    struct registry r;
    struct conn *c[NCONN];
    bool in[NCONN][NGROUP];
    bool hooked[NGROUP]; /* from the hooks: the group exists */
    int firsts;
    int lasts;
    char names[NGROUP][8];
};

static int group_index(const char *name)
{
    return atoi(name + 1);
}

static void on_first(void *arg, const char *name)
{
    struct model *m = arg;

    CHECK(!m->hooked[group_index(name)]);
    m->hooked[group_index(name)] = true;
    m->firsts++;
}

static void on_last(void *arg, const char *name)
{
    struct model *m = arg;

    CHECK(m->hooked[group_index(name)]);
    m->hooked[group_index(name)] = false;
    m->lasts++;
}

static uint64_t rng = 0x2545f4914f6cdd1dull;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Walks every group list against the model; returns the number of problems. */
static int check_model(struct model *m)
{
    int bad = 0;

    for (int i = 0; i < NCONN; i++) {
        struct conn *c = m->c[i];
        size_t want = 0;

        for (int g = 0; g < NGROUP; g++)
            want += m->in[i][g];
        bad += c->ngroups != want || c->gcap < c->ngroups || (c->gcap > 0) != (c->groups != NULL);
        for (size_t k = 0; k < c->ngroups; k++)
            bad += c->groups[k].conn != c || !m->in[i][group_index(c->groups[k].group->name)];
    }
    for (int g = 0; g < NGROUP; g++) {
        struct group *grp = registry_group(&m->r, m->names[g]);
        size_t want = 0, seen = 0;

        for (int i = 0; i < NCONN; i++)
            want += m->in[i][g];
        bad += (grp != NULL) != (want > 0) || m->hooked[g] != (want > 0);
        if (grp == NULL)
            continue;
        bad += grp->count != want || (grp->head != NULL && grp->head->prev != NULL);
        for (struct member *mb = grp->head; mb != NULL && seen <= want; mb = mb->next, seen++) {
            struct conn *c = mb->conn;
            bad += mb->group != grp || mb < c->groups || mb >= c->groups + c->ngroups;
            bad += mb->next != NULL && mb->next->prev != mb;
        }
        bad += seen != want;
    }
    return bad;
}

static void model_init(struct model *m)
{
    memset(m, 0, sizeof(*m));
    CHECK(registry_init(&m->r) == 0);
    m->r.on_first = on_first;
    m->r.on_last = on_last;
    m->r.hook_arg = m;
    for (int g = 0; g < NGROUP; g++)
        snprintf(m->names[g], sizeof(m->names[g]), "g%d", g);
    for (int i = 0; i < NCONN; i++) {
        m->c[i] = calloc(1, sizeof(struct conn));
        m->c[i]->seq = (uint64_t)i + 1;
    }
}

static void model_free(struct model *m)
{
    for (int i = 0; i < NCONN; i++) {
        registry_remove(&m->r, m->c[i]);
        free(m->c[i]);
    }
    CHECK(m->r.groups_count == 0 && m->r.ids_count == 0 && m->firsts == m->lasts);
    free(m->r.ids);
    free(m->r.groups);
}

/* k distinct random group names into v; returns k. */
static size_t pick(struct model *m, char **v, size_t k, int *idx)
{
    bool taken[NGROUP] = {false};

    for (size_t n = 0; n < k;) {
        int g = (int)(next() % NGROUP);
        if (taken[g])
            continue;
        taken[g] = true;
        idx[n] = g;
        v[n++] = m->names[g];
    }
    return k;
}

static void test_registry_join_leave_against_a_model(void)
{
    struct model m;
    int problems = 0, full = 0, joined = 0, left = 0;

    model_init(&m);
    for (int i = 0; i < NCONN; i++) {
        char *v[4];
        int idx[4];
        size_t n = pick(&m, v, (size_t)i % 4, idx); /* a quarter connect with none */
        CHECK(registry_add(&m.r, m.c[i], v, n) == 0);
        for (size_t k = 0; k < n; k++)
            m.in[i][idx[k]] = true;
    }
    problems += check_model(&m);
    for (int step = 0; step < 20000; step++) {
        int i = (int)(next() % NCONN), idx[6];
        struct conn *c = m.c[i];
        char *v[6];
        size_t n = pick(&m, v, 1 + next() % 6, idx);
        unsigned op = (unsigned)(next() % 16);

        if (op < 8) {
            size_t add = 0, had = c->ngroups;
            int r;
            for (size_t k = 0; k < n; k++)
                add += !m.in[i][idx[k]];
            r = registry_join(&m.r, c, v, n, MAXG);
            if (had + add > MAXG && add > 0) {
                CHECK(r == REGISTRY_FULL);
                full++;
            } else {
                CHECK(r == (int)add);
                for (size_t k = 0; k < n; k++)
                    m.in[i][idx[k]] = true;
                joined += r > 0;
            }
        } else if (op < 15) {
            size_t had = 0;
            for (size_t k = 0; k < n; k++)
                had += m.in[i][idx[k]];
            CHECK(registry_leave(&m.r, c, v, n) == had);
            for (size_t k = 0; k < n; k++)
                m.in[i][idx[k]] = false;
            left += had > 0;
        } else { /* closes and comes back with other groups */
            registry_remove(&m.r, c);
            memset(m.in[i], 0, sizeof(m.in[i]));
            n = n > 4 ? 4 : n;
            CHECK(registry_add(&m.r, c, v, n) == 0);
            for (size_t k = 0; k < n; k++)
                m.in[i][idx[k]] = true;
        }
        problems += check_model(&m);
    }
    CHECK(problems == 0);
    CHECK(full > 100 && joined > 1000 && left > 1000); /* every path was taken */
    if (problems != 0)
        fprintf(stderr, "registry: %d problems\n", problems);
    model_free(&m);
}

/* Joining groups c is in already, or the same group twice in a row, changes nothing. */
static void test_registry_join_is_idempotent(void)
{
    struct model m;
    char *v[2];

    model_init(&m);
    v[0] = m.names[1];
    v[1] = m.names[2];
    CHECK(registry_add(&m.r, m.c[0], v, 1) == 0);
    CHECK(m.c[0]->gcap == 1);
    CHECK(registry_join(&m.r, m.c[0], v, 1, MAXG) == 0);
    CHECK(registry_join(&m.r, m.c[0], v, 2, MAXG) == 1);
    CHECK(registry_join(&m.r, m.c[0], v, 2, MAXG) == 0);
    CHECK(m.c[0]->ngroups == 2 && m.firsts == 2);
    CHECK(registry_leave(&m.r, m.c[0], v, 2) == 2 && m.lasts == 2);
    CHECK(m.c[0]->groups == NULL && m.c[0]->gcap == 0);
    CHECK(registry_leave(&m.r, m.c[0], v, 2) == 0);
    model_free(&m);
}

/* Every allocation of a join fails once: nothing changes, hooks stay balanced; then the
 * same join works. */
static void test_registry_join_out_of_memory(void)
{
    bool done = false;

    for (unsigned long fail = 1; !done && fail < 64; fail++) {
        struct model m;
        char *v[5];
        int r;

        model_init(&m);
        for (int g = 0; g < 5; g++)
            v[g] = m.names[g];
        CHECK(registry_add(&m.r, m.c[0], v, 2) == 0);
        CHECK(registry_add(&m.r, m.c[1], v + 1, 1) == 0);
        m.in[0][0] = m.in[0][1] = m.in[1][1] = true;
        chaos_fail_at(fail);
        r = registry_join(&m.r, m.c[0], v, 5, MAXG);
        chaos_fail_at(0);
        if (r == 3) {
            done = true;
            m.in[0][2] = m.in[0][3] = m.in[0][4] = true;
        } else {
            CHECK(r == -1);
        }
        CHECK(check_model(&m) == 0);
        model_free(&m);
    }
    CHECK(done);
}

void suite_registry(void)
{
    test_registry_join_is_idempotent();
    test_registry_join_leave_against_a_model();
    test_registry_join_out_of_memory();
}
