#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum log_level log_threshold = LOG_NOTICE;

static char log_tag[32] = "wsgate";

static const char *const level_names[] = {"debug", "info", "notice", "warn", "error"};

void log_set_tag(const char *tag)
{
    snprintf(log_tag, sizeof(log_tag), "%s", tag);
}

int log_level_parse(const char *s)
{
    for (int i = 0; i < (int)(sizeof(level_names) / sizeof(level_names[0])); i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

void log_write(enum log_level level, const char *conn_id, const char *fmt, ...)
{
    char line[1024];
    struct timespec ts;
    struct tm tm;
    size_t n;
    va_list ap;
    int r;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    r = snprintf(line + n, sizeof(line) - n, ".%03ldZ %s %s ", ts.tv_nsec / 1000000,
                 level_names[level], log_tag);
    if (r > 0)
        n += (size_t)r;
    if (conn_id != NULL && n < sizeof(line)) {
        r = snprintf(line + n, sizeof(line) - n, "conn=%s ", conn_id);
        if (r > 0)
            n += (size_t)r;
    }
    if (n < sizeof(line)) {
        va_start(ap, fmt);
        r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        va_end(ap);
        if (r > 0)
            n += (size_t)r;
    }
    if (n >= sizeof(line) - 1)
        n = sizeof(line) - 2; /* cut an overlong line, keep the newline */
    line[n++] = '\n';
    /* One write per line, so lines from several processes never interleave. */
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

bool log_limit_allow(struct log_limit *l, unsigned *suppressed)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    *suppressed = 0;
    if (ts.tv_sec != l->window) {
        l->window = ts.tv_sec;
        l->count = 0;
    }
    if (l->count >= 10) {
        l->suppressed++;
        return false;
    }
    l->count++;
    *suppressed = l->suppressed;
    l->suppressed = 0;
    return true;
}
