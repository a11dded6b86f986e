#ifndef WSGATE_COMMON_LOG_H
#define WSGATE_COMMON_LOG_H

#include <stdbool.h>

/*
 * One line per event on stderr:
 *   2026-11-25T21:44:03.120Z notice w1 conn=gw1-1-5f3a9c1e-42 close code=1001 by=drain
 * The process tag ("master", "w1", "wsgatectl") and the threshold are process-wide.
 */

enum log_level { LOG_DEBUG, LOG_INFO, LOG_NOTICE, LOG_WARN, LOG_ERROR };

extern enum log_level log_threshold;

void log_set_tag(const char *tag);

/* Parses "debug", "info", "notice", "warn" or "error"; returns -1 for anything else. */
int log_level_parse(const char *s);

void log_write(enum log_level level, const char *conn_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Arguments are evaluated only when the level is on. conn_id may be NULL. */
#define log_msg(level, conn_id, ...)                    \
    do {                                                \
        if ((level) >= log_threshold)                   \
            log_write((level), (conn_id), __VA_ARGS__); \
    } while (0)

/*
 * Rate-limited per call site: at most 10 lines a second from one site; the next
 * line that gets through says how many were suppressed. For refused input, where a
 * hostile peer must not be able to flood the log.
 */
struct log_limit {
    long long window; /* second of the current window */
    unsigned count;   /* lines in that window */
    unsigned suppressed;
};

bool log_limit_allow(struct log_limit *l, unsigned *suppressed);

#define log_limited(level, conn_id, ...)                                                 \
    do {                                                                                 \
        static struct log_limit log_limit_site_;                                         \
        unsigned log_supp_;                                                              \
        if ((level) >= log_threshold && log_limit_allow(&log_limit_site_, &log_supp_)) { \
            if (log_supp_ > 0)                                                           \
                log_write((level), NULL, "%u similar lines suppressed", log_supp_);      \
            log_write((level), (conn_id), __VA_ARGS__);                                  \
        }                                                                                \
    } while (0)

#endif /* WSGATE_COMMON_LOG_H */
