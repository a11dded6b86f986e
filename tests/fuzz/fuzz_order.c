/* libFuzzer target: an order either is refused with a key and a text, or reads back
 * to the same order from its own JSON; peeking at any text never fails badly. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/order.h"
#include "common/utf8.h"
#include "common/ws_close.h"

static int same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static int same_list(char **a, size_t na, char **b, size_t nb)
{
    if (na != nb)
        return 0;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a[i], b[i]) != 0)
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct order o, back;
    struct order_error err;
    struct order_peek peek;
    char *json;

    order_peek((const char *)data, size, &peek);
    order_peek_cleanup(&peek);
    if (order_parse((const char *)data, size, &o, &err) < 0) {
        if (err.key == NULL || err.text[0] == '\0')
            abort();
        return 0;
    }
    /* What was accepted obeys the rules. */
    if (!ws_close_code_is_sendable(o.code) || o.reason_len > WS_CLOSE_REASON_MAX ||
        !utf8_is_valid((const uint8_t *)o.reason, o.reason_len))
        abort();
    json = order_to_json(&o);
    if (json == NULL)
        abort();
    if (order_parse(json, strlen(json), &back, &err) < 0)
        abort();
    if (back.op != o.op || back.target != o.target || back.code != o.code ||
        back.reason_len != o.reason_len || memcmp(back.reason, o.reason, o.reason_len) != 0 ||
        back.spread_ms != o.spread_ms || back.dry_run != o.dry_run ||
        back.max_affected != o.max_affected || !same_str(back.id, o.id) ||
        !same_str(back.gateway, o.gateway) || !same_str(back.reply_to, o.reply_to) ||
        !same_list(back.names, back.nnames, o.names, o.nnames) ||
        !same_list(back.except, back.nexcept, o.except, o.nexcept) ||
        !same_list(back.groups, back.ngroups, o.groups, o.ngroups) || back.binary != o.binary ||
        back.payload_len != o.payload_len ||
        (o.payload_len > 0 && memcmp(back.payload, o.payload, o.payload_len) != 0))
        abort();
    /* A text payload is always valid UTF-8, whatever escapes carried it. */
    if (o.op == ORDER_OP_SEND && !o.binary && !utf8_is_valid(o.payload, o.payload_len))
        abort();
    free(json);
    order_cleanup(&back);
    order_cleanup(&o);
    return 0;
}
