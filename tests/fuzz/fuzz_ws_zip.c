/* libFuzzer target: the bounded inflater of permessage-deflate. The first byte picks
 * text or binary, the piece size handed over and the output piece size; the rest is a
 * compressed message. Whatever it holds, the inflater never hands out more than
 * max_message bytes in all, reports what it handed out (on success exactly), fails only with
 * 1007, 1009 or 1011, and however the input and output are cut it succeeds or fails
 * alike, with the same bytes when it succeeds (which of 1007 and 1009 comes first may
 * depend on the piece that carried both). */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/ws_zip.h"

#define MAX_MESSAGE 4096

/* Inflates data[0..size) handed over step bytes at a time; returns the verdict (0 or a
 * close code) and the inflated bytes in out (MAX_MESSAGE + cap at most). */
static unsigned run(const uint8_t *data, size_t size, bool text, size_t step, size_t cap,
                    uint8_t *out, size_t *n)
{
    struct ws_unzip *u = ws_unzip_new(MAX_MESSAGE, text);
    uint8_t piece[512];
    size_t off = 0;
    unsigned code = 0;
    ssize_t r = 0;

    if (u == NULL)
        abort();
    *n = 0;
    do {
        size_t k = size - off < step ? size - off : step;
        ws_unzip_input(u, data + off, k, off + k == size);
        off += k;
        while ((r = ws_unzip_output(u, piece, cap)) > 0) {
            if ((size_t)r > cap || *n + (size_t)r > MAX_MESSAGE)
                abort();
            memcpy(out + *n, piece, (size_t)r);
            *n += (size_t)r;
        }
    } while (r == 0 && off < size);
    if (r < 0) {
        code = ws_unzip_error(u, NULL);
        if (code != 1007 && code != 1009 && code != 1011)
            abort();
    }
    if (code == 0 ? ws_unzip_total(u) != *n : ws_unzip_total(u) < *n)
        abort();
    ws_unzip_free(u);
    return code;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t a[MAX_MESSAGE], b[MAX_MESSAGE];
    size_t na, nb, step, cap;
    unsigned ca, cb;
    bool text;

    if (size < 1)
        return 0;
    text = data[0] & 1;
    step = 1 + ((data[0] >> 1) & 7) * 37;
    cap = 1 + (size_t)(data[0] >> 4) * 30;
    ca = run(data + 1, size - 1, text, size, 512, a, &na);
    cb = run(data + 1, size - 1, text, step, cap, b, &nb);
    if ((ca == 0) != (cb == 0) || (ca == 0 && (na != nb || memcmp(a, b, na) != 0)))
        abort();
    if (memcmp(a, b, na < nb ? na : nb) != 0)
        abort();
    return 0;
}
