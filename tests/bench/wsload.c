/*
 * wsload: a strict WebSocket load generator for wsgate benchmarks.
 *
 * One run goes through its phases in order: ramp (open N connections), ready file and
 * hold, echo, send (--send-rate: stamped messages at a steady rate, for inbound), action
 * (PUBLISH an order to Redis, or send a signal), watch: close frames and, with
 * --expect-messages, pushed data messages (--stamped: each timed against the time stamp
 * it carries), and --stop-file.
 * One JSON object goes to stdout at the end; progress and errors go to stderr.
 *
 * Processes: the parent forks K children (one is enough below ~18 000 connections:
 * the hard RLIMIT_NOFILE is 20 000 per process), each owning a contiguous block of
 * global connection indexes and its own event_base. The parent runs no event loop:
 * it polls the children's report pipes, starts each phase with a one-byte command
 * and takes t0 itself. Children record CLOCK_MONOTONIC absolute times, which are
 * system-wide, and the parent subtracts t0 from them.
 *
 * Per connection: one small struct in an array and one event (read, plus write only
 * while output is pending). Buffers exist only while a response head, a control
 * payload or unsent output is partial. One periodic timer per process does the
 * timeouts; there are no per-connection timers.
 *
 * With --tls every connection runs a full TLS handshake (no resumption, the server's
 * certificate is not checked) before its upgrade request, and its bytes go through
 * SSL_read/SSL_write on the same events.
 *
 * Strictness: the 101 answer must carry Upgrade: websocket, a Connection header with
 * the upgrade token, exactly one correct Sec-WebSocket-Accept and no extension or
 * subprotocol we did not ask for (RFC 6455 §4.1). Server frames must be unmasked,
 * without RSV bits, with known opcodes, minimal lengths and sane fragmentation (§5);
 * a violation counts in "protocol_errors" and we close that connection with 1002.
 *
 * With --deflate the request offers permessage-deflate (RFC 7692) and the answer may
 * accept it: then RSV1 is allowed on a data message's first frame, and a compressed
 * pushed message is inflated (zlib) so that --expect-size checks its inflated size.
 * An inflater exists per connection while a compressed message is partial, or for the
 * whole connection when the server keeps its context (no server_no_context_takeover).
 * The report says how many messages came compressed and the payload bytes on the wire.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <zlib.h>

#include "common/ws_close.h"
#include "common/ws_dec.h"
#include "common/ws_enc.h"
#include "common/ws_hs.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define WL_NS_PER_MS      1000000ull
#define WL_TICK_MS        50
#define WL_HS_TIMEOUT_MS  10000u      /* one handshake; the whole ramp has --ramp-timeout */
#define WL_HEAD_MAX       4096u       /* largest 101 answer head accepted */
#define WL_READ_MAX       65536u      /* one read per event into the per-process buffer */
#define WL_OUT_MAX        (32u << 20) /* unsent bytes per connection before we give up */
#define WL_SIZE_MAX       (16u << 20) /* largest --size */
#define WL_PATH_MAX       2048u
#define WL_PER_PROC_AUTO  18000u /* connections per child when --procs is not given */
#define WL_FD_SPARE       100u   /* descriptors a child needs besides its sockets */
#define WL_REASONS_MAX    32u    /* distinct failure texts kept; the rest is "other" */
#define WL_REASON_LEN     80u
#define WL_REPORT_WAIT_MS 15000u /* how long the parent waits for a child's report */
#define WL_LOG_MAX        5u     /* protocol errors logged per child */
#define WL_DONE_LINGER_MS 1000u  /* connections kept after --done-file is written */
#define WL_SEND_TICK_US   1000     /* the send phase's pacing timer */
#define WL_SEND_BURST     4096u    /* messages per tick at most: a late child still reads */
#define WL_STAMP_T        19u      /* digits of a stamp's CLOCK_MONOTONIC ns */
#define WL_STAMP_N        10u      /* digits of its numbers */
#define WL_STAMP_ORDER    (WL_STAMP_T + 1 + WL_STAMP_N + 1)     /* "<T> <k> " */
#define WL_STAMP_SEND     (WL_STAMP_T + 2 * (WL_STAMP_N + 1) + 1) /* "<T> <i> <m> " */
#define WL_SEND_SIZE_MAX  65536u

/* Commands, parent to child (one byte each). */
#define WL_CMD_ECHO  'e' /* start the echo phase */
#define WL_CMD_STOP  's' /* echo deadline passed: report now */
#define WL_CMD_WATCH 'w' /* send close progress from now on */
#define WL_CMD_END   'r' /* send the close report and exit */
#define WL_CMD_SEND  'm' /* start the send phase */
#define WL_CMD_SENT  'x' /* the send phase's time is up: stop and report */

/* Reports, child to parent: a 4-byte type, a 4-byte length, then u64 fields. */
#define WL_REP_RAMP     'R'
#define WL_REP_ECHO     'E'
#define WL_REP_PROGRESS 'P'
#define WL_REP_CLOSE    'C'
#define WL_REP_SEND     'S'

struct wl_opts {
    const char *host;
    struct sockaddr_in dst;
    unsigned port;
    const char *path;
    unsigned long n;
    unsigned long inflight;
    unsigned long sources;
    unsigned long procs; /* 0: pick ceil(n / WL_PER_PROC_AUTO) */
    unsigned long ramp_timeout_ms;
    const char *ready_file;
    const char *ids_file;
    const char *done_file;
    unsigned long hold_ms;
    unsigned long echo_m; /* 0: no echo phase */
    unsigned long echo_size;
    unsigned long echo_timeout_ms;
    const char *publish;
    const char *redis_host;
    struct sockaddr_in redis;
    unsigned redis_port;
    const char *channel;
    pid_t sig_pid; /* 0: no --signal */
    int sig_num;
    unsigned long expect_closed;
    bool expect_closed_given;
    unsigned expect_code;
    bool expect_code_given;
    const char *expect_reason; /* NULL: any reason */
    size_t expect_reason_len;
    unsigned long close_timeout_ms;
    unsigned long settle_ms;
    unsigned long expect_msgs; /* --expect-messages: data messages, all connections */
    bool expect_msgs_given;
    unsigned long expect_size; /* --expect-size: bytes of each data message */
    bool expect_size_given;
    bool reply_close;
    bool samples;
    bool tls;
    bool deflate; /* --deflate: offer permessage-deflate */
    bool stamped;              /* --stamped: pushed messages carry "<T> <k> " */
    unsigned long send_rate;   /* --send-rate: messages per second per connection, 0: none */
    unsigned long send_secs;   /* --send-seconds */
    unsigned long send_size;   /* --send-size */
    const char *stop_file;     /* --stop-file */
};

enum wl_state {
    WL_NEW,        /* not started */
    WL_CONNECTING, /* connect() in progress */
    WL_TLS,        /* --tls: the TLS handshake */
    WL_HANDSHAKE,  /* request sent, waiting for the 101 */
    WL_OPEN,
    WL_CLOSING, /* close frame received (and answered): waiting for the server's FIN */
    WL_ENDED,   /* the socket is closed, after a successful handshake */
    WL_FAILED,  /* the handshake failed */
};

#define WL_F_FRAME    0x0001 /* a close frame arrived: t_frame is set */
#define WL_F_TCP      0x0002 /* the server closed TCP (EOF or error): t_tcp is set */
#define WL_F_BADCLOSE 0x0004 /* the close payload was under 2 bytes, a bad code or not UTF-8 */
#define WL_F_WCODE    0x0008 /* close code other than --expect-code */
#define WL_F_WREASON  0x0010 /* close reason other than --expect-reason */
#define WL_F_MSG      0x0020 /* a fragmented data message is open */
#define WL_F_ECHO     0x0040 /* taking part in the echo phase, not finished */
#define WL_F_PAYLOAD  0x0080 /* the frame decoder is inside a payload */
#define WL_F_WRITE    0x0100 /* the event also waits for EV_WRITE */
#define WL_F_PROTO    0x0200 /* we closed it: the server broke the protocol */
#define WL_F_TEXT     0x0400 /* the current data message is text */
#define WL_F_WSIZE    0x0800 /* a data message of another size than --expect-size */
#define WL_F_ZNEG     0x1000 /* permessage-deflate was negotiated */
#define WL_F_ZMSG     0x2000 /* the current data message is compressed */
#define WL_F_ZKEEP    0x4000 /* the server keeps its context: the inflater stays */
#define WL_F_STAMP    0x1000 /* --stamped: the current message's stamp was read */

/* One per connection, in the child's array; lives until the child exits. */
struct wl_conn {
    struct event *ev;   /* owned while fd is open */
    SSL *ssl;           /* owned while fd is open, with --tls */
    uint8_t *in;        /* owned, lazily: a partial response head or control payload */
    uint8_t *out;       /* owned, lazily: bytes not written yet */
    char *id;           /* owned: the X-Wsgate-Conn value, or NULL */
    z_stream *z;        /* owned, lazily: the inflater (--deflate) */
    uint64_t t_start;   /* ns, CLOCK_MONOTONIC: connect() called */
    uint64_t lat;       /* ns from t_start to the parsed 101 */
    uint64_t t_frame;   /* close frame arrival */
    uint64_t t_tcp;     /* the server closed TCP */
    uint64_t t_msg;     /* first data message outside the echo phase, complete */
    uint64_t remaining; /* payload bytes left in the current frame */
    uint32_t idx;       /* global index */
    uint32_t out_len; /* end of the bytes in out */
    uint32_t out_off; /* bytes of out already written */
    uint32_t out_cap; /* bytes allocated at out */
    uint32_t msg_pos; /* bytes of the current echo message checked */
    uint32_t echoed;  /* echo messages verified */
    uint32_t msgs;    /* data messages received outside the echo phase */
    int fd;
    uint16_t in_len;
    uint16_t flags;   /* WL_F_* */
    uint16_t code;    /* close code received, 0 when invalid */
    uint8_t ctl_len;  /* payload length of the current control frame */
    uint8_t hdr_have; /* frame header bytes gathered in hdr */
    uint8_t hdr[10];
    uint8_t key[16]; /* Sec-WebSocket-Key, raw */
    uint8_t state;   /* enum wl_state */
};

struct wl_reason {
    char text[WL_REASON_LEN];
    uint64_t count;
};

/* A child's whole state (a global: one per process). */
struct wl_proc {
    struct event_base *base;
    struct event *tick;
    struct event *cmd_ev;
    int cmd_fd;            /* commands from the parent */
    int rep_fd;            /* reports to the parent, blocking */
    struct wl_conn *conns; /* owned, count entries */
    uint32_t count;
    uint32_t next; /* next connection to start */
    uint32_t scan; /* no handshake in progress below this one */
    uint32_t inflight;
    uint32_t inflight_max;
    bool filling; /* inside wl_ramp_fill(): no nested starts */
    bool ramp_done;
    uint64_t ramp_deadline;
    uint64_t t_ramp_end; /* last handshake finished */
    uint64_t ok;
    uint64_t failed;
    struct wl_reason reasons[WL_REASONS_MAX];
    size_t nreasons;
    struct wl_reason proto[WL_REASONS_MAX]; /* protocol errors by why */
    size_t nproto;
    uint64_t nproto_total;
    bool echo_on;
    uint32_t echo_pending; /* connections still echoing */
    uint64_t echo_conns;
    uint64_t echo_ok;       /* messages verified */
    uint64_t echo_mismatch; /* connections stopped by a wrong echo */
    uint64_t echo_lost;     /* connections closed or timed out while echoing */
    uint64_t echo_t_start;
    uint64_t echo_t_end;
    bool watch;
    uint64_t frames;      /* close frames received */
    uint64_t settled;     /* of those, connections whose socket is closed */
    uint64_t open;        /* connections open with no close frame yet */
    uint64_t sent_frames; /* last progress reported */
    uint64_t sent_settled;
    uint64_t sent_open;
    uint64_t msgs; /* data messages outside the echo phase */
    uint64_t msg_text;
    uint64_t msg_zipped; /* of those, sent compressed */
    uint64_t wire;       /* their payload bytes as sent */
    uint8_t *zbuf;       /* owned, WL_READ_MAX: inflated bytes, counted then dropped */
    uint64_t sent_msgs;
    const uint8_t *ctl_ptr; /* control payload inside the read buffer, during one feed */
    uint8_t *rbuf;          /* owned, WL_READ_MAX */
    uint8_t *sbuf;          /* owned, one echo frame */
    SSL_CTX *tls;           /* with --tls */
    uint64_t feed_now;      /* arrival time of the bytes being fed */
    /* --stamped */
    uint64_t *stamp_lat; /* owned: latency of each stamped message, ns */
    size_t stamp_n;
    size_t stamp_cap;
    uint64_t stamp_bad; /* no readable stamp */
    uint64_t stamp_seq; /* k not this connection's next (misrouted, repeated, missing) */
    uint64_t t_stamp_first;
    uint64_t t_stamp_last;
    /* the send phase */
    struct event *send_ev;
    uint8_t *mbuf; /* owned, one send frame */
    uint64_t send_t0;
    uint64_t send_total;
    uint64_t send_next; /* next message number s: connection s % count, its message s / count */
    uint64_t send_ok;
    uint64_t send_skipped; /* its connection was not open */
    uint64_t send_lag_max; /* ns behind schedule, worst tick */
    uint64_t t_send_first;
    uint64_t t_send_last;
};

/* A growable report message. */
struct wl_msg {
    uint8_t *b;
    size_t len;
    size_t cap;
    bool oom;
};

/* Reading a report back. */
struct wl_rd {
    const uint8_t *p;
    size_t left;
    bool bad;
};

struct wl_samples {
    uint64_t *v;
    size_t n;
    size_t cap;
};

/* The parent's view of one child. */
struct wl_child {
    pid_t pid;
    int rfd;      /* reports from the child */
    int wfd;      /* commands to the child */
    uint8_t *buf; /* owned: report bytes not parsed yet */
    size_t len;
    size_t cap;
    bool eof;
    bool got_ramp;
    bool got_echo;
    bool got_close;
    bool got_send;
    bool got_progress;
    uint64_t frames;
    uint64_t settled;
    uint64_t open;
    uint64_t msgs;
    char *ids; /* owned: "i\tid\n" lines, or NULL */
    size_t ids_len;
};

/* What the parent adds up. */
struct wl_run {
    struct wl_child *kids; /* owned, nkids */
    unsigned nkids;
    uint64_t t_start;
    uint64_t ramp_ok;
    uint64_t ramp_failed;
    uint64_t ramp_t_end;
    uint64_t conn_ids;
    struct wl_samples lat;
    struct wl_reason reasons[WL_REASONS_MAX];
    size_t nreasons;
    uint64_t echo_ok;
    uint64_t echo_conns;
    uint64_t echo_mismatch;
    uint64_t echo_lost;
    uint64_t echo_t_start;
    uint64_t echo_t_end;
    struct wl_samples frames;
    struct wl_samples tcp;
    uint64_t wrong_code;
    uint64_t wrong_reason;
    uint64_t bad_close;
    uint64_t no_frame_tcp;
    uint64_t frame_open;
    uint64_t still_open;
    uint64_t codes[5000]; /* close code -> connections; valid codes are below 5000 */
    struct wl_reason proto[WL_REASONS_MAX];
    size_t nproto;
    uint64_t nproto_total;
    struct wl_samples msg_first; /* first pushed message per connection */
    uint64_t msgs;
    uint64_t msg_text;
    uint64_t msg_dup_conns; /* connections that got more than one */
    uint64_t msg_wrong_size;
    uint64_t msg_zipped;
    uint64_t wire;
    uint64_t conn_msgs_min; /* data messages per connection that opened */
    uint64_t conn_msgs_max;
    bool conn_msgs_any;
    struct wl_samples stamp_lat; /* --stamped: ns, one per message */
    uint64_t stamp_bad;
    uint64_t stamp_seq;
    uint64_t t_stamp_first;
    uint64_t t_stamp_last;
    uint64_t send_ok; /* the send phase */
    uint64_t send_skipped;
    uint64_t send_lag_max;
    uint64_t send_unsent;
    uint64_t send_lost;
    uint64_t t_send_first;
    uint64_t t_send_last;
};

static struct wl_opts wl_opt;
static struct wl_proc wl_p;
static uint64_t wl_rng = 0x9e3779b97f4a7c15ull;

static const char wl_usage[] =
    "usage: wsload --host 127.0.0.1 --port P [--path '/?group=g{i%100}'] -n N [--inflight 500]\n"
    "              [--sources 20] [--procs K] [--ramp-timeout MS]\n"
    "              [--ready-file F] [--ids-file F] [--hold-ms MS] [--done-file F]\n"
    "              [--echo M --size B] [--echo-timeout MS]\n"
    "              [--publish JSON [--redis-host H] [--redis-port P] [--channel CH]]\n"
    "              | [--signal PID:SIG]\n"
    "              [--expect-closed C] [--expect-code X] [--expect-reason TEXT]\n"
    "              [--expect-messages M] [--expect-size B]\n"
    "              [--close-timeout MS] [--settle-ms MS] [--reply-close | --no-reply-close]\n"
    "              [--samples] [--tls] [--stamped]\n"
    "              [--send-rate R --send-seconds S [--send-size B]] [--stop-file F]\n"
    "\n"
    "  --host, --port      gateway address; only 127.0.0.0/8 is accepted\n"
    "  --path              request target (default /); {i} and {i%M} become the global\n"
    "                      connection index i (0..N-1) and i mod M\n"
    "  -n N                connections to open (ramp phase)\n"
    "  --inflight          handshakes in flight at once, all processes together (500)\n"
    "  --sources S         source addresses 127.0.0.1..127.0.0.S, i mod S (20, at most 254)\n"
    "  --procs K           processes (default ceil(N/18000): 20 000 open files per process)\n"
    "  --ramp-timeout MS   bound of the ramp (120000); one handshake may take 10000\n"
    "  --ready-file F      after the ramp, write the ramp JSON to F (via F.tmp + rename)\n"
    "  --ids-file F        after the ramp, write \"i<TAB>X-Wsgate-Conn\" lines to F\n"
    "  --hold-ms MS        keep the connections open this long after the ramp (0)\n"
    "  --done-file F       when the watch (or, without one, the echo) ends, write F (via\n"
    "                      F.tmp + rename) and keep the connections 1 s more, so a caller\n"
    "                      can read the server meanwhile\n"
    "  --echo M --size B   each connection sends M masked binary messages of B bytes (128),\n"
    "                      one at a time, and checks every echoed byte\n"
    "  --echo-timeout MS   bound of the echo phase (60000)\n"
    "  --publish JSON      PUBLISH JSON on --channel (wsgate:orders) of the Redis at\n"
    "                      --redis-host (127.0.0.1) --redis-port (6379); t0 right before it\n"
    "  --signal PID:SIG    t0, then kill(PID, SIG); SIG is a number or a name (TERM, USR1)\n"
    "  --expect-closed C   wait for C close frames (default: every connection the ramp opened)\n"
    "  --expect-code X     count close frames with another code as wrong_code\n"
    "  --expect-reason T   count close frames with another reason as wrong_reason\n"
    "  --expect-messages M wait for M pushed data messages (all connections together) and\n"
    "                      time each connection's first one from t0; without --expect-closed\n"
    "                      no close frame is awaited\n"
    "  --expect-size B     count pushed messages of another size than B as wrong_size\n"
    "  --close-timeout MS  bound of the watch, from t0 (10000)\n"
    "  --settle-ms MS      once C frames came and their sockets closed (and M messages),\n"
    "                      keep watching this long for extra frames and messages (200)\n"
    "  --reply-close       answer a close frame with a masked close echoing its code (default)\n"
    "  --no-reply-close    do not answer: the server's close timeout must end the socket\n"
    "  --samples           add every close frame's and TCP close's latency (ms, sorted)\n"
    "                      to the JSON as close.frame_samples and close.tcp_samples\n"
    "  --tls               connect with TLS (wss://): a full handshake per connection, the\n"
    "                      certificate not checked; the handshake counts in the latency\n"
    "  --deflate           offer permessage-deflate; compressed pushed messages are inflated\n"
    "                      (--expect-size is their inflated size)\n"
    "  --stamped           each pushed message begins \"<T> <k> \" (wsredis pub): T the\n"
    "                      sender's CLOCK_MONOTONIC ns (19 digits), k its number (10): time\n"
    "                      every message from T; k must be i + N * (messages connection i got\n"
    "                      before), else it counts as out_of_sequence\n"
    "  --send-rate R       after the hold (and echo), every connection sends R text messages\n"
    "  --send-seconds S    a second for S seconds, masked, staggered evenly over time and\n"
    "  --send-size B       connections, each B bytes (128) beginning \"<T> <i> <m> \" (T as\n"
    "                      above, i the connection, m its message) padded with 'x'\n"
    "  --stop-file F       before closing the connections, wait until F exists (at most\n"
    "                      --close-timeout)\n"
    "The watch runs after --publish or --signal, or when an --expect-* flag is given.\n"
    "Exit status: 0 when the run completed (the JSON tells how the server behaved), 1 on a\n"
    "usage or setup error.\n";

/* Helpers -------------------------------------------------------------------------- */

static uint64_t wl_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* xorshift64: keys and masks need to be unpredictable enough for a test client only. */
static uint64_t wl_rand(void)
{
    uint64_t x = wl_rng;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    wl_rng = x;
    return x;
}

static void wl_seed(void)
{
    uint64_t s = 0;

    if (getrandom(&s, sizeof(s), 0) != (ssize_t)sizeof(s))
        s = wl_now() ^ ((uint64_t)getpid() << 32);
    wl_rng ^= s;
    if (wl_rng == 0)
        wl_rng = 0x2545f4914f6cdd1dull;
}

static void wl_base64_16(const uint8_t in[16], char out[25])
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i, o = 0;
    uint32_t v;

    for (i = 0; i < 15; i += 3) {
        v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        out[o++] = tab[v >> 6 & 63];
        out[o++] = tab[v & 63];
    }
    v = (uint32_t)in[15] << 16;
    out[o++] = tab[v >> 18 & 63];
    out[o++] = tab[v >> 12 & 63];
    out[o++] = '=';
    out[o++] = '=';
    out[o] = '\0';
}

/*
 * The Sec-WebSocket-Accept we expect for key (RFC 6455 §4.2.2), computed with
 * OpenSSL rather than common/'s SHA-1, so the load generator checks the gateway
 * against an independent implementation. Returns 0, or -1 when OpenSSL fails.
 */
static int wl_accept_key(const char key[25], char out[WS_HS_ACCEPT_LEN + 1])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char in[24 + sizeof(guid) - 1], md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;

    memcpy(in, key, 24);
    memcpy(in + 24, guid, sizeof(guid) - 1);
    if (EVP_Digest(in, sizeof(in), md, &md_len, EVP_sha1(), NULL) != 1 || md_len != 20)
        return -1;
    return EVP_EncodeBlock((unsigned char *)out, md, 20) == WS_HS_ACCEPT_LEN ? 0 : -1;
}

/* The byte j of echo message m on connection i: differs between connections and messages. */
static uint8_t wl_pat(uint32_t i, uint32_t m, uint32_t j)
{
    return (uint8_t)(i * 131u + m * 17u + j + (j >> 8) * 7u);
}

static void wl_reason_add(struct wl_reason *r, size_t *n, const char *text, uint64_t count)
{
    size_t i;

    for (i = 0; i < *n; i++) {
        if (strcmp(r[i].text, text) == 0) {
            r[i].count += count;
            return;
        }
    }
    if (*n == WL_REASONS_MAX - 1) /* the last slot collects the rest */
        text = "other";
    if (*n == WL_REASONS_MAX) {
        r[WL_REASONS_MAX - 1].count += count;
        return;
    }
    snprintf(r[*n].text, sizeof(r[*n].text), "%s", text);
    r[*n].count = count;
    (*n)++;
}

static bool wl_ieq(const char *s, size_t len, const char *lit)
{
    return strlen(lit) == len && strncasecmp(s, lit, len) == 0;
}

/* True when the comma-separated list [s, e) holds token (case-insensitive). */
static bool wl_has_token(const char *s, const char *e, const char *token)
{
    while (s < e) {
        const char *comma = memchr(s, ',', (size_t)(e - s));
        const char *te = comma != NULL ? comma : e;
        const char *ts = s;

        while (ts < te && (*ts == ' ' || *ts == '\t'))
            ts++;
        while (te > ts && (te[-1] == ' ' || te[-1] == '\t'))
            te--;
        if (wl_ieq(ts, (size_t)(te - ts), token))
            return true;
        s = comma != NULL ? comma + 1 : e;
    }
    return false;
}

/*
 * Writes tmpl with {i} and {i%M} replaced by i and i mod M into out. Returns the
 * length, or 0 when tmpl is malformed or the result does not fit in cap.
 */
static size_t wl_path_expand(const char *t, uint32_t i, char *out, size_t cap)
{
    size_t o = 0;

    while (*t != '\0') {
        if (*t == '{') {
            unsigned long v = i, m;
            char *e;
            int n;

            if (t[1] != 'i')
                return 0;
            t += 2;
            if (*t == '%') {
                if (t[1] < '0' || t[1] > '9')
                    return 0;
                errno = 0;
                m = strtoul(t + 1, &e, 10);
                if (errno != 0 || m == 0)
                    return 0;
                v = i % m;
                t = e;
            }
            if (*t != '}')
                return 0;
            t++;
            n = snprintf(out + o, cap - o, "%lu", v);
            if (n < 0 || (size_t)n >= cap - o)
                return 0;
            o += (size_t)n;
        } else if (*t == '}') {
            return 0;
        } else {
            if (o + 1 >= cap)
                return 0;
            out[o++] = *t++;
        }
    }
    out[o] = '\0';
    return o;
}

static int wl_write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reports ------------------------------------------------------------------------- */

static void wl_msg_put(struct wl_msg *m, const void *p, size_t n)
{
    if (m->oom)
        return;
    if (m->len + n > m->cap) {
        size_t cap = m->cap == 0 ? 4096 : m->cap;
        uint8_t *b;

        while (cap < m->len + n)
            cap *= 2;
        b = realloc(m->b, cap);
        if (b == NULL) {
            m->oom = true;
            return;
        }
        m->b = b;
        m->cap = cap;
    }
    memcpy(m->b + m->len, p, n);
    m->len += n;
}

static void wl_msg_u64(struct wl_msg *m, uint64_t v)
{
    wl_msg_put(m, &v, sizeof(v));
}

static void wl_msg_str(struct wl_msg *m, const char *s, size_t n)
{
    wl_msg_u64(m, n);
    wl_msg_put(m, s, n);
}

static void wl_msg_start(struct wl_msg *m, uint32_t type)
{
    uint32_t hdr[2] = {type, 0};

    memset(m, 0, sizeof(*m));
    wl_msg_put(m, hdr, sizeof(hdr));
}

/* Child: sends m to the parent and frees it; a child that cannot report exits. */
static void wl_msg_send(struct wl_msg *m)
{
    uint32_t len;

    if (m->oom) {
        fprintf(stderr, "wsload: child %d: out of memory for a report\n", (int)getpid());
        _exit(1);
    }
    len = (uint32_t)(m->len - 8);
    memcpy(m->b + 4, &len, sizeof(len));
    if (wl_write_all(wl_p.rep_fd, m->b, m->len) < 0) {
        fprintf(stderr, "wsload: child %d: report: %s\n", (int)getpid(), strerror(errno));
        _exit(1);
    }
    free(m->b);
    m->b = NULL;
}

static uint64_t wl_rd_u64(struct wl_rd *r)
{
    uint64_t v;

    if (r->left < sizeof(v)) {
        r->bad = true;
        return 0;
    }
    memcpy(&v, r->p, sizeof(v));
    r->p += sizeof(v);
    r->left -= sizeof(v);
    return v;
}

/* Returns a pointer to the string's bytes inside the report; *len is its length. */
static const char *wl_rd_str(struct wl_rd *r, size_t *len)
{
    uint64_t n = wl_rd_u64(r);
    const char *s = (const char *)r->p;

    if (r->bad || n > r->left) {
        r->bad = true;
        *len = 0;
        return "";
    }
    r->p += n;
    r->left -= (size_t)n;
    *len = (size_t)n;
    return s;
}

/* Child: connections ------------------------------------------------------------- */

static void wl_on_event(evutil_socket_t fd, short what, void *arg);
static void wl_ramp_fill(void);
static bool wl_feed(struct wl_conn *c, const uint8_t *buf, size_t len, uint64_t now);

/* Closes the socket and frees what c owns, except the id kept for the ids file. */
static void wl_conn_close(struct wl_conn *c)
{
    if (c->fd < 0)
        return;
    if (c->ev != NULL)
        event_free(c->ev);
    c->ev = NULL;
    if (c->ssl != NULL) {
        SSL_free(c->ssl);
        c->ssl = NULL;
        ERR_clear_error();
    }
    close(c->fd);
    c->fd = -1;
    free(c->in);
    c->in = NULL;
    c->in_len = 0;
    free(c->out);
    c->out = NULL;
    c->out_len = 0;
    c->out_off = 0;
    if (c->z != NULL) {
        inflateEnd(c->z);
        free(c->z);
        c->z = NULL;
    }
    c->out_cap = 0;
    c->flags &= (uint16_t)~WL_F_WRITE;
    if (c->flags & WL_F_FRAME)
        wl_p.settled++;
}

static int wl_arm(struct wl_conn *c, short what)
{
    if (event_del(c->ev) < 0 || event_assign(c->ev, wl_p.base, c->fd, what, wl_on_event, c) < 0 ||
        event_add(c->ev, NULL) < 0)
        return -1;
    return 0;
}

static void wl_hs_done(uint64_t now)
{
    wl_p.inflight--;
    wl_p.t_ramp_end = now;
    wl_ramp_fill();
}

static void wl_hs_fail(struct wl_conn *c, const char *why)
{
    wl_reason_add(wl_p.reasons, &wl_p.nreasons, why, 1);
    wl_p.failed++;
    wl_conn_close(c);
    c->state = WL_FAILED;
    wl_hs_done(wl_now());
}

static void wl_hs_fail_errno(struct wl_conn *c, const char *what, int err)
{
    char why[WL_REASON_LEN];

    snprintf(why, sizeof(why), "%s: %s", what, strerror(err));
    wl_hs_fail(c, why);
}

static void wl_echo_report(void)
{
    struct wl_msg m;

    wl_p.echo_on = false;
    if (wl_p.echo_t_end == 0)
        wl_p.echo_t_end = wl_now();
    wl_msg_start(&m, WL_REP_ECHO);
    wl_msg_u64(&m, wl_p.echo_ok);
    wl_msg_u64(&m, wl_p.echo_conns);
    wl_msg_u64(&m, wl_p.echo_mismatch);
    wl_msg_u64(&m, wl_p.echo_lost);
    wl_msg_u64(&m, wl_p.echo_t_start);
    wl_msg_u64(&m, wl_p.echo_t_end);
    wl_msg_send(&m);
}

/* c stops echoing: finished (all M verified), mismatched, or lost. */
static void wl_echo_end(struct wl_conn *c, bool mismatch)
{
    if (!(c->flags & WL_F_ECHO))
        return;
    c->flags &= (uint16_t)~WL_F_ECHO;
    if (mismatch)
        wl_p.echo_mismatch++;
    else if (c->echoed < wl_opt.echo_m)
        wl_p.echo_lost++;
    if (--wl_p.echo_pending == 0 && wl_p.echo_on) {
        wl_p.echo_t_end = wl_now();
        wl_echo_report();
    }
}

/* The server closed TCP (err 0: EOF) or the socket failed. */
static void wl_conn_lost(struct wl_conn *c, int err, uint64_t now)
{
    if (c->state == WL_CONNECTING || c->state == WL_TLS || c->state == WL_HANDSHAKE) {
        if (err == 0)
            wl_hs_fail(c, "closed before 101");
        else
            wl_hs_fail_errno(c, "read", err);
        return;
    }
    c->t_tcp = now;
    c->flags |= WL_F_TCP;
    wl_echo_end(c, false);
    wl_conn_close(c);
    c->state = WL_ENDED;
}

/* send() or SSL_write(): bytes written, or -1 with errno (EAGAIN: later). A TLS write
 * that must wait is retried from c->out, which begins with the same bytes. */
static ssize_t wl_write(struct wl_conn *c, const uint8_t *buf, size_t len)
{
    int n;

    if (c->ssl == NULL)
        return send(c->fd, buf, len, MSG_NOSIGNAL);
    ERR_clear_error();
    n = SSL_write(c->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
    if (n > 0)
        return n;
    switch (SSL_get_error(c->ssl, n)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        errno = EAGAIN;
        break;
    case SSL_ERROR_SYSCALL:
        if (errno == 0)
            errno = ECONNRESET;
        break;
    default:
        errno = EPROTO;
        break;
    }
    return -1;
}

/* recv() or SSL_read(): bytes, 0 at EOF, or -1 with errno (EAGAIN: later). */
static ssize_t wl_read(struct wl_conn *c, uint8_t *buf, size_t len)
{
    int n;

    if (c->ssl == NULL)
        return recv(c->fd, buf, len, 0);
    ERR_clear_error();
    n = SSL_read(c->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
    if (n > 0)
        return n;
    switch (SSL_get_error(c->ssl, n)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        if (errno == 0)
            return 0; /* EOF without close_notify */
        return -1;
    default:
        errno = EPROTO;
        return -1;
    }
}

/* Writes buf now or queues it; returns 0, or -1 with errno when the socket failed. */
static int wl_send(struct wl_conn *c, const uint8_t *buf, size_t len)
{
    uint8_t *out;
    size_t keep;

    if (c->out == NULL) {
        ssize_t n = wl_write(c, buf, len);

        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR)
                return -1;
            n = 0;
        }
        if ((size_t)n == len)
            return 0;
        buf += n;
        len -= (size_t)n;
    }
    keep = c->out_len - c->out_off;
    if (keep + len > WL_OUT_MAX) {
        errno = ENOBUFS;
        return -1;
    }
    /* appended in place; the written head is dropped only when room runs out, and the
     * buffer doubles, so a backlog of many small messages costs linear time */
    if (c->out_len + len > c->out_cap && c->out_off > 0) {
        memmove(c->out, c->out + c->out_off, keep);
        c->out_len = (uint32_t)keep;
        c->out_off = 0;
    }
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap < 4096 ? 4096 : (size_t)c->out_cap * 2;

        while (cap < c->out_len + len)
            cap *= 2;
        out = realloc(c->out, cap);
        if (out == NULL) {
            errno = ENOMEM;
            return -1;
        }
        c->out = out;
        c->out_cap = (uint32_t)(cap > UINT32_MAX ? UINT32_MAX : cap);
    }
    memcpy(c->out + c->out_len, buf, len);
    c->out_len = (uint32_t)(c->out_len + len);
    if (!(c->flags & WL_F_WRITE)) {
        c->flags |= WL_F_WRITE;
        if (wl_arm(c, EV_READ | EV_WRITE | EV_PERSIST) < 0) {
            errno = ENOMEM;
            return -1;
        }
    }
    return 0;
}

static int wl_flush(struct wl_conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = wl_write(c, c->out + c->out_off, c->out_len - c->out_off);

        if (n < 0) {
            if (errno == EAGAIN)
                return 0;
            if (errno == EINTR)
                continue;
            return -1;
        }
        c->out_off += (uint32_t)n;
    }
    free(c->out);
    c->out = NULL;
    c->out_len = 0;
    c->out_off = 0;
    c->out_cap = 0;
    c->flags &= (uint16_t)~WL_F_WRITE;
    if (wl_arm(c, EV_READ | EV_PERSIST) < 0) {
        errno = ENOMEM;
        return -1;
    }
    return 0;
}

/* A masked control frame (RFC 6455 §5.3: every client frame is masked). */
static int wl_send_ctl(struct wl_conn *c, unsigned op, const uint8_t *pl, size_t len)
{
    uint8_t f[6 + 125];
    uint64_t r = wl_rand();
    size_t j;

    f[0] = (uint8_t)(0x80 | op);
    f[1] = (uint8_t)(0x80 | len);
    memcpy(f + 2, &r, 4);
    for (j = 0; j < len; j++)
        f[6 + j] = pl[j] ^ f[2 + (j & 3)];
    return wl_send(c, f, 6 + len);
}

/* The server broke the protocol: count, close with 1002, drop the socket. */
static bool wl_abort(struct wl_conn *c, const char *why)
{
    static const uint8_t code[2] = {0x03, 0xea};

    wl_p.nproto_total++;
    wl_reason_add(wl_p.proto, &wl_p.nproto, why, 1);
    if (wl_p.nproto_total <= WL_LOG_MAX)
        fprintf(stderr, "wsload: conn %" PRIu32 ": protocol error: %s\n", c->idx, why);
    if (c->state == WL_OPEN)
        (void)wl_send_ctl(c, WS_OP_CLOSE, code, sizeof(code));
    c->flags |= WL_F_PROTO;
    wl_echo_end(c, false);
    wl_conn_close(c);
    c->state = WL_ENDED;
    return false;
}

/* Sends echo message number c->echoed: B pattern bytes, masked, in one binary frame. */
static int wl_echo_send(struct wl_conn *c)
{
    uint8_t *f = wl_p.sbuf, mask[4];
    uint64_t r = wl_rand();
    uint32_t size = (uint32_t)wl_opt.echo_size, j;
    size_t h = ws_enc_header(f, WS_OP_BINARY, true, size);

    f[1] |= 0x80;
    memcpy(mask, &r, 4);
    memcpy(f + h, mask, 4);
    h += 4;
    for (j = 0; j < size; j++)
        f[h + j] = wl_pat(c->idx, c->echoed, j) ^ mask[j & 3];
    return wl_send(c, f, h + size);
}

static bool wl_on_close_frame(struct wl_conn *c, const uint8_t *pl, size_t len, uint64_t now)
{
    const uint8_t *reason = NULL;
    size_t rlen = 0;
    unsigned code = 0;
    uint8_t answer[2];

    if (c->state != WL_OPEN) /* a second close frame: the first one counts */
        return true;
    c->t_frame = now;
    c->flags |= WL_F_FRAME;
    wl_p.frames++;
    /* §5.5.1, §7.4: a code of 2 bytes the server may send, then a UTF-8 reason */
    if (len < 2 || ws_close_parse(pl, len, &code, &reason, &rlen) != 0) {
        c->flags |= WL_F_BADCLOSE;
        code = 0;
    }
    c->code = (uint16_t)code;
    if (wl_opt.expect_code_given && code != wl_opt.expect_code)
        c->flags |= WL_F_WCODE;
    if (wl_opt.expect_reason != NULL && (code == 0 || rlen != wl_opt.expect_reason_len ||
                                         memcmp(reason, wl_opt.expect_reason, rlen) != 0))
        c->flags |= WL_F_WREASON;
    wl_echo_end(c, false);
    c->state = WL_CLOSING;
    if (!wl_opt.reply_close)
        return true;
    if (code == 0)
        code = WS_CLOSE_PROTOCOL_ERROR;
    answer[0] = (uint8_t)(code >> 8);
    answer[1] = (uint8_t)code;
    if (wl_send_ctl(c, WS_OP_CLOSE, answer, sizeof(answer)) < 0) {
        wl_conn_lost(c, errno, now);
        return false;
    }
    return true;
}

/* Checks the header gathered in c->hdr (RFC 6455 §5.2) and starts the frame. */
static bool wl_frame_begin(struct wl_conn *c)
{
    uint8_t b0 = c->hdr[0], b1 = c->hdr[1], op = b0 & 0x0f;
    bool fin = (b0 & 0x80) != 0;
    uint64_t plen = b1 & 0x7f;
    unsigned k;

    if (b0 & 0x30)
        return wl_abort(c, "RSV bits set");
    if ((b0 & 0x40) && (!(c->flags & WL_F_ZNEG) || (op != WS_OP_TEXT && op != WS_OP_BINARY)))
        return wl_abort(c, "RSV1 set where permessage-deflate does not allow it");
    if (b1 & 0x80)
        return wl_abort(c, "masked server frame");
    if (plen == 126) {
        plen = (uint64_t)c->hdr[2] << 8 | c->hdr[3];
        if (plen < 126)
            return wl_abort(c, "non-minimal length");
    } else if (plen == 127) {
        plen = 0;
        for (k = 2; k < 10; k++)
            plen = plen << 8 | c->hdr[k];
        if (plen >> 63)
            return wl_abort(c, "64-bit length with the top bit set");
        if (plen < 65536)
            return wl_abort(c, "non-minimal length");
    }
    switch (op) {
    case WS_OP_CLOSE:
    case WS_OP_PING:
    case WS_OP_PONG:
        if (!fin || plen > 125)
            return wl_abort(c, "bad control frame");
        c->ctl_len = (uint8_t)plen;
        break;
    case WS_OP_TEXT:
    case WS_OP_BINARY:
        if (c->flags & WL_F_MSG)
            return wl_abort(c, "data frame inside a fragmented message");
        if (!fin)
            c->flags |= WL_F_MSG;
        c->msg_pos = 0;
        c->flags &= (uint16_t)~WL_F_STAMP;
        if (op == WS_OP_TEXT)
            c->flags |= WL_F_TEXT;
        else
            c->flags &= (uint16_t)~WL_F_TEXT;
        if (b0 & 0x40)
            c->flags |= WL_F_ZMSG;
        else
            c->flags &= (uint16_t)~WL_F_ZMSG;
        if ((c->flags & WL_F_ECHO) && (op != WS_OP_BINARY || (b0 & 0x40)))
            wl_echo_end(c, true);
        break;
    case WS_OP_CONT:
        if (!(c->flags & WL_F_MSG))
            return wl_abort(c, "continuation without a message");
        if (fin)
            c->flags &= (uint16_t)~WL_F_MSG;
        break;
    default:
        return wl_abort(c, "reserved opcode");
    }
    c->remaining = plen;
    c->in_len = 0;
    wl_p.ctl_ptr = NULL;
    return true;
}

/* Inflates a piece of a compressed message (or the tail of §7.2.2), counting its
 * inflated bytes in msg_pos; the bytes themselves are dropped. */
static bool wl_inflate(struct wl_conn *c, const uint8_t *buf, size_t take)
{
    int r;

    if (c->z == NULL) {
        c->z = calloc(1, sizeof(*c->z));
        if (c->z == NULL || inflateInit2(c->z, -15) != Z_OK) {
            free(c->z);
            c->z = NULL;
            return wl_abort(c, "out of memory for an inflater");
        }
    }
    c->z->next_in = (Bytef *)(uintptr_t)buf;
    c->z->avail_in = (uInt)take;
    do {
        c->z->next_out = wl_p.zbuf;
        c->z->avail_out = WL_READ_MAX;
        r = inflate(c->z, Z_SYNC_FLUSH);
        if (r != Z_OK && r != Z_BUF_ERROR && r != Z_STREAM_END)
            return wl_abort(c, "bad deflate data");
        take = WL_READ_MAX - c->z->avail_out;
        c->msg_pos = take > UINT32_MAX - c->msg_pos ? UINT32_MAX : c->msg_pos + (uint32_t)take;
    } while (c->z->avail_out == 0 || (c->z->avail_in > 0 && r == Z_OK));
    return true;
}

/* Digits [p, p + n) into *v; false unless they are all digits. */
static bool wl_digits(const uint8_t *p, size_t n, uint64_t *v)
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

/* --stamped: p holds the message's first WL_STAMP_ORDER bytes, "<T> <k> ". */
static void wl_on_stamp(struct wl_conn *c, const uint8_t *p)
{
    uint64_t now = wl_p.feed_now, t, k;

    c->flags |= WL_F_STAMP;
    if (!wl_digits(p, WL_STAMP_T, &t) || p[WL_STAMP_T] != ' ' ||
        !wl_digits(p + WL_STAMP_T + 1, WL_STAMP_N, &k) || p[WL_STAMP_ORDER - 1] != ' ') {
        wl_p.stamp_bad++;
        return;
    }
    if (wl_p.stamp_n == wl_p.stamp_cap) {
        size_t cap = wl_p.stamp_cap == 0 ? 4096 : wl_p.stamp_cap * 2;
        uint64_t *v = realloc(wl_p.stamp_lat, cap * sizeof(*v));

        if (v == NULL) {
            fprintf(stderr, "wsload: child: out of memory for latencies\n");
            _exit(1);
        }
        wl_p.stamp_lat = v;
        wl_p.stamp_cap = cap;
    }
    wl_p.stamp_lat[wl_p.stamp_n++] = now > t ? now - t : 0;
    if (wl_p.t_stamp_first == 0)
        wl_p.t_stamp_first = now;
    wl_p.t_stamp_last = now;
    /* message k goes to connection k mod N, in order: this one's next is idx + N * msgs */
    if (k % wl_opt.n != c->idx || k / wl_opt.n != c->msgs)
        wl_p.stamp_seq++;
}

/* --stamped: gathers the stamp from the start of a data message. */
static bool wl_stamp_gather(struct wl_conn *c, const uint8_t *buf, size_t take)
{
    size_t want = WL_STAMP_ORDER - c->msg_pos, n = take < want ? take : want;

    if (c->msg_pos == 0 && take >= WL_STAMP_ORDER) {
        wl_on_stamp(c, buf); /* whole in this read: no copy */
        return true;
    }
    if (c->in_len != c->msg_pos)
        return true; /* split over fragments: counted as unreadable at its end */
    if (c->in == NULL) {
        c->in = malloc(125); /* the size control frames use: either may find it */
        if (c->in == NULL)
            return wl_abort(c, "out of memory");
    }
    memcpy(c->in + c->in_len, buf, n);
    c->in_len = (uint16_t)(c->in_len + n);
    if (c->in_len == WL_STAMP_ORDER)
        wl_on_stamp(c, c->in);
    return true;
}

static bool wl_frame_data(struct wl_conn *c, const uint8_t *buf, size_t take)
{
    uint8_t op = c->hdr[0] & 0x0f;
    size_t j;

    if (op & 0x08) {
        if (c->in == NULL && c->in_len == 0 && take == c->remaining) {
            wl_p.ctl_ptr = buf; /* whole payload in this read: no copy */
            return true;
        }
        if (c->in == NULL) {
            c->in = malloc(125);
            if (c->in == NULL)
                return wl_abort(c, "out of memory");
        }
        memcpy(c->in + c->in_len, buf, take);
        c->in_len = (uint16_t)(c->in_len + take);
        return true;
    }
    if (!(c->flags & WL_F_ECHO)) {
        wl_p.wire += take;
        if (c->flags & WL_F_ZMSG)
            return wl_inflate(c, buf, take);
        if (wl_opt.stamped && !(c->flags & WL_F_STAMP) && c->msg_pos < WL_STAMP_ORDER &&
            !wl_stamp_gather(c, buf, take))
            return false;
        /* data outside the echo phase: only its size is kept, saturating */
        c->msg_pos = take > UINT32_MAX - c->msg_pos ? UINT32_MAX : c->msg_pos + (uint32_t)take;
        return true;
    }
    if (c->msg_pos + take > wl_opt.echo_size) {
        wl_echo_end(c, true);
        return true;
    }
    for (j = 0; j < take; j++) {
        if (buf[j] != wl_pat(c->idx, c->echoed, c->msg_pos + (uint32_t)j)) {
            wl_echo_end(c, true);
            return true;
        }
    }
    c->msg_pos += (uint32_t)take;
    return true;
}

/* A whole data message outside the echo phase: a pushed message (send orders). */
static void wl_on_message(struct wl_conn *c, uint64_t now)
{
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};

    if (c->flags & WL_F_ZMSG) {
        if (!wl_inflate(c, tail, sizeof(tail)))
            return;
        wl_p.msg_zipped++;
        if (!(c->flags & WL_F_ZKEEP)) { /* no context takeover: a fresh one next time */
            inflateEnd(c->z);
            free(c->z);
            c->z = NULL;
        }
    }
    if (c->msgs++ == 0)
        c->t_msg = now;
    wl_p.msgs++;
    wl_p.msg_text += (c->flags & WL_F_TEXT) != 0;
    if (wl_opt.expect_size_given && c->msg_pos != wl_opt.expect_size)
        c->flags |= WL_F_WSIZE;
    if (wl_opt.stamped && !(c->flags & WL_F_STAMP))
        wl_p.stamp_bad++; /* shorter than a stamp, or split over fragments */
    c->flags &= (uint16_t)~WL_F_STAMP;
    c->msg_pos = 0;
}

static bool wl_frame_end(struct wl_conn *c, uint64_t now)
{
    uint8_t op = c->hdr[0] & 0x0f;
    const uint8_t *pl = c->in != NULL ? c->in : wl_p.ctl_ptr;
    bool alive = true;

    switch (op) {
    case WS_OP_PING:
        if (c->state == WL_OPEN && wl_send_ctl(c, WS_OP_PONG, pl, c->ctl_len) < 0) {
            wl_conn_lost(c, errno, now);
            alive = false;
        }
        break;
    case WS_OP_PONG:
        break;
    case WS_OP_CLOSE:
        alive = wl_on_close_frame(c, pl, c->ctl_len, now);
        break;
    default:
        if (!(c->hdr[0] & 0x80))
            break;
        if (!(c->flags & WL_F_ECHO)) {
            wl_on_message(c, now);
            break;
        }
        if (c->msg_pos != wl_opt.echo_size) {
            wl_echo_end(c, true);
            break;
        }
        c->echoed++;
        c->msg_pos = 0;
        wl_p.echo_ok++;
        if (c->echoed == wl_opt.echo_m) {
            wl_echo_end(c, false);
        } else if (wl_echo_send(c) < 0) {
            wl_conn_lost(c, errno, now);
            alive = false;
        }
        break;
    }
    if (alive) {
        free(c->in);
        c->in = NULL;
        c->in_len = 0;
    }
    return alive;
}

/* Header length from its second byte: 126 adds 2 length bytes, 127 adds 8 (§5.2). */
static size_t wl_hdr_len(uint8_t b1)
{
    b1 &= 0x7f;
    return b1 == 126 ? 4 : b1 == 127 ? 10 : 2;
}

/* Feeds server frames; returns false when c was closed meanwhile. */
static bool wl_feed(struct wl_conn *c, const uint8_t *buf, size_t len, uint64_t now)
{
    wl_p.feed_now = now;
    while (len > 0 || (c->flags & WL_F_PAYLOAD)) {
        size_t take;

        if (!(c->flags & WL_F_PAYLOAD)) {
            size_t need = c->hdr_have < 2 ? 2 : wl_hdr_len(c->hdr[1]);

            while (c->hdr_have < need && len > 0) {
                c->hdr[c->hdr_have++] = *buf++;
                len--;
                if (c->hdr_have == 2)
                    need = wl_hdr_len(c->hdr[1]);
            }
            if (c->hdr_have < need)
                return true;
            if (!wl_frame_begin(c))
                return false;
            c->flags |= WL_F_PAYLOAD;
        }
        take = c->remaining < len ? (size_t)c->remaining : len;
        if (take > 0 && !wl_frame_data(c, buf, take))
            return false;
        buf += take;
        len -= take;
        c->remaining -= take;
        if (c->remaining > 0)
            return true;
        c->flags &= (uint16_t)~WL_F_PAYLOAD;
        if (!wl_frame_end(c, now))
            return false;
        c->hdr_have = 0;
        if (c->fd < 0)
            return false;
    }
    return true;
}

/*
 * Judges the 101 answer head h[0..hlen), which ends with an empty line. Returns true
 * when it is a valid upgrade for c's key; else writes the reason into why.
 */
static bool wl_check_101(struct wl_conn *c, const char *h, size_t hlen, char *why, size_t cap)
{
    const char *p = h, *end = h + hlen, *eol;
    char key[25], expect[WS_HS_ACCEPT_LEN + 1];
    unsigned upgrade = 0, conn_upgrade = 0, accept = 0;
    int status;

    eol = memmem(p, hlen, "\r\n", 2);
    if (eol - p < 12 || memcmp(p, "HTTP/1.1 ", 9) != 0 || p[9] < '0' || p[9] > '9' || p[10] < '0' ||
        p[10] > '9' || p[11] < '0' || p[11] > '9' || (eol - p > 12 && p[12] != ' ')) {
        snprintf(why, cap, "bad status line");
        return false;
    }
    status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    if (status != 101) {
        snprintf(why, cap, "status %d", status);
        return false;
    }
    for (p = eol + 2; p < end - 2; p = eol + 2) {
        const char *colon, *v, *ve;
        size_t nlen;

        eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        colon = memchr(p, ':', (size_t)(eol - p));
        if (colon == NULL || colon == p || memchr(p, ' ', (size_t)(colon - p)) != NULL ||
            memchr(p, '\t', (size_t)(colon - p)) != NULL) {
            snprintf(why, cap, "bad header line");
            return false;
        }
        nlen = (size_t)(colon - p);
        for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++)
            ;
        for (ve = eol; ve > v && (ve[-1] == ' ' || ve[-1] == '\t'); ve--)
            ;
        if (wl_ieq(p, nlen, "Upgrade")) {
            upgrade++;
            if (!wl_ieq(v, (size_t)(ve - v), "websocket")) {
                snprintf(why, cap, "bad Upgrade header");
                return false;
            }
        } else if (wl_ieq(p, nlen, "Connection")) {
            if (wl_has_token(v, ve, "upgrade"))
                conn_upgrade++;
        } else if (wl_ieq(p, nlen, "Sec-WebSocket-Accept")) {
            if (accept++ == 0) {
                wl_base64_16(c->key, key);
                if (wl_accept_key(key, expect) < 0) {
                    snprintf(why, cap, "accept key: OpenSSL failed");
                    return false;
                }
            }
            if ((size_t)(ve - v) != WS_HS_ACCEPT_LEN || memcmp(v, expect, WS_HS_ACCEPT_LEN) != 0) {
                snprintf(why, cap, "wrong Sec-WebSocket-Accept");
                return false;
            }
        } else if (wl_ieq(p, nlen, "Sec-WebSocket-Extensions")) {
            size_t vl = (size_t)(ve - v);
            if (!wl_opt.deflate || (c->flags & WL_F_ZNEG) || vl < 18 ||
                strncasecmp(v, "permessage-deflate", 18) != 0 || memchr(v, ',', vl) != NULL) {
                snprintf(why, cap, "extension not asked for");
                return false;
            }
            c->flags |= WL_F_ZNEG;
            if (memmem(v, vl, "server_no_context_takeover", 26) == NULL)
                c->flags |= WL_F_ZKEEP;
        } else if (wl_ieq(p, nlen, "Sec-WebSocket-Protocol")) {
            snprintf(why, cap, "subprotocol not asked for");
            return false;
        } else if (wl_ieq(p, nlen, "X-Wsgate-Conn") && c->id == NULL) {
            c->id = strndup(v, (size_t)(ve - v));
        }
    }
    if (upgrade != 1) {
        snprintf(why, cap, upgrade == 0 ? "no Upgrade header" : "duplicate Upgrade header");
        return false;
    }
    if (conn_upgrade == 0) {
        snprintf(why, cap, "no upgrade token in Connection");
        return false;
    }
    if (accept != 1) {
        snprintf(why, cap,
                 accept == 0 ? "no Sec-WebSocket-Accept" : "duplicate Sec-WebSocket-Accept");
        return false;
    }
    return true;
}

static void wl_hs_read(struct wl_conn *c, const uint8_t *buf, size_t len, uint64_t now)
{
    const uint8_t *head, *e;
    size_t old = c->in_len, used, hlen, take;
    char why[WL_REASON_LEN];

    if (c->in == NULL && (e = memmem(buf, len, "\r\n\r\n", 4)) != NULL) {
        head = buf; /* the usual case: the whole head in one read */
        hlen = (size_t)(e - buf) + 4;
        used = hlen;
    } else {
        if (c->in == NULL) {
            c->in = malloc(WL_HEAD_MAX);
            if (c->in == NULL) {
                wl_hs_fail(c, "out of memory");
                return;
            }
        }
        take = len < WL_HEAD_MAX - old ? len : WL_HEAD_MAX - old;
        memcpy(c->in + old, buf, take);
        c->in_len = (uint16_t)(old + take);
        e = memmem(c->in + (old > 3 ? old - 3 : 0), c->in_len - (old > 3 ? old - 3 : 0), "\r\n\r\n",
                   4);
        if (e == NULL) {
            if (c->in_len == WL_HEAD_MAX)
                wl_hs_fail(c, "response head too large");
            return;
        }
        head = c->in;
        hlen = (size_t)(e - c->in) + 4;
        used = hlen - old;
    }
    if (!wl_check_101(c, (const char *)head, hlen, why, sizeof(why))) {
        wl_hs_fail(c, why);
        return;
    }
    free(c->in);
    c->in = NULL;
    c->in_len = 0;
    c->lat = now - c->t_start;
    c->state = WL_OPEN;
    wl_p.ok++;
    if (used < len)
        (void)wl_feed(c, buf + used, len - used, now); /* frames right behind the 101 */
    wl_hs_done(now);
}

/* The upgrade request, once TCP (and TLS) is up. */
static void wl_send_request(struct wl_conn *c)
{
    char req[WL_PATH_MAX + 512], path[WL_PATH_MAX + 64], key[25];
    uint64_t r[2];
    int n;

    r[0] = wl_rand();
    r[1] = wl_rand();
    memcpy(c->key, r, sizeof(c->key));
    wl_base64_16(c->key, key);
    if (wl_path_expand(wl_opt.path, c->idx, path, sizeof(path)) == 0) {
        wl_hs_fail(c, "path too long");
        return;
    }
    n = snprintf(req, sizeof(req),
                 "GET %s HTTP/1.1\r\nHost: %s:%u\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                 path, wl_opt.host, wl_opt.port, key,
                 wl_opt.deflate ? "Sec-WebSocket-Extensions: permessage-deflate; "
                                  "client_max_window_bits\r\n"
                                : "");
    if (n < 0 || (size_t)n >= sizeof(req)) {
        wl_hs_fail(c, "request too long");
        return;
    }
    c->state = WL_HANDSHAKE;
    if (wl_arm(c, EV_READ | EV_PERSIST) < 0) {
        wl_hs_fail(c, "event_add failed");
        return;
    }
    if (wl_send(c, (const uint8_t *)req, (size_t)n) < 0)
        wl_hs_fail_errno(c, "write", errno);
}

/* --tls: one step of the handshake; the request goes as soon as it is done. */
static void wl_tls_step(struct wl_conn *c)
{
    char why[WL_REASON_LEN];
    int r, e;

    ERR_clear_error();
    r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        wl_send_request(c);
        return;
    }
    e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        if (wl_arm(c, e == SSL_ERROR_WANT_READ ? EV_READ | EV_PERSIST
                                               : EV_READ | EV_WRITE | EV_PERSIST) < 0)
            wl_hs_fail(c, "event_add failed");
        return;
    }
    if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        wl_hs_fail_errno(c, "tls", errno != 0 ? errno : ECONNRESET);
        return;
    }
    snprintf(why, sizeof(why), "tls: %s", ERR_reason_error_string(ERR_peek_error()) != NULL
                                              ? ERR_reason_error_string(ERR_peek_error())
                                              : "handshake failed");
    wl_hs_fail(c, why);
}

static void wl_on_connected(struct wl_conn *c)
{
    socklen_t sl = sizeof(int);
    int err = 0;

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0)
        err = errno;
    if (err != 0) {
        wl_hs_fail_errno(c, "connect", err);
        return;
    }
    if (wl_p.tls == NULL) {
        wl_send_request(c);
        return;
    }
    c->ssl = SSL_new(wl_p.tls);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
        wl_hs_fail(c, "tls: out of memory");
        return;
    }
    SSL_set_connect_state(c->ssl);
    c->state = WL_TLS;
    wl_tls_step(c);
}

static void wl_on_read(struct wl_conn *c)
{
    /* TLS: records OpenSSL already holds wake no event, so read until it wants more. */
    do {
        ssize_t n = wl_read(c, wl_p.rbuf, WL_READ_MAX);
        uint64_t now = wl_now();

        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR)
                wl_conn_lost(c, errno, now);
            return;
        }
        if (n == 0) {
            wl_conn_lost(c, 0, now);
            return;
        }
        if (c->state == WL_HANDSHAKE)
            wl_hs_read(c, wl_p.rbuf, (size_t)n, now);
        else
            (void)wl_feed(c, wl_p.rbuf, (size_t)n, now);
    } while (c->ssl != NULL && c->fd >= 0);
}

static void wl_on_event(evutil_socket_t fd, short what, void *arg)
{
    struct wl_conn *c = arg;

    (void)fd;
    if (c->state == WL_CONNECTING) {
        wl_on_connected(c);
        return;
    }
    if (c->state == WL_TLS) {
        wl_tls_step(c);
        return;
    }
    if ((what & EV_WRITE) && wl_flush(c) < 0) {
        wl_conn_lost(c, errno, wl_now());
        return;
    }
    if ((what & EV_READ) && c->fd >= 0)
        wl_on_read(c);
}

static void wl_conn_start(struct wl_conn *c)
{
    struct sockaddr_in src;
    int one = 1;

    wl_p.inflight++;
    c->state = WL_CONNECTING;
    c->t_start = wl_now();
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        wl_hs_fail_errno(c, "socket", errno);
        return;
    }
    /* the port is picked at connect() for the whole 4-tuple, not at bind() */
    (void)setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    memset(&src, 0, sizeof(src));
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl((uint32_t)(0x7f000001ul + c->idx % wl_opt.sources));
    if (bind(c->fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
        wl_hs_fail_errno(c, "bind", errno);
        return;
    }
    c->t_start = wl_now();
    if (connect(c->fd, (struct sockaddr *)&wl_opt.dst, sizeof(wl_opt.dst)) < 0 &&
        errno != EINPROGRESS) {
        wl_hs_fail_errno(c, "connect", errno);
        return;
    }
    c->ev = event_new(wl_p.base, c->fd, EV_WRITE, wl_on_event, c);
    if (c->ev == NULL || event_add(c->ev, NULL) < 0)
        wl_hs_fail(c, "event_add failed");
}

/* Child: phases ------------------------------------------------------------------- */

static void wl_ramp_finish(void)
{
    struct wl_msg m;
    struct wl_msg ids;
    uint64_t nids = 0;
    uint32_t i;

    wl_p.ramp_done = true;
    if (wl_p.t_ramp_end == 0)
        wl_p.t_ramp_end = wl_now();
    wl_msg_start(&m, WL_REP_RAMP);
    wl_msg_u64(&m, wl_p.ok);
    wl_msg_u64(&m, wl_p.failed);
    wl_msg_u64(&m, wl_p.t_ramp_end);
    wl_msg_u64(&m, wl_p.ok);
    for (i = 0; i < wl_p.count; i++) {
        if (wl_p.conns[i].state >= WL_OPEN && wl_p.conns[i].state != WL_FAILED)
            wl_msg_u64(&m, wl_p.conns[i].lat);
    }
    wl_msg_u64(&m, wl_p.nreasons);
    for (i = 0; i < wl_p.nreasons; i++) {
        wl_msg_str(&m, wl_p.reasons[i].text, strlen(wl_p.reasons[i].text));
        wl_msg_u64(&m, wl_p.reasons[i].count);
    }
    memset(&ids, 0, sizeof(ids));
    for (i = 0; i < wl_p.count; i++) {
        char line[32];
        int n;

        if (wl_p.conns[i].id == NULL)
            continue;
        nids++;
        if (wl_opt.ids_file == NULL)
            continue;
        n = snprintf(line, sizeof(line), "%" PRIu32 "\t", wl_p.conns[i].idx);
        wl_msg_put(&ids, line, (size_t)n);
        wl_msg_put(&ids, wl_p.conns[i].id, strlen(wl_p.conns[i].id));
        wl_msg_put(&ids, "\n", 1);
    }
    if (ids.oom)
        m.oom = true;
    wl_msg_u64(&m, nids);
    wl_msg_str(&m, ids.len > 0 ? (const char *)ids.b : "", ids.len);
    free(ids.b);
    wl_msg_send(&m);
}

static void wl_ramp_fill(void)
{
    if (wl_p.filling || wl_p.ramp_done)
        return;
    wl_p.filling = true;
    while (wl_p.inflight < wl_p.inflight_max && wl_p.next < wl_p.count)
        wl_conn_start(&wl_p.conns[wl_p.next++]);
    wl_p.filling = false;
    if (wl_p.next == wl_p.count && wl_p.inflight == 0)
        wl_ramp_finish();
}

static void wl_ramp_tick(uint64_t now)
{
    uint32_t i;
    bool over = now >= wl_p.ramp_deadline;

    while (wl_p.scan < wl_p.next && wl_p.conns[wl_p.scan].state > WL_HANDSHAKE)
        wl_p.scan++;
    if (over)
        wl_p.filling = true; /* start nothing more */
    for (i = wl_p.scan; i < wl_p.next; i++) {
        struct wl_conn *c = &wl_p.conns[i];

        if (c->state != WL_CONNECTING && c->state != WL_TLS && c->state != WL_HANDSHAKE)
            continue;
        if (over)
            wl_hs_fail(c, "ramp timeout");
        else if (now - c->t_start > WL_HS_TIMEOUT_MS * WL_NS_PER_MS)
            wl_hs_fail(c, "handshake timeout");
    }
    if (over) {
        if (wl_p.next < wl_p.count) {
            wl_reason_add(wl_p.reasons, &wl_p.nreasons, "not started (ramp timeout)",
                          wl_p.count - wl_p.next);
            wl_p.failed += wl_p.count - wl_p.next;
            for (i = wl_p.next; i < wl_p.count; i++)
                wl_p.conns[i].state = WL_FAILED;
            wl_p.next = wl_p.count;
        }
        wl_p.filling = false;
        wl_ramp_finish();
    }
}

static void wl_send_progress(void)
{
    struct wl_msg m;

    wl_msg_start(&m, WL_REP_PROGRESS);
    wl_msg_u64(&m, wl_p.frames);
    wl_msg_u64(&m, wl_p.settled);
    wl_msg_u64(&m, wl_p.open);
    wl_msg_u64(&m, wl_p.msgs);
    wl_msg_send(&m);
    wl_p.sent_frames = wl_p.frames;
    wl_p.sent_settled = wl_p.settled;
    wl_p.sent_open = wl_p.open;
    wl_p.sent_msgs = wl_p.msgs;
}

static void wl_count_open(void)
{
    uint32_t i;

    wl_p.open = 0;
    for (i = 0; i < wl_p.count; i++)
        wl_p.open += wl_p.conns[i].state == WL_OPEN;
}

static void wl_on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (!wl_p.ramp_done)
        wl_ramp_tick(wl_now());
    if (!wl_p.watch)
        return;
    wl_count_open();
    if (wl_p.frames != wl_p.sent_frames || wl_p.settled != wl_p.sent_settled ||
        wl_p.open != wl_p.sent_open || wl_p.msgs != wl_p.sent_msgs)
        wl_send_progress();
}

/*
 * No pipelining: a connection sends its next message only after the previous echo came
 * back whole and correct, so the rate counts round trips through the gateway with every
 * open connection busy at once.
 */
static void wl_echo_start(void)
{
    uint32_t i;

    wl_p.echo_on = true;
    wl_p.echo_t_start = wl_now();
    wl_p.echo_pending = 0;
    for (i = 0; i < wl_p.count; i++) {
        if (wl_p.conns[i].state == WL_OPEN && !(wl_p.conns[i].flags & WL_F_MSG)) {
            wl_p.conns[i].flags |= WL_F_ECHO;
            wl_p.echo_pending++;
        }
    }
    wl_p.echo_conns = wl_p.echo_pending;
    for (i = 0; i < wl_p.count; i++) {
        struct wl_conn *c = &wl_p.conns[i];

        if ((c->flags & WL_F_ECHO) && wl_echo_send(c) < 0)
            wl_conn_lost(c, errno, wl_now());
    }
    if (wl_p.echo_pending == 0 && wl_p.echo_on) {
        wl_p.echo_t_end = wl_now();
        wl_echo_report();
    }
}

static void wl_echo_stop(void)
{
    uint32_t i;

    if (!wl_p.echo_on)
        return;
    wl_p.echo_on = false; /* no report from wl_echo_end() */
    wl_p.echo_t_end = wl_now();
    for (i = 0; i < wl_p.count; i++)
        wl_echo_end(&wl_p.conns[i], false);
    wl_echo_report();
}

/* The send phase ------------------------------------------------------------------ */

/* Connection c's message m: "<T> <i> <m> " padded with 'x' to --send-size, masked text. */
static int wl_stamp_send(struct wl_conn *c, uint64_t m, uint64_t now)
{
    uint8_t *f = wl_p.mbuf, mask[4];
    char stamp[80]; /* WL_STAMP_SEND bytes with T and m in range */
    uint64_t r = wl_rand();
    size_t size = wl_opt.send_size, h = ws_enc_header(f, WS_OP_TEXT, true, size), j;

    snprintf(stamp, sizeof(stamp), "%0*" PRIu64 " %0*" PRIu32 " %0*" PRIu64 " ", (int)WL_STAMP_T,
             (uint64_t)(now % 10000000000000000000ull), (int)WL_STAMP_N, c->idx, (int)WL_STAMP_N,
             (uint64_t)(m % 10000000000ull));
    f[1] |= 0x80;
    memcpy(mask, &r, 4);
    memcpy(f + h, mask, 4);
    h += 4;
    for (j = 0; j < size; j++)
        f[h + j] = (uint8_t)((j < WL_STAMP_SEND ? (uint8_t)stamp[j] : 'x') ^ mask[j & 3]);
    return wl_send(c, f, h + size);
}

static void wl_send_report(void)
{
    struct wl_msg m;
    uint64_t unsent = 0, lost = 0;
    uint32_t i;

    for (i = 0; i < wl_p.count; i++) {
        unsent += wl_p.conns[i].out_len - wl_p.conns[i].out_off;
        lost += wl_p.conns[i].state != WL_OPEN && wl_p.conns[i].state != WL_FAILED;
    }
    wl_msg_start(&m, WL_REP_SEND);
    wl_msg_u64(&m, wl_p.send_ok);
    wl_msg_u64(&m, wl_p.send_skipped);
    wl_msg_u64(&m, wl_p.send_lag_max);
    wl_msg_u64(&m, unsent);
    wl_msg_u64(&m, lost);
    wl_msg_u64(&m, wl_p.t_send_first);
    wl_msg_u64(&m, wl_p.t_send_last);
    wl_msg_send(&m);
}

/* Message s is due at send_t0 + s / (count * rate) seconds: connection s % count, its
 * message s / count, so every connection sends at the rate and they take turns evenly. */
static uint64_t wl_send_due(uint64_t s)
{
    return wl_p.send_t0 + s * 1000000000ull / ((uint64_t)wl_p.count * wl_opt.send_rate);
}

static void wl_on_send_tick(evutil_socket_t fd, short what, void *arg)
{
    uint64_t now = wl_now(), burst = 0;

    (void)fd;
    (void)what;
    (void)arg;
    if (wl_p.send_next < wl_p.send_total && wl_send_due(wl_p.send_next) <= now) {
        uint64_t lag = now - wl_send_due(wl_p.send_next);

        if (lag > wl_p.send_lag_max)
            wl_p.send_lag_max = lag;
        if (wl_p.t_send_first == 0)
            wl_p.t_send_first = now;
    }
    while (wl_p.send_next < wl_p.send_total && wl_send_due(wl_p.send_next) <= now &&
           burst++ < WL_SEND_BURST) {
        struct wl_conn *c = &wl_p.conns[wl_p.send_next % wl_p.count];

        if (c->state != WL_OPEN) {
            wl_p.send_skipped++;
        } else if (wl_stamp_send(c, wl_p.send_next / wl_p.count, now) < 0) {
            wl_p.send_skipped++;
            wl_conn_lost(c, errno, now);
        } else {
            wl_p.send_ok++;
            wl_p.t_send_last = now;
        }
        wl_p.send_next++;
    }
    if (wl_p.send_next == wl_p.send_total) {
        event_del(wl_p.send_ev);
        wl_send_report();
    }
}

static void wl_send_start(void)
{
    struct timeval tv = {0, WL_SEND_TICK_US};

    wl_p.send_t0 = wl_now();
    wl_p.send_total = (uint64_t)wl_p.count * wl_opt.send_rate * wl_opt.send_secs;
    if (wl_p.send_total == 0 || wl_p.send_ev == NULL) {
        wl_send_report();
        return;
    }
    if (event_add(wl_p.send_ev, &tv) < 0) {
        fprintf(stderr, "wsload: child: event_add failed\n");
        _exit(1);
    }
}

static void wl_close_report(void)
{
    struct wl_msg m;
    uint64_t n = 0, counts[6] = {0};
    uint16_t codes[256];
    uint64_t code_n[256];
    size_t ncodes = 0, k;
    uint32_t i;

    wl_msg_start(&m, WL_REP_CLOSE);
    for (i = 0; i < wl_p.count; i++)
        n += (wl_p.conns[i].flags & WL_F_FRAME) != 0;
    wl_msg_u64(&m, n);
    for (i = 0; i < wl_p.count; i++) {
        if (wl_p.conns[i].flags & WL_F_FRAME)
            wl_msg_u64(&m, wl_p.conns[i].t_frame);
    }
    n = 0;
    for (i = 0; i < wl_p.count; i++)
        n += (wl_p.conns[i].flags & (WL_F_FRAME | WL_F_TCP)) == (WL_F_FRAME | WL_F_TCP);
    wl_msg_u64(&m, n);
    for (i = 0; i < wl_p.count; i++) {
        struct wl_conn *c = &wl_p.conns[i];

        if ((c->flags & (WL_F_FRAME | WL_F_TCP)) == (WL_F_FRAME | WL_F_TCP))
            wl_msg_u64(&m, c->t_tcp);
    }
    for (i = 0; i < wl_p.count; i++) {
        struct wl_conn *c = &wl_p.conns[i];

        counts[0] += (c->flags & WL_F_WCODE) != 0;
        counts[1] += (c->flags & WL_F_WREASON) != 0;
        counts[2] += (c->flags & WL_F_BADCLOSE) != 0;
        counts[3] += (c->flags & (WL_F_FRAME | WL_F_TCP)) == WL_F_TCP;
        counts[4] += (c->flags & WL_F_FRAME) && c->fd >= 0;
        counts[5] += c->state == WL_OPEN || c->state == WL_CLOSING;
        if ((c->flags & WL_F_FRAME) && c->code != 0) {
            for (k = 0; k < ncodes && codes[k] != c->code; k++)
                ;
            if (k == ncodes && ncodes < 256) {
                codes[ncodes] = c->code;
                code_n[ncodes++] = 0;
            }
            if (k < ncodes)
                code_n[k]++;
        }
    }
    for (k = 0; k < 6; k++)
        wl_msg_u64(&m, counts[k]);
    wl_msg_u64(&m, ncodes);
    for (k = 0; k < ncodes; k++) {
        wl_msg_u64(&m, codes[k]);
        wl_msg_u64(&m, code_n[k]);
    }
    wl_msg_u64(&m, wl_p.nproto);
    for (k = 0; k < wl_p.nproto; k++) {
        wl_msg_str(&m, wl_p.proto[k].text, strlen(wl_p.proto[k].text));
        wl_msg_u64(&m, wl_p.proto[k].count);
    }
    /* pushed data messages: first arrival per connection, then the counts */
    n = 0;
    for (i = 0; i < wl_p.count; i++)
        n += wl_p.conns[i].msgs > 0;
    wl_msg_u64(&m, n);
    for (i = 0; i < wl_p.count; i++) {
        if (wl_p.conns[i].msgs > 0)
            wl_msg_u64(&m, wl_p.conns[i].t_msg);
    }
    wl_msg_u64(&m, wl_p.msgs);
    wl_msg_u64(&m, wl_p.msg_text);
    n = 0;
    for (i = 0; i < wl_p.count; i++)
        n += wl_p.conns[i].msgs > 1;
    wl_msg_u64(&m, n);
    n = 0;
    for (i = 0; i < wl_p.count; i++)
        n += (wl_p.conns[i].flags & WL_F_WSIZE) != 0;
    wl_msg_u64(&m, n);
    wl_msg_u64(&m, wl_p.msg_zipped);
    wl_msg_u64(&m, wl_p.wire);
    /* data messages per connection that opened: min, max (0, 0 when none opened) */
    {
        uint64_t lo = UINT64_MAX, hi = 0;

        for (i = 0; i < wl_p.count; i++) {
            if (wl_p.conns[i].state == WL_NEW || wl_p.conns[i].state == WL_FAILED ||
                wl_p.conns[i].state == WL_CONNECTING || wl_p.conns[i].state == WL_TLS ||
                wl_p.conns[i].state == WL_HANDSHAKE)
                continue;
            lo = wl_p.conns[i].msgs < lo ? wl_p.conns[i].msgs : lo;
            hi = wl_p.conns[i].msgs > hi ? wl_p.conns[i].msgs : hi;
        }
        wl_msg_u64(&m, lo == UINT64_MAX ? 0 : 1);
        wl_msg_u64(&m, lo == UINT64_MAX ? 0 : lo);
        wl_msg_u64(&m, hi);
    }
    /* --stamped */
    wl_msg_u64(&m, wl_p.stamp_n);
    wl_msg_put(&m, wl_p.stamp_lat, wl_p.stamp_n * sizeof(uint64_t));
    wl_msg_u64(&m, wl_p.stamp_bad);
    wl_msg_u64(&m, wl_p.stamp_seq);
    wl_msg_u64(&m, wl_p.t_stamp_first);
    wl_msg_u64(&m, wl_p.t_stamp_last);
    wl_msg_send(&m);
}

static void wl_on_cmd(evutil_socket_t fd, short what, void *arg)
{
    uint8_t cmd[16];
    ssize_t n = read(fd, cmd, sizeof(cmd)), i;

    (void)what;
    (void)arg;
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0)
        _exit(1); /* the parent is gone */
    for (i = 0; i < n; i++) {
        switch (cmd[i]) {
        case WL_CMD_ECHO:
            wl_echo_start();
            break;
        case WL_CMD_STOP:
            wl_echo_stop();
            break;
        case WL_CMD_WATCH:
            wl_p.watch = true;
            wl_count_open();
            wl_send_progress();
            break;
        case WL_CMD_SEND:
            wl_send_start();
            break;
        case WL_CMD_SENT:
            if (wl_p.send_next < wl_p.send_total) {
                event_del(wl_p.send_ev);
                wl_p.send_total = wl_p.send_next; /* what is left counts as not sent */
                wl_send_report();
            }
            break;
        case WL_CMD_END:
            wl_close_report();
            _exit(0); /* the kernel closes the sockets */
        default:
            break;
        }
    }
}

static void wl_child_main(uint32_t lo, uint32_t hi, uint32_t inflight, int cmd_fd, int rep_fd,
                          uint64_t t_start, pid_t parent)
{
    struct timeval tick = {0, WL_TICK_MS * 1000};
    uint32_t i;

    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
        _exit(1);
    wl_seed();
    wl_p.cmd_fd = cmd_fd;
    wl_p.rep_fd = rep_fd;
    wl_p.count = hi - lo;
    wl_p.inflight_max = inflight;
    wl_p.ramp_deadline = t_start + wl_opt.ramp_timeout_ms * WL_NS_PER_MS;
    wl_p.conns = calloc(wl_p.count > 0 ? wl_p.count : 1, sizeof(*wl_p.conns));
    wl_p.rbuf = malloc(WL_READ_MAX);
    wl_p.zbuf = malloc(WL_READ_MAX);
    wl_p.sbuf = malloc(WS_FRAME_HDR_MAX + 4 + (wl_opt.echo_m > 0 ? wl_opt.echo_size : 0));
    wl_p.mbuf = malloc(WS_FRAME_HDR_MAX + 4 + (wl_opt.send_rate > 0 ? wl_opt.send_size : 0));
    if (wl_p.conns == NULL || wl_p.rbuf == NULL || wl_p.sbuf == NULL || wl_p.mbuf == NULL ||
        wl_p.zbuf == NULL) {
        fprintf(stderr, "wsload: child: out of memory\n");
        _exit(1);
    }
    for (i = 0; i < wl_p.count; i++) {
        wl_p.conns[i].fd = -1;
        wl_p.conns[i].idx = lo + i;
    }
    if (fcntl(cmd_fd, F_SETFL, O_NONBLOCK) < 0) {
        fprintf(stderr, "wsload: child: fcntl: %s\n", strerror(errno));
        _exit(1);
    }
    wl_p.base = event_base_new();
    if (wl_p.base == NULL) {
        fprintf(stderr, "wsload: child: event_base_new failed\n");
        _exit(1);
    }
    wl_p.tick = event_new(wl_p.base, -1, EV_PERSIST, wl_on_tick, NULL);
    wl_p.cmd_ev = event_new(wl_p.base, cmd_fd, EV_READ | EV_PERSIST, wl_on_cmd, NULL);
    wl_p.send_ev = event_new(wl_p.base, -1, EV_PERSIST, wl_on_send_tick, NULL);
    if (wl_p.tick == NULL || wl_p.cmd_ev == NULL || wl_p.send_ev == NULL || event_add(wl_p.tick, &tick) < 0 ||
        event_add(wl_p.cmd_ev, NULL) < 0) {
        fprintf(stderr, "wsload: child: event_add failed\n");
        _exit(1);
    }
    wl_ramp_fill();
    event_base_dispatch(wl_p.base);
    fprintf(stderr, "wsload: child: event loop ended\n");
    _exit(1);
}

/* Parent ------------------------------------------------------------------------- */

static int wl_samples_push(struct wl_samples *s, uint64_t v)
{
    if (s->n == s->cap) {
        size_t cap = s->cap == 0 ? 1024 : s->cap * 2;
        uint64_t *nv = realloc(s->v, cap * sizeof(*nv));

        if (nv == NULL)
            return -1;
        s->v = nv;
        s->cap = cap;
    }
    s->v[s->n++] = v;
    return 0;
}

static int wl_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return x < y ? -1 : x > y;
}

/* Nearest rank: the smallest sample with at least p% of the samples at or below it. */
static int64_t wl_pct(const int64_t *v, size_t n, unsigned p)
{
    size_t rank = (p * n + 99) / 100;

    return v[rank == 0 ? 0 : rank - 1];
}

/* Turns absolute times into times relative to t0 (signed), sorted. */
static int64_t *wl_rel_sorted(const struct wl_samples *s, uint64_t t0)
{
    int64_t *v = malloc((s->n > 0 ? s->n : 1) * sizeof(*v));
    size_t i;

    if (v == NULL)
        return NULL;
    for (i = 0; i < s->n; i++)
        v[i] = (int64_t)(s->v[i] - t0);
    qsort(v, s->n, sizeof(*v), wl_cmp_i64);
    return v;
}

static void wl_json_str(FILE *f, const char *s, size_t n)
{
    size_t i;

    fputc('"', f);
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];

        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void wl_json_ms(FILE *f, const char *name, const int64_t *v, size_t n, unsigned p)
{
    if (n == 0)
        fprintf(f, ",\"%s\":null", name);
    else
        fprintf(f, ",\"%s\":%.3f", name, (double)wl_pct(v, n, p) / 1e6);
}

static void wl_json_reasons(FILE *f, const struct wl_reason *r, size_t n)
{
    size_t i;

    fputc('{', f);
    for (i = 0; i < n; i++) {
        if (i > 0)
            fputc(',', f);
        wl_json_str(f, r[i].text, strlen(r[i].text));
        fprintf(f, ":%" PRIu64, r[i].count);
    }
    fputc('}', f);
}

static int wl_json_ramp(FILE *f, struct wl_run *r)
{
    int64_t *lat = wl_rel_sorted(&r->lat, 0);
    double secs = r->ramp_t_end > r->t_start ? (double)(r->ramp_t_end - r->t_start) / 1e9 : 0;

    if (lat == NULL)
        return -1;
    fprintf(f, "\"ramp\":{\"ok\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"fail_reasons\":", r->ramp_ok,
            r->ramp_failed);
    wl_json_reasons(f, r->reasons, r->nreasons);
    fprintf(f, ",\"seconds\":%.3f,\"rate\":%.1f", secs, secs > 0 ? (double)r->ramp_ok / secs : 0);
    wl_json_ms(f, "lat_p50", lat, r->lat.n, 50);
    wl_json_ms(f, "lat_p99", lat, r->lat.n, 99);
    wl_json_ms(f, "lat_max", lat, r->lat.n, 100);
    fprintf(f, ",\"conn_ids\":%" PRIu64 "}", r->conn_ids);
    free(lat);
    return 0;
}

/* Handles one report; returns -1 when it is malformed or memory ran out. */
static int wl_on_report(struct wl_run *r, struct wl_child *k, uint32_t type, const uint8_t *b,
                        size_t len)
{
    struct wl_rd rd = {b, len, false};
    uint64_t n, i, t;
    const char *s;
    size_t slen;
    char text[WL_REASON_LEN];

    switch (type) {
    case WL_REP_RAMP:
        r->ramp_ok += wl_rd_u64(&rd);
        r->ramp_failed += wl_rd_u64(&rd);
        t = wl_rd_u64(&rd);
        if (t > r->ramp_t_end)
            r->ramp_t_end = t;
        n = wl_rd_u64(&rd);
        for (i = 0; i < n && !rd.bad; i++) {
            if (wl_samples_push(&r->lat, wl_rd_u64(&rd)) < 0)
                return -1;
        }
        n = wl_rd_u64(&rd);
        for (i = 0; i < n && !rd.bad; i++) {
            s = wl_rd_str(&rd, &slen);
            snprintf(text, sizeof(text), "%.*s", (int)slen, s);
            wl_reason_add(r->reasons, &r->nreasons, text, wl_rd_u64(&rd));
        }
        r->conn_ids += wl_rd_u64(&rd);
        s = wl_rd_str(&rd, &slen);
        if (slen > 0) {
            k->ids = malloc(slen);
            if (k->ids == NULL)
                return -1;
            memcpy(k->ids, s, slen);
            k->ids_len = slen;
        }
        k->got_ramp = true;
        break;
    case WL_REP_ECHO:
        r->echo_ok += wl_rd_u64(&rd);
        r->echo_conns += wl_rd_u64(&rd);
        r->echo_mismatch += wl_rd_u64(&rd);
        r->echo_lost += wl_rd_u64(&rd);
        t = wl_rd_u64(&rd);
        if (r->echo_t_start == 0 || t < r->echo_t_start)
            r->echo_t_start = t;
        t = wl_rd_u64(&rd);
        if (t > r->echo_t_end)
            r->echo_t_end = t;
        k->got_echo = true;
        break;
    case WL_REP_PROGRESS:
        k->frames = wl_rd_u64(&rd);
        k->settled = wl_rd_u64(&rd);
        k->open = wl_rd_u64(&rd);
        k->msgs = wl_rd_u64(&rd);
        k->got_progress = true;
        break;
    case WL_REP_CLOSE:
        n = wl_rd_u64(&rd);
        for (i = 0; i < n && !rd.bad; i++) {
            if (wl_samples_push(&r->frames, wl_rd_u64(&rd)) < 0)
                return -1;
        }
        n = wl_rd_u64(&rd);
        for (i = 0; i < n && !rd.bad; i++) {
            if (wl_samples_push(&r->tcp, wl_rd_u64(&rd)) < 0)
                return -1;
        }
        r->wrong_code += wl_rd_u64(&rd);
        r->wrong_reason += wl_rd_u64(&rd);
        r->bad_close += wl_rd_u64(&rd);
        r->no_frame_tcp += wl_rd_u64(&rd);
        r->frame_open += wl_rd_u64(&rd);
        r->still_open += wl_rd_u64(&rd);
        n = wl_rd_u64(&rd);
        for (i = 0; i < n && !rd.bad; i++) {
            uint64_t code = wl_rd_u64(&rd), cnt = wl_rd_u64(&rd);

            if (code < 5000)
                r->codes[code] += cnt;
        }
        n = wl_rd_u64(&rd);
        for (i = 0; i < n && !rd.bad; i++) {
            uint64_t cnt;

            s = wl_rd_str(&rd, &slen);
            snprintf(text, sizeof(text), "%.*s", (int)slen, s);
            cnt = wl_rd_u64(&rd);
            wl_reason_add(r->proto, &r->nproto, text, cnt);
            r->nproto_total += cnt;
        }
        n = wl_rd_u64(&rd);
        for (i = 0; i < n && !rd.bad; i++) {
            if (wl_samples_push(&r->msg_first, wl_rd_u64(&rd)) < 0)
                return -1;
        }
        r->msgs += wl_rd_u64(&rd);
        r->msg_text += wl_rd_u64(&rd);
        r->msg_dup_conns += wl_rd_u64(&rd);
        r->msg_wrong_size += wl_rd_u64(&rd);
        r->msg_zipped += wl_rd_u64(&rd);
        r->wire += wl_rd_u64(&rd);
        if (wl_rd_u64(&rd) != 0) {
            uint64_t lo = wl_rd_u64(&rd), hi = wl_rd_u64(&rd);

            if (!r->conn_msgs_any || lo < r->conn_msgs_min)
                r->conn_msgs_min = lo;
            if (hi > r->conn_msgs_max)
                r->conn_msgs_max = hi;
            r->conn_msgs_any = true;
        } else {
            (void)wl_rd_u64(&rd);
            (void)wl_rd_u64(&rd);
        }
        n = wl_rd_u64(&rd);
        for (i = 0; i < n && !rd.bad; i++) {
            if (wl_samples_push(&r->stamp_lat, wl_rd_u64(&rd)) < 0)
                return -1;
        }
        r->stamp_bad += wl_rd_u64(&rd);
        r->stamp_seq += wl_rd_u64(&rd);
        t = wl_rd_u64(&rd);
        if (t != 0 && (r->t_stamp_first == 0 || t < r->t_stamp_first))
            r->t_stamp_first = t;
        t = wl_rd_u64(&rd);
        if (t > r->t_stamp_last)
            r->t_stamp_last = t;
        k->got_close = true;
        break;
    case WL_REP_SEND:
        r->send_ok += wl_rd_u64(&rd);
        r->send_skipped += wl_rd_u64(&rd);
        t = wl_rd_u64(&rd);
        if (t > r->send_lag_max)
            r->send_lag_max = t;
        r->send_unsent += wl_rd_u64(&rd);
        r->send_lost += wl_rd_u64(&rd);
        t = wl_rd_u64(&rd);
        if (t != 0 && (r->t_send_first == 0 || t < r->t_send_first))
            r->t_send_first = t;
        t = wl_rd_u64(&rd);
        if (t > r->t_send_last)
            r->t_send_last = t;
        k->got_send = true;
        break;
    default:
        return -1;
    }
    return rd.bad ? -1 : 0;
}

/*
 * Reads whatever the children sent within timeout_ms and handles complete reports.
 * Returns -1 when a child died or sent garbage.
 */
static int wl_pump(struct wl_run *r, int timeout_ms)
{
    struct pollfd pf[64];
    unsigned i, np = 0, map[64];
    int n;

    for (i = 0; i < r->nkids; i++) {
        if (!r->kids[i].eof) {
            pf[np].fd = r->kids[i].rfd;
            pf[np].events = POLLIN;
            pf[np].revents = 0;
            map[np++] = i;
        }
    }
    n = poll(pf, np, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -1;
    for (i = 0; i < np; i++) {
        struct wl_child *k = &r->kids[map[i]];

        if (pf[i].revents == 0)
            continue;
        for (;;) {
            ssize_t got;

            if (k->cap - k->len < 65536) {
                size_t cap = k->cap == 0 ? 1 << 17 : k->cap * 2;
                uint8_t *b = realloc(k->buf, cap);

                if (b == NULL)
                    return -1;
                k->buf = b;
                k->cap = cap;
            }
            got = read(k->rfd, k->buf + k->len, k->cap - k->len);
            if (got < 0 && errno == EINTR)
                continue;
            if (got < 0 && errno == EAGAIN)
                break;
            if (got <= 0) {
                k->eof = true;
                break;
            }
            k->len += (size_t)got;
        }
        while (k->len >= 8) {
            uint32_t type, len;

            memcpy(&type, k->buf, 4);
            memcpy(&len, k->buf + 4, 4);
            if (k->len < 8 + (size_t)len)
                break;
            if (wl_on_report(r, k, type, k->buf + 8, len) < 0) {
                fprintf(stderr, "wsload: bad report from child %d\n", (int)k->pid);
                return -1;
            }
            memmove(k->buf, k->buf + 8 + len, k->len - 8 - len);
            k->len -= 8 + (size_t)len;
        }
        if (k->eof && !k->got_close) {
            fprintf(stderr, "wsload: child %d exited early\n", (int)k->pid);
            return -1;
        }
    }
    return 0;
}

enum wl_want { WL_WANT_RAMP, WL_WANT_ECHO, WL_WANT_SEND, WL_WANT_CLOSE };

static bool wl_all_got(const struct wl_run *r, enum wl_want w)
{
    unsigned i;

    for (i = 0; i < r->nkids; i++) {
        const struct wl_child *k = &r->kids[i];

        if (!(w == WL_WANT_RAMP   ? k->got_ramp
              : w == WL_WANT_ECHO ? k->got_echo
              : w == WL_WANT_SEND ? k->got_send
                                  : k->got_close))
            return false;
    }
    return true;
}

static int wl_ms_until(uint64_t deadline)
{
    uint64_t now = wl_now();

    if (now >= deadline)
        return 0;
    return (deadline - now) / WL_NS_PER_MS > 100 ? 100 : (int)((deadline - now) / WL_NS_PER_MS) + 1;
}

/* Returns 0 when every child sent report w, 1 at the deadline, -1 on a dead child. */
static int wl_wait(struct wl_run *r, enum wl_want w, uint64_t deadline)
{
    while (!wl_all_got(r, w)) {
        if (wl_now() >= deadline)
            return 1;
        if (wl_pump(r, wl_ms_until(deadline)) < 0)
            return -1;
    }
    return 0;
}

static void wl_tell(struct wl_run *r, char cmd)
{
    unsigned i;

    for (i = 0; i < r->nkids; i++)
        (void)wl_write_all(r->kids[i].wfd, &cmd, 1);
}

static void wl_kill_all(struct wl_run *r)
{
    unsigned i;

    for (i = 0; i < r->nkids; i++) {
        if (r->kids[i].pid > 0) {
            kill(r->kids[i].pid, SIGKILL);
            waitpid(r->kids[i].pid, NULL, 0);
            r->kids[i].pid = 0;
        }
    }
}

/* Waits up to 5 s for the children to exit, then kills the rest. */
static void wl_reap(struct wl_run *r)
{
    uint64_t deadline = wl_now() + 5000 * WL_NS_PER_MS;
    unsigned i, left;

    do {
        left = 0;
        for (i = 0; i < r->nkids; i++) {
            if (r->kids[i].pid > 0 && waitpid(r->kids[i].pid, NULL, WNOHANG) == 0)
                left++;
            else
                r->kids[i].pid = 0;
        }
        if (left > 0) {
            struct timespec ts = {0, 10 * 1000 * 1000};

            nanosleep(&ts, NULL);
        }
    } while (left > 0 && wl_now() < deadline);
    wl_kill_all(r);
}

/* Writes data to path through path.tmp and a rename, so readers never see half a file. */
static int wl_write_file(const char *path, const char *data, size_t len)
{
    char tmp[PATH_MAX];
    FILE *f;
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp", path);

    if (n < 0 || (size_t)n >= sizeof(tmp))
        return -1;
    f = fopen(tmp, "w");
    if (f == NULL)
        return -1;
    if (fwrite(data, 1, len, f) != len) {
        fclose(f);
        return -1;
    }
    if (fclose(f) != 0 || rename(tmp, path) < 0)
        return -1;
    return 0;
}

static int wl_write_ready(struct wl_run *r)
{
    char *data = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&data, &len);
    int rc;

    if (f == NULL)
        return -1;
    fprintf(f, "{\"n\":%lu,\"procs\":%u,\"pid\":%d,", wl_opt.n, r->nkids, (int)getpid());
    rc = wl_json_ramp(f, r);
    fprintf(f, "}\n");
    if (fclose(f) != 0 || rc < 0) {
        free(data);
        return -1;
    }
    rc = wl_write_file(wl_opt.ready_file, data, len);
    free(data);
    return rc;
}

static int wl_write_ids(struct wl_run *r)
{
    char *data = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&data, &len);
    unsigned i;
    int rc;

    if (f == NULL)
        return -1;
    for (i = 0; i < r->nkids; i++) {
        if (r->kids[i].ids_len > 0)
            fwrite(r->kids[i].ids, 1, r->kids[i].ids_len, f);
    }
    if (fclose(f) != 0) {
        free(data);
        return -1;
    }
    rc = wl_write_file(wl_opt.ids_file, data != NULL ? data : "", len);
    free(data);
    return rc;
}

/*
 * PUBLISH channel json as a RESP array (binary safe). t0 is taken right before the
 * write. Returns 0 with *receivers set, or -1 with why filled.
 */
static int wl_publish(uint64_t *t0, long long *receivers, char *why, size_t cap)
{
    struct timeval tv = {5, 0};
    char reply[512], *cmd = NULL;
    size_t clen = 0, have = 0;
    FILE *f;
    int fd, rc = -1;
    char *end;

    *t0 = wl_now();
    f = open_memstream(&cmd, &clen);
    if (f == NULL) {
        snprintf(why, cap, "out of memory");
        return -1;
    }
    fprintf(f, "*3\r\n$7\r\nPUBLISH\r\n$%zu\r\n", strlen(wl_opt.channel));
    fwrite(wl_opt.channel, 1, strlen(wl_opt.channel), f);
    fprintf(f, "\r\n$%zu\r\n", strlen(wl_opt.publish));
    fwrite(wl_opt.publish, 1, strlen(wl_opt.publish), f);
    fputs("\r\n", f);
    if (fclose(f) != 0) {
        free(cmd);
        snprintf(why, cap, "out of memory");
        return -1;
    }
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(why, cap, "socket: %s", strerror(errno));
        goto err_free_cmd;
    }
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&wl_opt.redis, sizeof(wl_opt.redis)) < 0) {
        snprintf(why, cap, "redis connect: %s", strerror(errno));
        goto err_close;
    }
    *t0 = wl_now();
    if (wl_write_all(fd, cmd, clen) < 0) {
        snprintf(why, cap, "redis write: %s", strerror(errno));
        goto err_close;
    }
    while (have < sizeof(reply) - 1 && memmem(reply, have, "\r\n", 2) == NULL) {
        ssize_t n = read(fd, reply + have, sizeof(reply) - 1 - have);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(why, cap, "redis read: %s", n == 0 ? "closed" : strerror(errno));
            goto err_close;
        }
        have += (size_t)n;
    }
    reply[have] = '\0';
    if (reply[0] != ':') {
        snprintf(why, cap, "redis: %.*s", (int)strcspn(reply, "\r\n"), reply);
        goto err_close;
    }
    errno = 0;
    *receivers = strtoll(reply + 1, &end, 10);
    if (errno != 0 || end == reply + 1 || *end != '\r') {
        snprintf(why, cap, "redis: bad integer reply");
        goto err_close;
    }
    rc = 0;
err_close:
    close(fd);
err_free_cmd:
    free(cmd);
    return rc;
}

/* Options ------------------------------------------------------------------------ */

static int wl_num(const char *name, const char *s, unsigned long min, unsigned long max,
                  unsigned long *out)
{
    char *end;
    unsigned long v;

    errno = 0;
    if (s[0] < '0' || s[0] > '9')
        goto bad;
    v = strtoul(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        goto bad;
    *out = v;
    return 0;
bad:
    fprintf(stderr, "wsload: %s: expected a number in %lu..%lu, got '%s'\n", name, min, max, s);
    return -1;
}

static int wl_loopback(const char *name, const char *host, unsigned port, struct sockaddr_in *sa)
{
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1 || (ntohl(sa->sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "wsload: %s: only an IPv4 address in 127.0.0.0/8 is allowed, got '%s'\n",
                name, host);
        return -1;
    }
    return 0;
}

static int wl_parse_signal(const char *s)
{
    static const struct {
        const char *name;
        int num;
    } names[] = {{"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"KILL", SIGKILL},
                 {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"TERM", SIGTERM}, {"CONT", SIGCONT},
                 {"STOP", SIGSTOP}, {"ALRM", SIGALRM}};
    const char *colon = strchr(s, ':'), *sig;
    unsigned long pid, num;
    char pidbuf[32];
    size_t i;

    if (colon == NULL || (size_t)(colon - s) >= sizeof(pidbuf))
        goto bad;
    memcpy(pidbuf, s, (size_t)(colon - s));
    pidbuf[colon - s] = '\0';
    if (wl_num("--signal PID", pidbuf, 2, INT_MAX, &pid) < 0)
        return -1;
    sig = colon + 1;
    if (strncasecmp(sig, "SIG", 3) == 0)
        sig += 3;
    if (sig[0] >= '0' && sig[0] <= '9') {
        if (wl_num("--signal SIG", sig, 1, 64, &num) < 0)
            return -1;
        wl_opt.sig_num = (int)num;
    } else {
        for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            if (strcasecmp(sig, names[i].name) == 0)
                break;
        }
        if (i == sizeof(names) / sizeof(names[0]))
            goto bad;
        wl_opt.sig_num = names[i].num;
    }
    wl_opt.sig_pid = (pid_t)pid;
    return 0;
bad:
    fprintf(stderr,
            "wsload: --signal: expected PID:SIG (SIG a number or TERM, INT, ...), got '%s'\n", s);
    return -1;
}

static int wl_parse(int argc, char **argv)
{
    enum {
        WL_O_HOST = 256,
        WL_O_PORT,
        WL_O_PATH,
        WL_O_INFLIGHT,
        WL_O_SOURCES,
        WL_O_PROCS,
        WL_O_RAMP_TIMEOUT,
        WL_O_READY,
        WL_O_IDS,
        WL_O_HOLD,
        WL_O_DONE,
        WL_O_ECHO,
        WL_O_SIZE,
        WL_O_ECHO_TIMEOUT,
        WL_O_PUBLISH,
        WL_O_REDIS_HOST,
        WL_O_REDIS_PORT,
        WL_O_CHANNEL,
        WL_O_SIGNAL,
        WL_O_EXP_CLOSED,
        WL_O_EXP_CODE,
        WL_O_EXP_REASON,
        WL_O_EXP_MSGS,
        WL_O_EXP_SIZE,
        WL_O_CLOSE_TIMEOUT,
        WL_O_SETTLE,
        WL_O_REPLY,
        WL_O_NO_REPLY,
        WL_O_SAMPLES,
        WL_O_TLS,
        WL_O_DEFLATE,
        WL_O_STAMPED,
        WL_O_SEND_RATE,
        WL_O_SEND_SECS,
        WL_O_SEND_SIZE,
        WL_O_STOP,
        WL_O_HELP,
    };
    static const struct option lo[] = {
        {"host", required_argument, NULL, WL_O_HOST},
        {"port", required_argument, NULL, WL_O_PORT},
        {"path", required_argument, NULL, WL_O_PATH},
        {"inflight", required_argument, NULL, WL_O_INFLIGHT},
        {"sources", required_argument, NULL, WL_O_SOURCES},
        {"procs", required_argument, NULL, WL_O_PROCS},
        {"ramp-timeout", required_argument, NULL, WL_O_RAMP_TIMEOUT},
        {"ready-file", required_argument, NULL, WL_O_READY},
        {"ids-file", required_argument, NULL, WL_O_IDS},
        {"hold-ms", required_argument, NULL, WL_O_HOLD},
        {"done-file", required_argument, NULL, WL_O_DONE},
        {"echo", required_argument, NULL, WL_O_ECHO},
        {"size", required_argument, NULL, WL_O_SIZE},
        {"echo-timeout", required_argument, NULL, WL_O_ECHO_TIMEOUT},
        {"publish", required_argument, NULL, WL_O_PUBLISH},
        {"redis-host", required_argument, NULL, WL_O_REDIS_HOST},
        {"redis-port", required_argument, NULL, WL_O_REDIS_PORT},
        {"channel", required_argument, NULL, WL_O_CHANNEL},
        {"signal", required_argument, NULL, WL_O_SIGNAL},
        {"expect-closed", required_argument, NULL, WL_O_EXP_CLOSED},
        {"expect-code", required_argument, NULL, WL_O_EXP_CODE},
        {"expect-reason", required_argument, NULL, WL_O_EXP_REASON},
        {"expect-messages", required_argument, NULL, WL_O_EXP_MSGS},
        {"expect-size", required_argument, NULL, WL_O_EXP_SIZE},
        {"close-timeout", required_argument, NULL, WL_O_CLOSE_TIMEOUT},
        {"settle-ms", required_argument, NULL, WL_O_SETTLE},
        {"reply-close", no_argument, NULL, WL_O_REPLY},
        {"no-reply-close", no_argument, NULL, WL_O_NO_REPLY},
        {"samples", no_argument, NULL, WL_O_SAMPLES},
        {"tls", no_argument, NULL, WL_O_TLS},
        {"deflate", no_argument, NULL, WL_O_DEFLATE},
        {"stamped", no_argument, NULL, WL_O_STAMPED},
        {"send-rate", required_argument, NULL, WL_O_SEND_RATE},
        {"send-seconds", required_argument, NULL, WL_O_SEND_SECS},
        {"send-size", required_argument, NULL, WL_O_SEND_SIZE},
        {"stop-file", required_argument, NULL, WL_O_STOP},
        {"help", no_argument, NULL, WL_O_HELP},
        {NULL, 0, NULL, 0},
    };
    unsigned long v, port = 0, rport = 6379;
    const char *p;
    char probe[WL_PATH_MAX + 64];
    bool have_n = false, have_size = false;
    int o;

    wl_opt.path = "/";
    wl_opt.inflight = 500;
    wl_opt.sources = 20;
    wl_opt.ramp_timeout_ms = 120000;
    wl_opt.echo_size = 128;
    wl_opt.echo_timeout_ms = 60000;
    wl_opt.redis_host = "127.0.0.1";
    wl_opt.channel = "wsgate:orders";
    wl_opt.close_timeout_ms = 10000;
    wl_opt.settle_ms = 200;
    wl_opt.reply_close = true;
    wl_opt.send_size = 128;
    while ((o = getopt_long(argc, argv, "n:h", lo, NULL)) != -1) {
        int rc = 0;

        switch (o) {
        case WL_O_HOST:
            wl_opt.host = optarg;
            break;
        case WL_O_PORT:
            rc = wl_num("--port", optarg, 1, 65535, &port);
            break;
        case WL_O_PATH:
            wl_opt.path = optarg;
            break;
        case 'n':
            rc = wl_num("-n", optarg, 1, 4000000, &wl_opt.n);
            have_n = true;
            break;
        case WL_O_INFLIGHT:
            rc = wl_num("--inflight", optarg, 1, 100000, &wl_opt.inflight);
            break;
        case WL_O_SOURCES:
            rc = wl_num("--sources", optarg, 1, 254, &wl_opt.sources);
            break;
        case WL_O_PROCS:
            rc = wl_num("--procs", optarg, 1, 64, &wl_opt.procs);
            break;
        case WL_O_RAMP_TIMEOUT:
            rc = wl_num("--ramp-timeout", optarg, 1, 3600000, &wl_opt.ramp_timeout_ms);
            break;
        case WL_O_READY:
            wl_opt.ready_file = optarg;
            break;
        case WL_O_IDS:
            wl_opt.ids_file = optarg;
            break;
        case WL_O_DONE:
            wl_opt.done_file = optarg;
            break;
        case WL_O_HOLD:
            rc = wl_num("--hold-ms", optarg, 0, 86400000, &wl_opt.hold_ms);
            break;
        case WL_O_ECHO:
            rc = wl_num("--echo", optarg, 1, 100000000, &wl_opt.echo_m);
            break;
        case WL_O_SIZE:
            rc = wl_num("--size", optarg, 0, WL_SIZE_MAX, &wl_opt.echo_size);
            have_size = true;
            break;
        case WL_O_ECHO_TIMEOUT:
            rc = wl_num("--echo-timeout", optarg, 1, 86400000, &wl_opt.echo_timeout_ms);
            break;
        case WL_O_PUBLISH:
            wl_opt.publish = optarg;
            break;
        case WL_O_REDIS_HOST:
            wl_opt.redis_host = optarg;
            break;
        case WL_O_REDIS_PORT:
            rc = wl_num("--redis-port", optarg, 1, 65535, &rport);
            break;
        case WL_O_CHANNEL:
            wl_opt.channel = optarg;
            break;
        case WL_O_SIGNAL:
            rc = wl_parse_signal(optarg);
            break;
        case WL_O_EXP_CLOSED:
            rc = wl_num("--expect-closed", optarg, 0, 4000000, &wl_opt.expect_closed);
            wl_opt.expect_closed_given = true;
            break;
        case WL_O_EXP_CODE:
            rc = wl_num("--expect-code", optarg, 1000, 4999, &v);
            wl_opt.expect_code = (unsigned)v;
            wl_opt.expect_code_given = true;
            break;
        case WL_O_EXP_REASON:
            wl_opt.expect_reason = optarg;
            wl_opt.expect_reason_len = strlen(optarg);
            break;
        case WL_O_EXP_MSGS:
            rc = wl_num("--expect-messages", optarg, 0, 4000000000ul, &wl_opt.expect_msgs);
            wl_opt.expect_msgs_given = true;
            break;
        case WL_O_EXP_SIZE:
            rc = wl_num("--expect-size", optarg, 0, WL_SIZE_MAX, &wl_opt.expect_size);
            wl_opt.expect_size_given = true;
            break;
        case WL_O_CLOSE_TIMEOUT:
            rc = wl_num("--close-timeout", optarg, 1, 86400000, &wl_opt.close_timeout_ms);
            break;
        case WL_O_SETTLE:
            rc = wl_num("--settle-ms", optarg, 0, 600000, &wl_opt.settle_ms);
            break;
        case WL_O_REPLY:
            wl_opt.reply_close = true;
            break;
        case WL_O_NO_REPLY:
            wl_opt.reply_close = false;
            break;
        case WL_O_SAMPLES:
            wl_opt.samples = true;
            break;
        case WL_O_DEFLATE:
            wl_opt.deflate = true;
            break;
        case WL_O_TLS:
            wl_opt.tls = true;
            break;
        case WL_O_STAMPED:
            wl_opt.stamped = true;
            break;
        case WL_O_SEND_RATE:
            rc = wl_num("--send-rate", optarg, 1, 100000, &wl_opt.send_rate);
            break;
        case WL_O_SEND_SECS:
            rc = wl_num("--send-seconds", optarg, 1, 3600, &wl_opt.send_secs);
            break;
        case WL_O_SEND_SIZE:
            rc = wl_num("--send-size", optarg, WL_STAMP_SEND, WL_SEND_SIZE_MAX, &wl_opt.send_size);
            break;
        case WL_O_STOP:
            wl_opt.stop_file = optarg;
            break;
        case 'h':
        case WL_O_HELP:
            fputs(wl_usage, stdout);
            exit(0);
        default:
            rc = -1;
            break;
        }
        if (rc < 0)
            return -1;
    }
    if (optind < argc) {
        fprintf(stderr, "wsload: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (wl_opt.host == NULL || port == 0 || !have_n) {
        fprintf(stderr, "wsload: --host, --port and -n are required\n");
        return -1;
    }
    wl_opt.port = (unsigned)port;
    if (wl_loopback("--host", wl_opt.host, wl_opt.port, &wl_opt.dst) < 0)
        return -1;
    if (wl_opt.path[0] != '/' || strlen(wl_opt.path) > WL_PATH_MAX) {
        fprintf(stderr, "wsload: --path must start with / and be at most %u bytes\n", WL_PATH_MAX);
        return -1;
    }
    for (p = wl_opt.path; *p != '\0'; p++) {
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
            fprintf(stderr, "wsload: --path: only printable ASCII without spaces\n");
            return -1;
        }
    }
    if (wl_path_expand(wl_opt.path, UINT32_MAX, probe, sizeof(probe)) == 0) {
        fprintf(stderr, "wsload: --path: bad placeholder (only {i} and {i%%M}, M > 0)\n");
        return -1;
    }
    if (have_size && wl_opt.echo_m == 0) {
        fprintf(stderr, "wsload: --size goes with --echo\n");
        return -1;
    }
    if ((wl_opt.send_rate > 0) != (wl_opt.send_secs > 0)) {
        fprintf(stderr, "wsload: --send-rate and --send-seconds go together\n");
        return -1;
    }
    if (wl_opt.stamped && !wl_opt.expect_msgs_given) {
        fprintf(stderr, "wsload: --stamped goes with --expect-messages\n");
        return -1;
    }
    if (wl_opt.publish != NULL && wl_opt.sig_pid != 0) {
        fprintf(stderr, "wsload: --publish and --signal exclude each other\n");
        return -1;
    }
    if (wl_opt.publish != NULL) {
        wl_opt.redis_port = (unsigned)rport;
        if (wl_loopback("--redis-host", wl_opt.redis_host, wl_opt.redis_port, &wl_opt.redis) < 0)
            return -1;
        if (wl_opt.channel[0] == '\0') {
            fprintf(stderr, "wsload: --channel must not be empty\n");
            return -1;
        }
    }
    if (wl_opt.expect_reason != NULL &&
        (wl_opt.expect_reason_len > WS_CLOSE_REASON_MAX ||
         ws_close_reason_cut(wl_opt.expect_reason, wl_opt.expect_reason_len) !=
             wl_opt.expect_reason_len)) {
        fprintf(stderr, "wsload: --expect-reason: at most %d bytes of UTF-8\n",
                WS_CLOSE_REASON_MAX);
        return -1;
    }
    return 0;
}

/* Output ------------------------------------------------------------------------- */

/*
 * The pushed messages: latencies are each connection's first message from t0; rate is
 * messages delivered per second from t0 to the last first arrival.
 */
static int wl_print_messages(FILE *f, struct wl_run *r, uint64_t t0)
{
    int64_t *v = wl_rel_sorted(&r->msg_first, t0);
    uint64_t before = 0;
    size_t i, n = r->msg_first.n;
    double last = n > 0 ? (double)v[n - 1] / 1e9 : 0;

    if (v == NULL)
        return -1;
    for (i = 0; i < n; i++)
        before += v[i] < 0;
    fprintf(f,
            ",\"messages\":{\"expected\":%lu,\"delivered\":%" PRIu64 ",\"connections\":%zu"
            ",\"text\":%" PRIu64 ",\"binary\":%" PRIu64 ",\"duplicated_connections\":%" PRIu64
            ",\"wrong_size\":%" PRIu64 ",\"before_t0\":%" PRIu64 ",\"compressed\":%" PRIu64
            ",\"wire_bytes\":%" PRIu64,
            wl_opt.expect_msgs, r->msgs, n, r->msg_text, r->msgs - r->msg_text, r->msg_dup_conns,
            r->msg_wrong_size, before, r->msg_zipped, r->wire);
    wl_json_ms(f, "lat_p50", v, n, 50);
    wl_json_ms(f, "lat_p99", v, n, 99);
    wl_json_ms(f, "lat_max", v, n, 100);
    fprintf(f, ",\"rate\":%.1f,\"conn_min\":%" PRIu64 ",\"conn_max\":%" PRIu64,
            last > 0 ? (double)n / last : 0, r->conn_msgs_min, r->conn_msgs_max);
    free(v);
    if (wl_opt.stamped) {
        /* every message timed from the stamp it carries; absolute CLOCK_MONOTONIC ns of
         * the first and last arrival, for rates against the sender's clock */
        v = wl_rel_sorted(&r->stamp_lat, 0);
        if (v == NULL)
            return -1;
        n = r->stamp_lat.n;
        fprintf(f,
                ",\"stamped\":{\"messages\":%zu,\"bad\":%" PRIu64 ",\"out_of_sequence\":%" PRIu64
                ",\"t_first\":%" PRIu64 ",\"t_last\":%" PRIu64,
                n, r->stamp_bad, r->stamp_seq, r->t_stamp_first, r->t_stamp_last);
        wl_json_ms(f, "lat_p50", v, n, 50);
        wl_json_ms(f, "lat_p99", v, n, 99);
        wl_json_ms(f, "lat_max", v, n, 100);
        fputc('}', f);
        free(v);
    }
    fputc('}', f);
    return 0;
}

static int wl_print(struct wl_run *r, bool echo, const char *action_err, long long receivers,
                    bool close_phase, uint64_t t0, uint64_t expect, bool timed_out,
                    uint64_t close_ns)
{
    FILE *f = stdout;
    int64_t *fr = NULL, *tcp = NULL;
    uint64_t before = 0;
    size_t i;
    bool first = true;

    fprintf(f, "{\"n\":%lu,\"procs\":%u,", wl_opt.n, r->nkids);
    if (wl_json_ramp(f, r) < 0)
        return -1;
    if (echo) {
        double secs =
            r->echo_t_end > r->echo_t_start ? (double)(r->echo_t_end - r->echo_t_start) / 1e9 : 0;
        uint64_t expected = r->echo_conns * wl_opt.echo_m;

        fprintf(f,
                ",\"echo\":{\"messages\":%" PRIu64 ",\"seconds\":%.3f,\"rate\":%.1f,"
                "\"failures\":%" PRIu64 ",\"connections\":%" PRIu64 ",\"mismatched\":%" PRIu64
                ",\"lost\":%" PRIu64 ",\"size\":%lu}",
                r->echo_ok, secs, secs > 0 ? (double)r->echo_ok / secs : 0, expected - r->echo_ok,
                r->echo_conns, r->echo_mismatch, r->echo_lost, wl_opt.echo_size);
    }
    if (wl_opt.send_rate > 0) {
        double secs = r->t_send_last > r->t_send_first
                          ? (double)(r->t_send_last - r->t_send_first) / 1e9
                          : 0;

        fprintf(f,
                ",\"send\":{\"messages\":%" PRIu64 ",\"skipped\":%" PRIu64
                ",\"target\":%" PRIu64 ",\"target_rate\":%lu,\"seconds\":%.3f,\"rate\":%.1f"
                ",\"max_lag_ms\":%.3f,\"unsent_bytes\":%" PRIu64 ",\"lost\":%" PRIu64
                ",\"size\":%lu,\"t_first\":%" PRIu64 ",\"t_last\":%" PRIu64 "}",
                r->send_ok, r->send_skipped, r->ramp_ok * wl_opt.send_rate * wl_opt.send_secs,
                wl_opt.n * wl_opt.send_rate, secs,
                secs > 0 ? (double)(r->send_ok - 1) / secs : 0, (double)r->send_lag_max / 1e6,
                r->send_unsent, r->send_lost, wl_opt.send_size, r->t_send_first, r->t_send_last);
    }
    if (wl_opt.publish != NULL) {
        fprintf(f, ",\"action\":{\"kind\":\"publish\",\"receivers\":");
        if (action_err != NULL) {
            fprintf(f, "null,\"error\":");
            wl_json_str(f, action_err, strlen(action_err));
        } else {
            fprintf(f, "%lld", receivers);
        }
        fputc('}', f);
    } else if (wl_opt.sig_pid != 0) {
        fprintf(f, ",\"action\":{\"kind\":\"signal\",\"pid\":%d,\"signal\":%d", (int)wl_opt.sig_pid,
                wl_opt.sig_num);
        if (action_err != NULL) {
            fprintf(f, ",\"error\":");
            wl_json_str(f, action_err, strlen(action_err));
        }
        fputc('}', f);
    }
    if (close_phase) {
        fr = wl_rel_sorted(&r->frames, t0);
        tcp = wl_rel_sorted(&r->tcp, t0);
        if (fr == NULL || tcp == NULL) {
            free(fr);
            free(tcp);
            return -1;
        }
        for (i = 0; i < r->frames.n; i++)
            before += fr[i] < 0;
        fprintf(f, ",\"close\":{\"expected\":%" PRIu64 ",\"frames\":%zu", expect, r->frames.n);
        wl_json_ms(f, "frame_p50", fr, r->frames.n, 50);
        wl_json_ms(f, "frame_p99", fr, r->frames.n, 99);
        wl_json_ms(f, "frame_max", fr, r->frames.n, 100);
        fprintf(f, ",\"tcp\":%zu", r->tcp.n);
        wl_json_ms(f, "tcp_p50", tcp, r->tcp.n, 50);
        wl_json_ms(f, "tcp_p99", tcp, r->tcp.n, 99);
        wl_json_ms(f, "tcp_max", tcp, r->tcp.n, 100);
        fprintf(f,
                ",\"wrong_code\":%" PRIu64 ",\"wrong_reason\":%" PRIu64
                ",\"invalid_frames\":%" PRIu64 ",\"frames_before_t0\":%" PRIu64
                ",\"no_frame_tcp_closed\":%" PRIu64 ",\"frame_tcp_open\":%" PRIu64
                ",\"still_open\":%" PRIu64 ",\"codes\":{",
                r->wrong_code, r->wrong_reason, r->bad_close, before, r->no_frame_tcp,
                r->frame_open, r->still_open);
        for (i = 0; i < 5000; i++) {
            if (r->codes[i] == 0)
                continue;
            fprintf(f, "%s\"%zu\":%" PRIu64, first ? "" : ",", i, r->codes[i]);
            first = false;
        }
        fprintf(f, "},\"timed_out\":%s,\"seconds\":%.3f", timed_out ? "true" : "false",
                (double)close_ns / 1e9);
        if (wl_opt.samples) {
            fprintf(f, ",\"frame_samples\":[");
            for (i = 0; i < r->frames.n; i++)
                fprintf(f, "%s%.3f", i ? "," : "", (double)fr[i] / 1e6);
            fprintf(f, "],\"tcp_samples\":[");
            for (i = 0; i < r->tcp.n; i++)
                fprintf(f, "%s%.3f", i ? "," : "", (double)tcp[i] / 1e6);
            fputc(']', f);
        }
        fputc('}', f);
        free(fr);
        free(tcp);
        if (wl_print_messages(f, r, t0) < 0)
            return -1;
    }
    fprintf(f, ",\"protocol_errors\":{\"total\":%" PRIu64 ",\"why\":", r->nproto_total);
    wl_json_reasons(f, r->proto, r->nproto);
    fprintf(f, "}}\n");
    return fflush(f) == 0 ? 0 : -1;
}

/* Entry --------------------------------------------------------------------------- */

static int wl_fork_all(struct wl_run *r, unsigned nk)
{
    unsigned i, j;
    pid_t me = getpid();

    for (i = 0; i < nk; i++) {
        int up[2], down[2];
        uint32_t lo = (uint32_t)(wl_opt.n * i / nk), hi = (uint32_t)(wl_opt.n * (i + 1) / nk);
        uint32_t inflight =
            (uint32_t)(wl_opt.inflight / nk + (i < wl_opt.inflight % nk)); /* >= 1 */
        pid_t pid;

        if (pipe2(up, O_CLOEXEC) < 0)
            return -1;
        if (pipe2(down, O_CLOEXEC) < 0) {
            close(up[0]);
            close(up[1]);
            return -1;
        }
        fflush(NULL);
        pid = fork();
        if (pid < 0) {
            close(up[0]);
            close(up[1]);
            close(down[0]);
            close(down[1]);
            return -1;
        }
        if (pid == 0) {
            for (j = 0; j < i; j++) { /* the earlier children's pipes are not ours */
                close(r->kids[j].rfd);
                close(r->kids[j].wfd);
            }
            close(up[0]);
            close(down[1]);
            wl_child_main(lo, hi, inflight, down[0], up[1], r->t_start, me);
        }
        close(up[1]);
        close(down[0]);
        r->kids[i].pid = pid;
        r->kids[i].rfd = up[0];
        r->kids[i].wfd = down[1];
        r->nkids = i + 1;
        if (fcntl(up[0], F_SETFL, O_NONBLOCK) < 0)
            return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static struct wl_run run;
    struct wl_run *r = &run;
    struct rlimit rl;
    unsigned long per;
    unsigned nk;
    uint64_t t0 = 0, expect = 0, deadline, since = 0, close_start = 0, close_end = 0;
    long long receivers = 0;
    char errbuf[256];
    const char *action_err = NULL;
    bool close_phase, timed_out = false;
    int rc;

    if (wl_parse(argc, argv) < 0) {
        fputs(wl_usage, stderr);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    if (wl_opt.tls) {
        /* Made before the fork, used by every child. No certificate check: the server's
         * cost is measured, not its identity. */
        wl_p.tls = SSL_CTX_new(TLS_client_method());
        if (wl_p.tls == NULL) {
            fprintf(stderr, "wsload: SSL_CTX_new failed\n");
            return 1;
        }
        SSL_CTX_set_mode(wl_p.tls, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                                       SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        SSL_CTX_set_session_cache_mode(wl_p.tls, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_alpn_protos(wl_p.tls, (const unsigned char *)"\x08http/1.1", 9);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            fprintf(stderr, "wsload: setrlimit: %s\n", strerror(errno));
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        fprintf(stderr, "wsload: getrlimit: %s\n", strerror(errno));
        return 1;
    }
    nk = (unsigned)(wl_opt.procs != 0 ? wl_opt.procs
                                      : (wl_opt.n + WL_PER_PROC_AUTO - 1) / WL_PER_PROC_AUTO);
    if (nk > wl_opt.n)
        nk = (unsigned)wl_opt.n;
    per = (wl_opt.n + nk - 1) / nk;
    if (rl.rlim_cur != RLIM_INFINITY && per + WL_FD_SPARE > rl.rlim_cur) {
        fprintf(stderr,
                "wsload: %lu connections per process exceed the open file limit %llu: "
                "use --procs %lu or more\n",
                per, (unsigned long long)rl.rlim_cur,
                (wl_opt.n + (rl.rlim_cur - WL_FD_SPARE) - 1) / (rl.rlim_cur - WL_FD_SPARE));
        return 1;
    }
    if (nk > 64) {
        fprintf(stderr, "wsload: at most 64 processes\n");
        return 1;
    }
    if (wl_opt.inflight < nk) {
        fprintf(stderr, "wsload: --inflight %lu is below the process count %u\n", wl_opt.inflight,
                nk);
        return 1;
    }
    wl_seed();
    close_phase = wl_opt.publish != NULL || wl_opt.sig_pid != 0 || wl_opt.expect_closed_given ||
                  wl_opt.expect_code_given || wl_opt.expect_reason != NULL ||
                  wl_opt.expect_msgs_given || wl_opt.expect_size_given;
    r->kids = calloc(nk, sizeof(*r->kids));
    if (r->kids == NULL) {
        fprintf(stderr, "wsload: out of memory\n");
        return 1;
    }
    fprintf(stderr, "wsload: ramp: %lu connections to %s:%u, %u process(es)\n", wl_opt.n,
            wl_opt.host, wl_opt.port, nk);
    r->t_start = wl_now();
    if (wl_fork_all(r, nk) < 0) {
        fprintf(stderr, "wsload: fork: %s\n", strerror(errno));
        goto err_kill;
    }

    /* ramp */
    rc = wl_wait(r, WL_WANT_RAMP,
                 r->t_start + (wl_opt.ramp_timeout_ms + WL_REPORT_WAIT_MS) * WL_NS_PER_MS);
    if (rc != 0) {
        fprintf(stderr, "wsload: ramp: %s\n", rc > 0 ? "no report from a child" : "child failed");
        goto err_kill;
    }
    fprintf(stderr, "wsload: ramp done: %" PRIu64 " ok, %" PRIu64 " failed in %.3f s\n", r->ramp_ok,
            r->ramp_failed, (double)(r->ramp_t_end - r->t_start) / 1e9);
    if (wl_opt.ready_file != NULL && wl_write_ready(r) < 0) {
        fprintf(stderr, "wsload: --ready-file %s: %s\n", wl_opt.ready_file, strerror(errno));
        goto err_kill;
    }
    if (wl_opt.ids_file != NULL && wl_write_ids(r) < 0) {
        fprintf(stderr, "wsload: --ids-file %s: %s\n", wl_opt.ids_file, strerror(errno));
        goto err_kill;
    }

    /* hold: the children keep answering pings */
    deadline = wl_now() + wl_opt.hold_ms * WL_NS_PER_MS;
    while (wl_now() < deadline) {
        if (wl_pump(r, wl_ms_until(deadline)) < 0)
            goto err_kill;
    }

    /* echo */
    if (wl_opt.echo_m > 0) {
        fprintf(stderr, "wsload: echo: %lu x %lu bytes per connection\n", wl_opt.echo_m,
                wl_opt.echo_size);
        wl_tell(r, WL_CMD_ECHO);
        rc = wl_wait(r, WL_WANT_ECHO, wl_now() + wl_opt.echo_timeout_ms * WL_NS_PER_MS);
        if (rc > 0) {
            fprintf(stderr, "wsload: echo: timeout, stopping\n");
            wl_tell(r, WL_CMD_STOP);
            rc = wl_wait(r, WL_WANT_ECHO, wl_now() + WL_REPORT_WAIT_MS * WL_NS_PER_MS);
        }
        if (rc != 0) {
            fprintf(stderr, "wsload: echo: no report from a child\n");
            goto err_kill;
        }
        if (!close_phase && wl_opt.done_file != NULL) {
            /* the echo is over: a caller reads the server meanwhile */
            if (wl_write_file(wl_opt.done_file, "done\n", 5) < 0) {
                fprintf(stderr, "wsload: --done-file %s: %s\n", wl_opt.done_file, strerror(errno));
                goto err_kill;
            }
            deadline = wl_now() + WL_DONE_LINGER_MS * WL_NS_PER_MS;
            while (wl_now() < deadline) {
                if (wl_pump(r, wl_ms_until(deadline)) < 0)
                    goto err_kill;
            }
        }
    }

    /* send: stamped messages at a steady rate */
    if (wl_opt.send_rate > 0) {
        fprintf(stderr, "wsload: send: %lu messages/s of %lu bytes per connection for %lu s\n",
                wl_opt.send_rate, wl_opt.send_size, wl_opt.send_secs);
        wl_tell(r, WL_CMD_SEND);
        /* a machine too busy to keep the pace sends late, not less: allow 4x the time */
        rc = wl_wait(r, WL_WANT_SEND,
                     wl_now() + (wl_opt.send_secs * 4000 + WL_REPORT_WAIT_MS) * WL_NS_PER_MS);
        if (rc > 0) {
            fprintf(stderr, "wsload: send: time is up, stopping (the rest counts as not sent)\n");
            wl_tell(r, WL_CMD_SENT);
            rc = wl_wait(r, WL_WANT_SEND, wl_now() + WL_REPORT_WAIT_MS * WL_NS_PER_MS);
        }
        if (rc != 0) {
            fprintf(stderr, "wsload: send: no report from a child\n");
            goto err_kill;
        }
        fprintf(stderr, "wsload: send done: %" PRIu64 " messages, %" PRIu64 " skipped\n",
                r->send_ok, r->send_skipped);
    }

    /* action, then the close watch */
    if (close_phase) {
        unsigned i;

        wl_tell(r, WL_CMD_WATCH);
        if (wl_opt.publish != NULL) {
            if (wl_publish(&t0, &receivers, errbuf, sizeof(errbuf)) < 0)
                action_err = errbuf;
        } else if (wl_opt.sig_pid != 0) {
            t0 = wl_now();
            if (kill(wl_opt.sig_pid, wl_opt.sig_num) < 0) {
                snprintf(errbuf, sizeof(errbuf), "kill: %s", strerror(errno));
                action_err = errbuf;
            }
        } else {
            t0 = wl_now();
        }
        if (action_err != NULL)
            fprintf(stderr, "wsload: action failed: %s\n", action_err);
        else
            fprintf(stderr, "wsload: action done; watching closes\n");
        close_start = t0;
        expect = wl_opt.expect_closed_given ? wl_opt.expect_closed
                 : wl_opt.expect_msgs_given ? 0
                                            : r->ramp_ok;
        deadline = t0 + wl_opt.close_timeout_ms * WL_NS_PER_MS;
        if (action_err != NULL)
            deadline = wl_now(); /* nothing will come: report what is there */
        for (;;) {
            uint64_t frames = 0, settled = 0, open = 0, msgs = 0, now;
            bool done, heard = true;

            if (wl_pump(r, wl_ms_until(deadline) < 20 ? wl_ms_until(deadline) : 20) < 0)
                goto err_kill;
            for (i = 0; i < r->nkids; i++) {
                frames += r->kids[i].frames;
                settled += r->kids[i].settled;
                open += r->kids[i].open;
                msgs += r->kids[i].msgs;
                heard = heard && r->kids[i].got_progress;
            }
            now = wl_now();
            /* enough frames, or no connection left that could send one */
            done = heard && settled == frames && (frames >= expect || open == 0) &&
                   (msgs >= wl_opt.expect_msgs || open == 0);
            if (done) {
                if (since == 0)
                    since = now;
                if (now - since >= wl_opt.settle_ms * WL_NS_PER_MS)
                    break;
            } else {
                since = 0;
            }
            if (now >= deadline) {
                timed_out = !done;
                break;
            }
        }
        close_end = wl_now();
        if (wl_opt.done_file != NULL) {
            if (wl_write_file(wl_opt.done_file, "done\n", 5) < 0) {
                fprintf(stderr, "wsload: --done-file %s: %s\n", wl_opt.done_file, strerror(errno));
                goto err_kill;
            }
            deadline = wl_now() + WL_DONE_LINGER_MS * WL_NS_PER_MS;
            while (wl_now() < deadline) {
                if (wl_pump(r, wl_ms_until(deadline)) < 0)
                    goto err_kill;
            }
        }
    }
    if (wl_opt.stop_file != NULL) {
        deadline = wl_now() + wl_opt.close_timeout_ms * WL_NS_PER_MS;
        while (access(wl_opt.stop_file, F_OK) != 0 && wl_now() < deadline) {
            if (wl_pump(r, 10) < 0)
                goto err_kill;
        }
    }
    wl_tell(r, WL_CMD_END);
    if (wl_wait(r, WL_WANT_CLOSE, wl_now() + WL_REPORT_WAIT_MS * WL_NS_PER_MS) != 0) {
        fprintf(stderr, "wsload: no final report from a child\n");
        goto err_kill;
    }
    wl_reap(r);
    if (wl_print(r, wl_opt.echo_m > 0, action_err, receivers, close_phase, t0, expect, timed_out,
                 close_end - close_start) < 0) {
        fprintf(stderr, "wsload: writing the result failed\n");
        return 1;
    }
    return 0;
err_kill:
    wl_kill_all(r);
    return 1;
}
