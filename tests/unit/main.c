#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/check.h"

int check_passed;
int check_failed;

uint8_t *check_dup_exact(const void *s, size_t len)
{
    uint8_t *p = malloc(len > 0 ? len : 1);

    if (p == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    if (len > 0)
        memcpy(p, s, len);
    return p;
}

static const struct {
    const char *name;
    void (*run)(void);
} suites[] = {
    {"utf8", suite_utf8},
    {"ws_close", suite_ws_close},
    {"ws_enc", suite_ws_enc},
    {"ws_dec", suite_ws_dec},
    {"ws_hs", suite_ws_hs},
    {"ws_pmd", suite_ws_pmd},
    {"ws_zip", suite_ws_zip},
    {"config", suite_config},
    {"order", suite_order},
    {"redis_url", suite_redis_url},
    {"order_sig", suite_order_sig},
    {"seen", suite_seen},
    {"base64", suite_base64},
    {"origin", suite_origin},
    {"proxy_proto", suite_proxy_proto},
    {"iplimit", suite_iplimit},
    {"token", suite_token},
    {"outq", suite_outq},
    {"tls", suite_tls},
    {"registry", suite_registry},
    {"slot", suite_slot},
    {"tomb", suite_tomb},
    {"chaos", suite_chaos},
};

int main(int argc, char **argv)
{
    if (chaos_crypto_install() < 0) {
        fprintf(stderr, "CRYPTO_set_mem_functions failed\n");
        return 1;
    }
    for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++) {
        if (argc > 1 && strcmp(argv[1], suites[i].name) != 0)
            continue;
        int before = check_failed;
        if (suites[i].run == NULL) {
            fprintf(stderr, "FAIL suite %s is missing\n", suites[i].name);
            check_failed++;
            continue;
        }
        suites[i].run();
        fprintf(stderr, "suite %-10s %s\n", suites[i].name,
                check_failed == before ? "ok" : "FAILED");
    }
    printf("%d passed, %d failed\n", check_passed, check_failed);
    return check_failed == 0 ? 0 : 1;
}
