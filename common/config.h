#ifndef WSGATE_COMMON_CONFIG_H
#define WSGATE_COMMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/order_sig.h"
#include "common/origin.h"

/*
 * wsgate's settings: every flag has a WSGATE_* environment twin (--max-header is
 * WSGATE_MAX_HEADER); a flag given on the command line wins over its twin. Every
 * value is checked here, before any process starts.
 *
 * --order-key is the one repeatable flag: each use (and its twin WSGATE_ORDER_KEY)
 * holds one or more KEYID:SECRET separated by commas or spaces, and the keys add up.
 * Given on the command line at all, it replaces the keys of its twin. An empty value
 * is refused rather than read as "no keys": a deployment that meant to sign orders
 * must not start unsigned because a variable was left empty.
 */

#define CONFIG_ID_MAX         64
#define CONFIG_JWT_SECRET_MAX 1024 /* bytes of an HMAC secret */
#define CONFIG_TLS_TICKET_KEY 80   /* bytes of the session ticket key (common/tls.h) */

struct config {
    char listen_host[256]; /* numeric address, "" for any */
    uint16_t listen_port;
    int workers;
    char id[CONFIG_ID_MAX + 1];
    int inbound; /* enum config_inbound: what becomes of client messages */
    size_t max_header;
    uint64_t max_message;
    uint32_t close_timeout_ms;
    uint32_t ping_interval_ms; /* 0 disables keepalive */
    uint32_t handshake_timeout_ms;
    int log_level;   /* enum log_level */
    char redis[512]; /* "" until --redis or WSGATE_REDIS is given */
    bool redis_given;
    uint32_t redis_timeout_ms; /* a Redis link silent this long is dropped and reconnected */
    char channel[128];
    char events_channel[128]; /* "" disables events */
    int query_groups;         /* ?group= and ?user=: 1 on, 0 off, -1 on unless a trusted
                                 header flag is set (config_query_groups) */
    char groups_header[64];   /* "" when off */
    char user_header[64];     /* "" when off */
    int max_groups;
    char admin_host[256]; /* admin listener; admin_port 0 when disabled */
    uint16_t admin_port;
    uint32_t drain_delay_ms;   /* readiness 503 → listeners closed */
    uint32_t drain_spread_ms;  /* closes spread across this window */
    uint32_t drain_timeout_ms; /* from the drain's start: what is left is cut */
    char drain_reason[124];
    int max_admin_conns;       /* admin requests served at once, apart from clients */
    uint32_t stall_timeout_ms; /* a worker silent this long fails /readyz */
    uint32_t stall_kill_ms;    /* ... and this long is killed and restarted; 0: never */
    struct order_sig_ring order_keys; /* --order-key: n > 0 means orders must be signed */
    uint32_t order_max_age_ms;        /* a signed order's ts may be this far from now */
    uint32_t order_replay_max;        /* ids of signed orders a worker remembers at most */
    struct origin_list allow_origin; /* --allow-origin, repeatable; empty: any site */
    uint32_t max_conns_per_ip;       /* open connections per address (IPv6: /64); 0: off */
    uint32_t max_handshakes_per_ip;  /* handshakes per address per handshakes_period_ms; 0: off */
    uint32_t handshakes_period_ms;
    bool proxy_protocol; /* every client connection starts with a PROXY header */
    /* JWT connect authentication: on when a secret or a public key is given */
    uint8_t jwt_secret[CONFIG_JWT_SECRET_MAX]; /* --jwt-secret, or --jwt-secret-file's bytes */
    size_t jwt_secret_len;                     /* 0 when no secret */
    char jwt_public_key[1024];                 /* PEM file path, "" when none */
    char jwt_issuer[256];                      /* "" when iss is not checked */
    char jwt_audience[256];                    /* "" when tokens must carry no aud */
    uint32_t jwt_leeway_ms;
    bool jwt_allow_no_exp;
    char jwt_cookie[64];      /* cookie the token may come in, "" when none */
    unsigned jwt_expiry_code; /* close code at the token's exp (reason "token expired") */
    unsigned jwt_flags;       /* which --jwt-* flags were given (config.c's business) */
    uint64_t max_outbound; /* output queued for one client: past it, 1013 */
    uint64_t max_pending;  /* per worker: bytes held in partly received messages */
    uint32_t max_jobs;     /* close and send jobs running or waiting at once per worker */
    uint64_t max_send;     /* largest send order payload, in bytes after base64 decoding */
    bool deflate;              /* --deflate: permessage-deflate for clients that offer it */
    uint64_t deflate_min_size; /* messages under this many bytes go uncompressed */
    char inbound_channel[128];    /* --inbound publish: PUBLISHed here */
    char inbound_stream[128];     /* --inbound stream: XADDed here */
    uint64_t inbound_maxlen;      /* the stream is trimmed to about this many entries */
    uint64_t inbound_max_pending; /* per worker: inbound bytes not yet answered by Redis */
    /* TLS on the client listener: on when both files are given */
    char tls_cert[1024]; /* --tls-cert: PEM certificate chain, "" when off */
    char tls_key[1024];  /* --tls-key: its PEM private key */
    int tls_min_version; /* TLS1_2_VERSION or TLS1_3_VERSION (OpenSSL's numbers) */
    bool tls_min_given;
    uint8_t tls_ticket_key[CONFIG_TLS_TICKET_KEY]; /* random, drawn by config_parse() when
                                                      TLS is on: the workers share it */
    /* Durable orders and tombstones (worker/ostream.c, worker/tombs.c) */
    char orders_stream[128];     /* --orders-stream: orders are also read here; "" when off */
    uint32_t orders_max_age_ms;  /* stream entries older than this are skipped; ids kept so long */
    uint32_t orders_dedup_max;   /* order ids a worker remembers to apply each once */
    uint32_t max_tombstones;     /* tombstones a worker holds; 0: tombstones off */
};

/* --inbound: what a client's data message becomes. --echo is CONFIG_INBOUND_ECHO. */
enum config_inbound {
    CONFIG_INBOUND_DROP,    /* counted and dropped */
    CONFIG_INBOUND_ECHO,    /* sent back to the client (tests, demos, conformance) */
    CONFIG_INBOUND_PUBLISH, /* PUBLISHed on inbound_channel as an envelope */
    CONFIG_INBOUND_STREAM,  /* XADDed to inbound_stream as an envelope */
};

/* The mode's flag value: "drop", "echo", "publish" or "stream". */
const char *config_inbound_name(int mode);

/* --max-pending when not given: a quarter of physical memory shared by the workers,
 * at most this much per worker. */
#define CONFIG_MAX_PENDING_CAP (256ull * 1024 * 1024)

/* Fills c with the defaults (workers = CPUs, id = host name). */
void config_defaults(struct config *c);

/*
 * Applies environment twins from envp (NULL-terminated "NAME=value" strings), then
 * argv[1..argc). Returns 0; 1 when --help was asked (nothing else is done); -1 on
 * a bad flag or value, with a one-line message in err.
 */
int config_parse(struct config *c, int argc, char **argv, char **envp, char *err, size_t errlen);

/* The --help text. */
const char *config_usage(void);

/* Whether ?group= and ?user= are read: never with JWT on; else --query-groups,
 * --no-query-groups, or by default only when neither --groups-header nor --user-header
 * is set (a client must not override what a trusted proxy says). */
bool config_query_groups(const struct config *c);

/* True when connections must bring a JWT (--jwt-secret, --jwt-secret-file or
 * --jwt-public-key was given). */
bool config_jwt_enabled(const struct config *c);

/* True when the client listener speaks TLS (--tls-cert and --tls-key). */
bool config_tls_enabled(const struct config *c);

struct token_config;

/* Fills t for token_verifier_new() from c; t's pointers borrow from c. */
void config_token_config(const struct config *c, struct token_config *t);

/* "500ms", "5s", "2m", "1h" or a bare number of seconds → milliseconds. -1 if bad. */
int config_parse_duration(const char *s, uint32_t *ms);

/* "8192", "8k", "1m", "1g" → bytes. -1 if bad. */
int config_parse_size(const char *s, uint64_t *bytes);

/*
 * "20/s", "600/m", "5/h" → count and period; "0" and "off" → 0 and 0 (no limit).
 * The count is 1 to 1000000 (at most one per microsecond). -1 if bad.
 */
int config_parse_rate(const char *s, uint32_t *count, uint32_t *period_ms);

#endif /* WSGATE_COMMON_CONFIG_H */
