#ifndef WSGATE_COMMON_REDIS_URL_H
#define WSGATE_COMMON_REDIS_URL_H

#include <stddef.h>

/*
 * Where Redis is, from a URL:
 *   redis://[[user]:password@]host[:port][/db]   host a name, IPv4 or [IPv6]
 *   redis://[password@]host[:port][/db]
 *   unix:///absolute/path.sock[?db=N]
 *   cluster://[[user]:password@]host[:port][,host[:port]...]   Redis Cluster seed nodes
 * The port defaults to 6379 and db to 0. user and password may use %XX escapes;
 * everything up to the last '@' is user information.
 */
struct redis_url_node {
    char *host; /* owned */
    int port;
};

struct redis_url {
    char *host;     /* owned; NULL for a unix socket; IPv6 without brackets */
    int port;       /* 1..65535; 0 for a unix socket */
    char *path;     /* owned; NULL for TCP */
    char *user;     /* owned; NULL when absent (AUTH password only) */
    char *password; /* owned; NULL when absent (no AUTH) */
    int db;         /* 0 or more, for SELECT; always 0 in a cluster */
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

/* Frees what u owns and leaves it empty. Safe to call twice. */
void redis_url_cleanup(struct redis_url *u);

#endif /* WSGATE_COMMON_REDIS_URL_H */
