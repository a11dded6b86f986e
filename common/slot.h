#ifndef WSGATE_COMMON_SLOT_H
#define WSGATE_COMMON_SLOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Redis Cluster routing, pure: the slot of a key or sharded channel, the slot map read
 * from CLUSTER NODES, and MOVED/ASK redirections. No I/O; unit-tested against the
 * values `redis-cli CLUSTER KEYSLOT` gives.
 */

#define SLOT_COUNT     16384
#define SLOT_MAX_NODES 256 /* masters in one map; more is refused */
#define SLOT_HOST_MAX  64  /* bytes of a node's address, NUL included */

/* CRC16-CCITT (XMODEM), the one Redis Cluster uses, of buf[0..len). */
uint16_t slot_crc16(const void *buf, size_t len);

/* The slot of key[0..len): CRC16 of its hash tag (what lies between the first '{' and
 * the first '}' after it, when not empty), else of the whole key, modulo 16384. */
unsigned slot_of(const char *key, size_t len);

struct slot_node {
    char host[SLOT_HOST_MAX];
    int port;
};

/* Which master serves each slot. Embedded or heap, filled by slot_map_parse_nodes(). */
struct slot_map {
    uint16_t owner[SLOT_COUNT]; /* index into nodes + 1; 0: no master known */
    struct slot_node nodes[SLOT_MAX_NODES];
    size_t nnodes;
    size_t covered; /* slots with an owner */
};

/* Empties m. */
void slot_map_clear(struct slot_map *m);

/* The index into m->nodes of the master serving slot, or -1 when none is known. */
int slot_map_owner(const struct slot_map *m, unsigned slot);

/* The index of host:port in m->nodes, added if new; -1 when m is full or host too long. */
int slot_map_node(struct slot_map *m, const char *host, size_t hlen, int port);

/*
 * Parses the text of CLUSTER NODES (text[0..len), one node a line:
 * "<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>...")
 * into m (cleared first): every master with an address and slots ("0-5460", "5461";
 * "[slot->-id]" and "[slot-<-id]" migration notes are skipped). A master flagged "fail"
 * still owns its slots until a replica is promoted: it is kept. Returns the number of
 * slots covered, or -1 with a static reason in *why on a malformed line or when there
 * are more masters than SLOT_MAX_NODES.
 */
int slot_map_parse_nodes(struct slot_map *m, const char *text, size_t len, const char **why);

enum slot_redirect { SLOT_NONE, SLOT_MOVED, SLOT_ASK };

/* Reads an error reply "MOVED 3999 127.0.0.1:6381" or "ASK 3999 127.0.0.1:6381"
 * (err[0..len)): the slot and the node's address into host (hostlen bytes, NUL-ended)
 * and *port. Anything else, or a malformed one, is SLOT_NONE. */
enum slot_redirect slot_parse_redirect(const char *err, size_t len, unsigned *slot, char *host,
                                       size_t hostlen, int *port);

#endif /* WSGATE_COMMON_SLOT_H */
