/*
 * wsgatectl: sends close, send and drain orders to the gateways over Redis, collects
 * their acknowledgements, and lists the live gateways from their heartbeats.
 *
 * An order is checked here by the same code the gateways run (common/order.c):
 * the order is built, written out with order_to_json() and read back with
 * order_parse(), so what a gateway would refuse is refused before it is sent.
 *
 * With --order-key (or WSGATE_ORDER_KEY), every order gets a ts and is published as a
 * signed envelope (common/order_sig.h), as gateways started with --order-key require.
 *
 * With --orders-stream NAME (or WSGATE_ORDERS_STREAM), every order is also added to
 * that stream (XADD NAME MAXLEN ~ 100000 * order TEXT) before it is published, for
 * gateways started with the same --orders-stream: they read what they missed.
 *
 * Exit status: 0 done; 1 a worker refused the order or did not answer in time;
 * 2 bad arguments or an order the rules refuse; 3 Redis unreachable or failing.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "version.h"

#include "common/clock.h"
#include "common/config.h"
#include "common/order.h"
#include "common/order_sig.h"
#include "common/redis_url.h"
#include "common/slot.h"
#include "common/tomb.h"
#include "common/utf8.h"

enum {
    EXIT_DONE = 0,
    EXIT_FAILED = 1,
    EXIT_USAGE = 2,
    EXIT_REDIS = 3,
};

#define DEFAULT_REDIS     "redis://127.0.0.1:6379"
#define DEFAULT_CHANNEL   "wsgate:orders"
#define REDIS_TIMEOUT_MS  5000
#define CHANNEL_MAX       200     /* bytes; keys and reply channels are built from it */
#define WAIT_MAX_MS       3600000 /* --wait: one hour */
#define SCAN_COUNT        "200"
#define HEARTBEAT_STALE_S 5        /* older than this: the worker has likely gone */
#define STREAM_MAXLEN     "100000" /* --orders-stream is trimmed to about this many entries */

static const char usage_main[] =
    "usage: wsgatectl [--redis URL] [--channel NAME] [--order-key KEYID:SECRET]\n"
    "                 [--orders-stream NAME] COMMAND [OPTIONS]\n"
    "\n"
    "commands:\n"
    "  close     close client connections on the gateways\n"
    "  send      push a message to client connections\n"
    "  drain     close every connection of one gateway, with 1001\n"
    "  gateways  list the live gateways\n"
    "  unban     lift tombstones (set by close --ttl) early\n"
    "  tombstones  list the tombstones in force\n"
    "\n"
    "  --redis URL     redis://[user:password@]host[:port][/db], unix:///path[?db=N],\n"
    "                  sentinel://[user:password@]host[:port][,...]/MASTER[/db]\n"
    "                  [?sentinel_user=U&sentinel_password=P]: the master the sentinels\n"
    "                  name, checked with ROLE; or cluster://[user:password@]host:port\n"
    "                  [,host:port...] (SPUBLISH to the master of the channel's slot)\n"
    "                  (env WSGATE_REDIS, default " DEFAULT_REDIS ")\n"
    "  --channel NAME  orders channel (env WSGATE_CHANNEL, default " DEFAULT_CHANNEL ")\n"
    "  --order-key KEYID:SECRET\n"
    "                  sign every order with this key, for gateways that require it (env\n"
    "                  WSGATE_ORDER_KEY, which keeps the secret out of ps; of a list of\n"
    "                  keys, the first signs)\n"
    "  --orders-stream NAME\n"
    "                  also XADD every order to this stream (MAXLEN ~ " STREAM_MAXLEN "), for\n"
    "                  gateways started with --orders-stream NAME (env WSGATE_ORDERS_STREAM)\n"
    "  --help          this text; 'wsgatectl COMMAND --help' for a command\n"
    "  --version       the version and the git revision it was built from\n"
    "\n"
    "exit status: 0 done, 1 a worker refused or did not answer, 2 bad arguments or a\n"
    "refused order, 3 Redis unreachable\n";

static const char usage_close[] =
    "usage: wsgatectl close (--conn ID... | --group NAME... | --all) [--except ID...]\n"
    "                       [--gateway ID] [--code N] [--reason TEXT] [--spread MS]\n"
    "                       [--dry-run] [--max-affected N] [--ttl MS] [--wait MS] [--json]\n"
    "                       [--redis URL] [--channel NAME]\n"
    "\n"
    "  --conn ID         a connection id (repeatable); ids of one worker go to its channel\n"
    "                    CHANNEL:worker:PREFIX, which only it receives\n"
    "  --group NAME      every connection in a group (repeatable); a single group goes to its\n"
    "                    group channel CHANNEL:group:NAME, which only the workers holding\n"
    "                    members receive; several go to CHANNEL\n"
    "  --all             every connection\n"
    "  --except ID       spare this connection (repeatable)\n"
    "  --gateway ID      only this gateway applies the order\n"
    "  --code N          close code: 1000-1003, 1007-1009, 1011-1014, 3000-4999 (default 1000)\n"
    "  --reason TEXT     UTF-8 close reason, cut to 123 bytes\n"
    "  --spread MS       spread the closes over MS milliseconds (0-3600000)\n"
    "  --dry-run         count the connections, close nothing\n"
    "  --max-affected N  refuse to close more than N connections per worker\n"
    "  --ttl MS          with --group: also refuse the group's new connections for MS\n"
    "                    milliseconds (1-86400000), on every gateway (a tombstone); a user\n"
    "                    is the group user:ID. Goes to CHANNEL, which every worker gets\n"
    "  --wait MS         wait up to MS milliseconds for every live worker to answer (on a\n"
    "                    group's or worker's channel: every worker the order reached)\n"
    "  --json            print each acknowledgement as received, one per line\n"
    "\n"
    "Prints the order id; with --wait, a summary of the answers.\n";

static const char usage_send[] =
    "usage: wsgatectl send (--conn ID... | --group NAME... | --all)\n"
    "                      (--text TEXT | --binary-file FILE | --stdin) [--except ID...]\n"
    "                      [--gateway ID] [--dry-run] [--max-affected N] [--wait MS] [--json]\n"
    "                      [--redis URL] [--channel NAME]\n"
    "\n"
    "  --conn ID           a connection id (repeatable)\n"
    "  --group NAME        every connection in a group (repeatable)\n"
    "  --all               every connection\n"
    "  --text TEXT         send TEXT (UTF-8) as a text message\n"
    "  --binary-file FILE  send the bytes of FILE as a binary message ('-': standard input)\n"
    "  --stdin             send standard input (UTF-8) as a text message\n"
    "  --except ID         spare this connection (repeatable)\n"
    "  --gateway ID        only this gateway applies the order\n"
    "  --dry-run           count the connections, send nothing\n"
    "  --max-affected N    refuse to send to more than N connections per worker\n"
    "  --wait MS           wait up to MS milliseconds for every live worker to answer\n"
    "  --json              print each acknowledgement as received, one per line\n"
    "\n"
    "The message may be as large as the gateways' --max-send; WSGATE_MAX_SEND (default\n"
    "1m) says how large they take. Prints the order id; with --wait, a summary of the\n"
    "answers: matched, sent, and dropped (slow consumers closed with 1013).\n";

static const char usage_drain[] =
    "usage: wsgatectl drain --gateway ID [--reason TEXT] [--spread MS] [--wait MS] [--json]\n"
    "                       [--redis URL] [--channel NAME]\n"
    "\n"
    "Closes every connection of gateway ID with 1001 and stops it from taking new ones.\n"
    "  --reason TEXT  close reason (default: the gateway's configured drain reason)\n"
    "  --spread MS    spread the closes over MS milliseconds (0-3600000)\n"
    "  --wait MS      wait up to MS milliseconds for the gateway's workers to answer\n"
    "  --json         print each acknowledgement as received, one per line\n";

static const char usage_unban[] =
    "usage: wsgatectl unban --group NAME... [--wait MS] [--json] [--redis URL] [--channel NAME]\n"
    "\n"
    "Lifts the tombstones of these groups (set by close --ttl) on every gateway and in\n"
    "Redis. A user is the group user:ID.\n"
    "  --group NAME  a group (repeatable)\n"
    "  --wait MS     wait up to MS milliseconds for every live worker to answer\n"
    "  --json        print each acknowledgement as received, one per line\n";

static const char usage_tombstones[] =
    "usage: wsgatectl tombstones [--json] [--redis URL] [--channel NAME]\n"
    "\n"
    "Lists the tombstones in force (the hash CHANNEL:tombs): group, time left, code,\n"
    "reason and the order that set it.\n"
    "  --json  one JSON object per tombstone\n";

static const char usage_gateways[] =
    "usage: wsgatectl gateways [--json] [--redis URL] [--channel NAME]\n"
    "\n"
    "Lists the live gateways (from their heartbeats): workers, connections, draining.\n"
    "  --json  one JSON object per gateway\n";

enum cmd {
    CMD_CLOSE,
    CMD_SEND,
    CMD_DRAIN,
    CMD_GATEWAYS,
    CMD_UNBAN,
    CMD_TOMBSTONES,
};

enum opt_id {
    OPT_CONN = 256,
    OPT_GROUP,
    OPT_ALL,
    OPT_EXCEPT,
    OPT_GATEWAY,
    OPT_CODE,
    OPT_REASON,
    OPT_SPREAD,
    OPT_DRY_RUN,
    OPT_MAX_AFFECTED,
    OPT_WAIT,
    OPT_JSON,
    OPT_REDIS,
    OPT_CHANNEL,
    OPT_ORDER_KEY,
    OPT_TEXT,
    OPT_BINARY_FILE,
    OPT_STDIN,
    OPT_TTL,
};

#define OPT_BIT(id) (1u << ((id)-OPT_CONN))
#define OPTS_COMMON \
    (OPT_BIT(OPT_REDIS) | OPT_BIT(OPT_CHANNEL) | OPT_BIT(OPT_JSON) | OPT_BIT(OPT_ORDER_KEY))
#define OPTS_DRAIN                                                                    \
    (OPTS_COMMON | OPT_BIT(OPT_GATEWAY) | OPT_BIT(OPT_REASON) | OPT_BIT(OPT_SPREAD) | \
     OPT_BIT(OPT_WAIT))
#define OPTS_CLOSE                                                                                \
    (OPTS_DRAIN | OPT_BIT(OPT_CONN) | OPT_BIT(OPT_GROUP) | OPT_BIT(OPT_ALL) |                     \
     OPT_BIT(OPT_EXCEPT) | OPT_BIT(OPT_CODE) | OPT_BIT(OPT_DRY_RUN) | OPT_BIT(OPT_MAX_AFFECTED) | \
     OPT_BIT(OPT_TTL))
#define OPTS_UNBAN (OPTS_COMMON | OPT_BIT(OPT_GROUP) | OPT_BIT(OPT_WAIT))
#define OPTS_SEND                                                                         \
    (OPTS_COMMON | OPT_BIT(OPT_GATEWAY) | OPT_BIT(OPT_WAIT) | OPT_BIT(OPT_CONN) |         \
     OPT_BIT(OPT_GROUP) | OPT_BIT(OPT_ALL) | OPT_BIT(OPT_EXCEPT) | OPT_BIT(OPT_DRY_RUN) | \
     OPT_BIT(OPT_MAX_AFFECTED) | OPT_BIT(OPT_TEXT) | OPT_BIT(OPT_BINARY_FILE) |           \
     OPT_BIT(OPT_STDIN))

static const struct option long_options[] = {
    {"conn", required_argument, NULL, OPT_CONN},
    {"group", required_argument, NULL, OPT_GROUP},
    {"all", no_argument, NULL, OPT_ALL},
    {"except", required_argument, NULL, OPT_EXCEPT},
    {"gateway", required_argument, NULL, OPT_GATEWAY},
    {"code", required_argument, NULL, OPT_CODE},
    {"reason", required_argument, NULL, OPT_REASON},
    {"spread", required_argument, NULL, OPT_SPREAD},
    {"dry-run", no_argument, NULL, OPT_DRY_RUN},
    {"max-affected", required_argument, NULL, OPT_MAX_AFFECTED},
    {"wait", required_argument, NULL, OPT_WAIT},
    {"json", no_argument, NULL, OPT_JSON},
    {"redis", required_argument, NULL, OPT_REDIS},
    {"channel", required_argument, NULL, OPT_CHANNEL},
    {"order-key", required_argument, NULL, OPT_ORDER_KEY},
    {"text", required_argument, NULL, OPT_TEXT},
    {"binary-file", required_argument, NULL, OPT_BINARY_FILE},
    {"stdin", no_argument, NULL, OPT_STDIN},
    {"ttl", required_argument, NULL, OPT_TTL},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* The command line, once read. Strings are borrowed from argv or the environment. */
struct options {
    enum cmd cmd;
    const char *usage;
    const char *redis;
    const char *channel;
    const char *order_key; /* KEYID:SECRET list, or NULL: orders go unsigned */
    const char *stream;    /* --orders-stream, or NULL: orders are only published */
    const char *gateway;
    const char *reason;
    const char *text;        /* send: --text */
    const char *binary_file; /* send: --binary-file ("-": standard input) */
    bool from_stdin;         /* send: --stdin */
    char **conns;            /* owned array, borrowed strings */
    size_t nconns;
    char **groups; /* owned array, borrowed strings */
    size_t ngroups;
    char **excepts; /* owned array, borrowed strings */
    size_t nexcepts;
    bool all;
    bool dry_run;
    bool json;
    long long code;             /* -1: the default */
    long long spread_ms;        /* 0 */
    long long max_affected;     /* -1: no limit */
    long long wait_ms;          /* -1: do not wait */
    long long ttl_ms;           /* close --ttl: 0 = no tombstone */
    struct order_sig_ring keys; /* from order_key; keys[0] signs */
};

/* One gateway worker: from its heartbeat, its acknowledgement, or both. */
struct worker {
    char *gateway; /* owned */
    long long number;
    long long conns;
    long long ts; /* heartbeat time, Unix seconds */
    bool draining;
    bool redis_up;
    bool expected; /* had a live heartbeat when the order went out */
    bool answered;
    long long matched;
    long long closed;  /* closed, or sent (send orders) */
    long long dropped; /* send: slow consumers */
    char *error;       /* owned: the refusal it answered with, or NULL */
};

struct worker_list {
    struct worker *v; /* owned */
    size_t n;
    size_t cap;
};

__attribute__((format(printf, 1, 2))) static void warn(const char *fmt, ...)
{
    va_list ap;

    fputs("wsgatectl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

__attribute__((format(printf, 2, 3))) static int usage_error(const char *usage, const char *fmt,
                                                             ...)
{
    va_list ap;

    fputs("wsgatectl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    /* The synopsis only: the whole text is one --help away. */
    fprintf(stderr, "\n%.*s\n(--help for more)\n", (int)(strstr(usage, "\n\n") - usage), usage);
    return EXIT_USAGE;
}

static const char *plural(long long n)
{
    return n == 1 ? "" : "s";
}

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A whole decimal number in min..max. */
static bool parse_number(const char *s, long long min, long long max, long long *out)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || !(s[0] == '-' || (s[0] >= '0' && s[0] <= '9')) ||
        v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* ctl-<32 hex digits>: 16 random bytes, so ids never repeat across runs and hosts. */
static int new_order_id(char *id, size_t size)
{
    unsigned char rnd[16];
    size_t got = 0;

    while (got < sizeof(rnd)) {
        ssize_t n = getrandom(rnd + got, sizeof(rnd) - got, 0);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got < sizeof(rnd)) {
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

        if (fd < 0 || read(fd, rnd, sizeof(rnd)) != (ssize_t)sizeof(rnd)) {
            if (fd >= 0)
                close(fd);
            return -1;
        }
        close(fd);
    }
    snprintf(id, size, "ctl-");
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(id + 4 + 2 * i, size - 4 - 2 * i, "%02x", rnd[i]);
    return 0;
}

/* --- command line ------------------------------------------------------------------------ */

static void options_cleanup(struct options *o)
{
    free(o->conns);
    free(o->groups);
    free(o->excepts);
}

static int parse_options(int argc, char **argv, struct options *o)
{
    unsigned allowed = o->cmd == CMD_CLOSE   ? OPTS_CLOSE
                       : o->cmd == CMD_SEND  ? OPTS_SEND
                       : o->cmd == CMD_DRAIN ? OPTS_DRAIN
                       : o->cmd == CMD_UNBAN ? OPTS_UNBAN
                                             : OPTS_COMMON;
    size_t max = (size_t)argc;
    int c;

    o->conns = calloc(max, sizeof(*o->conns));
    o->groups = calloc(max, sizeof(*o->groups));
    o->excepts = calloc(max, sizeof(*o->excepts));
    if (o->conns == NULL || o->groups == NULL || o->excepts == NULL) {
        warn("out of memory");
        return EXIT_FAILED;
    }
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", long_options, NULL)) != -1) {
        const char *arg = argv[optind - 1];

        if (c == 'h') {
            fputs(o->usage, stdout);
            return -1;
        }
        if (c == ':')
            return usage_error(o->usage, "%s needs a value", arg);
        if (c == '?' || c < OPT_CONN || !(allowed & OPT_BIT(c)))
            return usage_error(o->usage, "%s: unknown option %s", argv[0], arg);
        switch (c) {
        case OPT_CONN:
            o->conns[o->nconns++] = optarg;
            break;
        case OPT_GROUP:
            o->groups[o->ngroups++] = optarg;
            break;
        case OPT_EXCEPT:
            o->excepts[o->nexcepts++] = optarg;
            break;
        case OPT_ALL:
            o->all = true;
            break;
        case OPT_GATEWAY:
            o->gateway = optarg;
            break;
        case OPT_REASON:
            o->reason = optarg;
            break;
        case OPT_CODE:
            if (!parse_number(optarg, 0, 65535, &o->code))
                return usage_error(o->usage, "--code: not a close code: %s", optarg);
            break;
        case OPT_SPREAD:
            if (!parse_number(optarg, 0, ORDER_SPREAD_MAX, &o->spread_ms))
                return usage_error(o->usage, "--spread: must be 0 to %u ms, got %s",
                                   ORDER_SPREAD_MAX, optarg);
            break;
        case OPT_DRY_RUN:
            o->dry_run = true;
            break;
        case OPT_MAX_AFFECTED:
            if (!parse_number(optarg, 0, LLONG_MAX, &o->max_affected))
                return usage_error(o->usage, "--max-affected: must be 0 or more, got %s", optarg);
            break;
        case OPT_WAIT:
            if (!parse_number(optarg, 1, WAIT_MAX_MS, &o->wait_ms))
                return usage_error(o->usage, "--wait: must be 1 to %d ms, got %s", WAIT_MAX_MS,
                                   optarg);
            break;
        case OPT_JSON:
            o->json = true;
            break;
        case OPT_REDIS:
            o->redis = optarg;
            break;
        case OPT_CHANNEL:
            o->channel = optarg;
            break;
        case OPT_ORDER_KEY:
            o->order_key = optarg;
            break;
        case OPT_TEXT:
            o->text = optarg;
            break;
        case OPT_BINARY_FILE:
            o->binary_file = optarg;
            break;
        case OPT_STDIN:
            o->from_stdin = true;
            break;
        case OPT_TTL:
            if (!parse_number(optarg, 1, ORDER_TTL_MAX, &o->ttl_ms))
                return usage_error(o->usage, "--ttl: must be 1 to %u ms, got %s", ORDER_TTL_MAX,
                                   optarg);
            break;
        default:
            return usage_error(o->usage, "%s: unknown option %s", argv[0], arg);
        }
    }
    if (optind < argc)
        return usage_error(o->usage, "%s: unexpected argument %s", argv[0], argv[optind]);
    return 0;
}

/* Reads --order-key into o->keys; the message never shows the secret. */
static int check_order_key(struct options *o)
{
    char err[200];

    if (o->order_key == NULL || o->cmd == CMD_GATEWAYS)
        return 0;
    if (order_sig_ring_add(&o->keys, o->order_key, err, sizeof(err)) < 0)
        return usage_error(o->usage, "--order-key: %s", err);
    return 0;
}

static int check_channel(const char *channel)
{
    size_t len = strlen(channel);

    if (len == 0 || len > CHANNEL_MAX)
        return usage_error(usage_main, "--channel: must be 1 to %d bytes", CHANNEL_MAX);
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)channel[i] <= ' ' || channel[i] == 0x7f)
            return usage_error(usage_main, "--channel: no spaces or control characters");
    }
    return 0;
}

/* --- Redis ------------------------------------------------------------------------------- */

/* A connection to one node (host:port, or path when not NULL), logged in with user and
 * password when given, on db; NULL after saying why. */
static redisContext *node_open(const char *host, int port, const char *path, const char *user,
                               const char *password, int db)
{
    struct timeval tv = {REDIS_TIMEOUT_MS / 1000, (REDIS_TIMEOUT_MS % 1000) * 1000};
    char where[300];
    redisContext *c;
    redisReply *r;

    if (path != NULL) {
        snprintf(where, sizeof(where), "%s", path);
        c = redisConnectUnixWithTimeout(path, tv);
    } else {
        snprintf(where, sizeof(where), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
        c = redisConnectWithTimeout(host, port, tv);
    }
    if (c == NULL) {
        warn("cannot connect to Redis at %s: out of memory", where);
        return NULL;
    }
    if (c->err) {
        warn("cannot connect to Redis at %s: %s", where, c->errstr);
        goto err_free;
    }
    if (redisSetTimeout(c, tv) != REDIS_OK) {
        warn("Redis at %s: cannot set a timeout: %s", where, c->errstr);
        goto err_free;
    }
    if (password != NULL) {
        if (user != NULL)
            r = redisCommand(c, "AUTH %s %s", user, password);
        else
            r = redisCommand(c, "AUTH %s", password);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            warn("Redis at %s: AUTH failed: %s", where, r != NULL ? r->str : c->errstr);
            goto err_free_reply;
        }
        freeReplyObject(r);
    }
    if (db != 0) {
        r = redisCommand(c, "SELECT %d", db);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            warn("Redis at %s: SELECT %d failed: %s", where, db, r != NULL ? r->str : c->errstr);
            goto err_free_reply;
        }
        freeReplyObject(r);
    }
    return c;
err_free_reply:
    if (r != NULL)
        freeReplyObject(r);
err_free:
    redisFree(c);
    return NULL;
}

/* Whether c is a master (ROLE), saying why not. */
static bool node_is_master(redisContext *c, const char *host, int port)
{
    redisReply *r = redisCommand(c, "ROLE");
    const char *role = "something else";
    bool ok;

    if (r == NULL)
        role = c->errstr;
    else if (r->type == REDIS_REPLY_ERROR)
        role = r->str;
    else if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
             r->element[0]->type == REDIS_REPLY_STRING)
        role = r->element[0]->str;
    ok = strcmp(role, "master") == 0 && r != NULL && r->type == REDIS_REPLY_ARRAY;
    if (!ok)
        warn("Redis at %s:%d: not a master (ROLE says %s)", host, port, role);
    if (r != NULL)
        freeReplyObject(r);
    return ok;
}

/* The master named in a sentinel URL, as the gateways find it: each sentinel in the
 * URL's order is asked (SENTINEL get-master-addr-by-name), and the first address that
 * answers ROLE with master is used. NULL after saying why. */
static redisContext *sentinel_open(const struct redis_url *u)
{
    for (size_t i = 0; i < u->nsentinels; i++) {
        const struct redis_url_node *n = &u->sentinels[i];
        redisContext *s, *c;
        redisReply *r;
        char host[256];
        int port;

        s = node_open(n->host, n->port, NULL, u->sentinel_user, u->sentinel_password, 0);
        if (s == NULL)
            continue;
        r = redisCommand(s, "SENTINEL get-master-addr-by-name %s", u->master);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING ||
            r->element[1]->type != REDIS_REPLY_STRING ||
            redis_url_check_addr(r->element[0]->str, r->element[0]->len, r->element[1]->str,
                                 r->element[1]->len, &port) < 0) {
            warn("sentinel %s:%d: %s", n->host, n->port,
                 r == NULL                      ? s->errstr
                 : r->type == REDIS_REPLY_NIL   ? "no master by that name"
                 : r->type == REDIS_REPLY_ERROR ? r->str
                                                : "malformed answer");
            if (r != NULL)
                freeReplyObject(r);
            redisFree(s);
            continue;
        }
        snprintf(host, sizeof(host), "%s", r->element[0]->str);
        freeReplyObject(r);
        redisFree(s);
        c = node_open(host, port, NULL, u->user, u->password, u->db);
        if (c != NULL && node_is_master(c, host, port))
            return c;
        if (c != NULL)
            redisFree(c);
    }
    warn("no sentinel named a reachable master %s (asked %zu)", u->master, u->nsentinels);
    return NULL;
}

/* A connection to host:port (NULL: the URL's own address), as the URL logs in. */
static redisContext *redis_open_at(const struct redis_url *u, const char *host, int port)
{
    if (host == NULL)
        return node_open(u->host, u->port, u->path, u->user, u->password, u->db);
    return node_open(host, port, NULL, u->user, u->password, u->db);
}

/* A connection to the URL's Redis: the master the sentinels name, in a cluster the first
 * seed that answers, else the URL's address. */
static redisContext *redis_open(const struct redis_url *u)
{
    redisContext *c = NULL;

    if (redis_url_is_sentinel(u))
        return sentinel_open(u);
    for (size_t i = 0; i < u->nseeds && c == NULL; i++)
        c = redis_open_at(u, u->seeds[i].host, u->seeds[i].port);
    return u->nseeds > 0 ? c : redis_open_at(u, NULL, 0);
}

#define MAX_HOPS 5

/*
 * In a cluster: moves *c to the master serving slot, from the CLUSTER NODES answer of
 * the node *c is on. A replica would take an SPUBLISH for its master's slots itself and
 * count only its own subscribers, so the count of receivers would say 0. Returns 0, or
 * -1 when *c failed (the caller's next command says why) or was replaced by NULL.
 */
static int cluster_to_master(const struct redis_url *u, redisContext **c, unsigned slot)
{
    struct slot_map *m = malloc(sizeof(*m));
    redisReply *r = redisCommand(*c, "CLUSTER NODES");
    const char *why = "bad reply";
    int i, rc = 0;

    if (m == NULL || r == NULL || r->type != REDIS_REPLY_STRING ||
        slot_map_parse_nodes(m, r->str, r->len, &why) < 0 || (i = slot_map_owner(m, slot)) < 0) {
        goto out; /* MOVED answers will lead the way */
    }
    if (m->nodes[i].port != (*c)->tcp.port || (*c)->tcp.host == NULL ||
        strcmp(m->nodes[i].host, (*c)->tcp.host) != 0) {
        redisFree(*c);
        *c = redis_open_at(u, m->nodes[i].host, m->nodes[i].port);
        rc = *c != NULL ? 0 : -1;
    }
out:
    if (r != NULL)
        freeReplyObject(r);
    free(m);
    return rc;
}

/*
 * Runs argv on *c, whose argv[1] is a key or channel; in a cluster, on the master of its
 * slot (cluster_to_master()), and a MOVED or ASK answer moves *c to the node it names
 * (ASKING first for ASK), up to MAX_HOPS times. Returns the reply (NULL: see
 * (*c)->errstr, or *c is NULL after a failed move, said why).
 */
static redisReply *redis_routed(const struct redis_url *u, redisContext **c, int argc,
                                const char **argv, const size_t *argvlen)
{
    if (u->nseeds > 0 && cluster_to_master(u, c, slot_of(argv[1], argvlen[1])) < 0)
        return NULL;
    for (int hop = 0;; hop++) {
        redisReply *r = redisCommandArgv(*c, argc, argv, argvlen);
        enum slot_redirect kind = SLOT_NONE;
        char host[SLOT_HOST_MAX];
        unsigned slot;
        int port;

        if (r != NULL && r->type == REDIS_REPLY_ERROR && u->nseeds > 0)
            kind = slot_parse_redirect(r->str, r->len, &slot, host, sizeof(host), &port);
        if (kind == SLOT_NONE || hop == MAX_HOPS)
            return r;
        freeReplyObject(r);
        redisFree(*c);
        *c = redis_open_at(u, host, port);
        if (*c == NULL)
            return NULL;
        if (kind == SLOT_ASK) {
            r = redisCommand(*c, "ASKING");
            if (r == NULL)
                return NULL;
            freeReplyObject(r);
        }
    }
}

/* A reply of the wanted type, or NULL after saying why (the caller exits with 3). */
static redisReply *redis_check(redisContext *c, redisReply *r, int type, const char *what)
{
    if (r == NULL) {
        warn("Redis %s failed: %s", what, c->errstr);
        return NULL;
    }
    if (r->type != type) {
        warn("Redis %s failed: %s", what, r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* channel with the glob characters of SCAN MATCH escaped, then ":gw:*". */
static char *heartbeat_pattern(const char *channel)
{
    char *p = malloc(2 * strlen(channel) + sizeof(":gw:*"));
    char *q = p;

    if (p == NULL)
        return NULL;
    for (const char *s = channel; *s != '\0'; s++) {
        if (strchr("*?[]\\", *s) != NULL)
            *q++ = '\\';
        *q++ = *s;
    }
    memcpy(q, ":gw:*", sizeof(":gw:*"));
    return p;
}

static void workers_cleanup(struct worker_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].gateway);
        free(l->v[i].error);
    }
    free(l->v);
    memset(l, 0, sizeof(*l));
}

static struct worker *workers_find(struct worker_list *l, const char *gateway, long long number)
{
    for (size_t i = 0; i < l->n; i++) {
        if (l->v[i].number == number && strcmp(l->v[i].gateway, gateway) == 0)
            return &l->v[i];
    }
    return NULL;
}

/* A new zeroed entry for gateway/number (the list keeps a copy of gateway), or NULL. */
static struct worker *workers_add(struct worker_list *l, const char *gateway, long long number)
{
    struct worker *w;

    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        struct worker *v = realloc(l->v, cap * sizeof(*v));

        if (v == NULL)
            return NULL;
        l->v = v;
        l->cap = cap;
    }
    w = &l->v[l->n];
    memset(w, 0, sizeof(*w));
    w->gateway = strdup(gateway);
    if (w->gateway == NULL)
        return NULL;
    w->number = number;
    l->n++;
    return w;
}

static int worker_cmp(const void *a, const void *b)
{
    const struct worker *x = a, *y = b;
    int r = strcmp(x->gateway, y->gateway);

    if (r != 0)
        return r;
    return x->number < y->number ? -1 : x->number > y->number;
}

static long long json_int_or(json_t *obj, const char *key, long long dflt)
{
    json_t *v = json_object_get(obj, key);

    return json_is_integer(v) ? (long long)json_integer_value(v) : dflt;
}

/*
 * Adds the worker whose heartbeat is text[0..len) unless it belongs to another gateway
 * than only. Returns 0, or -1 when out of memory; a malformed heartbeat is skipped.
 */
static int heartbeat_add(struct worker_list *l, const char *key, const char *text, size_t len,
                         const char *only)
{
    json_t *hb = json_loadb(text, len, 0, NULL);
    json_t *gw = json_object_get(hb, "gateway");
    long long number = json_int_or(hb, "worker", -1);
    struct worker *w;
    int rc = 0;

    if (!json_is_string(gw) || number < 0) {
        warn("skipping malformed heartbeat %s", key);
        goto out;
    }
    if (only != NULL && strcmp(only, json_string_value(gw)) != 0)
        goto out;
    if (workers_find(l, json_string_value(gw), number) != NULL)
        goto out;
    w = workers_add(l, json_string_value(gw), number);
    if (w == NULL) {
        rc = -1;
        goto out;
    }
    w->conns = json_int_or(hb, "conns", 0);
    w->ts = json_int_or(hb, "ts", 0);
    w->draining = json_is_true(json_object_get(hb, "draining"));
    w->redis_up = !json_is_false(json_object_get(hb, "redis"));
    w->expected = true;
out:
    json_decref(hb);
    return rc;
}

/* GETs the heartbeats named in keys (one SCAN batch), pipelined. */
static int heartbeats_get(redisContext *c, const redisReply *keys, struct worker_list *l,
                          const char *only)
{
    int rc = 0;

    for (size_t i = 0; i < keys->elements; i++) {
        const redisReply *k = keys->element[i];

        if (redisAppendCommand(c, "GET %b", k->str, (size_t)k->len) != REDIS_OK) {
            warn("Redis GET failed: %s", c->errstr);
            return -1;
        }
    }
    for (size_t i = 0; i < keys->elements; i++) {
        void *reply;
        redisReply *r;

        if (redisGetReply(c, &reply) != REDIS_OK) {
            warn("Redis GET failed: %s", c->errstr);
            return -1;
        }
        r = reply;
        /* A key that expired between SCAN and GET is a worker that just went away. */
        if (rc == 0 && r->type == REDIS_REPLY_STRING &&
            heartbeat_add(l, keys->element[i]->str, r->str, (size_t)r->len, only) < 0) {
            warn("out of memory");
            rc = -1;
        }
        freeReplyObject(r);
    }
    return rc;
}

/* Live workers, from the keys <channel>:gw:<gateway>:<n>, found with SCAN (not KEYS). */
static int workers_scan(redisContext *c, const char *channel, const char *only,
                        struct worker_list *l)
{
    char *pattern = heartbeat_pattern(channel);
    char cursor[32] = "0";
    int rc = -1;

    if (pattern == NULL) {
        warn("out of memory");
        return -1;
    }
    do {
        redisReply *r = redisCommand(c, "SCAN %s MATCH %s COUNT " SCAN_COUNT, cursor, pattern);

        r = redis_check(c, r, REDIS_REPLY_ARRAY, "SCAN");
        if (r == NULL)
            goto out;
        if (r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
            r->element[1]->type != REDIS_REPLY_ARRAY || r->element[0]->len >= 32) {
            warn("Redis SCAN failed: bad reply");
            freeReplyObject(r);
            goto out;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        if (heartbeats_get(c, r->element[1], l, only) < 0) {
            freeReplyObject(r);
            goto out;
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    if (l->n > 0)
        qsort(l->v, l->n, sizeof(*l->v), worker_cmp);
    rc = 0;
out:
    free(pattern);
    return rc;
}

/* workers_scan() on every master of a cluster (c is any node: it gives CLUSTER NODES),
 * or on c alone. */
static int workers_scan_all(const struct redis_url *u, redisContext *c, const char *channel,
                            const char *only, struct worker_list *l)
{
    struct slot_map *m;
    const char *why = "bad reply";
    redisReply *r;
    int rc = -1;

    if (u->nseeds == 0)
        return workers_scan(c, channel, only, l);
    m = malloc(sizeof(*m));
    if (m == NULL) {
        warn("out of memory");
        return -1;
    }
    r = redis_check(c, redisCommand(c, "CLUSTER NODES"), REDIS_REPLY_STRING, "CLUSTER NODES");
    if (r == NULL)
        goto out;
    if (slot_map_parse_nodes(m, r->str, r->len, &why) < 0) {
        warn("Redis CLUSTER NODES: %s", why);
        goto out;
    }
    for (size_t i = 0; i < m->nnodes; i++) {
        redisContext *mc = redis_open_at(u, m->nodes[i].host, m->nodes[i].port);

        if (mc == NULL)
            goto out;
        rc = workers_scan(mc, channel, only, l);
        redisFree(mc);
        if (rc < 0)
            goto out;
    }
    rc = 0;
out:
    if (r != NULL)
        freeReplyObject(r);
    free(m);
    return rc;
}

/* --- acknowledgements -------------------------------------------------------------------- */

/*
 * One pub/sub message from the reply channel. Acks of other orders are ignored.
 * Returns 0, or -1 when out of memory.
 */
static int ack_take(struct worker_list *l, const char *id, const redisReply *msg, bool json)
{
    const redisReply *payload;
    json_t *ack, *gw, *error;
    struct worker *w;
    long long number;
    int rc = 0;

    if (msg->type != REDIS_REPLY_ARRAY || msg->elements != 3 ||
        msg->element[0]->type != REDIS_REPLY_STRING ||
        (strcmp(msg->element[0]->str, "message") != 0 &&
         strcmp(msg->element[0]->str, "smessage") != 0) ||
        msg->element[2]->type != REDIS_REPLY_STRING)
        return 0;
    payload = msg->element[2];
    ack = json_loadb(payload->str, (size_t)payload->len, 0, NULL);
    if (!json_is_string(json_object_get(ack, "id")) ||
        strcmp(json_string_value(json_object_get(ack, "id")), id) != 0)
        goto out;
    if (json) {
        fwrite(payload->str, 1, (size_t)payload->len, stdout);
        fputc('\n', stdout);
        fflush(stdout);
    }
    gw = json_object_get(ack, "gateway");
    number = json_int_or(ack, "worker", -1);
    w = workers_find(l, json_is_string(gw) ? json_string_value(gw) : "?", number);
    if (w == NULL)
        w = workers_add(l, json_is_string(gw) ? json_string_value(gw) : "?", number);
    if (w == NULL || w->answered) {
        rc = w == NULL ? -1 : 0;
        goto out;
    }
    w->answered = true;
    error = json_object_get(ack, "error");
    if (error != NULL) {
        w->error = strdup(json_is_string(error) ? json_string_value(error) : "(no text)");
        rc = w->error == NULL ? -1 : 0;
    }
    w->matched = json_int_or(ack, "matched", 0);
    w->closed = json_int_or(ack, "closed", json_int_or(ack, "sent", json_int_or(ack, "lifted", 0)));
    w->dropped = json_int_or(ack, "dropped", 0);
out:
    json_decref(ack);
    return rc;
}

/*
 * Done when every worker that had a heartbeat answered. With no heartbeat at all, the
 * PUBLISH count of receivers says how many answers to wait for.
 */
static bool acks_complete(const struct worker_list *l, long long receivers)
{
    size_t expected = 0, answered = 0;

    for (size_t i = 0; i < l->n; i++) {
        if (l->v[i].expected) {
            expected++;
            if (!l->v[i].answered)
                return false;
        }
        answered += l->v[i].answered;
    }
    return expected > 0 || (long long)answered >= receivers;
}

/*
 * Reads acks from sub (already SUBSCRIBEd) until acks_complete() or wait_ms passed.
 * Returns 0, or -1 when the Redis link failed or memory ran out (said why).
 */
static int acks_collect(redisContext *sub, const char *id, struct worker_list *l, long long wait_ms,
                        long long receivers, bool json)
{
    long long deadline = now_ms() + wait_ms;

    while (!acks_complete(l, receivers)) {
        void *reply = NULL;
        struct pollfd pfd = {.fd = sub->fd, .events = POLLIN};
        long long left = deadline - now_ms();
        int n;

        if (redisGetReplyFromReader(sub, &reply) != REDIS_OK) {
            warn("Redis subscription failed: %s", sub->errstr);
            return -1;
        }
        if (reply != NULL) {
            int rc = ack_take(l, id, reply, json);

            freeReplyObject(reply);
            if (rc < 0) {
                warn("out of memory");
                return -1;
            }
            continue;
        }
        if (left <= 0)
            break;
        n = poll(&pfd, 1, (int)left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            warn("poll: %s", strerror(errno));
            return -1;
        }
        if (n > 0 && redisBufferRead(sub) != REDIS_OK) {
            warn("Redis subscription failed: %s", sub->errstr);
            return -1;
        }
    }
    return 0;
}

/* True when no answered worker before l->v[i] belongs to the same gateway. */
static bool gateway_is_new(const struct worker_list *l, size_t i)
{
    for (size_t j = 0; j < i; j++) {
        if (l->v[j].answered && l->v[j].error == NULL &&
            strcmp(l->v[j].gateway, l->v[i].gateway) == 0)
            return false;
    }
    return true;
}

/* Prints what the workers said. Returns the exit status: 0, or 1 on refusals or silence. */
static int acks_report(const struct worker_list *l, const struct order *o, long long receivers,
                       long long wait_ms, bool json, bool direct)
{
    FILE *out = json ? stderr : stdout;
    long long matched = 0, closed = 0, dropped = 0, expected = 0, answered = 0;
    size_t gateways = 0;
    int status = EXIT_DONE;
    time_t now = time(NULL);

    for (size_t i = 0; i < l->n; i++) {
        const struct worker *w = &l->v[i];

        expected += w->expected;
        if (!w->answered)
            continue;
        answered++;
        if (w->error != NULL) {
            fprintf(stderr, "%s worker %lld: error: %s\n", w->gateway, w->number, w->error);
            status = EXIT_FAILED;
            continue;
        }
        matched += w->matched;
        closed += o->dry_run ? w->matched : w->closed; /* a dry run closes nothing */
        dropped += w->dropped;
        gateways += gateway_is_new(l, i);
    }
    if (!acks_complete(l, receivers))
        fprintf(stderr, "timed out after %lld ms\n", wait_ms);
    for (size_t i = 0; i < l->n; i++) {
        const struct worker *w = &l->v[i];

        if (!w->expected || w->answered)
            continue;
        status = EXIT_FAILED;
        if (!w->redis_up)
            fprintf(stderr, "no answer from %s worker %lld (its Redis subscription is down)\n",
                    w->gateway, w->number);
        else if (w->ts > 0 && now - w->ts > HEARTBEAT_STALE_S)
            fprintf(stderr, "no answer from %s worker %lld (last heartbeat %lld s ago)\n",
                    w->gateway, w->number, (long long)now - w->ts);
        else
            fprintf(stderr, "no answer from %s worker %lld\n", w->gateway, w->number);
    }
    if (expected == 0 && answered < receivers) {
        fprintf(stderr, "no answer from %lld of %lld subscriber%s%s\n", receivers - answered,
                receivers, plural(receivers),
                direct ? " of the channel" : " (no heartbeats found)");
        status = EXIT_FAILED;
    }
    if (o->gateway != NULL && expected == 0 && answered == 0) {
        fprintf(stderr, "gateway %s is not live (no heartbeat)\n", o->gateway);
        status = EXIT_FAILED;
    }
    if (o->op == ORDER_OP_UNBAN)
        fprintf(out, "lifted %lld tombstone%s (%lld worker%s answered)\n", closed, plural(closed),
                answered, plural(answered));
    else if (o->op == ORDER_OP_DRAIN)
        fprintf(out, "drain of %s: %lld connection%s, %lld closed (%lld worker%s answered)\n",
                o->gateway, matched, plural(matched), closed, answered, plural(answered));
    else if (o->op == ORDER_OP_SEND)
        fprintf(out,
                "%s %lld of %lld matched connection%s on %zu gateway%s (%lld worker%s "
                "answered), %lld dropped (slow consumer%s)\n",
                o->dry_run ? "would send to" : "sent to", closed, matched, plural(matched),
                gateways, plural((long long)gateways), answered, plural(answered), dropped,
                plural(dropped));
    else
        fprintf(out,
                "%s %lld of %lld matched connection%s on %zu gateway%s (%lld worker%s "
                "answered)\n",
                o->dry_run ? "would close" : "closed", closed, matched, plural(matched), gateways,
                plural((long long)gateways), answered, plural(answered));
    return status;
}

/* PUBLISHes text on channel (in a cluster, SPUBLISH on the master of its slot). Returns
 * the integer reply, or NULL after saying why (*c may then be NULL). */
static redisReply *order_publish(const struct redis_url *u, redisContext **c, const char *channel,
                                 const char *text)
{
    const char *pv[3] = {u->nseeds > 0 ? "SPUBLISH" : "PUBLISH", channel, text};
    size_t pvlen[3] = {strlen(pv[0]), strlen(channel), strlen(text)};
    redisReply *r = redis_routed(u, c, 3, pv, pvlen);

    if (*c == NULL)
        return NULL;
    return redis_check(*c, r, REDIS_REPLY_INTEGER, pv[0]);
}

/* --- orders ------------------------------------------------------------------------------ */

/*
 * Where an order is published, as a malloc'd channel name (NULL: out of memory):
 *   - with a gateway, that gateway's channel CHANNEL:ID (as before group channels);
 *   - an order for exactly one group, the group's channel CHANNEL:group:NAME: only the
 *     workers that hold members are subscribed there, so Redis sends it to those and
 *     no others, and PUBLISH's count of receivers is the number of answers to expect;
 *   - an order for connections that one worker holds (their ids share the prefix
 *     "<gateway>-<worker>-<nonce>"), that worker's channel CHANNEL:worker:PREFIX: the
 *     other workers of the fleet never see it, and PUBLISH counts the one receiver;
 *   - anything else, CHANNEL, which every worker receives: tombstones (close --ttl)
 *     and unban orders too, since every worker holds tombstones, members or not. An
 *     order for several groups goes there as one order rather than one per group
 *     channel: a connection in two of the groups is matched once, as a close or send
 *     to it must be.
 * *group is set to the group of a group channel, else NULL; *direct says whether the
 * channel reaches only the workers concerned (a group's or a worker's channel), so
 * that PUBLISH's count of receivers is the number of answers to expect.
 */
static char *order_channel(const struct options *opt, const struct order *o, const char **group,
                           bool *direct)
{
    char *channel = NULL;
    size_t plen = 0;
    int n;

    *group = NULL;
    *direct = false;
    if (o->gateway == NULL && o->op != ORDER_OP_DRAIN && o->target == ORDER_TARGET_CONN &&
        o->nnames > 0) {
        const char *dash = strrchr(o->names[0], '-');
        plen = dash != NULL ? (size_t)(dash - o->names[0]) : 0;
        for (size_t i = 1; i < o->nnames && plen > 0; i++)
            if (strncmp(o->names[i], o->names[0], plen + 1) != 0 ||
                strchr(o->names[i] + plen + 1, '-') != NULL)
                plen = 0;
    }
    if (o->gateway != NULL) {
        n = asprintf(&channel, "%s:%s", opt->channel, o->gateway);
    } else if (o->op != ORDER_OP_DRAIN && o->op != ORDER_OP_UNBAN && o->ttl_ms == 0 &&
               o->target == ORDER_TARGET_GROUP && o->nnames == 1) {
        *group = o->names[0];
        *direct = true;
        n = asprintf(&channel, "%s:group:%s", opt->channel, o->names[0]);
    } else if (plen > 0) {
        *direct = true;
        n = asprintf(&channel, "%s:worker:%.*s", opt->channel, (int)plen, o->names[0]);
    } else {
        n = asprintf(&channel, "%s", opt->channel);
    }
    return n < 0 ? NULL : channel;
}

/*
 * Checks o (built from the command line, strings borrowed) exactly as a gateway would,
 * on the channel it goes to, publishes it, and with --wait collects the answers.
 * Returns the exit status.
 */
static int order_send(const struct options *opt, const struct order *o, size_t max_send)
{
    struct order_limits lim = {max_send, NULL};
    struct worker_list workers = {0};
    struct order_error oerr;
    struct order checked;
    struct redis_url url;
    redisContext *c = NULL, *sub = NULL;
    redisReply *r;
    char *text, *target = NULL, uerr[256];
    const char *group;
    bool direct;
    long long receivers;
    int status = EXIT_REDIS;

    order_init(&checked);
    target = order_channel(opt, o, &group, &direct);
    text = order_to_json(o);
    if (text == NULL || target == NULL) {
        free(target);
        free(text);
        warn("out of memory");
        return EXIT_FAILED;
    }
    lim.group = group;
    if (order_parse_with(text, strlen(text), &lim, &checked, &oerr) < 0) {
        free(target);
        free(text);
        warn("order refused (%s): %s", oerr.key, oerr.text);
        return EXIT_USAGE;
    }
    if (o->reason_cut)
        warn("reason cut to %zu bytes (a close frame holds 123)", checked.reason_len);
    if (opt->keys.n > 0) {
        /* The checked text is the body, signed exactly as it is sent. */
        char *sealed = order_sig_seal(&opt->keys.keys[0], text, strlen(text));

        if (sealed == NULL) {
            warn("out of memory");
            status = EXIT_FAILED;
            goto out_free_order;
        }
        free(text);
        text = sealed;
    }
    if (redis_url_parse(opt->redis, &url, uerr, sizeof(uerr)) < 0) {
        status = usage_error(opt->usage, "%s", uerr);
        goto out_free_order;
    }
    c = redis_open(&url);
    if (c == NULL)
        goto out_free_url;
    if (opt->wait_ms > 0) {
        /* Subscribed before the order goes out, so no ack can be missed. */
        sub = redis_open(&url);
        if (sub == NULL)
            goto out_free_redis;
        /* In a cluster the workers SPUBLISH their acks: SSUBSCRIBE on its master. */
        const char *sv[2] = {url.nseeds > 0 ? "SSUBSCRIBE" : "SUBSCRIBE", o->reply_to};
        size_t svlen[2] = {strlen(sv[0]), strlen(o->reply_to)};

        r = redis_routed(&url, &sub, 2, sv, svlen);
        if (sub == NULL)
            goto out_free_redis;
        r = redis_check(sub, r, REDIS_REPLY_ARRAY, sv[0]);
        if (r == NULL)
            goto out_free_redis;
        freeReplyObject(r);
        /* On a group channel the receivers are the workers holding members, which no
         * heartbeat says, on a worker's channel that worker: PUBLISH's count is what to
         * wait for. */
        if (!direct && workers_scan_all(&url, c, opt->channel, o->gateway, &workers) < 0)
            goto out_free_redis;
    }
    if (opt->stream != NULL) {
        /* First the stream: once it holds the order, a gateway away right now still
         * reads it when it is back. One field, "order". In a cluster, on the master of
         * the stream's slot. */
        const char *xv[7] = {"XADD", opt->stream, "MAXLEN", "~", STREAM_MAXLEN, "*", "order"};
        const char *av[8];
        size_t avlen[8];

        for (int i = 0; i < 7; i++) {
            av[i] = xv[i];
            avlen[i] = strlen(xv[i]);
        }
        av[7] = text;
        avlen[7] = strlen(text);
        r = redis_routed(&url, &c, 8, av, avlen);
        if (c == NULL)
            goto out_free_redis;
        r = redis_check(c, r, REDIS_REPLY_STRING, "XADD");
        if (r == NULL)
            goto out_free_redis;
        freeReplyObject(r);
    }
    r = order_publish(&url, &c, target, text);
    if (r == NULL)
        goto out_free_redis;
    receivers = r->integer;
    freeReplyObject(r);
    if (receivers == 0 && direct && group == NULL) {
        /* Nobody on the worker's channel: the worker is gone, or its Redis user may not
         * subscribe there (an ACL from before the channel). The fleet's channel reaches
         * it in either case, and the acks to wait for are the live workers'. */
        direct = false;
        free(target);
        target = strdup(opt->channel);
        if (target == NULL) {
            warn("out of memory");
            status = EXIT_FAILED;
            goto out_free_redis;
        }
        if (opt->wait_ms > 0 && workers_scan_all(&url, c, opt->channel, o->gateway, &workers) < 0)
            goto out_free_redis;
        r = order_publish(&url, &c, target, text);
        if (r == NULL)
            goto out_free_redis;
        receivers = r->integer;
        freeReplyObject(r);
    }

    if (opt->json && opt->wait_ms < 0)
        printf("%s\n", text);
    else if (!opt->json)
        printf("%s\n", o->id);
    fflush(stdout);
    if (receivers == 0 && group != NULL)
        warn("no worker holds a member of group %s (nobody is subscribed to %s)", group, target);
    else if (receivers == 0)
        warn("nobody is subscribed to %s: no gateway got the order", target);
    status = EXIT_DONE;
    if (opt->wait_ms > 0) {
        if (acks_collect(sub, o->id, &workers, opt->wait_ms, receivers, opt->json) < 0)
            status = EXIT_REDIS;
        else
            status = acks_report(&workers, &checked, receivers, opt->wait_ms, opt->json, direct);
    }
out_free_redis:
    if (sub != NULL)
        redisFree(sub);
    if (c != NULL)
        redisFree(c);
out_free_url:
    redis_url_cleanup(&url);
out_free_order:
    free(target);
    workers_cleanup(&workers);
    order_cleanup(&checked);
    free(text);
    return status;
}

/* Fills the fields close and drain share: id, reason, spread, reply_to. */
static int order_common(const struct options *opt, struct order *o, char *id, size_t idsize,
                        char **reply_to)
{
    struct order_error oerr;

    *reply_to = NULL;
    if (new_order_id(id, idsize) < 0) {
        warn("cannot read random bytes for the order id: %s", strerror(errno));
        return EXIT_FAILED;
    }
    o->id = id;
    /* A tombstone lasts from the order's ts, the same moment on every gateway. */
    if (opt->keys.n > 0 || opt->ttl_ms > 0 || opt->stream != NULL || o->op == ORDER_OP_UNBAN)
        o->ts = unix_ms();
    o->gateway = (char *)opt->gateway;
    o->spread_ms = (uint32_t)opt->spread_ms;
    if (opt->reason != NULL && order_set_reason(o, opt->reason, strlen(opt->reason), &oerr) < 0) {
        warn("order refused (%s): %s", oerr.key, oerr.text);
        return EXIT_USAGE;
    }
    if (o->op == ORDER_OP_CLOSE || o->op == ORDER_OP_SEND || o->op == ORDER_OP_UNBAN ||
        opt->wait_ms > 0) {
        if (asprintf(reply_to, "%s:ack:%s", opt->channel, id) < 0) {
            *reply_to = NULL;
            warn("out of memory");
            return EXIT_FAILED;
        }
        o->reply_to = *reply_to;
    }
    return 0;
}

/* --conn, --group or --all, and --except: the targets of a close or send order (the
 * names are borrowed from opt). */
static void order_set_targets(const struct options *opt, struct order *o)
{
    if (opt->all) {
        o->target = ORDER_TARGET_ALL;
    } else if (opt->nconns > 0) {
        o->target = ORDER_TARGET_CONN;
        o->names = opt->conns;
        o->nnames = opt->nconns;
    } else {
        o->target = ORDER_TARGET_GROUP;
        o->names = opt->groups;
        o->nnames = opt->ngroups;
    }
    o->except = opt->nexcepts > 0 ? opt->excepts : NULL;
    o->nexcept = opt->nexcepts;
}

static int cmd_close(const struct options *opt)
{
    char id[64], *reply_to = NULL;
    struct order o;
    int forms = (opt->nconns > 0) + (opt->ngroups > 0) + opt->all;
    int status;

    if (forms != 1)
        return usage_error(opt->usage, "close: give exactly one of --conn, --group, --all");
    order_init(&o);
    o.op = ORDER_OP_CLOSE;
    order_set_targets(opt, &o);
    if (opt->code >= 0)
        o.code = (unsigned)opt->code;
    o.dry_run = opt->dry_run;
    o.max_affected = opt->max_affected;
    o.ttl_ms = (uint32_t)opt->ttl_ms;
    if (o.ttl_ms > 0 && opt->ngroups == 0)
        return usage_error(opt->usage, "close: --ttl needs --group (a user is user:ID)");
    status = order_common(opt, &o, id, sizeof(id), &reply_to);
    if (status == 0)
        status = order_send(opt, &o, ORDER_SEND_MAX_DEFAULT);
    free(reply_to);
    return status; /* o borrows everything: nothing else to free */
}

/* --max-send of the gateways, as far as this side knows: WSGATE_MAX_SEND, or the
 * default. Returns 0, or the exit status of a bad value. */
static int max_send_of_env(size_t *max)
{
    const char *v = getenv("WSGATE_MAX_SEND");
    uint64_t n;

    *max = ORDER_SEND_MAX_DEFAULT;
    if (v == NULL || v[0] == '\0')
        return 0;
    if (config_parse_size(v, &n) < 0 || n < 1 || n > SIZE_MAX / 8)
        return usage_error(usage_send, "WSGATE_MAX_SEND: not a size: %s", v);
    *max = (size_t)n;
    return 0;
}

/* Reads all of f, at most max bytes, into *buf (malloc'd, NULL when empty). Returns 0,
 * or the exit status after saying why. */
static int read_payload(FILE *f, const char *name, size_t max, uint8_t **buf, size_t *len)
{
    size_t cap = 0, n = 0, got;
    uint8_t *p = NULL;

    do {
        if (n == cap) {
            size_t ncap = cap > 0 ? cap * 2 : 64 * 1024;
            uint8_t *np;

            if (cap > max) { /* max + 1 bytes read: too many */
                free(p);
                warn("%s: more than %zu bytes (the gateways' --max-send; set WSGATE_MAX_SEND "
                     "when theirs is larger)",
                     name, max);
                return EXIT_USAGE;
            }
            np = realloc(p, ncap < max + 1 ? ncap : max + 1);
            if (np == NULL) {
                free(p);
                warn("out of memory");
                return EXIT_FAILED;
            }
            p = np;
            cap = ncap < max + 1 ? ncap : max + 1;
        }
        got = fread(p + n, 1, cap - n, f);
        n += got;
    } while (got > 0);
    if (ferror(f)) {
        warn("%s: %s", name, strerror(errno));
        free(p);
        return EXIT_USAGE;
    }
    *buf = p;
    *len = n;
    return 0;
}

/* The message of a send, from --text, --binary-file or --stdin, checked against max
 * (and UTF-8 for text): *payload is malloc'd, or NULL. Returns 0 or the exit status. */
static int send_payload(const struct options *opt, size_t max, uint8_t **payload, size_t *len,
                        bool *binary)
{
    FILE *f = stdin;
    const char *name = "standard input";
    int status;

    *payload = NULL;
    *len = 0;
    *binary = opt->binary_file != NULL;
    if (opt->text != NULL) {
        *len = strlen(opt->text);
        *payload = malloc(*len + 1);
        if (*payload == NULL) {
            warn("out of memory");
            return EXIT_FAILED;
        }
        memcpy(*payload, opt->text, *len + 1);
    } else {
        if (opt->binary_file != NULL && strcmp(opt->binary_file, "-") != 0) {
            name = opt->binary_file;
            f = fopen(name, "rb");
            if (f == NULL) {
                warn("%s: %s", name, strerror(errno));
                return EXIT_USAGE;
            }
        }
        status = read_payload(f, name, max, payload, len);
        if (f != stdin)
            fclose(f);
        if (status != 0)
            return status;
    }
    if (*len > max) {
        warn("%s: %zu bytes, more than %zu (the gateways' --max-send; set WSGATE_MAX_SEND when "
             "theirs is larger)",
             opt->text != NULL ? "--text" : name, *len, max);
        goto err_free;
    }
    if (!*binary && *len > 0 && !utf8_is_valid(*payload, *len)) {
        warn("%s: not valid UTF-8 (send bytes with --binary-file)",
             opt->text != NULL ? "--text" : name);
        goto err_free;
    }
    return 0;
err_free:
    free(*payload);
    *payload = NULL;
    return EXIT_USAGE;
}

static int cmd_send(const struct options *opt)
{
    char id[64], *reply_to = NULL;
    struct order o;
    int forms = (opt->nconns > 0) + (opt->ngroups > 0) + opt->all;
    int sources = (opt->text != NULL) + (opt->binary_file != NULL) + opt->from_stdin;
    uint8_t *payload = NULL;
    size_t max, len;
    bool binary;
    int status;

    if (forms != 1)
        return usage_error(opt->usage, "send: give exactly one of --conn, --group, --all");
    if (sources != 1)
        return usage_error(opt->usage, "send: give exactly one of --text, --binary-file, --stdin");
    status = max_send_of_env(&max);
    if (status == 0)
        status = send_payload(opt, max, &payload, &len, &binary);
    if (status != 0)
        return status;
    order_init(&o);
    o.op = ORDER_OP_SEND;
    order_set_targets(opt, &o);
    o.payload = payload;
    o.payload_len = len;
    o.binary = binary;
    o.dry_run = opt->dry_run;
    o.max_affected = opt->max_affected;
    status = order_common(opt, &o, id, sizeof(id), &reply_to);
    if (status == 0)
        status = order_send(opt, &o, max);
    free(reply_to);
    free(payload);
    return status;
}

static int cmd_drain(const struct options *opt)
{
    char id[64], *reply_to = NULL;
    struct order o;
    int status;

    if (opt->gateway == NULL)
        return usage_error(opt->usage, "drain: --gateway is required");
    order_init(&o);
    o.op = ORDER_OP_DRAIN;
    o.code = 1001;
    status = order_common(opt, &o, id, sizeof(id), &reply_to);
    if (status == 0)
        status = order_send(opt, &o, ORDER_SEND_MAX_DEFAULT);
    free(reply_to);
    return status;
}

static int cmd_unban(const struct options *opt)
{
    char id[64], *reply_to = NULL;
    struct order o;
    int status;

    if (opt->ngroups == 0)
        return usage_error(opt->usage, "unban: --group is required (a user is user:ID)");
    order_init(&o);
    o.op = ORDER_OP_UNBAN;
    o.target = ORDER_TARGET_GROUP;
    o.names = opt->groups;
    o.nnames = opt->ngroups;
    status = order_common(opt, &o, id, sizeof(id), &reply_to);
    if (status == 0)
        status = order_send(opt, &o, ORDER_SEND_MAX_DEFAULT);
    free(reply_to);
    return status;
}

/* --- tombstones -------------------------------------------------------------------------- */

/* One line (or JSON object) per tombstone still in force in CHANNEL:tombs. */
static int cmd_tombstones(const struct options *opt)
{
    struct redis_url url;
    char uerr[256], *key;
    redisContext *c;
    redisReply *r;
    long long now = unix_ms();
    size_t shown = 0;
    int status = EXIT_REDIS;

    if (redis_url_parse(opt->redis, &url, uerr, sizeof(uerr)) < 0)
        return usage_error(opt->usage, "%s", uerr);
    c = redis_open(&url);
    if (c == NULL)
        goto out_free_url;
    if (asprintf(&key, "%s:tombs", opt->channel) < 0) {
        warn("out of memory");
        status = EXIT_FAILED;
        goto out_free_redis;
    }
    {
        const char *hv[2] = {"HGETALL", key};
        size_t hvlen[2] = {7, strlen(key)};

        r = redis_routed(&url, &c, 2, hv, hvlen); /* in a cluster, the hash's master */
    }
    free(key);
    if (c == NULL)
        goto out_free_url;
    r = redis_check(c, r, REDIS_REPLY_ARRAY, "HGETALL");
    if (r == NULL)
        goto out_free_redis;
    status = EXIT_DONE;
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *f = r->element[i], *v = r->element[i + 1];
        struct tomb tb;
        const char *why;

        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
            tomb_parse(f->str, f->len, v->str, v->len, &tb, &why) < 0) {
            warn("skipped a field of %s:tombs that does not parse", opt->channel);
            continue;
        }
        if (tb.until_ms > now) {
            shown++;
            if (opt->json) {
                json_t *obj =
                    json_pack("{s:s, s:I, s:I, s:i, s:s, s:s?}", "group", tb.name, "until",
                              (json_int_t)tb.until_ms, "left_ms", (json_int_t)(tb.until_ms - now),
                              "code", (int)tb.code, "reason", tb.reason, "id", tb.id);
                char *s = obj != NULL ? json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
                json_decref(obj);
                if (s != NULL)
                    printf("%s\n", s);
                free(s);
            } else {
                printf("group=%s  left=%llds  code=%u  reason=\"%s\"  id=%s\n", tb.name,
                       (long long)(tb.until_ms - now + 999) / 1000, tb.code, tb.reason,
                       tb.id != NULL ? tb.id : "-");
            }
        }
        tomb_cleanup(&tb);
    }
    if (shown == 0 && !opt->json)
        printf("no tombstones in force\n");
    freeReplyObject(r);
out_free_redis:
    redisFree(c);
out_free_url:
    redis_url_cleanup(&url);
    return status;
}

/* --- gateways ---------------------------------------------------------------------------- */

static int gateway_print(const struct worker *w, size_t n, bool json)
{
    long long conns = 0;
    size_t draining = 0, down = 0;

    for (size_t i = 0; i < n; i++) {
        conns += w[i].conns;
        draining += w[i].draining;
        down += !w[i].redis_up;
    }
    if (json) {
        json_t *obj =
            json_pack("{s:s, s:I, s:I, s:b, s:b}", "gateway", w->gateway, "workers", (json_int_t)n,
                      "conns", (json_int_t)conns, "draining", draining > 0, "redis", down == 0);
        char *s = obj != NULL ? json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;

        json_decref(obj);
        if (s == NULL) {
            warn("out of memory");
            return -1;
        }
        printf("%s\n", s);
        free(s);
        return 0;
    }
    printf("%s  workers=%zu  conns=%lld  draining=%s", w->gateway, n, conns,
           draining == 0   ? "no"
           : draining == n ? "yes"
                           : "partly");
    if (down > 0)
        printf("  redis=down(%zu)", down);
    printf("\n");
    return 0;
}

static int cmd_gateways(const struct options *opt)
{
    struct worker_list workers = {0};
    struct redis_url url;
    char uerr[256];
    redisContext *c;
    int status = EXIT_REDIS;

    if (redis_url_parse(opt->redis, &url, uerr, sizeof(uerr)) < 0)
        return usage_error(opt->usage, "%s", uerr);
    c = redis_open(&url);
    if (c == NULL)
        goto out_free_url;
    if (workers_scan_all(&url, c, opt->channel, NULL, &workers) < 0)
        goto out_free_redis;
    status = EXIT_DONE;
    for (size_t i = 0, j; i < workers.n; i = j) {
        j = i + 1; /* workers are sorted by gateway: print one line per run */
        while (j < workers.n && strcmp(workers.v[i].gateway, workers.v[j].gateway) == 0)
            j++;
        if (gateway_print(&workers.v[i], j - i, opt->json) < 0) {
            status = EXIT_FAILED;
            break;
        }
    }
    if (workers.n == 0)
        warn("no live gateways on %s", opt->channel);
out_free_redis:
    redisFree(c);
out_free_url:
    workers_cleanup(&workers);
    redis_url_cleanup(&url);
    return status;
}

/* --- main -------------------------------------------------------------------------------- */

/* --name VALUE or --name=VALUE at argv[*i]; advances *i past what it used. */
static bool global_option(int argc, char **argv, int *i, const char *name, const char **value)
{
    size_t len = strlen(name);

    if (strncmp(argv[*i], name, len) != 0)
        return false;
    if (argv[*i][len] == '=') {
        *value = argv[*i] + len + 1;
        return true;
    }
    if (argv[*i][len] != '\0' || *i + 1 >= argc)
        return false;
    *value = argv[++*i];
    return true;
}

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);

    return v != NULL && v[0] != '\0' ? v : dflt;
}

int main(int argc, char **argv)
{
    struct options opt = {
        .code = -1,
        .max_affected = -1,
        .wait_ms = -1,
    };
    int i = 1, status;

    opt.redis = env_or("WSGATE_REDIS", DEFAULT_REDIS);
    opt.channel = env_or("WSGATE_CHANNEL", DEFAULT_CHANNEL);
    opt.order_key = env_or("WSGATE_ORDER_KEY", NULL);
    opt.stream = env_or("WSGATE_ORDERS_STREAM", NULL);
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage_main, stdout);
            return EXIT_DONE;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("wsgatectl %s (git %s)\n", WSGATE_VERSION, WSGATE_GIT_REV);
            return EXIT_DONE;
        }
        if (!global_option(argc, argv, &i, "--redis", &opt.redis) &&
            !global_option(argc, argv, &i, "--channel", &opt.channel) &&
            !global_option(argc, argv, &i, "--order-key", &opt.order_key) &&
            !global_option(argc, argv, &i, "--orders-stream", &opt.stream))
            return usage_error(usage_main, "unknown option %s", argv[i]);
    }
    if (i >= argc)
        return usage_error(usage_main, "a command is required");
    if (strcmp(argv[i], "close") == 0) {
        opt.cmd = CMD_CLOSE;
        opt.usage = usage_close;
    } else if (strcmp(argv[i], "send") == 0) {
        opt.cmd = CMD_SEND;
        opt.usage = usage_send;
    } else if (strcmp(argv[i], "drain") == 0) {
        opt.cmd = CMD_DRAIN;
        opt.usage = usage_drain;
    } else if (strcmp(argv[i], "gateways") == 0) {
        opt.cmd = CMD_GATEWAYS;
        opt.usage = usage_gateways;
    } else if (strcmp(argv[i], "unban") == 0) {
        opt.cmd = CMD_UNBAN;
        opt.usage = usage_unban;
    } else if (strcmp(argv[i], "tombstones") == 0) {
        opt.cmd = CMD_TOMBSTONES;
        opt.usage = usage_tombstones;
    } else if (strcmp(argv[i], "help") == 0) {
        fputs(usage_main, stdout);
        return EXIT_DONE;
    } else {
        return usage_error(usage_main, "unknown command %s", argv[i]);
    }
    status = parse_options(argc - i, argv + i, &opt);
    if (status == 0)
        status = check_channel(opt.channel);
    if (status == 0)
        status = check_order_key(&opt);
    if (status == 0) {
        if (opt.cmd == CMD_CLOSE)
            status = cmd_close(&opt);
        else if (opt.cmd == CMD_SEND)
            status = cmd_send(&opt);
        else if (opt.cmd == CMD_DRAIN)
            status = cmd_drain(&opt);
        else if (opt.cmd == CMD_UNBAN)
            status = cmd_unban(&opt);
        else if (opt.cmd == CMD_TOMBSTONES)
            status = cmd_tombstones(&opt);
        else
            status = cmd_gateways(&opt);
    }
    options_cleanup(&opt);
    order_sig_ring_clear(&opt.keys);
    return status < 0 ? EXIT_DONE : status;
}
