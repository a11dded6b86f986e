/* libFuzzer target: the upgrade parser's verdict, path, parameters, accept key and
 * whether the request line came are the same whether the request arrives whole or
 * one byte at a time, and it never reads outside its input. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/ws_hs.h"

static void feed(struct ws_hs *h, const uint8_t *p, size_t len, size_t step, size_t *used)
{
    size_t off = 0;

    while (off < len && h->status == 0) {
        size_t n = step == 0 || step > len - off ? len - off : step;
        ssize_t r = ws_hs_feed(h, p + off, n);
        if (r < 0)
            abort(); /* only on out of memory */
        off += (size_t)r;
        if ((size_t)r < n)
            break;
    }
    *used = off;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ws_hs a, b;
    size_t ua, ub;
    uint8_t *copy = malloc(size > 0 ? size : 1);

    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    ws_hs_init(&a, 1024);
    ws_hs_init(&b, 1024);
    feed(&a, copy, size, 0, &ua);
    feed(&b, copy, size, 1, &ub);
    if (a.status != b.status || ua != ub)
        abort();
    if (ws_hs_has_request_line(&a) != ws_hs_has_request_line(&b))
        abort();
    if (a.status == 101 && !ws_hs_has_request_line(&a))
        abort();
    if (a.status == 101) {
        if (strlen(a.accept) != WS_HS_ACCEPT_LEN || strcmp(a.accept, b.accept) != 0)
            abort();
    }
    if (a.status != 0 && a.status != 101 && a.why == NULL)
        abort();
    if ((a.path == NULL) != (b.path == NULL) || (a.path && strcmp(a.path, b.path) != 0))
        abort();
    if (a.nparams != b.nparams)
        abort();
    for (size_t i = 0; i < a.nparams; i++)
        if (strcmp(a.params[i].key, b.params[i].key) != 0 ||
            strcmp(a.params[i].value, b.params[i].value) != 0)
            abort();
    ws_hs_cleanup(&a);
    ws_hs_cleanup(&b);
    free(copy);
    return 0;
}
