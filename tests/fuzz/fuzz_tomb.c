/* libFuzzer target: a tombstone read from the Redis hash (field, value) never reads
 * outside its input, and one that parses writes back (tomb_to_json) to the same
 * tombstone; the table takes it and finds it until its moment.
 * Input: the field, a newline, then the value. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/tomb.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t flen = nl != NULL ? (size_t)(nl - data) : size;
    size_t vlen = nl != NULL ? size - flen - 1 : 0;
    char *field = malloc(flen + 1), *value = malloc(vlen + 1), *json;
    struct tomb tb, again;
    struct tomb_table *t;
    const char *why;

    if (field == NULL || value == NULL)
        goto out;
    memcpy(field, data, flen);
    memcpy(value, nl != NULL ? nl + 1 : data, vlen);
    if (tomb_parse(field, flen, value, vlen, &tb, &why) < 0)
        goto out;
    json = tomb_to_json(&tb);
    if (json != NULL) {
        if (tomb_parse(field, flen, json, strlen(json), &again, &why) != 0 ||
            again.until_ms != tb.until_ms || again.ts_ms != tb.ts_ms || again.code != tb.code ||
            strcmp(again.reason, tb.reason) != 0 || strcmp(again.name, tb.name) != 0 ||
            (tb.id == NULL) != (again.id == NULL) || (tb.id != NULL && strcmp(tb.id, again.id)))
            abort();
        tomb_cleanup(&again);
        free(json);
    }
    t = tomb_table_new(4, 1);
    if (t != NULL && tb.until_ms > INT64_MIN + 1) {
        if (tomb_put(t, tb.name, strlen(tb.name), tb.until_ms, tb.ts_ms, tb.code, tb.reason, tb.id,
                     tb.until_ms - 1) == TOMB_ADDED &&
            tomb_find(t, tb.name, strlen(tb.name), tb.until_ms - 1) == NULL)
            abort();
    }
    tomb_table_free(t);
    tomb_cleanup(&tb);
out:
    free(field);
    free(value);
    return 0;
}
