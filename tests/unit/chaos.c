/*
 * Allocation failure on demand for the unit tests. The runner is linked with
 * -Wl,--wrap=malloc,... so every allocation made by common/ (and by jansson, routed
 * here with json_set_alloc_funcs) can be failed: chaos_fail_at(n) makes the n-th
 * allocation from now on fail, once.
 */

#include <malloc.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "tests/unit/check.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);

static unsigned long chaos_countdown; /* 0: off */
static unsigned long chaos_calls;

void chaos_fail_at(unsigned long n)
{
    chaos_countdown = n;
    chaos_calls = 0;
}

unsigned long chaos_allocations(void)
{
    return chaos_calls;
}

static int chaos_fail(void)
{
    chaos_calls++;
    if (chaos_countdown == 0)
        return 0;
    return --chaos_countdown == 0;
}

void *__wrap_malloc(size_t n)
{
    return chaos_fail() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return chaos_fail() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    return chaos_fail() ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s)
{
    return chaos_fail() ? NULL : __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n)
{
    return chaos_fail() ? NULL : __real_strndup(s, n);
}

/* jansson's allocator, so its allocations fail on the same schedule. */
void *chaos_json_malloc(size_t n)
{
    return __wrap_malloc(n);
}

/* OpenSSL's allocator: counted and failed like the rest while chaos_crypto(true); the
 * bytes it holds are summed (chaos_crypto_live). */
static int chaos_crypto_on;
static size_t chaos_crypto_bytes;

static void *crypto_malloc(size_t n, const char *file, int line)
{
    void *p = chaos_crypto_on ? __wrap_malloc(n) : __real_malloc(n);

    (void)file;
    (void)line;
    if (p != NULL)
        chaos_crypto_bytes += malloc_usable_size(p);
    return p;
}

static void *crypto_realloc(void *p, size_t n, const char *file, int line)
{
    size_t old = p != NULL ? malloc_usable_size(p) : 0;
    void *q = chaos_crypto_on ? __wrap_realloc(p, n) : __real_realloc(p, n);

    (void)file;
    (void)line;
    if (q != NULL)
        chaos_crypto_bytes += malloc_usable_size(q) - old;
    return q;
}

static void crypto_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    if (p != NULL)
        chaos_crypto_bytes -= malloc_usable_size(p);
    free(p);
}

size_t chaos_crypto_live(void)
{
    return chaos_crypto_bytes;
}

int chaos_crypto_install(void)
{
    return CRYPTO_set_mem_functions(crypto_malloc, crypto_realloc, crypto_free) == 1 ? 0 : -1;
}

void chaos_crypto(int on)
{
    chaos_crypto_on = on;
}
