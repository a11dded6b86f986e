/* libFuzzer target: the permessage-deflate offer parser. The input is split on '\n'
 * into header lines; whatever they hold, an accepted offer has windows in range and
 * an answer that fits WS_PMD_ANSWER_MAX, holds no control character, and negotiates
 * the same thing when offered back to the parser (a broken answer is never built). */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/ws_pmd.h"

#define LINES_MAX 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1), ans[WS_PMD_ANSWER_MAX];
    const char *lines[LINES_MAX];
    size_t n = 0, len;
    struct ws_pmd p, back;

    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    copy[size] = '\0';
    for (char *s = copy; n < LINES_MAX;) {
        char *nl = strchr(s, '\n');
        lines[n++] = s;
        if (nl == NULL)
            break;
        *nl = '\0';
        s = nl + 1;
    }
    if (ws_pmd_negotiate(lines, n, &p)) {
        if (p.server_wbits < 9 || p.server_wbits > 15 || p.client_wbits < 8 || p.client_wbits > 15)
            abort();
        len = ws_pmd_answer(&p, ans, sizeof(ans));
        if (len == 0 || len != strlen(ans) || memcmp(ans + len - 2, "\r\n", 2) != 0)
            abort();
        for (size_t i = 0; i + 2 < len; i++)
            if ((unsigned char)ans[i] < 0x20)
                abort();
        /* the answer's parameters, offered again, are accepted as they are */
        ans[len - 2] = '\0';
        lines[0] = ans + strlen("Sec-WebSocket-Extensions: ");
        if (!ws_pmd_negotiate(lines, 1, &back) || back.server_wbits != p.server_wbits ||
            back.client_wbits != p.client_wbits)
            abort();
    } else if (p.on || ws_pmd_answer(&p, ans, sizeof(ans)) != 0) {
        abort();
    }
    free(copy);
    return 0;
}
