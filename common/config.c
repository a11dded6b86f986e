#include "common/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "common/log.h"
#include "common/utf8.h"

enum flag_kind { F_BOOL, F_NOBOOL, F_VALUE };

struct flag {
    const char *name; /* without the leading "--" */
    enum flag_kind kind;
    int (*set)(struct config *c, const char *v, char *err, size_t errlen);
};

static int bad(char *err, size_t errlen, const char *flag, const char *v, const char *what)
{
    snprintf(err, errlen, "--%s %s: %s", flag, v, what);
    return -1;
}

static int set_duration(const char *flag, const char *v, uint32_t lo, uint32_t *out, char *err,
                        size_t errlen);

static int parse_hostport(const char *flag, const char *v, char *out_host, size_t host_cap,
                          uint16_t *out_port, char *err, size_t errlen)
{
    const char *colon = strrchr(v, ':');
    char host[256];
    unsigned char addr[16];
    char *end;
    size_t hlen;
    long port;

    if (colon == NULL)
        return bad(err, errlen, flag, v, "expected HOST:PORT");
    hlen = (size_t)(colon - v);
    if (hlen >= sizeof(host) || hlen >= host_cap)
        return bad(err, errlen, flag, v, "host too long");
    memcpy(host, v, hlen);
    host[hlen] = '\0';
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = '\0';
        if (inet_pton(AF_INET6, host, addr) != 1)
            return bad(err, errlen, flag, v, "not an IPv6 address");
    } else if (hlen > 0 && inet_pton(AF_INET, host, addr) != 1) {
        if (strcmp(host, "localhost") == 0)
            strcpy(host, "127.0.0.1");
        else
            return bad(err, errlen, flag, v, "host must be a numeric IPv4 or [IPv6] address");
    }
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno != 0 || port < 1 || port > 65535)
        return bad(err, errlen, flag, v, "port must be 1-65535");
    snprintf(out_host, host_cap, "%s", host);
    *out_port = (uint16_t)port;
    return 0;
}

static int set_listen(struct config *c, const char *v, char *err, size_t errlen)
{
    return parse_hostport("listen", v, c->listen_host, sizeof(c->listen_host), &c->listen_port, err,
                          errlen);
}

static int set_admin(struct config *c, const char *v, char *err, size_t errlen)
{
    if (v[0] == '\0') {
        c->admin_port = 0;
        return 0;
    }
    return parse_hostport("admin", v, c->admin_host, sizeof(c->admin_host), &c->admin_port, err,
                          errlen);
}

static int set_drain_delay(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_duration("drain-delay", v, 0, &c->drain_delay_ms, err, errlen);
}

static int set_drain_spread(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_duration("drain-spread", v, 0, &c->drain_spread_ms, err, errlen);
}

static int set_drain_timeout(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_duration("drain-timeout", v, 1, &c->drain_timeout_ms, err, errlen);
}

static int set_drain_reason(struct config *c, const char *v, char *err, size_t errlen)
{
    size_t len = strlen(v);

    if (len > 123 || !utf8_is_valid((const uint8_t *)v, len))
        return bad(err, errlen, "drain-reason", v, "expected UTF-8 text of at most 123 bytes");
    memcpy(c->drain_reason, v, len + 1);
    return 0;
}

static int parse_int(const char *v, long lo, long hi, long *out)
{
    char *end;
    long n;

    errno = 0;
    n = strtol(v, &end, 10);
    if (*v == '\0' || *end != '\0' || errno != 0 || n < lo || n > hi)
        return -1;
    *out = n;
    return 0;
}

static int set_workers(struct config *c, const char *v, char *err, size_t errlen)
{
    long n;

    if (parse_int(v, 1, 256, &n) < 0)
        return bad(err, errlen, "workers", v, "expected a number 1-256");
    c->workers = (int)n;
    return 0;
}

/* Gateway ids end up in connection ids, Redis keys and channel names. */
static bool is_id_char(int ch)
{
    return isalnum(ch) || ch == '-' || ch == '_' || ch == '.';
}

static int set_id(struct config *c, const char *v, char *err, size_t errlen)
{
    size_t len = strlen(v);

    if (len == 0 || len > CONFIG_ID_MAX)
        return bad(err, errlen, "id", v, "expected 1-64 characters");
    for (size_t i = 0; i < len; i++)
        if (!is_id_char((unsigned char)v[i]))
            return bad(err, errlen, "id", v, "allowed characters: A-Z a-z 0-9 - _ .");
    memcpy(c->id, v, len + 1);
    return 0;
}

static int set_echo(struct config *c, const char *v, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    c->echo = v != NULL;
    return 0;
}

static int set_query_groups(struct config *c, const char *v, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    c->query_groups = v != NULL;
    return 0;
}

static int set_max_header(struct config *c, const char *v, char *err, size_t errlen)
{
    uint64_t n;

    if (config_parse_size(v, &n) < 0 || n < 256 || n > 1024 * 1024)
        return bad(err, errlen, "max-header", v, "expected a size from 256 to 1m");
    c->max_header = (size_t)n;
    return 0;
}

static int set_max_message(struct config *c, const char *v, char *err, size_t errlen)
{
    uint64_t n;

    if (config_parse_size(v, &n) < 0 || n < 1 || n > 1024ull * 1024 * 1024)
        return bad(err, errlen, "max-message", v, "expected a size from 1 to 1g");
    c->max_message = n;
    return 0;
}

static int set_duration(const char *flag, const char *v, uint32_t lo, uint32_t *out, char *err,
                        size_t errlen)
{
    uint32_t ms;

    if (config_parse_duration(v, &ms) < 0 || ms < lo || ms > 24u * 3600 * 1000)
        return bad(err, errlen, flag, v,
                   lo > 0 ? "expected a duration such as 500ms, 5s, 2m (not zero, at most 24h)"
                          : "expected a duration such as 500ms, 5s, 2m (at most 24h)");
    *out = ms;
    return 0;
}

static int set_close_timeout(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_duration("close-timeout", v, 1, &c->close_timeout_ms, err, errlen);
}

static int set_ping_interval(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_duration("ping-interval", v, 0, &c->ping_interval_ms, err, errlen);
}

static int set_handshake_timeout(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_duration("handshake-timeout", v, 1, &c->handshake_timeout_ms, err, errlen);
}

static int set_log_level(struct config *c, const char *v, char *err, size_t errlen)
{
    int l = log_level_parse(v);

    if (l < 0)
        return bad(err, errlen, "log-level", v, "expected debug, info, notice, warn or error");
    c->log_level = l;
    return 0;
}

static int set_redis(struct config *c, const char *v, char *err, size_t errlen)
{
    if (strncmp(v, "redis://", 8) != 0 && strncmp(v, "unix://", 7) != 0)
        return bad(err, errlen, "redis", v,
                   "expected redis://[user:password@]host:port[/db] "
                   "or unix:///path");
    if (strlen(v) >= sizeof(c->redis))
        return bad(err, errlen, "redis", v, "too long");
    snprintf(c->redis, sizeof(c->redis), "%s", v);
    c->redis_given = true;
    return 0;
}

/* Channel names: printable ASCII without spaces, so logs and keys stay readable. */
static int set_name(const char *flag, const char *v, bool may_be_empty, char *out, size_t cap,
                    char *err, size_t errlen)
{
    size_t len = strlen(v);

    if ((len == 0 && !may_be_empty) || len >= cap)
        return bad(err, errlen, flag, v, may_be_empty ? "too long" : "expected a non-empty name");
    for (size_t i = 0; i < len; i++)
        if (v[i] <= ' ' || v[i] >= 0x7f)
            return bad(err, errlen, flag, v, "expected printable ASCII without spaces");
    memcpy(out, v, len + 1);
    return 0;
}

static int set_channel(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_name("channel", v, false, c->channel, sizeof(c->channel), err, errlen);
}

static int set_events_channel(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_name("events-channel", v, true, c->events_channel, sizeof(c->events_channel), err,
                    errlen);
}

/* HTTP header names are tokens (RFC 9110 §5.6.2). */
static int set_header_name(const char *flag, const char *v, char *out, size_t cap, char *err,
                           size_t errlen)
{
    size_t len = strlen(v);

    if (len == 0 || len >= cap)
        return bad(err, errlen, flag, v, "expected a header name");
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)v[i]) && strchr("!#$%&'*+-.^_`|~", v[i]) == NULL)
            return bad(err, errlen, flag, v, "not a valid header name");
    memcpy(out, v, len + 1);
    return 0;
}

static int set_groups_header(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_header_name("groups-header", v, c->groups_header, sizeof(c->groups_header), err,
                           errlen);
}

static int set_user_header(struct config *c, const char *v, char *err, size_t errlen)
{
    return set_header_name("user-header", v, c->user_header, sizeof(c->user_header), err, errlen);
}

static int set_max_groups(struct config *c, const char *v, char *err, size_t errlen)
{
    long n;

    if (parse_int(v, 0, 1024, &n) < 0)
        return bad(err, errlen, "max-groups", v, "expected a number 0-1024");
    c->max_groups = (int)n;
    return 0;
}

static int set_max_outbound(struct config *c, const char *v, char *err, size_t errlen)
{
    uint64_t n;

    if (config_parse_size(v, &n) < 0 || n < 1024 || n > 1024ull * 1024 * 1024)
        return bad(err, errlen, "max-outbound", v, "expected a size from 1k to 1g");
    c->max_outbound = n;
    return 0;
}

static int set_max_pending(struct config *c, const char *v, char *err, size_t errlen)
{
    uint64_t n;

    if (config_parse_size(v, &n) < 0 || n < 1024 || n > 1024ull * 1024 * 1024 * 1024)
        return bad(err, errlen, "max-pending", v, "expected a size from 1k to 1024g");
    c->max_pending = n;
    return 0;
}

static int set_max_jobs(struct config *c, const char *v, char *err, size_t errlen)
{
    long n;

    if (parse_int(v, 1, 1000000, &n) < 0)
        return bad(err, errlen, "max-jobs", v, "expected a number 1-1000000");
    c->max_jobs = (uint32_t)n;
    return 0;
}

static const struct flag flags[] = {
    {"listen", F_VALUE, set_listen},
    {"workers", F_VALUE, set_workers},
    {"id", F_VALUE, set_id},
    {"echo", F_BOOL, set_echo},
    {"max-header", F_VALUE, set_max_header},
    {"max-message", F_VALUE, set_max_message},
    {"close-timeout", F_VALUE, set_close_timeout},
    {"ping-interval", F_VALUE, set_ping_interval},
    {"handshake-timeout", F_VALUE, set_handshake_timeout},
    {"log-level", F_VALUE, set_log_level},
    {"redis", F_VALUE, set_redis},
    {"channel", F_VALUE, set_channel},
    {"events-channel", F_VALUE, set_events_channel},
    {"no-query-groups", F_NOBOOL, set_query_groups},
    {"groups-header", F_VALUE, set_groups_header},
    {"user-header", F_VALUE, set_user_header},
    {"max-groups", F_VALUE, set_max_groups},
    {"admin", F_VALUE, set_admin},
    {"drain-delay", F_VALUE, set_drain_delay},
    {"drain-spread", F_VALUE, set_drain_spread},
    {"drain-timeout", F_VALUE, set_drain_timeout},
    {"drain-reason", F_VALUE, set_drain_reason},
    {"max-outbound", F_VALUE, set_max_outbound},
    {"max-pending", F_VALUE, set_max_pending},
    {"max-jobs", F_VALUE, set_max_jobs},
};

#define NFLAGS (sizeof(flags) / sizeof(flags[0]))

static const char usage[] =
    "usage: wsgate [flags]\n"
    "\n"
    "A WebSocket gateway: holds client connections and closes them on orders published\n"
    "on Redis. Every flag has an environment twin: --max-header is WSGATE_MAX_HEADER.\n"
    "\n"
    "  --listen HOST:PORT       address to accept clients on (default 0.0.0.0:8080)\n"
    "  --workers N              worker processes, 1-256 (default: number of CPUs)\n"
    "  --id NAME                gateway id in connection ids, logs, orders (default: host name)\n"
    "  --echo                   echo client messages back (tests, demos, conformance)\n"
    "  --max-header SIZE        largest upgrade request head (default 8k)\n"
    "  --max-message SIZE       largest client message; larger closes with 1009 (default 1m)\n"
    "  --close-timeout DUR      wait this long for the client's close reply (default 5s)\n"
    "  --ping-interval DUR      ping a connection silent this long, drop it after twice\n"
    "                           that; 0 disables (default 30s)\n"
    "  --handshake-timeout DUR  drop a client that has not finished its upgrade request\n"
    "                           by then (default 10s)\n"
    "  --log-level LEVEL        debug, info, notice, warn or error (default notice)\n"
    "  --redis URL              redis://[user:password@]host:port[/db] or unix:///path\n"
    "                           (default redis://127.0.0.1:6379)\n"
    "  --channel NAME           order channel; each worker also subscribes to\n"
    "                           NAME:<gateway id> (default wsgate:orders)\n"
    "  --events-channel NAME    open/close events are published here; empty disables\n"
    "                           (default wsgate:events)\n"
    "  --no-query-groups        ignore ?group= and ?user= in the request target\n"
    "  --groups-header NAME     comma-separated groups from a trusted proxy's header\n"
    "  --user-header NAME       user id from a trusted proxy's header (joins user:ID)\n"
    "  --max-groups N           groups per connection, more is refused with 400 (default 16)\n"
    "  --admin HOST:PORT        /healthz, /readyz and /metrics; empty disables\n"
    "                           (default 127.0.0.1:9090)\n"
    "  --drain-delay DUR        on drain, readiness fails at once; listeners close after\n"
    "                           this (default 0s)\n"
    "  --drain-spread DUR       closes with 1001 spread across this window (default 10s)\n"
    "  --drain-timeout DUR      connections still open this long after the drain began\n"
    "                           are cut (default 30s)\n"
    "  --drain-reason TEXT      close reason sent on drain (default \"server restarting\")\n"
    "  --max-outbound SIZE      output queued for one client; past it the client is closed\n"
    "                           with 1013 \"slow consumer\" (default 1m)\n"
    "  --max-pending SIZE       per worker: bytes held in partly received messages; a\n"
    "                           message that would pass it closes with 1013 (default: a\n"
    "                           quarter of RAM shared by the workers, at most 256m)\n"
    "  --max-jobs N             close orders running at once per worker; more are refused\n"
    "                           (default 1000)\n"
    "  --help                   this text\n"
    "\n"
    "DUR: 500ms, 5s, 2m, 1h or a number of seconds. SIZE: bytes, or with k, m, g.\n";

const char *config_usage(void)
{
    return usage;
}

void config_defaults(struct config *c)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

    memset(c, 0, sizeof(*c));
    c->listen_port = 8080;
    c->workers = ncpu > 0 ? (ncpu > 256 ? 256 : (int)ncpu) : 1;
    if (gethostname(c->id, sizeof(c->id)) != 0 || c->id[0] == '\0')
        strcpy(c->id, "wsgate");
    c->id[CONFIG_ID_MAX] = '\0';
    for (char *p = c->id; *p != '\0'; p++)
        if (!is_id_char((unsigned char)*p))
            *p = '_';
    c->max_header = 8 * 1024;
    c->max_message = 1024 * 1024;
    c->close_timeout_ms = 5000;
    c->ping_interval_ms = 30000;
    c->handshake_timeout_ms = 10000;
    c->log_level = LOG_NOTICE;
    strcpy(c->redis, "redis://127.0.0.1:6379");
    strcpy(c->channel, "wsgate:orders");
    strcpy(c->events_channel, "wsgate:events");
    c->query_groups = true;
    c->max_groups = 16;
    strcpy(c->admin_host, "127.0.0.1");
    c->admin_port = 9090;
    c->drain_delay_ms = 0;
    c->drain_spread_ms = 10000;
    c->drain_timeout_ms = 30000;
    strcpy(c->drain_reason, "server restarting");
    c->max_outbound = 1024 * 1024;
    c->max_pending = 0; /* resolved by config_parse() once --workers is known */
    c->max_jobs = 1000;
}

static uint64_t default_max_pending(int workers)
{
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    uint64_t share;

    if (pages <= 0 || size <= 0)
        return CONFIG_MAX_PENDING_CAP;
    share = (uint64_t)pages * (uint64_t)size / 4 / (uint64_t)(workers > 0 ? workers : 1);
    if (share < 1024 * 1024)
        share = 1024 * 1024;
    return share < CONFIG_MAX_PENDING_CAP ? share : CONFIG_MAX_PENDING_CAP;
}

int config_parse_duration(const char *s, uint32_t *ms)
{
    char *end;
    double v, mult;

    if (*s == '\0' || isspace((unsigned char)*s) || *s == '-' || *s == '+')
        return -1;
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s)
        return -1;
    if (strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "s") == 0 || *end == '\0')
        mult = 1000;
    else if (strcmp(end, "m") == 0)
        mult = 60000;
    else if (strcmp(end, "h") == 0)
        mult = 3600000;
    else
        return -1;
    v *= mult;
    if (!(v >= 0) || v > (double)UINT32_MAX)
        return -1;
    *ms = (uint32_t)v;
    return 0;
}

int config_parse_size(const char *s, uint64_t *bytes)
{
    char *end;
    unsigned long long v;
    uint64_t mult = 1;

    if (!isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0)
        return -1;
    if (*end == 'k' || *end == 'K')
        mult = 1024;
    else if (*end == 'm' || *end == 'M')
        mult = 1024 * 1024;
    else if (*end == 'g' || *end == 'G')
        mult = 1024 * 1024 * 1024;
    else if (*end != '\0')
        return -1;
    if (mult > 1 && end[1] != '\0')
        return -1;
    if (v > UINT64_MAX / mult)
        return -1;
    *bytes = v * mult;
    return 0;
}

static const struct flag *find_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < NFLAGS; i++)
        if (strlen(flags[i].name) == len && strncmp(flags[i].name, name, len) == 0)
            return &flags[i];
    return NULL;
}

/* WSGATE_MAX_HEADER → "max-header" */
static void env_name(const char *flag, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "WSGATE_");
    for (; *flag != '\0' && n + 1 < cap; flag++)
        out[n++] = *flag == '-' ? '_' : (char)toupper((unsigned char)*flag);
    out[n] = '\0';
}

static int bool_value(const char *v)
{
    if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 ||
        strcmp(v, "on") == 0)
        return 1;
    if (strcmp(v, "0") == 0 || strcmp(v, "false") == 0 || strcmp(v, "no") == 0 ||
        strcmp(v, "off") == 0 || strcmp(v, "") == 0)
        return 0;
    return -1;
}

static int apply_env(struct config *c, char **envp, char *err, size_t errlen)
{
    char name[64];

    if (envp == NULL)
        return 0;
    for (size_t i = 0; i < NFLAGS; i++) {
        const struct flag *f = &flags[i];
        size_t nlen;

        env_name(f->name, name, sizeof(name));
        nlen = strlen(name);
        for (char **e = envp; *e != NULL; e++) {
            const char *v;
            int b;

            if (strncmp(*e, name, nlen) != 0 || (*e)[nlen] != '=')
                continue;
            v = *e + nlen + 1;
            if (f->kind == F_VALUE) {
                if (f->set(c, v, err, errlen) < 0) {
                    size_t used = strlen(err);
                    snprintf(err + used, errlen - used, " (from %s)", name);
                    return -1;
                }
                continue;
            }
            b = bool_value(v);
            if (b < 0) {
                snprintf(err, errlen, "%s=%s: expected 1/0, true/false, yes/no", name, v);
                return -1;
            }
            /* F_NOBOOL flags ("--no-query-groups") turn a default off when set. */
            f->set(c, (b == 1) == (f->kind == F_BOOL) ? "" : NULL, err, errlen);
        }
    }
    return 0;
}

int config_parse(struct config *c, int argc, char **argv, char **envp, char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
    if (apply_env(c, envp, err, errlen) < 0)
        return -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *eq, *v = NULL;
        const struct flag *f;

        if (strncmp(a, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%s' (flags start with --)", a);
            return -1;
        }
        a += 2;
        eq = strchr(a, '=');
        f = find_flag(a, eq != NULL ? (size_t)(eq - a) : strlen(a));
        if (f == NULL) {
            snprintf(err, errlen, "unknown flag '%s' (see --help)", argv[i]);
            return -1;
        }
        if (f->kind != F_VALUE) {
            if (eq != NULL) {
                snprintf(err, errlen, "--%s takes no value", f->name);
                return -1;
            }
            f->set(c, f->kind == F_BOOL ? "" : NULL, err, errlen);
            continue;
        }
        if (eq != NULL) {
            v = eq + 1;
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            snprintf(err, errlen, "--%s needs a value", f->name);
            return -1;
        }
        if (f->set(c, v, err, errlen) < 0)
            return -1;
    }
    if (c->max_pending == 0)
        c->max_pending = default_max_pending(c->workers);
    return 0;
}
