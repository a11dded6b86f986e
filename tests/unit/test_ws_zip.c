#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "common/utf8.h"
#include "common/ws_zip.h"
#include "tests/unit/check.h"

/* Inflates in[0..len) handed over in pieces of step bytes, output in pieces of out_cap.
 * Returns the inflated bytes (malloc'd, *n long) or NULL with *code set. */
static uint8_t *unzip_all(const uint8_t *in, size_t len, size_t step, size_t out_cap, bool text,
                          uint64_t max, size_t *n, unsigned *code)
{
    struct ws_unzip *u = ws_unzip_new(max, text);
    uint8_t *res = NULL, *piece = malloc(out_cap);
    size_t off = 0;

    *n = 0;
    *code = 0;
    if (u == NULL || piece == NULL)
        goto out;
    do {
        size_t k = len - off < step ? len - off : step;
        ssize_t r;
        ws_unzip_input(u, in + off, k, off + k == len);
        off += k;
        while ((r = ws_unzip_output(u, piece, out_cap)) > 0) {
            uint8_t *p = realloc(res, *n + (size_t)r);
            if (p == NULL)
                abort();
            res = p;
            memcpy(res + *n, piece, (size_t)r);
            *n += (size_t)r;
            CHECK(ws_unzip_total(u) == *n);
        }
        if (r < 0) {
            *code = ws_unzip_error(u, NULL);
            free(res);
            res = NULL;
            break;
        }
    } while (off < len);
    if (*code == 0 && res == NULL)
        res = malloc(1);
out:
    ws_unzip_free(u);
    free(piece);
    return res;
}

/* A client's compressor: raw deflate, window 15, the tail cut; ctx keeps the stream. */
static size_t client_deflate(z_stream *zs, const void *in, size_t len, uint8_t *out, size_t cap,
                             int flush)
{
    zs->next_in = (Bytef *)(uintptr_t)in;
    zs->avail_in = (uInt)len;
    zs->next_out = out;
    zs->avail_out = (uInt)cap;
    CHECK(deflate(zs, flush) != Z_STREAM_ERROR);
    return cap - zs->avail_out - (flush == Z_SYNC_FLUSH ? 4 : 0);
}

static void test_ws_zip_round_trip(void)
{
    static const size_t steps[] = {1, 3, 100, 1 << 20};
    static const size_t outs[] = {1, 7, 16384};
    size_t len = 50000, zcap = 0;
    uint8_t *msg = malloc(len), *zbuf = NULL;

    static const char unit[] = "{\"id\":12,\"name\":\"caf\xc3\xa9\",\"v\":[1,2,3]}, ";
    size_t ul = sizeof(unit) - 1;

    len -= len % ul;
    for (size_t i = 0; i < len; i++) /* JSON-ish and compressible, valid UTF-8 */
        msg[i] = (uint8_t)unit[i % ul];
    CHECK(utf8_is_valid(msg, len));
    for (unsigned w = 9; w <= 15; w++) {
        struct ws_zip *z = ws_zip_new(w, 6);
        ssize_t zl;
        CHECK(z != NULL);
        if (z == NULL)
            continue;
        for (int again = 0; again < 2; again++) { /* the compressor restarts per message */
            zl = ws_zip_message(z, msg, len, &zbuf, &zcap);
            CHECK(zl > 0 && (size_t)zl < len / 5);
            for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++)
                for (size_t o = 0; o < sizeof(outs) / sizeof(outs[0]); o++) {
                    size_t n;
                    unsigned code;
                    uint8_t *back =
                        unzip_all(zbuf, (size_t)zl, steps[s], outs[o], true, len, &n, &code);
                    bool ok = back != NULL && n == len && memcmp(back, msg, len) == 0;
                    CHECK(ok);
                    if (!ok)
                        fprintf(stderr, "  ws_zip w=%u step=%zu out=%zu code=%u n=%zu\n", w,
                                steps[s], outs[o], code, n);
                    free(back);
                }
        }
        ws_zip_free(z);
    }
    /* the empty message, and one of one byte */
    {
        struct ws_zip *z = ws_zip_new(15, 1);
        size_t n;
        unsigned code;
        ssize_t zl = ws_zip_message(z, msg, 0, &zbuf, &zcap);
        uint8_t *back = unzip_all(zbuf, (size_t)(zl > 0 ? zl : 0), 1, 10, true, 10, &n, &code);
        CHECK(zl >= 0 && back != NULL && n == 0 && code == 0);
        free(back);
        zl = ws_zip_message(z, msg, 1, &zbuf, &zcap);
        back = unzip_all(zbuf, (size_t)zl, 1, 10, true, 1, &n, &code);
        CHECK(zl > 0 && back != NULL && n == 1 && back[0] == msg[0]);
        free(back);
        ws_zip_free(z);
    }
    CHECK(ws_zip_new(8, 6) == NULL && ws_zip_new(16, 6) == NULL && ws_zip_new(15, 0) == NULL);
    CHECK(ws_zip_cost(15) > 256 * 1024 && ws_zip_cost(9) < ws_zip_cost(15));
    free(zbuf);
    free(msg);
}

/* A 1 GB message of zeros in about 1 MB: inflation stops at max_message. */
static void test_ws_zip_bomb(void)
{
    z_stream zs;
    size_t cap = 2 * 1024 * 1024, zl = 0, total = 0, chunk = 1 << 20;
    uint8_t *z = malloc(cap), *zeros = calloc(1, chunk), piece[16384];
    struct ws_unzip *u;
    ssize_t r;
    const char *why;

    memset(&zs, 0, sizeof(zs));
    CHECK(deflateInit2(&zs, 9, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY) == Z_OK);
    for (size_t sent = 0; sent < 1024; sent++) {
        zs.next_in = zeros;
        zs.avail_in = (uInt)chunk;
        zs.next_out = z + zl;
        zs.avail_out = (uInt)(cap - zl);
        CHECK(deflate(&zs, sent == 1023 ? Z_SYNC_FLUSH : Z_NO_FLUSH) == Z_OK);
        zl = cap - zs.avail_out;
    }
    deflateEnd(&zs);
    CHECK(zl < 1100 * 1024 && zl > 900 * 1024); /* about 1 MB for 1 GiB */
    u = ws_unzip_new(4 * 1024 * 1024, false);
    ws_unzip_input(u, z, zl - 4, true);
    while ((r = ws_unzip_output(u, piece, sizeof(piece))) > 0)
        total += (size_t)r;
    CHECK(r == -1 && ws_unzip_error(u, &why) == 1009 && why != NULL);
    CHECK(total <= 4 * 1024 * 1024 && ws_unzip_total(u) <= 4 * 1024 * 1024);
    CHECK(total > 4 * 1024 * 1024 - sizeof(piece));
    CHECK(ws_unzip_output(u, piece, sizeof(piece)) == -1); /* sticky */
    ws_unzip_free(u);
    free(z);
    free(zeros);
}

static void test_ws_zip_errors(void)
{
    static const uint8_t reserved_block[] = {0x07, 0x00}; /* BTYPE 11 */
    uint8_t out[4096], in[256];
    z_stream zs;
    size_t n, zl, zl2;
    unsigned code;
    uint8_t *back;
    const char *text = "a text long enough to be found again: 0123456789 abcdefghijklmnop";

    back = unzip_all(reserved_block, sizeof(reserved_block), 1, 64, false, 100, &n, &code);
    CHECK(back == NULL && code == 1007);

    /* a client that keeps its context although told not to: distance too far back */
    memset(&zs, 0, sizeof(zs));
    CHECK(deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    zl = client_deflate(&zs, text, strlen(text), in, sizeof(in), Z_SYNC_FLUSH);
    back = unzip_all(in, zl, 5, 64, true, 1000, &n, &code);
    CHECK(back != NULL && n == strlen(text) && memcmp(back, text, n) == 0);
    free(back);
    zl2 = client_deflate(&zs, text, strlen(text), out, sizeof(out), Z_SYNC_FLUSH);
    CHECK(zl2 < zl); /* it did refer back */
    back = unzip_all(out, zl2, 5, 64, true, 1000, &n, &code);
    CHECK(back == NULL && code == 1007);
    deflateEnd(&zs);

    /* invalid UTF-8 once inflated, and a text that stops inside a code point */
    memset(&zs, 0, sizeof(zs));
    CHECK(deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    zl = client_deflate(&zs, "ok \xc0\xaf", 5, in, sizeof(in), Z_SYNC_FLUSH);
    back = unzip_all(in, zl, 100, 64, true, 1000, &n, &code);
    CHECK(back == NULL && code == 1007);
    back = unzip_all(in, zl, 100, 64, false, 1000, &n, &code); /* binary: fine */
    CHECK(back != NULL && n == 5);
    free(back);
    deflateReset(&zs);
    zl = client_deflate(&zs, "caf\xc3", 4, in, sizeof(in), Z_SYNC_FLUSH);
    back = unzip_all(in, zl, 1, 64, true, 1000, &n, &code);
    CHECK(back == NULL && code == 1007);

    /* a final block (BFINAL) ends the message well; bytes after it do not */
    deflateReset(&zs);
    zl = client_deflate(&zs, "final", 5, in, sizeof(in), Z_FINISH) - 0;
    back = unzip_all(in, zl, 2, 64, true, 1000, &n, &code);
    CHECK(back != NULL && n == 5 && memcmp(back, "final", 5) == 0);
    free(back);
    in[zl] = 0x00;
    back = unzip_all(in, zl + 1, 100, 64, true, 1000, &n, &code);
    CHECK(back == NULL && code == 1007);
    deflateEnd(&zs);

    /* exactly max_message inflated is fine, one more byte is not */
    memset(&zs, 0, sizeof(zs));
    CHECK(deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    zl = client_deflate(&zs, text, 10, in, sizeof(in), Z_SYNC_FLUSH);
    back = unzip_all(in, zl, 100, 3, true, 10, &n, &code);
    CHECK(back != NULL && n == 10);
    free(back);
    back = unzip_all(in, zl, 100, 3, true, 9, &n, &code);
    CHECK(back == NULL && code == 1009);
    deflateEnd(&zs);
}

/* Output pieces of 1 byte: a match that zlib holds past the end of the input still
 * comes out whole (found by fuzz_ws_zip). */
static void test_ws_zip_output_held_inside_zlib(void)
{
    static const uint8_t in[] = {0xdb, 0x25, 0xff, 0xff, 0xff};
    size_t n1, n2;
    unsigned c1, c2;
    uint8_t *a = unzip_all(in, sizeof(in), sizeof(in), 512, false, 1000, &n1, &c1);
    uint8_t *b = unzip_all(in, sizeof(in), 1, 1, false, 1000, &n2, &c2);

    CHECK(a != NULL && b != NULL && n1 == 121 && n2 == 121 && memcmp(a, b, n1) == 0);
    free(a);
    free(b);
}

void suite_ws_zip(void)
{
    test_ws_zip_output_held_inside_zlib();
    test_ws_zip_round_trip();
    test_ws_zip_bomb();
    test_ws_zip_errors();
}
