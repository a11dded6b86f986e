/* libFuzzer target: the Redis URL parser on any text never reads outside it, never
 * leaks, and what it accepts holds together: a TCP URL has a host and a port, a unix
 * one a path, a sentinel one its sentinels (each with a host and a port) and a master
 * name; the error text never repeats the password of a URL it refused. The same bytes
 * also go to the checks of a sentinel's answers (an address, a +switch-master message).
 * Input: the URL (cut at the first NUL, at most 1000 bytes). */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/redis_url.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_accepted(const struct redis_url *u)
{
    if (u->db < 0)
        abort();
    if (redis_url_is_sentinel(u)) {
        if (u->host != NULL || u->path != NULL || u->master == NULL || u->master[0] == '\0' ||
            strlen(u->master) > REDIS_URL_MASTER_MAX)
            abort();
        for (size_t i = 0; i < u->nsentinels; i++) {
            const struct redis_url_node *n = &u->sentinels[i];

            if (n->host == NULL || n->host[0] == '\0' || n->port < 1 || n->port > 65535)
                abort();
        }
        if (u->sentinel_user != NULL && u->sentinel_password == NULL)
            abort();
    } else if (u->path != NULL) {
        if (u->host != NULL || u->path[0] != '/' || u->port != 0)
            abort();
    } else if (u->host == NULL || u->host[0] == '\0' || u->port < 1 || u->port > 65535) {
        abort();
    }
    if (u->user != NULL && u->password == NULL)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct redis_url u;
    char err[256];
    size_t n = size < 1000 ? size : 1000;
    char *s = malloc(n + 1);
    int port;

    if (s == NULL)
        return 0;
    memcpy(s, data, n);
    s[n] = '\0';
    if (redis_url_parse(s, &u, err, sizeof(err)) == 0) {
        check_accepted(&u);
        redis_url_cleanup(&u);
    } else if (err[0] == '\0' || u.host != NULL || u.sentinels != NULL || u.password != NULL) {
        abort();
    }
    /* The same bytes as a sentinel's answer: host up to the first space, port after. */
    {
        const char *sp = memchr(s, ' ', strlen(s));
        size_t len = strlen(s);

        if (sp != NULL &&
            redis_url_check_addr(s, (size_t)(sp - s), sp + 1, len - (size_t)(sp - s) - 1, &port) ==
                0 &&
            (port < 1 || port > 65535))
            abort();
    }
    /* The same bytes as a +switch-master message. */
    {
        char host[64];
        int r = redis_url_switch_master(s, strlen(s), "mymaster", host, sizeof(host), &port);

        if (r == 1 && (strlen(host) == 0 || port < 1 || port > 65535))
            abort();
        if (r < -1 || r > 1)
            abort();
    }
    free(s);
    return 0;
}
