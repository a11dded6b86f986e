#ifndef WSGATE_COMMON_REDIS_URL_H
#define WSGATE_COMMON_REDIS_URL_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Where Redis is, from a URL:
 *   redis://[[user]:password@]host[:port][/db]   host a name, IPv4 or [IPv6]
 *   redis://[password@]host[:port][/db]
 *   unix:///absolute/path.sock[?db=N]
 *   sentinel://[[user]:password@]host[:port][,host[:port]...]/MASTER[/db]
 *       [?sentinel_user=U&sentinel_password=P]
 *   cluster://[[user]:password@]host[:port][,host[:port]...]   Redis Cluster seed nodes
 * The port defaults to 6379 (26379 for a sentinel) and db to 0 (always 0 in a cluster). user and password
 * may use %XX escapes; everything up to the last '@' is user information. In a
 * sentinel URL they are the data nodes' credentials: the sentinels, asked where the
 * master named MASTER is, get sentinel_user/sentinel_password (none when absent).
 */
struct redis_url_node {
    char *host; /* owned; IPv6 without brackets */
    int port;   /* 1..65535 */
};

#define REDIS_URL_MASTER_MAX 128 /* bytes in a sentinel master name */

struct redis_url {
    char *host;     /* owned; NULL for a unix socket or sentinel://; IPv6 without brackets */
    int port;       /* 1..65535; 0 for a unix socket or sentinel:// */
    char *path;     /* owned; NULL for TCP */
    char *user;     /* owned; NULL when absent (AUTH password only) */
    char *password; /* owned; NULL when absent (no AUTH) */
    int db;         /* 0 or more, for SELECT */
    /* sentinel:// only (nsentinels > 0), else NULL and 0: */
    struct redis_url_node *sentinels; /* owned: nsentinels, in the URL's order */
    size_t nsentinels;
    char *master;            /* owned: the name the sentinels monitor */
    char *sentinel_user;     /* owned; NULL when absent */
    char *sentinel_password; /* owned; NULL when absent (no AUTH to sentinels) */
    /* cluster:// only: every node given (owned), the first also in host and port */
    struct redis_url_node *seeds;
    size_t nseeds;
};

/*
 * Parses url into u. Returns 0 (release u with redis_url_cleanup()), or -1 with a
 * message in err[0..errlen) and u left empty. The message never repeats the
 * password. Out of memory is reported the same way.
 */
int redis_url_parse(const char *url, struct redis_url *u, char *err, size_t errlen);

/* True for a sentinel:// URL: the master's address comes from the sentinels. */
static inline bool redis_url_is_sentinel(const struct redis_url *u)
{
    return u->nsentinels > 0;
}

/*
 * Checks a sentinel's answer to SENTINEL get-master-addr-by-name: host[0..hlen) and
 * port text port[0..plen). Returns 0 with the port in *out, or -1 (no NUL, host empty,
 * over 255 bytes or with bytes no host name or address has; port not 1..65535).
 */
int redis_url_check_addr(const char *host, size_t hlen, const char *port, size_t plen, int *out);

/*
 * Reads a sentinel's +switch-master message msg[0..len), "<name> <old ip> <old port>
 * <new ip> <new port>". Returns 1 when it is about master: the new address is in
 * host[0..hostcap) and *port; 0 when it is about another master; -1 when it is
 * malformed (not five fields, an address redis_url_check_addr() refuses, a host that
 * does not fit).
 */
int redis_url_switch_master(const char *msg, size_t len, const char *master, char *host,
                            size_t hostcap, int *port);

/* Frees what u owns and leaves it empty. Safe to call twice. */
void redis_url_cleanup(struct redis_url *u);

#endif /* WSGATE_COMMON_REDIS_URL_H */
