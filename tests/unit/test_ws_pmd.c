#include <string.h>

#include "common/ws_pmd.h"
#include "tests/unit/check.h"

/* One header line's verdict: on, the windows, and the answer line. */
static const struct {
    const char *line;
    bool on;
    const char *answer; /* the parameters after client_no_context_takeover, or NULL when off */
} cases[] = {
    /* what browsers, websockets and ws offer */
    {"permessage-deflate; client_max_window_bits", true, ""},
    {"permessage-deflate", true, ""},
    {"permessage-deflate; server_max_window_bits=10", true, "; server_max_window_bits=10"},
    {"permessage-deflate; client_max_window_bits=12", true, "; client_max_window_bits=12"},
    {"permessage-deflate; server_no_context_takeover; client_no_context_takeover", true, ""},
    {"permessage-deflate;server_max_window_bits=\"15\";client_max_window_bits=8", true,
     "; server_max_window_bits=15; client_max_window_bits=8"},
    {"PerMessage-Deflate; Client_Max_Window_Bits", true, ""},
    {"permessage-deflate ; client_max_window_bits = 9 ", true, "; client_max_window_bits=9"},
    {"x-webkit-deflate-frame, permessage-deflate", true, ""},
    {", , permessage-deflate,", true, ""},
    /* offers we decline: the next one is taken */
    {"permessage-deflate; server_max_window_bits=8, permessage-deflate", true, ""},
    {"permessage-deflate; server_max_window_bits=8", false, NULL},
    {"permessage-deflate; server_max_window_bits", false, NULL},
    {"permessage-deflate; server_max_window_bits=16", false, NULL},
    {"permessage-deflate; server_max_window_bits=010", false, NULL},
    {"permessage-deflate; server_max_window_bits=7", false, NULL},
    {"permessage-deflate; client_max_window_bits=0", false, NULL},
    {"permessage-deflate; client_max_window_bits=1x", false, NULL},
    {"permessage-deflate; client_max_window_bits=123456789012", false, NULL},
    {"permessage-deflate; server_no_context_takeover=1", false, NULL},
    {"permessage-deflate; client_no_context_takeover; client_no_context_takeover", false, NULL},
    {"permessage-deflate; client_max_window_bits; client_max_window_bits=10", false, NULL},
    {"permessage-deflate; foo", false, NULL},
    {"permessage-deflate; foo, permessage-deflate; server_max_window_bits=11", true,
     "; server_max_window_bits=11"},
    {"x-webkit-deflate-frame", false, NULL},
    {"", false, NULL},
    /* broken grammar: the whole line is ignored */
    {"permessage-deflate; client_max_window_bits=\"10", false, NULL},
    {"permessage-deflate, ;", false, NULL},
    {"permessage-deflate; =10", false, NULL},
    {"permessage-deflate; client_max_window_bits=", false, NULL},
    {"permessage-deflate garbage", false, NULL},
    {"permessage-deflate; a=b c", false, NULL},
    {"permessage-deflate; a=\"\x01\"", false, NULL},
};

static void test_ws_pmd_cases(void)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *v[1] = {cases[i].line};
        struct ws_pmd p;
        char ans[WS_PMD_ANSWER_MAX], want[WS_PMD_ANSWER_MAX];
        bool on = ws_pmd_negotiate(v, 1, &p);
        bool ok = on == cases[i].on && p.on == on;

        if (ok && on) {
            snprintf(want, sizeof(want),
                     "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
                     "client_no_context_takeover%s\r\n",
                     cases[i].answer);
            ok = ws_pmd_answer(&p, ans, sizeof(ans)) == strlen(want) && strcmp(ans, want) == 0;
        }
        if (ok && !on)
            ok = ws_pmd_answer(&p, ans, sizeof(ans)) == 0;
        CHECK(ok);
        if (!ok)
            fprintf(stderr, "  ws_pmd case %zu: \"%s\"\n", i, cases[i].line);
    }
}

static void test_ws_pmd_windows(void)
{
    const char *v[1] = {"permessage-deflate; server_max_window_bits=9; client_max_window_bits=8"};
    struct ws_pmd p;

    CHECK(ws_pmd_negotiate(v, 1, &p) && p.server_wbits == 9 && p.client_wbits == 8);
    v[0] = "permessage-deflate; client_max_window_bits";
    CHECK(ws_pmd_negotiate(v, 1, &p) && p.server_wbits == 15 && p.client_wbits == 15 &&
          !p.say_server_wbits && !p.say_client_wbits);
}

static void test_ws_pmd_lines(void)
{
    const char *v[3] = {"permessage-deflate; x=\"", "permessage-deflate; server_max_window_bits=8",
                        "permessage-deflate; server_max_window_bits=12"};
    struct ws_pmd p;

    /* a broken line is skipped, a declined offer too, the next line's offer is taken */
    CHECK(ws_pmd_negotiate(v, 3, &p) && p.server_wbits == 12 && p.malformed);
    CHECK(!ws_pmd_negotiate(v, 2, &p) && !p.on && p.malformed);
    CHECK(!ws_pmd_negotiate(v, 0, &p) && !p.on && !p.malformed);
}

static void test_ws_pmd_answer_fits(void)
{
    const char *v[1] = {"permessage-deflate; server_max_window_bits=15; client_max_window_bits=15"};
    struct ws_pmd p;
    char ans[WS_PMD_ANSWER_MAX];
    size_t n;

    CHECK(ws_pmd_negotiate(v, 1, &p));
    n = ws_pmd_answer(&p, ans, sizeof(ans));
    CHECK(n > 0 && n < sizeof(ans));
    CHECK(ws_pmd_answer(&p, ans, n) == 0); /* no room for the NUL */
}

void suite_ws_pmd(void)
{
    test_ws_pmd_cases();
    test_ws_pmd_windows();
    test_ws_pmd_lines();
    test_ws_pmd_answer_fits();
}
