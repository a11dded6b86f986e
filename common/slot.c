#include "common/slot.h"

#include <stdlib.h>
#include <string.h>

uint16_t slot_crc16(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    uint16_t crc = 0;

    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (uint16_t)((crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

unsigned slot_of(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);

    if (open != NULL) {
        size_t rest = len - (size_t)(open - key) - 1;
        const char *close = memchr(open + 1, '}', rest);

        if (close != NULL && close > open + 1)
            return slot_crc16(open + 1, (size_t)(close - open - 1)) & (SLOT_COUNT - 1);
    }
    return slot_crc16(key, len) & (SLOT_COUNT - 1);
}

void slot_map_clear(struct slot_map *m)
{
    memset(m->owner, 0, sizeof(m->owner));
    m->nnodes = 0;
    m->covered = 0;
}

int slot_map_owner(const struct slot_map *m, unsigned slot)
{
    if (slot >= SLOT_COUNT || m->owner[slot] == 0)
        return -1;
    return m->owner[slot] - 1;
}

int slot_map_node(struct slot_map *m, const char *host, size_t hlen, int port)
{
    if (hlen == 0 || hlen >= SLOT_HOST_MAX || port <= 0 || port > 65535)
        return -1;
    for (size_t i = 0; i < m->nnodes; i++) {
        if (m->nodes[i].port == port && strlen(m->nodes[i].host) == hlen &&
            memcmp(m->nodes[i].host, host, hlen) == 0)
            return (int)i;
    }
    if (m->nnodes == SLOT_MAX_NODES)
        return -1;
    memcpy(m->nodes[m->nnodes].host, host, hlen);
    m->nodes[m->nnodes].host[hlen] = '\0';
    m->nodes[m->nnodes].port = port;
    return (int)m->nnodes++;
}

/* A decimal number s[0..len) in 0..max. */
static long number(const char *s, size_t len, long max)
{
    long v = 0;

    if (len == 0 || len > 6)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v <= max ? v : -1;
}

/* The next space-separated field of [*p, end): its start and length; false at the end. */
static bool field(const char **p, const char *end, const char **f, size_t *flen)
{
    const char *s = *p;

    while (s < end && *s == ' ')
        s++;
    if (s == end)
        return false;
    *f = s;
    while (s < end && *s != ' ')
        s++;
    *flen = (size_t)(s - *f);
    *p = s;
    return true;
}

/* A host name, IPv4 or IPv6 address: nothing else may reach getaddrinfo or a log line. */
static bool is_host(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '-' || ch == '_' || ch == ':' || ch == '%'))
            return false;
    }
    return true;
}

/* "host:port@cport[,hostname]" (host may be an IPv6 address: the last ':' before '@'
 * splits). Returns 0 with the host and port, 1 for a node without an address (":0"),
 * -1 when malformed. */
static int node_addr(const char *s, size_t len, const char **host, size_t *hlen, int *port)
{
    const char *at = memchr(s, '@', len);
    const char *end = at != NULL ? at : s + len;
    const char *colon = NULL;
    long p;

    for (const char *c = s; c < end; c++)
        if (*c == ':')
            colon = c;
    if (colon == NULL)
        return -1;
    p = number(colon + 1, (size_t)(end - colon - 1), 65535);
    if (p < 0)
        return -1;
    *host = s;
    *hlen = (size_t)(colon - s);
    *port = (int)p;
    if (!is_host(s, *hlen))
        return -1;
    return *hlen == 0 || p == 0 ? 1 : 0;
}

static bool has_flag(const char *flags, size_t len, const char *flag)
{
    size_t fl = strlen(flag);
    const char *p = flags, *end = flags + len;

    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        size_t n = comma != NULL ? (size_t)(comma - p) : (size_t)(end - p);

        if (n == fl && memcmp(p, flag, n) == 0)
            return true;
        p += n + 1;
    }
    return false;
}

/* Whether the rest of a line, from p to end, names a slot (not only migrations). */
static bool has_slots(const char *p, const char *end)
{
    const char *f;
    size_t flen;

    while (field(&p, end, &f, &flen))
        if (f[0] != '[')
            return true;
    return false;
}

/* The slot fields of a master's line, from p to end, assigned to node idx. */
static int line_slots(struct slot_map *m, const char *p, const char *end, int idx, const char **why)
{
    const char *f;
    size_t flen;

    while (field(&p, end, &f, &flen)) {
        const char *dash;
        long from, to;

        if (f[0] == '[')
            continue; /* a migration in progress: the slot is still the owner's */
        dash = memchr(f, '-', flen);
        if (dash == NULL) {
            from = to = number(f, flen, SLOT_COUNT - 1);
        } else {
            from = number(f, (size_t)(dash - f), SLOT_COUNT - 1);
            to = number(dash + 1, flen - (size_t)(dash - f) - 1, SLOT_COUNT - 1);
        }
        if (from < 0 || to < 0 || to < from) {
            *why = "bad slot range";
            return -1;
        }
        for (long s = from; s <= to; s++) {
            if (m->owner[s] == 0)
                m->covered++;
            m->owner[s] = (uint16_t)(idx + 1);
        }
    }
    return 0;
}

int slot_map_parse_nodes(struct slot_map *m, const char *text, size_t len, const char **why)
{
    const char *p = text, *end = text + len;

    slot_map_clear(m);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *lend = nl != NULL ? nl : end;
        const char *q = p, *f[8], *host;
        size_t flen[8], hlen;
        int port, rc, idx;

        p = nl != NULL ? nl + 1 : end;
        if (lend > q && lend[-1] == '\r')
            lend--;
        if (lend == q)
            continue;
        for (int i = 0; i < 8; i++) {
            if (!field(&q, lend, &f[i], &flen[i])) {
                *why = "a node line with fewer than 8 fields";
                return -1;
            }
        }
        rc = node_addr(f[1], flen[1], &host, &hlen, &port);
        if (rc < 0) {
            *why = "bad node address";
            return -1;
        }
        if (rc > 0 || !has_flag(f[2], flen[2], "master") || has_flag(f[2], flen[2], "noaddr") ||
            has_flag(f[2], flen[2], "handshake"))
            continue;
        if (!has_slots(q, lend))
            continue; /* a master without slots (failed over, or empty) serves nothing */
        idx = slot_map_node(m, host, hlen, port);
        if (idx < 0) {
            *why = hlen >= SLOT_HOST_MAX ? "node address too long" : "too many masters";
            return -1;
        }
        if (line_slots(m, q, lend, idx, why) < 0)
            return -1;
    }
    return (int)m->covered;
}

enum slot_redirect slot_parse_redirect(const char *err, size_t len, unsigned *slot, char *host,
                                       size_t hostlen, int *port)
{
    enum slot_redirect kind;
    const char *p, *end = err + len, *sp, *h;
    size_t hlen;
    long s;

    if (len > 6 && memcmp(err, "MOVED ", 6) == 0) {
        kind = SLOT_MOVED;
        p = err + 6;
    } else if (len > 4 && memcmp(err, "ASK ", 4) == 0) {
        kind = SLOT_ASK;
        p = err + 4;
    } else {
        return SLOT_NONE;
    }
    sp = memchr(p, ' ', (size_t)(end - p));
    if (sp == NULL || (s = number(p, (size_t)(sp - p), SLOT_COUNT - 1)) < 0)
        return SLOT_NONE;
    if (node_addr(sp + 1, (size_t)(end - sp - 1), &h, &hlen, port) != 0 || hlen >= hostlen)
        return SLOT_NONE;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *slot = (unsigned)s;
    return kind;
}
