#ifndef WSGATE_TESTS_UNIT_CHECK_H
#define WSGATE_TESTS_UNIT_CHECK_H

#include <stdio.h>

/* A tiny runner: CHECK counts; a failure prints file:line and the expression. */

extern int check_passed;
extern int check_failed;

#define CHECK(expr)                                                                      \
    do {                                                                                 \
        if (expr) {                                                                      \
            check_passed++;                                                              \
        } else {                                                                         \
            check_failed++;                                                              \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #expr);              \
        }                                                                                \
    } while (0)

/* One suite per common/ module, each in tests/unit/test_<module>.c. */
void suite_utf8(void);
void suite_ws_close(void);
void suite_ws_enc(void);
void suite_ws_dec(void);
void suite_ws_hs(void);
void suite_config(void);
void suite_order(void);

#endif /* WSGATE_TESTS_UNIT_CHECK_H */
