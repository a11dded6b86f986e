#ifndef WSGATE_COMMON_CONFIG_H
#define WSGATE_COMMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * wsgate's settings: every flag has a WSGATE_* environment twin (--max-header is
 * WSGATE_MAX_HEADER); a flag given on the command line wins over its twin. Every
 * value is checked here, before any process starts.
 */

#define CONFIG_ID_MAX 64

struct config {
    char listen_host[256]; /* numeric address, "" for any */
    uint16_t listen_port;
    int workers;
    char id[CONFIG_ID_MAX + 1];
    bool echo;
    size_t max_header;
    uint64_t max_message;
    uint32_t close_timeout_ms;
    uint32_t ping_interval_ms; /* 0 disables keepalive */
    uint32_t handshake_timeout_ms;
    int log_level;   /* enum log_level */
    char redis[512]; /* "" until --redis or WSGATE_REDIS is given */
    bool redis_given;
    char channel[128];
    char events_channel[128]; /* "" disables events */
    bool query_groups;
    char groups_header[64]; /* "" when off */
    char user_header[64];   /* "" when off */
    int max_groups;
    char admin_host[256]; /* admin listener; admin_port 0 when disabled */
    uint16_t admin_port;
    uint32_t drain_delay_ms;   /* readiness 503 → listeners closed */
    uint32_t drain_spread_ms;  /* closes spread across this window */
    uint32_t drain_timeout_ms; /* from the drain's start: what is left is cut */
    char drain_reason[124];
    uint64_t max_outbound; /* output queued for one client: past it, 1013 */
    uint64_t max_pending;  /* per worker: bytes held in partly received messages */
    uint32_t max_jobs;     /* close jobs running at once per worker */
};

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

/* "500ms", "5s", "2m", "1h" or a bare number of seconds → milliseconds. -1 if bad. */
int config_parse_duration(const char *s, uint32_t *ms);

/* "8192", "8k", "1m", "1g" → bytes. -1 if bad. */
int config_parse_size(const char *s, uint64_t *bytes);

#endif /* WSGATE_COMMON_CONFIG_H */
