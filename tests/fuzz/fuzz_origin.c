/* libFuzzer target: the Origin check on any header value never reads outside it, and
 * an origin that the allowed list takes reads back as itself: its text form parses to
 * the same origin, and a header with that text is allowed by a list holding it.
 * Input: a header value (cut at the first NUL, at most 300 bytes). */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/origin.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const allow[] = {"https://example.com", "https://*.example.org",
                                        "http://[::1]:3000", "http://127.0.0.1:8080"};
    struct origin_list fixed = {0}, mine = {0}, again = {0};
    char text[300];
    const char *why;
    size_t n = size < 300 ? size : 300;
    char *s = malloc(n + 1);

    if (s == NULL)
        return 0;
    memcpy(s, data, n);
    s[n] = '\0';
    for (size_t i = 0; i < sizeof(allow) / sizeof(allow[0]); i++)
        if (origin_list_add(&fixed, allow[i], &why) != 0)
            abort();
    (void)origin_allowed(&fixed, s);
    if (origin_list_add(&mine, s, &why) == 0) {
        if (mine.n != 1 || origin_format(&mine.o[0], text, sizeof(text)) == 0)
            abort();
        if (origin_list_add(&again, text, &why) != 0 || again.n != 1 ||
            memcmp(&again.o[0], &mine.o[0], sizeof(mine.o[0])) != 0)
            abort();
        if (!mine.o[0].wildcard && (!origin_allowed(&mine, s) || !origin_allowed(&mine, text)))
            abort();
        if (mine.o[0].wildcard && origin_allowed(&mine, text))
            abort(); /* "*.x" is a pattern, never an Origin */
    } else if (why == NULL) {
        abort();
    }
    free(s);
    return 0;
}
