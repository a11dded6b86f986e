/*
 * wsredis: the Redis end of the pub/sub benchmarks (tests/bench/bench.py), in C so that
 * it is never the bottleneck it measures.
 *
 *   wsredis pub --port P --ids-file F --rate R --seconds S [--size B] [--channel CH]
 *       A steady stream of send orders, R per second for S seconds, order k to the
 *       connection on line k mod N of F (wsload --ids-file: "i<TAB>id" lines), pipelined:
 *       every millisecond, the orders due by then go out in one write, as redis-benchmark
 *       paces. Order k's text is a stamp, "<T> <k> ", padded with 'x' to B bytes (128),
 *       where T is CLOCK_MONOTONIC in ns (19 digits) right before the write that carries
 *       it and k has 10 digits; wsload --stamped times each arrival against T.
 *   wsredis sub --port P --expect M [--conns N --per-conn K] [--channel CH]
 *       SUBSCRIBEs to CH (wsgate:in), writes --ready-file once Redis confirmed, then counts
 *       the messages: each must be a JSON envelope whose "text" begins with the stamp of
 *       wsload --send-rate, "<T> <i> <m> " (connection i's message m). Latency = arrival
 *       (CLOCK_MONOTONIC) - T. Ends when M messages came (and --settle-ms passed), when
 *       none came for --idle-ms after the first, or at --timeout-ms.
 *
 * Both print one JSON object on stdout; exit status 0 when the run completed (the JSON
 * says what happened), 1 on a usage or setup error. Loopback only.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WR_NS_PER_MS 1000000ull
#define WR_READ_MAX  (1u << 20)
#define WR_MSG_MAX   (16u << 20) /* largest Redis reply accepted */
#define WR_ID_MAX    256u
#define WR_STAMP_T   19u         /* digits of T */
#define WR_STAMP_N   10u         /* digits of k, i and m */
#define WR_SIZE_MAX  (1u << 20)

struct wr_opts {
    const char *mode;
    const char *host;
    unsigned long port;
    const char *channel;
    bool worker_channels; /* pub --worker-channels 1 */
    const char *ids_file;
    const char *ready_file;
    unsigned long rate;
    unsigned long seconds;
    unsigned long size;
    unsigned long expect;
    unsigned long conns;
    unsigned long per_conn;
    unsigned long idle_ms;
    unsigned long settle_ms;
    unsigned long timeout_ms;
};

static struct wr_opts wr_opt;

static const char wr_usage[] =
    "usage: wsredis pub --port P --ids-file F --rate R --seconds S [--size B]\n"
    "                   [--channel wsgate:orders] [--worker-channels 1] [--host 127.0.0.1]\n"
    "       wsredis sub --port P --expect M [--conns N --per-conn K] [--ready-file F]\n"
    "                   [--channel wsgate:in] [--idle-ms 3000] [--settle-ms 300]\n"
    "                   [--timeout-ms 120000] [--host 127.0.0.1]\n"
    "\n"
    "  pub: R send orders per second for S seconds, order k to the connection on line\n"
    "       k mod N of F (\"i<TAB>id\"), text \"<T> <k> \" padded to B bytes (128), T the\n"
    "       CLOCK_MONOTONIC ns right before the write; pipelined, one write per millisecond\n"
    "  sub: counts envelopes on the channel whose text begins \"<T> <i> <m> \" (wsload\n"
    "       --send-rate), checks each connection's m run 0, 1, 2... once each, times T to\n"
    "       arrival\n";

static uint64_t wr_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int wr_num(const char *name, const char *s, unsigned long min, unsigned long max,
                  unsigned long *out)
{
    char *e;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &e, 10);
    if (errno != 0 || e == s || *e != '\0' || s[0] == '-' || v < min || v > max) {
        fprintf(stderr, "wsredis: %s: a number from %lu to %lu\n", name, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

/* A growable byte buffer. */
struct wr_buf {
    char *b;
    size_t len;
    size_t off; /* bytes already consumed (written or parsed) */
    size_t cap;
};

static int wr_reserve(struct wr_buf *b, size_t more)
{
    if (b->off > 0 && (b->off == b->len || b->len + more > b->cap)) {
        memmove(b->b, b->b + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->len + more > b->cap) {
        size_t cap = b->cap == 0 ? 65536 : b->cap;
        char *nb;

        while (cap < b->len + more)
            cap *= 2;
        nb = realloc(b->b, cap);
        if (nb == NULL)
            return -1;
        b->b = nb;
        b->cap = cap;
    }
    return 0;
}

static int wr_connect(void)
{
    struct sockaddr_in sa;
    int fd, one = 1;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)wr_opt.port);
    if (inet_pton(AF_INET, wr_opt.host, &sa.sin_addr) != 1 ||
        (ntohl(sa.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "wsredis: --host must be an IPv4 loopback address\n");
        return -1;
    }
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        fprintf(stderr, "wsredis: connect to Redis %s:%lu: %s\n", wr_opt.host, wr_opt.port,
                strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int wr_write_file(const char *path, const char *data)
{
    char tmp[4096];
    FILE *f;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return -1;
    f = fopen(tmp, "w");
    if (f == NULL)
        return -1;
    if (fputs(data, f) < 0 || fclose(f) != 0)
        return -1;
    return rename(tmp, path);
}

static int wr_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Nearest rank over sorted v, in ms. */
static double wr_pct_ms(const uint64_t *v, size_t n, unsigned p)
{
    size_t rank = (p * n + 99) / 100;

    return n == 0 ? 0 : (double)v[rank == 0 ? 0 : rank - 1] / 1e6;
}

/* This process's CPU time so far (user + system), in seconds: the caller checks that the
 * tool had room to spare. */
static double wr_cpu_s(void)
{
    struct rusage ru;

    if (getrusage(RUSAGE_SELF, &ru) < 0)
        return -1;
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* Publisher ------------------------------------------------------------------------ */

struct wr_ids {
    char **id;
    size_t n;
};

/* Reads "i<TAB>id" lines; the indexes must be 0..N-1, each once. */
static int wr_read_ids(const char *path, struct wr_ids *ids)
{
    FILE *f = fopen(path, "r");
    char line[WR_ID_MAX + 32];
    size_t cap = 0;

    if (f == NULL) {
        fprintf(stderr, "wsredis: %s: %s\n", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        char *tab = strchr(line, '\t'), *e;
        size_t len;
        unsigned long i;

        if (tab == NULL)
            goto bad;
        *tab++ = '\0';
        len = strcspn(tab, "\r\n");
        tab[len] = '\0';
        errno = 0;
        i = strtoul(line, &e, 10);
        if (errno != 0 || *e != '\0' || len == 0 || strpbrk(tab, "\"\\") != NULL)
            goto bad;
        if (i >= cap) {
            size_t ncap = cap == 0 ? 1024 : cap;
            char **nid;

            while (ncap <= i)
                ncap *= 2;
            nid = realloc(ids->id, ncap * sizeof(*nid));
            if (nid == NULL)
                goto bad;
            memset(nid + cap, 0, (ncap - cap) * sizeof(*nid));
            ids->id = nid;
            cap = ncap;
        }
        if (ids->id[i] != NULL)
            goto bad;
        ids->id[i] = strdup(tab);
        if (ids->id[i] == NULL)
            goto bad;
        if (i + 1 > ids->n)
            ids->n = i + 1;
    }
    fclose(f);
    for (size_t i = 0; i < ids->n; i++) {
        if (ids->id[i] == NULL) {
            fprintf(stderr, "wsredis: %s: no id for connection %zu\n", path, i);
            return -1;
        }
    }
    if (ids->n == 0) {
        fprintf(stderr, "wsredis: %s: no ids\n", path);
        return -1;
    }
    return 0;
bad:
    fclose(f);
    fprintf(stderr, "wsredis: %s: malformed (want \"i<TAB>id\" lines, each i once)\n", path);
    return -1;
}

/* Appends PUBLISH channel {"op":"send","conn":"<id>","text":"<T> <k> xxx..."}. */
static int wr_put_order(struct wr_buf *out, const char *id, uint64_t t, uint64_t k)
{
    char head[512], stamp[64];
    char chan[512];
    size_t idlen = strlen(id), plen, chlen;
    int sl = snprintf(stamp, sizeof(stamp), "%0*" PRIu64 " %0*" PRIu64 " ", (int)WR_STAMP_T, t,
                      (int)WR_STAMP_N, k);
    int hl;
    const char *dash = strrchr(id, '-');

    /* --worker-channels: the channel of the connection's worker, CHANNEL:worker:<the id
     * without its last -N>, as wsgatectl publishes */
    if (wr_opt.worker_channels && dash != NULL)
        snprintf(chan, sizeof(chan), "%s:worker:%.*s", wr_opt.channel, (int)(dash - id), id);
    else
        snprintf(chan, sizeof(chan), "%s", wr_opt.channel);
    chlen = strlen(chan);
    /* {"op":"send","conn":"" + id + ","text":"" + text + "} */
    plen = 21 + idlen + 10 + wr_opt.size + 2;
    hl = snprintf(head, sizeof(head), "*3\r\n$7\r\nPUBLISH\r\n$%zu\r\n%s\r\n$%zu\r\n", chlen,
                  chan, plen);
    if (hl < 0 || (size_t)hl >= sizeof(head) || wr_reserve(out, (size_t)hl + plen + 2) < 0)
        return -1;
    memcpy(out->b + out->len, head, (size_t)hl);
    out->len += (size_t)hl;
    memcpy(out->b + out->len, "{\"op\":\"send\",\"conn\":\"", 21);
    out->len += 21;
    memcpy(out->b + out->len, id, idlen);
    out->len += idlen;
    memcpy(out->b + out->len, "\",\"text\":\"", 10);
    out->len += 10;
    memcpy(out->b + out->len, stamp, (size_t)sl);
    memset(out->b + out->len + (size_t)sl, 'x', wr_opt.size - (size_t)sl);
    out->len += wr_opt.size;
    memcpy(out->b + out->len, "\"}\r\n", 4);
    out->len += 4;
    return 0;
}

/* Counts whole reply lines (":n" or "-ERR ...") in in; keeps a partial one. */
static void wr_replies(struct wr_buf *in, uint64_t *replies, uint64_t *receivers, uint64_t *errs)
{
    for (;;) {
        char *p = in->b + in->off, *nl = memchr(p, '\n', in->len - in->off);

        if (nl == NULL)
            break;
        if (*p == ':')
            *receivers += strtoull(p + 1, NULL, 10);
        else
            (*errs)++;
        (*replies)++;
        in->off = (size_t)(nl + 1 - in->b);
    }
}

static int wr_pub(void)
{
    struct wr_ids ids = {NULL, 0};
    struct wr_buf out = {0}, in = {0};
    uint64_t total = (uint64_t)wr_opt.rate * wr_opt.seconds, k = 0, replies = 0, receivers = 0;
    uint64_t errs = 0, t_start, t_first = 0, t_last = 0, max_lag = 0, batches = 0, blocked = 0;
    uint64_t deadline;
    int fd;

    if (wr_opt.size < WR_STAMP_T + WR_STAMP_N + 2) {
        fprintf(stderr, "wsredis: --size is at least %u (the stamp)\n",
                WR_STAMP_T + WR_STAMP_N + 2);
        return 1;
    }
    if (wr_read_ids(wr_opt.ids_file, &ids) < 0 || (fd = wr_connect()) < 0)
        return 1;
    t_start = wr_now();
    deadline = t_start + (wr_opt.seconds + 60) * 1000 * WR_NS_PER_MS;
    while (replies < total) {
        struct pollfd pf = {fd, POLLIN, 0};
        uint64_t now = wr_now(), next;
        struct timespec to;
        ssize_t n;

        if (now > deadline) {
            fprintf(stderr, "wsredis: pub: %" PRIu64 " replies of %" PRIu64 " after %lu s\n",
                    replies, total, wr_opt.seconds + 60);
            break;
        }
        /* every order due by now, stamped now, then one write */
        if (k < total && t_start + k * 1000000000ull / wr_opt.rate <= now) {
            uint64_t lag = now - (t_start + k * 1000000000ull / wr_opt.rate);

            if (lag > max_lag)
                max_lag = lag;
            while (k < total && t_start + k * 1000000000ull / wr_opt.rate <= now) {
                if (wr_put_order(&out, ids.id[k % ids.n], now, k) < 0) {
                    fprintf(stderr, "wsredis: out of memory\n");
                    return 1;
                }
                k++;
            }
            if (t_first == 0)
                t_first = now;
            t_last = now;
            batches++;
        }
        while (out.off < out.len) {
            n = send(fd, out.b + out.off, out.len - out.off, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && errno == EAGAIN) {
                blocked++;
                break;
            }
            if (n <= 0) {
                fprintf(stderr, "wsredis: pub: write: %s\n", strerror(errno));
                return 1;
            }
            out.off += (size_t)n;
        }
        if (out.off == out.len)
            out.off = out.len = 0;
        /* wait for a reply, for the socket to take more, or for the next order's time */
        if (out.off < out.len)
            pf.events |= POLLOUT;
        next = k < total ? t_start + k * 1000000000ull / wr_opt.rate : now + 100 * WR_NS_PER_MS;
        if (next < now + WR_NS_PER_MS && k < total)
            next = now + WR_NS_PER_MS; /* at most one batch a millisecond */
        to.tv_sec = (time_t)((next - now) / 1000000000ull);
        to.tv_nsec = (long)((next - now) % 1000000000ull);
        if (ppoll(&pf, 1, &to, NULL) < 0 && errno != EINTR) {
            fprintf(stderr, "wsredis: poll: %s\n", strerror(errno));
            return 1;
        }
        if (pf.revents & (POLLIN | POLLHUP | POLLERR)) {
            if (wr_reserve(&in, WR_READ_MAX) < 0)
                return 1;
            n = recv(fd, in.b + in.len, in.cap - in.len, 0);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                fprintf(stderr, "wsredis: pub: Redis closed the connection\n");
                return 1;
            }
            if (n > 0) {
                in.len += (size_t)n;
                wr_replies(&in, &replies, &receivers, &errs);
            }
        }
    }
    {
        double secs = t_last > t_first ? (double)(t_last - t_first) / 1e9 : 0;

        /* orders k = 0..total-1 went out at t_first..t_last: the achieved rate is over the
         * total - 1 intervals between them */
        printf("{\"published\":%" PRIu64 ",\"target_rate\":%lu,\"seconds\":%.3f,\"rate\":%.1f,"
               "\"replies\":%" PRIu64 ",\"receivers\":%" PRIu64 ",\"errors\":%" PRIu64
               ",\"max_lag_ms\":%.3f,\"batches\":%" PRIu64 ",\"write_blocked\":%" PRIu64
               ",\"t_first\":%" PRIu64 ",\"t_last\":%" PRIu64 ",\"connections\":%zu,\"size\":%lu"
               ",\"cpu_s\":%.3f,\"wall_s\":%.3f}\n",
               k, wr_opt.rate, secs, secs > 0 ? (double)(k - 1) / secs : 0, replies, receivers,
               errs, (double)max_lag / 1e6, batches, blocked, t_first, t_last, ids.n, wr_opt.size,
               wr_cpu_s(), (double)(wr_now() - t_start) / 1e9);
    }
    close(fd);
    return fflush(stdout) == 0 ? 0 : 1;
}

/* Subscriber ----------------------------------------------------------------------- */

struct wr_sub {
    uint64_t received, bad, dups, gaps, late_first;
    uint64_t t_first, t_last;
    uint64_t *lat;
    size_t nlat, cap;
    uint32_t *next; /* per connection: the m expected next */
};

/* Parses digits [p, p+n) into *v; returns false unless all are digits. */
static bool wr_digits(const char *p, size_t n, uint64_t *v)
{
    uint64_t x = 0;
    size_t i;

    for (i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        x = x * 10 + (uint64_t)(p[i] - '0');
    }
    *v = x;
    return true;
}

/* One envelope: find "text":" and its stamp "<T> <i> <m> ". */
static void wr_on_envelope(struct wr_sub *s, const char *p, size_t len, uint64_t now)
{
    static const char key[] = "\"text\":\"";
    const char *t = memmem(p, len, key, sizeof(key) - 1);
    size_t left;
    uint64_t ts, i, m;

    s->received++;
    if (s->t_first == 0)
        s->t_first = now;
    s->t_last = now;
    if (t == NULL) {
        s->bad++;
        return;
    }
    t += sizeof(key) - 1;
    left = len - (size_t)(t - p);
    if (left < WR_STAMP_T + 2 * WR_STAMP_N + 3 || !wr_digits(t, WR_STAMP_T, &ts) ||
        t[WR_STAMP_T] != ' ' || !wr_digits(t + WR_STAMP_T + 1, WR_STAMP_N, &i) ||
        t[WR_STAMP_T + 1 + WR_STAMP_N] != ' ' ||
        !wr_digits(t + WR_STAMP_T + 2 + WR_STAMP_N, WR_STAMP_N, &m) || i >= wr_opt.conns) {
        s->bad++;
        return;
    }
    if (s->nlat == s->cap) {
        size_t cap = s->cap == 0 ? 65536 : s->cap * 2;
        uint64_t *nl = realloc(s->lat, cap * sizeof(*nl));

        if (nl == NULL) {
            fprintf(stderr, "wsredis: out of memory\n");
            exit(1);
        }
        s->lat = nl;
        s->cap = cap;
    }
    s->lat[s->nlat++] = now > ts ? now - ts : 0;
    if (m == s->next[i]) {
        s->next[i]++;
    } else if (m < s->next[i]) {
        s->dups++;
    } else {
        s->gaps++;
        s->next[i] = (uint32_t)m + 1;
    }
}

/*
 * Parses one "*3 $7 message $n channel $n payload" push from in; returns 1 when one was
 * handled, 0 when more bytes are needed, -1 on anything else.
 */
static int wr_parse_push(struct wr_buf *in, struct wr_sub *s, uint64_t now)
{
    const char *p = in->b + in->off, *end = in->b + in->len;
    const char *bulk[3];
    size_t blen[3];
    int j;

    if (end - p < 4)
        return 0;
    if (memcmp(p, "*3\r\n", 4) != 0)
        return -1;
    p += 4;
    for (j = 0; j < 3; j++) {
        const char *nl;
        char *e;
        unsigned long long n;

        if (p >= end)
            return 0;
        if (*p == ':' && j == 2) { /* the subscribe confirmation: ":<count>" */
            nl = memchr(p, '\n', (size_t)(end - p));
            if (nl == NULL)
                return 0;
            in->off = (size_t)(nl + 1 - in->b);
            return 2;
        }
        if (*p != '$')
            return -1;
        nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL)
            return 0;
        n = strtoull(p + 1, &e, 10);
        if (n > WR_MSG_MAX)
            return -1;
        p = nl + 1;
        if ((size_t)(end - p) < n + 2)
            return 0;
        bulk[j] = p;
        blen[j] = (size_t)n;
        p += n + 2;
    }
    in->off = (size_t)(p - in->b);
    if (blen[0] == 7 && memcmp(bulk[0], "message", 7) == 0) {
        wr_on_envelope(s, bulk[2], blen[2], now);
        return 1;
    }
    return -1;
}

static int wr_subscribe(void)
{
    static struct wr_sub s;
    struct wr_buf in = {0};
    char cmd[512];
    uint64_t t_start = wr_now(), since = 0, complete = 0;
    bool confirmed = false, timed_out = false;
    size_t i;
    int fd, cl;

    s.next = calloc(wr_opt.conns > 0 ? wr_opt.conns : 1, sizeof(*s.next));
    if (s.next == NULL || (fd = wr_connect()) < 0)
        return 1;
    cl = snprintf(cmd, sizeof(cmd), "*2\r\n$9\r\nSUBSCRIBE\r\n$%zu\r\n%s\r\n",
                  strlen(wr_opt.channel), wr_opt.channel);
    if (cl < 0 || (size_t)cl >= sizeof(cmd) || send(fd, cmd, (size_t)cl, MSG_NOSIGNAL) != cl) {
        fprintf(stderr, "wsredis: sub: SUBSCRIBE failed\n");
        return 1;
    }
    for (;;) {
        struct pollfd pf = {fd, POLLIN, 0};
        uint64_t now = wr_now();
        ssize_t n;
        int rc;

        if (now - t_start > wr_opt.timeout_ms * WR_NS_PER_MS) {
            timed_out = true;
            break;
        }
        if (s.received >= wr_opt.expect && wr_opt.expect > 0) {
            if (since == 0)
                since = now;
            if (now - since >= wr_opt.settle_ms * WR_NS_PER_MS)
                break;
        }
        if (s.t_last != 0 && now - s.t_last > wr_opt.idle_ms * WR_NS_PER_MS)
            break;
        if (poll(&pf, 1, 20) < 0 && errno != EINTR) {
            fprintf(stderr, "wsredis: poll: %s\n", strerror(errno));
            return 1;
        }
        if (!(pf.revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        if (wr_reserve(&in, WR_READ_MAX) < 0) {
            fprintf(stderr, "wsredis: out of memory\n");
            return 1;
        }
        n = recv(fd, in.b + in.len, in.cap - in.len, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            fprintf(stderr, "wsredis: sub: Redis closed the connection\n");
            return 1;
        }
        if (n < 0)
            continue;
        in.len += (size_t)n;
        now = wr_now();
        while ((rc = wr_parse_push(&in, &s, now)) > 0) {
            if (rc == 2 && !confirmed) {
                confirmed = true;
                if (wr_opt.ready_file != NULL && wr_write_file(wr_opt.ready_file, "ready\n") < 0) {
                    fprintf(stderr, "wsredis: --ready-file: %s\n", strerror(errno));
                    return 1;
                }
            }
        }
        if (rc < 0) {
            fprintf(stderr, "wsredis: sub: unexpected reply from Redis\n");
            return 1;
        }
    }
    for (i = 0; i < wr_opt.conns; i++)
        complete += s.next[i] == wr_opt.per_conn;
    qsort(s.lat, s.nlat, sizeof(*s.lat), wr_cmp_u64);
    {
        double secs = s.t_last > s.t_first ? (double)(s.t_last - s.t_first) / 1e9 : 0;

        printf("{\"expected\":%lu,\"received\":%" PRIu64 ",\"stamped\":%zu,\"bad\":%" PRIu64
               ",\"duplicates\":%" PRIu64 ",\"gaps\":%" PRIu64 ",\"conns_complete\":%" PRIu64
               ",\"conns\":%lu,\"per_conn\":%lu,\"seconds\":%.3f,\"rate\":%.1f"
               ",\"lat_p50\":%.3f,\"lat_p99\":%.3f,\"lat_max\":%.3f,\"t_first\":%" PRIu64
               ",\"t_last\":%" PRIu64 ",\"timed_out\":%s,\"cpu_s\":%.3f,\"wall_s\":%.3f}\n",
               wr_opt.expect, s.received, s.nlat, s.bad, s.dups, s.gaps, complete, wr_opt.conns,
               wr_opt.per_conn, secs, secs > 0 ? (double)(s.received - 1) / secs : 0,
               wr_pct_ms(s.lat, s.nlat, 50), wr_pct_ms(s.lat, s.nlat, 99),
               wr_pct_ms(s.lat, s.nlat, 100), s.t_first, s.t_last,
               timed_out ? "true" : "false", wr_cpu_s(), (double)(wr_now() - t_start) / 1e9);
    }
    close(fd);
    return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    int i;
    bool pub;

    signal(SIGPIPE, SIG_IGN);
    if (argc < 2 || (strcmp(argv[1], "pub") != 0 && strcmp(argv[1], "sub") != 0)) {
        fputs(wr_usage, stderr);
        return 1;
    }
    pub = strcmp(argv[1], "pub") == 0;
    wr_opt.host = "127.0.0.1";
    wr_opt.channel = pub ? "wsgate:orders" : "wsgate:in";
    wr_opt.size = 128;
    wr_opt.idle_ms = 3000;
    wr_opt.settle_ms = 300;
    wr_opt.timeout_ms = 120000;
    for (i = 2; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;

        if (v == NULL) {
            fprintf(stderr, "wsredis: %s needs a value\n", f);
            return 1;
        }
        i++;
        if (strcmp(f, "--host") == 0)
            wr_opt.host = v;
        else if (strcmp(f, "--port") == 0)
            rc = wr_num(f, v, 1, 65535, &wr_opt.port);
        else if (strcmp(f, "--channel") == 0 && v[0] != '\0' && strlen(v) < 256 &&
                 strpbrk(v, "\r\n") == NULL)
            wr_opt.channel = v;
        else if (pub && strcmp(f, "--worker-channels") == 0)
            wr_opt.worker_channels = strcmp(v, "1") == 0;
        else if (pub && strcmp(f, "--ids-file") == 0)
            wr_opt.ids_file = v;
        else if (pub && strcmp(f, "--rate") == 0)
            rc = wr_num(f, v, 1, 10000000, &wr_opt.rate);
        else if (pub && strcmp(f, "--seconds") == 0)
            rc = wr_num(f, v, 1, 3600, &wr_opt.seconds);
        else if (pub && strcmp(f, "--size") == 0)
            rc = wr_num(f, v, 1, WR_SIZE_MAX, &wr_opt.size);
        else if (!pub && strcmp(f, "--expect") == 0)
            rc = wr_num(f, v, 0, 4000000000ul, &wr_opt.expect);
        else if (!pub && strcmp(f, "--conns") == 0)
            rc = wr_num(f, v, 0, 4000000, &wr_opt.conns);
        else if (!pub && strcmp(f, "--per-conn") == 0)
            rc = wr_num(f, v, 0, 100000000, &wr_opt.per_conn);
        else if (!pub && strcmp(f, "--ready-file") == 0)
            wr_opt.ready_file = v;
        else if (!pub && strcmp(f, "--idle-ms") == 0)
            rc = wr_num(f, v, 1, 3600000, &wr_opt.idle_ms);
        else if (!pub && strcmp(f, "--settle-ms") == 0)
            rc = wr_num(f, v, 0, 3600000, &wr_opt.settle_ms);
        else if (!pub && strcmp(f, "--timeout-ms") == 0)
            rc = wr_num(f, v, 1, 86400000, &wr_opt.timeout_ms);
        else
            rc = -1;
        if (rc < 0) {
            fprintf(stderr, "wsredis: bad option %s %s\n", f, v);
            fputs(wr_usage, stderr);
            return 1;
        }
    }
    if (wr_opt.port == 0 || (pub && (wr_opt.ids_file == NULL || wr_opt.rate == 0 ||
                                     wr_opt.seconds == 0))) {
        fputs(wr_usage, stderr);
        return 1;
    }
    return pub ? wr_pub() : wr_subscribe();
}
