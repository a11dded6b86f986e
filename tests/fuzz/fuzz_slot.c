/* libFuzzer target: the slot code on any bytes. A CLUSTER NODES text (any bytes, exactly
 * as long as the input: over-reads are caught) either is refused with a reason or gives
 * a map whose owners all name a listed master with an address, and whose covered count
 * is the number of owned slots; MOVED/ASK parsing never reads outside its input and
 * gives a slot below 16384 and a NUL-terminated host; a key's slot is below 16384 and
 * equals the slot of its hash tag alone when it has one. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/slot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct slot_map map;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size > 0 ? size : 1);
    const char *why = NULL, *open, *close;
    char host[SLOT_HOST_MAX];
    unsigned slot = SLOT_COUNT;
    int port = 0, covered;
    size_t owned = 0;

    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    covered = slot_map_parse_nodes(&map, s, size, &why);
    if (covered < 0 && why == NULL)
        abort();
    if (covered >= 0) {
        for (unsigned i = 0; i < SLOT_COUNT; i++) {
            int o = slot_map_owner(&map, i);
            if (o >= (int)map.nnodes ||
                (o >= 0 && (map.nodes[o].host[0] == '\0' || map.nodes[o].port <= 0)))
                abort();
            owned += o >= 0;
        }
        if (owned != (size_t)covered || owned != map.covered)
            abort();
    }
    if (slot_parse_redirect(s, size, &slot, host, sizeof(host), &port) != SLOT_NONE &&
        (slot >= SLOT_COUNT || strlen(host) >= sizeof(host) || port <= 0 || port > 65535))
        abort();
    slot = slot_of(s, size);
    if (slot >= SLOT_COUNT)
        abort();
    open = memchr(s, '{', size);
    close = open != NULL ? memchr(open + 1, '}', size - (size_t)(open - s) - 1) : NULL;
    if (close != NULL && close > open + 1 && slot != slot_of(open + 1, (size_t)(close - open - 1)))
        abort();
    free(s);
    return 0;
}
